//! The OpenCL devices of every platform, with what kernels and tuning need to know of each.

use super::loader::{api, check, Api};
use super::sys::*;
use crate::Result;
use std::ffi::c_void;

/// A device handle; OpenCL handles may be used from any thread (the spec makes every call but
/// `clSetKernelArg` thread-safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId(pub cl_device_id);
// SAFETY: see above; the handle is an opaque id owned by the platform.
unsafe impl Send for DeviceId {}
unsafe impl Sync for DeviceId {}

/// One OpenCL device and its properties.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub platform: String,
    pub vendor: String,
    pub name: String,
    pub driver_version: String,
    pub version: String,
    pub is_gpu: bool,
    pub is_cpu: bool,
    pub compute_units: u32,
    pub max_work_group: usize,
    pub global_mem: u64,
    pub max_alloc: u64,
    pub local_mem: u64,
    pub extensions: String,
}

impl DeviceInfo {
    pub fn has_extension(&self, ext: &str) -> bool {
        self.extensions.split_whitespace().any(|e| e == ext)
    }
    pub fn fp16(&self) -> bool {
        self.has_extension("cl_khr_fp16")
    }
    pub fn fp64(&self) -> bool {
        self.has_extension("cl_khr_fp64")
    }

    /// One line for `crx580 devices`.
    pub fn describe(&self) -> String {
        const MIB: u64 = 1 << 20;
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "opencl: {} {} ({}, driver {}; {} compute units, {} MiB global, {} MiB max allocation, {} KiB local, fp16 {}, fp64 {})",
            self.vendor.trim(),
            self.name.trim(),
            if self.is_gpu { "GPU" } else if self.is_cpu { "CPU" } else { "accelerator" },
            self.driver_version.trim(),
            self.compute_units,
            self.global_mem / MIB,
            self.max_alloc / MIB,
            self.local_mem / 1024,
            yes_no(self.fp16()),
            yes_no(self.fp64()),
        )
    }
}

/// Every device of every platform the ICD loader knows; an error when OpenCL cannot be loaded.
/// A platform that reports no devices (or fails) is skipped with a debug log.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    // One enumeration at a time: PoCL 2.10 crashed (in clGetDeviceInfo) when sessions on several
    // threads enumerated at once.
    static ENUMERATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ENUMERATING.lock().unwrap_or_else(|e| e.into_inner());
    let api = api()?;
    let mut out = Vec::new();
    for platform in platforms(api)? {
        let platform_name = platform_string(api, platform, CL_PLATFORM_NAME).unwrap_or_default();
        let ids = match device_ids(api, platform) {
            Ok(ids) => ids,
            Err(e) => {
                log::debug!("OpenCL platform '{platform_name}' gives no devices: {e}");
                continue;
            }
        };
        for id in ids {
            match info(api, id, &platform_name) {
                Ok(d) => out.push(d),
                Err(e) => log::debug!("an OpenCL device of '{platform_name}' cannot be queried: {e}"),
            }
        }
    }
    Ok(out)
}

fn platforms(api: &Api) -> Result<Vec<cl_platform_id>> {
    let mut n: cl_uint = 0;
    // SAFETY: count query with a valid out-pointer.
    let code = unsafe { (api.clGetPlatformIDs)(0, std::ptr::null_mut(), &mut n) };
    if code == -1001 || n == 0 {
        return Ok(Vec::new()); // CL_PLATFORM_NOT_FOUND_KHR: a loader without drivers
    }
    check(code, "clGetPlatformIDs")?;
    let mut ids = vec![std::ptr::null_mut(); n as usize];
    // SAFETY: `ids` holds `n` entries.
    check(unsafe { (api.clGetPlatformIDs)(n, ids.as_mut_ptr(), &mut n) }, "clGetPlatformIDs")?;
    ids.truncate(n as usize);
    Ok(ids)
}

