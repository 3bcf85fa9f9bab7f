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
//! intermediate must feed only the next step and not be a graph output. The head merge's
//! Transpose becomes a Reshape of the Attention output (a view), so the final Reshape, and the
//! Shape that often computes its target, stay as they are. With named (symbolic) input dims the
//! head split's target is computed from Shape at run time; the pass evaluates that subgraph with
//! the names standing as sizes to see that it splits `[b, s, h*d]` into `[b, s, h, d]`.

use super::chain::{binary_with, only_feeds};
use super::Pass;
use crate::ir::{Attributes, DType, Dim, Fact, Graph, Node, Tensor, ValueId};
use crate::ops::attention::Attention;
use crate::ops::binary::Kind;
use crate::ops::matmul::MatMul;
use crate::ops::reshape::Reshape;
use crate::ops::softmax::{self, Softmax};
use crate::ops::transpose::Transpose;
use crate::ops::{registry, BuildCtx};
use crate::Result;
use std::sync::Arc;

pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "fuse-attention"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut i = 0;
        while i < graph.nodes.len() {
            match attention_at(graph, i) {
                Some(f) => {
                    replace(graph, f)?;
                    changed = true;
                }
                None => i += 1,
            }
        }
        Ok(changed)
    }
}

/// Replaces a found chain with the Attention node and a Reshape of its `[b, s, h*dv]` output
/// to the `[b, s, h, dv]` the head merge gave (a view, no copy), so whatever read the merge
/// (the final Reshape, a Shape computing its target) reads the same value still. Both take the
/// merge's place: every input is ready by then.
fn replace(graph: &mut Graph, f: Found) -> Result<()> {
    let mut nodes = f.nodes;
    let merge = nodes.pop().expect("a chain ends at its head merge");
    let name = graph.nodes[merge].name.clone();
    let y = graph.add_value(format!("{name}.attention"), f.out);
    let target = Tensor::vector(vec![0i64, 0, f.heads as i64, f.dv as i64]);
    let target = graph.add_value(format!("{name}.heads"), Fact::constant(Arc::new(target)));
    let mut inputs = vec![Some(f.q), Some(f.k), Some(f.v)];
    inputs.extend(f.mask.map(Some));
    let attention = Node {
        name: format!("{name}.attention"),
        domain: String::new(),
        op_type: "Attention".into(),
        attrs: Attributes::default(),
        op: Arc::new(Attention::multi_head(f.heads, f.scale)),
        inputs,
        outputs: vec![y],
    };
    let attrs = Attributes::default();
    let ctx = BuildCtx { op_type: "Reshape", domain: "", opset: 13, attrs: &attrs, num_inputs: 2, num_outputs: 1 };
    let reshape = registry().get("", "Reshape").expect("Reshape is registered")(&ctx)?;
    let view = &mut graph.nodes[merge];
    view.op = Arc::from(reshape);
    view.op_type = "Reshape".into();
    view.domain = String::new();
    view.inputs = vec![Some(y), Some(target)];
    graph.nodes.insert(merge, attention);
    nodes.sort_unstable();
    for k in nodes.into_iter().rev() {
        graph.nodes.remove(k);
    }
    Ok(())
}

