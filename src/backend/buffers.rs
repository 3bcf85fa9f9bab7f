//! Recycled f32 buffers: the memory side of a compiled plan. When a run's value dies (its last
//! reader has run) and nothing else shares its storage, its buffer comes back here; kernels take
//! their output buffers from here. After the first run of a shape, a run's intermediate tensors
//! cost no heap allocation: the same buffers go round (tested with a counting allocator in
//! `tests/allocations.rs`). f32 buffers are recycled, and byte buffers (uint8/int8 tensors: a
//! quantized model's activations) in a list of their own; other dtypes are rare and small in the
//! models that matter.
//!
//! A compiled graph keeps one pool per input-shape signature (a few, least recently used first
//! out: see `plan.rs`). A pool is shared by the runs of that shape (a mutex held only to push or
//! pop), and bounded:
//! at most [`MAX_BUFFERS`] buffers and `max_bytes` bytes are kept; what does not fit is freed.
//! A buffer that a whole run leaves untaken is freed at the start of the next one
//! ([`BufferPool::start_run`]): reference kernels make their own outputs, which come back here
//! when they die, and without that rule the pool would fill with buffers nobody asks for (it
//! once held 420 MB for YOLOv8n, whose live tensors never exceed 50 MB).

use crate::ir::{limits, DType, Data, Tensor};
use crate::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most buffers kept. A plan's live set is rarely more than a few dozen values.
pub const MAX_BUFFERS: usize = 256;

/// A kernel's f32 output: `len` floats from `start` in a pooled buffer ([`BufferPool::output`]);
/// dereferences to them.
#[derive(Debug)]
pub struct Output {
    buffer: Vec<f32>,
    start: usize,
    len: usize,
}

impl Output {
    /// The output as a tensor of `shape`, over its part of the buffer ([`Tensor::over_part`]).
    pub fn into_tensor(self, shape: Vec<usize>) -> Result<Tensor> {
        let n = crate::ir::tensor::checked_len(&shape, DType::F32)?;
        if n != self.len {
            crate::bail!(Shape, "an output of {} floats cannot have shape {shape:?}", self.len);
        }
        Tensor::over_part(shape, self.buffer, self.start)
    }

    /// An output over a tensor's elements, which it starts out holding: a dead input the plan
    /// lets a kernel overwrite ([`crate::backend::Kernel::run_in_place`]). The tensor back where
    /// its storage is shared or not f32 on the host.
    pub fn over(t: Tensor) -> std::result::Result<Output, Tensor> {
        let (buffer, start, len) = t.into_unique_f32_part()?;
        Ok(Output { buffer, start, len })
    }

    /// The whole pooled buffer, for [`BufferPool::give`] (an output used as scratch).
    pub fn into_buffer(self) -> Vec<f32> {
        self.buffer
    }
}

impl std::ops::Deref for Output {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buffer[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Output {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buffer[self.start..self.start + self.len]
    }
}

#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Free>,
    max_bytes: usize,
    /// Runs started so far.
    runs: AtomicU64,
}

#[derive(Debug, Default)]
struct Free {
    /// Sorted by capacity, so that `take` finds the smallest that fits.
    buffers: Vec<Kept<f32>>,
    /// Byte buffers, likewise.
    byte_buffers: Vec<Kept<u8>>,
    /// Of both lists.
    bytes: usize,
}

#[derive(Debug)]
struct Kept<T> {
    buffer: Vec<T>,
    /// The run during which it came back.
    since_run: u64,
}

/// The smallest buffer in `list` (sorted by capacity) that holds `n` values from where `start`
/// says its part begins and wastes at most three quarters of what is past it; with `long`, the
/// smallest such one already long enough if there is one, else the longest, so that a caller
/// about to overwrite it zeroes as little as possible past its old length (that zeroing took 5%
/// of a MobileNetV2 run; the first rule saves about half of it).
fn take_from<T>(list: &mut Vec<Kept<T>>, n: usize, long: bool, start: impl Fn(&Vec<T>) -> usize) -> Option<Vec<T>> {
    let i = list.partition_point(|k| k.buffer.capacity() < n);
    let room = |k: &Kept<T>| k.buffer.capacity() - start(&k.buffer).min(k.buffer.capacity());
    let fits = list[i..].iter().enumerate().filter(|(_, k)| n > 0 && room(k) >= n && room(k) / 4 <= n);
    let long_enough = |k: &Kept<T>| k.buffer.len() >= start(&k.buffer) + n;
    let j = match long {
        true => match fits.clone().find(|(_, k)| long_enough(k)) {
            Some((j, _)) => j,
            // Ties go to the smallest, as above.
            None => {
                fits.max_by_key(|(j, k)| (k.buffer.len().saturating_sub(start(&k.buffer)), std::cmp::Reverse(*j)))?.0
            }
        },
        false => fits.map(|(j, _)| j).next()?,
    };
    Some(list.remove(i + j).buffer)
}

