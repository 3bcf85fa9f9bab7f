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
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
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

/// The kernel `CRX580_DEPTHWISE` asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) enum Forced {
    /// This module's per-plane kernel.
    Plane,
    /// [`super::depthwise_blocked`].
    Blocked,
    /// [`super::depthwise_rows`], or on AVX2 [`super::depthwise_rows_avx2`].
    Rows,
}

/// For comparing the kernels: `CRX580_DEPTHWISE=plane|blocked|rows` gives every plane that kernel
/// can take to it (the others fall back to the per-plane kernel); unset, each takes the planes it
/// was measured fastest on.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn forced() -> Option<Forced> {
    static CHOICE: std::sync::OnceLock<Option<Forced>> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("CRX580_DEPTHWISE").as_deref() {
        Ok("plane") => Some(Forced::Plane),
        Ok("blocked") => Some(Forced::Blocked),
        Ok("rows") => Some(Forced::Rows),
        _ => None,
    })
}

/// Output columns are computed in whole tiles of 8 (past the row's end too).
const COLUMN_STEP: usize = 8;
/// The most output rows one tile covers (past the band's end too).
const MAX_TILE_ROWS: usize = 8;
/// Floats of input rows one band copies: a band's scratch stays in the L2 cache.
const BAND_FLOATS: usize = 16 * 1024;

thread_local! {
    /// This thread's padded input rows, kept between calls so steady-state runs do not allocate.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { rows: Vec::new(), padded_for: None }) };
}

/// A thread's band scratch. Where the padding columns lie depends only on the width axis and the
/// layout, so they are zeroed once and planes then copy only their input columns (small planes,
/// 7x7 to 28x28, spent most of their time filling zeros).
struct Scratch {
    rows: Vec<f32>,
    /// The width axis and row layout whose padding columns hold zeros in `rows`.
    padded_for: Option<(Axis, usize, usize)>,
}

impl Scratch {
    /// At least `len` floats whose padding columns for (`w`, `layout`) are zero.
    fn prepare(&mut self, w: &Axis, layout: &Layout, len: usize) -> &mut [f32] {
        let key = Some((*w, layout.phase_len, layout.row_len));
        if self.padded_for != key {
            // Once per layer and thread: all of it, since a later call may use more rows.
            self.rows.fill(0.0);
            self.padded_for = key;
        }
        if self.rows.len() < len {
            self.rows.resize(len, 0.0);
        }
        &mut self.rows
    }
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
    /// Per column phase (the first [`MAX_PHASES`]), the entries `lo..hi` that hold input columns
    /// (the rest is padding).
    spans: [(usize, usize); MAX_PHASES],
}

/// Column phases whose spans a layout keeps (strides up to 4); larger strides work them out per
/// row.
const MAX_PHASES: usize = 4;

impl Layout {
    fn new(h: &Axis, w: &Axis) -> Layout {
        let reach = (w.kernel - 1) * w.dilation;
        let phase_len = w.output.next_multiple_of(COLUMN_STEP) + reach / w.stride;
        let row_len = phase_len * w.stride;
        let span = (h.kernel - 1) * h.dilation + 1;
        let rows_fit = (BAND_FLOATS / row_len.max(1)).saturating_sub(span);
        let band = (rows_fit / h.stride + 1).clamp(1, h.output.max(1));
        let mut layout = Layout { phase_len, row_len, band, spans: [(0, 0); MAX_PHASES] };
        for q in 0..MAX_PHASES.min(w.stride) {
            layout.spans[q] = layout.find_span(w, q);
        }
        layout
    }

    /// Entry j of phase q is padded column `j * stride + q`, input column that - pad_begin: the
    /// entries that are input columns.
    fn find_span(&self, w: &Axis, q: usize) -> (usize, usize) {
        let lo = w.pad_begin.saturating_sub(q).div_ceil(w.stride).min(self.phase_len);
        let hi = (w.input + w.pad_begin).saturating_sub(q).div_ceil(w.stride).clamp(lo, self.phase_len);
        (lo, hi)
    }

    fn span(&self, w: &Axis, q: usize) -> (usize, usize) {
        if q < MAX_PHASES {
            self.spans[q]
        } else {
            self.find_span(w, q)
        }
    }

    /// Padded rows a band of `rows` output rows reads.
    fn rows(&self, h: &Axis, rows: usize) -> usize {
        (rows - 1) * h.stride + (h.kernel - 1) * h.dilation + 1
    }
}

