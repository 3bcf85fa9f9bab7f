//! Resource limits that protect the process from hostile models and inputs. A small file must not
//! be able to ask for memory that no machine has: every allocation whose size comes from the model
//! or the inputs is checked against [`max_tensor_bytes`] *before* it is made, and fails with a
//! `ResourceLimit` error instead of reaching Rust's allocation-failure abort (which `catch_unwind`
//! cannot catch).
//!
//! The limit belongs to the session that runs (`SessionOptions::max_tensor_bytes`); it reaches the
//! kernels as a thread-local set for the duration of a load or a run with [`with_max_tensor_bytes`],
//! so that no op signature has to carry it.

use crate::{bail, Result};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The default limit on one tensor (or one scratch buffer): 4 GiB, well under a workstation's
/// memory and above any single weight of the models this runtime targets.
pub const DEFAULT_MAX_TENSOR_BYTES: usize = 4 << 30;

thread_local! {
    static MAX_TENSOR_BYTES: Cell<usize> = const { Cell::new(DEFAULT_MAX_TENSOR_BYTES) };
    /// When the current run must stop, and the time limit it came from (for the message).
    static DEADLINE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// The limit in force on this thread.
pub fn max_tensor_bytes() -> usize {
    MAX_TENSOR_BYTES.with(|c| c.get())
}

/// Runs `f` with `limit` as this thread's tensor size limit, restoring the previous one afterwards
/// (also when `f` panics).
pub fn with_max_tensor_bytes<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAX_TENSOR_BYTES.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(MAX_TENSOR_BYTES.with(|c| c.replace(limit)));
    f()
}

/// Runs `f` with a deadline `limit` from now (or the enclosing one, if that is sooner), restoring
/// the previous one afterwards.
/// Graph runners call [`check_deadline`] between nodes, so that a Loop of 2^24 iterations or a long
/// chain of nodes cannot hold a server thread for minutes.
pub fn with_time_limit<R>(limit: Option<Duration>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(Instant, Duration)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|c| c.set(self.0));
        }
    }
    let outer = DEADLINE.with(|c| c.get());
    let inner = limit.map(|l| (Instant::now().checked_add(l).unwrap_or_else(far_future), l));
    // A limit inside a limited run only tightens it.
    let deadline = match (outer, inner) {
        (Some(o), Some(i)) => Some(if i.0 < o.0 { i } else { o }),
        (o, i) => i.or(o),
    };
    let _restore = Restore(DEADLINE.with(|c| c.replace(deadline)));
    f()
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// A `ResourceLimit` error once the current run has passed its time limit.
pub fn check_deadline() -> Result<()> {
    match DEADLINE.with(|c| c.get()) {
        Some((deadline, limit)) if Instant::now() > deadline => {
            bail!(ResourceLimit, "the run passed its time limit of {} ms", limit.as_millis())
        }
        _ => Ok(()),
    }
}

/// Whether `count` items of `item_bytes` bytes each fit under the limit: [`check_alloc`] without
/// building an error, for hot paths that make their own message only when it fails.
pub fn fits(count: usize, item_bytes: usize) -> bool {
    count.checked_mul(item_bytes.max(1)).is_some_and(|bytes| bytes <= max_tensor_bytes())
}

/// Checks that `count` items of `item_bytes` bytes each fit under the limit; `what` names the
/// buffer in the error (e.g. "TfIdfVectorizer n-gram table").
pub fn check_alloc(count: usize, item_bytes: usize, what: &str) -> Result<()> {
    if fits(count, item_bytes) {
        return Ok(());
    }
    let limit = max_tensor_bytes();
    match count.checked_mul(item_bytes.max(1)) {
        Some(bytes) => bail!(ResourceLimit, "{what} would take {bytes} bytes, over the limit of {limit} bytes"),
        None => bail!(ResourceLimit, "{what} of {count} items overflows the address space"),
    }
}

/// An empty vector with room for `n` items, checked against the limit first and then reserved
/// without aborting if memory is short: every model-sized buffer is made here or by [`check_alloc`].
pub fn with_capacity<T>(n: usize) -> Result<Vec<T>> {
    check_alloc(n, std::mem::size_of::<T>(), "buffer")?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| crate::err!(ResourceLimit, "cannot allocate {n} items: out of memory"))?;
    advise_huge_pages(v.as_ptr(), v.capacity() * std::mem::size_of::<T>());
    Ok(v)
}

