//! The few OpenCL 1.2 C types, constants and entry-point signatures this backend uses, as in
//! Khronos' `CL/cl.h`. Written here rather than taken from the `cl-sys` crate: cl-sys puts
//! `#[link(name = "OpenCL")]` on its declarations, so every binary (and every C user of our
//! static library) would need libOpenCL.so at link time, which is exactly the dependency the
//! run-time loader (`loader.rs`) exists to avoid.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

pub type cl_int = i32;
pub type cl_uint = u32;
pub type cl_ulong = u64;
pub type cl_bool = cl_uint;
pub type cl_bitfield = cl_ulong;
pub type cl_device_type = cl_bitfield;
pub type cl_mem_flags = cl_bitfield;
pub type cl_command_queue_properties = cl_bitfield;
pub type cl_info = cl_uint;

pub type cl_platform_id = *mut c_void;
pub type cl_device_id = *mut c_void;
pub type cl_context = *mut c_void;
pub type cl_command_queue = *mut c_void;
pub type cl_mem = *mut c_void;
pub type cl_program = *mut c_void;
pub type cl_kernel = *mut c_void;
pub type cl_event = *mut c_void;

pub const CL_SUCCESS: cl_int = 0;
pub const CL_TRUE: cl_bool = 1;

pub const CL_PLATFORM_VERSION: cl_info = 0x0901;
pub const CL_PLATFORM_NAME: cl_info = 0x0902;
pub const CL_PLATFORM_VENDOR: cl_info = 0x0903;

pub const CL_DEVICE_TYPE_CPU: cl_device_type = 1 << 1;
pub const CL_DEVICE_TYPE_GPU: cl_device_type = 1 << 2;
pub const CL_DEVICE_TYPE_ALL: cl_device_type = 0xFFFF_FFFF;

pub const CL_DEVICE_TYPE: cl_info = 0x1000;
pub const CL_DEVICE_MAX_COMPUTE_UNITS: cl_info = 0x1002;
pub const CL_DEVICE_MAX_WORK_GROUP_SIZE: cl_info = 0x1004;
pub const CL_DEVICE_MAX_MEM_ALLOC_SIZE: cl_info = 0x1010;
pub const CL_DEVICE_GLOBAL_MEM_SIZE: cl_info = 0x101F;
pub const CL_DEVICE_LOCAL_MEM_SIZE: cl_info = 0x1023;
pub const CL_DEVICE_NAME: cl_info = 0x102B;
pub const CL_DEVICE_VENDOR: cl_info = 0x102C;
pub const CL_DRIVER_VERSION: cl_info = 0x102D;
pub const CL_DEVICE_VERSION: cl_info = 0x102F;
pub const CL_DEVICE_EXTENSIONS: cl_info = 0x1030;

pub const CL_MEM_READ_WRITE: cl_mem_flags = 1;

pub const CL_PROGRAM_BINARY_SIZES: cl_info = 0x1165;
pub const CL_PROGRAM_BINARIES: cl_info = 0x1166;
pub const CL_PROGRAM_BUILD_LOG: cl_info = 0x1183;

pub type InfoFn<T> = unsafe extern "C" fn(T, cl_info, usize, *mut c_void, *mut usize) -> cl_int;
pub type BuildNotify = Option<unsafe extern "C" fn(cl_program, *mut c_void)>;
pub type ContextNotify = Option<unsafe extern "C" fn(*const c_char, *const c_void, usize, *mut c_void)>;

