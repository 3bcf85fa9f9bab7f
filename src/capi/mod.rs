//! The stable C ABI (`include/crx580.h`, generated from this module by cbindgen).
//!
//! Every exported function goes through [`ffi_boundary!`](boundary): panics are caught, NULL
//! pointers and dead handles become error statuses, and the reason goes into a thread-local
//! last-error string. Handles are opaque tokens looked up in a registry ([`handles`]), never
//! dereferenced, so a freed or foreign handle is an error rather than a crash.
//!
//! The files: `boundary` (statuses, last error, the macro), `handles` (the registry), `model`
//! (loading, input/output descriptions), `session` (options, running), `tensor` (tensors made from
//! caller memory and the outputs), `server` (the HTTP model server on loaded models), and here the
//! version and device queries.
//!
//! Names are C's (`crx_model`, `crx_status`), so the Rust naming lints are off in this module.
#![allow(non_camel_case_types)]

#[macro_use]
pub mod boundary;
pub mod handles;
pub mod model;
pub mod server;
pub mod session;
pub mod tensor;

pub use boundary::*;
pub use model::*;
pub use server::*;
pub use session::*;
pub use tensor::*;

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

/// The library version these declarations come from (see `crx_version()` for the loaded one).
pub const CRX_VERSION_MAJOR: u32 = 0;
pub const CRX_VERSION_MINOR: u32 = 1;
pub const CRX_VERSION_PATCH: u32 = 0;
/// The ABI major version: the shared library is `libcrx580.so.<CRX_ABI_VERSION>`. It changes only
/// when a declaration in this header changes incompatibly; appended functions, constants and
/// struct fields keep it.
pub const CRX_ABI_VERSION: u32 = 1;

/// The loaded library's version, `"MAJOR.MINOR.PATCH"`: a static string, never freed.
#[no_mangle]
pub extern "C" fn crx_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The loaded library's ABI major version; a program built against this header should check it
/// equals `CRX_ABI_VERSION`.
#[no_mangle]
pub extern "C" fn crx_abi_version() -> u32 {
    CRX_ABI_VERSION
}

/// Device names, made once: the pointers handed out stay valid for the life of the process.
fn device_names() -> &'static [CString] {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    NAMES.get_or_init(|| crate::backend::list_devices().into_iter().map(boundary::c_string).collect())
}

/// How many devices this build can run on; writes it to `*count`.
///
/// # Safety
/// `count` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_device_count(count: *mut usize) -> crx_status {
    ffi_boundary!("crx_device_count", non_null: [count], {
        *count = device_names().len();
        Ok(())
    })
}

/// The human-readable name of device `index` (0 <= index < `crx_device_count`); the string is owned
/// by the library and valid for the life of the process.
///
/// # Safety
/// `name` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_device_name(index: usize, name: *mut *const c_char) -> crx_status {
    ffi_boundary!("crx_device_name", non_null: [name], {
        let names = device_names();
        let Some(n) = names.get(index) else {
            return Err(CallError::invalid_argument(format!("device index {index} is out of range (count {})", names.len())));
        };
        *name = n.as_ptr();
        Ok(())
    })
}

/// How many handles (models, sessions, tensors, servers) are live in this process: a diagnostic for
/// tests and leak hunts (a handle never freed is not a leak that valgrind can see).
#[no_mangle]
pub extern "C" fn crx_live_handle_count() -> usize {
    handles::live_count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_agree_with_the_package() {
        let v = format!("{CRX_VERSION_MAJOR}.{CRX_VERSION_MINOR}.{CRX_VERSION_PATCH}");
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        let loaded = unsafe { std::ffi::CStr::from_ptr(crx_version()) };
        assert_eq!(loaded.to_str().unwrap(), v);
    }
}