/// Blocks of this many bytes or more come straight from the system as fresh pages (glibc's and
/// musl's `malloc` map them; glibc's threshold rises up to 32 MiB as such blocks are freed),
/// zero already, and `calloc` does not write them again.
const FRESH_FROM_SYSTEM: usize = 32 << 20;

/// `n` zeros, checked against the limit first and allocated without aborting if memory is short
/// (see [`room`]).
pub fn zeros<T: bytemuck::Zeroable + Clone>(n: usize) -> Result<Vec<T>> {
    let mut v = room(n)?;
    v.resize(n, T::zeroed());
    Ok(v)
}

/// Room for `n` items, checked against the limit first and reserved without aborting if memory
/// is short: empty, or from [`FRESH_FROM_SYSTEM`] bytes `n` zeros already, which the allocator
/// gives for nothing (`calloc` writes no fresh page; a `resize` with zeros wrote every page once
/// more, and a depthwise layer with a 32 MiB output ran 1.15x faster end to end without). Smaller
/// blocks are recycled by `malloc`, so the caller zeroes what it uses.
pub fn room<T: bytemuck::Zeroable>(n: usize) -> Result<Vec<T>> {
    check_alloc(n, std::mem::size_of::<T>(), "buffer")?;
    // Under the limit, so no overflow.
    let bytes = n * std::mem::size_of::<T>();
    if bytes < FRESH_FROM_SYSTEM {
        return with_capacity(n);
    }
    let layout = std::alloc::Layout::array::<T>(n)
        .map_err(|_| crate::err!(ResourceLimit, "cannot allocate {n} items: too large"))?;
    // SAFETY: the layout's size is not zero (FRESH_FROM_SYSTEM bytes or more).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        bail!(ResourceLimit, "cannot allocate {n} items: out of memory");
    }
    advise_huge_pages(ptr, bytes);
    // SAFETY: `ptr` is a block of the global allocator with the layout of `n` items of T, all
    // bytes zero, which is a valid T (`Zeroable`): what `from_raw_parts` needs for length and
    // capacity `n`.
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Asks Linux to back the whole 2 MiB pages inside `bytes` from `start` with huge pages, before
/// they are first written (where transparent huge pages are on "madvise", the default of many
/// distributions, nothing else gets them). A model's weights and activations are streamed
/// through once per run, tens of megabytes of them: with 4 KiB pages most of those pages miss
/// the TLB (every benchmark model ran 1-5% faster with this advice). Advice only: where the
/// kernel declines, nothing changes.
pub fn advise_huge_pages<T>(start: *const T, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes >= HUGE {
        let (lo, hi) = ((start as usize).next_multiple_of(HUGE), (start as usize + bytes) / HUGE * HUGE);
        // MADV_HUGEPAGE is 14 in Linux's generic mman-common.h (x86-64, aarch64).
        madvise(lo, hi, 14);
    }
}

/// Asks Linux to back the pages under `bytes` from `start` now, in one call, for memory that is
/// about to be written whole (MADV_POPULATE_WRITE, Linux 5.14; older kernels decline and the
/// pages fault in one by one as before). A load writes a model's weights into fresh memory
/// two or three times over (decoded, then packed); taking each 4 KiB page by its own fault
/// cost ResNet-50's load about 10% and YOLOv8n's 15% (benches/RESULTS.md, session 16).
pub fn prefault<T>(start: *const T, bytes: usize) {
    // Below this a call costs about what the faults it saves do.
    const LEAST: usize = 64 << 10;
    const PAGE: usize = 4 << 10;
    if bytes >= LEAST {
        let at = start as usize;
        // MADV_POPULATE_WRITE is 23 in Linux's generic mman-common.h (x86-64, aarch64).
        madvise(at / PAGE * PAGE, (at + bytes).next_multiple_of(PAGE), 23);
    }
}

