//! Finds the OpenCL entry points at run time: `dlopen("libOpenCL.so.1")` (the ICD loader) and one
//! `dlsym` per function. Nothing links against libOpenCL, so the library and the CLI start on a
//! host without it; there, [`api`] answers an error and only the CPU is offered.

use super::sys::*;
use crate::{Error, ErrorKind, Result};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::OnceLock;

/// The ICD loader's soname; `CRX580_OPENCL_LIB` names another (tests point it at a missing one).
pub const DEFAULT_LIBRARY: &str = "libOpenCL.so.1";

/// Declares the table of entry points: one field per OpenCL function, filled by `dlsym`.
macro_rules! entry_points {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty;)*) => {
        /// The OpenCL functions this backend calls, resolved from one loaded library.
        #[allow(non_snake_case)]
        pub struct Api {
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        impl Api {
            /// Loads `library` and resolves every entry point; the library stays loaded for the
            /// life of the process (the table is kept in a static).
            pub fn load(library: &str) -> Result<Api> {
                let handle = open(library)?;
                // SAFETY: each symbol is an OpenCL 1.2 function with the signature declared here
                // (Khronos' cl.h); a null symbol is refused by `symbol`.
                unsafe {
                    Ok(Api {
                        $($name: std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> $ret>(
                            symbol(handle, library, stringify!($name))?,
                        ),)*
                    })
                }
            }
        }
    };
}

entry_points! {
    clGetPlatformIDs: fn(cl_uint, *mut cl_platform_id, *mut cl_uint) -> cl_int;
    clGetPlatformInfo: fn(cl_platform_id, cl_info, usize, *mut c_void, *mut usize) -> cl_int;
    clGetDeviceIDs: fn(cl_platform_id, cl_device_type, cl_uint, *mut cl_device_id, *mut cl_uint) -> cl_int;
    clGetDeviceInfo: fn(cl_device_id, cl_info, usize, *mut c_void, *mut usize) -> cl_int;
    clCreateContext: fn(*const isize, cl_uint, *const cl_device_id, ContextNotify, *mut c_void, *mut cl_int) -> cl_context;
    clReleaseContext: fn(cl_context) -> cl_int;
    clCreateCommandQueue: fn(cl_context, cl_device_id, cl_command_queue_properties, *mut cl_int) -> cl_command_queue;
    clReleaseCommandQueue: fn(cl_command_queue) -> cl_int;
    clFinish: fn(cl_command_queue) -> cl_int;
    clCreateBuffer: fn(cl_context, cl_mem_flags, usize, *mut c_void, *mut cl_int) -> cl_mem;
    clReleaseMemObject: fn(cl_mem) -> cl_int;
    clEnqueueWriteBuffer: fn(cl_command_queue, cl_mem, cl_bool, usize, usize, *const c_void, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
    clEnqueueReadBuffer: fn(cl_command_queue, cl_mem, cl_bool, usize, usize, *mut c_void, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
    clEnqueueCopyBuffer: fn(cl_command_queue, cl_mem, cl_mem, usize, usize, usize, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
    clCreateProgramWithSource: fn(cl_context, cl_uint, *const *const c_char, *const usize, *mut cl_int) -> cl_program;
    clCreateProgramWithBinary: fn(cl_context, cl_uint, *const cl_device_id, *const usize, *const *const u8, *mut cl_int, *mut cl_int) -> cl_program;
    clBuildProgram: fn(cl_program, cl_uint, *const cl_device_id, *const c_char, BuildNotify, *mut c_void) -> cl_int;
    clGetProgramInfo: fn(cl_program, cl_info, usize, *mut c_void, *mut usize) -> cl_int;
    clGetProgramBuildInfo: fn(cl_program, cl_device_id, cl_info, usize, *mut c_void, *mut usize) -> cl_int;
    clReleaseProgram: fn(cl_program) -> cl_int;
    clCreateKernel: fn(cl_program, *const c_char, *mut cl_int) -> cl_kernel;
    clReleaseKernel: fn(cl_kernel) -> cl_int;
    clSetKernelArg: fn(cl_kernel, cl_uint, usize, *const c_void) -> cl_int;
    clEnqueueNDRangeKernel: fn(cl_command_queue, cl_kernel, cl_uint, *const usize, *const usize, *const usize, cl_uint, *const cl_event, *mut cl_event) -> cl_int;
}

fn open(library: &str) -> Result<*mut c_void> {
    let name = CString::new(library)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "an OpenCL library name with a NUL byte"))?;
    // SAFETY: dlopen with a NUL-terminated name; a null result is an error, not UB.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        crate::bail!(Unsupported, "no OpenCL: cannot load {library} ({}); install an OpenCL ICD loader and driver (e.g. ocl-icd-libopencl1 and pocl-opencl-icd)", dl_error());
    }
    Ok(handle)
}

fn symbol(handle: *mut c_void, library: &str, name: &str) -> Result<*mut c_void> {
    let cname = CString::new(name).expect("entry-point names have no NUL");
    // SAFETY: `handle` came from a successful dlopen and is never closed.
    let ptr = unsafe { libc::dlsym(handle, cname.as_ptr()) };
    if ptr.is_null() {
        crate::bail!(Unsupported, "{library} has no {name}: an OpenCL 1.2 loader is needed");
    }
    Ok(ptr)
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".into()
    } else {
        unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
    }
}

/// The process's OpenCL entry points, loaded on first use from `CRX580_OPENCL_LIB` or
/// [`DEFAULT_LIBRARY`]; the error (no library, a too-old one) is kept and answered each time.
pub fn api() -> Result<&'static Api> {
    static API: OnceLock<Result<Api>> = OnceLock::new();
    API.get_or_init(|| {
        let library = std::env::var("CRX580_OPENCL_LIB").unwrap_or_else(|_| DEFAULT_LIBRARY.to_string());
        Api::load(&library)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Turns an OpenCL status into a crate error naming the call and the CL error.
pub fn check(code: cl_int, what: &str) -> Result<()> {
    if code == CL_SUCCESS {
        return Ok(());
    }
    let kind = match code {
        -4 | -5 | -6 | -61 => ErrorKind::ResourceLimit, // allocation failures, out of resources
        _ => ErrorKind::Runtime,
    };
    Err(Error::new(kind, format!("OpenCL {what} failed: {} ({code})", error_name(code))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_an_error_not_a_panic() {
        let e = Api::load("libcrx580-no-such-opencl.so.1").err().expect("a missing library must not load");
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("libcrx580-no-such-opencl.so.1"), "{e}");
    }

    #[test]
    fn errors_name_the_call_and_the_cl_error() {
        let e = check(-54, "clEnqueueNDRangeKernel(gemm)").unwrap_err();
        assert_eq!(e.message, "OpenCL clEnqueueNDRangeKernel(gemm) failed: CL_INVALID_WORK_GROUP_SIZE (-54)");
        assert_eq!(check(-4, "clCreateBuffer").unwrap_err().kind, ErrorKind::ResourceLimit);
        assert!(check(0, "x").is_ok());
    }
}
