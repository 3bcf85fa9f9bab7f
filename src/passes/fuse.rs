//! Fusions into the forms the kernels run in one pass over memory: Conv + activation becomes a
//! FusedConv; MatMul (constant 2-D B) + Add of a constant per-column bias becomes a FusedMatMul,
//! which then also takes a following activation. A producer fuses only when its output feeds
//! nothing else and is not a graph output.

use super::Pass;
use crate::ir::{Graph, Node, ValueId};
use crate::ops::binary::{Binary, Kind};
use crate::ops::conv::Conv;
use crate::ops::fused::{activation_of, Activation, FusedConv, FusedMatMul};
use crate::ops::matmul::MatMul;
use crate::Result;
use std::sync::Arc;

pub struct FuseActivation;

impl Pass for FuseActivation {
    fn name(&self) -> &'static str {
        "fuse-activation"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut i = 0;
        while i < graph.nodes.len() {
            if let Some((consumer, replacement)) = fusion_at(graph, i) {
                let outputs = graph.nodes[consumer].outputs.clone();
                let producer = &mut graph.nodes[i];
                producer.op = replacement.0;
                producer.op_type = replacement.1.into();
                producer.inputs.extend(replacement.2);
                producer.outputs = outputs;
                graph.nodes.remove(consumer);
                changed = true;
            } else {
                i += 1;
            }
        }
        Ok(changed)
    }
}

type Replacement = (Arc<dyn crate::ir::Op>, &'static str, Option<Option<ValueId>>);

/// The single consumer of node `i`'s only output and what node `i` becomes when it absorbs it.
fn fusion_at(graph: &Graph, i: usize) -> Option<(usize, Replacement)> {
    let node = &graph.nodes[i];
    let [out] = node.outputs[..] else { return None };
    if graph.outputs.contains(&out) {
        return None;
    }
    let mut consumers = graph.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(out)));
    let (c, consumer) = consumers.next()?;
    if consumers.next().is_some() || consumer.inputs.iter().filter(|&&v| v == Some(out)).count() != 1 {
        return None;
    }
    if node.op.is::<Conv>() {
        let act = activation_of(graph, consumer).filter(|_| consumer.inputs[0] == Some(out))?;
        return Some((c, (Arc::new(FusedConv { conv: node.op.clone(), act }), "FusedConv", None)));
    }
    if let Some(f) = node.op.downcast_ref::<FusedConv>() {
        if f.act != Activation::None {
            return None;
        }
        let act = activation_of(graph, consumer).filter(|_| consumer.inputs[0] == Some(out))?;
        return Some((c, (Arc::new(FusedConv { conv: f.conv.clone(), act }), "FusedConv", None)));
    }
    if node.op.is::<MatMul>() {
        let n = constant_matrix_cols(graph, node)?;
        let bias = per_column_bias(graph, consumer, out, n)?;
        return Some((c, (Arc::new(FusedMatMul { act: Activation::None }), "FusedMatMul", Some(Some(bias)))));
    }
    if let Some(f) = node.op.downcast_ref::<FusedMatMul>() {
        if f.act != Activation::None {
            return None;
        }
        let act = activation_of(graph, consumer).filter(|_| consumer.inputs[0] == Some(out))?;
        return Some((c, (Arc::new(FusedMatMul { act }), "FusedMatMul", None)));
    }
    None
}

/// N of a MatMul whose B is a constant 2-D f32 matrix.
fn constant_matrix_cols(graph: &Graph, node: &Node) -> Option<usize> {
    let b = graph.values[node.inputs.get(1).copied().flatten()?].constant()?;
    let a = graph.values[node.inputs.first().copied().flatten()?].fact.dtype;
    (b.rank() == 2 && b.dtype() == crate::ir::DType::F32 && a == Some(crate::ir::DType::F32)).then(|| b.shape()[1])
}

/// The constant input of an Add that adds a length-`n` f32 vector to `x`.
fn per_column_bias(graph: &Graph, add: &Node, x: ValueId, n: usize) -> Option<ValueId> {
    let op = add.op.downcast_ref::<Binary>()?;
    if !matches!(op.kind, Kind::Add) || !op.align.is_numpy() {
        return None;
    }
    let other = match add.inputs[..] {
        [Some(a), Some(b)] if a == x => b,
        [Some(a), Some(b)] if b == x => a,
        _ => return None,
    };
    let t = graph.values[other].constant()?;
    (t.rank() == 1 && t.len() == n && t.dtype() == crate::ir::DType::F32).then_some(other)
}
