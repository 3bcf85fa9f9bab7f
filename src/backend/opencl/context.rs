//! A context and an in-order command queue on one device, and device buffers with upload and
//! download. One `Context` per session device; everything made from it holds an `Arc` to it, so
//! the queue outlives every buffer and program.
//!
//! Buffers are pooled: a dropped buffer goes back to its context, and the next allocation of the
//! same byte size takes it instead of calling clCreateBuffer, so a model run again on the same
//! shapes creates no buffers (one in-order queue: a reused buffer is written only after every
//! command queued before). The idle buffers are bounded by twice the most bytes ever in use at
//! once plus [`POOL_SLACK`]; past that the oldest are released, so a stream of new shapes does not
//! grow the pool without end.

use super::device::DeviceInfo;
use super::loader::{api, check, Api};
use super::sys::*;
use crate::Result;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Idle bytes the pool may keep beyond twice the peak in use.
pub const POOL_SLACK: usize = 16 << 20;

pub struct Context {
    pub(crate) api: &'static Api,
    pub device: DeviceInfo,
    pub(crate) context: cl_context,
    pub(crate) queue: cl_command_queue,
    /// Where compiled program binaries are kept (`cache.rs`); `None` caches nothing.
    pub cache_dir: Option<PathBuf>,
    /// Whether tensors on this device are stored as float16 (`kernels/storage.cl`): every
    /// program is built with `-DHALF_STORAGE=1` and kernels compute in f32.
    pub half_storage: bool,
    transfers: [AtomicU64; 4],
    /// clCreateBuffer calls so far.
    created: AtomicU64,
    pool: Mutex<Pool>,
}

/// The buffers of a context that nothing uses now, oldest first, and the bytes in use.
#[derive(Default)]
struct Pool {
    idle: VecDeque<(usize, cl_mem)>,
    idle_bytes: usize,
    in_use: usize,
    peak_in_use: usize,
}

// SAFETY: the memory objects are only handed out under the context's mutex.
unsafe impl Send for Pool {}

/// Tensor transfers between the host and one context's device so far (`resident.rs` counts
/// them): what a device-resident chain of nodes must not add to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transfers {
    pub uploads: u64,
    pub upload_bytes: u64,
    pub downloads: u64,
    pub download_bytes: u64,
}

// SAFETY: OpenCL contexts and queues may be used from any thread (OpenCL 1.2, appendix A.2).
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "opencl::Context({})", self.device.name)
    }
}

impl Context {
    /// A context and queue on `device`, caching program binaries in `cache_dir` (see
    /// [`super::cache::default_dir`] for the usual choice).
    pub fn new(device: DeviceInfo, cache_dir: Option<PathBuf>) -> Result<Arc<Context>> {
        Context::with_storage(device, cache_dir, false)
    }

    /// [`Context::new`] with tensors stored as float16 on the device when `half_storage`.
    pub fn with_storage(device: DeviceInfo, cache_dir: Option<PathBuf>, half_storage: bool) -> Result<Arc<Context>> {
        let api = api()?;
        let mut code = 0;
        // SAFETY: one valid device id; no properties, no callback.
        let context =
            unsafe { (api.clCreateContext)(std::ptr::null(), 1, &device.id.0, None, std::ptr::null_mut(), &mut code) };
        check(code, "clCreateContext")?;
        // SAFETY: a context just made on this device; in-order, no profiling.
        let queue = unsafe { (api.clCreateCommandQueue)(context, device.id.0, 0, &mut code) };
        if let Err(e) = check(code, "clCreateCommandQueue") {
            unsafe { (api.clReleaseContext)(context) };
            return Err(e);
        }
        let (transfers, created, pool) = Default::default();
        Ok(Arc::new(Context { api, device, context, queue, cache_dir, half_storage, transfers, created, pool }))
    }

