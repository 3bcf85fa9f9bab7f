//! QDQ matrix products onto the integer GEMM: `MatMul(DequantizeLinear(xq), DequantizeLinear(wq))`
//! with a constant 2-D int8/uint8 `wq`, per-tensor scales and zero points for `xq` and per-tensor
//! or per-column ones for `wq` (what `crx580 convert --to int8-static` and onnxruntime's
//! `quantize_static`, with or without per_channel, write around a MatMul) becomes
//! `FusedMatMulInteger(xq, wq, x_zero, w_zero, x_scale * w_scale)`: the exact integer sum of
//! `(xq - x_zero)(wq - w_zero[j])`, times the product of the scales (one per column). The float graph rounds
//! each dequantized value and each partial sum; the integer form rounds once, so the two agree
//! to float32 rounding (onnxruntime fuses the same pattern into QLinearMatMul).
//!
//! Likewise a QDQ convolution, `QuantizeLinear(Conv(DequantizeLinear(xq), DequantizeLinear(wq),
//! bias))`, possibly with a Relu or Clip before the QuantizeLinear, becomes
//! `QLinearConv(xq, .., wq, .., y_scale, y_zero, bias_i32)` ([`FuseQdqConv`]), as onnxruntime
//! fuses it: the integer sums requantized to the output once, instead of dequantized inputs,
//! a float convolution and a quantization. Ungrouped convolutions only; grouped ones stay float.
//!
//! Both run before constant folding, which would otherwise turn the weights' DequantizeLinear
//! into float weights; a bias Add after a MatMul then fuses into the product as for dynamic
//! quantization.

use super::Pass;
use crate::ir::{DType, Fact, Graph, Node, Tensor, ValueId};
use crate::ops::conv::{Conv, ConvAttrs};
use crate::ops::fused::{activation_of, Activation, FusedMatMulInteger};
use crate::ops::matmul::MatMul;
use crate::ops::quant::{DequantizeLinear, QuantizeLinear};
use crate::ops::quant_conv::QLinearConv;
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
                Fact::constant(Arc::new(match q.scale.len() {
                    1 => Tensor::scalar(q.scale[0]),
                    _ => Tensor::vector(q.scale),
                })),
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
    /// `x_scale * w_scale`: one value, or one per column.
    scale: Vec<f32>,
}

/// The quantized input, zero point and scales behind value `v`, if a DequantizeLinear of uint8
/// or int8 to float32 makes it with one scale, or (with `per_column`, for a constant 2-D weight)
/// one per column (axis 1).
fn dequantized(graph: &Graph, v: ValueId, per_column: bool) -> Option<(ValueId, Option<ValueId>, Vec<f32>)> {
    let node = graph.nodes.iter().find(|n| n.outputs.contains(&v))?;
    let dq = node.op.downcast_ref::<DequantizeLinear>()?;
    if graph.values[v].fact.dtype != Some(DType::F32) || dq.block_size() != 0 {
        return None;
    }
    let (q, s) = (node.inputs.first().copied().flatten()?, node.inputs.get(1).copied().flatten()?);
    let dtype = graph.values[q].fact.dtype.filter(|d| matches!(d, DType::U8 | DType::I8))?;
    let scale = graph.values[s].constant().filter(|t| t.dtype() == DType::F32)?;
    let columns = graph.values[q].constant().filter(|t| t.rank() == 2).map(|t| t.shape()[1]);
    let per_column = per_column && columns == Some(scale.len()) && scale.rank() == 1 && matches!(dq.axis(), 1 | -1);
    if !(scale.len() == 1 || per_column) {
        return None;
    }
    let zero = node.inputs.get(2).copied().flatten();
    if let Some(z) = zero {
        graph.values[z].constant().filter(|t| t.dtype() == dtype && t.len() == scale.len())?;
    }
    Some((q, zero, scale.as_slice::<f32>().ok()?.to_vec()))
}

fn qdq_matmul_at(graph: &Graph, i: usize) -> Option<QdqMatMul> {
    let node = &graph.nodes[i];
    node.op.downcast_ref::<MatMul>()?;
    let [Some(a), Some(b)] = node.inputs[..] else { return None };
    let (x, x_zero, x_scale) = dequantized(graph, a, false)?;
    let (w, w_zero, w_scale) = dequantized(graph, b, true)?;
    let wt = graph.values[w].constant()?;
    // The integer kernel takes a constant 2-D B and an A of rank 1 or more.
    if wt.rank() != 2 || graph.values[x].fact.shape.as_ref().is_none_or(|s| s.is_empty()) {
        return None;
    }
    let scale = w_scale.iter().map(|ws| x_scale[0] * ws).collect();
    Some(QdqMatMul { x, w, x_zero, w_zero, scale })
}