/// Runs the convolution into `y` (`planes` output planes of `h.output x w.output`), one task per
/// plane spread over `pool`; small planes on AVX-512 go to [`super::depthwise_blocked`].
pub fn run(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32]) {
    let (h, w) = (p.h, p.w);
    let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
    assert!(p.x.len() >= planes * in_plane && y.len() >= planes * out_plane, "depthwise: buffers too small");
    if out_plane == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::depthwise_rows::suits(p) {
        return super::depthwise_rows::run(pool, p, planes, y);
    }
    #[cfg(target_arch = "x86_64")]
    if super::depthwise_rows_avx2::suits(p) {
        return super::depthwise_rows_avx2::run(pool, p, planes, y);
    }
    #[cfg(target_arch = "x86_64")]
    if super::depthwise_blocked::suits(p) {
        return super::depthwise_blocked::run(pool, p, planes, y);
    }
    let layout = Layout::new(&h, &w);
    let out = SharedMut(y.as_mut_ptr());
    let taps = h.kernel * w.kernel;
    let fused_act = tiles_fuse(p.act);
    // Where each tap reads, relative to its output row's first padded row and the output column:
    // the same for every plane.
    let mut stack = [0usize; 64];
    let mut heap = Vec::new();
    let offsets: &mut [usize] = if taps <= stack.len() {
        &mut stack[..taps]
    } else {
        heap.resize(taps, 0);
        &mut heap
    };
    for (k, off) in offsets.iter_mut().enumerate() {
        let (ky, kx) = (k / w.kernel, k % w.kernel);
        let shift = kx * w.dilation;
        *off = ky * h.dilation * layout.row_len + (shift % w.stride) * layout.phase_len + shift / w.stride;
    }
    let offsets = &*offsets;
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
            act: p.act,
            offsets,
            h,
            w,
            layout,
        };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let need = layout.rows(&h, layout.band.next_multiple_of(MAX_TILE_ROWS)) * layout.row_len;
            let scratch = s.prepare(&w, &layout, need);
            for oy0 in (0..h.output).step_by(layout.band) {
                let oy1 = (oy0 + layout.band).min(h.output);
                job.fill_band(oy0, oy1, scratch);
                job.band(oy0, oy1, scratch, y);
                if !fused_act {
                    p.act.apply(&mut y[oy0 * w.output..oy1 * w.output]);
                }
            }
        });
    });
}

/// Whether the tiles apply `act` as they write (else the band is passed over again).
fn tiles_fuse(act: Activation) -> bool {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => x86::fuses(act),
        _ => act == Activation::None,
    }
}

/// One plane's share of the problem.
struct PlaneJob<'a> {
    x: &'a [f32],
    filter: &'a [f32],
    bias: f32,
    residual: Option<&'a [f32]>,
    act: Activation,
    offsets: &'a [usize],
    h: Axis,
    w: Axis,
    layout: Layout,
}

impl PlaneJob<'_> {
    /// Copies the input rows that output rows `oy0..oy1` read into `scratch`, phase-split: rows
    /// in the vertical padding are zeroed, and of the others only the input columns are written
    /// (their padding columns are zero already: see [`Scratch`]).
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
                let (lo, hi) = l.span(w, q);
                if hi == lo {
                    continue;
                }
                let start = lo * w.stride + q - w.pad_begin;
                let dst = &mut phase[lo..hi];
                match w.stride {
                    1 => super::copy_short::<8>(dst, &src[start..start + dst.len()]),
                    2 => every_other(dst, &src[start..]),
                    s => dst.iter_mut().zip(src[start..].iter().step_by(s)).for_each(|(d, v)| *d = *v),
                }
            }
        }
    }

    /// Output rows `oy0..oy1` from the band in `scratch`, without the activation.
    fn band(&self, oy0: usize, oy1: usize, scratch: &[f32], y: &mut [f32]) {
        let (h, w, l) = (&self.h, &self.w, &self.layout);
        let tiles = Tiles {
            scratch,
            offsets: self.offsets,
            filter: self.filter,
            bias: self.bias,
            row_step: h.stride * l.row_len,
            ow: w.output,
            residual: self.residual,
            act: self.act,
        };
        tiles.rows(oy0, oy1, y);
    }
}

/// What every output tile of a band reads. A tile is `R` output rows by `T` columns with its
/// accumulators in registers. On x86 the tiles are written with AVX2 intrinsics (8-float vectors,
/// up to 8 per tile: R rows of T/8 vectors), so that narrow planes still keep several independent
/// sums going (7x7 planes: one tile of 8 rows of 8); the compiler did not keep multi-row tiles
/// written as nested arrays in registers. Elsewhere one row per tile, autovectorised.
struct Tiles<'a> {
    scratch: &'a [f32],
    offsets: &'a [usize],
    filter: &'a [f32],
    bias: f32,
    /// Scratch floats from one output row's first padded row to the next one's.
    row_step: usize,
    ow: usize,
    residual: Option<&'a [f32]>,
    /// Applied in registers as the x86-64 kernels store their tiles (read by them alone).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    act: Activation,
}

