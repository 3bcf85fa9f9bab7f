//! Small tools for editing a decoded ONNX graph: fresh names, nodes, attributes, initializers with
//! owned data, and lookups (initializers by name, consumers, names used inside subgraphs).

use crate::ir::DType;
use crate::onnx::model::{attr_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor::tensor_from_proto;
use crate::{bail, Result};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Names not used yet in a graph (values, nodes and initializers share one namespace here, which
/// keeps new names unambiguous in error messages too).
pub struct Names {
    used: HashSet<String>,
}

impl Names {
    pub fn of(g: &GraphProto) -> Names {
        let mut used = HashSet::new();
        for n in &g.node {
            used.insert(n.name.clone());
            used.extend(n.input.iter().cloned());
            used.extend(n.output.iter().cloned());
        }
        used.extend(g.initializer.iter().map(|t| t.name.clone()));
        used.extend(g.input.iter().chain(&g.output).chain(&g.value_info).map(|v| v.name.clone()));
        used.extend(subgraph_names(g));
        Names { used }
    }

    /// `base` with a suffix, unique in the graph.
    pub fn fresh(&mut self, base: &str, suffix: &str) -> String {
        let mut name = format!("{base}{suffix}");
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}{suffix}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }
}

/// Every value name mentioned inside the subgraphs of `g`'s nodes (at any depth): a value of `g`
/// used there is captured, and must keep its name and type.
pub fn subgraph_names(g: &GraphProto) -> HashSet<String> {
    let mut out = HashSet::new();
    for n in &g.node {
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                for sn in &sub.node {
                    out.extend(sn.input.iter().cloned());
                }
                out.extend(sub.output.iter().map(|v| v.name.clone()));
                out.extend(subgraph_names(sub));
            }
        }
    }
    out
}

/// The version of the default ONNX domain the model imports.
pub fn onnx_opset(m: &ModelProto) -> i64 {
    m.opset_import.iter().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).max().unwrap_or(1)
}

/// Adds (or raises) an opset import.
pub fn require_opset(m: &mut ModelProto, domain: &str, version: i64) {
    match m.opset_import.iter_mut().find(|o| o.domain == domain) {
        Some(o) => o.version = o.version.max(version),
        None => m.opset_import.push(crate::onnx::model::OperatorSetIdProto { domain: domain.into(), version }),
    }
}

pub fn node<'a>(
    op: &str,
    name: String,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto<'a>>,
) -> NodeProto<'a> {
    NodeProto {
        op_type: op.into(),
        name,
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..NodeProto::default()
    }
}

pub fn attr_int<'a>(name: &str, v: i64) -> AttributeProto<'a> {
    AttributeProto { name: name.into(), r#type: attr_type::INT, i: Some(v), ..AttributeProto::default() }
}

pub fn attr_float<'a>(name: &str, v: f32) -> AttributeProto<'a> {
    AttributeProto { name: name.into(), r#type: attr_type::FLOAT, f: Some(v), ..AttributeProto::default() }
}

pub fn find_attr<'b, 'a>(n: &'b NodeProto<'a>, name: &str) -> Option<&'b AttributeProto<'a>> {
    n.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    find_attr(n, name).and_then(|a| a.i).unwrap_or(default)
}

pub fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    find_attr(n, name).and_then(|a| a.f).unwrap_or(default)
}

/// A node's name and op type, for notes ("/head/Conv (Conv)"), or the op type of a nameless one.
pub fn label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.op_type.clone()
    } else {
        format!("{} ({})", n.name, n.op_type)
    }
}

/// A Cast node to `to`.
pub fn cast<'a>(name: String, from: &str, to_value: &str, to: DType) -> NodeProto<'a> {
    node("Cast", name, &[from], &[to_value], vec![attr_int("to", i64::from(to.onnx_code()))])
}

/// An initializer with little-endian `raw_data` of the given dtype.
pub fn tensor<'a>(name: &str, dtype: DType, dims: &[usize], raw: Vec<u8>) -> TensorProto<'a> {
    TensorProto {
        name: name.into(),
        data_type: dtype.onnx_code(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        raw_data: Some(Cow::Owned(raw)),
        ..TensorProto::default()
    }
}

pub fn tensor_f32<'a>(name: &str, dims: &[usize], v: &[f32]) -> TensorProto<'a> {
    tensor(name, DType::F32, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub fn tensor_f16<'a>(name: &str, dims: &[usize], v: &[f32]) -> TensorProto<'a> {
    tensor(name, DType::F16, dims, v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())
}

pub fn tensor_i8<'a>(name: &str, dims: &[usize], v: &[i8]) -> TensorProto<'a> {
    tensor(name, DType::I8, dims, v.iter().map(|&x| x as u8).collect())
}

pub fn tensor_u8<'a>(name: &str, dims: &[usize], v: &[u8]) -> TensorProto<'a> {
    tensor(name, DType::U8, dims, v.to_vec())
}

pub fn tensor_i32<'a>(name: &str, dims: &[usize], v: &[i32]) -> TensorProto<'a> {
    tensor(name, DType::I32, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// A float32 initializer's shape and values.
pub fn f32_values(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
    if t.data_type != DType::F32.onnx_code() {
        bail!(InvalidModel, "initializer '{}' is not float32", t.name);
    }
    let tensor = tensor_from_proto(t, None)?;
    Ok((tensor.shape().to_vec(), tensor.as_slice::<f32>()?.to_vec()))
}

/// Initializer index by name, for initializers that are not also graph inputs (an initializer
/// listed as an input, as IR < 4 files do, is only a default that callers may override).
pub fn constant_initializers(g: &GraphProto) -> HashMap<String, usize> {
    let inputs: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    g.initializer
        .iter()
        .enumerate()
        .filter(|(_, t)| !inputs.contains(t.name.as_str()))
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// How many places read each value: node inputs, graph outputs, and subgraph captures.
pub fn use_counts(g: &GraphProto) -> HashMap<String, usize> {
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &g.output {
        *uses.entry(o.name.clone()).or_default() += 1;
    }
    for s in subgraph_names(g) {
        *uses.entry(s).or_default() += 1;
    }
    uses
}

/// Drops initializers nothing reads any more, and value_info of values no node makes now.
pub fn drop_unused(g: &mut GraphProto) {
    let uses = use_counts(g);
    let inputs: HashSet<String> = g.input.iter().map(|v| v.name.clone()).collect();
    g.initializer.retain(|t| uses.contains_key(&t.name) || inputs.contains(&t.name));
    let made: HashSet<String> = g.node.iter().flat_map(|n| n.output.iter().cloned()).collect();
    g.value_info.retain(|v| made.contains(&v.name));
}
