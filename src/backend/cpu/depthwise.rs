//! Depthwise convolution (one kh x kw filter per channel) in f32, bandwidth-bound by design.
//!
//! Each output plane is made in bands of output rows. A band's input rows are first copied into a
//! per-thread scratch, zero-padded on every side and split by column phase (for stride `s`, phase
//! `q` holds padded columns `q, q + s, q + 2s, ...`), so that every tap of every output pixel reads
//! a contiguous run of the scratch: the inner loop has no branch, no gather, and vectorises. A tile
//! of output pixels then keeps its accumulators in registers over all kh * kw taps and is written
//! once, with bias, residual and activation applied in the same pass (ncnn's and MNN's depthwise
//! kernels pad the same way; the phase split is what lets stride 2 run as fast as stride 1).

use super::activation::{Activation, ActivationExt};
use super::isa::{isa, Isa};
use super::pool::{SharedMut, ThreadPool};
use crate::ops::window::Axis;
use std::cell::RefCell;

/// The problem: `planes` input planes (batch * channels) of `h.input x w.input`, channel of plane
/// `p` being `p % channels`.
pub struct Depthwise<'a> {
    pub x: &'a [f32],
    /// `channels * kh * kw` weights: one filter per channel.
    pub weights: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// A tensor of the output's shape added before the activation.
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
    pub channels: usize,
    pub h: Axis,
    pub w: Axis,
}

/// Output pixels per tile of the main loop, and of the narrow tiles that finish a row.
const NARROW: usize = 8;
/// Floats of input rows one band copies: a band's scratch stays in the L2 cache.
const BAND_FLOATS: usize = 16 * 1024;

thread_local! {
    /// This thread's padded input rows, kept between calls so steady-state runs do not allocate.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How a band's scratch is laid out; the same for every plane of one call.
#[derive(Clone, Copy)]
struct Layout {
    /// Floats per column phase of one padded row: the output width rounded up to whole narrow
    /// tiles, plus the farthest tap's shift.
    phase_len: usize,
    /// Floats per padded row: `w.stride` phases.
    row_len: usize,
    /// Output rows per band.
    band: usize,
}

impl Layout {
    fn new(h: &Axis, w: &Axis) -> Layout {
        let reach = (w.kernel - 1) * w.dilation;
        let phase_len = w.output.next_multiple_of(NARROW) + reach / w.stride;
        let row_len = phase_len * w.stride;
        let span = (h.kernel - 1) * h.dilation + 1;
        let rows_fit = (BAND_FLOATS / row_len.max(1)).saturating_sub(span);
        let band = (rows_fit / h.stride + 1).clamp(1, h.output.max(1));
        Layout { phase_len, row_len, band }
    }

    /// Padded rows a band of `rows` output rows reads.
    fn rows(&self, h: &Axis, rows: usize) -> usize {
        (rows - 1) * h.stride + (h.kernel - 1) * h.dilation + 1
    }
}

/// Runs the convolution into `y` (`planes` output planes of `h.output x w.output`), one task per
/// plane spread over `pool`.
pub fn run(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32]) {
    let (h, w) = (p.h, p.w);
    let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
    assert!(p.x.len() >= planes * in_plane && y.len() >= planes * out_plane, "depthwise: buffers too small");
    if out_plane == 0 {
        return;
    }
    let layout = Layout::new(&h, &w);
    let out = SharedMut(y.as_mut_ptr());
    let taps = h.kernel * w.kernel;
    pool.parallel_for_work(planes, out_plane * taps, &|plane| {
        let o = out;
        // SAFETY: each task writes only its own output plane, inside `y` (checked above).
        let y = unsafe { std::slice::from_raw_parts_mut(o.0.add(plane * out_plane), out_plane) };
        let c = plane % p.channels;
        let job = PlaneJob {
            x: &p.x[plane * in_plane..(plane + 1) * in_plane],
            filter: &p.weights[c * taps..(c + 1) * taps],
            bias: p.bias.map_or(0.0, |b| b[c]),
            residual: p.residual.map(|r| &r[plane * out_plane..(plane + 1) * out_plane]),
            h,
            w,
            layout,
        };
        SCRATCH.with(|s| {
            let mut scratch = s.borrow_mut();
            let need = layout.rows(&h, layout.band) * layout.row_len + NARROW;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            for oy0 in (0..h.output).step_by(layout.band) {
                let oy1 = (oy0 + layout.band).min(h.output);
                job.fill_band(oy0, oy1, &mut scratch);
                job.band(oy0, oy1, &scratch, y);
                p.act.apply(&mut y[oy0 * w.output..oy1 * w.output]);
            }
        });
    });
}

/// One plane's share of the problem.
struct PlaneJob<'a> {
    x: &'a [f32],
    filter: &'a [f32],
    bias: f32,
    residual: Option<&'a [f32]>,
    h: Axis,
    w: Axis,
    layout: Layout,
}

