//! Programs built from the kernel sources embedded at build time (`kernels/*.cl`), with `-D`
//! parameters, through the on-disk binary cache; and kernels with their arguments and launch.

use super::cache;
use super::context::{Buffer, Context};
use super::loader::check;
use super::sys::*;
use crate::Result;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

/// The kernel files, embedded: each compiles on its own with its default macros.
pub const SOURCES: &[(&str, &str)] = &[
    ("activation.cl", include_str!("../../../kernels/activation.cl")),
    ("storage.cl", include_str!("../../../kernels/storage.cl")),
    ("gemm.cl", include_str!("../../../kernels/gemm.cl")),
    ("elementwise.cl", include_str!("../../../kernels/elementwise.cl")),
    ("conv.cl", include_str!("../../../kernels/conv.cl")),
    ("pool.cl", include_str!("../../../kernels/pool.cl")),
    ("norm.cl", include_str!("../../../kernels/norm.cl")),
    ("movement.cl", include_str!("../../../kernels/movement.cl")),
    ("reduce.cl", include_str!("../../../kernels/reduce.cl")),
    ("resize.cl", include_str!("../../../kernels/resize.cl")),
    ("rnn.cl", include_str!("../../../kernels/rnn.cl")),
];

/// The files every other kernel file is compiled after: element storage and the activations.
const PRELUDE: &[&str] = &["storage.cl", "activation.cl"];

/// The source the device compiles for kernel file `name`: the file after the prelude. With
/// `CRX580_KERNELS_DIR` set (kernel development), the files are read from that directory instead.
pub fn source(name: &str) -> Result<String> {
    let read = |n: &str| match std::env::var_os("CRX580_KERNELS_DIR") {
        Some(dir) => std::fs::read_to_string(std::path::Path::new(&dir).join(n))
            .map_err(|e| crate::err!(Io, "kernel file {n} in CRX580_KERNELS_DIR: {e}")),
        None => SOURCES
            .iter()
            .find(|(f, _)| *f == n)
            .map(|(_, s)| s.to_string())
            .ok_or_else(|| crate::err!(Runtime, "no kernel file {n}")),
    };
    let mut text = String::new();
    for file in PRELUDE.iter().filter(|&&f| f != name) {
        text.push_str(&read(file)?);
        text.push('\n');
    }
    text.push_str(&read(name)?);
    Ok(text)
}

/// A built program on one context.
pub struct Program {
    ctx: Arc<Context>,
    program: cl_program,
    pub name: String,
    /// Whether the binary came from the disk cache (nothing was compiled).
    pub from_cache: bool,
}

// SAFETY: program objects may be used from any thread.
unsafe impl Send for Program {}
unsafe impl Sync for Program {}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "opencl::Program({})", self.name)
    }
}

/// The build options: OpenCL C 1.2 and one `-D NAME=VALUE` per define.
pub fn options(defines: &[(&str, String)]) -> String {
    let mut s = String::from("-cl-std=CL1.2");
    for (name, value) in defines {
        s.push_str(&format!(" -D{name}={value}"));
    }
    s
}

impl Program {
    /// Builds kernel file `file` with `defines`: from the cache when a good binary is there,
    /// else from source (and then stored in the cache; a cache that cannot be written is logged).
    pub fn build(ctx: &Arc<Context>, file: &str, defines: &[(&str, String)]) -> Result<Arc<Program>> {
        let source = source(file)?;
        let mut defines = defines.to_vec();
        if ctx.half_storage {
            defines.push(("HALF_STORAGE", "1".to_string()));
        }
        let options = options(&defines);
        let key = cache::Key::new(file, &ctx.device.name, &ctx.device.driver_version, &source, &options);
        if let Some(dir) = &ctx.cache_dir {
            if let Some(binary) = cache::load(dir, &key) {
                match Program::from_binary(ctx, file, &binary, &options) {
                    Ok(p) => return Ok(p),
                    Err(e) => log::debug!("cached {file} ({}) is not usable, rebuilding: {e}", key.file_name()),
                }
            }
        }
        let started = std::time::Instant::now();
        let program = Program::from_source(ctx, file, &source, &options)?;
        log::debug!("compiled {file} [{options}] in {:.2} s", started.elapsed().as_secs_f64());
        if let Some(dir) = &ctx.cache_dir {
            match program.binary().and_then(|b| cache::store(dir, &key, &b).map_err(Into::into)) {
                Ok(()) => log::debug!("cached {file} as {}", dir.join(key.file_name()).display()),
                Err(e) => log::warn!("cannot cache the OpenCL program {file} in {}: {e}", dir.display()),
            }
        }
        Ok(program)
    }

