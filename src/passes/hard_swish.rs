//! Recognises HardSwish written out as MobileNetV3 exporters write it, and replaces the chain with
//! one HardSwish node, which the activation fusion then folds into the convolution before it:
//! - `Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)`: the Mul and the scaling (Div by 6 or Mul by 1/6) in
//!   either order, the Add's operands in either order (PyTorch's `x * F.relu6(x + 3) / 6`);
//! - `Mul(x, HardSigmoid(x, alpha = 1/6, beta = 0.5))` (Paddle's and Keras' hard_swish).
//!
//! Left alone: chains whose intermediate values are read elsewhere or are graph outputs.

use super::chain::{binary_with, float_tensor, only_feeds, replace_chains, scalar, Chain};
use super::Pass;
use crate::ir::{Graph, ValueId};
use crate::ops::activation::{FloatActivation, Formula};
use crate::ops::binary::Kind;
use crate::ops::fused::{activation_of, Activation};
use crate::Result;
use std::sync::Arc;

pub struct FuseHardSwish;

impl Pass for FuseHardSwish {
    fn name(&self) -> &'static str {
        "fuse-hard-swish"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        Ok(replace_chains(graph, |g, i| {
            let (x, nodes) = relu6_form_at(g, i).or_else(|| hard_sigmoid_form_at(g, i))?;
            let op = Arc::new(FloatActivation { op_type: "HardSwish".into(), formula: Formula::HardSwish });
            Some(Chain { nodes, op, op_type: "HardSwish", inputs: vec![x] })
        }))
    }
}

/// If node `i` is the Add of `x * Clip(x + 3, 0, 6) / 6`: x and the chain's nodes in graph order.
fn relu6_form_at(graph: &Graph, i: usize) -> Option<(ValueId, Vec<usize>)> {
    let add = &graph.nodes[i];
    let x = add.inputs.iter().flatten().copied().find(|&v| {
        float_tensor(graph, v) && binary_with(add, Kind::Add, v, None).is_some_and(|c| scalar(graph, c, 3.0))
    })?;
    let (shifted, clip) = only_feeds(graph, i)?;
    let clip_node = &graph.nodes[clip];
    if clip_node.inputs[0] != Some(shifted) || activation_of(graph, clip_node) != Some(Activation::Clip(0.0, 6.0)) {
        return None;
    }
    let (clipped, third) = only_feeds(graph, clip)?;
    let (product, fourth) = only_feeds(graph, third)?;
    // x * clipped, then / 6; or clipped / 6, then * x.
    let times_x = |k: usize, v: ValueId| binary_with(&graph.nodes[k], Kind::Mul, v, None) == Some(x);
    let sixth = |k: usize, v: ValueId| {
        let node = &graph.nodes[k];
        binary_with(node, Kind::Div, v, Some(true)).is_some_and(|c| scalar(graph, c, 6.0))
            || binary_with(node, Kind::Mul, v, None).is_some_and(|c| scalar(graph, c, 1.0 / 6.0))
    };
    let matched =
        (times_x(third, clipped) && sixth(fourth, product)) || (sixth(third, clipped) && times_x(fourth, product));
    let ordered = i < clip && clip < third && third < fourth;
    (matched && ordered).then(|| (x, vec![i, clip, third, fourth]))
}

