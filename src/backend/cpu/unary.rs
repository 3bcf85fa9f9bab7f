//! Standalone activations in f32 (Relu, Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish, Gelu,
//! Clip with constant bounds) and Pow by a constant: vectorised, in chunks spread over the pool.
//! onnxruntime's BiasGelu, FastGelu and Gelu run here too, the bias added to each row on the way.

use super::activation::{Activation, ActivationExt};
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{constant, f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::binary::Pow;
use crate::ops::contrib::BiasActivation;
use crate::ops::fused::activation_of;
use crate::Result;
use std::sync::Arc;

/// Elements per task: large enough to amortise a task, small enough to split work on two cores.
const CHUNK: usize = 16 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    if let Some(contrib) = node.op.downcast_ref::<BiasActivation>() {
        let act = contrib.gelu()?;
        return Some(Box::new(ActivationKernel { op: node.op.clone(), act, takes_bias: contrib.takes_bias }));
    }
    let act = activation_of(graph, node)?;
    Some(Box::new(ActivationKernel { op: node.op.clone(), act, takes_bias: false }))
}

#[derive(Debug)]
struct ActivationKernel {
    op: Arc<dyn Op>,
    act: Activation,
    /// Input 1, when given, is a bias along the last axis added before the activation.
    takes_bias: bool,
}

impl Kernel for ActivationKernel {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let Some(x) = f32_input(inputs, 0) else { return Reference { op: self.op.clone() }.run(ctx, inputs) };
        if self.takes_bias && inputs.get(1).copied().flatten().is_some() {
            return self.with_bias(ctx, x, inputs);
        }
        // Each task copies its chunk and applies the activation while the copy is in cache
        // (a copy of the whole input first was a pass over memory of its own).
        let xv = x.as_slice::<f32>()?;
        let mut y = ctx.buffers.output(xv.len())?;
        let len = y.len();
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(len.div_ceil(CHUNK), &|i| {
            let o = out;
            let start = i * CHUNK;
            // SAFETY: each task writes its own chunk of y.
            let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), CHUNK.min(len - start)) };
            chunk.copy_from_slice(&xv[start..start + chunk.len()]);
            self.act.apply(chunk);
        });
        Ok(vec![Data::Tensor(y.into_tensor(x.shape().to_vec())?)])
    }
}

impl ActivationKernel {
    /// `act(x + bias)` with the bias along the last axis, row by row.
    fn with_bias(&self, ctx: &ExecCtx, x: &Tensor, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let n = x.shape().last().copied().unwrap_or(0);
        let Some(bias) = f32_input(inputs, 1).filter(|b| b.len() == n && n > 0) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let (xv, b) = (x.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        let mut y = ctx.buffers.output(xv.len())?;
        let rows = xv.len() / n;
        let per_task = (CHUNK / n).max(1);
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
            let o = out;
            let (r0, r1) = (t * per_task, ((t + 1) * per_task).min(rows));
            // SAFETY: each task writes its own rows of y.
            let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(r0 * n), (r1 - r0) * n) };
            for (row, src) in chunk.chunks_exact_mut(n).zip(xv[r0 * n..r1 * n].chunks_exact(n)) {
                row.iter_mut().zip(src).zip(b).for_each(|((y, x), b)| *y = x + b);
            }
            self.act.apply(chunk);
        });
        Ok(vec![Data::Tensor(y.into_tensor(x.shape().to_vec())?)])
    }
}

/// Pow with a constant scalar exponent (LayerNorm's decomposed `Pow(x - mean, 2)`): a square is
/// a multiply; other exponents are f32 `powf`, as the reference computes f32 bases.
pub fn prepare_pow(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let pow = node.op.downcast_ref::<Pow>()?;
    if !pow.align.is_numpy() || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    let e = constant(graph, node, 1).filter(|t| t.len() == 1 && t.rank() <= 1)?;
    let exponent = e.to_f64_vec().ok()?[0] as f32;
    Some(Box::new(PowKernel { op: node.op.clone(), exponent, exponent_rank: e.rank() }))
}

#[derive(Debug)]
struct PowKernel {
    op: Arc<dyn Op>,
    exponent: f32,
    /// A `[1]` exponent makes a scalar base a vector.
    exponent_rank: usize,
}

impl Kernel for PowKernel {
    fn name(&self) -> &'static str {
        "pow"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let Some(x) = f32_input(inputs, 0) else { return Reference { op: self.op.clone() }.run(ctx, inputs) };
        let mut shape = x.shape().to_vec();
        if shape.len() < self.exponent_rank {
            shape = vec![1];
        }
        let mut y = ctx.buffers.output_copied(x.as_slice::<f32>()?)?;
        let len = y.len();
        let out = SharedMut(y.as_mut_ptr());
        let e = self.exponent;
        ctx.pool.parallel_for(len.div_ceil(CHUNK), &|i| {
            let o = out;
            let start = i * CHUNK;
            // SAFETY: each task raises its own chunk of y.
            let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), CHUNK.min(len - start)) };
            if e == 2.0 {
                square(chunk);
            } else {
                chunk.iter_mut().for_each(|v| *v = v.powf(e));
            }
        });
        Ok(vec![Data::Tensor(y.into_tensor(shape)?)])
    }
}

fn square(x: &mut [f32]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { square_avx2(x) },
        _ => x.iter_mut().for_each(|v| *v *= *v),
    }
}

/// # Safety
/// Needs AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn square_avx2(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v *= *v)
}
