//! MaxPool in f32 (1-D and 2-D, without the Indices output), separably: for each output row the
//! maximum over the window's input rows is staged in one contiguous (vectorised) pass, its
//! padding filled with NaN, then each output takes the maximum along the staged row (stride 2 by
//! a two-source permute on AVX-512). The maximum skips a NaN unless every tap is NaN, the
//! reference's rule, which also makes NaN the padding's identity; an all-padding window gives
//! -inf. Planes are spread over the pool. On AVX-512, 2x2 and 3x3 windows at stride 2 skip the
//! staging: [`super::maxpool_rows`]. AVX2 CPUs run the portable passes: compiled for AVX2
//! they ran no faster (8.6 GB/s on 128 planes of 256x256 either way, AMD Zen 4, session 26).

#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::isa::{isa, prefetch_pays, Cache};
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op};
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
        let mut y = ctx.buffers.output(checked_len(&out_shape, DType::F32)?)?;
        let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
        let planes: usize = out_shape[..2].iter().product();
        let out = SharedMut(y.as_mut_ptr());
        let unreached = Unreached::of(&h, &w);
        let ahead = prefetch_pays(planes * in_plane);
        ctx.pool.parallel_for_work(planes, out_plane.saturating_mul(h.kernel).saturating_mul(w.kernel), &|p| {
            let o = out;
            // SAFETY: each task writes its own output plane.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(p * out_plane), out_plane) };
            max_plane(&xv[p * in_plane..(p + 1) * in_plane], &h, &w, dst, ahead);
            unreached.fill(dst);
        });
        Ok(vec![Data::Tensor(y.into_tensor(out_shape)?)])
    }
}

/// One plane's max pooling (`x`: `h.input x w.input`, `out`: `h.output x w.output`), windows
/// entirely in the padding left NaN; public for the bandwidth measurement in `benches/peak`.
/// The window's width must fit the staging row: `(w.kernel - 1) * w.dilation < SPAN / 2`
/// (see [`fits`]). With `ahead` (a layer input [`prefetch_pays`] for), the input rows
/// are asked for a few output rows ahead.
pub fn max_plane(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32], ahead: bool) {
    assert!(fits(w), "a MaxPool window {} taps wide at dilation {} is too wide to stage", w.kernel, w.dilation);
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if super::maxpool_rows::takes(h, w, ahead) => unsafe {
            super::maxpool_rows::max_plane(x, h, w, out)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { max_plane_avx512(x, h, w, out, ahead) },
        _ => max_plane_with(x, h, w, out, ahead, vertical_generic, horizontal_generic),
    }
}