struct Found {
    q: ValueId,
    k: ValueId,
    v: ValueId,
    mask: Option<ValueId>,
    heads: usize,
    /// Width of a value head.
    dv: usize,
    scale: f64,
    /// The Attention node's output, `[b, s, heads * dv]`.
    out: Fact,
    /// The chain's nodes, the head merge (a Transpose to `[b, s, h, dv]`) last.
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

/// Sizes standing for named dims while a shape subgraph is evaluated (see [`probed`]); far above
/// any real dim, so a result equal to one is that dim.
const PROBE: usize = 1_000_003;

/// A value's fact with each named dim as a [`PROBE`] size, and each unknown dim as one of its
/// own (`?<value>.<axis>`: whatever it is at run time, Shape of this value reads it).
fn symbolic(graph: &Graph, v: ValueId, names: &mut Vec<String>) -> Option<Fact> {
    let fact = &graph.values[v].fact;
    let mut probe = |name: String| {
        let k = names.iter().position(|n| *n == name).unwrap_or_else(|| {
            names.push(name);
            names.len() - 1
        });
        Dim::Known(PROBE + 7 * k)
    };
    let dims = fact.shape.as_ref()?.iter().enumerate().map(|(axis, d)| match d {
        Dim::Known(n) => Dim::Known(*n),
        Dim::Symbol(s) => probe(s.clone()),
        Dim::Unknown => probe(format!("?{v}.{axis}")),
    });
    Some(Fact { dtype: fact.dtype, shape: Some(dims.collect()), value: None })
}

/// The fact of `v` inferred again with dims standing as sizes (see [`symbolic`]), through the
/// small subgraph that computes a Reshape target from Shape
/// (`Concat(Unsqueeze(Gather(Shape(x), 0)), ...)`): with symbolic input dims the graph's own
/// facts stop at Shape.
fn probed(graph: &Graph, v: ValueId, names: &mut Vec<String>, depth: usize) -> Option<Fact> {
    if let Some(t) = graph.values[v].constant() {
        return Some(Fact::constant(t.clone()));
    }
    const SHAPE_OPS: [&str; 8] = ["Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Reshape"];
    let p = match producer(graph, v) {
        Some(p) if depth > 0 && SHAPE_OPS.contains(&graph.nodes[p].op_type.as_str()) => p,
        _ => return symbolic(graph, v, names),
    };
    let node = &graph.nodes[p];
    let mut inputs = Vec::with_capacity(node.inputs.len());
    for i in &node.inputs {
        inputs.push(match i {
            Some(i) => Some(probed(graph, *i, names, depth - 1)?),
            None => None,
        });
    }
    let refs: Vec<Option<&Fact>> = inputs.iter().map(|f| f.as_ref()).collect();
    let out = node.op.infer(&refs).ok()?;
    out.into_iter().nth(node.outputs.iter().position(|&o| o == v)?)
}

/// The dims of `x` and of `y` as [`probed`] finds them, [`PROBE`] sizes named again: two dims
/// are equal when they are the same size whenever the graph runs.
fn probed_dims(graph: &Graph, x: ValueId, y: ValueId) -> Option<[Vec<Dim>; 2]> {
    let mut names = vec![];
    let facts = [probed(graph, x, &mut names, 0)?, probed(graph, y, &mut names, 12)?];
    let name =
        |n: usize| (n >= PROBE && (n - PROBE).is_multiple_of(7)).then(|| names.get((n - PROBE) / 7).cloned()).flatten();
    let dims = |f: Fact| -> Option<Vec<Dim>> {
        let dims = f.shape?.into_iter().map(|d| match d {
            Dim::Known(n) => name(n).map_or(Dim::Known(n), Dim::Symbol),
            d => d,
        });
        Some(dims.collect())
    };
    let [fx, fy] = facts;
    Some([dims(fx)?, dims(fy)?])
}

/// Whether a dim is the same size whenever the graph runs (known, or a named dim).
fn definite(d: &Dim) -> bool {
    !matches!(d, Dim::Unknown)
}

/// The value a head split starts from: `x` `[b, s, h*d]` reshaped to `[b, s, h, d]` by node `r`
/// (which feeds only node `next`). Returns x, its dims, the Reshape and (h, d).
fn head_split(graph: &Graph, r: usize, next: usize) -> Option<Split> {
    let node = &graph.nodes[r];
    if !node.op.is::<Reshape>() || only_feeds(graph, r)?.1 != next {
        return None;
    }
    let x = node.inputs.first().copied().flatten()?;
    let xf = &graph.values[x].fact;
    let [xs, ys] = probed_dims(graph, x, node.outputs[0])?;
    let (&[ref b, ref s, Dim::Known(hidden)], &[ref yb, ref ys, Dim::Known(h), Dim::Known(d)]) = (&xs[..], &ys[..])
    else {
        return None;
    };
    let same = b == yb && s == ys && definite(b) && definite(s);
    let [fb, fs] = [0, 1].map(|a| xf.shape.as_ref().map_or(Dim::Unknown, |s| s[a].clone()));
    (xf.dtype == Some(DType::F32) && same && h * d == hidden && h > 0).then(|| Split {
        x,
        dims: [fb, fs],
        nodes: vec![r],
        hd: (h, d),
    })
}

/// A head split found: `x` with batch and sequence dims `dims`, the nodes from x to the heads,
/// heads and head size.
struct Split {
    x: ValueId,
    dims: [Dim; 2],
    nodes: Vec<usize>,
    hd: (usize, usize),
}

/// `[b, h, s, d]` heads of a value (node `user` reads them): Transpose 0213 of a head split.
fn heads_of(graph: &Graph, v: ValueId, user: usize) -> Option<Split> {
    let t = producer(graph, v)?;
    if !is_transpose(graph, t, &[0, 2, 1, 3]) || only_feeds(graph, t)?.1 != user {
        return None;
    }
    let mut split = head_split(graph, producer(graph, graph.nodes[t].inputs[0]?)?, t)?;
    split.nodes.push(t);
    Some(split)
}

/// `[b, h, d, s]` transposed heads of keys: Transpose 0231 of a head split, or Transpose 0132 of
/// the `[b, h, s, d]` heads.
fn key_heads_of(graph: &Graph, v: ValueId, user: usize) -> Option<Split> {
    let t = producer(graph, v)?;
    if only_feeds(graph, t)?.1 != user {
        return None;
    }
    let input = graph.nodes[t].inputs.first().copied().flatten()?;
    let mut split = if is_transpose(graph, t, &[0, 2, 3, 1]) {
        head_split(graph, producer(graph, input)?, t)?
    } else if is_transpose(graph, t, &[0, 1, 3, 2]) {
        heads_of(graph, input, t)?
    } else {
        return None;
    };
    split.nodes.push(t);
    Some(split)
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

/// Whether a mask of dims `mask` can be the Attention op's: at most 4-D, and over all the keys
/// (the op masks the keys past a shorter mask's last axis where the Add would broadcast it). A
/// last axis of 1 is refused; a named one is taken to be the keys' when their length is not a
/// known size (exporters build it from the attention_mask input's sequence dim, while the keys'
/// may carry another name: onnx shape inference's `unk__3` after an embedding Add it could not
/// resolve), and must be theirs when it is a size. Leading axes that do not broadcast are
/// checked when the kernel runs.
fn fits_scores(mask: &[Dim], scores: &[Dim; 4]) -> bool {
    let (Some(last), Some(keys)) = (mask.last(), scores.last()) else { return false };
    let over_keys = match keys {
        Dim::Known(_) => last == keys,
        _ => last == keys || (definite(last) && *last != Dim::Known(1)),
    };
    mask.len() <= 4 && over_keys
}

/// The written-out attention whose scores product is node `i`, if it is one.
fn attention_at(graph: &Graph, i: usize) -> Option<Found> {
    let node = &graph.nodes[i];
    if !node.op.is::<MatMul>() {
        return None;
    }
    let (qh, kh) = (node.inputs.first().copied().flatten()?, node.inputs.get(1).copied().flatten()?);
    let q = heads_of(graph, qh, i)?;
    let k = key_heads_of(graph, kh, i)?;
    let h = q.hd.0;
    // Batch sizes and key/value lengths that differ make the kernel fall back to the reference
    // Attention, which reports them.
    if k.hd != q.hd {
        return None;
    }
    let scores_dims = [q.dims[0].clone(), Dim::Known(h), q.dims[1].clone(), k.dims[1].clone()];
    let mut nodes = q.nodes.clone();
    nodes.extend(&k.nodes);
    nodes.push(i);
    let (mut scores, mut next) = only_feeds(graph, i)?;
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
        let mf = &graph.values[m].fact;
        if mf.dtype != Some(DType::F32) || !mf.shape.as_ref().is_some_and(|s| fits_scores(s, &scores_dims)) {
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
    let v = heads_of(graph, pv_node.inputs.get(1).copied().flatten()?, pv)?;
    if v.hd.0 != h {
        return None;
    }
    nodes.extend(&v.nodes);
    nodes.push(pv);
    let (_, merge) = only_feeds(graph, pv)?;
    if !is_transpose(graph, merge, &[0, 2, 1, 3]) {
        return None;
    }
    nodes.push(merge);
    let [b, s] = q.dims;
    let out = Fact::new(DType::F32, vec![b, s, Dim::Known(h * v.hd.1)]);
    Some(Found { q: q.x, k: k.x, v: v.x, mask, heads: h, dv: v.hd.1, scale, out, nodes })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::infer::infer_facts;
    use crate::ir::{Attr, Fact, Tensor};

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
        /// x has named dims `[batch, seq, h*d]`; the Reshape targets are computed from Shape (as
        /// exporters write them). Div by √d, no mask.
        Named,
    }

    /// Self-attention of x `[1, s, h*d]` (projections are plain MatMuls by constants).
    pub(crate) fn graph(s: usize, h: usize, d: usize, variant: Variant) -> Graph {
        let mut g = Graph::default();
        let hidden = h * d;
        let named = variant == Variant::Named;
        let x = if named {
            let dims = vec![Dim::Symbol("batch".into()), Dim::Symbol("seq".into()), Dim::Known(hidden)];
            g.add_value("x", Fact::new(DType::F32, dims))
        } else {
            g.add_value("x", Fact::concrete(DType::F32, &[1, s, hidden]))
        };
        g.inputs = vec![x];
        let konst = |g: &mut Graph, name: &str, t: Tensor| g.add_value(name, Fact::constant(Arc::new(t)));
        let node = super::super::chain::push_node;
        let weight = |g: &mut Graph, seed: usize| {
            let w: Vec<f32> =
                (0..hidden * hidden).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.02).collect();
            konst(g, &format!("w{seed}"), Tensor::new(vec![hidden, hidden], w).unwrap())
        };
        let split = konst(&mut g, "split", Tensor::vector(vec![1i64, s as i64, h as i64, d as i64]));
        let merged = konst(&mut g, "merged", Tensor::vector(vec![1i64, s as i64, hidden as i64]));
        let perm = |p: &[i64]| vec![("perm", Attr::Ints(p.to_vec()))];
        let zero = konst(&mut g, "zero", Tensor::scalar(0i64));
        let one = konst(&mut g, "one", Tensor::scalar(1i64));
        let axis0 = konst(&mut g, "axis0", Tensor::vector(vec![0i64]));
        let two = konst(&mut g, "two", Tensor::vector(vec![2i64]));
        let [h_, d_, hidden_] = [("h", h), ("d", d), ("hidden", hidden)]
            .map(|(name, n)| konst(&mut g, name, Tensor::vector(vec![n as i64])));
        let dim_of = |g: &mut Graph, v: usize, i: usize| {
            let shape = node(g, "Shape", vec![], vec![v]);
            let n = node(g, "Gather", vec![], vec![shape, i]);
            node(g, "Unsqueeze", vec![], vec![n, axis0])
        };
        let heads = |g: &mut Graph, seed: usize, p: &[i64]| {
            let w = weight(g, seed);
            let proj = node(g, "MatMul", vec![], vec![x, w]);
            let split = if named {
                let (b, s) = (dim_of(g, proj, zero), dim_of(g, proj, one));
                node(g, "Concat", vec![("axis", Attr::Int(0))], vec![b, s, h_, d_])
            } else {
                split
            };
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
        if variant != Variant::MulNoMask && !named {
            // The last two keys are padding.
            let m: Vec<f32> = (0..s).map(|j| if j + 2 >= s { -10000.0 } else { 0.0 }).collect();
            let mask = konst(&mut g, "mask", Tensor::new(vec![1, 1, 1, s], m).unwrap());
            logits = node(&mut g, "Add", vec![], vec![logits, mask]);
        }
        let axis = if variant == Variant::WrongAxis { 2 } else { -1 };
        let probs = node(&mut g, "Softmax", vec![("axis", Attr::Int(axis))], vec![logits]);
        let o = node(&mut g, "MatMul", vec![], vec![probs, v]);
        let o = node(&mut g, "Transpose", perm(&[0, 2, 1, 3]), vec![o]);
        let merged = if named {
            let shape = node(&mut g, "Shape", vec![], vec![o]);
            let bs = node(&mut g, "Slice", vec![], vec![shape, axis0, two]);
            node(&mut g, "Concat", vec![("axis", Attr::Int(0))], vec![bs, hidden_])
        } else {
            merged
        };
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
                let want = ["MatMul", "MatMul", "MatMul", "Attention", "Reshape", "Reshape"];
                assert_eq!(left, want, "{variant:?} s={s} h={h} d={d}");
            }
            let left = fuse(graph(s, h, d, Variant::Named), s, h * d);
            let count = |t: &str| left.iter().filter(|n| *n == t).count();
            assert_eq!((count("Attention"), count("Softmax"), count("Transpose")), (1, 0, 0), "named dims: {left:?}");
        }
    }

