//! Memory for what a session packs once and streams through on every run (a layer's weights),
//! carved from 2 MiB-aligned chunks that ask for huge pages before anything is written to them.
//!
//! A model's layers each pack a few kilobytes to a few megabytes of weights; as separate heap
//! allocations almost none of them cover a whole 2 MiB page, so they stay on 4 KiB pages and a
//! run's sweep over tens of megabytes of them misses the TLB on nearly every page (Winograd's 36
//! transformed operands per layer are the extreme: 36 allocations of 16-600 KiB). Packed side
//! by side in huge pages, ResNet-50 ran 7% faster and YOLOv8n and MobileNetV2 2-5%
//! (benches/RESULTS.md, session 14). Threads' scratch ([`Scratch`]) comes from chunks of its own.
//! The chunks cost no memory beyond the last, partly used huge page of each: untouched pages
//! are never backed.

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
    fn new(bytes: usize) -> Arc<Chunk> {
        let layout = Layout::from_size_align(bytes.next_multiple_of(HUGE), HUGE).expect("a chunk's size overflows");
        // SAFETY: the layout's size is not zero (at least one huge page).
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })
            .unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        crate::ir::limits::advise_huge_pages(ptr.as_ptr(), layout.size());
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
/// the next session.
struct Arena(Mutex<Option<(Weak<Chunk>, usize)>>);

impl Arena {
    /// A chunk and the offset of `bytes` bytes in it that no other buffer has.
    fn carve(&self, bytes: usize) -> (Arc<Chunk>, usize) {
        if bytes > CHUNK / 4 {
            return (Chunk::new(bytes), 0);
        }
        let mut current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let live = current.as_ref().and_then(|(chunk, used)| Some((chunk.upgrade()?, *used)));
        let (chunk, offset) = match live {
            Some((chunk, used)) if used + bytes <= chunk.layout.size() => (chunk, used),
            _ => (Chunk::new(CHUNK), 0),
        };
        *current = Some((Arc::downgrade(&chunk), offset + bytes));
        (chunk, offset)
    }
}

/// Sessions' packed weights.
static WEIGHTS: Arena = Arena(Mutex::new(None));
/// Threads' scratch ([`Scratch`]), apart from the weights so that a thread's scratch does not
/// keep a dropped session's chunk alive.
static SCRATCH: Arena = Arena(Mutex::new(None));

/// `len` floats in a huge-page chunk, zeroed when made; dereferences to `[f32]`.
pub struct HugeBuf {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl HugeBuf {
    /// `len` zeroed floats for weights.
    pub fn zeroed(len: usize) -> HugeBuf {
        HugeBuf::carved(&WEIGHTS, len)
    }

    fn carved(arena: &Arena, len: usize) -> HugeBuf {
        let bytes = len.checked_mul(4).expect("a buffer's size overflows").next_multiple_of(LINE);
        let (chunk, offset) = arena.carve(bytes);
        // SAFETY: `offset + len * 4` is inside the chunk, a range no other buffer has; zeroing it
        // makes every float valid.
        unsafe { std::ptr::write_bytes(chunk.ptr.as_ptr().add(offset), 0, len * 4) };
        HugeBuf { chunk, offset, len }
    }
}

/// A thread's scratch floats for one kernel (packing buffers, transformed tiles), grown to the
/// most it has been asked for and never shrunk, in huge pages: a kernel sweeping a few hundred
/// kilobytes of scratch on 4 KiB pages misses the first-level TLB on every new page (Winograd's
/// transforms write 36 regions at once).
#[derive(Default)]
pub struct Scratch(Option<HugeBuf>);

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
            self.0 = Some(HugeBuf::carved(&SCRATCH, len.max(2 * self.0.as_ref().map_or(0, |b| b.len))));
        }
        self.0.as_deref_mut().expect("made above")
    }
}

impl Deref for HugeBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: this buffer's range is inside its chunk (which it keeps alive), aligned to 64
        // bytes, initialised when made, and written only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.offset).cast(), self.len) }
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`; `&mut self` makes this the only access to the range.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.ptr.as_ptr().add(self.offset).cast(), self.len) }
    }
}

impl Clone for HugeBuf {
    fn clone(&self) -> HugeBuf {
        let mut copy = HugeBuf::zeroed(self.len);
        copy.copy_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeBuf({} floats)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_aligned_disjoint_and_free_their_chunk_when_gone() {
        let mut a = HugeBuf::zeroed(1000);
        let mut b = HugeBuf::zeroed(3);
        assert!(a.iter().chain(b.iter()).all(|&v| v == 0.0));
        a.fill(1.0);
        b.fill(2.0);
        assert!(a.iter().all(|&v| v == 1.0) && b.iter().all(|&v| v == 2.0), "the buffers overlap");
        for buf in [&a, &b] {
            assert_eq!(buf.as_ptr() as usize % LINE, 0);
        }
        let big = HugeBuf::zeroed(CHUNK);
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