impl Tiles<'_> {
    fn rows(&self, oy0: usize, oy1: usize, y: &mut [f32]) {
        match isa() {
            // SAFETY: isa() names only instruction sets this CPU runs; AVX-512 implies AVX2.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => unsafe { x86::rows(self, oy0, oy1, y) },
            // aarch64 always has fused multiply-add.
            #[cfg(target_arch = "aarch64")]
            _ => self.rows_generic::<true>(oy0, oy1, y),
            #[cfg(not(target_arch = "aarch64"))]
            _ => self.rows_generic::<false>(oy0, oy1, y),
        }
    }

    /// Columns of 32, then the rest of the row in one tile as wide as it (rounded up to 8). The
    /// scratch holds whole tiles past the row's end; their extra lanes are computed and dropped.
    #[inline(always)]
    fn rows_generic<const FMA: bool>(&self, oy0: usize, oy1: usize, y: &mut [f32]) {
        let mut ox = 0;
        while ox + 32 <= self.ow {
            self.column::<32, FMA>(oy0, oy1, ox, y);
            ox += 32;
        }
        match (self.ow - ox).div_ceil(8) {
            0 => {}
            1 => self.column::<8, FMA>(oy0, oy1, ox, y),
            2 => self.column::<16, FMA>(oy0, oy1, ox, y),
            3 => self.column::<24, FMA>(oy0, oy1, ox, y),
            _ => self.column::<32, FMA>(oy0, oy1, ox, y),
        }
    }

    /// Output columns `ox..ox + T` (those of them inside the row) of rows `oy0..oy1`.
    #[inline(always)]
    fn column<const T: usize, const FMA: bool>(&self, oy0: usize, oy1: usize, ox: usize, y: &mut [f32]) {
        let n = T.min(self.ow - ox);
        for oy in oy0..oy1 {
            let acc = self.tile::<T, FMA>((oy - oy0) * self.row_step + ox);
            let at = oy * self.ow + ox;
            let out = &mut y[at..at + n];
            match self.residual {
                None => out.copy_from_slice(&acc[..n]),
                Some(res) => out.iter_mut().zip(&acc[..n]).zip(&res[at..at + n]).for_each(|((o, a), r)| *o = a + r),
            }
        }
    }

    /// The `T` outputs whose first reads with the first tap are at scratch position `at`: the
    /// sums over all taps, in registers.
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

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{Activation, Tiles};
    use std::arch::x86_64::*;

    /// [`Tiles::rows`] in AVX2: columns of 64 (8 vectors, one row), then the rest of the row as
    /// R rows of V vectors, R * V <= 8.
    ///
    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(t: &Tiles, oy0: usize, oy1: usize, y: &mut [f32]) {
        let mut ox = 0;
        while ox + 64 <= t.ow {
            column::<8, 1>(t, oy0, oy1, ox, y);
            ox += 64;
        }
        match (t.ow - ox).div_ceil(8) {
            0 => {}
            1 => column::<1, 8>(t, oy0, oy1, ox, y),
            2 => column::<2, 4>(t, oy0, oy1, ox, y),
            3 => column::<3, 2>(t, oy0, oy1, ox, y),
            4 => column::<4, 2>(t, oy0, oy1, ox, y),
            5 => column::<5, 1>(t, oy0, oy1, ox, y),
            6 => column::<6, 1>(t, oy0, oy1, ox, y),
            7 => column::<7, 1>(t, oy0, oy1, ox, y),
            // 57 to 63 columns left (fewer than 64, the loop's): 8 vectors, the last partial.
            _ => column::<8, 1>(t, oy0, oy1, ox, y),
        }
    }

    /// Output columns `ox..ox + 8V` (those inside the row) of rows `oy0..oy1`, R rows at a time
    /// (the scratch holds whole tiles past the band's last row: those rows are dropped).
    #[inline(always)]
    unsafe fn column<const V: usize, const R: usize>(t: &Tiles, oy0: usize, oy1: usize, ox: usize, y: &mut [f32]) {
        let reach = t.offsets.iter().max().copied().unwrap_or(0) + 8 * V;
        for oy in (oy0..oy1).step_by(R) {
            let at = (oy - oy0) * t.row_step + ox;
            // Every read of the tile is inside the scratch.
            assert!(at + (R - 1) * t.row_step + reach <= t.scratch.len(), "depthwise tile past its scratch");
            // SAFETY: the reads are in bounds (checked above); AVX2 and FMA as the caller promised.
            let acc = unsafe { tile::<V, R>(t, at) };
            for (r, acc) in acc.iter().enumerate().take(oy1 - oy) {
                let row = (oy + r) * t.ow;
                for (v, &sum) in acc.iter().enumerate() {
                    let first = ox + 8 * v;
                    if first >= t.ow {
                        break;
                    }
                    let n = 8.min(t.ow - first);
                    let out = &mut y[row + first..row + first + n];
                    let res = t.residual.map(|res| &res[row + first..row + first + n]);
                    // SAFETY: `out` and `res` hold n floats each; AVX2 as the caller promised.
                    unsafe { store(sum, res, t.act, out) };
                }
            }
        }
    }

    /// Writes the first `out.len()` (at most 8) lanes of `sum` + `res`, through the activation
    /// when it is one [`vector_act`] knows (the caller applies any other afterwards).
    ///
    /// # Safety
    /// Needs AVX2; `out.len() <= 8` and `res`, if any, as long as `out`.
    #[inline(always)]
    unsafe fn store(sum: __m256, res: Option<&[f32]>, act: Activation, out: &mut [f32]) {
        let n = out.len();
        if n == 8 {
            let v = match res {
                Some(r) => _mm256_add_ps(sum, _mm256_loadu_ps(r.as_ptr())),
                None => sum,
            };
            _mm256_storeu_ps(out.as_mut_ptr(), vector_act(act, v));
        } else {
            // The row's last, partial vector: lanes past `n` are neither read nor written.
            let mask = _mm256_loadu_si256(MASKS[8 - n..].as_ptr().cast());
            let v = match res {
                Some(r) => _mm256_add_ps(sum, _mm256_maskload_ps(r.as_ptr(), mask)),
                None => sum,
            };
            _mm256_maskstore_ps(out.as_mut_ptr(), mask, vector_act(act, v));
        }
    }

    /// `-1` (all bits) for the lanes a mask keeps: `MASKS[8 - n..]` keeps the first n of 8.
    pub(in crate::backend::cpu) static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// The activations MobileNets fuse into their depthwise convs, in registers, with the same
    /// arithmetic (and NaN results) as [`super::ActivationExt::eval`]; any other is left to the caller.
    #[inline(always)]
    pub(in crate::backend::cpu) unsafe fn vector_act(act: Activation, v: __m256) -> __m256 {
        // `max_ps(v, lo)` gives `lo` for a NaN v, as `f32::max` does.
        match act {
            Activation::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
            Activation::Clip(lo, hi) => _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi)),
            Activation::HardSwish => {
                let gate = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.0 / 6.0)), _mm256_set1_ps(0.5));
                // clamp(gate, 0, 1) keeps a NaN gate: min/max with the NaN as second operand.
                let gate = _mm256_max_ps(_mm256_setzero_ps(), _mm256_min_ps(_mm256_set1_ps(1.0), gate));
                _mm256_mul_ps(v, gate)
            }
            _ => v,
        }
    }

    /// Whether [`vector_act`] applies `act` itself.
    pub fn fuses(act: Activation) -> bool {
        matches!(act, Activation::None | Activation::Relu | Activation::Clip(..) | Activation::HardSwish)
    }

    /// The sums over all taps of R rows of V vectors, the first read at scratch position `at`.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; every read (`at + r * row_step + offset + 8V` for r < R) in bounds.
    #[inline(always)]
    unsafe fn tile<const V: usize, const R: usize>(t: &Tiles, at: usize) -> [[__m256; V]; R] {
        let mut acc = [[_mm256_set1_ps(t.bias); V]; R];
        let base = t.scratch.as_ptr().add(at);
        for (&off, &wt) in t.offsets.iter().zip(t.filter) {
            let w = _mm256_set1_ps(wt);
            for (r, row) in acc.iter_mut().enumerate() {
                let src = base.add(r * t.row_step + off);
                for (v, a) in row.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(src.add(8 * v)), *a);
                }
            }
        }
        acc
    }
}

/// `dst[j] = src[2 * j]`, in a form the compiler vectorises (`step_by` does not).
pub(super) fn every_other(dst: &mut [f32], src: &[f32]) {
    let pairs = (src.len() / 2).min(dst.len());
    dst[..pairs].iter_mut().zip(src.chunks_exact(2)).for_each(|(d, p)| *d = p[0]);
    if let Some(d) = dst.get_mut(pairs) {
        *d = src[2 * pairs];
    }
}