    fn from_source(ctx: &Arc<Context>, file: &str, source: &str, options: &str) -> Result<Arc<Program>> {
        let mut code = 0;
        let ptr = source.as_ptr() as *const std::ffi::c_char;
        let len = source.len();
        // SAFETY: one string of `len` bytes (no NUL needed when its length is given).
        let program = unsafe { (ctx.api.clCreateProgramWithSource)(ctx.context, 1, &ptr, &len, &mut code) };
        check(code, "clCreateProgramWithSource")?;
        let p = Arc::new(Program { ctx: ctx.clone(), program, name: file.to_string(), from_cache: false });
        p.finish_build(options)?;
        Ok(p)
    }

    fn from_binary(ctx: &Arc<Context>, file: &str, binary: &[u8], options: &str) -> Result<Arc<Program>> {
        let (mut code, mut status) = (0, 0);
        let (ptr, len) = (binary.as_ptr(), binary.len());
        // SAFETY: one device, one binary of `len` bytes.
        let program = unsafe {
            (ctx.api.clCreateProgramWithBinary)(ctx.context, 1, &ctx.device.id.0, &len, &ptr, &mut status, &mut code)
        };
        check(code, "clCreateProgramWithBinary")?;
        let p = Arc::new(Program { ctx: ctx.clone(), program, name: file.to_string(), from_cache: true });
        check(status, "clCreateProgramWithBinary (binary status)")?;
        p.finish_build(options)?;
        Ok(p)
    }

    fn finish_build(&self, options: &str) -> Result<()> {
        let ctx = &self.ctx;
        let opts = CString::new(options).map_err(|_| crate::err!(Runtime, "build options with a NUL byte"))?;
        // SAFETY: our program on our device; synchronous build (no callback).
        let code = unsafe {
            (ctx.api.clBuildProgram)(self.program, 1, &ctx.device.id.0, opts.as_ptr(), None, std::ptr::null_mut())
        };
        if code != CL_SUCCESS {
            let log = self.build_log().unwrap_or_default();
            let log: String = log.chars().take(4000).collect();
            return check(code, &format!("clBuildProgram({} [{options}])", self.name)).map_err(|mut e| {
                e.message.push_str(&format!("; build log:\n{log}"));
                e
            });
        }
        Ok(())
    }

    fn build_log(&self) -> Result<String> {
        let ctx = &self.ctx;
        super::device::info_string(
            |size, ptr, ret| unsafe {
                (ctx.api.clGetProgramBuildInfo)(self.program, ctx.device.id.0, CL_PROGRAM_BUILD_LOG, size, ptr, ret)
            },
            "clGetProgramBuildInfo",
        )
    }

    /// The device binary of this (one-device) program.
    fn binary(&self) -> Result<Vec<u8>> {
        let api = self.ctx.api;
        let mut size = 0usize;
        // SAFETY: one device, so one size_t.
        check(
            unsafe {
                (api.clGetProgramInfo)(
                    self.program,
                    CL_PROGRAM_BINARY_SIZES,
                    std::mem::size_of::<usize>(),
                    &mut size as *mut usize as *mut c_void,
                    std::ptr::null_mut(),
                )
            },
            "clGetProgramInfo(CL_PROGRAM_BINARY_SIZES)",
        )?;
        if size == 0 {
            crate::bail!(Runtime, "the driver gives no binary for {}", self.name);
        }
        let mut binary = vec![0u8; size];
        let mut ptr = binary.as_mut_ptr();
        // SAFETY: an array of one pointer to a buffer of the size the driver gave.
        check(
            unsafe {
                (api.clGetProgramInfo)(
                    self.program,
                    CL_PROGRAM_BINARIES,
                    std::mem::size_of::<*mut u8>(),
                    &mut ptr as *mut *mut u8 as *mut c_void,
                    std::ptr::null_mut(),
                )
            },
            "clGetProgramInfo(CL_PROGRAM_BINARIES)",
        )?;
        Ok(binary)
    }

