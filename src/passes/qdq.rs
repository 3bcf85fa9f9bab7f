//! QDQ matrix products onto the integer GEMM: `MatMul(DequantizeLinear(xq), DequantizeLinear(wq))`
//! with a constant 2-D int8/uint8 `wq` and per-tensor scales and zero points (what
//! `crx580 convert --to int8-static` and onnxruntime's `quantize_static` write around a MatMul)
//! becomes `FusedMatMulInteger(xq, wq, x_zero, w_zero, x_scale * w_scale)`: the exact integer
//! sum of `(xq - x_zero)(wq - w_zero)`, times the product of the scales. The float graph rounds
//! each dequantized value and each partial sum; the integer form rounds once, so the two agree
//! to float32 rounding (onnxruntime fuses the same pattern into QLinearMatMul).
//!
//! It runs before constant folding, which would otherwise turn the weights' DequantizeLinear into
//! float weights; a following bias Add then fuses into the product as for dynamic quantization.

use super::Pass;
use crate::ir::{DType, Fact, Graph, Tensor, ValueId};
use crate::ops::fused::FusedMatMulInteger;
use crate::ops::matmul::MatMul;
use crate::ops::quant::DequantizeLinear;
use crate::Result;
use std::sync::Arc;

pub struct FuseQdqMatMul;

impl Pass for FuseQdqMatMul {
    fn name(&self) -> &'static str {
        "fuse-qdq-matmul"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        for i in 0..graph.nodes.len() {
            let Some(q) = qdq_matmul_at(graph, i) else { continue };
            let scale = graph.add_value(
                format!("{}_integer_scale", graph.values[graph.nodes[i].outputs[0]].name),
                Fact::constant(Arc::new(Tensor::scalar(q.scale))),
            );
            let node = &mut graph.nodes[i];
            node.op = Arc::new(FusedMatMulInteger { scaled: true, biased: false });
            node.op_type = "FusedMatMulInteger".into();
            node.domain = String::new();
            node.inputs = vec![Some(q.x), Some(q.w), q.x_zero, q.w_zero, Some(scale)];
            changed = true;
        }
        Ok(changed)
    }
}

/// A QDQ MatMul's integer form.
struct QdqMatMul {
    x: ValueId,
    w: ValueId,
    x_zero: Option<ValueId>,
    w_zero: Option<ValueId>,
    scale: f32,
}

/// The quantized input, zero point and scale behind value `v`, if a per-tensor
/// DequantizeLinear of uint8 or int8 to float32 makes it.
fn dequantized(graph: &Graph, v: ValueId) -> Option<(ValueId, Option<ValueId>, f32)> {
    let node = graph.nodes.iter().find(|n| n.outputs.contains(&v))?;
    node.op.downcast_ref::<DequantizeLinear>()?;
    if graph.values[v].fact.dtype != Some(DType::F32) {
        return None;
    }
    let (q, s) = (node.inputs.first().copied().flatten()?, node.inputs.get(1).copied().flatten()?);
    let dtype = graph.values[q].fact.dtype.filter(|d| matches!(d, DType::U8 | DType::I8))?;
    let scale = graph.values[s].constant().filter(|t| t.dtype() == DType::F32 && t.len() == 1)?;
    let zero = node.inputs.get(2).copied().flatten();
    if let Some(z) = zero {
        graph.values[z].constant().filter(|t| t.dtype() == dtype && t.len() == 1)?;
    }
    Some((q, zero, scale.as_slice::<f32>().ok()?[0]))
}

fn qdq_matmul_at(graph: &Graph, i: usize) -> Option<QdqMatMul> {
    let node = &graph.nodes[i];
    node.op.downcast_ref::<MatMul>()?;
    let [Some(a), Some(b)] = node.inputs[..] else { return None };
    let (x, x_zero, x_scale) = dequantized(graph, a)?;
    let (w, w_zero, w_scale) = dequantized(graph, b)?;
    let wt = graph.values[w].constant()?;
    // The integer kernel takes a constant 2-D B and an A of rank 1 or more.
    if wt.rank() != 2 || graph.values[x].fact.shape.as_ref().is_none_or(|s| s.is_empty()) {
        return None;
    }
    Some(QdqMatMul { x, w, x_zero, w_zero, scale: x_scale * w_scale })
}
