//! Softmax and LogSoftmax in f32 over contiguous lanes (the normalised axis is the last one, or
//! the flattened trailing axes before opset 13): max, exponentials and sum, scale; vectorised
//! with the fast exp, rows spread over the pool. A normalised axis that is not the last (YOLOv8's
//! distribution head: 16 bins over 4 x 8400 boxes) is vectorised across the lanes beside it.

use super::activation::{exp, exp_reduced, fmadd};
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op};
use crate::ops::softmax::{Kind, Lanes, Softmax};
use crate::Result;
use std::sync::Arc;

/// Elements per task.
const CHUNK: usize = 16 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let s = node.op.downcast_ref::<Softmax>()?;
    if s.kind == Kind::Hardmax || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(SoftmaxKernel { op: node.op.clone(), log: s.kind == Kind::LogSoftmax }))
}

#[derive(Debug)]
struct SoftmaxKernel {
    op: Arc<dyn Op>,
    log: bool,
}

impl Kernel for SoftmaxKernel {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let softmax = self.op.downcast_ref::<Softmax>().expect("prepared for a Softmax");
        let lanes = f32_input(inputs, 0).and_then(|x| Some((x, softmax.lanes(x.shape()).ok()?)));
        let Some((x, Lanes { n, inner, .. })) = lanes else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let mut y = ctx.buffers.output_copied(x.as_slice::<f32>()?)?;
        if inner > 1 {
            self.strided(ctx, &mut y, n, inner);
            return Ok(vec![Data::Tensor(y.into_tensor(x.shape().to_vec())?)]);
        }
        let rows = y.len().checked_div(n).unwrap_or(0);
        let per_task = (CHUNK / n.max(1)).max(1);
        let out = SharedMut(y.as_mut_ptr());
        let log = self.log;
        ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
            let o = out;
            for r in t * per_task..((t + 1) * per_task).min(rows) {
                // SAFETY: each task normalises its own rows of y.
                let row = unsafe { std::slice::from_raw_parts_mut(o.0.add(r * n), n) };
                normalize(row, log);
            }
        });
        Ok(vec![Data::Tensor(y.into_tensor(x.shape().to_vec())?)])
    }
}

impl SoftmaxKernel {
    /// Lanes of stride `inner` > 1: per block of `n` rows of `inner` values, column chunks
    /// normalised together, so each step is a vector over neighbouring lanes.
    fn strided(&self, ctx: &ExecCtx, y: &mut [f32], n: usize, inner: usize) {
        let block = n * inner;
        let outer = y.len().checked_div(block).unwrap_or(0);
        let chunks = inner.div_ceil(STRIDED_COLS);
        let out = SharedMut(y.as_mut_ptr());
        let log = self.log;
        ctx.pool.parallel_for_work(outer * chunks, n * STRIDED_COLS * 8, &|t| {
            let (b, c0) = (t / chunks, t % chunks * STRIDED_COLS);
            let o = out;
            // SAFETY: each task normalises its own columns of its own block of y.
            let rows = unsafe { std::slice::from_raw_parts_mut(o.0.add(b * block), block) };
            normalize_columns(rows, inner, c0, STRIDED_COLS.min(inner - c0), log);
        });
    }
}

/// Columns of one task in the strided case: a few vectors wide.
const STRIDED_COLS: usize = 64;

fn normalize_columns(rows: &mut [f32], inner: usize, c0: usize, width: usize, log: bool) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::normalize_columns_avx512(rows, inner, c0, width, log) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::normalize_columns_avx2(rows, inner, c0, width, log) },
        _ => normalize_columns_generic(rows, inner, c0, width, log),
    }
}

/// Normalises columns `c0..c0 + width` of `rows` (row stride `inner`) each on its own, as
/// [`normalize_generic`] does a row.
#[inline(always)]
fn normalize_columns_generic(rows: &mut [f32], inner: usize, c0: usize, width: usize, log: bool) {
    let mut max = [f32::NEG_INFINITY; STRIDED_COLS];
    let mut sum = [0f32; STRIDED_COLS];
    for row in rows.chunks_exact(inner) {
        max[..width].iter_mut().zip(&row[c0..c0 + width]).for_each(|(m, &v)| *m = m.max(v));
    }
    for row in rows.chunks_exact_mut(inner) {
        let row = &mut row[c0..c0 + width];
        for ((v, s), m) in row.iter_mut().zip(&mut sum).zip(&max) {
            let e = exp(*v - m);
            *s += e;
            if !log {
                *v = e;
            }
        }
    }
    if log {
        let mut shift = [0f32; STRIDED_COLS];
        shift[..width].iter_mut().zip(&max).zip(&sum).for_each(|((t, m), s)| *t = m + s.ln());
        for row in rows.chunks_exact_mut(inner) {
            row[c0..c0 + width].iter_mut().zip(&shift).for_each(|(v, t)| *v -= t);
        }
    } else {
        let mut inv = [0f32; STRIDED_COLS];
        inv[..width].iter_mut().zip(&sum).for_each(|(i, s)| *i = 1.0 / s);
        for row in rows.chunks_exact_mut(inner) {
            row[c0..c0 + width].iter_mut().zip(&inv).for_each(|(v, i)| *v *= i);
        }
    }
}

fn normalize(row: &mut [f32], log: bool) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::normalize_avx512(row, log) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::normalize_avx2(row, log) },
        _ => normalize_generic::<false>(row, log),
    }
}

/// The largest value of `row` (-inf for none), kept in 16 lanes that vectorise. A plain
/// comparison rather than `f32::max`, whose NaN rule kept the loop scalar; a NaN is passed over
/// here and still makes its row NaN through the exponentials.
#[inline(always)]
pub(super) fn lanes_max(row: &[f32]) -> f32 {
    fold_lanes(lanes_max16(row), bigger)
}

