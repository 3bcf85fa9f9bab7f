//! MaxPool in f32 (1-D and 2-D, without the Indices output), separably: for each output row the
//! maximum over the window's input rows is staged in one contiguous (vectorised) pass, its
//! padding filled with NaN, then each output takes the maximum along the staged row (stride 2 by
//! a two-source permute on AVX-512). The maximum skips a NaN unless every tap is NaN, the
//! reference's rule, which also makes NaN the padding's identity; an all-padding window gives
//! -inf. Planes are spread over the pool.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::pool::Pool;
use crate::ops::window::Axis;
use crate::Result;
use std::sync::Arc;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    if !node.op.downcast_ref::<Pool>()?.is_plain_max() || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(MaxPoolKernel { op: node.op.clone() }))
}

#[derive(Debug)]
struct MaxPoolKernel {
    op: Arc<dyn Op>,
}

impl Kernel for MaxPoolKernel {
    fn name(&self) -> &'static str {
        "max-pool"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let pool = self.op.downcast_ref::<Pool>().expect("prepared for a Pool");
        let windows = f32_input(inputs, 0).and_then(|x| Some((x, pool.windows(x.shape()).ok()?)));
        let Some((x, ([d, h, w], out_shape))) = windows else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        // 3-D pooling, and windows too wide to stage, run the reference.
        if (d.input, d.kernel, d.output) != (1, 1, 1) || !fits(&w) {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        }
        let xv = x.as_slice::<f32>()?;
        // Pads and strides come from the model: the output's size is checked against the tensor
        // size limit before anything is multiplied or allocated.
        let mut y = ctx.buffers.for_overwrite(checked_len(&out_shape, DType::F32)?)?;
        let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
        let planes: usize = out_shape[..2].iter().product();
        let out = SharedMut(y.as_mut_ptr());
        let unreached = Unreached::of(&h, &w);
        ctx.pool.parallel_for_work(planes, out_plane.saturating_mul(h.kernel).saturating_mul(w.kernel), &|p| {
            let o = out;
            // SAFETY: each task writes its own output plane.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(p * out_plane), out_plane) };
            max_plane(&xv[p * in_plane..(p + 1) * in_plane], &h, &w, dst);
            unreached.fill(dst);
        });
        Ok(vec![Data::Tensor(Tensor::new(out_shape, y)?)])
    }
}

/// One plane's max pooling (`x`: `h.input x w.input`, `out`: `h.output x w.output`), windows
/// entirely in the padding left NaN; public for the bandwidth measurement in `benches/peak`.
/// The window's width must fit the staging row: `(w.kernel - 1) * w.dilation < SPAN / 2`
/// (see [`fits`]).
pub fn max_plane(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    assert!(fits(w), "a MaxPool window {} taps wide at dilation {} is too wide to stage", w.kernel, w.dilation);
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { max_plane_avx512(x, h, w, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { max_plane_avx2(x, h, w, out) },
        _ => max_plane_with(x, h, w, out, horizontal_generic),
    }
}

/// Staged input columns per chunk of a row (the chunk's windows' span plus read slack).
const SPAN: usize = 1024;
/// Columns past a chunk's span kept NaN, so that whole-vector reads may run over its end.
const SLACK: usize = 32;

/// Whether axis `w`'s window fits the staging row [`max_plane`] needs.
pub fn fits(w: &Axis) -> bool {
    w.kernel >= 1 && (w.kernel - 1).saturating_mul(w.dilation) < SPAN / 2
}

/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn max_plane_avx512(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    max_plane_with(x, h, w, out, |stage, w, dst| {
        if w.stride == 2 {
            // SAFETY: this function runs only where AVX-512F does; the stage holds the span
            // of `dst`'s windows and SLACK more (see `horizontal_stride2_avx512`).
            unsafe { horizontal_stride2_avx512(stage, w, dst) }
        } else {
            horizontal_generic(stage, w, dst)
        }
    })
}

/// # Safety
/// Needs AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_plane_avx2(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    max_plane_with(x, h, w, out, horizontal_generic)
}

/// The running maximum's rule: `f32::max` keeps the non-NaN operand, so a NaN tap is skipped
/// unless every tap is NaN, as the reference's `v > b || b is NaN` does (ties of +0 and -0 may
/// keep either), and NaN is the identity the staged padding is filled with.
#[inline(always)]
fn take(b: &mut f32, v: f32) {
    *b = b.max(v);
}

