//! Standalone activations in f32 (Relu, Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish, Gelu,
//! Clip with constant bounds): vectorised, in chunks spread over the pool.

use super::activation::{Activation, ActivationExt};
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::activation::{Clip, FloatActivation, Formula, Relu};
use crate::Result;
use std::sync::Arc;

/// Elements per task: large enough to amortise a task, small enough to split work on two cores.
const CHUNK: usize = 16 * 1024;

/// The activation `node` computes, if it is one a fused kernel can apply.
pub fn activation_of(graph: &Graph, node: &Node) -> Option<Activation> {
    let op = &node.op;
    if op.is::<Relu>() {
        return Some(Activation::Relu);
    }
    if let Some(f) = op.downcast_ref::<FloatActivation>() {
        return match f.formula {
            Formula::Sigmoid => Some(Activation::Sigmoid),
            Formula::Tanh => Some(Activation::Tanh),
            Formula::LeakyRelu { alpha } => Some(Activation::LeakyRelu(alpha as f32)),
            Formula::HardSigmoid { alpha, beta } => Some(Activation::HardSigmoid(alpha as f32, beta as f32)),
            Formula::HardSwish => Some(Activation::HardSwish),
            Formula::Gelu => Some(Activation::Gelu),
            Formula::GeluTanh => Some(Activation::GeluTanh),
            _ => None,
        };
    }
    if let Some(c) = op.downcast_ref::<Clip>() {
        if let Some((lo, hi)) = c.attribute_bounds {
            return Some(Activation::Clip(lo, hi));
        }
        let bound = |i: usize, default: f32| match node.inputs.get(i).copied().flatten() {
            None => Some(default),
            Some(v) => {
                graph.values[v].constant().filter(|t| t.len() == 1).and_then(|t| t.as_slice::<f32>().ok().map(|s| s[0]))
            }
        };
        return Some(Activation::Clip(bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?));
    }
    None
}

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
        let chunks: Vec<&mut [f32]> = y.chunks_mut(CHUNK).collect();
        let cells: Vec<std::sync::Mutex<&mut [f32]>> = chunks.into_iter().map(std::sync::Mutex::new).collect();
        ctx.pool.parallel_for(cells.len(), &|i| {
            let mut c = cells[i].lock().unwrap_or_else(|e| e.into_inner());
            self.act.apply(&mut c);
        });
        drop(cells);
        Ok(vec![Data::Tensor(Tensor::new(x.shape().to_vec(), y)?)])
    }
}
