//! Recognises multi-head attention written out as BERT-style exporters write it and replaces it
//! with one ONNX Attention node (3-D inputs, `heads` heads, an explicit scale), which the CPU
//! backend runs as one fused kernel:
//!
//! ```text
//! Q = Transpose(Reshape(q, [b, s, h, d]), 0213)      the same for V
//! Kᵀ = Transpose(Reshape(k, [b, s, h, d]), 0231)     or 0213 then 0132
//! y = Reshape(Transpose(MatMul(Softmax(Add(Div(MatMul(Q, Kᵀ), c), mask)), V), 0213), [b, s, h*d])
//! ```
//!
//! The Div by a constant scalar may be a Mul or absent; the mask Add may be absent. Every
//! intermediate must feed only the next step and not be a graph output.

use super::chain::{binary_with, only_feeds, replace_chains, Chain};
use super::Pass;
use crate::ir::{DType, Dim, Graph, ValueId};
use crate::ops::attention::Attention;
use crate::ops::binary::Kind;
use crate::ops::matmul::MatMul;
use crate::ops::reshape::Reshape;
use crate::ops::softmax::{self, Softmax};
use crate::ops::transpose::Transpose;
use crate::Result;
use std::sync::Arc;

pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "fuse-attention"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        Ok(replace_chains(graph, |g, i| {
            let f = attention_at(g, i)?;
            let op = Arc::new(Attention::multi_head(f.heads, f.scale));
            let mut inputs = vec![f.q, f.k, f.v];
            inputs.extend(f.mask);
            Some(Chain { nodes: f.nodes, op, op_type: "Attention", inputs })
        }))
    }
}

struct Found {
    q: ValueId,
    k: ValueId,
    v: ValueId,
    mask: Option<ValueId>,
    heads: usize,
    scale: f64,
    /// The chain's nodes, the final Reshape (which gives the output) last.
    nodes: Vec<usize>,
}

/// The node whose output `v` is.
fn producer(graph: &Graph, v: ValueId) -> Option<usize> {
    graph.nodes.iter().position(|n| n.outputs.contains(&v))
}

/// Whether node `k` is a Transpose of its first input by `perm` (of a rank-4 value).
fn is_transpose(graph: &Graph, k: usize, perm: &[usize]) -> bool {
    graph.nodes[k].op.downcast_ref::<Transpose>().is_some_and(|t| t.perm(4).is_ok_and(|p| p == perm))
}

/// The value a head split starts from: `x` `[b, s, h*d]` reshaped to `[b, s, h, d]` by node `r`
/// (which feeds only node `next`). Returns x, the Reshape and (h, d).
fn head_split(graph: &Graph, r: usize, next: usize) -> Option<(ValueId, usize, (usize, usize))> {
    let node = &graph.nodes[r];
    if !node.op.is::<Reshape>() || only_feeds(graph, r)?.1 != next {
        return None;
    }
    let x = node.inputs.first().copied().flatten()?;
    let xf = &graph.values[x].fact;
    let (xs, ys) = (xf.shape.as_ref()?, graph.values[node.outputs[0]].fact.shape.as_ref()?);
    let (&[ref b, ref s, Dim::Known(hidden)], &[ref yb, ref ys, Dim::Known(h), Dim::Known(d)]) = (&xs[..], &ys[..])
    else {
        return None;
    };
    let same = b == yb && s == ys && !matches!(b, Dim::Unknown) && !matches!(s, Dim::Unknown);
    (xf.dtype == Some(DType::F32) && same && h * d == hidden && h > 0).then_some((x, r, (h, d)))
}

/// `[b, h, s, d]` heads of a value (node `user` reads them): Transpose 0213 of a head split.
fn heads_of(graph: &Graph, v: ValueId, user: usize) -> Option<(ValueId, Vec<usize>, (usize, usize))> {
    let t = producer(graph, v)?;
    if !is_transpose(graph, t, &[0, 2, 1, 3]) || only_feeds(graph, t)?.1 != user {
        return None;
    }
    let (x, r, hd) = head_split(graph, producer(graph, graph.nodes[t].inputs[0]?)?, t)?;
    Some((x, vec![r, t], hd))
}

/// `[b, h, d, s]` transposed heads of keys: Transpose 0231 of a head split, or Transpose 0132 of
/// the `[b, h, s, d]` heads.
fn key_heads_of(graph: &Graph, v: ValueId, user: usize) -> Option<(ValueId, Vec<usize>, (usize, usize))> {
    let t = producer(graph, v)?;
    if only_feeds(graph, t)?.1 != user {
        return None;
    }
    let input = graph.nodes[t].inputs.first().copied().flatten()?;
    if is_transpose(graph, t, &[0, 2, 3, 1]) {
        let (x, r, hd) = head_split(graph, producer(graph, input)?, t)?;
        return Some((x, vec![r, t], hd));
    }
    if is_transpose(graph, t, &[0, 1, 3, 2]) {
        let (x, mut nodes, hd) = heads_of(graph, input, t)?;
        nodes.push(t);
        return Some((x, nodes, hd));
    }
    None
}