    /// Kernel `name` of this program.
    pub fn kernel(self: &Arc<Self>, name: &str) -> Result<Kernel> {
        let cname = CString::new(name).map_err(|_| crate::err!(Runtime, "a kernel name with a NUL byte"))?;
        let mut code = 0;
        // SAFETY: a built program and a NUL-terminated name.
        let kernel = unsafe { (self.ctx.api.clCreateKernel)(self.program, cname.as_ptr(), &mut code) };
        check(code, &format!("clCreateKernel({name})"))?;
        Ok(Kernel { program: self.clone(), kernel: Mutex::new(KernelHandle(kernel)), name: name.to_string() })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: our own program, released once; kernels hold an Arc to it.
        unsafe { (self.ctx.api.clReleaseProgram)(self.program) };
    }
}

/// One kernel argument.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    Buf(&'a Buffer),
    I32(i32),
    F32(f32),
}

struct KernelHandle(cl_kernel);
// SAFETY: used only under the Kernel's mutex (clSetKernelArg is the one call that is not thread-safe).
unsafe impl Send for KernelHandle {}

/// A kernel of a program; `launch` sets every argument and enqueues under one lock, so one
/// kernel object may be shared between threads.
pub struct Kernel {
    program: Arc<Program>,
    kernel: Mutex<KernelHandle>,
    pub name: String,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "opencl::Kernel({})", self.name)
    }
}

impl Kernel {
    /// Enqueues the kernel over `global` work-items (up to 3 dimensions) in work-groups of
    /// `local` (the driver chooses when `None`). Does not wait for it.
    pub fn launch(&self, args: &[Arg], global: &[usize], local: Option<&[usize]>) -> Result<()> {
        if global.contains(&0) {
            return Ok(()); // nothing to do; OpenCL refuses empty ranges
        }
        let handle = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let api = self.program.ctx.api;
        for (i, arg) in args.iter().enumerate() {
            let (size, ptr): (usize, *const c_void) = match arg {
                Arg::Buf(b) => (std::mem::size_of::<cl_mem>(), &b.mem as *const cl_mem as *const c_void),
                Arg::I32(v) => (4, v as *const i32 as *const c_void),
                Arg::F32(v) => (4, v as *const f32 as *const c_void),
            };
            // SAFETY: the value lives across the call; the size is that of the kernel's parameter type.
            check(
                unsafe { (api.clSetKernelArg)(handle.0, i as cl_uint, size, ptr) },
                &format!("clSetKernelArg({}, {i})", self.name),
            )?;
        }
        if let Some(l) = local {
            if l.len() != global.len() {
                crate::bail!(
                    Runtime,
                    "kernel {}: local size has {} dimensions, global {}",
                    self.name,
                    l.len(),
                    global.len()
                );
            }
        }
        // SAFETY: global/local arrays of `global.len()` entries; no events.
        let code = unsafe {
            (api.clEnqueueNDRangeKernel)(
                self.program.ctx.queue,
                handle.0,
                global.len() as cl_uint,
                std::ptr::null(),
                global.as_ptr(),
                local.map_or(std::ptr::null(), |l| l.as_ptr()),
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        check(code, &format!("clEnqueueNDRangeKernel({}, global {global:?}, local {local:?})", self.name))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let handle = self.kernel.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: our own kernel, released once.
        unsafe { (self.program.ctx.api.clReleaseKernel)(handle.0) };
    }
}
