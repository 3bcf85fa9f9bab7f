//! 3x3 depthwise convolution at stride 1 straight from the NCHW rows with AVX2 and FMA, for
//! machines without AVX-512: the strips of [`super::depthwise_rows`] in 8 lanes. A strip of one
//! vector of 8 output columns goes down a band of output rows one input row at a time; each
//! input row meets the three output rows it belongs to, whose sums stay in registers until the
//! oldest is complete and stored. AVX2 has no shift across a vector's two halves in one
//! instruction, so a vector's three filter columns are three loads one column apart, masked
//! where they reach past the row's ends (the padding's zeros); input rows above and below the
//! plane read a row of zeros. One vector a strip: its 3 sums, 9 weights and 3 taps fill 15 of
//! the 16 registers (AMD Zen 4 forced to AVX2, MobileNetV2's 112x112 layer in cache: strips of
//! 1 vector 30 GB/s, of 2 27, of 4 21, the blocked kernel 15).

use super::activation::{Activation, ActivationExt};
use super::depthwise::x86::{fuses, vector_act, MASKS};
use super::depthwise::{forced, Depthwise, Forced};
use super::depthwise_rows::{STRIP_BAND_BYTES, STRIP_ROWS};
use super::isa::{isa, prefetch_pays, Isa};
use super::pool::{SharedMut, ThreadPool};
use crate::ops::window::Axis;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Output columns per vector.
const LANES: usize = 8;
/// The activations a strip applies as it stores ([`Plane::strip`]'s `ACT`): none (the others
/// are applied to the plane after), Clip or Relu, HardSwish.
const NONE: u8 = 0;
const CLIP: u8 = 1;
const HARD_SWISH: u8 = 2;
/// The narrowest output rows this kernel takes; narrower ones go to the blocked kernel, all
/// lanes busy whatever the width.
const MIN_WIDTH: usize = 24;

thread_local! {
    /// What a thread's planes share, kept between calls.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { zeros: Vec::new(), masks: Vec::new(), of: None }) };
}

/// A thread's scratch: a row of zeros for the input rows above and below the plane, and the
/// load masks of each vector of a row ([`masks`]), worked out when the width axis changes.
struct Scratch {
    zeros: Vec<f32>,
    masks: Vec<[i32; LANES]>,
    /// The width axis `masks` is for.
    of: Option<Axis>,
}

/// Whether this kernel runs `p`: AVX2 (and not AVX-512, which has [`super::depthwise_rows`]), a
/// 3x3 filter at stride 1 and dilation 1 with at most 2 columns and rows of padding before the
/// plane, output rows of at least [`MIN_WIDTH`] and an input in the caches (see
/// [`super::depthwise::forced`]). Out of them the strips, one vector wide, ran slower than the
/// per-plane kernel (AMD Zen 4 forced to AVX2, 128 planes of 256x256: 8-12.7 GB/s against 10,
/// in bands of 8 to 64 rows, asking for the next band ahead or not).
pub fn suits(p: &Depthwise) -> bool {
    let chosen = match forced() {
        Some(k) => k == Forced::Rows,
        None => p.w.output >= MIN_WIDTH && !prefetch_pays(p.x.len()),
    };
    isa() == Isa::Avx2 && fits(&p.h) && fits(&p.w) && chosen && p.h.output * p.w.output > 0
}

/// Whether axis `a` is one this kernel takes: 3 taps at stride 1 and dilation 1, at most 2
/// padding before.
fn fits(a: &Axis) -> bool {
    a.kernel == 3 && a.stride == 1 && a.dilation == 1 && a.pad_begin <= 2
}

/// Per vector `v` of a row and filter column `kx` (at `3 * v + kx`), the lanes of the load from
/// column `8v - pad_begin + kx` that lie inside the row.
fn masks(w: &Axis) -> Vec<[i32; LANES]> {
    let first = |i: usize| (LANES * (i / 3) + i % 3) as isize - w.pad_begin as isize;
    let inside = |from: isize| {
        std::array::from_fn(|l| if (0..w.input as isize).contains(&(from + l as isize)) { -1 } else { 0 })
    };
    (0..3 * w.output.div_ceil(LANES)).map(|i| inside(first(i))).collect()
}

