//! Static int8 quantization in the QDQ form onnxruntime's `quantize_static` writes: every float
//! activation read or made by a quantizable node gets a QuantizeLinear/DequantizeLinear pair with
//! the scale and zero point its calibrated range gives (int8 or uint8, asymmetric), weights of
//! Conv/ConvTranspose/Gemm/MatMul are stored as symmetric int8 (per tensor, or per output channel)
//! behind a DequantizeLinear, and Conv/Gemm biases as int32 with scale `x_scale * w_scale`.
//! Engines that fuse DQ -> op -> Q run the node in integers; others run the same float graph on
//! quantized values.
//!
//! The model moves to opset 13 for per-channel weights (per-axis DequantizeLinear) or 10 for
//! QDQ at all, when `opset::raise_opset` finds that safe; otherwise per-channel falls back to
//! per tensor, and a model that cannot reach 10 is refused, each with the reason.

use super::edit::{
    attr_i, attr_int, constant_initializers, drop_unused, f32_values, label, node, tensor_f32, tensor_i32, tensor_i8,
    tensor_u8, Names,
};
use super::opset::raise_opset;
use super::quant::quantize_int8_symmetric;
use super::{Notes, ValueTypes};
use crate::ir::DType;
use crate::onnx::model::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::{bail, Result};
use std::collections::{HashMap, HashSet};

/// The integer type of quantized activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationType {
    /// onnxruntime's default for quantize_static (QInt8).
    #[default]
    Int8,
    Uint8,
}

#[derive(Debug, Clone, Default)]
pub struct StaticOptions {
    /// One weight scale per output channel instead of one per tensor.
    pub per_channel: bool,
    pub activation_type: ActivationType,
    /// Node names or op types to leave in float.
    pub keep_float: Vec<String>,
}

/// What a quantizable node reads: which inputs are activations, which is a weight (and along
/// which axis its output channels lie), which is a bias.
struct Role {
    activations: Vec<usize>,
    weight: Option<(usize, usize)>,
    bias: Option<usize>,
}

fn role(n: &NodeProto, rank_of: &dyn Fn(&str) -> Option<usize>, is_constant: &dyn Fn(&str) -> bool) -> Option<Role> {
    let std_domain = n.domain.is_empty() || n.domain == "ai.onnx";
    if !std_domain {
        return None;
    }
    let all = |k: usize| (0..k).collect::<Vec<usize>>();
    let activations_or_weight = |axis: Option<usize>, bias: Option<usize>| {
        let w = n.input.get(1).filter(|w| is_constant(w));
        match (w, axis) {
            (Some(_), Some(a)) => Role { activations: vec![0], weight: Some((1, a)), bias },
            _ => Role { activations: vec![0, 1], weight: None, bias: None },
        }
    };
    Some(match n.op_type.as_str() {
        "Conv" => activations_or_weight(Some(0), Some(2)),
        "ConvTranspose" => {
            let a = if attr_i(n, "group", 1) == 1 { Some(1) } else { None };
            let mut r = activations_or_weight(a.or(Some(usize::MAX)), Some(2));
            r.activations.retain(|&k| k == 0);
            r
        }
        "Gemm" => activations_or_weight(Some(if attr_i(n, "transB", 0) != 0 { 0 } else { 1 }), Some(2)),
        "MatMul" => {
            let axis = n.input.get(1).and_then(|w| rank_of(w)).filter(|&r| r >= 2).map(|r| r - 1);
            activations_or_weight(axis, None)
        }
        "Add" | "Mul" => Role { activations: all(2), weight: None, bias: None },
        "Concat" => Role { activations: all(n.input.len()), weight: None, bias: None },
        "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" | "Relu" | "Clip" | "LeakyRelu"
        | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Tanh" | "Resize" | "Upsample" => {
            Role { activations: vec![0], weight: None, bias: None }
        }
        _ => return None,
    })
}

/// The plan for a model: quantized nodes (index -> role) and the activations they quantize.
struct Plan {
    roles: HashMap<usize, Role>,
    activations: Vec<String>,
}

