//! Graph rewrites. Each pass is small and says whether it changed the graph; [`optimize`] repeats
//! them until nothing changes.

use crate::ir::Graph;
use crate::Result;

pub mod attention;
pub mod chain;
pub mod const_fold;
pub mod dce;
pub mod fuse;
pub mod gelu;
pub mod hard_swish;
pub mod layer_norm;
pub mod qdq;
pub mod widen_f16;

pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrites `graph` in place; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool>;
}

/// The passes every model goes through, in order. QDQ products are recognised before constant
/// folding turns their weights' DequantizeLinear into float weights.
pub fn default_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(qdq::FuseQdqMatMul),
        Box::new(qdq::FuseQdqConv),
        Box::new(dce::DeadNodes),
        Box::new(const_fold::ConstFold::new()),
        Box::new(dce::DeadNodes),
    ]
}

/// The passes a backend runs when it compiles a graph: fusions into the forms its kernels run
/// in one go.
pub fn fusion_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(fuse::FoldBatchNorm),
        Box::new(gelu::FuseGelu),
        Box::new(hard_swish::FuseHardSwish),
        Box::new(layer_norm::FuseLayerNorm),
        Box::new(attention::FuseAttention),
        // What the fusions left unread (the shape subgraphs of split heads).
        Box::new(dce::DeadNodes),
        Box::new(fuse::FuseActivation),
    ]
}

/// Runs `passes` to a fixed point (bounded, so a pass that always reports a change cannot hang).
pub fn optimize(graph: &mut Graph, passes: &[Box<dyn Pass>]) -> Result<()> {
    for _round in 0..16 {
        let mut changed = false;
        for p in passes {
            let c = p.run(graph)?;
            if c {
                log::debug!("pass {} changed the graph ({} nodes left)", p.name(), graph.nodes.len());
            }
            changed |= c;
        }
        if !changed {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::infer::infer_facts;
    use crate::ir::{DType, Dim, Fact, Node, Tensor};
    use crate::ops::activation::test_util::build;
    use std::sync::Arc;

    fn node(op_type: &str, inputs: &[usize], outputs: &[usize]) -> Node {
        Node {
            name: String::new(),
            domain: String::new(),
            op_type: op_type.into(),
            attrs: Default::default(),
            op: Arc::from(build(op_type, 13, vec![], outputs.len()).unwrap()),
            inputs: inputs.iter().map(|&i| Some(i)).collect(),
            outputs: outputs.to_vec(),
        }
    }

    #[test]
    fn folds_constants_and_drops_dead_nodes() {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, vec![Dim::Symbol("N".into()), Dim::Known(3)]));
        let a = g.add_value("a", Fact::constant(Arc::new(Tensor::vector(vec![1f32, 2., 3.]))));
        let b = g.add_value("b", Fact::constant(Arc::new(Tensor::vector(vec![10f32, 20., 30.]))));
        let c = g.add_value("c", Fact::unknown());
        let y = g.add_value("y", Fact::unknown());
        let dead = g.add_value("dead", Fact::unknown());
        g.inputs = vec![x];
        g.outputs = vec![y];
        g.nodes = vec![node("Add", &[a, b], &[c]), node("Add", &[x, c], &[y]), node("Relu", &[x], &[dead])];
        infer_facts(&mut g).unwrap();
        assert_eq!(g.values[y].fact.shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(3)]));
        optimize(&mut g, &default_passes()).unwrap();
        assert_eq!(g.nodes.len(), 1, "{:?}", g.nodes);
        assert_eq!(g.nodes[0].inputs, vec![Some(x), Some(c)]);
        let folded = g.values[c].constant().expect("c is folded");
        assert_eq!(folded.as_slice::<f32>().unwrap(), &[11., 22., 33.]);
    }

    #[test]
    fn keeps_graph_outputs_that_are_constants() {
        let mut g = Graph::default();
        let a = g.add_value("a", Fact::constant(Arc::new(Tensor::vector(vec![1i64, 2]))));
        let y = g.add_value("y", Fact::unknown());
        g.outputs = vec![y];
        g.nodes = vec![node("Neg", &[a], &[y])];
        infer_facts(&mut g).unwrap();
        optimize(&mut g, &default_passes()).unwrap();
        assert!(g.nodes.is_empty());
        assert_eq!(g.values[y].constant().unwrap().as_slice::<i64>().unwrap(), &[-1, -2]);
    }

    #[test]
    fn dynamic_reshape_subgraph_folds_at_load_time() {
        use crate::ir::{Attr, Attributes};
        // r = Reshape(y, Concat(Unsqueeze(Gather(Shape(x), 0), [0]), [-1])), as exporters write it.
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::concrete(DType::F32, &[2, 3, 4]));
        let y = g.add_value("y", Fact::concrete(DType::F32, &[6, 4]));
        let konst = |g: &mut Graph, name: &str, t: Tensor| g.add_value(name, Fact::constant(Arc::new(t)));
        let zero = konst(&mut g, "zero", Tensor::scalar(0i64));
        let axes = konst(&mut g, "axes", Tensor::vector(vec![0i64]));
        let rest = konst(&mut g, "rest", Tensor::vector(vec![-1i64]));
        let node = |g: &mut Graph, op_type: &str, attrs: Vec<(&str, Attr)>, inputs: Vec<usize>| {
            let out = g.add_value(format!("{op_type}_out"), Fact::unknown());
            let op = build(op_type, 13, attrs, 1).unwrap();
            g.nodes.push(Node {
                name: String::new(),
                domain: String::new(),
                op_type: op_type.into(),
                attrs: Attributes::default(),
                op: Arc::from(op),
                inputs: inputs.into_iter().map(Some).collect(),
                outputs: vec![out],
            });
            out
        };
        let shape = node(&mut g, "Shape", vec![], vec![x]);
        let first = node(&mut g, "Gather", vec![], vec![shape, zero]);
        let first = node(&mut g, "Unsqueeze", vec![], vec![first, axes]);
        let target = node(&mut g, "Concat", vec![("axis", Attr::Int(0))], vec![first, rest]);
        let r = node(&mut g, "Reshape", vec![], vec![y, target]);
        g.inputs = vec![x, y];
        g.outputs = vec![r];
        infer_facts(&mut g).unwrap();
        assert_eq!(g.values[r].fact.concrete_shape(), Some(vec![2, 12]));
        optimize(&mut g, &default_passes()).unwrap();
        let left: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(left, ["Reshape"]);
        assert_eq!(g.values[target].constant().unwrap().as_slice::<i64>().unwrap(), &[2, -1]);
    }
}