/// A constant f32 scalar (rank 0 or [1]).
fn scalar(graph: &Graph, v: ValueId) -> Option<f64> {
    let t = graph.values[v].constant()?;
    let s = t.as_slice::<f32>().ok().filter(|s| s.len() == 1 && t.rank() <= 1)?;
    Some(f64::from(s[0]))
}

/// Whether a Softmax normalises the last axis of a rank-4 input alone (probed with distinct
/// sizes: before opset 13 it flattens the axes from `axis` on).
fn softmax_over_last(graph: &Graph, k: usize) -> bool {
    let Some(s) = graph.nodes[k].op.downcast_ref::<Softmax>() else { return false };
    s.kind == softmax::Kind::Softmax
        && s.lanes(&[2, 3, 5, 7]).is_ok_and(|l| l == softmax::Lanes { outer: 30, n: 7, inner: 1 })
}

/// The written-out attention whose scores product is node `i`, if it is one.
fn attention_at(graph: &Graph, i: usize) -> Option<Found> {
    let node = &graph.nodes[i];
    if !node.op.is::<MatMul>() {
        return None;
    }
    let (qh, kh) = (node.inputs.first().copied().flatten()?, node.inputs.get(1).copied().flatten()?);
    let (q, q_nodes, (h, d)) = heads_of(graph, qh, i)?;
    let (k, k_nodes, kd) = key_heads_of(graph, kh, i)?;
    if kd != (h, d) {
        return None;
    }
    let mut nodes = q_nodes;
    nodes.extend(k_nodes);
    nodes.push(i);
    let (mut scores, mut next) = only_feeds(graph, i)?;
    let scores_shape = graph.values[scores].fact.shape.clone()?;
    let mut scale = 1.0;
    if let Some(c) = binary_with(&graph.nodes[next], Kind::Div, scores, Some(true)).and_then(|c| scalar(graph, c)) {
        scale = 1.0 / c;
    } else if let Some(c) = binary_with(&graph.nodes[next], Kind::Mul, scores, None).and_then(|c| scalar(graph, c)) {
        scale = c;
    }
    if scale != 1.0 {
        nodes.push(next);
        (scores, next) = only_feeds(graph, next)?;
    }
    let mut mask = None;
    if let Some(m) = binary_with(&graph.nodes[next], Kind::Add, scores, None) {
        // The mask broadcasts to the scores without widening them, and covers every key (the
        // Attention op masks the keys past a shorter mask's last axis).
        let mf = &graph.values[m].fact;
        let ms = mf.shape.as_ref()?;
        let out = graph.values[graph.nodes[next].outputs[0]].fact.shape.as_ref()?;
        if mf.dtype != Some(DType::F32) || ms.is_empty() || ms.len() > 4 || *out != scores_shape {
            return None;
        }
        if ms.last() != scores_shape.last() || matches!(ms.last(), Some(Dim::Unknown)) {
            return None;
        }
        mask = Some(m);
        nodes.push(next);
        (_, next) = only_feeds(graph, next)?;
    }
    if !softmax_over_last(graph, next) {
        return None;
    }
    nodes.push(next);
    let (probs, pv) = only_feeds(graph, next)?;
    let pv_node = &graph.nodes[pv];
    if !pv_node.op.is::<MatMul>() || pv_node.inputs.first() != Some(&Some(probs)) {
        return None;
    }
    let (v, v_nodes, (vh, dv)) = heads_of(graph, pv_node.inputs.get(1).copied().flatten()?, pv)?;
    if vh != h {
        return None;
    }
    nodes.extend(v_nodes);
    nodes.push(pv);
    let (_, merge) = only_feeds(graph, pv)?;
    if !is_transpose(graph, merge, &[0, 2, 1, 3]) {
        return None;
    }
    let (_, reshape) = only_feeds(graph, merge)?;
    if !graph.nodes[reshape].op.is::<Reshape>() {
        return None;
    }
    // The heads merged back: [b, s, h*dv] with the queries' b and s.
    let qs = graph.values[q].fact.shape.as_ref()?;
    let ys = graph.values[graph.nodes[reshape].outputs[0]].fact.shape.as_ref()?;
    if ys.len() != 3 || ys[..2] != qs[..2] || ys[2] != Dim::Known(h * dv) {
        return None;
    }
    nodes.extend([merge, reshape]);
    Some(Found { q, k, v, mask, heads: h, scale, nodes })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::infer::infer_facts;
    use crate::ir::{Attr, Attributes, Fact, Node, Tensor};
    use crate::ops::activation::test_util::build;

    /// How a test graph differs from the pattern.
    #[derive(Clone, Copy, PartialEq, Debug)]
    pub(crate) enum Variant {
        /// Div by √d, an additive mask, Kᵀ as two Transposes.
        Exact,
        /// Mul by the scale, no mask, Kᵀ as one Transpose 0231.
        MulNoMask,
        /// Softmax over the queries' axis: not attention.
        WrongAxis,
        /// The probabilities are also a graph output.
        Leak,
    }

    /// Self-attention of x `[1, s, h*d]` (projections are plain MatMuls by constants).
    pub(crate) fn graph(s: usize, h: usize, d: usize, variant: Variant) -> Graph {
        let mut g = Graph::default();
        let hidden = h * d;
        let x = g.add_value("x", Fact::concrete(DType::F32, &[1, s, hidden]));
        g.inputs = vec![x];
        let konst = |g: &mut Graph, name: &str, t: Tensor| g.add_value(name, Fact::constant(Arc::new(t)));
        let node = |g: &mut Graph, op_type: &str, attrs: Vec<(&str, Attr)>, inputs: Vec<usize>| {
            let out = g.add_value(format!("{op_type}{}", g.nodes.len()), Fact::unknown());
            g.nodes.push(Node {
                name: String::new(),
                domain: String::new(),
                op_type: op_type.into(),
                attrs: Attributes::default(),
                op: Arc::from(build(op_type, 13, attrs, 1).unwrap()),
                inputs: inputs.into_iter().map(Some).collect(),
                outputs: vec![out],
            });
            out
        };
        let weight = |g: &mut Graph, seed: usize| {
            let w: Vec<f32> =
                (0..hidden * hidden).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.02).collect();
            konst(g, &format!("w{seed}"), Tensor::new(vec![hidden, hidden], w).unwrap())
        };
        let split = konst(&mut g, "split", Tensor::vector(vec![1i64, s as i64, h as i64, d as i64]));
        let merged = konst(&mut g, "merged", Tensor::vector(vec![1i64, s as i64, hidden as i64]));
        let perm = |p: &[i64]| vec![("perm", Attr::Ints(p.to_vec()))];
        let heads = |g: &mut Graph, seed: usize, p: &[i64]| {
            let w = weight(g, seed);
            let proj = node(g, "MatMul", vec![], vec![x, w]);
            let r = node(g, "Reshape", vec![], vec![proj, split]);
            node(g, "Transpose", perm(p), vec![r])
        };
        let q = heads(&mut g, 1, &[0, 2, 1, 3]);
        let k = if variant == Variant::MulNoMask {
            heads(&mut g, 2, &[0, 2, 3, 1])
        } else {
            let k = heads(&mut g, 2, &[0, 2, 1, 3]);
            node(&mut g, "Transpose", perm(&[0, 1, 3, 2]), vec![k])
        };
        let v = heads(&mut g, 3, &[0, 2, 1, 3]);
        let scores = node(&mut g, "MatMul", vec![], vec![q, k]);
        let mut logits = if variant == Variant::MulNoMask {
            let c = konst(&mut g, "c", Tensor::scalar(1.0 / (d as f32).sqrt()));
            node(&mut g, "Mul", vec![], vec![c, scores])
        } else {
            let c = konst(&mut g, "c", Tensor::scalar((d as f32).sqrt()));
            node(&mut g, "Div", vec![], vec![scores, c])
        };
        if variant != Variant::MulNoMask {
            // The last two keys are padding.
            let m: Vec<f32> = (0..s).map(|j| if j + 2 >= s { -10000.0 } else { 0.0 }).collect();
            let mask = konst(&mut g, "mask", Tensor::new(vec![1, 1, 1, s], m).unwrap());
            logits = node(&mut g, "Add", vec![], vec![logits, mask]);
        }
        let axis = if variant == Variant::WrongAxis { 2 } else { -1 };
        let probs = node(&mut g, "Softmax", vec![("axis", Attr::Int(axis))], vec![logits]);
        let o = node(&mut g, "MatMul", vec![], vec![probs, v]);
        let o = node(&mut g, "Transpose", perm(&[0, 2, 1, 3]), vec![o]);
        let y = node(&mut g, "Reshape", vec![], vec![o, merged]);
        g.outputs = if variant == Variant::Leak { vec![y, probs] } else { vec![y] };
        infer_facts(&mut g).unwrap();
        g
    }

    fn fuse(g: Graph, s: usize, hidden: usize) -> Vec<String> {
        let x: Vec<f32> = (0..s * hidden).map(|i| ((i * 7) % 13) as f32 * 0.15 - 0.9).collect();
        let x = Tensor::new(vec![1, s, hidden], x).unwrap();
        super::super::chain::run_and_compare(g, &FuseAttention, &x, 1e-4, 1e-4)
    }

    #[test]
    fn written_out_attention_becomes_one_node() {
        for (s, h, d) in [(7, 2, 4), (5, 1, 8), (16, 4, 8)] {
            for variant in [Variant::Exact, Variant::MulNoMask] {
                let left = fuse(graph(s, h, d, variant), s, h * d);
                assert_eq!(left, ["MatMul", "MatMul", "MatMul", "Attention"], "{variant:?} s={s} h={h} d={d}");
            }
        }
    }

    #[test]
    fn other_chains_are_left_alone() {
        for variant in [Variant::WrongAxis, Variant::Leak] {
            let before = graph(7, 2, 4, variant).nodes.len();
            assert_eq!(fuse(graph(7, 2, 4, variant), 7, 8).len(), before, "{variant:?}");
        }
    }
}
