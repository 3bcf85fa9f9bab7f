//! DynamicQuantizeLinear in f32: the range and the quantized values in two vectorised passes
//! (the reference folds one value at a time), with exactly the reference's arithmetic (a true
//! division by the scale, ties to even), so the bytes are identical. The quantizing pass
//! ([`quantize_bytes`]) also serves QuantizeLinear (quantize_linear.rs).

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::quant::DynamicQuantizeLinear;
use crate::Result;
use std::sync::Arc;

/// Elements per task.
const CHUNK: usize = 64 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    if !node.op.is::<DynamicQuantizeLinear>() || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(DynamicQuantizeKernel { op: node.op.clone() }))
}

#[derive(Debug)]
struct DynamicQuantizeKernel {
    op: Arc<dyn Op>,
}

impl Kernel for DynamicQuantizeKernel {
    fn name(&self) -> &'static str {
        "dynamic-quantize"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let Some(x) = f32_input(inputs, 0) else { return Reference { op: self.op.clone() }.run(ctx, inputs) };
        let xv = x.as_slice::<f32>()?;
        // min and max are order-independent (NaN is skipped by both), so chunks can be folded apart.
        let (mut lo, mut hi) = (0f32, 0f32);
        for c in xv.chunks(CHUNK) {
            let (l, h) = dispatch_range(c);
            lo = lo.min(l);
            hi = hi.max(h);
        }
        // The ONNX reference uses a range of 1 when X is all zeros, which keeps the scale finite.
        let scale = if hi == lo { 1f32 } else { hi - lo } / 255.0;
        let zero_point = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
        let mut y = ctx.buffers.bytes_for_overwrite(xv.len())?;
        let out = SharedMut(y.as_mut_ptr());
        let task = |i: usize| {
            let o = out;
            let start = i * CHUNK;
            let src = &xv[start..xv.len().min(start + CHUNK)];
            // SAFETY: each task writes its own chunk of y.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), src.len()) };
            quantize_bytes(src, scale, zero_point, Bounds::U8_NAN_TO_ZERO, dst);
        };
        ctx.pool.parallel_for(xv.len().div_ceil(CHUNK), &task);
        Ok(vec![
            Data::Tensor(Tensor::new(x.shape().to_vec(), y)?),
            Data::Tensor(Tensor::scalar(scale)),
            Data::Tensor(Tensor::scalar(zero_point as u8)),
        ])
    }
}

fn dispatch_range(x: &[f32]) -> (f32, f32) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::range_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::range_avx2(x) },
        _ => range(x),
    }
}

/// The integer range of the quantized values, as floats, and what NaN becomes.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub lo: f32,
    pub hi: f32,
    /// QuantizeLinear rounds NaN to 0 before adding the zero point; DynamicQuantizeLinear's
    /// NaN stays NaN through the clamp and its cast makes it 0.
    pub nan_to_zero_point: bool,
}

impl Bounds {
    pub const U8_NAN_TO_ZERO: Bounds = Bounds { lo: 0.0, hi: 255.0, nan_to_zero_point: false };
}

/// `clamp(round_ties_even(x / scale) + zero_point, lo, hi)` for each x, stored as a byte (an
/// int8 as its two's complement), the chosen instruction set's way.
pub fn quantize_bytes(x: &[f32], scale: f32, zero_point: f32, b: Bounds, y: &mut [u8]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::quantize_avx512(x, scale, zero_point, b, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::quantize_avx2(x, scale, zero_point, b, y) },
        _ => quantize(x, scale, zero_point, b, y),
    }
}

/// (min, max) of `x` and 0, in 16 independent lanes so the loop vectorises.
#[inline(always)]
fn range(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    // Compare-and-select (one vector min/max each); NaN compares false and is skipped, as by
    // the reference's f32::min/max.
    for c in chunks {
        for i in 0..16 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        lo[i] = lo[i].min(v);
        hi[i] = hi[i].max(v);
    }
    (lo.iter().fold(0f32, |m, &v| m.min(v)), hi.iter().fold(0f32, |m, &v| m.max(v)))
}