fn plan(g: &GraphProto, types: &ValueTypes, opts: &StaticOptions, notes: &mut Notes) -> Result<Plan> {
    let weights = constant_initializers(g);
    let ranks: HashMap<&str, usize> = g.initializer.iter().map(|t| (t.name.as_str(), t.dims.len())).collect();
    let rank_of = |name: &str| ranks.get(name).copied();
    let is_constant = |name: &str| weights.contains_key(name);
    let all_initializers: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut roles = HashMap::new();
    for (k, n) in g.node.iter().enumerate() {
        let Some(mut r) = role(n, &rank_of, &is_constant) else {
            if n.output.iter().any(|o| types.get(o) == Some(&DType::F32)) && !is_quant_node(n) {
                notes.kept_ops.insert(n.op_type.clone());
            }
            continue;
        };
        let label = label(n);
        if opts.keep_float.iter().any(|f| *f == n.name || *f == n.op_type) {
            notes.kept.push(format!("{label}: kept float (--keep-float)"));
            continue;
        }
        match types.get(&n.input[0]) {
            Some(DType::F32) => {}
            Some(_) => continue, // integer work such as shape arithmetic: nothing to quantize
            None => {
                notes.kept.push(format!("{label}: kept float (the type of input '{}' is unknown)", n.input[0]));
                continue;
            }
        }
        if let Some((w, _)) = r.weight {
            if g.initializer[weights[&n.input[w]]].data_type != DType::F32.onnx_code() {
                notes.kept.push(format!("{label}: kept float (weight '{}' is not float32)", n.input[w]));
                continue;
            }
        }
        // Constant operands of elementwise ops stay float; so does anything not float32.
        r.activations.retain(|&i| {
            n.input.get(i).is_some_and(|v| {
                !v.is_empty() && !all_initializers.contains(v.as_str()) && types.get(v) == Some(&DType::F32)
            })
        });
        roles.insert(k, r);
    }

    // Which nodes read each value, and which values leave the graph.
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, n) in g.node.iter().enumerate() {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            readers.entry(i.as_str()).or_default().push(k);
        }
    }
    let graph_outputs: HashSet<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
    let graph_inputs: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    // A value read only by quantized Relu/Clip is not quantized itself: the activation's output
    // is, on the range that is left after clipping (onnxruntime folds these activations the same
    // way), and DQ -> Conv -> Relu -> Q still fuses into one integer Conv.
    let only_clipped = |v: &str| {
        !graph_inputs.contains(v)
            && !graph_outputs.contains(v)
            && readers.get(v).is_some_and(|rs| {
                rs.iter().all(|&k| roles.contains_key(&k) && matches!(g.node[k].op_type.as_str(), "Relu" | "Clip"))
            })
    };
    let mut activations: Vec<String> = vec![];
    let mut seen = HashSet::new();
    for (k, n) in g.node.iter().enumerate() {
        let Some(r) = roles.get(&k) else { continue };
        let outputs =
            n.output.iter().take(1).filter(|o| types.get(*o) == Some(&DType::F32) && readers.contains_key(o.as_str()));
        for v in r.activations.iter().map(|&i| &n.input[i]).chain(outputs) {
            if !only_clipped(v) && seen.insert(v.clone()) {
                activations.push(v.clone());
            }
        }
    }
    Ok(Plan { roles, activations })
}

fn is_quant_node(n: &NodeProto) -> bool {
    matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear")
}

/// The float tensors `to_int8_static` will quantize, whose ranges calibration must supply.
pub fn tensors_to_calibrate(m: &ModelProto, types: &ValueTypes, opts: &StaticOptions) -> Result<Vec<String>> {
    let Some(g) = m.graph.as_ref() else { bail!(InvalidModel, "the model has no graph") };
    Ok(plan(g, types, opts, &mut Notes::default())?.activations)
}

/// onnxruntime's asymmetric activation parameters for the range [lo, hi] (widened to hold 0).
pub fn activation_params(lo: f32, hi: f32, t: ActivationType) -> (f32, i32) {
    let (qmin, qmax) = match t {
        ActivationType::Int8 => (-128f32, 127f32),
        ActivationType::Uint8 => (0f32, 255f32),
    };
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / (qmax - qmin) } else { 1.0 };
    let zero = (qmin - lo / scale).round().clamp(qmin, qmax);
    (scale, zero as i32)
}