    /// How many device buffers this context has created (clCreateBuffer) so far; pooled
    /// buffers that are reused do not count.
    pub fn buffers_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Bytes of idle buffers the pool holds for reuse.
    pub fn pooled_bytes(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).idle_bytes
    }

    /// The tensor transfers counted so far.
    pub fn transfers(&self) -> Transfers {
        let [a, b, c, d] = self.transfers.each_ref().map(|c| c.load(Ordering::Relaxed));
        Transfers { uploads: a, upload_bytes: b, downloads: c, download_bytes: d }
    }

    pub(crate) fn count_upload(&self, bytes: usize) {
        self.transfers[0].fetch_add(1, Ordering::Relaxed);
        self.transfers[1].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_download(&self, bytes: usize) {
        self.transfers[2].fetch_add(1, Ordering::Relaxed);
        self.transfers[3].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes per stored f32 element: 2 with float16 storage.
    pub fn element_bytes(&self) -> usize {
        if self.half_storage {
            2
        } else {
            4
        }
    }

    /// The first device of the first platform that has one, preferring GPUs.
    pub fn first_device() -> Result<DeviceInfo> {
        let mut all = super::device::devices()?;
        all.sort_by_key(|d| !d.is_gpu);
        all.into_iter().next().ok_or_else(|| {
            crate::err!(
                Unsupported,
                "no OpenCL device found: install an OpenCL driver (e.g. pocl-opencl-icd for the CPU)"
            )
        })
    }

    /// Waits until every command queued so far has finished.
    pub fn finish(&self) -> Result<()> {
        // SAFETY: our own queue.
        check(unsafe { (self.api.clFinish)(self.queue) }, "clFinish")
    }

    /// A device buffer of `len` elements of `T`, contents undefined.
    pub fn alloc<T: bytemuck::Pod>(self: &Arc<Self>, len: usize) -> Result<Buffer> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| crate::err!(ResourceLimit, "a device buffer of {len} elements overflows"))?;
        if bytes as u64 > self.device.max_alloc {
            crate::bail!(
                ResourceLimit,
                "a device buffer of {bytes} bytes is larger than {}'s largest allocation ({} bytes)",
                self.device.name,
                self.device.max_alloc
            );
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.in_use += bytes;
        pool.peak_in_use = pool.peak_in_use.max(pool.in_use);
        if let Some(at) = pool.idle.iter().rposition(|&(b, _)| b == bytes) {
            let (_, mem) = pool.idle.remove(at).expect("found above");
            pool.idle_bytes -= bytes;
            return Ok(Buffer { ctx: self.clone(), mem, bytes });
        }
        let mut code = 0;
        // OpenCL refuses size 0; an empty tensor gets a one-byte buffer it never reads.
        // SAFETY: no host pointer; the size is checked above.
        let mem = unsafe {
            (self.api.clCreateBuffer)(self.context, CL_MEM_READ_WRITE, bytes.max(1), std::ptr::null_mut(), &mut code)
        };
        if let Err(e) = check(code, "clCreateBuffer") {
            pool.in_use -= bytes;
            return Err(e);
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        DEVICE_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(Buffer { ctx: self.clone(), mem, bytes })
    }

    /// Takes back a buffer nothing uses any more; releases the oldest idle ones past the bound.
    fn recycle(&self, mem: cl_mem, bytes: usize) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.in_use -= bytes;
        pool.idle.push_back((bytes, mem));
        pool.idle_bytes += bytes;
        let bound = pool.peak_in_use.saturating_mul(2).saturating_add(POOL_SLACK);
        while pool.idle_bytes > bound {
            let Some((b, m)) = pool.idle.pop_front() else { break };
            pool.idle_bytes -= b;
            self.release(m, b);
        }
    }

    fn release(&self, mem: cl_mem, bytes: usize) {
        // SAFETY: a memory object of this context that nothing holds, released once.
        unsafe { (self.api.clReleaseMemObject)(mem) };
        DEVICE_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// A device buffer holding a copy of `data`.
    pub fn upload<T: bytemuck::Pod>(self: &Arc<Self>, data: &[T]) -> Result<Buffer> {
        let buf = self.alloc::<T>(data.len())?;
        buf.write(data)?;
        Ok(buf)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.pool.get_mut().unwrap_or_else(|e| e.into_inner()).idle);
        for (bytes, mem) in idle {
            self.release(mem, bytes);
        }
        // SAFETY: our own handles, released once; every Buffer/Program holds an Arc, so none is alive.
        unsafe {
            (self.api.clReleaseCommandQueue)(self.queue);
            (self.api.clReleaseContext)(self.context);
        }
    }
}