/// The reference's formula, value by value.
#[inline(always)]
fn quantize(x: &[f32], scale: f32, zero_point: f32, b: Bounds, y: &mut [u8]) {
    for (d, &v) in y.iter_mut().zip(x) {
        let q = (v / scale).round_ties_even();
        let q = if b.nan_to_zero_point && q.is_nan() { 0.0 } else { q };
        // Through i32: the value is already in lo..=hi (or NaN, which both casts make 0), and
        // the i32 conversion vectorises where the u8 one does not; an int8 keeps its low byte.
        *d = (q + zero_point).clamp(b.lo, b.hi) as i32 as u8;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Bounds;
    use std::arch::x86_64::*;

    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn range_avx512(x: &[f32]) -> (f32, f32) {
        // Four pairs of accumulators, so that the min/max latencies overlap; `min(v, acc)` keeps
        // acc when v is NaN (the second operand wins), as the reference skips NaN.
        let body = x.len() / 64 * 64;
        let (lo, hi) = unsafe {
            let mut lo = [_mm512_setzero_ps(); 4];
            let mut hi = [_mm512_setzero_ps(); 4];
            for i in (0..body).step_by(64) {
                for u in 0..4 {
                    let v = _mm512_loadu_ps(x.as_ptr().add(i + 16 * u));
                    lo[u] = _mm512_min_ps(v, lo[u]);
                    hi[u] = _mm512_max_ps(v, hi[u]);
                }
            }
            let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
            let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
            (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi))
        };
        let (tl, th) = super::range(&x[body..]);
        (lo.min(tl), hi.max(th))
    }
    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn range_avx2(x: &[f32]) -> (f32, f32) {
        super::range(x)
    }
    /// `x / scale`, rounded to even, plus the zero point, clamped (a NaN left in place becomes
    /// `lo`, which is 0 for DynamicQuantizeLinear's uint8: `max` returns its second operand when
    /// one is NaN), sixteen at a time; the tail by the reference formula.
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn quantize_avx512(x: &[f32], scale: f32, zero_point: f32, b: Bounds, y: &mut [u8]) {
        let n = x.len().min(y.len());
        let body = n / 16 * 16;
        unsafe {
            let (s, z) = (_mm512_set1_ps(scale), _mm512_set1_ps(zero_point));
            let (lo, hi) = (_mm512_set1_ps(b.lo), _mm512_set1_ps(b.hi));
            for i in (0..body).step_by(16) {
                let q = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_div_ps(
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                    s,
                ));
                let q = match b.nan_to_zero_point {
                    true => _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(q, q), q),
                    false => q,
                };
                let q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, z), lo), hi);
                _mm_storeu_si128(y.as_mut_ptr().add(i) as *mut __m128i, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
            }
        }
        super::quantize(&x[body..n], scale, zero_point, b, &mut y[body..n])
    }

    /// As [`quantize_avx512`], eight at a time.
    ///
    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_avx2(x: &[f32], scale: f32, zero_point: f32, b: Bounds, y: &mut [u8]) {
        let n = x.len().min(y.len());
        let body = n / 8 * 8;
        unsafe {
            let (s, z) = (_mm256_set1_ps(scale), _mm256_set1_ps(zero_point));
            let (lo, hi) = (_mm256_set1_ps(b.lo), _mm256_set1_ps(b.hi));
            for i in (0..body).step_by(8) {
                let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_div_ps(
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    s,
                ));
                let q = match b.nan_to_zero_point {
                    true => _mm256_and_ps(q, _mm256_cmp_ps::<_CMP_ORD_Q>(q, q)),
                    false => q,
                };
                let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, z), lo), hi));
                // -128..=255 in i32 lanes: packing to i16 and then to bytes (unsigned or signed,
                // as the range is) is exact.
                let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
                let bytes = if b.lo < 0.0 { _mm_packs_epi16(words, words) } else { _mm_packus_epi16(words, words) };
                _mm_storel_epi64(y.as_mut_ptr().add(i) as *mut __m128i, bytes);
            }
        }
        super::quantize(&x[body..n], scale, zero_point, b, &mut y[body..n])
    }
}
