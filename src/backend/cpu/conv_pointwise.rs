//! 1x1 stride-1 convolutions over few input channels (MobileNets' expansions: 16 -> 96 channels at
//! 112x112, 24 -> 144 at 56x56): memory-bound, since each output costs only K multiply-adds.
//!
//! The GEMM would pack the image into panels, write C, then pass over it again for the bias and
//! the activation. Here nothing is packed at run time: a block of up to `PIXELS` pixels of all K
//! input rows is read straight from the image (K x 48 floats, in L1 after the first group of
//! output channels), every group of 8 output channels keeps its 8 x 48 sums in registers over all
//! of K, and bias, residual and activation are applied in registers as each output is written,
//! once. A row's last block is only as many vectors wide as it needs (a 14x14 plane is four
//! blocks of 48 and one vector, not five blocks of 48). The weights are packed once at prepare
//! time, k-major per group of 8 channels, so one broadcast reads each. AVX-512 only (the machine
//! this was tuned on); elsewhere the GEMM runs.

// AVX-512 only: on other targets the module compiles, but nothing runs its kernels (`available`
// says no there), so their paths are unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables, unused_macros, unreachable_code))]

use super::activation::{piecewise, Activation, ActivationExt};
use super::gemm::Skip;
use super::isa::{isa, Isa};
use super::pool::{SharedMut, ThreadPool};

/// Output channels per register group.
const ROWS: usize = 8;
/// Pixels per block: three 16-float vectors.
const PIXELS: usize = 48;
/// The most input channels this kernel takes: a pixel block's inputs (K x 48 floats, 12 KiB)
/// stay in L1 while every channel group reads them; with more, the GEMM's blocking wins.
pub const MAX_K: usize = 64;

/// Whether the kernel runs here for `k` input channels.
pub fn available(k: usize) -> bool {
    k <= MAX_K && isa() == Isa::Avx512
}

/// Weights of an M x K 1x1 convolution, packed for the kernel: per group of 8 output channels,
/// for each k the 8 weights (zeros past M).
#[derive(Debug)]
pub struct PointwiseWeights {
    m: usize,
    k: usize,
    packed: Vec<f32>,
}

impl PointwiseWeights {
    /// Packs `w` (row-major M x K).
    pub fn new(w: &[f32], m: usize, k: usize) -> PointwiseWeights {
        assert_eq!(w.len(), m * k, "pointwise weights: M x K");
        let groups = m.div_ceil(ROWS);
        let mut packed = vec![0f32; groups * k * ROWS];
        for (row, wr) in w.chunks_exact(k.max(1)).enumerate().take(m) {
            let (g, r) = (row / ROWS, row % ROWS);
            for (kk, &v) in wr.iter().enumerate() {
                packed[(g * k + kk) * ROWS + r] = v;
            }
        }
        PointwiseWeights { m, k, packed }
    }
}

/// One run: `x` is K planes of `pixels`, `y` (and a skip connection added, if any) M planes
/// of `pixels`. A skip connection in `y` on entry ([`Skip::InOutput`]) is for this kernel only
/// (the sparse one takes [`Skip::Add`]).
pub struct Pointwise<'a> {
    pub x: &'a [f32],
    pub pixels: usize,
    pub bias: Option<&'a [f32]>,
    pub skip: Skip<'a>,
    pub act: Activation,
}

/// On planes of at least this many pixels, with at least [`GROUPS_OUTER_ROWS`] output and
/// residual rows, a task runs its groups of channels outermost: a 48-pixel block touching every
/// row at once (rows 100 KB apart at 160x160, 96 outputs and 96 residuals in DBNet's neck) left
/// the prefetchers behind; group by group DBNet's 160x160 16 -> 96 conv with a residual ran 1.25x
/// faster (80x80 24 -> 96: 1.15x). MobileNetV2's expansions gain too, more at two threads, where
/// both cores write at once: 112x112 16 -> 96 ran 0.50 -> 0.36 ms, 56x56 24 -> 144 0.155 ->
/// 0.11 ms, 28x28 32 -> 192 0.09 -> 0.055 ms (at one thread: the same or a little faster); the
/// whole model 5% faster at two threads.
const GROUPS_OUTER_PLANE: usize = 28 * 28;
/// See [`GROUPS_OUTER_PLANE`].
const GROUPS_OUTER_ROWS: usize = 64;