/// A device memory object of a known byte size.
pub struct Buffer {
    ctx: Arc<Context>,
    pub(crate) mem: cl_mem,
    bytes: usize,
}

// SAFETY: memory objects may be used from any thread; writes and reads go through the in-order queue.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "opencl::Buffer({} bytes)", self.bytes)
    }
}

impl Buffer {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Copies `data` into the start of the buffer (blocking).
    pub fn write<T: bytemuck::Pod>(&self, data: &[T]) -> Result<()> {
        let bytes = std::mem::size_of_val(data);
        self.check_fits(bytes)?;
        if bytes == 0 {
            return Ok(());
        }
        let c = &self.ctx;
        // SAFETY: blocking write of `bytes` from a live slice into a buffer at least that large.
        let code = unsafe {
            (c.api.clEnqueueWriteBuffer)(
                c.queue,
                self.mem,
                CL_TRUE,
                0,
                bytes,
                data.as_ptr() as *const c_void,
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        check(code, "clEnqueueWriteBuffer")
    }

    /// Copies the start of the buffer into `out` (blocking: waits for the kernels before it).
    pub fn read<T: bytemuck::Pod>(&self, out: &mut [T]) -> Result<()> {
        let bytes = std::mem::size_of_val(out);
        self.check_fits(bytes)?;
        if bytes == 0 {
            return Ok(());
        }
        let c = &self.ctx;
        // SAFETY: blocking read of `bytes` into a live, exclusively borrowed slice.
        let code = unsafe {
            (c.api.clEnqueueReadBuffer)(
                c.queue,
                self.mem,
                CL_TRUE,
                0,
                bytes,
                out.as_mut_ptr() as *mut c_void,
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        check(code, "clEnqueueReadBuffer")
    }

    /// A new buffer holding `bytes` bytes of this one from byte `offset` (copied on the device).
    pub fn copy_range(&self, offset: usize, bytes: usize) -> Result<Buffer> {
        if offset.checked_add(bytes).is_none_or(|end| end > self.bytes) {
            crate::bail!(Runtime, "bytes {offset}..+{bytes} pass the end of a device buffer of {}", self.bytes);
        }
        let out = self.ctx.alloc::<u8>(bytes)?;
        if bytes == 0 {
            return Ok(out);
        }
        let c = &self.ctx;
        // SAFETY: both ranges lie inside their buffers (checked above); in-order queue, no events.
        let code = unsafe {
            (c.api.clEnqueueCopyBuffer)(
                c.queue,
                self.mem,
                out.mem,
                offset,
                0,
                bytes,
                0,
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        check(code, "clEnqueueCopyBuffer")?;
        Ok(out)
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The buffer's first `len` elements, copied to the host.
    pub fn to_vec<T: bytemuck::Pod>(&self, len: usize) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); len];
        self.read(&mut v)?;
        Ok(v)
    }

    fn check_fits(&self, bytes: usize) -> Result<()> {
        if bytes > self.bytes {
            crate::bail!(Runtime, "a transfer of {bytes} bytes does not fit a device buffer of {}", self.bytes);
        }
        Ok(())
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.ctx.recycle(self.mem, self.bytes);
    }
}

/// Bytes of OpenCL buffers this process holds now, over every context, in use or idle in a
/// context's pool (the server's `crx580_device_memory_bytes`).
static DEVICE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`DEVICE_BYTES`].
pub fn device_bytes() -> u64 {
    DEVICE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}