impl PlaneJob<'_> {
    /// Copies the padded input rows that output rows `oy0..oy1` read into `scratch`, phase-split.
    fn fill_band(&self, oy0: usize, oy1: usize, scratch: &mut [f32]) {
        let (h, w, l) = (&self.h, &self.w, &self.layout);
        let first = oy0 * h.stride;
        for (r, row) in scratch.chunks_exact_mut(l.row_len).take(l.rows(h, oy1 - oy0)).enumerate() {
            let iy = (first + r).wrapping_sub(h.pad_begin);
            if iy >= h.input {
                row.fill(0.0);
                continue;
            }
            let src = &self.x[iy * w.input..(iy + 1) * w.input];
            for (q, phase) in row.chunks_exact_mut(l.phase_len).enumerate() {
                // Entry j of phase q is padded column j * stride + q, input column that - pad_begin.
                let lo = w.pad_begin.saturating_sub(q).div_ceil(w.stride).min(l.phase_len);
                let hi = (w.input + w.pad_begin).saturating_sub(q).div_ceil(w.stride).clamp(lo, l.phase_len);
                phase[..lo].fill(0.0);
                phase[hi..].fill(0.0);
                if hi == lo {
                    continue;
                }
                let start = lo * w.stride + q - w.pad_begin;
                let dst = &mut phase[lo..hi];
                match w.stride {
                    1 => dst.copy_from_slice(&src[start..start + dst.len()]),
                    s => dst.iter_mut().zip(src[start..].iter().step_by(s)).for_each(|(d, v)| *d = *v),
                }
            }
        }
    }

    /// Output rows `oy0..oy1` from the band in `scratch`, without the activation.
    fn band(&self, oy0: usize, oy1: usize, scratch: &[f32], y: &mut [f32]) {
        // Where each tap reads, relative to its output row's first padded row and the output column.
        let taps = self.h.kernel * self.w.kernel;
        let mut stack = [0usize; 64];
        let mut heap = Vec::new();
        let offsets: &mut [usize] = if taps <= stack.len() {
            &mut stack[..taps]
        } else {
            heap.resize(taps, 0);
            &mut heap
        };
        let (h, w, l) = (&self.h, &self.w, &self.layout);
        for (k, off) in offsets.iter_mut().enumerate() {
            let (ky, kx) = (k / w.kernel, k % w.kernel);
            let shift = kx * w.dilation;
            *off = ky * h.dilation * l.row_len + (shift % w.stride) * l.phase_len + shift / w.stride;
        }
        let rows = Rows { scratch, offsets, filter: self.filter, bias: self.bias };
        for oy in oy0..oy1 {
            let base = (oy - oy0) * h.stride * l.row_len;
            let out = &mut y[oy * w.output..(oy + 1) * w.output];
            let residual = self.residual.map(|r| &r[oy * w.output..(oy + 1) * w.output]);
            rows.row(base, out, residual);
        }
    }
}

/// What every output row of a band reads.
struct Rows<'a> {
    scratch: &'a [f32],
    offsets: &'a [usize],
    filter: &'a [f32],
    bias: f32,
}

impl Rows<'_> {
    fn row(&self, base: usize, out: &mut [f32], residual: Option<&[f32]>) {
        match isa() {
            // SAFETY: isa() names only instruction sets this CPU runs.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.row_avx512(base, out, residual) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.row_avx2(base, out, residual) },
            // aarch64 always has fused multiply-add.
            #[cfg(target_arch = "aarch64")]
            _ => self.row_generic::<32, true>(base, out, residual),
            #[cfg(not(target_arch = "aarch64"))]
            _ => self.row_generic::<32, false>(base, out, residual),
        }
    }

    /// # Safety
    /// Needs AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn row_avx512(&self, base: usize, out: &mut [f32], residual: Option<&[f32]>) {
        self.row_generic::<64, true>(base, out, residual)
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_avx2(&self, base: usize, out: &mut [f32], residual: Option<&[f32]>) {
        self.row_generic::<32, true>(base, out, residual)
    }

    /// One output row: tiles of `WIDE` pixels, then tiles of [`NARROW`] (the scratch holds whole
    /// narrow tiles past the row's end; their extra lanes are computed and dropped).
    #[inline(always)]
    fn row_generic<const WIDE: usize, const FMA: bool>(&self, base: usize, out: &mut [f32], residual: Option<&[f32]>) {
        let ow = out.len();
        let mut ox = 0;
        while ox + WIDE <= ow {
            let acc = self.tile::<WIDE, FMA>(base + ox);
            store(&acc, &mut out[ox..ox + WIDE], residual.map(|r| &r[ox..ox + WIDE]));
            ox += WIDE;
        }
        while ox < ow {
            let n = NARROW.min(ow - ox);
            let acc = self.tile::<NARROW, FMA>(base + ox);
            store(&acc[..n], &mut out[ox..ox + n], residual.map(|r| &r[ox..ox + n]));
            ox += NARROW;
        }
    }

    /// `T` output pixels starting at scratch position `at`: the sum over taps, in registers.
    #[inline(always)]
    fn tile<const T: usize, const FMA: bool>(&self, at: usize) -> [f32; T] {
        let mut acc = [self.bias; T];
        for (&off, &wt) in self.offsets.iter().zip(self.filter) {
            let src: &[f32; T] = self.scratch[at + off..at + off + T].try_into().expect("a tile");
            for j in 0..T {
                acc[j] = if FMA { wt.mul_add(src[j], acc[j]) } else { acc[j] + wt * src[j] };
            }
        }
        acc
    }
}

#[inline(always)]
fn store(acc: &[f32], out: &mut [f32], residual: Option<&[f32]>) {
    match residual {
        None => out.copy_from_slice(acc),
        Some(r) => out.iter_mut().zip(acc).zip(r).for_each(|((o, a), r)| *o = a + r),
    }
}
