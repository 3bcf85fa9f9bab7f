//! Memory for what a session packs once and streams through on every run (a layer's weights)
//! and for threads' scratch, carved side by side from 2 MiB-aligned chunks. Scratch chunks ask
//! for huge pages before anything is written to them; weight chunks do not.
//!
//! Scratch: a kernel sweeping a few hundred kilobytes of scratch on 4 KiB pages misses the
//! first-level TLB on every new page (Winograd's transforms write 36 regions at once); on huge
//! pages YOLOv8n and MobileNetV2 ran 2-5% faster (benches/RESULTS.md, session 14).
//!
//! Weights: on huge pages ResNet-50 ran about 3% faster (its 3x3 layers stream 2-9 MB of weights
//! a layer), but a load's fresh huge pages cost far more than fresh small ones on the VMs this
//! was measured on: ResNet-50 loaded in 150-520 ms (most often the high end when another
//! process had run since) against a steady 160-180 ms, and onnxruntime's 220-270. Load time is a
//! target of its own, so weights stay on small pages, still side by side in a few chunks rather
//! than in hundreds of heap allocations (benches/RESULTS.md, session 16).
//!
//! The chunks cost no memory beyond the last, partly used page of each: untouched pages are
//! never backed.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

/// The huge page size of x86-64 and aarch64 Linux (with 4 KiB base pages).
const HUGE: usize = 2 << 20;
/// Bytes of one shared chunk: buffers bigger than a quarter of it get a chunk of their own.
const CHUNK: usize = 8 * HUGE;
/// Alignment of every buffer: a cache line, which the vector loads want.
const LINE: usize = 64;

