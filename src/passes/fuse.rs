//! Fusions into the forms the kernels run in one pass over memory: Conv (+ Add of a skip
//! connection) + activation (SiLU's `x * sigmoid(x)` included) becomes a FusedConv;
//! ConvTranspose + activation a FusedConvTranspose; MatMul (constant 2-D B) + Add of a constant
//! per-column bias becomes a FusedMatMul, which then also takes a following activation; an
//! inference BatchNormalization after a Conv or ConvTranspose with constant weights is folded
//! into them;
//! MatMulInteger + Cast to float + Mul by a scalar + Add of a per-column bias becomes one
//! FusedMatMulInteger. A producer fuses only when its output feeds nothing else and is not a
//! graph output.

use super::Pass;
use crate::ir::{DType, Dim, Fact, Graph, Node, Tensor, ValueId};
use crate::ops::binary::{Binary, Kind};
use crate::ops::cast::Cast;
use crate::ops::conv::Conv;
use crate::ops::conv_transpose::ConvTranspose;
use crate::ops::fused::{activation_of, Activation, FusedConv, FusedConvTranspose, FusedMatMul, FusedMatMulInteger};
use crate::ops::matmul::MatMul;
use crate::ops::norm::BatchNorm;
use crate::ops::quant_conv::MatMulInteger;
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
            if let Some((add, op, skip)) = residual_at(graph, i) {
                // The fused node takes the Add's place: the skip tensor may be computed after the
                // Conv, but always before the Add.
                let mut fused = graph.nodes.remove(i);
                let add = add - 1;
                fused.outputs = graph.nodes[add].outputs.clone();
                fused.inputs.resize(3, None);
                fused.inputs.push(Some(skip));
                fused.op = op;
                fused.op_type = "FusedConv".into();
                graph.nodes[add] = fused;
                changed = true;
                continue;
            }
            let fused = match silu_at(graph, i) {
                Some(f) => Some(f),
                None => fusion_at(graph, i).map(|(c, r)| (vec![c], r)),
            };
            if let Some((mut consumers, replacement)) = fused {
                let last = *consumers.iter().max().expect("a fusion absorbs a node");
                let outputs = graph.nodes[last].outputs.clone();
                let producer = &mut graph.nodes[i];
                producer.op = replacement.0;
                producer.op_type = replacement.1.into();
                if let Some(f) = producer.op.downcast_ref::<FusedMatMulInteger>() {
                    // Fixed input slots: zero points at 2 and 3, the scale at 4, the bias at 5.
                    producer.inputs.resize(if f.biased { 5 } else { 4 }, None);
                }
                producer.inputs.extend(replacement.2);
                producer.outputs = outputs;
                consumers.sort_unstable();
                for c in consumers.into_iter().rev() {
                    graph.nodes.remove(c);
                }
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
    if let Some(fused) = integer_fusion_at(graph, i, consumer, out) {
        return Some((c, fused));
    }
    // The float kernels below compute in float32 only (a float16 Conv + Relu would fail at run time).
    if graph.values[out].fact.dtype != Some(DType::F32) {
        return None;
    }
    if node.op.is::<Conv>() {
        let act = activation_of(graph, consumer).filter(|_| consumer.inputs[0] == Some(out))?;
        let fused = FusedConv { conv: node.op.clone(), residual: false, act };
        return Some((c, (Arc::new(fused), "FusedConv", None)));
    }
    if node.op.is::<ConvTranspose>() {
        let act = activation_of(graph, consumer).filter(|_| consumer.inputs[0] == Some(out))?;
        let fused = FusedConvTranspose { conv_transpose: node.op.clone(), act };
        return Some((c, (Arc::new(fused), "FusedConvTranspose", None)));
    }
    if let Some(f) = node.op.downcast_ref::<FusedConv>() {
        if f.act != Activation::None {
            return None;
        }
        let act = activation_of(graph, consumer).filter(|_| consumer.inputs[0] == Some(out))?;
        let fused = FusedConv { conv: f.conv.clone(), residual: f.residual, act };
        return Some((c, (Arc::new(fused), "FusedConv", None)));
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

/// MatMulInteger's steps toward float: the Cast to f32, then a Mul by a scalar, then an Add of a
/// per-column constant bias (each step only after the previous one). The scale and bias go to
/// inputs 4 and 5, A's and B's zero points staying at 2 and 3.
fn integer_fusion_at(graph: &Graph, i: usize, consumer: &Node, out: ValueId) -> Option<Replacement> {
    let node = &graph.nodes[i];
    let fused = |scaled, biased| -> Arc<dyn crate::ir::Op> { Arc::new(FusedMatMulInteger { scaled, biased }) };
    if node.op.is::<MatMulInteger>() {
        let cast = consumer.op.downcast_ref::<Cast>()?;
        if cast.target() != Some(DType::F32) || node.inputs.len() > 4 {
            return None;
        }
        // The caller pads the inputs to their fixed slots.
        return Some((fused(false, false), "FusedMatMulInteger", None));
    }
    let f = node.op.downcast_ref::<FusedMatMulInteger>()?;
    let op = consumer.op.downcast_ref::<Binary>().filter(|b| b.align.is_numpy())?;
    let other = match consumer.inputs[..] {
        [Some(a), Some(b)] if a == out => b,
        [Some(a), Some(b)] if b == out => a,
        _ => return None,
    };
    match op.kind {
        Kind::Mul if !f.scaled && !f.biased => {
            let fact = &graph.values[other].fact;
            let scalar = fact.dtype == Some(DType::F32)
                && fact
                    .shape
                    .as_ref()
                    .is_some_and(|s| s.len() <= 1 && s.iter().all(|d| *d == crate::ir::Dim::Known(1)));
            // The fused node runs where the product did: the scale must be ready by then.
            let producer = graph.nodes.iter().position(|n| n.outputs.contains(&other));
            (scalar && producer.is_none_or(|p| p < i))
                .then(|| (fused(true, false), "FusedMatMulInteger", Some(Some(other))))
        }
        Kind::Add if !f.biased => {
            let b = graph.values[node.inputs.get(1).copied().flatten()?].constant()?;
            let n = *b.shape().get(1)?;
            let bias = per_column_bias(graph, consumer, out, n)?;
            Some((fused(f.scaled, true), "FusedMatMulInteger", Some(Some(bias))))
        }
        _ => None,
    }
}

/// Conv (or FusedConv without activation) whose output feeds exactly `s = Sigmoid(y)` and
/// `Mul(y, s)`: SiLU. Returns the two nodes to absorb (the Mul last in graph order gives the
/// outputs) and the fused op.
fn silu_at(graph: &Graph, i: usize) -> Option<(Vec<usize>, Replacement)> {
    let node = &graph.nodes[i];
    let (conv, residual) = if node.op.is::<Conv>() {
        (node.op.clone(), false)
    } else {
        let f = node.op.downcast_ref::<FusedConv>().filter(|f| f.act == Activation::None)?;
        (f.conv.clone(), f.residual)
    };
    let [y] = node.outputs[..] else { return None };
    // FusedConv computes in float32 only (a float16 model run as written keeps its Conv).
    if graph.values[y].fact.dtype != Some(DType::F32) {
        return None;
    }
    let users = |v: ValueId| -> Vec<usize> {
        graph.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(v))).map(|(k, _)| k).collect()
    };
    if graph.outputs.contains(&y) {
        return None;
    }
    let [a, b] = users(y)[..] else { return None };
    let is_sigmoid = |k: usize| activation_of(graph, &graph.nodes[k]) == Some(Activation::Sigmoid);
    let (sig, mul) = if is_sigmoid(a) {
        (a, b)
    } else if is_sigmoid(b) {
        (b, a)
    } else {
        return None;
    };
    let [s] = graph.nodes[sig].outputs[..] else { return None };
    let mul_node = &graph.nodes[mul];
    let is_mul = mul_node.op.downcast_ref::<Binary>().is_some_and(|m| matches!(m.kind, Kind::Mul));
    let pair = matches!(mul_node.inputs[..], [Some(p), Some(q)] if (p == y && q == s) || (p == s && q == y));
    if !is_mul || !pair || graph.outputs.contains(&s) || users(s) != [mul] || mul < sig {
        return None;
    }
    let fused = FusedConv { conv, residual, act: Activation::Silu };
    Some((vec![sig, mul], (Arc::new(fused), "FusedConv", None)))
}