/// Rewrites `m` with QDQ pairs; `ranges` holds the calibrated range of every tensor
/// [`tensors_to_calibrate`] named. `tick` is called once per node.
pub fn to_int8_static(
    m: &mut ModelProto,
    types: &ValueTypes,
    ranges: &HashMap<String, (f32, f32)>,
    opts: &StaticOptions,
    tick: &mut dyn FnMut(),
) -> Result<Notes> {
    let mut notes = Notes::default();
    let mut per_channel = opts.per_channel;
    if per_channel {
        if let Err(blocking) = raise_opset(m, 13) {
            per_channel = false;
            notes.kept.push(format!(
                "per-channel weights need opset 13, and {} changed meaning since the model's opset: weights quantized per tensor",
                blocking.join(", ")
            ));
        }
    }
    if let Err(blocking) = raise_opset(m, 10) {
        bail!(
            Unsupported,
            "int8-static needs ONNX opset 10 or newer (QuantizeLinear), and the model's {} changed meaning since its opset {}; \
             update the model's opset first",
            blocking.join(", "),
            super::edit::onnx_opset(m)
        );
    }
    let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
    let plan = plan(g, types, opts, &mut notes)?;
    let weights = constant_initializers(g);
    let mut names = Names::of(g);
    let mut new_inits: Vec<TensorProto> = vec![];

    // Activation parameters and Q/DQ names.
    let mut act: HashMap<String, ActQ> = HashMap::new();
    for v in &plan.activations {
        let &(lo, hi) = ranges.get(v).ok_or_else(|| crate::err!(Runtime, "no calibration range for '{v}'"))?;
        let (scale, zero) = activation_params(lo, hi, opts.activation_type);
        let q = ActQ {
            scale_name: names.fresh(v, "_scale"),
            zero_name: names.fresh(v, "_zero_point"),
            quantized: names.fresh(v, "_QuantizeLinear_Output"),
            dequantized: names.fresh(v, "_DequantizeLinear_Output"),
            scale,
        };
        new_inits.push(tensor_f32(&q.scale_name, &[], &[scale]));
        new_inits.push(match opts.activation_type {
            ActivationType::Int8 => tensor_i8(&q.zero_name, &[], &[zero as i8]),
            ActivationType::Uint8 => tensor_u8(&q.zero_name, &[], &[zero as u8]),
        });
        act.insert(v.clone(), q);
    }

    let graph_inputs: Vec<String> = g.input.iter().map(|v| v.name.clone()).collect();
    let mut out: Vec<NodeProto> = vec![];
    for v in plan.activations.iter().filter(|v| graph_inputs.contains(v)) {
        out.extend(act[v].pair(v, &mut names));
    }
    // Weights quantized once per (name, axis), shared by the nodes that read them.
    let mut weight_q: HashMap<(String, Option<usize>), (String, Vec<f32>)> = HashMap::new();
    for (k, mut n) in std::mem::take(&mut g.node).into_iter().enumerate() {
        tick();
        let Some(r) = plan.roles.get(&k) else {
            push_with_pairs(n, &act, &mut names, &mut out);
            continue;
        };
        let label = label(&n);
        let mut weight_scales = None;
        if let Some((wi, axis)) = r.weight {
            let w = n.input[wi].clone();
            let (dims, values) = f32_values(&g.initializer[weights[&w]])?;
            let axis = if per_channel && axis < dims.len() { Some(axis) } else { None };
            let (dq_out, scales) = weight_q
                .entry((w.clone(), axis))
                .or_insert_with(|| {
                    let (q, scales) = quantize_int8_symmetric(&values, &dims, axis);
                    let (wq, ws, wz, wd) = (
                        names.fresh(&w, "_quantized"),
                        names.fresh(&w, "_scale"),
                        names.fresh(&w, "_zero_point"),
                        names.fresh(&w, "_DequantizeLinear_Output"),
                    );
                    let sdims: Vec<usize> = if axis.is_some() { vec![scales.len()] } else { vec![] };
                    new_inits.push(tensor_i8(&wq, &dims, &q));
                    new_inits.push(tensor_f32(&ws, &sdims, &scales));
                    new_inits.push(tensor_i8(&wz, &sdims, &vec![0; scales.len()]));
                    let attrs = axis.map(|a| vec![attr_int("axis", a as i64)]).unwrap_or_default();
                    out.push(node(
                        "DequantizeLinear",
                        names.fresh(&w, "_DequantizeLinear"),
                        &[&wq, &ws, &wz],
                        &[&wd],
                        attrs,
                    ));
                    (wd, scales)
                })
                .clone();
            n.input[wi] = dq_out;
            weight_scales = Some(scales);
            notes.converted += 1;
        }
        if let (Some(bi), Some(w_scales)) = (r.bias, &weight_scales) {
            let x_scale = act.get(&n.input[0]).map(|q| q.scale);
            let bias = n.input.get(bi).filter(|b| !b.is_empty()).cloned();
            if let (Some(b), Some(x_scale)) = (bias, x_scale) {
                match quantize_bias(g, &weights, &b, x_scale, w_scales) {
                    Ok((q, scales)) => {
                        let (bq, bs, bz, bd) = (
                            names.fresh(&b, "_quantized"),
                            names.fresh(&b, "_quantized_scale"),
                            names.fresh(&b, "_quantized_zero_point"),
                            names.fresh(&b, "_DequantizeLinear_Output"),
                        );
                        let sdims: Vec<usize> = if scales.len() > 1 { vec![scales.len()] } else { vec![] };
                        new_inits.push(tensor_i32(&bq, &[q.len()], &q));
                        new_inits.push(tensor_f32(&bs, &sdims, &scales));
                        new_inits.push(tensor_i32(&bz, &sdims, &vec![0; scales.len()]));
                        let attrs = if scales.len() > 1 { vec![attr_int("axis", 0)] } else { vec![] };
                        out.push(node(
                            "DequantizeLinear",
                            names.fresh(&b, "_DequantizeLinear"),
                            &[&bq, &bs, &bz],
                            &[&bd],
                            attrs,
                        ));
                        n.input[bi] = bd;
                    }
                    Err(why) => notes.kept.push(format!("{label}: bias '{b}' kept float ({why})")),
                }
            }
        }
        if r.weight.is_none() {
            notes.converted += 1;
        }
        push_with_pairs(n, &act, &mut names, &mut out);
    }
    g.node = out;
    g.initializer.extend(new_inits);
    drop_unused(g);
    Ok(notes)
}