/// [`max_plane`] by the portable staged passes, whatever the CPU: the oracle of the tiles'
/// test.
#[cfg(test)]
pub(super) fn staged_max_plane(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32]) {
    max_plane_with(x, h, w, out, false, vertical_generic, horizontal_generic);
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
unsafe fn max_plane_avx512(x: &[f32], h: &Axis, w: &Axis, out: &mut [f32], ahead: bool) {
    // SAFETY (both calls): this function runs only where AVX-512F does; the stage holds the
    // span of `dst`'s windows and SLACK more (see `horizontal_avx512`).
    let vertical = |rows: &mut dyn Iterator<Item = &[f32]>, mid: &mut [f32]| unsafe { vertical_avx512(rows, mid) };
    max_plane_with(x, h, w, out, ahead, vertical, |stage, w, dst| {
        if w.stride <= 2 {
            unsafe { horizontal_avx512(stage, w, dst) }
        } else {
            horizontal_generic(stage, w, dst)
        }
    })
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
fn max_plane_with(
    x: &[f32],
    h: &Axis,
    w: &Axis,
    out: &mut [f32],
    ahead: bool,
    vertical: impl Fn(&mut dyn Iterator<Item = &[f32]>, &mut [f32]),
    horizontal: impl Fn(&[f32], &Axis, &mut [f32]),
) {
    if w.output == 0 {
        return;
    }
    let mut stage = [f32::NAN; SPAN];
    let window = (w.kernel - 1) * w.dilation + 1;
    let chunk = (SPAN - SLACK - window) / w.stride + 1;
    for (oh, dst) in out.chunks_exact_mut(w.output).enumerate().take(h.output) {
        let taps = h.taps_below(oh, h.pad_begin)..h.taps_below(oh, h.pad_begin + h.input);
        if taps.is_empty() {
            dst.fill(f32::NAN);
            continue;
        }
        if ahead {
            prefetch_rows(x, h, w.input, oh + AHEAD);
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
            vertical(&mut rows.clone().map(|r| &r[cols.clone()]), mid);
            horizontal(&stage[..span + SLACK], w, &mut dst[j0..j1]);
            j0 = j1;
        }
    }
}

/// Output rows ahead whose new input rows are asked for while this one is pooled: the rows of a
/// plane are read a few KiB at a time, too little for the hardware prefetchers of some cores
/// (AMD Zen 4: 128 planes of 256x256 at 29% of the triad without, 64-73% with; 1 to 4 rows
/// ahead did alike, 8 worse; benches/RESULTS.md, session 26).
const AHEAD: usize = 2;

/// Asks for the input rows that output row `oh` reads and output row `oh - 1` does not into the
/// first-level cache. Not inlined: one copy for both instances of the passes.
#[inline(never)]
fn prefetch_rows(x: &[f32], h: &Axis, width: usize, oh: usize) {
    // Row `o`'s last input row is past row `o - 1`'s by the stride: those rows are new.
    let end = (oh * h.stride + (h.kernel - 1) * h.dilation + 1).saturating_sub(h.pad_begin).min(h.input);
    let start = end.saturating_sub(h.stride);
    if let Some(rows) = x.get(start * width..end * width) {
        super::isa::prefetch(rows, Cache::L1);
    }
}

/// `mid` = the elementwise maximum of `rows` (at least one, each as long as `mid`).
#[inline(always)]
fn vertical_generic(rows: &mut dyn Iterator<Item = &[f32]>, mid: &mut [f32]) {
    let first = rows.next().expect("a window row inside the input");
    mid.copy_from_slice(first);
    for row in rows {
        mid.iter_mut().zip(row).for_each(|(m, &v)| take(m, v));
    }
}

/// [`vertical_generic`] in 16 lanes, the rows' ends by masked loads: each vector of `mid` is
/// written once, after all rows were read.
///
/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn vertical_avx512(rows: &mut dyn Iterator<Item = &[f32]>, mid: &mut [f32]) {
    let n = mid.len();
    let first = rows.next().expect("a window row inside the input");
    assert_eq!(first.len(), n);
    let mut ptrs = [first.as_ptr(); 16];
    let mut count = 1;
    for row in rows {
        assert_eq!(row.len(), n);
        if count == ptrs.len() {
            // Taller windows: fold the rows so far into `mid`, and go on from it.
            // SAFETY: every pointer gathered is valid for n reads (asserted).
            unsafe { vertical_rows_avx512(&ptrs[..count], mid) };
            ptrs[0] = mid.as_ptr();
            count = 1;
        }
        ptrs[count] = row.as_ptr();
        count += 1;
    }
    // SAFETY: as above (or `mid` itself).
    unsafe { vertical_rows_avx512(&ptrs[..count], mid) };
}

/// `mid` = the elementwise maximum of the `mid.len()` floats at each of `rows` (which may
/// include `mid` itself: each vector is read before it is written).
///
/// # Safety
/// Needs AVX-512F; each of `rows` is valid for `mid.len()` reads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn vertical_rows_avx512(rows: &[*const f32], mid: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = mid.len();
    let out = mid.as_mut_ptr();
    let mut j = 0;
    while j < n {
        let mask = lanes(n - j);
        // SAFETY: the mask keeps the reads and the write inside the n floats.
        unsafe {
            let mut acc = _mm512_maskz_loadu_ps(mask, rows[0].add(j));
            for &r in &rows[1..] {
                acc = max_keeping_numbers(acc, _mm512_maskz_loadu_ps(mask, r.add(j)));
            }
            _mm512_mask_storeu_ps(out.add(j), mask, acc);
        }
        j += 16;
    }
}

/// The mask of the first `left` of 16 lanes (all 16 past that).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(left: usize) -> u16 {
    if left >= 16 {
        0xffff
    } else {
        (1u16 << left) - 1
    }
}

/// `take`'s rule in 16 lanes: max_ps returns its second operand when either is NaN, right
/// where `v` is NaN; where the running maximum is NaN, `v` is taken instead.
///
/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn max_keeping_numbers(
    acc: std::arch::x86_64::__m512,
    v: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(acc, acc);
    _mm512_mask_mov_ps(_mm512_max_ps(v, acc), nan, v)
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

/// [`horizontal_generic`] for strides 1 and 2 in 16 lanes. For stride 2 the 16 outputs' taps
/// are the even lanes of 32 contiguous staged columns, picked by one two-source permute.
///
/// # Safety
/// Needs AVX-512F; `w.stride` is 1 or 2; `stage` holds
/// `(dst.len() - 1) * w.stride + (w.kernel - 1) * w.dilation + 1` columns and [`SLACK`] more.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn horizontal_avx512(stage: &[f32], w: &Axis, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    let stride = w.stride;
    assert!((1..=2).contains(&stride) && stage.len() >= (n - 1) * stride + (w.kernel - 1) * w.dilation + 1 + SLACK);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let s = stage.as_ptr();
    // SAFETY (taps): a read starts at stride * j + kw * dilation <= stride * (n - 1) +
    // (kernel - 1) * dilation, the span's last column, and takes 16 * stride <= 32 columns:
    // within the span and SLACK (= 32).
    let mut j = 0;
    while j < n {
        let mut acc = unsafe { taps(s.add(stride * j), stride, even) };
        for kw in 1..w.kernel {
            acc = max_keeping_numbers(acc, unsafe { taps(s.add(stride * j + kw * w.dilation), stride, even) });
        }
        // SAFETY: the mask covers the outputs j..min(j + 16, n) only.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(j), lanes(n - j), acc) };
        j += 16;
    }
}

/// The 16 floats at `p` (stride 1) or the even lanes of the 32 there (stride 2).
///
/// # Safety
/// Needs AVX-512F; `p` is valid for `16 * stride` reads.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn taps(p: *const f32, stride: usize, even: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512 {
    // SAFETY: the caller's.
    unsafe {
        if stride == 2 {
            even_lanes(p, even)
        } else {
            std::arch::x86_64::_mm512_loadu_ps(p)
        }
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