/// Each output row: the maximum over the window's rows inside the input is staged (one
/// contiguous pass per row, vectorised), its columns padded with NaN, then `horizontal` takes
/// each output's maximum along the staged row. Rows wider than the stage go in chunks of
/// output columns.
#[inline(always)]
fn max_plane_with(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32], horizontal: impl Fn(&[f32], &Axis, &mut [f32])) {
    let mut stage = [f32::NAN; SPAN];
    let window = (w.kernel - 1) * w.dilation + 1;
    let chunk = (SPAN - SLACK - window) / w.stride + 1;
    for (oh, dst) in out.chunks_exact_mut(w.output).enumerate().take(h.output) {
        let taps = h.taps_below(oh, h.pad_begin)..h.taps_below(oh, h.pad_begin + h.input);
        if taps.is_empty() {
            dst.fill(f32::NAN);
            continue;
        }
        let rows = taps.clone().map(|kh| {
            let ih = h.input_position(oh, kh);
            &x[ih * w.input..(ih + 1) * w.input]
        });
        let mut j0 = 0;
        while j0 < w.output {
            let j1 = (j0 + chunk).min(w.output);
            // Padded columns p0..p0 + span, input column p - pad_begin.
            let (p0, span) = (j0 * w.stride, (j1 - 1 - j0) * w.stride + window);
            let a = w.pad_begin.clamp(p0, p0 + span);
            let b = (w.pad_begin + w.input).clamp(a, p0 + span);
            stage[..a - p0].fill(f32::NAN);
            stage[b - p0..span + SLACK].fill(f32::NAN);
            let mid = &mut stage[a - p0..b - p0];
            // Empty where the whole chunk reads padding.
            let cols = if a < b { a - w.pad_begin..b - w.pad_begin } else { 0..0 };
            for (i, row) in rows.clone().enumerate() {
                if i == 0 {
                    mid.copy_from_slice(&row[cols.clone()]);
                } else {
                    mid.iter_mut().zip(&row[cols.clone()]).for_each(|(m, &v)| take(m, v));
                }
            }
            horizontal(&stage[..span + SLACK], w, &mut dst[j0..j1]);
            j0 = j1;
        }
    }
}

/// `dst[j]` = the maximum of `stage[j * stride + kw * dilation]` over the taps `kw`.
#[inline(always)]
fn horizontal_generic(stage: &[f32], w: &Axis, dst: &mut [f32]) {
    let n = dst.len();
    if w.stride == 1 {
        dst.copy_from_slice(&stage[..n]);
        for kw in 1..w.kernel {
            let off = kw * w.dilation;
            dst.iter_mut().zip(&stage[off..off + n]).for_each(|(b, &v)| take(b, v));
        }
    } else {
        dst.iter_mut().zip(stage.iter().step_by(w.stride)).for_each(|(b, &v)| *b = v);
        for kw in 1..w.kernel {
            let taps = stage[kw * w.dilation..].iter().step_by(w.stride);
            dst.iter_mut().zip(taps).for_each(|(b, &v)| take(b, v));
        }
    }
}

/// [`horizontal_generic`] for stride 2: 16 outputs' taps are the even lanes of 32 contiguous
/// staged columns, picked by one two-source permute.
///
/// # Safety
/// Needs AVX-512F; `stage` holds `(dst.len() - 1) * 2 + (w.kernel - 1) * w.dilation + 1`
/// columns and [`SLACK`] more.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn horizontal_stride2_avx512(stage: &[f32], w: &Axis, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    debug_assert!(stage.len() >= (n - 1) * 2 + (w.kernel - 1) * w.dilation + 1 + SLACK);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let s = stage.as_ptr();
    let mut j = 0;
    while j < n {
        // SAFETY: the reads start at 2j + kw * dilation <= 2(n - 1) + (kernel - 1) * dilation,
        // the span's last column, and take 32 columns: within the span and SLACK (= 32).
        let mut acc = unsafe { even_lanes(s.add(2 * j), even) };
        for kw in 1..w.kernel {
            // SAFETY: as above.
            let v = unsafe { even_lanes(s.add(2 * j + kw * w.dilation), even) };
            // max_ps returns its second operand when either is NaN: right where v is NaN, and
            // where the running maximum is NaN v is taken instead (`take`'s rule).
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(acc, acc);
            acc = _mm512_mask_mov_ps(_mm512_max_ps(v, acc), nan, v);
        }
        let left = n - j;
        let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
        // SAFETY: the mask covers the outputs j..min(j + 16, n) only.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(j), mask, acc) };
        j += 16;
    }
}

/// The even lanes of the 32 floats at `p`.
///
/// # Safety
/// Needs AVX-512F; `p` is valid for 32 reads.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn even_lanes(p: *const f32, even: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's.
    unsafe { _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p.add(16))) }
}

/// Windows entirely in the padding (rare: pads as large as the kernel), found once per run.
struct Unreached {
    /// Per output row, and per output column: whether none of its taps lands inside the input.
    rows: Vec<bool>,
    cols: Vec<bool>,
}

impl Unreached {
    fn of(h: &Axis, w: &Axis) -> Unreached {
        Unreached { rows: unreached(h), cols: unreached(w) }
    }

    /// Sets the outputs whose window is all padding to -inf, as the reference does.
    fn fill(&self, out: &mut [f32]) {
        if !self.rows.iter().chain(&self.cols).any(|&e| e) {
            return;
        }
        for (oh, &row_empty) in self.rows.iter().enumerate() {
            for (ow, &col_empty) in self.cols.iter().enumerate() {
                if row_empty || col_empty {
                    out[oh * self.cols.len() + ow] = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// For each output of axis `a`, whether none of its taps lands inside the input.
fn unreached(a: &Axis) -> Vec<bool> {
    let mut empty = vec![true; a.output];
    for k in 0..a.kernel {
        let (lo, hi) = a.outputs_reading_input(k);
        empty[lo..hi].iter_mut().for_each(|e| *e = false);
    }
    empty
}