/// If node `i` is the HardSigmoid of `x * HardSigmoid(x, 1/6, 0.5)`: x and the chain's nodes.
fn hard_sigmoid_form_at(graph: &Graph, i: usize) -> Option<(ValueId, Vec<usize>)> {
    let node = &graph.nodes[i];
    let f = node.op.downcast_ref::<FloatActivation>()?;
    let Formula::HardSigmoid { alpha, beta } = f.formula else { return None };
    if (alpha - 1.0 / 6.0).abs() > 1e-6 || (beta - 0.5).abs() > 1e-6 {
        return None;
    }
    let x = node.inputs.first().copied().flatten().filter(|&x| float_tensor(graph, x))?;
    let (gate, mul) = only_feeds(graph, i)?;
    let matched = binary_with(&graph.nodes[mul], Kind::Mul, gate, None) == Some(x);
    (matched && i < mul).then(|| (x, vec![i, mul]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::infer::infer_facts;
    use crate::ir::{Attr, DType, Fact, Tensor};

    /// How a test chain is written.
    #[derive(Clone, Copy)]
    enum Form {
        /// `x * Clip(x + shift, 0, top) / 6`, scaled last or (with `scale_first`) first.
        Relu6 { shift: f32, top: f32, scale_first: bool },
        /// `x * HardSigmoid(x, alpha, 0.5)`.
        HardSigmoid { alpha: f32 },
    }

    /// The chain on an input x of shape [2, 3, 4]; with `leak`, its first intermediate value is
    /// also a graph output.
    fn chain(form: Form, leak: bool) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::concrete(DType::F32, &[2, 3, 4]));
        g.inputs = vec![x];
        let konst = |g: &mut Graph, v: f32| {
            let name = format!("c{}", g.values.len());
            g.add_value(name, Fact::constant(Arc::new(Tensor::scalar(v))))
        };
        let node = super::super::chain::push_node;
        let (y, first) = match form {
            Form::Relu6 { shift, top, scale_first } => {
                let (s, lo, hi, six) =
                    (konst(&mut g, shift), konst(&mut g, 0.0), konst(&mut g, top), konst(&mut g, 6.0));
                let a = node(&mut g, "Add", vec![], vec![s, x]);
                let c = node(&mut g, "Clip", vec![], vec![a, lo, hi]);
                let y = if scale_first {
                    let d = node(&mut g, "Div", vec![], vec![c, six]);
                    node(&mut g, "Mul", vec![], vec![d, x])
                } else {
                    let m = node(&mut g, "Mul", vec![], vec![x, c]);
                    node(&mut g, "Div", vec![], vec![m, six])
                };
                (y, a)
            }
            Form::HardSigmoid { alpha } => {
                let attrs = vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(0.5))];
                let h = node(&mut g, "HardSigmoid", attrs, vec![x]);
                (node(&mut g, "Mul", vec![], vec![x, h]), h)
            }
        };
        g.outputs = if leak { vec![y, first] } else { vec![y] };
        infer_facts(&mut g).unwrap();
        g
    }

    /// Runs the pass; checks the graph computes what it did; returns the node types left.
    fn fuse(g: Graph) -> Vec<String> {
        let x = Tensor::new(vec![2, 3, 4], (0..24).map(|i| i as f32 * 0.45 - 5.2).collect::<Vec<f32>>()).unwrap();
        super::super::chain::run_and_compare(g, &FuseHardSwish, &x, 1e-6, 1e-6)
    }

    #[test]
    fn written_out_hard_swish_becomes_one_node() {
        for scale_first in [false, true] {
            let form = Form::Relu6 { shift: 3.0, top: 6.0, scale_first };
            assert_eq!(fuse(chain(form, false)), ["HardSwish"], "scale first: {scale_first}");
        }
        // As exporters print 1/6.
        assert_eq!(fuse(chain(Form::HardSigmoid { alpha: 0.166_666_67 }, false)), ["HardSwish"]);
    }

    #[test]
    fn other_chains_are_left_alone() {
        let relu6 = ["Add", "Clip", "Mul", "Div"];
        let form = |shift, top| Form::Relu6 { shift, top, scale_first: false };
        assert_eq!(fuse(chain(form(2.0, 6.0), false)), relu6, "another shift");
        assert_eq!(fuse(chain(form(3.0, 5.0), false)), relu6, "another bound");
        assert_eq!(fuse(chain(form(3.0, 6.0), true)), relu6, "the shifted value is needed");
        // MobileNetV3's squeeze-excite gate (alpha 0.2) is a plain HardSigmoid.
        assert_eq!(fuse(chain(Form::HardSigmoid { alpha: 0.2 }, false)), ["HardSigmoid", "Mul"]);
        assert_eq!(fuse(chain(Form::HardSigmoid { alpha: 1.0 / 6.0 }, true)), ["HardSigmoid", "Mul"]);
    }
}