    #[test]
    fn a_named_mask_fits_keys_of_another_name_or_unknown_length() {
        let sym = |s: &str| Dim::Symbol(s.into());
        let scores = |keys: Dim| [sym("batch"), Dim::Known(12), keys.clone(), keys];
        let mask = [sym("batch"), Dim::Known(1), Dim::Known(1), sym("sequence")];
        assert!(fits_scores(&mask, &scores(sym("unk__3"))));
        assert!(fits_scores(&mask, &scores(Dim::Unknown)));
        assert!(fits_scores(&mask, &scores(sym("sequence"))));
        assert!(!fits_scores(&mask, &scores(Dim::Known(128))));
        let broadcast = [Dim::Known(1), Dim::Known(1), Dim::Known(1), Dim::Known(1)];
        assert!(!fits_scores(&broadcast, &scores(sym("unk__3"))));
        assert!(fits_scores(&[Dim::Known(128)], &scores(Dim::Known(128))));
    }

    #[test]
    fn other_chains_are_left_alone() {
        for variant in [Variant::WrongAxis, Variant::Leak] {
            let before = graph(7, 2, 4, variant).nodes.len();
            assert_eq!(fuse(graph(7, 2, 4, variant), 7, 8).len(), before, "{variant:?}");
        }
    }
}