/// madvise(2) on the pages from `lo` to `hi` (page-aligned), where there are any; the result
/// is ignored: every advice given here is a hint.
fn madvise(lo: usize, hi: usize, advice: i32) {
    #[cfg(target_os = "linux")]
    if hi > lo {
        // libc's madvise (std links libc on Linux; the `libc` crate is only in builds with
        // OpenCL).
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: the callers pass ranges of their own live allocations (rounded out to whole
        // pages, which belong to the same mapping); these advices change how pages are backed
        // and neither read nor change their contents.
        unsafe { madvise(lo as *mut std::ffi::c_void, hi - lo, advice) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (lo, hi, advice);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_limit_is_scoped_and_restored() {
        assert_eq!(max_tensor_bytes(), DEFAULT_MAX_TENSOR_BYTES);
        with_max_tensor_bytes(100, || {
            assert!(check_alloc(25, 4, "x").is_ok());
            let e = check_alloc(26, 4, "scratch").unwrap_err();
            assert_eq!(e.kind, ErrorKind::ResourceLimit);
            assert!(e.message.contains("scratch would take 104 bytes"), "{e}");
        });
        assert_eq!(max_tensor_bytes(), DEFAULT_MAX_TENSOR_BYTES);
        let _ = std::panic::catch_unwind(|| with_max_tensor_bytes(1, || panic!("kernel bug")));
        assert_eq!(max_tensor_bytes(), DEFAULT_MAX_TENSOR_BYTES);
        assert_eq!(check_alloc(usize::MAX, 2, "x").unwrap_err().kind, ErrorKind::ResourceLimit);
    }

    /// Zeros of every size, small (zeroed here) and large (by the allocator), are zeros, as
    /// many as asked; over the limit they are an error, not an abort.
    #[test]
    fn zeros_are_zeros_under_the_limit() {
        for n in [0, 1, 1000, FRESH_FROM_SYSTEM / 4 - 1, FRESH_FROM_SYSTEM / 4 + 17] {
            let v = zeros::<f32>(n).unwrap();
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|x| x.to_bits() == 0), "{n} floats");
        }
        // A recycled large block (written, freed, allocated again) is zeros again.
        let mut v = zeros::<u8>(FRESH_FROM_SYSTEM).unwrap();
        v.fill(0xA5);
        drop(v);
        assert!(zeros::<u8>(FRESH_FROM_SYSTEM).unwrap().iter().all(|&b| b == 0));
        with_max_tensor_bytes(1 << 20, || {
            assert_eq!(zeros::<f32>(1 << 18).unwrap().len(), 1 << 18);
            assert_eq!(zeros::<f32>((1 << 18) + 1).unwrap_err().kind, ErrorKind::ResourceLimit);
        });
        assert_eq!(zeros::<f64>(usize::MAX / 4).unwrap_err().kind, ErrorKind::ResourceLimit);
    }

    /// Backing pages early changes no contents: not of the range, not of its neighbours on the
    /// same pages (the range is rounded out to whole pages), not of a range with data in it.
    #[test]
    fn prefaulting_keeps_every_value() {
        let mut v: Vec<u32> = (0..300_000).collect();
        prefault(v[1..].as_ptr(), (v.len() - 2) * 4);
        prefault(v.as_ptr(), 0);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        v.truncate(10);
        v.reserve_exact(500_000);
        prefault(v.as_ptr(), v.capacity() * 4);
        assert_eq!(v, (0..10).collect::<Vec<u32>>());
    }

    #[test]
    fn the_deadline_is_scoped_and_restored() {
        assert!(check_deadline().is_ok());
        with_time_limit(Some(Duration::ZERO), || {
            std::thread::sleep(Duration::from_millis(2));
            let e = check_deadline().unwrap_err();
            assert_eq!(
                (e.kind, e.message.as_str()),
                (ErrorKind::ResourceLimit, "the run passed its time limit of 0 ms")
            );
            // An inner, looser limit does not lift the outer one.
            with_time_limit(None, || assert!(check_deadline().is_err()));
            with_time_limit(Some(Duration::from_secs(60)), || assert!(check_deadline().is_err()));
        });
        assert!(check_deadline().is_ok());
        with_time_limit(Some(Duration::MAX), || assert!(check_deadline().is_ok()));
    }
}
