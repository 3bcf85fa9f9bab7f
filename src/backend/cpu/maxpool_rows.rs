//! MaxPool with 2x2 or 3x3 windows at stride 2 (ResNet's stem, VGG- and CRNN-style
//! downsampling) straight from the NCHW rows in AVX-512, without staging: tiles of 2 output
//! rows by 8 vectors of 16 output columns keep their maxima in registers. A tile reads its 4
//! or 5 input rows one after another, whole up to 256 columns, in the order they lie in
//! memory, which the hardware prefetchers follow; the staged passes ([`super::maxpool`]) read
//! 3 rows side by side and needed the input asked for ahead. On AMD Zen 4, 128 planes of
//! 256x256 (3x3, pad 1, out of the caches): 22-24 -> 36-37 GB/s, 64-70% -> 103-105% of the
//! triad; in the caches ResNet-50's 64 x 112x112 0.220 -> 0.162 ms, a CRNN's 2x2 layers
//! 1.8x faster (1 thread, `crx580 bench`).
//!
//! The columns of a window come out of two 16-column loads by even/odd permutes (the third
//! tap of a 3x3 window is the first one lane on), as in [`super::depthwise_rows`]. Columns
//! outside the row load as NaN and rows outside the plane are skipped: the maximum skips NaN
//! ([`max_keeping_numbers`]), so padding is its identity; a window all padding stays NaN, as
//! the staged passes leave it, for the caller to fill.

use super::depthwise_rows::{align, EVEN, LANES, ODD};
use super::maxpool::max_keeping_numbers;
use crate::ops::window::Axis;
use std::arch::x86_64::*;

/// Output rows per tile.
const ROWS: usize = 2;
/// Vectors per tile: a row of 256 input columns (the last tile of a row may reach past its
/// end; those vectors load and store nothing).
const VECTORS: usize = 8;

/// The widest output rows, in vectors, the tiles take on inputs out of the caches: one tile and
/// part of a second. Wider rows are read in pieces side by side again, an order the hardware
/// prefetchers do not follow, and the staged passes, which ask for their input ahead, ran
/// faster there (AMD Zen 4, 3x3, 1 thread: 16 x 640x640 1.7-1.8 against 3.1-4.5 ms, 32 x
/// 512x512 1.9-2.0 against 5.7-6.5, 48 x 384x384 1.40 against 1.56; at 64 x 320x320, 10
/// vectors, the tiles 1.06 against 1.28).
const MOST_VECTORS_OUT_OF_CACHE: usize = 10;

/// Whether the tiles run windows `h` x `w` ([`suits`]) on an input out of the caches or not
/// (`out_of_cache`, see [`MOST_VECTORS_OUT_OF_CACHE`]).
pub fn takes(h: &Axis, w: &Axis, out_of_cache: bool) -> bool {
    suits(h, w) && !(out_of_cache && w.output.div_ceil(LANES) > MOST_VECTORS_OUT_OF_CACHE)
}

/// Whether the tiles can take windows `h` x `w`: square 2x2 or 3x3 at stride 2, dilation 1,
/// with at most one row and column of padding before the plane (any after).
pub fn suits(h: &Axis, w: &Axis) -> bool {
    let fits = |a: &Axis| a.kernel == h.kernel && a.stride == 2 && a.dilation == 1 && a.pad_begin <= 1;
    matches!(h.kernel, 2 | 3) && fits(h) && fits(w)
}

/// One plane's max pooling (`x`: `h.input x w.input`, `out`: `h.output x w.output`), windows
/// entirely in the padding left NaN.
///
/// # Safety
/// Needs AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn max_plane(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    assert!(suits(h, w), "maxpool_rows: needs 2x2 or 3x3 windows at stride 2");
    assert!(x.len() >= h.input * w.input && out.len() >= h.output * w.output, "maxpool_rows: planes too small");
    let plane = Plane { x, h, w };
    let vectors = w.output.div_ceil(LANES);
    for oy in (0..h.output).step_by(ROWS) {
        for v0 in (0..vectors).step_by(VECTORS) {
            // SAFETY: AVX-512F is there (the caller's contract); the planes are whole (above).
            unsafe {
                if h.kernel == 2 {
                    plane.tile::<2>(oy, v0, out)
                } else {
                    plane.tile::<3>(oy, v0, out)
                }
            }
        }
    }
}

