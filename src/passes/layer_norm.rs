//! Recognises layer normalisation over the last axis written out as exporters of BERT-style
//! models write it,
//! `Add(Mul(Div(d, Sqrt(Add(ReduceMean(Pow(d, 2)), eps))), scale), bias)` with
//! `d = Sub(x, ReduceMean(x))`, both means over the last axis keeping it, scale and bias constant
//! f32 vectors along that axis, and replaces the nine nodes with one FusedLayerNorm.

use super::chain::{binary_with, only_feeds, output_users, replace_chains, Chain};
use super::Pass;
use crate::ir::{DType, Graph, Tensor, ValueId};
use crate::ops::binary::{Kind, Pow};
use crate::ops::fused::FusedLayerNorm;
use crate::ops::reduce::Reduce;
use crate::ops::unary::FloatFn;
use crate::Result;
use std::sync::Arc;

pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layer-norm"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        Ok(replace_chains(graph, |g, i| {
            let f = layer_norm_at(g, i)?;
            let op = Arc::new(FusedLayerNorm { epsilon: f.epsilon });
            Some(Chain { nodes: f.nodes, op, op_type: "FusedLayerNorm", inputs: vec![f.x, f.scale, f.bias] })
        }))
    }
}

struct Found {
    x: ValueId,
    scale: ValueId,
    bias: ValueId,
    epsilon: f32,
    /// The chain's nodes, the one giving the output last.
    nodes: Vec<usize>,
}

fn constant(graph: &Graph, v: ValueId) -> Option<&Tensor> {
    graph.values[v].constant().map(|t| &**t).filter(|t| t.dtype() == DType::F32)
}

/// Whether node `k` is a ReduceMean of `v` (of rank `rank`) over the last axis, keeping it.
fn mean_of_last_axis(graph: &Graph, k: usize, v: ValueId, rank: usize) -> bool {
    let node = &graph.nodes[k];
    let Some(r) = node.op.downcast_ref::<Reduce>().filter(|r| r.is_mean()) else { return false };
    if node.inputs.first() != Some(&Some(v)) {
        return false;
    }
    let axes: Option<Vec<Option<&Tensor>>> = node
        .inputs
        .iter()
        .map(|i| match i {
            None => Some(None),
            Some(i) if *i == v => Some(None),
            Some(i) => graph.values[*i].constant().map(|t| Some(&**t)),
        })
        .collect();
    let Some(axes) = axes else { return false };
    let probe = vec![2; rank];
    let want_out: Vec<usize> = (0..rank).map(|d| if d + 1 == rank { 1 } else { 2 }).collect();
    matches!(r.reduced(&probe, &axes), Ok(Some((mask, out))) if out == want_out
        && mask.iter().enumerate().all(|(d, &m)| m == (d + 1 == rank)))
}