/// Floats of 2 MiB, the huge page size.
const HUGE_FLOATS: usize = (2 << 20) / 4;
/// Outputs of at least this many floats (1 MiB) start on a huge page ([`BufferPool::output`]).
const ALIGNED_FROM: usize = 1 << 18;

/// Where the part of `v` starts that [`BufferPool::output`] writes: the first 2 MiB
/// boundary in buffers with room for one before a large output, else 0.
fn part_start(v: &Vec<f32>) -> usize {
    if v.capacity() < ALIGNED_FROM + HUGE_FLOATS {
        return 0;
    }
    let at = v.as_ptr() as usize;
    // Heap memory for f32 is 4-aligned, so the distance is whole floats.
    (at.next_multiple_of(4 * HUGE_FLOATS) - at) / 4
}

/// Inserts `buffer` into `list`, keeping it sorted by capacity.
fn insert_into<T>(list: &mut Vec<Kept<T>>, buffer: Vec<T>, since_run: u64) {
    let i = list.partition_point(|k| k.buffer.capacity() < buffer.capacity());
    list.insert(i, Kept { buffer, since_run });
}

impl BufferPool {
    /// A pool that keeps at most `max_bytes` of buffers between uses.
    pub fn new(max_bytes: usize) -> BufferPool {
        BufferPool { free: Mutex::new(Free::default()), max_bytes, runs: AtomicU64::new(0) }
    }