/// One plane of the problem.
struct Plane<'a> {
    x: &'a [f32],
    h: &'a Axis,
    w: &'a Axis,
}

impl Plane<'_> {
    /// Output rows `oy..oy + ROWS` (those inside the plane) by vectors `v0..v0 + VECTORS` of
    /// columns, for `K` x `K` windows. Every loop has a constant trip count, so that it unrolls
    /// and the maxima stay in registers.
    ///
    /// # Safety
    /// Needs AVX-512F; `self.x` holds a whole input plane and `out` a whole output plane.
    #[inline(always)]
    unsafe fn tile<const K: usize>(&self, oy: usize, v0: usize, out: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        let nan = _mm512_set1_ps(f32::NAN);
        let (even, odd) = (_mm512_loadu_si512(EVEN.as_ptr().cast()), _mm512_loadu_si512(ODD.as_ptr().cast()));
        // Per vector: the column its loads start at, and the lanes inside the row of its three
        // 16-column loads (the third only for 3x3) and of its outputs.
        let first: [isize; VECTORS] = std::array::from_fn(|v| (2 * (v0 + v) * LANES) as isize - w.pad_begin as isize);
        let inside = |at: isize| -> __mmask16 {
            if at >= 0 && at + LANES as isize <= w.input as isize {
                return u16::MAX;
            }
            let lo = (-at).clamp(0, LANES as isize) as u32;
            let hi = (w.input as isize - at).clamp(0, LANES as isize) as u32;
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
        };
        let masks: [[__mmask16; 3]; VECTORS] = std::array::from_fn(|v| {
            std::array::from_fn(|i| if i < 2 || K == 3 { inside(first[v] + (i * LANES) as isize) } else { 0 })
        });
        let mut acc = [[nan; VECTORS]; ROWS];
        let top = (2 * oy) as isize - h.pad_begin as isize;
        for ir in 0..2 * (ROWS - 1) + K {
            // Rows outside the plane are padding: nothing to take.
            let iy = top + ir as isize;
            if !(0..h.input as isize).contains(&iy) {
                continue;
            }
            // SAFETY: row iy is inside the plane.
            let row = unsafe { self.x.as_ptr().add(iy as usize * w.input) };
            for v in 0..VECTORS {
                if (v0 + v) * LANES >= w.output {
                    // Past the row's end (a row's last tile).
                    break;
                }
                // The loads are masked: lanes outside the row are neither read nor used (NaN),
                // so a pointer before the row's start or past its end (`wrapping_offset`) is
                // never dereferenced there.
                let load = |i: usize| {
                    let at = first[v] + (i * LANES) as isize;
                    // SAFETY: as above; AVX-512F is there (the caller's contract).
                    unsafe { _mm512_mask_loadu_ps(nan, masks[v][i], row.wrapping_offset(at)) }
                };
                let (a, b) = (load(0), load(1));
                // Columns first + 2j and first + 2j + 1 of output lane j; for 3x3 also
                // first + 2j + 2: the even lanes one on, the next vector's first column last.
                let t0 = _mm512_permutex2var_ps(a, even, b);
                let mut m = max_keeping_numbers(t0, _mm512_permutex2var_ps(a, odd, b));
                if K == 3 {
                    let c = load(2);
                    m = max_keeping_numbers(m, align::<1>(c, t0));
                }
                for (r, maxima) in acc.iter_mut().enumerate() {
                    // Input row ir is window row ir - 2r of output row r.
                    if (0..K).contains(&ir.wrapping_sub(2 * r)) {
                        maxima[v] = max_keeping_numbers(maxima[v], m);
                    }
                }
            }
        }
        for (r, maxima) in acc.iter().enumerate() {
            let row = oy + r;
            if row >= h.output {
                break;
            }
            for (v, &m) in maxima.iter().enumerate() {
                let x0 = (v0 + v) * LANES;
                if x0 >= w.output {
                    break;
                }
                let lanes = (1u32 << LANES.min(w.output - x0)) - 1;
                // SAFETY: the mask keeps the store inside output row `row`.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(row * w.output + x0), lanes as __mmask16, m) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::isa::{isa, Isa};
    use crate::backend::cpu::maxpool::staged_max_plane;

    /// Out of the caches the tiles take rows of at most [`MOST_VECTORS_OUT_OF_CACHE`] output
    /// vectors; in the caches any width; never what [`suits`] refuses.
    #[test]
    fn wide_rows_out_of_the_caches_go_to_the_staged_passes() {
        let axis = |output: usize, stride: usize| Axis {
            input: 2 * output,
            kernel: 3,
            stride,
            dilation: 1,
            pad_begin: 1,
            pad_end: 0,
            output,
        };
        let most = MOST_VECTORS_OUT_OF_CACHE * LANES;
        let (h, w) = (axis(64, 2), axis(most, 2));
        assert!(takes(&h, &w, true) && takes(&h, &w, false));
        let wider = axis(most + 1, 2);
        assert!(!takes(&h, &wider, true), "a row one column past the limit, out of the caches");
        assert!(takes(&h, &wider, false), "the same row in the caches");
        assert!(!takes(&h, &axis(16, 1), false), "stride 1");
    }

    /// The tiles take what the staged passes (checked against the reference in
    /// `backend::cpu::tests`) take, bit for bit: 2x2 and 3x3, padding of 0 or 1 before and 0 to
    /// 2 after (as ceil mode asks), widths of 1 to 40 vectors (a row's last tile whole, part
    /// filled, or one partial vector), heights of 1 to 9 rows, NaN inputs (a NaN window among
    /// them), and nothing written outside the output.
    #[test]
    fn tiles_take_what_the_staged_passes_take() {
        if isa() != Isa::Avx512 {
            eprintln!("maxpool_rows: no AVX-512 here, so no tiles to check");
            return;
        }
        let mut state = 11u64;
        let mut pick = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        for case in 0..48 {
            let k = 2 + case % 2;
            let axis = |input: usize, pad_begin: usize, pad_end: usize| Axis {
                input,
                kernel: k,
                stride: 2,
                dilation: 1,
                pad_begin,
                pad_end,
                output: (input + pad_begin + pad_end - k) / 2 + 1,
            };
            let iw = [3, 31, 32, 33, 64, 100, 255, 256, 257, 300, 511, 600, 1280][pick(13)];
            let ih = 2 + pick(18);
            let (h, w) = (axis(ih, pick(2), pick(3)), axis(iw, pick(2), pick(3)));
            // Values without zeros (a tie of +0 and -0 may keep either); NaN here and there, and
            // a whole 2x2 block of them in some planes.
            let mut x: Vec<f32> = (0..ih * iw).map(|i| ((i * 7919 + case * 31) % 1009) as f32 - 504.5).collect();
            for i in (0..x.len()).filter(|i| (i * 13 + case) % 29 == 0) {
                x[i] = f32::NAN;
            }
            if case % 3 == 0 {
                for i in [0, 1, iw, iw + 1] {
                    x[i] = f32::NAN;
                }
            }
            let n = h.output * w.output;
            let (mut tiled, mut staged) = (vec![1e30f32; n + LANES], vec![1e30f32; n + LANES]);
            // SAFETY: AVX-512F is there (checked above).
            unsafe { max_plane(&x, &h, &w, &mut tiled[..n]) };
            staged_max_plane(&x, &h, &w, &mut staged[..n]);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let name = format!("case {case}: {k}x{k}, {ih}x{iw}, {h:?}, {w:?}");
            assert_eq!(bits(&tiled), bits(&staged), "{name}");
            assert!(tiled[..n].iter().all(|&v| v != 1e30), "{name}: an output left unwritten");
        }
    }
}
