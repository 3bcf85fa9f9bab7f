//! Arrays kept as the engine keeps an activation of a megabyte or more (`BufferPool::output`):
//! starting on a 2 MiB boundary, in huge pages. The triad and the kernels measured against it
//! all run in such memory, so that their figures compare like with like: on 4 KiB pages the
//! triad ran about 15% slower, and the kernels' speeds varied from process to process with
//! where their pages landed (benches/RESULTS.md, session 24).

use std::ops::{Deref, DerefMut};

const HUGE: usize = 2 << 20;

/// `len` elements from a 2 MiB boundary of a buffer advised into huge pages before its first
/// write.
pub struct Huge<T> {
    /// Filler before `start`, then the elements.
    buffer: Vec<T>,
    start: usize,
}

impl<T: Copy> Huge<T> {
    pub fn from_fn(len: usize, mut f: impl FnMut(usize) -> T) -> Huge<T> {
        let size = std::mem::size_of::<T>();
        let mut buffer = Vec::with_capacity(len + HUGE / size);
        crx580::ir::limits::advise_huge_pages(buffer.as_ptr(), buffer.capacity() * size);
        let start = ((buffer.as_ptr() as usize).next_multiple_of(HUGE) - buffer.as_ptr() as usize) / size;
        let fill = f(0);
        buffer.resize(start, fill);
        buffer.extend((0..len).map(&mut f));
        Huge { buffer, start }
    }

    pub fn filled(len: usize, value: T) -> Huge<T> {
        Huge::from_fn(len, |_| value)
    }
}

impl<T> Deref for Huge<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buffer[self.start..]
    }
}

impl<T> DerefMut for Huge<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buffer[self.start..]
    }
}