/// The name of an OpenCL error code, as in `CL/cl.h`.
pub fn error_name(code: cl_int) -> &'static str {
    match code {
        -1 => "CL_DEVICE_NOT_FOUND",
        -2 => "CL_DEVICE_NOT_AVAILABLE",
        -3 => "CL_COMPILER_NOT_AVAILABLE",
        -4 => "CL_MEM_OBJECT_ALLOCATION_FAILURE",
        -5 => "CL_OUT_OF_RESOURCES",
        -6 => "CL_OUT_OF_HOST_MEMORY",
        -7 => "CL_PROFILING_INFO_NOT_AVAILABLE",
        -8 => "CL_MEM_COPY_OVERLAP",
        -9 => "CL_IMAGE_FORMAT_MISMATCH",
        -10 => "CL_IMAGE_FORMAT_NOT_SUPPORTED",
        -11 => "CL_BUILD_PROGRAM_FAILURE",
        -12 => "CL_MAP_FAILURE",
        -13 => "CL_MISALIGNED_SUB_BUFFER_OFFSET",
        -14 => "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST",
        -15 => "CL_COMPILE_PROGRAM_FAILURE",
        -16 => "CL_LINKER_NOT_AVAILABLE",
        -17 => "CL_LINK_PROGRAM_FAILURE",
        -18 => "CL_DEVICE_PARTITION_FAILED",
        -19 => "CL_KERNEL_ARG_INFO_NOT_AVAILABLE",
        -30 => "CL_INVALID_VALUE",
        -31 => "CL_INVALID_DEVICE_TYPE",
        -32 => "CL_INVALID_PLATFORM",
        -33 => "CL_INVALID_DEVICE",
        -34 => "CL_INVALID_CONTEXT",
        -35 => "CL_INVALID_QUEUE_PROPERTIES",
        -36 => "CL_INVALID_COMMAND_QUEUE",
        -37 => "CL_INVALID_HOST_PTR",
        -38 => "CL_INVALID_MEM_OBJECT",
        -39 => "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR",
        -40 => "CL_INVALID_IMAGE_SIZE",
        -41 => "CL_INVALID_SAMPLER",
        -42 => "CL_INVALID_BINARY",
        -43 => "CL_INVALID_BUILD_OPTIONS",
        -44 => "CL_INVALID_PROGRAM",
        -45 => "CL_INVALID_PROGRAM_EXECUTABLE",
        -46 => "CL_INVALID_KERNEL_NAME",
        -47 => "CL_INVALID_KERNEL_DEFINITION",
        -48 => "CL_INVALID_KERNEL",
        -49 => "CL_INVALID_ARG_INDEX",
        -50 => "CL_INVALID_ARG_VALUE",
        -51 => "CL_INVALID_ARG_SIZE",
        -52 => "CL_INVALID_KERNEL_ARGS",
        -53 => "CL_INVALID_WORK_DIMENSION",
        -54 => "CL_INVALID_WORK_GROUP_SIZE",
        -55 => "CL_INVALID_WORK_ITEM_SIZE",
        -56 => "CL_INVALID_GLOBAL_OFFSET",
        -57 => "CL_INVALID_EVENT_WAIT_LIST",
        -58 => "CL_INVALID_EVENT",
        -59 => "CL_INVALID_OPERATION",
        -60 => "CL_INVALID_GL_OBJECT",
        -61 => "CL_INVALID_BUFFER_SIZE",
        -62 => "CL_INVALID_MIP_LEVEL",
        -63 => "CL_INVALID_GLOBAL_WORK_SIZE",
        -64 => "CL_INVALID_PROPERTY",
        -65 => "CL_INVALID_IMAGE_DESCRIPTOR",
        -66 => "CL_INVALID_COMPILER_OPTIONS",
        -67 => "CL_INVALID_LINKER_OPTIONS",
        -68 => "CL_INVALID_DEVICE_PARTITION_COUNT",
        -69 => "CL_INVALID_PIPE_SIZE",
        -70 => "CL_INVALID_DEVICE_QUEUE",
        -71 => "CL_INVALID_SPEC_ID",
        -72 => "CL_MAX_SIZE_RESTRICTION_EXCEEDED",
        -1001 => "CL_PLATFORM_NOT_FOUND_KHR",
        _ => "an unknown OpenCL error",
    }
}
