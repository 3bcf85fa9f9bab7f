//! Standalone activations in f32 (Relu, Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish, Gelu,
//! Clip with constant bounds): vectorised, in chunks spread over the pool.

use super::activation::{Activation, ActivationExt};
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::fused::activation_of;
use crate::Result;
use std::sync::Arc;

/// Elements per task: large enough to amortise a task, small enough to split work on two cores.
const CHUNK: usize = 16 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    let act = activation_of(graph, node)?;
    Some(Box::new(ActivationKernel { op: node.op.clone(), act }))
}

#[derive(Debug)]
struct ActivationKernel {
    op: Arc<dyn Op>,
    act: Activation,
}

impl Kernel for ActivationKernel {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let Some(x) = f32_input(inputs, 0) else { return Reference { op: self.op.clone() }.run(ctx, inputs) };
        let mut y = x.as_slice::<f32>()?.to_vec();
        let len = y.len();
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(len.div_ceil(CHUNK), &|i| {
            let o = out;
            let start = i * CHUNK;
            // SAFETY: each task applies the activation to its own chunk of y.
            let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), CHUNK.min(len - start)) };
            self.act.apply(chunk);
        });
        Ok(vec![Data::Tensor(Tensor::new(x.shape().to_vec(), y)?)])
    }
}
