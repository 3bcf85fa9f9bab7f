//! Dynamic int8 quantization of MatMul and Gemm with constant weights, in the form onnxruntime's
//! `quantize_dynamic` writes: the activation goes through DynamicQuantizeLinear (uint8, its scale
//! and zero point computed per run), the weight is stored as symmetric int8 (per tensor, or per
//! output column with `per_channel`), MatMulInteger multiplies, and Cast + Mul by
//! `x_scale * w_scale` bring the int32 result back to float. A Gemm's alpha is folded into its
//! weight and `beta * C` is added after. Other nodes are left as they are; LSTM, GRU and RNN
//! stay float with a note (quantize_dynamic's DynamicQuantizeLSTM runs slower than float LSTM).

use super::edit::{
    attr_f, attr_i, cast, constant_initializers, drop_unused, f32_values, label, node, onnx_opset, tensor_f32,
    tensor_i8, Names,
};
use super::quant::quantize_int8_symmetric;
use super::{Notes, ValueTypes};
use crate::ir::DType;
use crate::onnx::model::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::{bail, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct DynamicOptions {
    /// One weight scale per output column instead of one per matrix.
    pub per_channel: bool,
    /// Node names or op types to leave in float.
    pub keep_float: Vec<String>,
}

/// A MatMul or Gemm this method can rewrite: activation input, the float weight `[K, N]` (already
/// transposed and scaled by alpha), and the float term to add after, if any.
struct Plan {
    x: String,
    weight: (Vec<usize>, Vec<f32>),
    bias: Option<Bias>,
}

enum Bias {
    /// A value of the graph, added as it is (Gemm with beta 1).
    Value(String),
    /// `beta * C` for a constant C.
    Constant(Vec<usize>, Vec<f32>),
}

pub fn to_int8_dynamic(
    m: &mut ModelProto,
    types: &ValueTypes,
    opts: &DynamicOptions,
    tick: &mut dyn FnMut(),
) -> Result<Notes> {
    if onnx_opset(m) < 11 {
        bail!(
            Unsupported,
            "int8-dynamic needs ONNX opset 11 or newer for DynamicQuantizeLinear (the model has {})",
            onnx_opset(m)
        );
    }
    let Some(g) = m.graph.as_mut() else { bail!(InvalidModel, "the model has no graph") };
    let weights = constant_initializers(g);
    let mut names = Names::of(g);
    let mut notes = Notes::default();
    // One DynamicQuantizeLinear per activation, shared by the MatMuls that read it (Q, K, V).
    let mut quantized: HashMap<String, [String; 3]> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = vec![];
    let mut out = vec![];
    for n in std::mem::take(&mut g.node) {
        tick();
        let plan = match plan(&n, types, &weights, g, opts) {
            Ok(Some(p)) => p,
            Ok(None) => {
                out.push(n);
                continue;
            }
            Err(why) => {
                notes.kept.push(format!("{}: kept float ({why})", label(&n)));
                out.push(n);
                continue;
            }
        };
        let base = if n.name.is_empty() { n.output[0].clone() } else { n.name.clone() };
        let [xq, xs, xz] = quantized
            .entry(plan.x.clone())
            .or_insert_with(|| {
                let outs = [
                    names.fresh(&plan.x, "_quantized"),
                    names.fresh(&plan.x, "_scale"),
                    names.fresh(&plan.x, "_zero_point"),
                ];
                let dql = node(
                    "DynamicQuantizeLinear",
                    names.fresh(&plan.x, "_QuantizeLinear"),
                    &[&plan.x],
                    &[&outs[0], &outs[1], &outs[2]],
                    vec![],
                );
                out.push(dql);
                outs
            })
            .clone();
        let (dims, values) = &plan.weight;
        let axis = opts.per_channel.then_some(1);
        let (q, scales) = quantize_int8_symmetric(values, dims, axis);
        let (wq, ws, wz) =
            (names.fresh(&base, "_W_quantized"), names.fresh(&base, "_W_scale"), names.fresh(&base, "_W_zero_point"));
        let sdims: Vec<usize> = if scales.len() > 1 { vec![scales.len()] } else { vec![] };
        new_inits.push(tensor_i8(&wq, dims, &q));
        new_inits.push(tensor_f32(&ws, &sdims, &scales));
        new_inits.push(tensor_i8(&wz, &sdims, &vec![0; scales.len()]));
        let acc = names.fresh(&base, "_output_quantized");
        out.push(node("MatMulInteger", names.fresh(&base, "_quant"), &[&xq, &wq, &xz, &wz], &[&acc], vec![]));
        let accf = names.fresh(&base, "_output_quantized_cast");
        out.push(cast(names.fresh(&base, "_output_quantized_cast"), &acc, &accf, DType::F32));
        let scale = names.fresh(&base, "_scales_mul");
        out.push(node("Mul", names.fresh(&base, "_scales_mul"), &[&xs, &ws], &[&scale], vec![]));
        let y = &n.output[0];
        let product = if plan.bias.is_some() { names.fresh(&base, "_output_scaled") } else { y.clone() };
        out.push(node("Mul", names.fresh(&base, "_output_scale_mul"), &[&accf, &scale], &[&product], vec![]));
        match plan.bias {
            None => {}
            Some(Bias::Value(c)) => {
                out.push(node("Add", names.fresh(&base, "_bias_add"), &[&product, &c], &[y], vec![]))
            }
            Some(Bias::Constant(cd, cv)) => {
                let c = names.fresh(&base, "_bias");
                new_inits.push(tensor_f32(&c, &cd, &cv));
                out.push(node("Add", names.fresh(&base, "_bias_add"), &[&product, &c], &[y], vec![]));
            }
        }
        notes.converted += 1;
    }
    g.node = out;
    g.initializer.extend(new_inits);
    drop_unused(g);
    Ok(notes)
}

/// `Ok(None)`: not a node this method handles; `Err(why)`: one it could handle but must not.
fn plan(
    n: &NodeProto,
    types: &ValueTypes,
    weights: &HashMap<String, usize>,
    g: &GraphProto,
    opts: &DynamicOptions,
) -> std::result::Result<Option<Plan>, String> {
    let std_domain = n.domain.is_empty() || n.domain == "ai.onnx";
    if std_domain && matches!(n.op_type.as_str(), "LSTM" | "GRU" | "RNN") {
        // Measured on the zoo's CRNN (benches/RESULTS.md): onnxruntime's DynamicQuantizeLSTM runs
        // slower than its float LSTM (the recurrent step quantizes h every time step), and crx580
        // runs it in a reference kernel; it saves only file size.
        return Err(
            "int8 recurrent ops do not pay: onnxruntime's DynamicQuantizeLSTM ran slower than float LSTM".into()
        );
    }
    if !std_domain || !matches!(n.op_type.as_str(), "MatMul" | "Gemm") {
        return Ok(None);
    }
    if opts.keep_float.iter().any(|k| *k == n.name || *k == n.op_type) {
        return Err("--keep-float".into());
    }
    let (x, w) = (&n.input[0], n.input.get(1).ok_or("no weight input")?);
    if types.get(x) != Some(&DType::F32) {
        return Err(format!("input '{x}' is not known to be float32"));
    }
    let Some(&wi) = weights.get(w) else { return Err(format!("weight '{w}' is not a constant initializer")) };
    let (dims, mut values) = f32_values(&g.initializer[wi]).map_err(|e| e.message)?;
    if dims.len() != 2 || values.is_empty() {
        return Err(format!("weight '{w}' has shape {dims:?}, not a non-empty matrix"));
    }
    if n.op_type == "MatMul" {
        return Ok(Some(Plan { x: x.clone(), weight: (dims, values), bias: None }));
    }
    if attr_i(n, "transA", 0) != 0 {
        return Err("transA=1".into());
    }
    let (alpha, beta) = (attr_f(n, "alpha", 1.0), attr_f(n, "beta", 1.0));
    let (mut k, mut cols) = (dims[0], dims[1]);
    if attr_i(n, "transB", 0) != 0 {
        values = (0..k * cols).map(|i| values[(i % k) * cols + i / k]).collect();
        (k, cols) = (cols, k);
    }
    values.iter_mut().for_each(|v| *v *= alpha);
    let bias = match n.input.get(2).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match weights.get(c) {
            Some(&ci) => {
                let (cd, cv) = f32_values(&g.initializer[ci]).map_err(|e| e.message)?;
                Some(Bias::Constant(cd, cv.iter().map(|v| v * beta).collect()))
            }
            None if beta == 1.0 => Some(Bias::Value(c.clone())),
            None => return Err(format!("C '{c}' is computed and beta is {beta}")),
        },
    };
    Ok(Some(Plan { x: x.clone(), weight: (vec![k, cols], values), bias }))
}
