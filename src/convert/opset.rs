//! Raising a model's default-domain opset, for rewrites that need newer ops (QuantizeLinear and
//! DequantizeLinear from 10, their per-axis form from 13). Raising is only safe when no op of the
//! model changed its inputs, attributes or meaning between the two versions, so the ops that did
//! are listed with the versions where they changed; a model using one of them in the range is
//! left as it is, and the caller says why.

use super::edit::onnx_opset;
use crate::onnx::model::ModelProto;

/// Ops whose schema changed incompatibly (inputs, attributes or meaning), and the opset versions
/// where it happened, up to opset 13. Ops not listed kept their meaning from 1 to 13.
const CHANGED_AT: &[(&str, &[i64])] = &[
    ("Add", &[7]),
    ("Sub", &[7]),
    ("Mul", &[7]),
    ("Div", &[7]),
    ("Pow", &[7]),
    ("PRelu", &[7]),
    ("Gemm", &[7]),
    ("Max", &[8]),
    ("Min", &[8]),
    ("Sum", &[8]),
    ("Mean", &[8]),
    ("Concat", &[4]),
    ("Reshape", &[5]),
    ("Cast", &[6]),
    ("BatchNormalization", &[6, 7, 9]),
    ("Upsample", &[7, 9, 10]),
    ("Slice", &[10]),
    ("TopK", &[10]),
    ("Resize", &[11]),
    ("Pad", &[11]),
    ("Clip", &[11]),
    ("Scatter", &[11]),
    ("Scan", &[9]),
    ("Dropout", &[7, 12]),
    ("Split", &[2, 13]),
    ("Squeeze", &[13]),
    ("Unsqueeze", &[13]),
    ("ReduceSum", &[13]),
    ("Softmax", &[13]),
    ("LogSoftmax", &[13]),
    ("Hardmax", &[13]),
    // Experimental ops removed in opset 10.
    ("ImageScaler", &[10]),
    ("Crop", &[10]),
    ("Affine", &[10]),
    ("ParametricSoftplus", &[10]),
    ("ScaledTanh", &[10]),
    ("GRUUnit", &[10]),
    ("GivenTensorFill", &[10]),
    ("ConstantFill", &[10]),
];

/// Ops of the model's main graph and subgraphs (default domain) that stop it from moving to
/// opset `target`; empty when it may.
pub fn blockers(m: &ModelProto, target: i64) -> Vec<String> {
    let from = onnx_opset(m);
    let mut out = vec![];
    let mut visit = |op: &str| {
        let changed =
            CHANGED_AT.iter().find(|(o, _)| *o == op).is_some_and(|(_, v)| v.iter().any(|&v| v > from && v <= target));
        if changed && !out.iter().any(|o| o == op) {
            out.push(op.to_string());
        }
    };
    if let Some(g) = &m.graph {
        walk(g, &mut visit);
    }
    out
}

fn walk(g: &crate::onnx::model::GraphProto, visit: &mut dyn FnMut(&str)) {
    for n in &g.node {
        if n.domain.is_empty() || n.domain == "ai.onnx" {
            visit(&n.op_type);
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                walk(sub, visit);
            }
        }
    }
}

/// Moves the model to default-domain opset `target` (and the IR version it needs) if it is below
/// and nothing blocks it. Returns the blocking ops otherwise.
pub fn raise_opset(m: &mut ModelProto, target: i64) -> Result<(), Vec<String>> {
    if onnx_opset(m) >= target {
        return Ok(());
    }
    let blocking = blockers(m, target);
    if !blocking.is_empty() {
        return Err(blocking);
    }
    super::edit::require_opset(m, "", target);
    // Opset 10 came with IR version 5, 13 with 7 (onnx's version table).
    let ir = if target >= 13 { 7 } else { 5 };
    m.ir_version = m.ir_version.max(ir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::edit::{node, require_opset};
    use crate::onnx::model::GraphProto;

    fn model(opset: i64, ops: &[&str]) -> ModelProto<'static> {
        let node = ops.iter().map(|op| node(op, String::new(), &["x"], &["y"], vec![])).collect();
        let mut m = ModelProto {
            ir_version: 4,
            graph: Some(GraphProto { node, ..GraphProto::default() }),
            ..ModelProto::default()
        };
        require_opset(&mut m, "", opset);
        m
    }

    #[test]
    fn raises_only_past_unchanged_ops() {
        let mut m = model(9, &["Conv", "BatchNormalization", "Relu", "Add", "Gemm", "Flatten"]);
        assert_eq!(raise_opset(&mut m, 13), Ok(()));
        assert_eq!((onnx_opset(&m), m.ir_version), (13, 7));
        // Slice moved its starts/ends to inputs at 10; Softmax changed meaning at 13.
        let mut m = model(9, &["Conv", "Slice", "Softmax"]);
        assert_eq!(raise_opset(&mut m, 13), Err(vec!["Slice".to_string(), "Softmax".to_string()]));
        assert_eq!(raise_opset(&mut m, 10), Err(vec!["Slice".to_string()]));
        assert_eq!(onnx_opset(&m), 9);
        let mut m = model(11, &["Softmax"]);
        assert_eq!(raise_opset(&mut m, 10), Ok(()));
        assert_eq!(onnx_opset(&m), 11);
    }
}