/// Runs the convolution into `y` (`planes` output planes), one task per plane.
pub fn run(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32]) {
    assert!(suits(p), "depthwise_rows_avx2: needs AVX2 and a 3x3 filter at stride 1");
    run_strips(pool, p, planes, y);
}

/// [`run`] on any machine with AVX2 and FMA, whatever [`isa`] chose (the tests run it on
/// AVX-512 machines too).
fn run_strips(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32]) {
    assert!(
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        "depthwise_rows_avx2: needs AVX2 and FMA"
    );
    assert!(fits(&p.h) && fits(&p.w), "depthwise_rows_avx2: a 3x3 filter at stride 1");
    let (in_plane, out_plane) = (p.h.input * p.w.input, p.h.output * p.w.output);
    assert!(p.x.len() >= planes * in_plane && y.len() >= planes * out_plane, "depthwise: buffers too small");
    assert!(planes.is_multiple_of(p.channels), "depthwise: planes are whole images");
    assert!(p.weights.len() >= p.channels * 9 && p.bias.is_none_or(|b| b.len() >= p.channels));
    assert!(p.residual.is_none_or(|r| r.len() >= planes * out_plane));
    let out = SharedMut(y.as_mut_ptr());
    pool.parallel_for_work(planes, out_plane * 9, &|i| {
        let o = out;
        let c = i % p.channels;
        SCRATCH.with(|scratch| {
            let Scratch { zeros, masks: row, of } = &mut *scratch.borrow_mut();
            if zeros.len() < p.w.input {
                zeros.resize(p.w.input, 0.0);
            }
            if *of != Some(p.w) {
                *row = masks(&p.w);
                *of = Some(p.w);
            }
            let job = Plane {
                x: &p.x[i * in_plane..(i + 1) * in_plane],
                zeros: &zeros[..p.w.input],
                masks: row,
                filter: &p.weights[c * 9..(c + 1) * 9],
                bias: p.bias.map_or(0.0, |b| b[c]),
                residual: p.residual.map(|r| &r[i * out_plane..(i + 1) * out_plane]),
                p,
            };
            // SAFETY: each task writes only its own output plane, inside `y` (checked above).
            let y = unsafe { std::slice::from_raw_parts_mut(o.0.add(i * out_plane), out_plane) };
            // SAFETY: AVX2 and FMA are there (checked above); `job` holds one whole plane of each
            // tensor.
            unsafe { job.strips(y) };
            if !fuses(p.act) {
                p.act.apply(y);
            }
        });
    });
}

/// One plane of the problem.
struct Plane<'a> {
    x: &'a [f32],
    /// `w.input` zeros: the padding rows.
    zeros: &'a [f32],
    /// The load masks of a row ([`masks`]).
    masks: &'a [[i32; LANES]],
    filter: &'a [f32],
    bias: f32,
    residual: Option<&'a [f32]>,
    p: &'a Depthwise<'a>,
}

