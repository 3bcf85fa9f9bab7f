//! The `com.microsoft` contrib ops that onnxruntime's transformer optimiser and fusions emit:
//! Gelu, FastGelu, BiasGelu, QuickGelu, SkipLayerNormalization, Attention (packed QKV),
//! FusedConv and EmbedLayerNormalization. Where a standard op does the work (Gelu, Swish, Conv,
//! the activations, the ONNX Attention head kernel), they use its kernel rather than a copy.

use super::attention::{attend_head, merge_heads, Capture, HeadDims, Rounding};
use super::matmul::gemm;
use super::real::{from_real, to_real, wants_f64};
use super::{input, opt_input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::tensor::try_vec;
use crate::ir::{Attr, Attributes, DType, Dim, Fact, Tensor};
use crate::{bail, Result};

const MS: &str = "com.microsoft";

pub fn register(r: &mut Registry) {
    r.add_in(MS, "Gelu", |_| gelu_family(Vec::new(), false));
    r.add_in(MS, "BiasGelu", |_| gelu_family(Vec::new(), true));
    r.add_in(MS, "FastGelu", |_| gelu_family(vec![("approximate", Attr::String("tanh".into()))], true));
    r.add_in(MS, "QuickGelu", |ctx| {
        let alpha = ctx.attrs.float_or("alpha", 1.702)?;
        gelu_family(vec![("alpha", Attr::Float(alpha))], false)
    });
    r.add_in(MS, "SkipLayerNormalization", |ctx| build_skip_layer_norm(ctx, false));
    r.add_in(MS, "SkipSimplifiedLayerNormalization", |ctx| build_skip_layer_norm(ctx, true));
    r.add_in(MS, "Attention", build_attention);
    r.add_in(MS, "MultiHeadAttention", super::multi_head_attention::build);
    r.add_in(MS, "FusedConv", build_fused_conv);
    r.add_in(MS, "EmbedLayerNormalization", |ctx| {
        Ok(Box::new(EmbedLayerNorm { epsilon: f64::from(ctx.attrs.float_or("epsilon", 1e-12)?) }))
    });
}

/// Builds a default-domain op through the registry, as the importer would.
fn build_standard(op_type: &'static str, opset: i64, attrs: Vec<(&str, Attr)>) -> Result<Box<dyn Op>> {
    let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
    let ctx = BuildCtx { op_type, domain: "", opset, attrs: &attrs, num_inputs: 1, num_outputs: 1 };
    match super::registry().get("", op_type) {
        Some(builder) => builder(&ctx),
        None => bail!(Unsupported, "{op_type} is not registered"),
    }
}

/// `activation(x + bias)`, with `bias` (when the op takes one) broadcast along the last axis.
#[derive(Debug)]
pub struct BiasActivation {
    activation: Box<dyn Op>,
    pub takes_bias: bool,
}

impl BiasActivation {
    /// The Gelu forms as a fused activation (QuickGelu's `x·σ(αx)` has none).
    pub fn gelu(&self) -> Option<crate::ops::fused::Activation> {
        use crate::ops::activation::{FloatActivation, Formula};
        use crate::ops::fused::Activation;
        match self.activation.downcast_ref::<FloatActivation>()?.formula {
            Formula::Gelu => Some(Activation::Gelu),
            Formula::GeluTanh => Some(Activation::GeluTanh),
            _ => None,
        }
    }
}

/// Gelu variants map to ONNX Gelu (exact or tanh); QuickGelu `x·σ(αx)` is ONNX Swish.
fn gelu_family(attrs: Vec<(&str, Attr)>, takes_bias: bool) -> Result<Box<dyn Op>> {
    let op_type = if attrs.iter().any(|(n, _)| *n == "alpha") { "Swish" } else { "Gelu" };
    Ok(Box::new(BiasActivation { activation: build_standard(op_type, 24, attrs)?, takes_bias }))
}

/// `x + bias` with `bias` repeated along the last axis of `x`.
fn add_last_axis_bias(x: &Tensor, bias: &Tensor, op: &str) -> Result<Tensor> {
    let width = x.shape().last().copied().unwrap_or(1);
    if bias.len() != width {
        bail!(Shape, "{op} bias has {} elements but the input's last axis is {width}", bias.len());
    }
    let b = to_real::<f64>(bias)?;
    let mut values = to_real::<f64>(x)?.into_owned();
    for row in values.chunks_exact_mut(width.max(1)) {
        row.iter_mut().zip(b.iter()).for_each(|(v, b)| *v += b);
    }
    from_real(x.dtype(), x.shape().to_vec(), values)
}

impl Op for BiasActivation {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        match opt_input(inputs, 1).filter(|_| self.takes_bias) {
            Some(bias) => self.activation.eval(&[Some(&add_last_axis_bias(x, bias, "Gelu")?)]),
            None => self.activation.eval(&[Some(x)]),
        }
    }
}

