//! float32 to float16: nodes of ops that are safe in half precision compute in float16, with their
//! float weights stored as float16; everything else stays float32, with a Cast wherever a value
//! crosses between the two. Graph inputs and outputs keep their float32 type, unless `half_io`
//! asks for float16 there too.
//!
//! Kept in float32 by default: reductions, normalisation (BatchNormalization, LayerNormalization,
//! ...), Softmax, Exp/Log/Pow and any op not on the list below; nodes named (or of an op type) in
//! `keep_float`; nodes with a float weight that float16 cannot hold (a magnitude above 65504, or
//! values mostly below its precision); nodes reading values that can exceed float16's range
//! (computed from constants beyond 65504, such as attention masks of -3.4e38); and nodes of QDQ
//! regions. Every float32 value keeps its name; its
//! float16 twin is `NAME_fp16`, so graph outputs, subgraph captures and float32 consumers see the
//! original value.

use super::edit::{
    cast, constant_initializers, drop_unused, f32_values, label, onnx_opset, subgraph_names, tensor_f16, use_counts,
    Names,
};
use super::{Notes, ValueTypes};
use crate::ir::DType;
use crate::onnx::model::{GraphProto, ModelProto, NodeProto, TypeProto, ValueInfoProto};
use crate::{bail, Result};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Default)]
pub struct Fp16Options {
    /// Node names or op types to keep in float32.
    pub keep_float: Vec<String>,
    /// Nodes (by index in the graph's node list) to keep in float32, each with the reason told in
    /// the notes: the float32 islands that `fp16_auto` chose from calibration data.
    pub float_nodes: HashMap<usize, String>,
    /// Graph inputs and outputs of type float32 become float16 too (onnxconverter-common's
    /// default; by default they keep their types, its `keep_io_types=True`).
    pub half_io: bool,
}

/// Which inputs of an op carry its float type `T` (the others, such as shapes, indices and
/// Resize's scales, keep theirs). `None` for ops that stay float32.
fn half_inputs(op: &str) -> Option<&'static [usize]> {
    const ALL: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    Some(match op {
        "Conv" | "ConvTranspose" | "Gemm" | "Clip" => &[0, 1, 2],
        "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "PRelu" => &[0, 1],
        "Concat" | "Max" | "Min" | "Sum" | "Mean" => ALL,
        "Pad" => &[0, 2],
        "Where" => &[1, 2],
        "Relu" | "LeakyRelu" | "Sigmoid" | "Tanh" | "HardSigmoid" | "HardSwish" | "Elu" | "Gelu" | "Erf" | "Neg"
        | "Abs" | "Mish" | "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" | "Reshape"
        | "Transpose" | "Flatten" | "Squeeze" | "Unsqueeze" | "Slice" | "Gather" | "Split" | "Expand" | "Tile"
        | "Identity" | "Dropout" | "Resize" | "Upsample" | "DepthToSpace" | "SpaceToDepth" => &[0],
        _ => return None,
    })
}

/// Why a float32 weight cannot be stored as float16, if it cannot: a magnitude beyond 65504, or
/// a relative (L2) rounding error above 1e-3, which happens when the tensor's values sit mostly
/// below float16's precision (tiny values among normal ones are harmless and are flushed).
fn unfit_for_half(values: &[f32]) -> Option<String> {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max > 65504.0 {
        return Some(format!("holds {max:e}, beyond float16's 65504"));
    }
    let (mut err, mut norm) = (0f64, 0f64);
    for &v in values {
        let d = f64::from(v) - f64::from(half::f16::from_f32(v).to_f32());
        err += d * d;
        norm += f64::from(v) * f64::from(v);
    }
    if norm > 0.0 && (err / norm).sqrt() > 1e-3 {
        return Some(format!(
            "loses {:.2}% of its norm to float16 rounding (values below its precision)",
            100.0 * (err / norm).sqrt()
        ));
    }
    None
}