fn device_ids(api: &Api, platform: cl_platform_id) -> Result<Vec<DeviceId>> {
    let mut n: cl_uint = 0;
    // SAFETY: count query on a platform id the loader gave.
    let code = unsafe { (api.clGetDeviceIDs)(platform, CL_DEVICE_TYPE_ALL, 0, std::ptr::null_mut(), &mut n) };
    if code == -1 {
        return Ok(Vec::new()); // CL_DEVICE_NOT_FOUND
    }
    check(code, "clGetDeviceIDs")?;
    let mut ids = vec![std::ptr::null_mut(); n as usize];
    // SAFETY: `ids` holds `n` entries.
    check(
        unsafe { (api.clGetDeviceIDs)(platform, CL_DEVICE_TYPE_ALL, n, ids.as_mut_ptr(), &mut n) },
        "clGetDeviceIDs",
    )?;
    Ok(ids.into_iter().take(n as usize).map(DeviceId).collect())
}

fn info(api: &Api, id: DeviceId, platform: &str) -> Result<DeviceInfo> {
    let s = |p| device_string(api, id, p);
    let device_type: u64 = device_scalar(api, id, CL_DEVICE_TYPE)?;
    Ok(DeviceInfo {
        id,
        platform: platform.to_string(),
        vendor: s(CL_DEVICE_VENDOR)?,
        name: s(CL_DEVICE_NAME)?,
        driver_version: s(CL_DRIVER_VERSION)?,
        version: s(CL_DEVICE_VERSION)?,
        is_gpu: device_type & CL_DEVICE_TYPE_GPU != 0,
        is_cpu: device_type & CL_DEVICE_TYPE_CPU != 0,
        compute_units: device_scalar(api, id, CL_DEVICE_MAX_COMPUTE_UNITS)?,
        max_work_group: device_scalar(api, id, CL_DEVICE_MAX_WORK_GROUP_SIZE)?,
        global_mem: device_scalar(api, id, CL_DEVICE_GLOBAL_MEM_SIZE)?,
        max_alloc: device_scalar(api, id, CL_DEVICE_MAX_MEM_ALLOC_SIZE)?,
        local_mem: device_scalar(api, id, CL_DEVICE_LOCAL_MEM_SIZE)?,
        extensions: s(CL_DEVICE_EXTENSIONS)?,
    })
}

/// A fixed-size device property (cl_uint, cl_ulong, size_t, bitfield).
fn device_scalar<T: bytemuck::Pod>(api: &Api, id: DeviceId, param: cl_info) -> Result<T> {
    let mut v = T::zeroed();
    // SAFETY: the buffer is exactly size_of::<T>() bytes, the size the spec gives for `param`.
    let code = unsafe {
        (api.clGetDeviceInfo)(
            id.0,
            param,
            std::mem::size_of::<T>(),
            &mut v as *mut T as *mut c_void,
            std::ptr::null_mut(),
        )
    };
    check(code, "clGetDeviceInfo")?;
    Ok(v)
}

fn device_string(api: &Api, id: DeviceId, param: cl_info) -> Result<String> {
    info_string(|size, ptr, ret| unsafe { (api.clGetDeviceInfo)(id.0, param, size, ptr, ret) }, "clGetDeviceInfo")
}

fn platform_string(api: &Api, p: cl_platform_id, param: cl_info) -> Result<String> {
    info_string(|size, ptr, ret| unsafe { (api.clGetPlatformInfo)(p, param, size, ptr, ret) }, "clGetPlatformInfo")
}

/// The two-call pattern of OpenCL's string queries: ask the size, then fill a buffer of it.
pub(crate) fn info_string(query: impl Fn(usize, *mut c_void, *mut usize) -> cl_int, what: &str) -> Result<String> {
    let mut size = 0usize;
    check(query(0, std::ptr::null_mut(), &mut size), what)?;
    let mut buf = vec![0u8; size];
    check(query(size, buf.as_mut_ptr() as *mut c_void, std::ptr::null_mut()), what)?;
    while buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