/// `LayerNorm(input + skip + bias)` over the last axis (inputs: input, skip, gamma, beta, bias);
/// extra outputs are the mean, the inverse standard deviation, and the pre-normalisation sum.
/// The simplified form is RMSNorm without beta (inputs: input, skip, gamma, bias) and no mean.
#[derive(Debug)]
pub struct SkipLayerNorm {
    pub epsilon: f64,
    pub simplified: bool,
}

fn build_skip_layer_norm(ctx: &BuildCtx, simplified: bool) -> Result<Box<dyn Op>> {
    Ok(Box::new(SkipLayerNorm { epsilon: f64::from(ctx.attrs.float_or("epsilon", 1e-12)?), simplified }))
}

impl SkipLayerNorm {
    /// The input indices of beta and bias (beta: none in the simplified form).
    pub fn beta_bias(&self) -> (Option<usize>, usize) {
        if self.simplified {
            (None, 3)
        } else {
            (Some(3), 4)
        }
    }
}

impl Op for SkipLayerNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let stats = x.shape.as_ref().map(|s| {
            let mut s = s.clone();
            if let Some(last) = s.last_mut() {
                *last = Dim::Known(1);
            }
            s
        });
        let stat = Fact { dtype: Some(crate::ir::DType::F32), shape: stats, value: None };
        Ok(vec![same_as_input(inputs)?.remove(0), stat.clone(), stat, same_as_input(inputs)?.remove(0)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, skip, gamma) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        wants_f64("SkipLayerNormalization", x.dtype())?;
        let width = x.shape().last().copied().unwrap_or(0);
        let rows = x.len().checked_div(width).unwrap_or(0);
        let per_row = |t: Option<&Tensor>, name: &str| -> Result<Option<Vec<f64>>> {
            match t {
                Some(t) if t.len() != width => {
                    bail!(Shape, "SkipLayerNormalization {name} has {} elements, expected {width}", t.len())
                }
                Some(t) => Ok(Some(to_real::<f64>(t)?.into_owned())),
                None => Ok(None),
            }
        };
        let gamma = per_row(Some(gamma), "gamma")?.unwrap_or_default();
        let (beta_at, bias_at) = self.beta_bias();
        let beta = per_row(beta_at.and_then(|i| opt_input(inputs, i)), "beta")?;
        let bias = per_row(opt_input(inputs, bias_at), "bias")?;
        // skip is [batch, seq, hidden] or a broadcastable [seq, hidden] / [1, seq, hidden].
        if skip.is_empty() || x.len() % skip.len() != 0 || skip.shape().last() != x.shape().last() {
            bail!(Shape, "SkipLayerNormalization skip shape {:?} does not fit input {:?}", skip.shape(), x.shape());
        }
        let (xs, ss) = (to_real::<f64>(x)?, to_real::<f64>(skip)?);
        let mut sum = try_vec(x.len(), 0f64)?;
        let mut out = try_vec(x.len(), 0f64)?;
        let (mut means, mut inv_stds) = (try_vec(rows, 0f32)?, try_vec(rows, 0f32)?);
        for r in 0..rows {
            let span = r * width..(r + 1) * width;
            let skip_start = (r * width) % ss.len();
            let row = &mut sum[span.clone()];
            for (j, v) in row.iter_mut().enumerate() {
                *v = xs[r * width + j] + ss[skip_start + j] + bias.as_ref().map_or(0.0, |b| b[j]);
            }
            let mean = if self.simplified { 0.0 } else { row.iter().sum::<f64>() / width as f64 };
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / width as f64;
            let inv_std = 1.0 / (var + self.epsilon).sqrt();
            for (j, o) in out[span].iter_mut().enumerate() {
                *o = (row[j] - mean) * inv_std * gamma[j] + beta.as_ref().map_or(0.0, |b| b[j]);
            }
            means[r] = mean as f32;
            inv_stds[r] = inv_std as f32;
        }
        let mut stat_shape = x.shape().to_vec();
        if let Some(last) = stat_shape.last_mut() {
            *last = 1;
        }
        Ok(vec![
            from_real(x.dtype(), x.shape().to_vec(), out)?,
            Tensor::new(stat_shape.clone(), means)?,
            Tensor::new(stat_shape, inv_stds)?,
            from_real(x.dtype(), x.shape().to_vec(), sum)?,
        ])
    }
}

