//! STREAM's triad, `a[i] = b[i] + s * c[i]` on f64 arrays far larger than the caches, split into
//! one contiguous chunk per thread. Bandwidth counts 3 x 8 bytes per element (two reads, one write;
//! like STREAM, not the write-allocate read of `a`).

use crate::huge::Huge;

pub struct Arrays {
    a: Huge<f64>,
    b: Huge<f64>,
    c: Huge<f64>,
    /// Triads done so far: `verify` knows what `a` must hold.
    done: usize,
}

const SCALE: f64 = 3.0;

impl Arrays {
    pub fn new(len: usize) -> Arrays {
        Arrays { a: Huge::filled(len, 0.0), b: Huge::filled(len, 1.0), c: Huge::filled(len, 2.0), done: 0 }
    }

    /// One triad over the arrays on `threads` threads; returns the bytes moved.
    pub fn triad(&mut self, threads: usize) -> f64 {
        let chunk = self.a.len().div_ceil(threads);
        std::thread::scope(|s| {
            for ((a, b), c) in self.a.chunks_mut(chunk).zip(self.b.chunks(chunk)).zip(self.c.chunks(chunk)) {
                s.spawn(move || {
                    for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
                        *x = y + SCALE * z;
                    }
                });
            }
        });
        self.done += 1;
        (3 * 8 * self.a.len()) as f64
    }

    /// Checks the result, so that the compiler cannot have skipped the work.
    pub fn verify(&self, expected_runs: usize) {
        assert_eq!(self.done, expected_runs);
        assert!(self.a.iter().all(|&x| x == 1.0 + SCALE * 2.0), "triad result is wrong");
    }
}
