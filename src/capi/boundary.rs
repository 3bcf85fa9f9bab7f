//! The boundary between C and Rust: status codes, the thread-local last-error message, and the
//! [`ffi_boundary!`] macro every exported function runs its body through.

use crate::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a fallible function returns: `CRX_OK` (0) or one of the `CRX_ERR_*` codes below; the
/// thread's `crx_last_error_message()` then says why. Codes are never renumbered; new ones are
/// appended.
pub type crx_status = i32;

pub const CRX_OK: crx_status = 0;
/// A NULL pointer, an out-of-range index or count, a bad dtype code, a byte count that does not
/// match the shape, or an options struct with an unknown size.
pub const CRX_ERR_INVALID_ARGUMENT: crx_status = 1;
/// A handle that is not live: already freed, never made by this library, or of another type.
pub const CRX_ERR_INVALID_HANDLE: crx_status = 2;
/// The model bytes are not a well-formed ONNX model.
pub const CRX_ERR_INVALID_MODEL: crx_status = 3;
/// The model uses an operator, dtype or opset this build cannot run, or the call asks for a
/// feature this build lacks (a device, string tensors through the C ABI).
pub const CRX_ERR_UNSUPPORTED: crx_status = 4;
/// Inputs that do not fit the model: unknown or missing name, wrong dtype, rank or shape.
pub const CRX_ERR_INVALID_INPUT: crx_status = 5;
/// Shapes or types inside the graph do not agree.
pub const CRX_ERR_SHAPE: crx_status = 6;
/// A kernel failed while running.
pub const CRX_ERR_RUNTIME: crx_status = 7;
/// A file could not be read.
pub const CRX_ERR_IO: crx_status = 8;
/// A memory or time limit stopped the call.
pub const CRX_ERR_RESOURCE_LIMIT: crx_status = 9;
/// A caller-provided buffer is smaller than the data to be written into it; nothing was written.
pub const CRX_ERR_BUFFER_TOO_SMALL: crx_status = 10;
/// A bug inside the library (a Rust panic) was caught at the boundary. The handles involved are
/// still valid, but the library may be in a poor state: report it.
pub const CRX_ERR_INTERNAL: crx_status = 11;

/// An error on its way out to C: a status code and its message.
#[derive(Debug)]
pub struct CallError {
    pub status: crx_status,
    pub message: String,
}

impl CallError {
    pub fn new(status: crx_status, message: impl Into<String>) -> CallError {
        CallError { status, message: message.into() }
    }

    pub fn invalid_argument(message: impl Into<String>) -> CallError {
        CallError::new(CRX_ERR_INVALID_ARGUMENT, message)
    }

    pub fn null(argument: &str) -> CallError {
        CallError::invalid_argument(format!("argument '{argument}' is NULL"))
    }
}

impl From<Error> for CallError {
    fn from(e: Error) -> CallError {
        let status = match e.kind {
            ErrorKind::InvalidModel => CRX_ERR_INVALID_MODEL,
            ErrorKind::Unsupported => CRX_ERR_UNSUPPORTED,
            ErrorKind::InvalidInput => CRX_ERR_INVALID_INPUT,
            ErrorKind::Shape => CRX_ERR_SHAPE,
            ErrorKind::Runtime => CRX_ERR_RUNTIME,
            ErrorKind::Io => CRX_ERR_IO,
            ErrorKind::ResourceLimit => CRX_ERR_RESOURCE_LIMIT,
        };
        CallError::new(status, e.message)
    }
}

pub type CallResult<T = ()> = Result<T, CallError>;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// A C string from a Rust one; an interior NUL (which C cannot carry) becomes U+FFFD.
pub fn c_string(s: String) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Runs the body of exported function `function`: clears the thread's last error, catches a panic,
/// and turns an error into its status code with the message kept for `crx_last_error_message`.
pub fn run_boundary(function: &str, body: impl FnOnce() -> CallResult) -> crx_status {
    LAST_ERROR.with(|e| e.borrow_mut().take());
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return CRX_OK,
        Ok(Err(e)) => (e.status, e.message),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (CRX_ERR_INTERNAL, format!("internal error (panic): {what}"))
        }
    };
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c_string(format!("{function}: {message}"))));
    status
}

/// `ffi_boundary!("crx_x", non_null: [a, b], { body })`: the one way an exported function runs.
/// Each named pointer argument is checked against NULL first (in order, so the message names the
/// first NULL one); the body returns `CallResult` and must write out-parameters only once nothing
/// can fail any more, so that they stay untouched on error.
macro_rules! ffi_boundary {
    ($function:literal, non_null: [$($pointer:ident),*], $body:block) => {
        $crate::capi::boundary::run_boundary($function, || {
            $(
                if $pointer.is_null() {
                    return Err($crate::capi::boundary::CallError::null(stringify!($pointer)));
                }
            )*
            $body
        })
    };
}

