//! Recognises Gelu written out as exporters of BERT-style models write it,
//! `Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)` (the two Muls in either order, `Div` by sqrt 2
//! or `Mul` by 1/sqrt 2), and replaces the five nodes with one Gelu node, which the activation
//! fusion then folds into the matrix product before it.

use super::chain::{binary_with, float_tensor, only_feeds, replace_chains, scalar, Chain};
use super::Pass;
use crate::ir::{Graph, ValueId};
use crate::ops::activation::{FloatActivation, Formula};
use crate::ops::binary::Kind;
use crate::ops::unary::FloatFn;
use crate::Result;
use std::sync::Arc;

pub struct FuseGelu;

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse-gelu"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        Ok(replace_chains(graph, |g, i| {
            let (x, nodes) = gelu_at(g, i)?;
            let op = Arc::new(FloatActivation { op_type: "Gelu".into(), formula: Formula::Gelu });
            Some(Chain { nodes, op, op_type: "Gelu", inputs: vec![x] })
        }))
    }
}

/// If node `i` starts a written-out Gelu of an f32 `x` of rank >= 1: x and the chain's nodes in
/// graph order (the last one gives the output).
fn gelu_at(graph: &Graph, i: usize) -> Option<(ValueId, Vec<usize>)> {
    let node = &graph.nodes[i];
    let x = node.inputs.first().copied().flatten()?;
    if !float_tensor(graph, x) {
        return None;
    }
    let scaled = match binary_with(node, Kind::Div, x, None) {
        Some(c) => scalar(graph, c, std::f32::consts::SQRT_2),
        None => {
            binary_with(node, Kind::Mul, x, None).is_some_and(|c| scalar(graph, c, std::f32::consts::FRAC_1_SQRT_2))
        }
    };
    if !scaled || node.inputs[0] != Some(x) {
        return None;
    }
    let (_, erf) = only_feeds(graph, i)?;
    graph.nodes[erf].op.downcast_ref::<FloatFn>().filter(|f| f.name == "Erf")?;
    let (e, add) = only_feeds(graph, erf)?;
    let one = binary_with(&graph.nodes[add], Kind::Add, e, None)?;
    if !scalar(graph, one, 1.0) {
        return None;
    }
    let (a, first) = only_feeds(graph, add)?;
    let other = binary_with(&graph.nodes[first], Kind::Mul, a, None)?;
    let (m, second) = only_feeds(graph, first)?;
    let rest = binary_with(&graph.nodes[second], Kind::Mul, m, None)?;
    // x and 0.5, one to each Mul.
    let halves = (other == x && scalar(graph, rest, 0.5)) || (rest == x && scalar(graph, other, 0.5));
    let ordered = i < erf && erf < add && add < first && first < second;
    (halves && ordered).then(|| (x, vec![i, erf, add, first, second]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::infer::infer_facts;
    use crate::ir::DType;
    use crate::ir::{Fact, Tensor};

    /// x -> (Div by `divisor`) -> Erf -> Add `one` -> Mul x -> Mul 0.5 (or 0.5 first with
    /// `half_first`); with `leak`, Erf's output is also a graph output.
    fn chain(divisor: f32, one: f32, half_first: bool, leak: bool) -> (Graph, usize) {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::concrete(DType::F32, &[2, 5]));
        g.inputs = vec![x];
        let konst = |g: &mut Graph, name: &str, v: f32| g.add_value(name, Fact::constant(Arc::new(Tensor::scalar(v))));
        let (d, o, h) = (konst(&mut g, "d", divisor), konst(&mut g, "one", one), konst(&mut g, "half", 0.5));
        let node = |g: &mut Graph, op_type: &str, inputs: Vec<usize>| {
            super::super::chain::push_node(g, op_type, vec![], inputs)
        };
        let q = node(&mut g, "Div", vec![x, d]);
        let e = node(&mut g, "Erf", vec![q]);
        let a = node(&mut g, "Add", vec![o, e]);
        let y = if half_first {
            let m = node(&mut g, "Mul", vec![a, h]);
            node(&mut g, "Mul", vec![x, m])
        } else {
            let m = node(&mut g, "Mul", vec![x, a]);
            node(&mut g, "Mul", vec![m, h])
        };
        g.outputs = if leak { vec![y, e] } else { vec![y] };
        infer_facts(&mut g).unwrap();
        (g, x)
    }

    fn fuse(g: Graph) -> Vec<String> {
        let x = Tensor::new(vec![2, 5], (0..10).map(|i| i as f32 * 0.7 - 3.1).collect::<Vec<f32>>()).unwrap();
        super::super::chain::run_and_compare(g, &FuseGelu, &x, 1e-6, 0.0)
    }

    #[test]
    fn written_out_gelu_becomes_one_node() {
        assert_eq!(fuse(chain(std::f32::consts::SQRT_2, 1.0, false, false).0), ["Gelu"]);
        // As exporters print it, and with the two Muls the other way round.
        let printed: f32 = "1.4142135".parse().unwrap();
        assert_eq!(fuse(chain(printed, 1.0, true, false).0), ["Gelu"]);
    }

    #[test]
    fn other_chains_are_left_alone() {
        let all = ["Div", "Erf", "Add", "Mul", "Mul"];
        assert_eq!(fuse(chain(2.0, 1.0, false, false).0), all, "another divisor");
        assert_eq!(fuse(chain(std::f32::consts::SQRT_2, 2.0, false, false).0), all, "another offset");
        assert_eq!(fuse(chain(std::f32::consts::SQRT_2, 1.0, false, true).0), all, "Erf's output is needed");
    }
}
