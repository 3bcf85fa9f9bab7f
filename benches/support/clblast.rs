//! CLBlast's SGEMM on the same OpenCL device, for the opencl_gemm benchmark's comparison only:
//! `libclblast.so.1` (Debian `libclblast-dev`) is opened with dlopen at run time, so neither the
//! library nor this benchmark links against it, and a machine without it just skips the column.
//! CLBlast gets its own context and queue on the device (our `Context` keeps its handles private),
//! made with the OpenCL entry points crx580's loader already resolved.

use crx580::backend::opencl::loader::{api, Api};
use crx580::backend::opencl::sys::*;
use crx580::backend::opencl::DeviceInfo;
use std::ffi::{c_void, CString};

const ROW_MAJOR: i32 = 101;
const NO_TRANSPOSE: i32 = 111;

type Sgemm = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    usize,
    usize,
    usize,
    f32,
    cl_mem,
    usize,
    usize,
    cl_mem,
    usize,
    usize,
    f32,
    cl_mem,
    usize,
    usize,
    *mut cl_command_queue,
    *mut cl_event,
) -> i32;

pub struct ClBlast {
    api: &'static Api,
    sgemm: Sgemm,
    context: cl_context,
    queue: cl_command_queue,
}

/// A, B and C of one GEMM on CLBlast's context.
pub struct Operands {
    api: &'static Api,
    mems: [cl_mem; 3],
}

impl Drop for Operands {
    fn drop(&mut self) {
        // SAFETY: our own memory objects, released once.
        self.mems.iter().for_each(|&m| unsafe {
            (self.api.clReleaseMemObject)(m);
        });
    }
}

impl ClBlast {
    /// CLBlast on `device`, or why not (the library is missing, or the device refuses a context).
    pub fn new(device: &DeviceInfo) -> Result<ClBlast, String> {
        let api = api().map_err(|e| e.message)?;
        let name = CString::new("libclblast.so.1").unwrap();
        // SAFETY: dlopen of a shared library by name; the handle is kept for the process's life.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err("libclblast.so.1 not found (apt-get install libclblast-dev)".into());
        }
        let symbol = CString::new("CLBlastSgemm").unwrap();
        // SAFETY: a symbol lookup in the handle just opened.
        let f = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
        if f.is_null() {
            return Err("libclblast.so.1 has no CLBlastSgemm".into());
        }
        // SAFETY: CLBlastSgemm has the signature of `Sgemm` (clblast_c.h, CLBlast 1.x).
        let sgemm = unsafe { std::mem::transmute::<*mut c_void, Sgemm>(f) };
        let mut code = 0;
        // SAFETY: one valid device id, no properties or callback.
        let context =
            unsafe { (api.clCreateContext)(std::ptr::null(), 1, &device.id.0, None, std::ptr::null_mut(), &mut code) };
        if code != 0 {
            return Err(format!("clCreateContext: {code}"));
        }
        // SAFETY: the context just made, on its device.
        let queue = unsafe { (api.clCreateCommandQueue)(context, device.id.0, 0, &mut code) };
        if code != 0 {
            return Err(format!("clCreateCommandQueue: {code}"));
        }
        Ok(ClBlast { api, sgemm, context, queue })
    }

    /// Device copies of row-major A (M x K), B (K x N) and a C (M x N).
    pub fn operands(&self, a: &[f32], b: &[f32], c_len: usize) -> Result<Operands, String> {
        let mut ops = Operands { api: self.api, mems: [std::ptr::null_mut(); 3] };
        for (i, (data, len)) in [(Some(a), a.len()), (Some(b), b.len()), (None, c_len)].into_iter().enumerate() {
            let mut code = 0;
            // SAFETY: a plain read-write buffer, no host pointer.
            let mem = unsafe {
                (self.api.clCreateBuffer)(self.context, CL_MEM_READ_WRITE, len * 4, std::ptr::null_mut(), &mut code)
            };
            if code != 0 {
                return Err(format!("clCreateBuffer: {code}"));
            }
            ops.mems[i] = mem;
            if let Some(d) = data {
                // SAFETY: a blocking write of the whole slice into a buffer of its size.
                let code = unsafe {
                    (self.api.clEnqueueWriteBuffer)(
                        self.queue,
                        mem,
                        CL_TRUE,
                        0,
                        len * 4,
                        d.as_ptr() as *const c_void,
                        0,
                        std::ptr::null(),
                        std::ptr::null_mut(),
                    )
                };
                if code != 0 {
                    return Err(format!("clEnqueueWriteBuffer: {code}"));
                }
            }
        }
        Ok(ops)
    }

    /// Enqueues C = A B (row-major, no transposes).
    pub fn sgemm(&self, m: usize, n: usize, k: usize, ops: &Operands) -> Result<(), String> {
        let mut queue = self.queue;
        let [a, b, c] = ops.mems;
        // SAFETY: buffers of M*K, K*N and M*N floats on this queue's context (`operands`).
        let status = unsafe {
            (self.sgemm)(
                ROW_MAJOR,
                NO_TRANSPOSE,
                NO_TRANSPOSE,
                m,
                n,
                k,
                1.0,
                a,
                0,
                k,
                b,
                0,
                n,
                0.0,
                c,
                0,
                n,
                &mut queue,
                std::ptr::null_mut(),
            )
        };
        if status != 0 {
            return Err(format!("CLBlastSgemm status {status}"));
        }
        Ok(())
    }

    pub fn finish(&self) {
        // SAFETY: our own queue.
        unsafe { (self.api.clFinish)(self.queue) };
    }

    /// The first `len` floats of C.
    pub fn read_c(&self, ops: &Operands, len: usize) -> Vec<f32> {
        let mut out = vec![0f32; len];
        // SAFETY: a blocking read of `len` floats from C, which holds at least that many.
        unsafe {
            (self.api.clEnqueueReadBuffer)(
                self.queue,
                ops.mems[2],
                CL_TRUE,
                0,
                len * 4,
                out.as_mut_ptr() as *mut c_void,
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        out
    }
}

impl Drop for ClBlast {
    fn drop(&mut self) {
        // SAFETY: our own handles, released once, after every Operands (they borrow nothing, but
        // the benchmark drops them first).
        unsafe {
            (self.api.clReleaseCommandQueue)(self.queue);
            (self.api.clReleaseContext)(self.context);
        }
    }
}