    /// Marks the start of a run: frees the buffers that came back before the previous run began
    /// and that it did not take, since the runs of this plan no longer ask for them.
    pub fn start_run(&self) {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let mut free = self.lock();
        let before = free.buffers.len() + free.byte_buffers.len();
        free.buffers.retain(|k| k.since_run + 2 > run);
        free.byte_buffers.retain(|k| k.since_run + 2 > run);
        if free.buffers.len() + free.byte_buffers.len() != before {
            free.bytes = free.buffers.iter().map(|k| k.buffer.capacity() * 4).sum::<usize>()
                + free.byte_buffers.iter().map(|k| k.buffer.capacity()).sum::<usize>();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic while holding the lock leaves a list of plain vectors: still consistent.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` zeros: a recycled buffer when one fits (and wastes at most three quarters of itself),
    /// else a new one, checked against the tensor size limit.
    pub fn zeroed(&self, n: usize) -> Result<Vec<f32>> {
        if let Some(mut v) = self.take(n, false, |_| 0) {
            v.clear();
            v.resize(n, 0.0);
            return Ok(v);
        }
        limits::zeros(n)
    }

    /// `n` floats for a kernel that writes every one of them before anything reads them: a
    /// recycled buffer keeps its old contents, saving the zeroing pass, which for a
    /// bandwidth-bound kernel (depthwise, a 1x1 conv over few channels) costs about as much memory
    /// traffic as the kernel's own writes. Debug builds fill the buffer with NaN instead, so a
    /// kernel that leaves an element unwritten fails its tests rather than leaking stale values.
    ///
    /// The vector is exactly `n` long, so a longer buffer is cut to `n`, and the next kernel to
    /// take it for more zeroes the rest again (MiniLM's Gelu zeroed three quarters of its output
    /// so, every run): kernels whose output or scratch can be an [`Output`] take
    /// [`BufferPool::output`], which keeps the buffer's length.
    pub fn for_overwrite(&self, n: usize) -> Result<Vec<f32>> {
        let mut v = match self.take(n, true, |_| 0) {
            Some(mut v) => {
                v.resize(n, 0.0);
                v
            }
            None => limits::zeros(n)?,
        };
        if cfg!(debug_assertions) {
            v.fill(f32::NAN);
        }
        Ok(v)
    }

    /// `n` floats for a kernel's output, which it writes before anything reads them and returns
    /// with [`Output::into_tensor`]: as [`BufferPool::for_overwrite`], but an output of a
    /// megabyte or more starts on a 2 MiB boundary of its buffer, in huge pages, and a recycled
    /// buffer keeps its length, so nothing is zeroed to cut it now or to lengthen it again when a
    /// larger output takes it next (2-3% of a MobileNetV2 run went to that zeroing).
    ///
    /// Huge pages: a heap buffer starts anywhere, so only the whole 2 MiB pages inside it could be
    /// huge (`limits::with_capacity`), none of one under 2 MiB; the activations of MobileNetV2's
    /// and YOLOv8n's first layers (1-7 MB each) stayed mostly on 4 KiB pages, and their kernels
    /// ran up to twice as slow as in huge pages. A new buffer for such an output has room for the
    /// output rounded up to whole huge pages after the first boundary; the memory before that
    /// boundary is zeroed once and never used (on 4 KiB pages, about 1 MiB per such buffer).
    pub fn output(&self, n: usize) -> Result<Output> {
        let mut buffer = match self.take(n, true, part_start) {
            Some(v) => v,
            // The part used is zeroed below, unless the allocator gave zeros (`limits::room`).
            None if n >= ALIGNED_FROM => limits::room(n.next_multiple_of(HUGE_FLOATS) + HUGE_FLOATS)?,
            // Too small for `part_start` to move it.
            None => limits::with_capacity(n)?,
        };
        let start = part_start(&buffer);
        if buffer.len() < start + n {
            buffer.resize(start + n, 0.0);
        }
        if cfg!(debug_assertions) {
            buffer[start..start + n].fill(f32::NAN);
        }
        Ok(Output { buffer, start, len: n })
    }

    /// A copy of `src` as an [`Output`] (kernels that work in place on a copy of their input).
    pub fn output_copied(&self, src: &[f32]) -> Result<Output> {
        let mut y = self.output(src.len())?;
        y.copy_from_slice(src);
        Ok(y)
    }

    /// A copy of `src` in a recycled buffer when one fits (kernels that work in place on a copy
    /// of their input).
    pub fn copied(&self, src: &[f32]) -> Result<Vec<f32>> {
        if let Some(mut v) = self.take(src.len(), false, |_| 0) {
            v.clear();
            v.extend_from_slice(src);
            return Ok(v);
        }
        let mut v = crate::ir::limits::with_capacity(src.len())?;
        v.extend_from_slice(src);
        Ok(v)
    }

    fn take(&self, n: usize, long: bool, start: impl Fn(&Vec<f32>) -> usize) -> Option<Vec<f32>> {
        let mut free = self.lock();
        let v = take_from(&mut free.buffers, n, long, start)?;
        free.bytes -= v.capacity() * 4;
        Some(v)
    }

    /// `n` bytes for a kernel that writes every one of them before anything reads them (a
    /// quantized kernel's uint8/int8 output), recycled where one fits; debug builds fill them
    /// with 0xA5 (as [`BufferPool::for_overwrite`] fills NaN).
    pub fn bytes_for_overwrite(&self, n: usize) -> Result<Vec<u8>> {
        let kept = {
            let mut free = self.lock();
            let v = take_from(&mut free.byte_buffers, n, true, |_| 0);
            free.bytes -= v.as_ref().map_or(0, |v| v.capacity());
            v
        };
        let mut v = match kept {
            Some(mut v) => {
                v.resize(n, 0);
                v
            }
            None => limits::zeros(n)?,
        };
        if cfg!(debug_assertions) {
            v.fill(0xA5);
        }
        Ok(v)
    }

    /// Keeps `v` for a later [`BufferPool::zeroed`], if the pool has room.
    pub fn give(&self, v: Vec<f32>) {
        let bytes = v.capacity() * 4;
        if bytes == 0 {
            return;
        }
        let mut free = self.lock();
        if free.buffers.len() + free.byte_buffers.len() >= MAX_BUFFERS || free.bytes + bytes > self.max_bytes {
            return;
        }
        let since_run = self.runs.load(Ordering::Relaxed);
        insert_into(&mut free.buffers, v, since_run);
        free.bytes += bytes;
    }

    /// Keeps byte buffer `v` for a later [`BufferPool::bytes_for_overwrite`], if the pool has room.
    pub fn give_bytes(&self, v: Vec<u8>) {
        let bytes = v.capacity();
        let mut free = self.lock();
        if bytes == 0
            || free.buffers.len() + free.byte_buffers.len() >= MAX_BUFFERS
            || free.bytes + bytes > self.max_bytes
        {
            return;
        }
        let since_run = self.runs.load(Ordering::Relaxed);
        insert_into(&mut free.byte_buffers, v, since_run);
        free.bytes += bytes;
    }

    /// Takes back the storage of a dead value when it is an f32, uint8 or int8 tensor that
    /// nothing else shares.
    pub fn recycle(&self, d: Data) {
        if let Data::Tensor(t) = d {
            match t.dtype() {
                DType::F32 => t.into_unique_buffer::<f32>().map(|v| self.give(v)),
                DType::U8 => t.into_unique_buffer::<u8>().map(|v| self.give_bytes(v)),
                // The same layout as u8.
                DType::I8 => t.into_unique_buffer::<i8>().map(|v| self.give_bytes(bytemuck::allocation::cast_vec(v))),
                _ => None,
            };
        }
    }

    /// Bytes kept now.
    pub fn kept_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_and_best_fitting() {
        let pool = BufferPool::new(1 << 20);
        let mut a = pool.zeroed(100).unwrap();
        a.iter_mut().for_each(|x| *x = 7.0);
        let a_ptr = a.as_ptr();
        pool.start_run();
        pool.give(a);
        pool.give(vec![1.0; 1000]);
        assert_eq!(pool.kept_bytes(), 1100 * 4);
        // 90 fits in the 100-buffer (the smallest that fits), which comes back zeroed.
        let b = pool.zeroed(90).unwrap();
        assert_eq!((b.as_ptr(), b.len()), (a_ptr, 90));
        assert!(b.iter().all(|&x| x == 0.0));
        // 10 would waste most of the 1000-buffer: a new one is made.
        assert_eq!(pool.zeroed(10).unwrap().capacity(), 10);
        assert_eq!(pool.kept_bytes(), 1000 * 4);
    }

    #[test]
    fn outputs_keep_their_buffers_length() {
        let pool = BufferPool::new(1 << 20);
        pool.start_run();
        let big = vec![7.0f32; 100];
        let ptr = big.as_ptr();
        pool.give(big);
        let y = pool.output(90).unwrap();
        assert!(y.iter().all(|x| if cfg!(debug_assertions) { x.is_nan() } else { *x == 7.0 }));
        let v = y.into_tensor(vec![90]).unwrap().into_unique_buffer::<f32>().unwrap();
        assert_eq!((v.as_ptr(), v.len()), (ptr, 100), "the recycled buffer, its length kept");
        assert_eq!(v[90..], [7.0; 10]);
        // A recycled buffer shorter than asked is lengthened within its capacity.
        let pool = BufferPool::new(1 << 20);
        let mut short = Vec::with_capacity(100);
        short.extend([1.0f32; 50]);
        let ptr = short.as_ptr();
        pool.give(short);
        let w = pool.output(60).unwrap();
        assert_eq!((w.as_ptr(), w.len()), (ptr, 60));
        assert!(w.into_tensor(vec![61]).is_err(), "a shape of another size");
    }

    #[test]
    fn large_outputs_start_on_a_huge_page_in_new_and_recycled_buffers() {
        let pool = BufferPool::new(1 << 30);
        pool.start_run();
        let n = ALIGNED_FROM + 1000;
        let y = pool.output(n).unwrap();
        let at = y.as_ptr();
        assert_eq!((at as usize % (4 * HUGE_FLOATS), y.len()), (0, n));
        assert!(y.buffer.capacity() >= y.start + n.next_multiple_of(HUGE_FLOATS), "no room for whole huge pages");
        pool.give(y.buffer);
        // A smaller large output takes it again, at the same boundary.
        assert_eq!(pool.output(ALIGNED_FROM).unwrap().as_ptr(), at);
        // Small outputs start at the head of theirs.
        assert_eq!(pool.output(1000).unwrap().start, 0);
    }

    #[test]
    fn buffers_for_overwrite_skip_the_zeroing() {
        let pool = BufferPool::new(1 << 20);
        pool.start_run();
        let big = vec![7.0f32; 100];
        let ptr = big.as_ptr();
        pool.give(big);
        let v = pool.for_overwrite(90).unwrap();
        assert_eq!((v.as_ptr(), v.len()), (ptr, 90), "the recycled buffer, cut to length");
        // Debug builds poison it, so that tests catch a kernel that leaves an element unwritten.
        assert!(v.iter().all(|x| if cfg!(debug_assertions) { x.is_nan() } else { *x == 7.0 }));
        pool.give(v);
        // Longer than the old length (but within the capacity): grows in place.
        let w = pool.for_overwrite(100).unwrap();
        assert_eq!((w.as_ptr(), w.len()), (ptr, 100));
        assert_eq!(pool.for_overwrite(5).unwrap().len(), 5);
    }

    #[test]
    fn buffers_for_overwrite_prefer_one_already_long_enough() {
        let pool = BufferPool::new(1 << 20);
        pool.start_run();
        // Two that fit 150: the smaller was last 100 long (it would need 50 zeros), the larger
        // 180 (none).
        let mut short = Vec::with_capacity(160);
        short.resize(100, 1.0f32);
        let long = vec![2.0f32; 180];
        let (short_ptr, long_ptr) = (short.as_ptr(), long.as_ptr());
        pool.give(short);
        pool.give(long);
        let v = pool.for_overwrite(150).unwrap();
        assert_eq!((v.as_ptr(), v.len()), (long_ptr, 150));
        // Zeroed buffers still take the smallest that fits.
        let z = pool.zeroed(150).unwrap();
        assert_eq!(z.as_ptr(), short_ptr);
    }

    #[test]
    fn the_pool_is_bounded_and_keeps_only_unshared_f32_storage() {
        let pool = BufferPool::new(4096);
        pool.give(vec![0.0; 2048]);
        assert_eq!(pool.kept_bytes(), 0, "over the byte bound: freed");
        let t = Tensor::new(vec![4], vec![1f32; 4]).unwrap();
        let view = t.clone();
        pool.recycle(Data::Tensor(t));
        assert_eq!(pool.kept_bytes(), 0, "shared with a live view: not taken");
        pool.recycle(Data::Tensor(view));
        assert_eq!(pool.kept_bytes(), 16);
        pool.recycle(Data::Tensor(Tensor::new(vec![4], vec![1i64; 4]).unwrap()));
        assert_eq!(pool.kept_bytes(), 16);
        for _ in 0..MAX_BUFFERS + 5 {
            pool.give(vec![0.0; 1]);
        }
        assert_eq!(pool.lock().buffers.len(), MAX_BUFFERS);
    }

    #[test]
    fn byte_buffers_go_round_apart_from_floats() {
        let pool = BufferPool::new(1 << 20);
        pool.start_run();
        let t = Tensor::new(vec![100], vec![3u8; 100]).unwrap();
        let ptr = t.as_slice::<u8>().unwrap().as_ptr();
        pool.recycle(Data::Tensor(t));
        pool.recycle(Data::Tensor(Tensor::new(vec![200], vec![-1i8; 200]).unwrap()));
        assert_eq!(pool.kept_bytes(), 300);
        assert!(pool.zeroed(25).unwrap().capacity() == 25, "no f32 buffer from the byte list");
        let v = pool.bytes_for_overwrite(90).unwrap();
        assert_eq!((v.as_ptr(), v.len()), (ptr, 90), "the smallest that fits");
        assert!(v.iter().all(|&b| b == if cfg!(debug_assertions) { 0xA5 } else { 3 }));
        pool.start_run();
        pool.start_run();
        assert_eq!(pool.kept_bytes(), 0, "untaken for a whole run: freed");
    }

    #[test]
    fn buffers_a_whole_run_leaves_untaken_are_freed() {
        let pool = BufferPool::new(1 << 20);
        pool.start_run();
        pool.give(vec![0.0; 100]);
        pool.give(vec![0.0; 200]);
        pool.start_run();
        // This run takes the 100-buffer back and gives it again; nothing asks for 200.
        let v = pool.zeroed(100).unwrap();
        pool.give(v);
        assert_eq!(pool.kept_bytes(), 300 * 4);
        pool.start_run();
        assert_eq!(pool.kept_bytes(), 100 * 4);
        assert_eq!(pool.zeroed(100).unwrap().capacity(), 100);
    }
}
