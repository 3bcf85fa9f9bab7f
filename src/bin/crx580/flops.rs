//! A FLOPs estimate per op type, from the shapes inferred at load: a multiply-add counts as two.
//! Conv, ConvTranspose, MatMul and Gemm count their multiply-adds; elementwise ops one FLOP per
//! output element (BatchNormalization two). Other ops are not counted. Nodes inside subgraphs (If,
//! Loop, Scan bodies) are not counted either.

use crx580::ir::{Graph, Node};
use std::collections::BTreeMap;

/// FLOPs of one op type over the graph.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OpFlops {
    /// Sum over the nodes whose shapes are known.
    pub known: u64,
    pub nodes: usize,
    /// Nodes whose shapes are not all known (a symbolic or unknown dim): their FLOPs are unknown.
    pub unknown_nodes: usize,
}

impl OpFlops {
    /// The total, or `None` when some node's shapes are unknown.
    pub fn total(&self) -> Option<u64> {
        (self.unknown_nodes == 0).then_some(self.known)
    }
}

/// The op type as `crx580 info` names it: `Conv`, or `com.microsoft:FusedConv` outside the default
/// domain.
pub fn op_key(n: &Node) -> String {
    if n.domain.is_empty() || n.domain == "ai.onnx" {
        n.op_type.clone()
    } else {
        format!("{}:{}", n.domain, n.op_type)
    }
}

/// Per op type, for the op types that are estimated; in op type order.
pub fn estimate(g: &Graph) -> BTreeMap<String, OpFlops> {
    let mut by_op: BTreeMap<String, OpFlops> = BTreeMap::new();
    for n in &g.nodes {
        let Some(flops) = node_flops(g, n) else { continue };
        let e = by_op.entry(op_key(n)).or_default();
        e.nodes += 1;
        match flops {
            Some(f) => e.known = e.known.saturating_add(f),
            None => e.unknown_nodes += 1,
        }
    }
    by_op
}

/// `None`: the op is not estimated; `Some(None)`: it is, but shapes are unknown.
fn node_flops(g: &Graph, n: &Node) -> Option<Option<u64>> {
    let shape = |k: usize| -> Option<Vec<usize>> { g.value(*n.inputs.get(k)?.as_ref()?).fact.concrete_shape() };
    let out_elems = || -> Option<u64> { elems(&g.value(*n.outputs.first()?).fact.concrete_shape()?) };
    let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
    let per_element = match n.op_type.as_str() {
        "Conv" | "ConvTranspose" | "MatMul" | "Gemm" if default_domain => None,
        "BatchNormalization" if default_domain => Some(2),
        op if default_domain && ELEMENTWISE.contains(&op) => Some(1),
        _ => return None,
    };
    if let Some(k) = per_element {
        return Some(out_elems().and_then(|e| e.checked_mul(k)));
    }
    let macs = || -> Option<u64> {
        match n.op_type.as_str() {
            // Weight [M, C/group, k...]: each output element sums C/group * prod(k) products.
            "Conv" => out_elems()?.checked_mul(elems(shape(1)?.get(1..)?)?),
            // Weight [C, M/group, k...]: each input element is scattered into M/group * prod(k) outputs.
            "ConvTranspose" => elems(&shape(0)?)?.checked_mul(elems(shape(1)?.get(1..)?)?),
            "MatMul" => out_elems()?.checked_mul(*shape(0)?.last()? as u64),
            "Gemm" => {
                let a = shape(0)?;
                let trans_a = n.attrs.int_or("transA", 0).ok()? != 0;
                let k = if trans_a { a.first()? } else { a.get(1)? };
                out_elems()?.checked_mul(*k as u64)
            }
            _ => None,
        }
    };
    Some(macs().and_then(|m| m.checked_mul(2)))
}

fn elems(shape: &[usize]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Elementwise ops counted at one FLOP per output element.
const ELEMENTWISE: &[&str] = &[
    "Abs",
    "Add",
    "Clip",
    "Div",
    "Elu",
    "Erf",
    "Exp",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Log",
    "Max",
    "Mean",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "Pow",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Selu",
    "Sigmoid",
    "Softplus",
    "Sqrt",
    "Sub",
    "Sum",
    "Swish",
    "Tanh",
];

/// `1.23 GFLOP`, `456 FLOP`.
pub fn human(flops: u64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")];
    let f = flops as f64;
    match UNITS.iter().find(|(scale, _)| f >= *scale) {
        Some((scale, unit)) => format!("{:.2} {unit}", f / scale),
        None => format!("{flops} FLOP"),
    }
}