/// onnxruntime's fused self-attention: `X·W + bias` split into Q, K, V, then multi-head
/// attention with an optional key mask and causal (`unidirectional`) masking.
#[derive(Debug)]
pub struct PackedAttention {
    pub num_heads: usize,
    pub causal: bool,
    pub scale: Option<f64>,
    pub mask_filter_value: f64,
    pub qkv_sizes: Option<[usize; 3]>,
}

fn build_attention(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let num_heads = a.req_int("num_heads")?;
    if num_heads <= 0 {
        bail!(InvalidModel, "Attention num_heads must be positive, got {num_heads}");
    }
    for unsupported in ["do_rotary", "past_present_share_buffer"] {
        if a.int_or(unsupported, 0)? != 0 {
            bail!(Unsupported, "com.microsoft Attention with {unsupported} is not supported");
        }
    }
    let qkv_sizes = match a.ints("qkv_hidden_sizes")? {
        None => None,
        Some(s) if s.len() == 3 && s.iter().all(|&v| v > 0) => Some([s[0] as usize, s[1] as usize, s[2] as usize]),
        Some(s) => bail!(InvalidModel, "Attention qkv_hidden_sizes must be three positive sizes, got {s:?}"),
    };
    Ok(Box::new(PackedAttention {
        num_heads: num_heads as usize,
        causal: a.int_or("unidirectional", 0)? != 0,
        scale: a.float("scale")?.map(f64::from).filter(|&s| s != 0.0),
        mask_filter_value: f64::from(a.float_or("mask_filter_value", -10000.0)?),
        qkv_sizes,
    }))
}

/// The additive key bias `[batch, queries, keys]` of onnxruntime's attention ops from a
/// `mask_index` / `key_padding_mask`: 1-D end positions (`[batch]`) or end and start positions
/// (`[2*batch]`), or a 0/1 mask of shape `[batch, keys]` or `[batch, queries, keys]`. Masked keys
/// get `filter`; with `causal`, keys after the query's position (aligned to the last keys) get
/// another `filter`.
pub(crate) fn mask_bias(
    mask: Option<(&[i64], &[usize])>,
    dims: (usize, usize, usize),
    filter: f64,
    causal: bool,
    op: &str,
) -> Result<Vec<f64>> {
    let (batch, seq, keys) = dims;
    let past = keys.saturating_sub(seq);
    let mut bias = try_vec(batch * seq * keys, 0f64)?;
    for b in 0..batch {
        for i in 0..seq {
            for j in 0..keys {
                let keep = match mask {
                    None => true,
                    Some((m, [n])) if *n == batch => (j as i64) < m[b],
                    Some((m, [n])) if *n == 2 * batch => (j as i64) < m[b] && (j as i64) >= m[batch + b],
                    Some((m, [mb, mk])) if (*mb, *mk) == (batch, keys) => m[b * keys + j] > 0,
                    Some((m, [mb, ms, mk])) if (*mb, *ms, *mk) == (batch, seq, keys) => m[(b * seq + i) * keys + j] > 0,
                    Some((_, shape)) => {
                        bail!(Unsupported, "com.microsoft {op} mask of shape {shape:?} is not supported")
                    }
                };
                let mut x = if keep { 0.0 } else { filter };
                if causal && j > i + past {
                    x += filter;
                }
                bias[(b * seq + i) * keys + j] = x;
            }
        }
    }
    Ok(bias)
}

