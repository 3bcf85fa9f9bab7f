//! What the passes that recognise written-out chains (Gelu, LayerNorm) share: walking from a
//! node to the one node that reads it, matching binary nodes, and replacing a matched chain with
//! one node.

use crate::ir::{DType, Graph, Node, Op, ValueId};
use crate::ops::binary::{Binary, Kind};
use std::sync::Arc;

/// The nodes that use value `v`.
pub fn users(graph: &Graph, v: ValueId) -> Vec<usize> {
    graph.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&Some(v))).map(|(k, _)| k).collect()
}

/// Node `k`'s single output and its users, if it is not a graph output.
pub fn output_users(graph: &Graph, k: usize) -> Option<(ValueId, Vec<usize>)> {
    let [out] = graph.nodes[k].outputs[..] else { return None };
    (!graph.outputs.contains(&out)).then(|| (out, users(graph, out)))
}

/// Node `k`'s single output, if only node `next` reads it (once) and it is not a graph output.
pub fn only_feeds(graph: &Graph, k: usize) -> Option<(ValueId, usize)> {
    let (out, users) = output_users(graph, k)?;
    let [next] = users[..] else { return None };
    let once = graph.nodes[next].inputs.iter().filter(|&&v| v == Some(out)).count() == 1;
    once.then_some((out, next))
}

/// A numpy-broadcasting binary node of `kind` with `v` as one input (as the first with
/// `first = Some(true)`, the second with `Some(false)`, either with `None`); returns the other.
pub fn binary_with(node: &Node, kind: Kind, v: ValueId, first: Option<bool>) -> Option<ValueId> {
    node.op.downcast_ref::<Binary>().filter(|b| b.kind == kind && b.align.is_numpy())?;
    match (&node.inputs[..], first) {
        (&[Some(p), Some(q)], Some(true) | None) if p == v && q != v => Some(q),
        (&[Some(p), Some(q)], Some(false) | None) if q == v && p != v => Some(p),
        _ => None,
    }
}

/// Whether `v` is a constant f32 scalar (rank 0 or [1], so it broadcasts to any rank >= 1)
/// within 1e-6 of `want`.
pub fn scalar(graph: &Graph, v: ValueId, want: f32) -> bool {
    let Some(t) = graph.values[v].constant() else { return false };
    t.dtype() == DType::F32
        && t.rank() <= 1
        && t.as_slice::<f32>().is_ok_and(|s| s.len() == 1 && (s[0] - want).abs() <= 1e-6)
}

/// Whether `v` is an f32 value of known rank >= 1 (so a scalar constant broadcast against it keeps
/// its shape).
pub fn float_tensor(graph: &Graph, v: ValueId) -> bool {
    let fact = &graph.values[v].fact;
    fact.dtype == Some(DType::F32) && fact.shape.as_ref().is_some_and(|s| !s.is_empty())
}

/// Replaces the chain `nodes` (indices; the last one's output is the chain's) with one node of
/// `op` on `inputs`, at the last node's place: its inputs are ready by then.
fn replace_chain(graph: &mut Graph, mut nodes: Vec<usize>, op: Arc<dyn Op>, op_type: &str, inputs: Vec<ValueId>) {
    let last = nodes.pop().expect("a chain has nodes");
    let node = &mut graph.nodes[last];
    node.op = op;
    node.op_type = op_type.into();
    node.domain = String::new();
    node.inputs = inputs.into_iter().map(Some).collect();
    nodes.sort_unstable();
    for k in nodes.into_iter().rev() {
        graph.nodes.remove(k);
    }
}

/// A chain found at a node: the nodes it covers (its output node last), and the node to put in
/// their place.
pub struct Chain {
    pub nodes: Vec<usize>,
    pub op: Arc<dyn Op>,
    pub op_type: &'static str,
    pub inputs: Vec<ValueId>,
}

/// Replaces every chain `find` recognises, starting at each node in turn; whether any was.
pub fn replace_chains(graph: &mut Graph, find: impl Fn(&Graph, usize) -> Option<Chain>) -> bool {
    let mut changed = false;
    let mut i = 0;
    while i < graph.nodes.len() {
        match find(graph, i) {
            Some(c) => {
                replace_chain(graph, c.nodes, c.op, c.op_type, c.inputs);
                changed = true;
            }
            None => i += 1,
        }
    }
    changed
}

/// Test support for the fusion passes: runs `pass` on `g`, checks the graph still computes what it
/// did on input `x` (each output within `atol + rtol * |want|`), and returns the node types left.
#[cfg(test)]
pub(super) fn run_and_compare(
    mut g: Graph,
    pass: &dyn super::Pass,
    x: &crate::ir::Tensor,
    atol: f32,
    rtol: f32,
) -> Vec<String> {
    use crate::ir::interp::Interpreter;
    use crate::ir::DataRef;
    let want = Interpreter.run(&g, &[DataRef::Tensor(x)], &[]).unwrap();
    pass.run(&mut g).unwrap();
    let got = Interpreter.run(&g, &[DataRef::Tensor(x)], &[]).unwrap();
    for (got, want) in got.into_iter().zip(want) {
        let (got, want) = (got.into_tensor().unwrap(), want.into_tensor().unwrap());
        for (a, b) in got.as_slice::<f32>().unwrap().iter().zip(want.as_slice::<f32>().unwrap()) {
            assert!((a - b).abs() <= atol + rtol * b.abs(), "{a} vs {b}");
        }
    }
    g.nodes.iter().map(|n| n.op_type.clone()).collect()
}

/// Test support for the fusion passes: appends an opset-13 `op_type` node with `attrs` reading
/// `inputs` to `g`; returns its one output.
#[cfg(test)]
pub(super) fn push_node(
    g: &mut Graph,
    op_type: &str,
    attrs: Vec<(&str, crate::ir::Attr)>,
    inputs: Vec<ValueId>,
) -> ValueId {
    let out = g.add_value(format!("{op_type}{}", g.nodes.len()), crate::ir::Fact::unknown());
    g.nodes.push(Node {
        name: String::new(),
        domain: String::new(),
        op_type: op_type.into(),
        attrs: crate::ir::Attributes::default(),
        op: Arc::from(crate::ops::activation::test_util::build(op_type, 13, attrs, 1).unwrap()),
        inputs: inputs.into_iter().map(Some).collect(),
        outputs: vec![out],
    });
    out
}