impl Plane<'_> {
    /// The plane in bands of rows, each in strips of one vector, as [`super::depthwise_rows`]'s.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `self.x` holds a whole input plane, `self.residual` and `y` a whole
    /// output plane.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn strips(&self, y: &mut [f32]) {
        let (h, w) = (&self.p.h, &self.p.w);
        let vectors = w.output.div_ceil(LANES);
        let band = (STRIP_BAND_BYTES / (4 * w.input)).max(STRIP_ROWS);
        for top in (0..h.output).step_by(band) {
            let rows = top..(top + band).min(h.output);
            for v in 0..vectors {
                // Vectors whose loads all lie inside the row load unmasked. The activation is
                // a parameter of the strip, not a branch in it (1.3x faster).
                let inside = v * LANES >= w.pad_begin && (v + 1) * LANES + 2 <= w.input + w.pad_begin;
                match (inside, self.p.act) {
                    (true, Activation::Clip(..) | Activation::Relu) => self.strip::<false, CLIP>(rows.clone(), v, y),
                    (true, Activation::HardSwish) => self.strip::<false, HARD_SWISH>(rows.clone(), v, y),
                    (true, _) => self.strip::<false, NONE>(rows.clone(), v, y),
                    (false, Activation::Clip(..) | Activation::Relu) => self.strip::<true, CLIP>(rows.clone(), v, y),
                    (false, Activation::HardSwish) => self.strip::<true, HARD_SWISH>(rows.clone(), v, y),
                    (false, _) => self.strip::<true, NONE>(rows.clone(), v, y),
                }
            }
        }
    }

    /// Output rows `rows` by vector `v` of columns. Step j reads input row j - pad_begin: filter
    /// row 2 of output row j - 2 (`sums[0]`), row 1 of output row j - 1 and row 0 of output
    /// row j. Output row j - 2 is then complete; the first two steps' `sums[0]` and `sums[1]`
    /// are for rows before the band, and are not stored.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; as [`Plane::strips`].
    #[inline(always)]
    unsafe fn strip<const MASKED: bool, const ACT: u8>(&self, rows: std::ops::Range<usize>, v: usize, y: &mut [f32]) {
        let (h, w) = (&self.p.h, &self.p.w);
        let weights: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(self.filter[t]));
        let bias = _mm256_set1_ps(self.bias);
        // Clip's bounds (Relu's are 0 and infinity), kept out of the loop.
        let (lo, hi) = match self.p.act {
            Activation::Clip(lo, hi) => (lo, hi),
            _ => (0.0, f32::INFINITY),
        };
        let clip = [_mm256_set1_ps(lo), _mm256_set1_ps(hi)];
        let first = (LANES * v) as isize - w.pad_begin as isize;
        let mut sums = [bias; 3];
        for j in rows.start..rows.end + 2 {
            let iy = j as isize - h.pad_begin as isize;
            let row = if (0..h.input as isize).contains(&iy) {
                self.x[iy as usize * w.input..].as_ptr()
            } else {
                self.zeros.as_ptr()
            };
            let taps: [__m256; 3] = std::array::from_fn(|kx| {
                let at = row.wrapping_offset(first + kx as isize);
                if MASKED {
                    // Lanes outside the row are neither read nor used (zeros): a pointer before
                    // the row's start or past its end is never dereferenced there.
                    _mm256_maskload_ps(at, _mm256_loadu_si256(self.masks[3 * v + kx].as_ptr().cast()))
                } else {
                    // SAFETY (of the caller's contract): all 8 columns lie inside the row.
                    _mm256_loadu_ps(at)
                }
            });
            for (k, sum) in sums.iter_mut().enumerate() {
                let ky = 2 - k;
                for (kx, t) in taps.iter().enumerate() {
                    *sum = _mm256_fmadd_ps(*t, weights[3 * ky + kx], *sum);
                }
            }
            if j >= rows.start + 2 {
                self.put::<ACT>((j - 2) * w.output + LANES * v, v, sums[0], clip, y);
            }
            sums = [sums[1], sums[2], bias];
        }
    }

    /// Stores the sums `s` of vector `v` of a row at `y[at..]`, with the residual added and the
    /// activation `ACT` applied (Clip's bounds in `clip`); a row's last, partial vector stores only its lanes inside the row.
    ///
    /// # Safety
    /// Needs AVX2; the vector's lanes inside the row lie inside `y`'s plane.
    #[inline(always)]
    unsafe fn put<const ACT: u8>(&self, at: usize, v: usize, s: __m256, clip: [__m256; 2], y: &mut [f32]) {
        let w = &self.p.w;
        // [`vector_act`]'s arithmetic: `max_ps(v, lo)` gives `lo` for a NaN v, as `f32::max`
        // does, and Relu is Clip(0, infinity).
        let act = |s: __m256| match ACT {
            CLIP => _mm256_min_ps(_mm256_max_ps(s, clip[0]), clip[1]),
            HARD_SWISH => vector_act(Activation::HardSwish, s),
            _ => s,
        };
        let out = y.as_mut_ptr().add(at);
        if LANES * (v + 1) <= w.output {
            let s = match self.residual {
                Some(res) => _mm256_add_ps(s, _mm256_loadu_ps(res.as_ptr().add(at))),
                None => s,
            };
            _mm256_storeu_ps(out, act(s));
        } else {
            // The lanes inside the row: the first `w.output - 8v`.
            let mask = _mm256_loadu_si256(MASKS[LANES * (v + 1) - w.output..].as_ptr().cast());
            let s = match self.residual {
                Some(res) => _mm256_add_ps(s, _mm256_maskload_ps(res.as_ptr().add(at), mask)),
                None => s,
            };
            _mm256_maskstore_ps(out, mask, act(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fused::Activation as Act;

    /// The strips against a direct sum in f64 (the same as the reference Conv's), on random
    /// planes: widths of 14 to 70 (a last vector whole or partial, vectors loaded unmasked or
    /// not), heights of 1 to 40, planes in one band or (rows of 1100 columns) in three,
    /// padding of 0 to 2 before and after, bias, residual, fused and unfused activations, 1 and
    /// 2 threads. It runs wherever the CPU has AVX2, whatever instruction set the engine chose.
    #[test]
    fn strips_match_a_direct_sum() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("depthwise_rows_avx2: no AVX2 and FMA here: nothing to check");
            return;
        }
        let acts = [Act::None, Act::Relu, Act::Clip(0.0, 6.0), Act::HardSwish, Act::Silu];
        let mut state = 11u64;
        let mut pick = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        for case in 0..40 {
            let axis = |output: usize, pad_begin: usize, pad_end: usize| {
                let input = (output + 2).saturating_sub(pad_begin + pad_end).max(1);
                let output = input + pad_begin + pad_end - 2;
                Axis { input, kernel: 3, stride: 1, dilation: 1, pad_begin, pad_end, output }
            };
            // The first two cases in bands of 16, 16 and 8 rows.
            let h = axis(if case < 2 { 40 } else { [1, 2, 5, 16, 17, 40][pick(6)] }, pick(3), pick(3));
            let w = axis(if case < 2 { 1100 } else { [14, 15, 16, 17, 23, 24, 31, 64, 70][pick(9)] }, pick(3), pick(3));
            let (channels, planes) = (3, 6);
            let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
            let value = |i: usize, m: usize| ((i * 7919 + case) % m) as f32 / 37.0 - 1.5;
            let x: Vec<f32> = (0..planes * in_plane).map(|i| value(i, 113)).collect();
            let weights: Vec<f32> = (0..channels * 9).map(|i| value(i, 17)).collect();
            let bias: Vec<f32> = (0..channels).map(|c| c as f32 * 0.25 - 0.3).collect();
            let residual: Vec<f32> = (0..planes * out_plane).map(|i| value(i, 5)).collect();
            let p = Depthwise {
                x: &x,
                weights: &weights,
                bias: (pick(3) != 0).then_some(&bias[..]),
                residual: (pick(3) == 0).then_some(&residual[..]),
                act: acts[pick(acts.len())],
                channels,
                h,
                w,
            };
            let mut y = vec![f32::NAN; planes * out_plane];
            run_strips(&ThreadPool::new(1 + case % 2), &p, planes, &mut y);
            for (i, &got) in y.iter().enumerate() {
                let (plane, oy, ox) = (i / out_plane, i % out_plane / w.output, i % w.output);
                let c = plane % channels;
                let mut sum = p.bias.map_or(0.0, |b| b[c] as f64);
                for (t, &wt) in weights[c * 9..(c + 1) * 9].iter().enumerate() {
                    let (iy, ix) =
                        ((oy + t / 3) as isize - h.pad_begin as isize, (ox + t % 3) as isize - w.pad_begin as isize);
                    if (0..h.input as isize).contains(&iy) && (0..w.input as isize).contains(&ix) {
                        sum += wt as f64 * x[plane * in_plane + iy as usize * w.input + ix as usize] as f64;
                    }
                }
                let sum = sum as f32 + p.residual.map_or(0.0, |r| r[i]);
                let want = p.act.eval(sum);
                let close = (got - want).abs() <= 1e-5 * (1.0 + want.abs());
                assert!(close, "case {case} {h:?} {w:?} {:?}: output {i}: {got} against {want}", p.act);
            }
        }
    }
}
