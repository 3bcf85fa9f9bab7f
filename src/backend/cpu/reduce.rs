//! ReduceMean in f32 over trailing axes (LayerNorm's decomposed mean and variance) and
//! GlobalAveragePool: one contiguous row per output value, summed in 16 lanes that vectorise;
//! rows spread over the pool. Other axes run the reference.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::pool::GlobalPool;
use crate::ops::reduce::Reduce;
use crate::Result;
use std::sync::Arc;

/// Input elements per task.
const CHUNK: usize = 32 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let global = node.op.downcast_ref::<GlobalPool>().is_some_and(|g| g.is_average());
    let mean = node.op.downcast_ref::<Reduce>().is_some_and(|r| r.is_mean());
    if !(global || mean) || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(MeanKernel { op: node.op.clone(), global }))
}

#[derive(Debug)]
struct MeanKernel {
    op: Arc<dyn Op>,
    /// GlobalAveragePool: the mean over every axis after the first two.
    global: bool,
}

impl Kernel for MeanKernel {
    fn name(&self) -> &'static str {
        if self.global {
            "global-average-pool"
        } else {
            "reduce-mean"
        }
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let Some(x) = f32_input(inputs, 0) else { return Reference { op: self.op.clone() }.run(ctx, inputs) };
        let reduced = if self.global {
            let mask: Vec<bool> = (0..x.rank()).map(|d| d >= 2).collect();
            let out: Vec<usize> = x.shape().iter().enumerate().map(|(d, &n)| if d < 2 { n } else { 1 }).collect();
            (x.rank() >= 2).then_some((mask, out))
        } else {
            let reduce = self.op.downcast_ref::<Reduce>().expect("prepared for a Reduce");
            let tensors: Vec<Option<&Tensor>> = inputs.iter().map(|d| d.and_then(|d| d.tensor())).collect();
            reduce.reduced(x.shape(), &tensors).ok().flatten()
        };
        let Some((mask, out_shape)) = reduced else { return Reference { op: self.op.clone() }.run(ctx, inputs) };
        // Only a suffix of reduced axes (size-1 axes may be either).
        let first = mask.iter().position(|&m| m).unwrap_or(mask.len());
        let trailing = mask[first..].iter().zip(&x.shape()[first..]).all(|(&m, &d)| m || d == 1);
        let n: usize = x.shape()[first..].iter().product();
        if !trailing || n == 0 {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        }
        let xv = x.as_slice::<f32>()?;
        let rows = xv.len() / n;
        let mut y = ctx.buffers.zeroed(rows)?;
        let per_task = (CHUNK / n).max(1);
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
            let o = out;
            for r in t * per_task..((t + 1) * per_task).min(rows) {
                // SAFETY: each task writes its own outputs.
                unsafe { *o.0.add(r) = sum(&xv[r * n..(r + 1) * n]) / n as f32 };
            }
        });
        Ok(vec![Data::Tensor(Tensor::new(out_shape, y)?)])
    }
}

fn sum(x: &[f32]) -> f32 {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { sum_avx2(x) },
        _ => sum_generic(x),
    }
}

/// # Safety
/// Needs AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    sum_generic(x)
}

#[inline(always)]
fn sum_generic(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    for (i, &v) in chunks.remainder().iter().enumerate() {
        acc[i] += v;
    }
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum()
}