/// The written-out layer norm starting with node `i` (the first ReduceMean), if it is one.
fn layer_norm_at(graph: &Graph, i: usize) -> Option<Found> {
    let node = &graph.nodes[i];
    let x = node.inputs.first().copied().flatten()?;
    let fact = &graph.values[x].fact;
    let rank = fact.shape.as_ref().map(|s| s.len()).filter(|&r| r >= 1)?;
    let n = fact.shape.as_ref()?.last()?.known()?;
    if fact.dtype != Some(DType::F32) || !mean_of_last_axis(graph, i, x, rank) {
        return None;
    }
    let (mean, sub) = only_feeds(graph, i)?;
    if binary_with(&graph.nodes[sub], Kind::Sub, mean, Some(false))? != x {
        return None;
    }
    // d feeds the Pow and the Div.
    let (d, d_users) = output_users(graph, sub)?;
    let [p, q] = d_users[..] else { return None };
    let is_pow = |k: usize| {
        let node = &graph.nodes[k];
        node.op.downcast_ref::<Pow>().is_some_and(|p| p.align.is_numpy())
            && node.inputs.first() == Some(&Some(d))
            && node
                .inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|e| constant(graph, e))
                .is_some_and(|e| e.rank() <= 1 && e.as_slice::<f32>().is_ok_and(|s| s == [2.0]))
    };
    let (pow, div) = if is_pow(p) {
        (p, q)
    } else if is_pow(q) {
        (q, p)
    } else {
        return None;
    };
    let (squares, var_mean) = only_feeds(graph, pow)?;
    if !mean_of_last_axis(graph, var_mean, squares, rank) {
        return None;
    }
    let (var, add_eps) = only_feeds(graph, var_mean)?;
    let eps = constant(graph, binary_with(&graph.nodes[add_eps], Kind::Add, var, None)?)?;
    let epsilon = *eps.as_slice::<f32>().ok().filter(|s| s.len() == 1 && eps.rank() <= 1)?.first()?;
    let (_, sqrt) = only_feeds(graph, add_eps)?;
    graph.nodes[sqrt].op.downcast_ref::<FloatFn>().filter(|f| f.name == "Sqrt")?;
    let (std, div_by) = only_feeds(graph, sqrt)?;
    if div_by != div || binary_with(&graph.nodes[div], Kind::Div, d, Some(true))? != std {
        return None;
    }
    let vector = |v: ValueId| constant(graph, v).is_some_and(|t| t.rank() == 1 && t.len() == n);
    let (normed, mul) = only_feeds(graph, div)?;
    let scale = binary_with(&graph.nodes[mul], Kind::Mul, normed, None).filter(|&s| vector(s))?;
    let (scaled, add) = only_feeds(graph, mul)?;
    let bias = binary_with(&graph.nodes[add], Kind::Add, scaled, None).filter(|&b| vector(b))?;
    let nodes = vec![i, sub, pow, var_mean, add_eps, sqrt, div, mul, add];
    nodes.windows(2).all(|w| w[0] < w[1]).then_some(Found { x, scale, bias, epsilon, nodes })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::infer::infer_facts;

    use crate::ir::{Attr, Fact};

    /// How a test chain differs from the pattern.
    #[derive(Clone, Copy, PartialEq)]
    pub(crate) enum Variant {
        Exact,
        /// The first mean over axis 0 instead of the last axis.
        FirstAxis,
        /// Pow 4 instead of 2.
        Quartic,
        /// The scale has one value, not one per column.
        ScalarScale,
        /// The centred values are also a graph output.
        Leak,
    }

    /// The written-out layer norm of a `[3, 8]` input x.
    pub(crate) fn chain(variant: Variant) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::concrete(DType::F32, &[3, 8]));
        g.inputs = vec![x];
        let konst = |g: &mut Graph, name: &str, t: Tensor| g.add_value(name, Fact::constant(Arc::new(t)));
        let exponent = konst(&mut g, "e", Tensor::scalar(if variant == Variant::Quartic { 4f32 } else { 2. }));
        let eps = konst(&mut g, "eps", Tensor::scalar(1e-5f32));
        let scale = if variant == Variant::ScalarScale {
            Tensor::vector(vec![1.5f32])
        } else {
            Tensor::vector((0..8).map(|i| 0.5 + i as f32 * 0.1).collect::<Vec<f32>>())
        };
        let scale = konst(&mut g, "scale", scale);
        let bias = konst(&mut g, "bias", Tensor::vector((0..8).map(|i| i as f32 * -0.2).collect::<Vec<f32>>()));
        let node = super::super::chain::push_node;
        let last = || vec![("axes", Attr::Ints(vec![-1]))];
        let first = if variant == Variant::FirstAxis { vec![("axes", Attr::Ints(vec![0]))] } else { last() };
        let mean = node(&mut g, "ReduceMean", first, vec![x]);
        let d = node(&mut g, "Sub", vec![], vec![x, mean]);
        let sq = node(&mut g, "Pow", vec![], vec![d, exponent]);
        let var = node(&mut g, "ReduceMean", last(), vec![sq]);
        let shifted = node(&mut g, "Add", vec![], vec![var, eps]);
        let std = node(&mut g, "Sqrt", vec![], vec![shifted]);
        let normed = node(&mut g, "Div", vec![], vec![d, std]);
        let scaled = node(&mut g, "Mul", vec![], vec![normed, scale]);
        let y = node(&mut g, "Add", vec![], vec![bias, scaled]);
        g.outputs = if variant == Variant::Leak { vec![y, d] } else { vec![y] };
        infer_facts(&mut g).unwrap();
        g
    }

    fn fuse(g: Graph) -> Vec<String> {
        let x =
            Tensor::new(vec![3, 8], (0..24).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0).collect::<Vec<f32>>()).unwrap();
        super::super::chain::run_and_compare(g, &FuseLayerNorm, &x, 1e-5, 1e-5)
    }

    #[test]
    fn written_out_layer_norm_becomes_one_node() {
        assert_eq!(fuse(chain(Variant::Exact)), ["FusedLayerNorm"]);
    }

    #[test]
    fn other_chains_are_left_alone() {
        for variant in [Variant::FirstAxis, Variant::Quartic, Variant::ScalarScale, Variant::Leak] {
            assert_eq!(fuse(chain(variant)).len(), 9);
        }
    }
}