/// Converts `m` in place; `tick` is called once per node. Returns what was kept in float32 and why.
pub fn to_fp16(m: &mut ModelProto, types: &ValueTypes, opts: &Fp16Options, tick: &mut dyn FnMut()) -> Result<Notes> {
    if onnx_opset(m) < 7 {
        bail!(Unsupported, "float16 conversion needs ONNX opset 7 or newer (the model has {})", onnx_opset(m));
    }
    let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
    let mut notes = Notes::default();
    let weights = constant_initializers(g);
    let is_f32 = |name: &str| types.get(name) == Some(&DType::F32);

    // Decide per node, then which values any float32 reader needs.
    let half_nodes = plan(g, types, opts, &weights, &mut notes)?;
    let mut float_readers: HashMap<&str, usize> = HashMap::new();
    for (n, _) in g.node.iter().zip(&half_nodes).filter(|(_, h)| !**h) {
        for i in &n.input {
            *float_readers.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut needs_float: HashSet<String> = float_readers.keys().map(|s| s.to_string()).collect();
    let half_reads: HashMap<String, usize> = count_half_reads(&g.node, &half_nodes);
    for (name, uses) in use_counts(g) {
        // Reads that are not node inputs: graph outputs and subgraph captures.
        let node_reads =
            float_readers.get(name.as_str()).copied().unwrap_or(0) + half_reads.get(&name).copied().unwrap_or(0);
        if uses > node_reads {
            needs_float.insert(name);
        }
    }

    let mut names = Names::of(g);
    let mut half_of: HashMap<String, String> = HashMap::new();
    let mut new_inits = vec![];
    let mut out = Vec::with_capacity(g.node.len() * 2);
    for (mut n, half) in std::mem::take(&mut g.node).into_iter().zip(half_nodes) {
        tick();
        if !half {
            out.push(n);
            continue;
        }
        let sel = half_inputs(&n.op_type).unwrap_or(&[]);
        for (k, input) in n.input.iter_mut().enumerate() {
            if !sel.contains(&k) || input.is_empty() || !is_f32(input) {
                continue;
            }
            if let Some(h) = half_of.get(input.as_str()) {
                *input = h.clone();
                continue;
            }
            let h = names.fresh(input, "_fp16");
            match weights.get(input.as_str()) {
                Some(&w) => {
                    let (dims, values) = f32_values(&g.initializer[w])?;
                    new_inits.push(tensor_f16(&h, &dims, &values));
                }
                None => out.push(cast(names.fresh(input, "_to_fp16"), input, &h, DType::F16)),
            }
            half_of.insert(input.clone(), h.clone());
            *input = h;
        }
        let mut casts_back = vec![];
        for o in n.output.iter_mut().filter(|o| !o.is_empty() && is_f32(o)) {
            let h = names.fresh(o, "_fp16");
            if needs_float.contains(o.as_str()) {
                casts_back.push(cast(names.fresh(o, "_to_fp32"), &h, o, DType::F32));
            }
            half_of.insert(o.clone(), h.clone());
            *o = h;
        }
        notes.converted += 1;
        out.push(n);
        out.extend(casts_back);
    }
    g.node = out;
    g.initializer.extend(new_inits);
    if opts.half_io {
        let halves: HashSet<String> = half_of.into_values().collect();
        half_io(g, &halves, &mut names, &mut notes);
    }
    drop_unused(g);
    Ok(notes)
}

/// Makes the graph's float32 inputs and outputs float16, keeping their names: an input's
/// Cast to float16 goes (its readers read the input itself) and float32 readers get a Cast from
/// it; an output's value gets a new name and a Cast to float16 under the output's name, or, when
/// it was a Cast from a float16 value read by nothing else, that Cast becomes an Identity.
/// Values that subgraphs capture, or that are both input and output, keep their type.
fn half_io(g: &mut GraphProto, halves: &HashSet<String>, names: &mut Names, notes: &mut Notes) {
    let captured = subgraph_names(g);
    let is_float =
        |v: &ValueInfoProto| matches!(&v.r#type, Some(TypeProto::Tensor(t)) if t.elem_type == DType::F32.onnx_code());
    let outputs: HashSet<String> = g.output.iter().map(|v| v.name.clone()).collect();
    let inits: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let mut front = vec![];
    for k in 0..g.input.len() {
        let x = g.input[k].name.clone();
        if !is_float(&g.input[k]) || inits.contains(&x) {
            continue;
        }
        if captured.contains(&x) || outputs.contains(&x) {
            notes.kept.push(format!("input '{x}': kept float32 (a subgraph or graph output reads it)"));
            continue;
        }
        // Casts of the input to float16: their readers read the input itself.
        let casts: Vec<String> = g
            .node
            .iter()
            .filter(|n| n.op_type == "Cast" && n.input.first() == Some(&x) && casts_to(n, DType::F16))
            .map(|n| n.output[0].clone())
            .collect();
        g.node.retain(|n| !(n.op_type == "Cast" && n.output.first().is_some_and(|o| casts.contains(o))));
        // Float32 readers first (before the casts' readers read the input too).
        if g.node.iter().any(|n| n.input.contains(&x)) {
            let float = names.fresh(&x, "_fp32");
            rename_reads(g, std::slice::from_ref(&x), &float);
            front.push(cast(names.fresh(&x, "_to_fp32"), &x, &float, DType::F32));
        }
        rename_reads(g, &casts, &x);
        set_elem_type(&mut g.input[k], DType::F16);
    }
    g.node.splice(0..0, front);
    let inputs: HashSet<String> = g.input.iter().map(|v| v.name.clone()).collect();
    for k in 0..g.output.len() {
        let y = g.output[k].name.clone();
        if !is_float(&g.output[k]) || inputs.contains(&y) || inits.contains(&y) || captured.contains(&y) {
            continue;
        }
        let Some(p) = g.node.iter().position(|n| n.output.contains(&y)) else { continue };
        let read_by_nodes = g.node.iter().any(|n| n.input.contains(&y));
        let from_half = g.node[p].op_type == "Cast"
            && casts_to(&g.node[p], DType::F32)
            && g.node[p].input.first().is_some_and(|i| halves.contains(i));
        if from_half && !read_by_nodes && g.output.iter().filter(|o| o.name == y).count() == 1 {
            let n = &mut g.node[p];
            n.op_type = "Identity".into();
            n.attribute.clear();
        } else {
            let float = names.fresh(&y, "_fp32");
            for o in g.node[p].output.iter_mut().filter(|o| **o == y) {
                *o = float.clone();
            }
            rename_reads(g, std::slice::from_ref(&y), &float);
            g.node.insert(p + 1, cast(names.fresh(&y, "_to_fp16"), &float, &y, DType::F16));
        }
        set_elem_type(&mut g.output[k], DType::F16);
    }
}

fn casts_to(n: &NodeProto, to: DType) -> bool {
    n.attribute.iter().any(|a| a.name == "to" && a.i == Some(i64::from(to.onnx_code())))
}

/// Node inputs reading any of `from` read `to` instead.
fn rename_reads(g: &mut GraphProto, from: &[String], to: &str) {
    for i in g.node.iter_mut().flat_map(|n| n.input.iter_mut()) {
        if from.contains(i) {
            *i = to.to_string();
        }
    }
}

fn set_elem_type(v: &mut ValueInfoProto, to: DType) {
    if let Some(TypeProto::Tensor(t)) = &mut v.r#type {
        t.elem_type = to.onnx_code();
    }
}

/// Which nodes of the main graph compute in float16 under `opts` (the others stay float32).
pub fn half_nodes(m: &ModelProto, types: &ValueTypes, opts: &Fp16Options) -> Result<Vec<bool>> {
    let Some(g) = m.graph.as_ref() else { bail!(InvalidModel, "the model has no graph") };
    plan(g, types, opts, &constant_initializers(g), &mut Notes::default())
}

/// Per node, whether it computes in float16, noting why not where the reason is worth telling.
fn plan(
    g: &GraphProto,
    types: &ValueTypes,
    opts: &Fp16Options,
    weights: &HashMap<String, usize>,
    notes: &mut Notes,
) -> Result<Vec<bool>> {
    let quantized = quantized_region(g);
    let beyond_range = beyond_half_range(g, weights)?;
    let mut half_nodes = vec![false; g.node.len()];
    for (k, n) in g.node.iter().enumerate() {
        half_nodes[k] = if let Some(why) = opts.float_nodes.get(&k) {
            notes.kept.push(format!("{}: kept float32 ({why})", label(n)));
            false
        } else if quantized.contains(&k) {
            notes.kept.push(format!("{}: kept float32 (part of a quantized QDQ region)", label(n)));
            false
        } else if let Some(v) = n.input.iter().find(|i| beyond_range.contains(i.as_str())) {
            notes.kept.push(format!("{}: kept float32 (reads '{v}', which can exceed float16's range)", label(n)));
            false
        } else {
            decide(n, types, opts, weights, g, notes)?
        };
    }
    Ok(half_nodes)
}

/// Values that can exceed float16's range: constants beyond 65504 (attention masks of -3.4e38 are
/// the usual case) and, following the graph, what nodes compute from them, up to an op that
/// bounds its output (Softmax, Sigmoid, Tanh, normalisation, Clip, comparisons).
fn beyond_half_range(g: &GraphProto, weights: &HashMap<String, usize>) -> Result<HashSet<String>> {
    const BOUNDING: &[&str] = &[
        "Softmax",
        "LogSoftmax",
        "Sigmoid",
        "Tanh",
        "LayerNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "Clip",
        "Equal",
        "Less",
        "Greater",
        "Not",
        "Shape",
        "Cast",
    ];
    let too_big = |t: &crate::onnx::model::TensorProto| -> Result<bool> {
        Ok(t.data_type == DType::F32.onnx_code() && f32_values(t)?.1.iter().any(|v| v.abs() > 65504.0))
    };
    let mut out = HashSet::new();
    for (name, &w) in weights {
        if too_big(&g.initializer[w])? {
            out.insert(name.clone());
        }
    }
    for n in &g.node {
        let constant_too_big = n.op_type == "Constant"
            && n.attribute.iter().any(|a| {
                a.t.as_ref().is_some_and(|t| too_big(t).unwrap_or(false)) || a.f.is_some_and(|f| f.abs() > 65504.0)
            });
        let reads_big = n.input.iter().any(|i| out.contains(i)) && !BOUNDING.contains(&n.op_type.as_str());
        if constant_too_big || reads_big {
            out.extend(n.output.iter().cloned());
        }
    }
    Ok(out)
}

/// Nodes that read a DequantizeLinear output or feed a QuantizeLinear: their float values are the
/// quantized graph's own, and rounding them to float16 first can move a quantized value by a step.
fn quantized_region(g: &GraphProto) -> HashSet<usize> {
    let dequantized: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let quantizing: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .filter_map(|n| n.input.first().map(String::as_str))
        .collect();
    (0..g.node.len())
        .filter(|&k| {
            let n = &g.node[k];
            n.input.iter().any(|i| dequantized.contains(i.as_str()))
                || n.output.iter().any(|o| quantizing.contains(o.as_str()))
        })
        .collect()
}

fn count_half_reads(nodes: &[NodeProto], half: &[bool]) -> HashMap<String, usize> {
    let mut reads: HashMap<String, usize> = HashMap::new();
    for (n, _) in nodes.iter().zip(half).filter(|(_, h)| **h) {
        for i in &n.input {
            *reads.entry(i.clone()).or_default() += 1;
        }
    }
    reads
}

/// Whether node `n` computes in float16, noting why not where the reason is worth telling.
fn decide(
    n: &NodeProto,
    types: &ValueTypes,
    opts: &Fp16Options,
    weights: &HashMap<String, usize>,
    g: &GraphProto,
    notes: &mut Notes,
) -> Result<bool> {
    let label = label(n);
    let f32_in = n.input.iter().any(|i| types.get(i) == Some(&DType::F32));
    let f32_out = n.output.iter().any(|o| types.get(o) == Some(&DType::F32));
    if !f32_in && !f32_out {
        return Ok(false);
    }
    if opts.keep_float.iter().any(|k| *k == n.name || *k == n.op_type) {
        notes.kept.push(format!("{label}: kept float32 (--keep-float)"));
        return Ok(false);
    }
    let std_domain = n.domain.is_empty() || n.domain == "ai.onnx";
    let Some(sel) = half_inputs(&n.op_type).filter(|_| std_domain) else {
        notes.kept_ops.insert(n.op_type.clone());
        return Ok(false);
    };
    for (k, i) in n.input.iter().enumerate().filter(|(k, i)| sel.contains(k) && !i.is_empty()) {
        match types.get(i) {
            Some(DType::F32) => {}
            Some(_) => continue,
            None => {
                notes.kept.push(format!("{label}: kept float32 (the type of input {k} '{i}' is unknown)"));
                return Ok(false);
            }
        }
        if let Some(&w) = weights.get(i) {
            if let Some(why) = unfit_for_half(&f32_values(&g.initializer[w])?.1) {
                notes.kept.push(format!("{label}: kept float32 (weight '{i}' {why})"));
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_out_of_range_or_below_precision_are_refused() {
        assert!(unfit_for_half(&[1.0, -2.5, 0.0]).is_none());
        assert!(unfit_for_half(&[1e5]).unwrap().contains("65504"));
        assert!(unfit_for_half(&[1e-7, 2e-7, 3e-7]).unwrap().contains("precision"));
        // One tiny value among many normal ones is harmless.
        let mut v = vec![0.5f32; 200];
        v[0] = 1e-9;
        assert!(unfit_for_half(&v).is_none());
    }
}