pub struct FuseQdqConv;

impl Pass for FuseQdqConv {
    fn name(&self) -> &'static str {
        "fuse-qdq-conv"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        for i in 0..graph.nodes.len() {
            let Some(q) = qdq_conv_at(graph, i) else { continue };
            let bias = q.bias.map(|b| {
                let name = format!("{}_bias_i32", graph.values[graph.nodes[i].outputs[0]].name);
                graph.add_value(name, Fact::constant(Arc::new(b)))
            });
            // The QuantizeLinear becomes the whole; the Conv (and activation) it read from are
            // left without readers for dead-node elimination.
            let node = &mut graph.nodes[i];
            node.op = Arc::new(QLinearConv { attrs: q.conv });
            node.op_type = "QLinearConv".into();
            node.domain = String::new();
            node.attrs = q.conv_attrs;
            let [x, w, y] = [q.x, q.w, q.y];
            node.inputs =
                vec![Some(x.q), Some(x.scale), x.zero, Some(w.q), Some(w.scale), w.zero, Some(y.scale), y.zero, bias];
            changed = true;
        }
        Ok(changed)
    }
}

/// One end of a QDQ pair: the quantized value, its scale and zero point (values of the graph).
#[derive(Clone, Copy)]
struct Quantized {
    q: ValueId,
    scale: ValueId,
    zero: Option<ValueId>,
}

/// A QDQ Conv's integer form.
struct QdqConv {
    conv: ConvAttrs,
    conv_attrs: crate::ir::Attributes,
    x: Quantized,
    w: Quantized,
    y: Quantized,
    /// The bias in int32 at scale `x_scale * w_scale[c]`.
    bias: Option<Tensor>,
}

fn producer(graph: &Graph, v: ValueId) -> Option<&Node> {
    graph.nodes.iter().find(|n| n.outputs.contains(&v))
}

/// Whether `v` is read by exactly one node input and is no graph output.
fn read_once(graph: &Graph, v: ValueId) -> bool {
    let reads: usize = graph.nodes.iter().map(|n| n.inputs.iter().filter(|&&i| i == Some(v)).count()).sum();
    reads == 1 && !graph.outputs.contains(&v)
}

/// A constant f32 tensor's values.
fn f32s(graph: &Graph, v: ValueId) -> Option<Vec<f32>> {
    let t = graph.values[v].constant().filter(|t| t.dtype() == DType::F32)?;
    Some(t.as_slice::<f32>().ok()?.to_vec())
}

/// The DequantizeLinear of uint8/int8 to f32 that makes `v`, with scales per tensor or (with
/// `channels`, for weights) one per index of axis 0; its constant scales.
fn dequantize_of(graph: &Graph, v: ValueId, channels: Option<usize>) -> Option<(Quantized, Vec<f32>)> {
    let node = producer(graph, v)?;
    let dq = node.op.downcast_ref::<DequantizeLinear>()?;
    if graph.values[v].fact.dtype != Some(DType::F32) || dq.block_size() != 0 {
        return None;
    }
    let (q, scale) = (node.inputs.first().copied().flatten()?, node.inputs.get(1).copied().flatten()?);
    let dtype = graph.values[q].fact.dtype.filter(|d| matches!(d, DType::U8 | DType::I8))?;
    let scales = f32s(graph, scale)?;
    let rank = graph.values[q].fact.shape.as_ref().map_or(0, |s| s.len()) as i64;
    let per_axis0 = channels == Some(scales.len()) && (dq.axis() == 0 || dq.axis() == -rank);
    if !(scales.len() == 1 || per_axis0) {
        return None;
    }
    let zero = node.inputs.get(2).copied().flatten();
    if let Some(z) = zero {
        graph.values[z].constant().filter(|t| t.dtype() == dtype && t.len() == scales.len())?;
    }
    Some((Quantized { q, scale, zero }, scales))
}