/// One 2 MiB-aligned allocation; freed when the last buffer in it is dropped.
struct Chunk {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a chunk is plain memory; each buffer carved from it owns a disjoint range, so access
// from several threads goes through those buffers' own `&`/`&mut` rules.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    /// A chunk of at least `bytes`, on huge pages if `huge`.
    fn new(bytes: usize, huge: bool) -> Arc<Chunk> {
        let layout = Layout::from_size_align(bytes.next_multiple_of(HUGE), HUGE).expect("a chunk's size overflows");
        // SAFETY: the layout's size is not zero (at least one huge page).
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        if huge {
            crate::ir::limits::advise_huge_pages(ptr.as_ptr(), layout.size());
        }
        Arc::new(Chunk { ptr, layout })
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `Chunk::new` with this layout, and no buffer is left in it.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Buffers carved one after another from shared chunks: the chunk being filled and how many of
/// its bytes are taken. Held weakly: a chunk whose buffers are all gone is freed, not kept for
/// the next session. `huge`: whether its chunks ask for huge pages.
struct Arena {
    current: Mutex<Option<(Weak<Chunk>, usize)>>,
    huge: bool,
}

impl Arena {
    /// A chunk and the offset of `bytes` bytes in it that no other buffer has.
    fn carve(&self, bytes: usize) -> (Arc<Chunk>, usize) {
        if bytes > CHUNK / 4 {
            return (Chunk::new(bytes, self.huge), 0);
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let live = current.as_ref().and_then(|(chunk, used)| Some((chunk.upgrade()?, *used)));
        let (chunk, offset) = match live {
            Some((chunk, used)) if used + bytes <= chunk.layout.size() => (chunk, used),
            _ => (Chunk::new(CHUNK, self.huge), 0),
        };
        *current = Some((Arc::downgrade(&chunk), offset + bytes));
        (chunk, offset)
    }
}

/// Sessions' packed weights, on small pages (see the module's comment).
static WEIGHTS: Arena = Arena { current: Mutex::new(None), huge: false };
/// Threads' scratch ([`Scratch`]), apart from the weights so that a thread's scratch does not
/// keep a dropped session's chunk alive.
static SCRATCH: Arena = Arena { current: Mutex::new(None), huge: true };

/// `len` floats carved from a chunk (64-byte aligned), zeroed when made; dereferences to `[f32]`.
pub struct ChunkBuf {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl ChunkBuf {
    /// `len` zeroed floats for weights.
    pub fn zeroed(len: usize) -> ChunkBuf {
        ChunkBuf::carved(&WEIGHTS, len)
    }

    fn carved(arena: &Arena, len: usize) -> ChunkBuf {
        let bytes = len.checked_mul(4).expect("a buffer's size overflows").next_multiple_of(LINE);
        let (chunk, offset) = arena.carve(bytes);
        // SAFETY: `offset + len * 4` is inside the chunk, a range no other buffer has; zeroing it
        // makes every float valid.
        unsafe {
            let start = chunk.ptr.as_ptr().add(offset);
            crate::ir::limits::prefault(start, len * 4);
            std::ptr::write_bytes(start, 0, len * 4)
        };
        ChunkBuf { chunk, offset, len }
    }
}

/// A thread's scratch floats for one kernel (packing buffers, transformed tiles), grown to the
/// most it has been asked for and never shrunk, in huge pages: a kernel sweeping a few hundred
/// kilobytes of scratch on 4 KiB pages misses the first-level TLB on every new page (Winograd's
/// transforms write 36 regions at once).
#[derive(Default)]
pub struct Scratch(Option<ChunkBuf>);

impl Scratch {
    pub const fn new() -> Scratch {
        Scratch(None)
    }

    /// At least `len` floats. Contents are kept unless it grows (then all zeros).
    pub fn at_least(&mut self, len: usize) -> &mut [f32] {
        if len == 0 && self.0.is_none() {
            return &mut [];
        }
        if self.0.as_ref().is_none_or(|b| b.len < len) {
            // Grown by doubling, so a thread that meets ever larger layers grows a few times.
            self.0 = Some(ChunkBuf::carved(&SCRATCH, len.max(2 * self.0.as_ref().map_or(0, |b| b.len))));
        }
        self.0.as_deref_mut().expect("made above")
    }
}

impl Deref for ChunkBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: this buffer's range is inside its chunk (which it keeps alive), aligned to 64
        // bytes, initialised when made, and written only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.offset).cast(), self.len) }
    }
}

impl DerefMut for ChunkBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`; `&mut self` makes this the only access to the range.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.ptr.as_ptr().add(self.offset).cast(), self.len) }
    }
}

impl Clone for ChunkBuf {
    fn clone(&self) -> ChunkBuf {
        let mut copy = ChunkBuf::zeroed(self.len);
        copy.copy_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for ChunkBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBuf({} floats)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_aligned_disjoint_and_free_their_chunk_when_gone() {
        let mut a = ChunkBuf::zeroed(1000);
        let mut b = ChunkBuf::zeroed(3);
        assert!(a.iter().chain(b.iter()).all(|&v| v == 0.0));
        a.fill(1.0);
        b.fill(2.0);
        assert!(a.iter().all(|&v| v == 1.0) && b.iter().all(|&v| v == 2.0), "the buffers overlap");
        for buf in [&a, &b] {
            assert_eq!(buf.as_ptr() as usize % LINE, 0);
        }
        let big = ChunkBuf::zeroed(CHUNK);
        assert_eq!((big.len(), big.as_ptr() as usize % HUGE), (CHUNK, 0), "a big buffer starts its own chunk");
        let copy = a.clone();
        assert_eq!(&copy[..], &a[..]);
        let weak = Arc::downgrade(&big.chunk);
        drop(big);
        assert!(weak.upgrade().is_none(), "a chunk outlived its buffers");
    }

    #[test]
    fn scratch_grows_and_keeps_its_contents_until_it_does() {
        let mut s = Scratch::new();
        s.at_least(100)[..3].copy_from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(&s.at_least(50)[..3], &[1.0, 2.0, 3.0], "kept while big enough");
        let grown = s.at_least(150);
        assert!(grown.len() >= 200 && grown.iter().all(|&v| v == 0.0), "doubled, zeroed");
    }
}