/// Pixels per parallel task (whole blocks).
const TASK_PIXELS: usize = 16 * PIXELS;

impl PointwiseWeights {
    /// Writes every element of `y`, spreading blocks of pixels over `pool`. The caller checked
    /// [`available`].
    pub fn run(&self, pool: &ThreadPool, p: &Pointwise, y: &mut [f32]) {
        let (m, k, n) = (self.m, self.k, p.pixels);
        assert!(p.x.len() >= k * n && y.len() >= m * n, "pointwise: buffers too small");
        assert!(p.bias.is_none_or(|b| b.len() >= m) && p.skip.added().is_none_or(|r| r.len() >= m * n));
        assert!(isa() == Isa::Avx512, "pointwise: needs AVX-512");
        if n == 0 || m == 0 {
            return;
        }
        let out = SharedMut(y.as_mut_ptr());
        // Tasks of pixel columns; small planes (14x14, 7x7: one column task) are also split
        // across groups of output channels, so that two threads share them.
        let columns = n.div_ceil(TASK_PIXELS);
        let groups = m.div_ceil(ROWS);
        let splits = (4 / columns).clamp(1, groups);
        let per_split = groups.div_ceil(splits);
        let work = TASK_PIXELS.min(n) * (per_split * ROWS).min(m) * k.max(1);
        let skips = !matches!(p.skip, Skip::None);
        let groups_outer = n >= GROUPS_OUTER_PLANE && m * (1 + usize::from(skips)) >= GROUPS_OUTER_ROWS;
        pool.parallel_for_work(columns * splits, work, &|t| {
            let o = out;
            let (c, split) = (t / splits, t % splits);
            let (p0, p1) = (c * TASK_PIXELS, ((c + 1) * TASK_PIXELS).min(n));
            let (g0, g1) = (split * per_split, ((split + 1) * per_split).min(groups));
            if g0 >= g1 {
                return;
            }
            // SAFETY: AVX-512 was checked above; each task writes only its own pixel columns
            // p0..p1 of its output channels, inside y (checked above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::columns(self, p, g0..g1, p0, p1, groups_outer, o.0)
            };
            if !piecewise(p.act) {
                for row in g0 * ROWS..(g1 * ROWS).min(m) {
                    // SAFETY: as above, this task's columns of row `row`.
                    let seg = unsafe { std::slice::from_raw_parts_mut(o.0.add(row * n + p0), p1 - p0) };
                    p.act.apply(seg);
                }
            }
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Activation, Pointwise, PointwiseWeights, Skip, PIXELS, ROWS};
    use std::arch::x86_64::*;

    // The fused activation in registers.
    use super::super::activation::avx512::apply_piecewise as act;

    /// Pixels `p0..p1` of the output channels of groups `groups` (of 8): pixel blocks outermost
    /// (a block's inputs stay in L1 over the groups), or with `groups_outer` the groups (each
    /// block then touches 8 output rows, not all M: see [`super::GROUPS_OUTER_PLANE`]).
    ///
    /// # Safety
    /// Needs AVX-512F; `y` holds M rows of `p.pixels`, and the sizes were checked by the caller.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn columns(
        w: &PointwiseWeights,
        p: &Pointwise,
        groups: std::ops::Range<usize>,
        p0: usize,
        p1: usize,
        groups_outer: bool,
        y: *mut f32,
    ) {
        if groups_outer {
            for g in groups {
                for at in (p0..p1).step_by(PIXELS) {
                    // SAFETY: as the caller promised; `block_at` reads and writes only inside its lanes.
                    unsafe { block_at(w, p, g, at, p1, y) };
                }
            }
        } else {
            for at in (p0..p1).step_by(PIXELS) {
                for g in groups.clone() {
                    // SAFETY: as the caller promised; `block_at` reads and writes only inside its lanes.
                    unsafe { block_at(w, p, g, at, p1, y) };
                }
            }
        }
    }