/// `max` without f32::max's NaN rule (see [`lanes_max`]).
#[inline(always)]
fn bigger(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// [`lanes_max`] before its lanes are folded (never NaN: a NaN loses every comparison), for
/// callers that fold them with a vector instruction.
#[inline(always)]
pub(super) fn lanes_max16(row: &[f32]) -> [f32; 16] {
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    for (i, &v) in chunks.remainder().iter().enumerate() {
        m[i] = bigger(m[i], v);
    }
    for c in chunks {
        for i in 0..16 {
            m[i] = bigger(m[i], c[i]);
        }
    }
    m
}

/// The 16 lanes folded by `f` in halves (8 + 8, 4 + 4, ...): four dependent vector steps where a
/// left-to-right fold is sixteen dependent scalar ones, a cost per row that matched the row's
/// exponentials for an attention row of 128 keys.
#[inline(always)]
pub(super) fn fold_lanes(mut lanes: [f32; 16], f: impl Fn(f32, f32) -> f32) -> f32 {
    for width in [8, 4, 2, 1] {
        for i in 0..width {
            lanes[i] = f(lanes[i], lanes[i + width]);
        }
    }
    lanes[0]
}

/// `row[i] = exp(row[i] - max)` in place, returning their sum (added in 16 lanes, so it
/// vectorises); the softmax kernel and the attention kernel's softmax share it. `FMA` says
/// whether the caller runs with fused multiply-add (else `mul_add` would be a libm call).
#[inline(always)]
pub(super) fn exp_shifted_sum<const FMA: bool>(row: &mut [f32], max: f32) -> f32 {
    fold_lanes(exp_shifted_lanes::<FMA>(row, max), |a, b| a + b)
}

/// [`exp_shifted_sum`] before its 16 lanes of sums are folded.
#[inline(always)]
pub(super) fn exp_shifted_lanes<const FMA: bool>(row: &mut [f32], max: f32) -> [f32; 16] {
    let mut s = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for i in 0..16 {
            c[i] = exp_nonpositive::<FMA>(c[i] - max);
            s[i] += c[i];
        }
    }
    for (i, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = exp_nonpositive::<FMA>(*v - max);
        s[i] += *v;
    }
    s
}

/// e^x for x <= 0 (a softmax's shifted scores; NaN stays NaN), cheaper than the general
/// [`exp`]: no upper bound to guard, n rounded by the 1.5 * 2^23 shift whose low bits are then
/// n itself, the polynomial in fused multiply-adds. Below -87.3 the result is 0 (2^n x the
/// polynomial could be subnormal there, which costs a microcode assist per vector); relative
/// error about 2e-7 elsewhere.
#[inline(always)]
fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    // A comparison, not f32::max, so that a NaN passes through.
    let xc = if x < -87.3 { -87.3 } else { x };
    let t = fmadd::<FMA>(xc, std::f32::consts::LOG2_E, SHIFT);
    let n = t - SHIFT;
    let e = exp_reduced::<FMA>(xc, n);
    // n is in -126..=0 here: its low bits, plus the bias, are the exponent of 2^n.
    let bits = t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    let y = e * f32::from_bits(bits);
    if x < -87.3 {
        0.0
    } else {
        y
    }
}

/// One lane in place; subtracting the max first keeps every exponent <= 0. Sums in 16 lanes of
/// f32 (the reference sums in f64; the difference is far inside the tolerance).
#[inline(always)]
fn normalize_generic<const FMA: bool>(row: &mut [f32], log: bool) {
    let max = lanes_max(row);
    if log {
        let mut s = [0f32; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                s[i] += exp(c[i] - max);
            }
        }
        for (i, &v) in chunks.remainder().iter().enumerate() {
            s[i] += exp(v - max);
        }
        let shift = max + s.iter().sum::<f32>().ln();
        row.iter_mut().for_each(|v| *v -= shift);
    } else {
        let inv = 1.0 / exp_shifted_sum::<FMA>(row, max);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The softmax exponential against f64's, with and without fused multiply-adds, across
    /// its whole range, the cut to 0 below -87.3, and NaN.
    #[test]
    fn exp_nonpositive_matches_f64() {
        for i in 0..=200_000 {
            let x = -(i as f32) * 4.4e-4;
            let want = (x as f64).exp();
            for got in [exp_nonpositive::<false>(x), exp_nonpositive::<true>(x)] {
                if x < -87.3 {
                    assert_eq!(got, 0.0, "exp({x})");
                } else {
                    assert!(got.is_normal() && ((got as f64 - want) / want).abs() < 4e-7, "exp({x}) = {got} vs {want}");
                }
            }
        }
        assert_eq!(exp_nonpositive::<true>(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive::<true>(f32::NAN).is_nan() && exp_nonpositive::<false>(f32::NAN).is_nan());
    }

    #[test]
    fn lanes_max_of_odd_lengths() {
        for len in [0usize, 1, 5, 16, 17, 40] {
            let row: Vec<f32> = (0..len).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let want = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(lanes_max(&row), want, "len {len}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn normalize_avx512(row: &mut [f32], log: bool) {
        super::normalize_generic::<true>(row, log)
    }
    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn normalize_avx2(row: &mut [f32], log: bool) {
        super::normalize_generic::<true>(row, log)
    }
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn normalize_columns_avx512(rows: &mut [f32], inner: usize, c0: usize, width: usize, log: bool) {
        super::normalize_columns_generic(rows, inner, c0, width, log)
    }
    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn normalize_columns_avx2(rows: &mut [f32], inner: usize, c0: usize, width: usize, log: bool) {
        super::normalize_columns_generic(rows, inner, c0, width, log)
    }
}