/// An activation's quantization: its parameters' initializers and the names of its Q/DQ outputs.
struct ActQ {
    scale_name: String,
    zero_name: String,
    quantized: String,
    dequantized: String,
    scale: f32,
}

impl ActQ {
    fn pair<'a>(&self, v: &str, names: &mut Names) -> [NodeProto<'a>; 2] {
        let params = [self.scale_name.as_str(), self.zero_name.as_str()];
        [
            node(
                "QuantizeLinear",
                names.fresh(v, "_QuantizeLinear"),
                &[v, params[0], params[1]],
                &[&self.quantized],
                vec![],
            ),
            node(
                "DequantizeLinear",
                names.fresh(v, "_DequantizeLinear"),
                &[&self.quantized, params[0], params[1]],
                &[&self.dequantized],
                vec![],
            ),
        ]
    }
}

/// Emits `n` reading the dequantized value of each quantized activation it reads, followed by the
/// Q/DQ pair of each quantized activation it makes.
fn push_with_pairs<'a>(
    mut n: NodeProto<'a>,
    act: &HashMap<String, ActQ>,
    names: &mut Names,
    out: &mut Vec<NodeProto<'a>>,
) {
    for i in n.input.iter_mut() {
        if let Some(q) = act.get(i.as_str()) {
            *i = q.dequantized.clone();
        }
    }
    let pairs: Vec<NodeProto> =
        n.output.iter().filter(|o| act.contains_key(*o)).flat_map(|o| act[o].pair(o, names)).collect();
    out.push(n);
    out.extend(pairs);
}

/// A 1-D float bias as int32 with scale `x_scale * w_scale[c]` per output channel (one scale when
/// the weight has one).
fn quantize_bias(
    g: &GraphProto,
    weights: &HashMap<String, usize>,
    b: &str,
    x_scale: f32,
    w_scales: &[f32],
) -> std::result::Result<(Vec<i32>, Vec<f32>), String> {
    let &bi = weights.get(b).ok_or("not a constant initializer")?;
    let (dims, values) = f32_values(&g.initializer[bi]).map_err(|e| e.message)?;
    if dims.len() != 1 || (w_scales.len() > 1 && dims[0] != w_scales.len()) {
        return Err(format!("shape {dims:?} is not one value per output channel"));
    }
    let scales: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
    let mut q = Vec::with_capacity(values.len());
    for (c, v) in values.iter().enumerate() {
        let s = scales[if scales.len() > 1 { c } else { 0 }];
        let x = (f64::from(*v) / f64::from(s)).round();
        if s <= 0.0 || !x.is_finite() || x.abs() > f64::from(i32::MAX) {
            return Err(format!("value {v} does not fit int32 at scale {s:e}"));
        }
        q.push(x as i32);
    }
    Ok((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_params_follow_onnxruntime() {
        // [0, 6] in uint8: scale 6/255, zero 0; in int8: zero -128.
        assert_eq!(activation_params(0.0, 6.0, ActivationType::Uint8), (6.0 / 255.0, 0));
        assert_eq!(activation_params(0.0, 6.0, ActivationType::Int8), (6.0 / 255.0, -128));
        // A range that excludes 0 is widened to hold it; an empty one gets scale 1.
        assert_eq!(activation_params(2.0, 4.0, ActivationType::Uint8), (4.0 / 255.0, 0));
        assert_eq!(activation_params(0.0, 0.0, ActivationType::Int8), (1.0, -128));
        let (s, z) = activation_params(-1.0, 3.0, ActivationType::Int8);
        assert_eq!((s, z), (4.0 / 255.0, -64));
    }
}