/// Why the last failing `crx_` call on this thread failed, as UTF-8 text naming the function and
/// the argument, input or node at fault; NULL when the last call succeeded. Every `crx_` call
/// clears it on entry, so the pointer is valid until the next `crx_` call on this thread; copy it
/// to keep it. Owned by the library: never free it.
#[no_mangle]
pub extern "C" fn crx_last_error_message() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
}

/// The name of a status code (`"CRX_ERR_INVALID_INPUT"`), or `"CRX_ERR_UNKNOWN"` for a code this
/// library does not define: a static string, never freed.
#[no_mangle]
pub extern "C" fn crx_status_name(status: crx_status) -> *const c_char {
    let name: &'static str = match status {
        CRX_OK => "CRX_OK\0",
        CRX_ERR_INVALID_ARGUMENT => "CRX_ERR_INVALID_ARGUMENT\0",
        CRX_ERR_INVALID_HANDLE => "CRX_ERR_INVALID_HANDLE\0",
        CRX_ERR_INVALID_MODEL => "CRX_ERR_INVALID_MODEL\0",
        CRX_ERR_UNSUPPORTED => "CRX_ERR_UNSUPPORTED\0",
        CRX_ERR_INVALID_INPUT => "CRX_ERR_INVALID_INPUT\0",
        CRX_ERR_SHAPE => "CRX_ERR_SHAPE\0",
        CRX_ERR_RUNTIME => "CRX_ERR_RUNTIME\0",
        CRX_ERR_IO => "CRX_ERR_IO\0",
        CRX_ERR_RESOURCE_LIMIT => "CRX_ERR_RESOURCE_LIMIT\0",
        CRX_ERR_BUFFER_TOO_SMALL => "CRX_ERR_BUFFER_TOO_SMALL\0",
        CRX_ERR_INTERNAL => "CRX_ERR_INTERNAL\0",
        _ => "CRX_ERR_UNKNOWN\0",
    };
    name.as_ptr().cast()
}

/// Reads a caller's options struct of an append-only type whose first field is its `struct_size`:
/// starts from `defaults` and takes the caller's bytes for the fields its size covers, so a program
/// built against an older, shorter struct gets defaults for the fields added since.
///
/// # Safety
/// `options` must point to at least `struct_size` readable bytes (its first field).
pub unsafe fn read_options<T: Copy>(options: *const T, defaults: T, first_version_size: usize) -> CallResult<T> {
    let struct_size = options.cast::<usize>().read_unaligned();
    if struct_size < first_version_size {
        return Err(CallError::invalid_argument(format!(
            "options struct_size is {struct_size}, smaller than the first version's {first_version_size}: \
             fill it with its crx_*_options_default function"
        )));
    }
    let mut value = defaults;
    let n = struct_size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(options.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), n);
    Ok(value)
}

/// Writes `value` into a caller's struct of `struct_size` bytes (as many of its leading fields as
/// fit), so that a program built against an older, shorter struct is not overrun.
///
/// # Safety
/// `out` must point to at least `struct_size` writable bytes.
pub unsafe fn write_struct<T>(out: *mut T, value: &T, struct_size: usize, first_version_size: usize) -> CallResult {
    if struct_size < first_version_size {
        return Err(CallError::invalid_argument(format!(
            "struct_size is {struct_size}, smaller than the first version's {first_version_size}: pass sizeof the struct"
        )));
    }
    let n = struct_size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), out.cast::<u8>(), n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> Option<String> {
        let p = crx_last_error_message();
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string())
    }

    #[test]
    fn a_panic_becomes_the_internal_status_with_its_message() {
        let status = run_boundary("crx_test", || panic!("boom"));
        assert_eq!(status, CRX_ERR_INTERNAL);
        assert_eq!(last_error().as_deref(), Some("crx_test: internal error (panic): boom"));
        assert_eq!(run_boundary("crx_test", || Ok(())), CRX_OK);
        assert_eq!(last_error(), None);
    }

    #[test]
    fn null_pointers_are_named() {
        let p: *const u8 = std::ptr::null();
        let q: *const u8 = &0u8;
        let status = ffi_boundary!("crx_test", non_null: [q, p], { Ok(()) });
        assert_eq!(status, CRX_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error().as_deref(), Some("crx_test: argument 'p' is NULL"));
    }

    #[test]
    fn errors_keep_their_kind() {
        let status = run_boundary("crx_test", || Err(crate::err!(ResourceLimit, "too big").into()));
        assert_eq!(status, CRX_ERR_RESOURCE_LIMIT);
        let name = unsafe { CStr::from_ptr(crx_status_name(status)) };
        assert_eq!(name.to_str().unwrap(), "CRX_ERR_RESOURCE_LIMIT");
    }
}