fn qdq_conv_at(graph: &Graph, i: usize) -> Option<QdqConv> {
    let quant = &graph.nodes[i];
    quant.op.downcast_ref::<QuantizeLinear>()?;
    let (y, y_scale) = (quant.inputs.first().copied().flatten()?, quant.inputs.get(1).copied().flatten()?);
    // An output zero point says the type; scale and zero point one value each.
    let y_zero = quant.inputs.get(2).copied().flatten()?;
    let ys = f32s(graph, y_scale).filter(|s| s.len() == 1 && s[0] > 0.0)?[0];
    let zt = graph.values[y_zero].constant().filter(|t| t.len() == 1)?;
    let (lo, hi) = match zt.dtype() {
        DType::U8 => (0f32, 255f32),
        DType::I8 => (-128f32, 127f32),
        _ => return None,
    };
    let yz = zt.to_i64_vec().ok()?[0] as f32;
    let mut conv_node = producer(graph, y)?;
    if !read_once(graph, y) {
        return None;
    }
    // A Relu or Clip in between folds away when it clips nothing the quantization keeps:
    // quantizing is monotone, so Q(clip(v, a, b)) = clamp(Q(v), Q(a), Q(b)), and that is Q(v)
    // when Q(a) and Q(b) are at or past the ends of the output type.
    if let Some(act) = activation_of(graph, conv_node) {
        let (a, b) = match act {
            Activation::Relu => (0f32, f32::INFINITY),
            Activation::Clip(a, b) => (a, b),
            _ => return None,
        };
        let quantize = |v: f32| (v / ys).round_ties_even() + yz;
        if quantize(a) > lo || quantize(b) < hi {
            return None;
        }
        let inner = conv_node.inputs.first().copied().flatten()?;
        if !read_once(graph, inner) {
            return None;
        }
        conv_node = producer(graph, inner)?;
    }
    let attrs = &conv_node.op.downcast_ref::<Conv>()?.attrs;
    let conv = ConvAttrs { window: attrs.window.clone(), group: attrs.group };
    let (xv, wv) = (conv_node.inputs.first().copied().flatten()?, conv_node.inputs.get(1).copied().flatten()?);
    let wt = graph.values[wv].fact.shape.clone()?;
    let co = wt.first()?.known()?;
    // Grouped and depthwise convolutions stay on the float kernels: the integer depthwise
    // kernel (qlinear_depthwise.rs) is exact but not yet faster than the float one with its
    // quantization steps (MobileNetV2 int8-static, measured).
    if conv.group != 1 {
        return None;
    }
    let (x, xs) = dequantize_of(graph, xv, None)?;
    let (w, ws) = dequantize_of(graph, wv, Some(co))?;
    graph.values[w.q].constant()?;
    if !matches!(graph.values[x.q].fact.shape.as_ref().map(|s| s.len()), Some(3 | 4)) {
        return None;
    }
    // The bias at scale x_scale * w_scale[c]: a dequantized int32 at that very scale is taken
    // as it is (as convert and onnxruntime's quantize_static write it); a float one is rounded.
    let scales: Vec<f32> = (0..co).map(|c| xs[0] * ws[if ws.len() == 1 { 0 } else { c }]).collect();
    let bias = match conv_node.inputs.get(2).copied().flatten() {
        None => None,
        Some(b) => Some(int_bias(graph, b, &scales)?),
    };
    Some(QdqConv {
        conv,
        conv_attrs: conv_node.attrs.clone(),
        x,
        w,
        y: Quantized { q: graph.nodes[i].outputs[0], scale: y_scale, zero: Some(y_zero) },
        bias,
    })
}

/// Bias `b` as int32 at `scales` (one per output channel).
fn int_bias(graph: &Graph, b: ValueId, scales: &[f32]) -> Option<Tensor> {
    let co = scales.len();
    if let Some(node) = producer(graph, b) {
        let dq = node.op.downcast_ref::<DequantizeLinear>()?;
        let q = graph.values[node.inputs.first().copied().flatten()?].constant()?;
        let s = f32s(graph, node.inputs.get(1).copied().flatten()?)?;
        let zero_free = match node.inputs.get(2).copied().flatten() {
            None => true,
            Some(z) => graph.values[z].constant()?.to_i64_vec().ok()?.iter().all(|&v| v == 0),
        };
        let same = s.len() == co && s.iter().zip(scales).all(|(a, b)| a == b)
            || s.len() == 1 && scales.iter().all(|&v| v == s[0]);
        if q.dtype() == DType::I32 && q.shape() == [co] && zero_free && same && dq.block_size() == 0 {
            return Some(q.as_ref().clone());
        }
        return None;
    }
    let values = f32s(graph, b).filter(|v| v.len() == co)?;
    let mut q = Vec::with_capacity(co);
    for (v, s) in values.iter().zip(scales) {
        let r = (f64::from(*v) / f64::from(*s)).round_ties_even();
        // NaN (a zero scale, a NaN bias) and values past int32 leave the Conv in float.
        if r.is_nan() || r.abs() > f64::from(i32::MAX) {
            return None;
        }
        q.push(r as i32);
    }
    Tensor::new(vec![co], q).ok()
}