/// A Conv (or a FusedConv with neither residual nor activation yet) whose output feeds only an
/// Add with an f32 tensor of the same known shape: a residual block's skip connection. Returns
/// the Add's index, the fused op and the skip tensor.
fn residual_at(graph: &Graph, i: usize) -> Option<(usize, Arc<dyn crate::ir::Op>, ValueId)> {
    let node = &graph.nodes[i];
    let conv = match node.op.downcast_ref::<FusedConv>() {
        Some(f) if f.residual || f.act != Activation::None => return None,
        Some(f) => f.conv.clone(),
        None if node.op.is::<Conv>() => node.op.clone(),
        None => return None,
    };
    let [out] = node.outputs[..] else { return None };
    if graph.outputs.contains(&out) {
        return None;
    }
    let mut consumers = graph.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(out)));
    let (add, consumer) = consumers.next()?;
    if consumers.next().is_some() || !consumer.op.downcast_ref::<Binary>().is_some_and(|b| matches!(b.kind, Kind::Add))
    {
        return None;
    }
    let skip = match consumer.inputs[..] {
        [Some(a), Some(b)] if a == out && b != out => b,
        [Some(a), Some(b)] if b == out && a != out => a,
        _ => return None,
    };
    // Equal dims, named or known, so the Add cannot broadcast (named dims agree within a run).
    let f32_shape = |v: ValueId| {
        let fact = &graph.values[v].fact;
        fact.shape.as_ref().filter(|s| fact.dtype == Some(DType::F32) && !s.contains(&Dim::Unknown))
    };
    let shape = f32_shape(out)?;
    (f32_shape(skip)? == shape).then_some((
        add,
        Arc::new(FusedConv { conv, residual: true, act: Activation::None }),
        skip,
    ))
}

