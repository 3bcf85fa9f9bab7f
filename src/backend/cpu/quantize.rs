//! DynamicQuantizeLinear in f32: the range and the quantized values in two vectorised passes
//! (the reference folds one value at a time), with exactly the reference's arithmetic (a true
//! division by the scale, ties to even), so the bytes are identical.

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
        let mut y = vec![0u8; xv.len()];
        let out = SharedMut(y.as_mut_ptr());
        let task = |i: usize| {
            let o = out;
            let start = i * CHUNK;
            let src = &xv[start..xv.len().min(start + CHUNK)];
            // SAFETY: each task writes its own chunk of y.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), src.len()) };
            dispatch_quantize(src, scale, zero_point, dst);
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

fn dispatch_quantize(x: &[f32], scale: f32, zero_point: f32, y: &mut [u8]) {
    match isa() {
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::quantize_avx512(x, scale, zero_point, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::quantize_avx2(x, scale, zero_point, y) },
        _ => quantize(x, scale, zero_point, y),
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
fn quantize(x: &[f32], scale: f32, zero_point: f32, y: &mut [u8]) {
    for (d, &v) in y.iter_mut().zip(x) {
        // Through i32: the value is already in 0..=255 (or NaN, which both casts make 0), and
        // the i32 conversion vectorises where the u8 one does not.
        *d = ((v / scale).round_ties_even() + zero_point).clamp(0.0, 255.0) as i32 as u8;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn range_avx512(x: &[f32]) -> (f32, f32) {
        super::range(x)
    }
    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn range_avx2(x: &[f32]) -> (f32, f32) {
        super::range(x)
    }
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn quantize_avx512(x: &[f32], scale: f32, zero_point: f32, y: &mut [u8]) {
        super::quantize(x, scale, zero_point, y)
    }
    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_avx2(x: &[f32], scale: f32, zero_point: f32, y: &mut [u8]) {
        super::quantize(x, scale, zero_point, y)
    }
}