impl Op for PackedAttention {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let v_size = match (self.qkv_sizes, w.shape.as_ref().and_then(|s| s.get(1)).and_then(Dim::known)) {
            (Some([_, _, v]), _) => Dim::Known(v),
            (None, Some(n)) => Dim::Known(n / 3),
            _ => Dim::Unknown,
        };
        let shape = x.shape.as_ref().filter(|s| s.len() == 3).map(|s| vec![s[0].clone(), s[1].clone(), v_size]);
        Ok(vec![Fact { dtype: x.dtype, shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        wants_f64("Attention", x.dtype())?;
        if opt_input(inputs, 4).is_some() || opt_input(inputs, 5).is_some() {
            bail!(Unsupported, "com.microsoft Attention with past state or attention_bias is not supported");
        }
        let (&[batch, seq, hidden_in], &[w_in, w_out]) = (x.shape(), w.shape()) else {
            bail!(Shape, "Attention input must be 3-D and weights 2-D, got {:?} and {:?}", x.shape(), w.shape());
        };
        let [qs, ks, vs] = self.qkv_sizes.unwrap_or([w_out / 3; 3]);
        let h = self.num_heads;
        if w_in != hidden_in || qs + ks + vs != w_out || qs != ks || qs % h != 0 || vs % h != 0 {
            bail!(Shape, "Attention weights {:?} do not fit input {:?} with {h} heads", w.shape(), x.shape());
        }
        let rows = batch * seq;
        let mut qkv = try_vec(rows * w_out, 0f64)?;
        if let Some(bias) = opt_input(inputs, 2) {
            if bias.len() != w_out {
                bail!(Shape, "Attention bias has {} elements, expected {w_out}", bias.len());
            }
            let b = to_real::<f64>(bias)?;
            qkv.chunks_exact_mut(w_out).for_each(|row| row.copy_from_slice(&b));
        }
        gemm(false, false, rows, w_out, hidden_in, &to_real::<f64>(x)?, &to_real::<f64>(w)?, &mut qkv)?;
        // Per-head [batch, heads, seq, size] copies of the Q, K and V column blocks.
        let split = |start: usize, size: usize| -> Result<Vec<f64>> {
            let d = size / h;
            let mut out = try_vec(rows * size, 0f64)?;
            for b in 0..batch {
                for s in 0..seq {
                    for head in 0..h {
                        let src = (b * seq + s) * w_out + start + head * d;
                        let dst = ((b * h + head) * seq + s) * d;
                        out[dst..dst + d].copy_from_slice(&qkv[src..src + d]);
                    }
                }
            }
            Ok(out)
        };
        let (q, k, v) = (split(0, qs)?, split(qs, ks)?, split(qs + ks, vs)?);
        let mask = opt_input(inputs, 3).map(|m| m.to_i64_vec()).transpose()?;
        let mask = mask.as_deref().zip(opt_input(inputs, 3).map(|m| m.shape()));
        let bias = mask_bias(mask, (batch, seq, seq), self.mask_filter_value, self.causal, "Attention")?;
        let (d, dv) = (qs / h, vs / h);
        let scale = self.scale.unwrap_or(1.0 / (d as f64).sqrt());
        let dims = HeadDims { sq: seq, skv: seq, d, dv };
        let mut y = try_vec(batch * h * seq * dv, 0f64)?;
        let mut scores = try_vec(seq * seq, 0f64)?;
        for b in 0..batch {
            let head_bias = &bias[b * seq * seq..(b + 1) * seq * seq];
            for head in 0..h {
                let n = b * h + head;
                attend_head(
                    dims,
                    &q[n * seq * d..(n + 1) * seq * d],
                    &k[n * seq * d..(n + 1) * seq * d],
                    &v[n * seq * dv..(n + 1) * seq * dv],
                    head_bias,
                    scale,
                    0.0,
                    Capture::Scores,
                    Rounding::Exact,
                    &mut scores,
                    &mut y[n * seq * dv..(n + 1) * seq * dv],
                )?;
            }
        }
        Ok(vec![from_real(x.dtype(), vec![batch, seq, vs], merge_heads(&y, batch, h, seq, dv)?)?])
    }
}

/// Conv followed by an activation named by the `activation` attribute.
#[derive(Debug)]
struct FusedConv {
    conv: Box<dyn Op>,
    activation: Option<Box<dyn Op>>,
}

fn build_fused_conv(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let conv_attrs = Attributes::new(
        a.iter().filter(|(n, _)| !n.starts_with("activation")).map(|(n, v)| (n.to_string(), v.clone())).collect(),
    );
    let conv_ctx =
        BuildCtx { op_type: "Conv", domain: "", opset: 11, attrs: &conv_attrs, num_inputs: 3, num_outputs: 1 };
    let conv = match super::registry().get("", "Conv") {
        Some(builder) => builder(&conv_ctx)?,
        None => bail!(Unsupported, "Conv is not registered"),
    };
    let params = a.floats_or("activation_params", Vec::new())?;
    let param = |i: usize, default: f32| params.get(i).copied().unwrap_or(default);
    let activation = match a.string_or("activation", String::new())?.as_str() {
        "" | "Identity" => None,
        "Relu" => Some(build_standard("Relu", 14, vec![])?),
        "Sigmoid" => Some(build_standard("Sigmoid", 13, vec![])?),
        "Tanh" => Some(build_standard("Tanh", 13, vec![])?),
        "LeakyRelu" => Some(build_standard("LeakyRelu", 16, vec![("alpha", Attr::Float(param(0, 0.01)))])?),
        "HardSigmoid" => {
            let attrs = vec![("alpha", Attr::Float(param(0, 0.2))), ("beta", Attr::Float(param(1, 0.5)))];
            Some(build_standard("HardSigmoid", 6, attrs)?)
        }
        // Clip's bounds are attributes before opset 11.
        "Clip" => {
            let attrs = vec![("min", Attr::Float(param(0, f32::MIN))), ("max", Attr::Float(param(1, f32::MAX)))];
            Some(build_standard("Clip", 6, attrs)?)
        }
        other => bail!(Unsupported, "FusedConv activation '{other}' is not supported"),
    };
    Ok(Box::new(FusedConv { conv, activation }))
}

impl Op for FusedConv {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        self.conv.infer(&inputs[..inputs.len().min(3)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if opt_input(inputs, 3).is_some() {
            bail!(Unsupported, "FusedConv with a sum input (Z) is not supported");
        }
        let y = self.conv.eval(&inputs[..inputs.len().min(3)])?;
        match &self.activation {
            Some(act) => act.eval(&[y.first()]),
            None => Ok(y),
        }
    }
}

/// BERT's embeddings as onnxruntime fuses them: `LayerNorm(word[input_ids] + position[p] +
/// segment[segment_ids])` over the hidden axis, where `p` is the position in the sequence or
/// `position_ids`. Outputs: the normalised sum, `mask_index` (the number of 1s in each row of
/// `mask`, 0 without one) and the sum before normalisation.
#[derive(Debug)]
struct EmbedLayerNorm {
    epsilon: f64,
}

impl Op for EmbedLayerNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (ids, words) = (input(inputs, 0)?, input(inputs, 2)?);
        let hidden = words.shape.as_ref().and_then(|s| s.get(1).cloned()).unwrap_or(Dim::Unknown);
        let shape = ids.shape.as_ref().filter(|s| s.len() == 2);
        let out =
            Fact { dtype: words.dtype, shape: shape.map(|s| vec![s[0].clone(), s[1].clone(), hidden]), value: None };
        let mask = Fact { dtype: Some(DType::I32), shape: shape.map(|s| vec![s[0].clone()]), value: None };
        Ok(vec![out.clone(), mask, out])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "EmbedLayerNormalization";
        let (ids, words, positions) = (input(inputs, 0)?, input(inputs, 2)?, input(inputs, 3)?);
        let (gamma, beta) = (input(inputs, 5)?, input(inputs, 6)?);
        wants_f64(OP, words.dtype())?;
        let (&[batch, seq], &[vocab, hidden]) = (ids.shape(), words.shape()) else {
            bail!(
                Shape,
                "{OP}: input_ids must be 2-D and word_embedding 2-D, got {:?} and {:?}",
                ids.shape(),
                words.shape()
            );
        };
        let table = |t: &Tensor, what: &str| -> Result<(Vec<f64>, usize)> {
            match t.shape() {
                &[rows, h] if h == hidden => Ok((to_real::<f64>(t)?.into_owned(), rows)),
                s => bail!(Shape, "{OP}: {what} has shape {s:?}, expected [rows, {hidden}]"),
            }
        };
        let ids_like = |t: Option<&Tensor>, what: &str, broadcast: bool| -> Result<Option<Vec<i64>>> {
            let Some(t) = t else { return Ok(None) };
            let fits = t.shape() == [batch, seq] || (broadcast && t.shape() == [1, seq]);
            if !fits {
                bail!(Shape, "{OP}: {what} has shape {:?}, expected [{batch}, {seq}]", t.shape());
            }
            Ok(Some(t.to_i64_vec()?))
        };
        // An f32 vocabulary is read in place: converting all of it would cost more than the op.
        let word_f32 = words.as_slice::<f32>().ok();
        let word_table = if word_f32.is_some() { Vec::new() } else { table(words, "word_embedding")?.0 };
        let (position_table, position_rows) = table(positions, "position_embedding")?;
        let segment = match (opt_input(inputs, 1), opt_input(inputs, 4)) {
            (Some(ids), Some(t)) => {
                Some((ids_like(Some(ids), "segment_ids", false)?.unwrap_or_default(), table(t, "segment_embedding")?))
            }
            (None, None) => None,
            _ => bail!(InvalidModel, "{OP}: segment_ids and segment_embedding come together"),
        };
        let position_ids = ids_like(opt_input(inputs, 8), "position_ids", true)?;
        let per_hidden = |t: &Tensor, what: &str| -> Result<Vec<f64>> {
            if t.len() != hidden {
                bail!(Shape, "{OP}: {what} has {} elements, expected {hidden}", t.len());
            }
            Ok(to_real::<f64>(t)?.into_owned())
        };
        let (gamma, beta) = (per_hidden(gamma, "gamma")?, per_hidden(beta, "beta")?);
        let row_of = |id: i64, rows: usize, what: &str| -> Result<usize> {
            match usize::try_from(id) {
                Ok(r) if r < rows => Ok(r),
                _ => bail!(Runtime, "{OP}: {what} {id} is out of range for {rows} rows"),
            }
        };
        let word_ids = ids.to_i64_vec()?;
        let mut sum = try_vec(batch * seq * hidden, 0f64)?;
        let mut out = try_vec(batch * seq * hidden, 0f64)?;
        for (i, &id) in word_ids.iter().enumerate() {
            let w = row_of(id, vocab, "input id")? * hidden;
            let p = match &position_ids {
                Some(p) => row_of(p[i % p.len()], position_rows, "position id")?,
                None => row_of((i % seq) as i64, position_rows, "position")?,
            } * hidden;
            let row = &mut sum[i * hidden..(i + 1) * hidden];
            for (j, v) in row.iter_mut().enumerate() {
                *v = word_f32.map_or_else(|| word_table[w + j], |t| f64::from(t[w + j])) + position_table[p + j];
            }
            if let Some((segment_ids, (segment_table, segment_rows))) = &segment {
                let s = row_of(segment_ids[i], *segment_rows, "segment id")? * hidden;
                row.iter_mut().zip(&segment_table[s..s + hidden]).for_each(|(v, e)| *v += e);
            }
            let mean = row.iter().sum::<f64>() / hidden as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / hidden as f64;
            let inv_std = 1.0 / (var + self.epsilon).sqrt();
            for (j, o) in out[i * hidden..(i + 1) * hidden].iter_mut().enumerate() {
                *o = (row[j] - mean) * inv_std * gamma[j] + beta[j];
            }
        }
        let mask_index: Vec<i32> = match ids_like(opt_input(inputs, 7), "mask", false)? {
            Some(mask) => mask.chunks(seq.max(1)).map(|row| row.iter().filter(|&&v| v == 1).count() as i32).collect(),
            None => vec![0; batch],
        };
        let shape = vec![batch, seq, hidden];
        Ok(vec![
            from_real(words.dtype(), shape.clone(), out)?,
            Tensor::new(vec![batch], mask_index)?,
            from_real(words.dtype(), shape, sum)?,
        ])
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // numpy's printed digits, pasted as is
mod tests {
    use super::*;
    use crate::ops::activation::test_util::assert_close;
    use crate::ErrorKind;

    fn build(op_type: &str, attrs: Vec<(&str, Attr)>) -> Result<Box<dyn Op>> {
        let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
        let ctx = BuildCtx { op_type, domain: MS, opset: 1, attrs: &attrs, num_inputs: 1, num_outputs: 1 };
        (crate::ops::registry().get(MS, op_type).expect("registered"))(&ctx)
    }

    fn run(op: &dyn Op, inputs: &[&Tensor]) -> Vec<f32> {
        let inputs: Vec<_> = inputs.iter().map(|t| Some(*t)).collect();
        op.eval(&inputs).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
    }

    fn t(shape: Vec<usize>, v: &[f32]) -> Tensor {
        Tensor::new(shape, v.to_vec()).unwrap()
    }

    // Expected values from numpy: x·0.5·(1+erf(x/√2)), its tanh form, and x·σ(1.702x).
    #[test]
    fn gelu_variants() {
        let x = t(vec![1, 2], &[-1.0, 0.5]);
        let bias = t(vec![2], &[0.5, 0.5]);
        assert_close(&run(build("Gelu", vec![]).unwrap().as_ref(), &[&x]), &[-0.15865526, 0.34573123]);
        assert_close(&run(build("BiasGelu", vec![]).unwrap().as_ref(), &[&x, &bias]), &[-0.15426877, 0.8413447]);
        assert_close(&run(build("FastGelu", vec![]).unwrap().as_ref(), &[&x, &bias]), &[-0.15428599, 0.841192]);
        assert_close(&run(build("QuickGelu", vec![]).unwrap().as_ref(), &[&x]), &[-0.15420423, 0.35038844]);
        assert!(build("BiasGelu", vec![]).unwrap().eval(&[Some(&x), Some(&t(vec![3], &[0.0; 3]))]).is_err());
    }

    // Row [1, 2, 3] + skip [1, 0, -1] + bias 0 = [2, 2, 2] normalises to zeros, leaving beta.
    #[test]
    fn skip_layer_norm() {
        let op = build("SkipLayerNormalization", vec![("epsilon", Attr::Float(1e-5))]).unwrap();
        let (x, skip) =
            (t(vec![1, 2, 3], &[1.0, 2.0, 3.0, 0.0, 0.0, 3.0]), t(vec![1, 2, 3], &[1.0, 0.0, -1.0, 0.0, 0.0, 0.0]));
        let (gamma, beta) = (t(vec![3], &[1.0, 2.0, 1.0]), t(vec![3], &[0.5, 0.5, 0.5]));
        let out = op.eval(&[Some(&x), Some(&skip), Some(&gamma), Some(&beta)]).unwrap();
        // Row 2 [0, 0, 3]: mean 1, var 2 -> [-0.7071050, -0.7071050, 1.4142100] (eps 1e-5).
        assert_close(out[0].as_slice::<f32>().unwrap(), &[0.5, 0.5, 0.5, -0.20710501, -0.91421003, 1.91421003]);
        assert_close(out[3].as_slice::<f32>().unwrap(), &[2.0, 2.0, 2.0, 0.0, 0.0, 3.0]);
    }

    // hidden 2, one head, identity Q/K/V weights, key 1 masked by a 1-D length of 1: every
    // query sees only key 0, so each output row equals input row 0.
    #[test]
    fn packed_attention_with_lengths() {
        let op = build("Attention", vec![("num_heads", Attr::Int(1))]).unwrap();
        let x = t(vec![1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let mut w = vec![0.0f32; 12];
        for block in 0..3 {
            w[block * 2] = 1.0;
            w[6 + block * 2 + 1] = 1.0;
        }
        let w = t(vec![2, 6], &w);
        let bias = t(vec![6], &[0.0; 6]);
        let mask = Tensor::new(vec![1], vec![1i32]).unwrap();
        let out = op.eval(&[Some(&x), Some(&w), Some(&bias), Some(&mask)]).unwrap();
        assert_close(out[0].as_slice::<f32>().unwrap(), &[1.0, 2.0, 1.0, 2.0]);
        assert_eq!(build("Attention", vec![]).unwrap_err().kind, ErrorKind::InvalidModel);
    }

    #[test]
    fn fused_conv_applies_activation() {
        let attrs = vec![("activation", Attr::String("Relu".into()))];
        let op = build("FusedConv", attrs).unwrap();
        let x = t(vec![1, 1, 1, 3], &[1.0, -2.0, 3.0]);
        let w = t(vec![1, 1, 1, 1], &[-1.0]);
        assert_close(&run(op.as_ref(), &[&x, &w]), &[0.0, 2.0, 0.0]);
        assert!(build("FusedConv", vec![("activation", Attr::String("Gelu".into()))]).is_err());
    }
    // Ids [1, 0] pick word rows [0, 3] and [1, 0] (positions add zeros); with eps 0 they
    // normalise to [-1, 1] and [1, -1], then gamma 2 and beta 0.5. The mask row has one 1.
    #[test]
    fn embed_layer_norm_and_bad_ids() {
        let op = build("EmbedLayerNormalization", vec![("epsilon", Attr::Float(0.0))]).unwrap();
        let ids = Tensor::new(vec![1, 2], vec![1i32, 0]).unwrap();
        let words = t(vec![2, 2], &[1.0, 0.0, 0.0, 3.0]);
        let positions = t(vec![2, 2], &[0.0, 0.0, 0.0, 0.0]);
        let (gamma, beta) = (t(vec![2], &[2.0, 2.0]), t(vec![2], &[0.5, 0.5]));
        let mask = Tensor::new(vec![1, 2], vec![1i32, 0]).unwrap();
        let args = [Some(&ids), None, Some(&words), Some(&positions), None, Some(&gamma), Some(&beta), Some(&mask)];
        let out = op.eval(&args).unwrap();
        assert_close(out[0].as_slice::<f32>().unwrap(), &[-1.5, 2.5, 2.5, -1.5]);
        assert_eq!(out[1].as_slice::<i32>().unwrap(), &[1]);
        assert_close(out[2].as_slice::<f32>().unwrap(), &[0.0, 3.0, 1.0, 0.0]);
        let bad = Tensor::new(vec![1, 2], vec![2i32, 0]).unwrap();
        let e = op.eval(&[Some(&bad), None, Some(&words), Some(&positions), None, Some(&gamma), Some(&beta)]);
        assert_eq!(e.unwrap_err().kind, ErrorKind::Runtime);
        let e = op.eval(&[
            Some(&ids),
            None,
            Some(&words),
            Some(&t(vec![2, 3], &[0.0; 6])),
            None,
            Some(&gamma),
            Some(&beta),
        ]);
        assert_eq!(e.unwrap_err().kind, ErrorKind::Shape);
        let e = op.eval(&[Some(&ids), Some(&ids), Some(&words), Some(&positions), None, Some(&gamma), Some(&beta)]);
        assert_eq!(e.unwrap_err().kind, ErrorKind::InvalidModel);
    }
}