/// Folds an inference BatchNormalization into the Conv or ConvTranspose before it: W' = W * s
/// (per output channel), B' = (B - mean) * s + beta with s = gamma / sqrt(var + eps), computed in
/// f64.
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batch-norm"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut i = 0;
        while i < graph.nodes.len() {
            match fold_at(graph, i)? {
                Some((bn, w, b)) => {
                    let outputs = graph.nodes[bn].outputs.clone();
                    let name = graph.nodes[i].name.clone();
                    let w = graph.add_value(format!("{name}.folded_weight"), Fact::constant(Arc::new(w)));
                    let b = graph.add_value(format!("{name}.folded_bias"), Fact::constant(Arc::new(b)));
                    let conv = &mut graph.nodes[i];
                    conv.inputs.truncate(1);
                    conv.inputs.extend([Some(w), Some(b)]);
                    conv.outputs = outputs;
                    graph.nodes.remove(bn);
                    changed = true;
                }
                None => i += 1,
            }
        }
        Ok(changed)
    }
}

/// The BatchNormalization node after Conv or ConvTranspose node `i`, with the folded weights and
/// bias.
fn fold_at(graph: &Graph, i: usize) -> Result<Option<(usize, Tensor, Tensor)>> {
    let node = &graph.nodes[i];
    let transposed = node.op.is::<ConvTranspose>();
    if !node.op.is::<Conv>() && !transposed {
        return Ok(None);
    }
    let [y] = node.outputs[..] else { return Ok(None) };
    let constant = |v: Option<&Option<ValueId>>| {
        v.copied().flatten().and_then(|v| graph.values[v].constant()).filter(|t| t.dtype() == DType::F32)
    };
    let Some(w) = constant(node.inputs.get(1)) else { return Ok(None) };
    if graph.outputs.contains(&y) || w.rank() < 3 || w.is_empty() {
        return Ok(None);
    }
    let mut users = graph.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(y)));
    let (Some((k, bn_node)), None) = (users.next(), users.next()) else { return Ok(None) };
    let Some(bn) = bn_node.op.downcast_ref::<BatchNorm>() else { return Ok(None) };
    if bn.training || !bn.spatial || bn_node.outputs.len() != 1 || bn_node.inputs.first() != Some(&Some(y)) {
        return Ok(None);
    }
    // Output channels: W's first dim for Conv; for ConvTranspose (W is [C, M / group, k...]) the
    // statistics' length, which must be a whole number of groups that divide C.
    let m = if transposed { constant(bn_node.inputs.get(1)).map_or(0, |t| t.len()) } else { w.shape()[0] };
    let (ws, inner) = (w.shape(), w.shape()[2..].iter().product::<usize>());
    let group = if transposed { m.checked_div(ws[1]).unwrap_or(0) } else { 1 };
    if m == 0 || (transposed && (group == 0 || group * ws[1] != m || ws[0] % group != 0)) {
        return Ok(None);
    }
    // The output channel weight element `e` feeds.
    let channel_of = |e: usize| {
        if transposed {
            let (c, j) = (e / (ws[1] * inner), (e / inner) % ws[1]);
            (c / (ws[0] / group)) * ws[1] + j
        } else {
            e / (w.len() / m)
        }
    };
    let bias = match node.inputs.get(2).copied().flatten() {
        None => None,
        Some(_) => match constant(node.inputs.get(2)) {
            Some(b) if b.len() == m => Some(b),
            _ => return Ok(None),
        },
    };
    let stats: Option<Vec<&Tensor>> = (1..5).map(|j| constant(bn_node.inputs.get(j)).map(|t| &**t)).collect();
    let Some(stats) = stats.filter(|s| s.iter().all(|t| t.len() == m)) else { return Ok(None) };
    let [gamma, beta, mean, var] = [0, 1, 2, 3].map(|j| stats[j].as_slice::<f32>());
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    let scale: Vec<f64> = (0..m).map(|c| gamma[c] as f64 / (var[c] as f64 + bn.epsilon).sqrt()).collect();
    let wv = w.as_slice::<f32>()?;
    let folded_w: Vec<f32> = wv.iter().enumerate().map(|(e, &x)| (x as f64 * scale[channel_of(e)]) as f32).collect();
    let mut folded_b = Vec::with_capacity(m);
    for c in 0..m {
        let b0 = bias.map_or(0.0, |b| b.as_slice::<f32>().map_or(0.0, |v| v[c] as f64));
        folded_b.push(((b0 - mean[c] as f64) * scale[c] + beta[c] as f64) as f32);
    }
    Ok(Some((k, Tensor::new(w.shape().to_vec(), folded_w)?, Tensor::new(vec![m], folded_b)?)))
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