    /// Group `g` at the block of pixels from `at` (up to 48, not past `end`): as many vectors
    /// wide as the block needs. Not inlined: both loop orders of [`columns`] call this one copy
    /// (each block costs K x 24 multiply-adds, far more than a call).
    ///
    /// # Safety
    /// See [`columns`].
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_at(w: &PointwiseWeights, p: &Pointwise, g: usize, at: usize, end: usize, y: *mut f32) {
        let width = PIXELS.min(end - at);
        // Lanes of the block's vectors inside the row.
        let masks: [__mmask16; 3] = std::array::from_fn(|v| {
            let lanes = width.saturating_sub(16 * v).min(16);
            ((1u32 << lanes) - 1) as __mmask16
        });
        // SAFETY: as the caller promised; reads and writes stay inside the masks' lanes.
        unsafe {
            match width.div_ceil(16) {
                3 => block::<3>(w, p, g, at, &masks, y),
                2 => block::<2>(w, p, g, at, &masks, y),
                _ => block::<1>(w, p, g, at, &masks, y),
            }
        }
    }

    /// Output channels `8g..8g + 8` (those below M) at the `V` vectors of pixels from `at` (the
    /// masked lanes of them). All 8 rows are summed (the packed weights past M are zeros); only
    /// rows below M are written.
    ///
    /// # Safety
    /// See [`columns`].
    #[inline(always)]
    unsafe fn block<const V: usize>(
        w: &PointwiseWeights,
        p: &Pointwise,
        g: usize,
        at: usize,
        masks: &[__mmask16; 3],
        y: *mut f32,
    ) {
        let n = p.pixels;
        let full = masks[V - 1] == 0xffff;
        let m0 = g * ROWS;
        let rows = ROWS.min(w.m - m0);
        let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
        if let Some(b) = p.bias {
            for (r, row) in acc.iter_mut().enumerate() {
                *row = [_mm512_set1_ps(if r < rows { b[m0 + r] } else { 0.0 }); V];
            }
        }
        // Where the skip connection comes from, laid out as y: one branch per vector, as with
        // `residual` alone (a second test there made the whole kernel 1.5x slower).
        let skip = match p.skip {
            Skip::Add(r) => Some(r.as_ptr()),
            Skip::InOutput => Some(y.cast_const()),
            Skip::None => None,
        };
        if let Some(res) = skip {
            // Read at the end, from far (a skip connection made layers before): ask for its
            // lines now.
            for r in 0..rows {
                for v in 0..V {
                    _mm_prefetch::<_MM_HINT_T0>(res.wrapping_add((m0 + r) * n + at + 16 * v).cast());
                }
            }
        }
        let wg = w.packed.as_ptr().add(g * w.k * ROWS);
        let mut xk = p.x.as_ptr().add(at);
        for kk in 0..w.k {
            let xv: [__m512; V] = if full {
                std::array::from_fn(|v| _mm512_loadu_ps(xk.add(16 * v)))
            } else {
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], xk.add(16 * v)))
            };
            let wk = wg.add(kk * ROWS);
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wk.add(r));
                for v in 0..V {
                    row[v] = _mm512_fmadd_ps(wv, xv[v], row[v]);
                }
            }
            xk = xk.add(n);
        }
        // The sums stay in registers only if every access to them has a constant index: a
        // partial group stores from a copy.
        if rows == ROWS {
            for (r, row) in acc.iter().enumerate() {
                store(p.act, skip, row, masks, (m0 + r) * n + at, y);
            }
        } else {
            let kept = acc;
            for (r, row) in kept.iter().enumerate().take(rows) {
                store(p.act, skip, row, masks, (m0 + r) * n + at, y);
            }
        }
    }

    /// One row's sums, with the skip connection (`skip + offset`) and the activation, at
    /// `y + offset` (the masked lanes).
    ///
    /// # Safety
    /// See [`columns`].
    #[inline(always)]
    unsafe fn store<const V: usize>(
        activation: Activation,
        skip: Option<*const f32>,
        row: &[__m512; V],
        masks: &[__mmask16; 3],
        offset: usize,
        y: *mut f32,
    ) {
        let dst = y.add(offset);
        for (v, &sum) in row.iter().enumerate() {
            let mask = masks[v];
            let sum = match skip {
                Some(res) => _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, res.add(offset + 16 * v))),
                None => sum,
            };
            _mm512_mask_storeu_ps(dst.add(16 * v), mask, act(activation, sum));
        }
    }
}
