//! ONNX Attention (opset 23, 24): scaled dot-product attention over 3-D `[batch, seq, heads*size]`
//! or 4-D `[batch, heads, seq, size]` inputs, with grouped-query heads, boolean or additive masks,
//! bottom-right causal masking, softcap, an internal KV cache (past/present) and, from 24, an
//! external cache described by `nonpad_kv_seqlen`.
//!
//! [`attend_head`] is the per-head kernel (QKᵀ, softcap, bias, softmax, ·V) that the contrib
//! `com.microsoft` Attention also runs.

use super::matmul::gemm;
use super::real::{from_real, to_real, wants_f64};
use super::softmax::softmax_in_place;
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::try_vec;
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("Attention", build);
}

/// Which intermediate the optional fourth output exposes (values as in the reference
/// implementation: 0 and 1 the QK product after softcap, 2 with the mask added, 3 after softmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capture {
    Scores,
    WithBias,
    Probabilities,
}

#[derive(Debug)]
pub struct Attention {
    scale: Option<f64>,
    is_causal: bool,
    q_num_heads: Option<usize>,
    kv_num_heads: Option<usize>,
    softcap: f64,
    capture: Capture,
    /// Opset 25's sliding window: how many keys before / after the query position it may attend
    /// (negative: unbounded).
    left_window: i64,
    right_window: i64,
}

fn positive(ctx: &BuildCtx, name: &str) -> Result<Option<usize>> {
    match ctx.attrs.int(name)? {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as usize)),
        Some(n) => bail!(InvalidModel, "{} attribute {name} must be positive, got {n}", ctx.op_type),
    }
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 23 {
        return Err(ctx.unsupported_version());
    }
    let a = ctx.attrs;
    let capture = match a.int_or("qk_matmul_output_mode", 0)? {
        0 | 1 => Capture::Scores,
        2 => Capture::WithBias,
        3 => Capture::Probabilities,
        m => bail!(Unsupported, "Attention qk_matmul_output_mode {m} is not one of 0, 1, 2, 3"),
    };
    // softmax_precision only asks for at least that precision; the softmax always runs in f64.
    Ok(Box::new(Attention {
        scale: a.float("scale")?.map(f64::from),
        is_causal: a.int_or("is_causal", 0)? != 0,
        q_num_heads: positive(ctx, "q_num_heads")?,
        kv_num_heads: positive(ctx, "kv_num_heads")?,
        softcap: f64::from(a.float_or("softcap", 0.0)?),
        capture,
        left_window: if ctx.opset >= 25 { a.int_or("left_window_size", -1)? } else { -1 },
        right_window: if ctx.opset >= 25 { a.int_or("right_window_size", -1)? } else { -1 },
    }))
}

/// The precision the spec's intermediates have: those of the input type. Rounding to it where a
/// kernel working in that type would round keeps float16/bfloat16 results on the reference's
/// values rather than an ulp away.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rounding {
    Exact,
    F32,
    F16,
    BF16,
}

impl Rounding {
    pub fn of(dtype: DType) -> Rounding {
        match dtype {
            DType::F32 => Rounding::F32,
            DType::F16 => Rounding::F16,
            DType::BF16 => Rounding::BF16,
            _ => Rounding::Exact,
        }
    }

    pub fn apply(self, x: f64) -> f64 {
        match self {
            Rounding::Exact => x,
            Rounding::F32 => x as f32 as f64,
            Rounding::F16 => half::f16::from_f64(x).to_f64(),
            Rounding::BF16 => half::bf16::from_f64(x).to_f64(),
        }
    }

    /// Softmax of one row with each step rounded. Narrow types' sums accumulate in f32, except
    /// bfloat16's, which round after every addition.
    pub fn softmax(self, row: &mut [f64]) {
        if matches!(self, Rounding::Exact | Rounding::F32) {
            softmax_in_place(row);
            row.iter_mut().for_each(|x| *x = self.apply(*x));
            return;
        }
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = self.apply(self.apply(*x - max).exp());
            sum = if self == Rounding::BF16 { self.apply(sum + *x) } else { sum + *x };
        }
        let sum = self.apply(sum);
        row.iter_mut().for_each(|x| *x = self.apply(*x / sum));
    }
}

/// Sizes of one head's problem: `sq` queries and `skv` keys of width `d`, values of width `dv`.
#[derive(Debug, Clone, Copy)]
pub struct HeadDims {
    pub sq: usize,
    pub skv: usize,
    pub d: usize,
    pub dv: usize,
}

/// One head of attention: `out = softmax(softcap(scale · q·kᵀ) + bias) · v`, with `q` `[sq, d]`,
/// `k` `[skv, d]`, `v` `[skv, dv]`, `bias` `[sq, skv]` and `out` `[sq, dv]` (accumulated into, so
/// pass zeros). A query row whose bias is all -inf attends nothing and gets zeros, not NaN.
/// `scores` (`[sq, skv]`) is scratch that ends holding the `capture` intermediate. Intermediates
/// round to `round`'s precision.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    dims: HeadDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bias: &[f64],
    scale: f64,
    softcap: f64,
    capture: Capture,
    round: Rounding,
    scores: &mut [f64],
    out: &mut [f64],
) -> Result<()> {
    let HeadDims { sq, skv, d, dv } = dims;
    if bias.len() < sq * skv || scores.len() < sq * skv {
        bail!(Runtime, "attention head buffers are shorter than {sq}x{skv}");
    }
    scores.iter_mut().for_each(|s| *s = 0.0);
    gemm(false, true, sq, skv, d, q, k, scores)?;
    let mut probabilities = try_vec(sq * skv, 0f64)?;
    for i in 0..sq {
        let row = &mut scores[i * skv..(i + 1) * skv];
        let row_bias = &bias[i * skv..(i + 1) * skv];
        let p = &mut probabilities[i * skv..(i + 1) * skv];
        for ((s, &b), p) in row.iter_mut().zip(row_bias).zip(p.iter_mut()) {
            *s = round.apply(*s * scale);
            if softcap > 0.0 {
                *s = round.apply(softcap * round.apply(round.apply(*s / softcap).tanh()));
            }
            *p = round.apply(*s + b);
            if capture == Capture::WithBias {
                *s = *p;
            }
        }
        if row_bias.iter().all(|&b| b == f64::NEG_INFINITY) {
            p.iter_mut().for_each(|x| *x = 0.0);
        } else {
            round.softmax(p);
        }
        if capture == Capture::Probabilities {
            row.copy_from_slice(p);
        }
    }
    gemm(false, false, sq, dv, skv, &probabilities, v, out)
}

/// `[batch, seq, heads*size]` laid out as `[batch, heads, seq, size]`.
fn split_heads(x: &[f64], batch: usize, seq: usize, heads: usize, size: usize) -> Result<Vec<f64>> {
    let mut out = try_vec(x.len(), 0f64)?;
    for b in 0..batch {
        for s in 0..seq {
            for h in 0..heads {
                let src = ((b * seq + s) * heads + h) * size;
                let dst = ((b * heads + h) * seq + s) * size;
                out[dst..dst + size].copy_from_slice(&x[src..src + size]);
            }
        }
    }
    Ok(out)
}

/// The inverse of [`split_heads`].
pub fn merge_heads(x: &[f64], batch: usize, heads: usize, seq: usize, size: usize) -> Result<Vec<f64>> {
    let mut out = try_vec(x.len(), 0f64)?;
    for b in 0..batch {
        for h in 0..heads {
            for s in 0..seq {
                let src = ((b * heads + h) * seq + s) * size;
                let dst = ((b * seq + s) * heads + h) * size;
                out[dst..dst + size].copy_from_slice(&x[src..src + size]);
            }
        }
    }
    Ok(out)
}

/// Q, K or V as `[batch, heads, seq, size]` values, with those four sizes.
struct Heads {
    values: Vec<f64>,
    dims: [usize; 4],
}

/// What a fast kernel needs of an [`Attention`] without softcap or sliding window (`None` from
/// [`Attention::plain`] otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlainAttention {
    pub scale: Option<f64>,
    pub is_causal: bool,
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
}

impl Attention {
    /// Attention over 3-D inputs with `heads` query and key/value heads, scaled by `scale`: the
    /// node the attention fusion pass writes.
    pub fn multi_head(heads: usize, scale: f64) -> Attention {
        Attention {
            scale: Some(scale),
            is_causal: false,
            q_num_heads: Some(heads),
            kv_num_heads: Some(heads),
            softcap: 0.0,
            capture: Capture::Scores,
            left_window: -1,
            right_window: -1,
        }
    }

    pub fn plain(&self) -> Option<PlainAttention> {
        let plain = self.softcap == 0.0 && self.left_window < 0 && self.right_window < 0;
        plain.then_some(PlainAttention {
            scale: self.scale,
            is_causal: self.is_causal,
            q_num_heads: self.q_num_heads,
            kv_num_heads: self.kv_num_heads,
        })
    }

    fn heads(&self, t: &Tensor, name: &str, heads: Option<usize>) -> Result<Heads> {
        let values = to_real::<f64>(t)?.into_owned();
        match *t.shape() {
            [b, h, s, d] => Ok(Heads { values, dims: [b, h, s, d] }),
            [b, s, hidden] => {
                let Some(h) = heads else {
                    bail!(InvalidModel, "Attention with 3-D inputs needs the q_num_heads and kv_num_heads attributes");
                };
                if hidden % h != 0 {
                    bail!(Shape, "Attention {name} hidden size {hidden} is not a multiple of {h} heads");
                }
                let values = split_heads(&values, b, s, h, hidden / h)?;
                Ok(Heads { values, dims: [b, h, s, hidden / h] })
            }
            _ => bail!(Shape, "Attention {name} must be 3-D or 4-D, got shape {:?}", t.shape()),
        }
    }
}

/// Appends `new` `[b, h, s, d]` to `past` `[b, h, p, d]` along the sequence axis.
fn concat_seq(past: Option<&Tensor>, new: Heads, name: &str) -> Result<Heads> {
    let Some(past) = past else { return Ok(new) };
    let [b, h, s, d] = new.dims;
    let p = match *past.shape() {
        [pb, ph, p, pd] if (pb, ph, pd) == (b, h, d) => p,
        _ => bail!(Shape, "Attention past_{name} shape {:?} does not fit {name} heads {:?}", past.shape(), new.dims),
    };
    let past_values = to_real::<f64>(past)?;
    let mut values = try_vec(b * h * (p + s) * d, 0f64)?;
    for (i, chunk) in values.chunks_exact_mut((p + s) * d).enumerate() {
        chunk[..p * d].copy_from_slice(&past_values[i * p * d..(i + 1) * p * d]);
        chunk[p * d..].copy_from_slice(&new.values[i * s * d..(i + 1) * s * d]);
    }
    Ok(Heads { values, dims: [b, h, p + s, d] })
}

/// An attention mask as an additive bias broadcast to `[batch, heads, sq, skv]`; keys past the
/// mask's last dimension are masked, as the spec pads a short mask with -inf / false.
struct Mask {
    bias: Vec<f64>,
    strides: [usize; 4],
    len: usize,
}

impl Mask {
    fn new(t: &Tensor, target: [usize; 4]) -> Result<Mask> {
        let shape = t.shape();
        if shape.is_empty() || shape.len() > 4 {
            bail!(Shape, "Attention attn_mask must have rank 1 to 4, got shape {shape:?}");
        }
        let bias: Vec<f64> = if t.dtype() == DType::Bool {
            t.as_slice::<bool>()?.iter().map(|&keep| if keep { 0.0 } else { f64::NEG_INFINITY }).collect()
        } else {
            to_real::<f64>(t)?.into_owned()
        };
        let padded: Vec<usize> = std::iter::repeat_n(1, 4 - shape.len()).chain(shape.iter().copied()).collect();
        let len = padded[3];
        if len > target[3] {
            bail!(Shape, "Attention attn_mask has {len} keys but there are only {}", target[3]);
        }
        let mut strides = [0; 4];
        let mut step = 1;
        for axis in (0..4).rev() {
            let broadcast = padded[axis] == 1 && axis < 3;
            if !broadcast && axis < 3 && padded[axis] != target[axis] {
                bail!(Shape, "Attention attn_mask shape {shape:?} does not broadcast to {target:?}");
            }
            strides[axis] = if broadcast { 0 } else { step };
            step *= padded[axis];
        }
        Ok(Mask { bias, strides, len })
    }

    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        if j >= self.len {
            return f64::NEG_INFINITY;
        }
        let s = self.strides;
        self.bias[b * s[0] + h * s[1] + i * s[2] + j * s[3]]
    }
}

impl Op for Attention {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dtype = q.dtype;
        let (Some(qs), Some(ks), Some(vs)) = (&q.shape, &k.shape, &v.shape) else {
            return Ok(vec![Fact { dtype, shape: None, value: None }; 4]);
        };
        let past = opt_input(inputs, 4).and_then(|p| p.shape.as_ref()).and_then(|s| s.get(2).cloned());
        let kv_len = |s: &Dim| match (past.as_ref(), s) {
            (None, s) => s.clone(),
            (Some(Dim::Known(p)), Dim::Known(s)) => Dim::Known(p + s),
            _ => Dim::Unknown,
        };
        let div = |x: &Dim, h: Option<usize>| match (x, h) {
            (Dim::Known(x), Some(h)) if h > 0 => Dim::Known(x / h),
            _ => Dim::Unknown,
        };
        let (y, present_k, present_v, qk) = match (qs.len(), ks.len(), vs.len()) {
            (4, 4, 4) => (
                vec![qs[0].clone(), qs[1].clone(), qs[2].clone(), vs[3].clone()],
                vec![ks[0].clone(), ks[1].clone(), kv_len(&ks[2]), ks[3].clone()],
                vec![vs[0].clone(), vs[1].clone(), kv_len(&vs[2]), vs[3].clone()],
                vec![qs[0].clone(), qs[1].clone(), qs[2].clone(), kv_len(&ks[2])],
            ),
            (3, 3, 3) => {
                let (hq, hkv) = (self.q_num_heads, self.kv_num_heads);
                let y_hidden = match (div(&vs[2], hkv), hq) {
                    (Dim::Known(dv), Some(hq)) => Dim::Known(dv * hq),
                    _ => Dim::Unknown,
                };
                let heads = |h: Option<usize>| h.map_or(Dim::Unknown, Dim::Known);
                (
                    vec![qs[0].clone(), qs[1].clone(), y_hidden],
                    vec![ks[0].clone(), heads(hkv), kv_len(&ks[1]), div(&ks[2], hkv)],
                    vec![vs[0].clone(), heads(hkv), kv_len(&vs[1]), div(&vs[2], hkv)],
                    vec![qs[0].clone(), heads(hq), qs[1].clone(), kv_len(&ks[1])],
                )
            }
            _ => bail!(Shape, "Attention Q, K and V must all be 3-D or all 4-D"),
        };
        Ok([y, present_k, present_v, qk].into_iter().map(|s| Fact { dtype, shape: Some(s), value: None }).collect())
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (qt, kt, vt) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        wants_f64("Attention", qt.dtype())?;
        if kt.rank() != qt.rank() || vt.rank() != qt.rank() {
            bail!(
                Shape,
                "Attention Q, K and V must have one rank, got {:?}, {:?}, {:?}",
                qt.shape(),
                kt.shape(),
                vt.shape()
            );
        }
        let (past_k, past_v) = (opt_input(inputs, 4), opt_input(inputs, 5));
        if past_k.is_some() != past_v.is_some() {
            bail!(InvalidModel, "Attention needs past_key and past_value together");
        }
        let q = self.heads(qt, "Q", self.q_num_heads)?;
        let k = concat_seq(past_k, self.heads(kt, "K", self.kv_num_heads)?, "key")?;
        let v = concat_seq(past_v, self.heads(vt, "V", self.kv_num_heads)?, "value")?;
        let [batch, hq, sq, d] = q.dims;
        let [kb, hkv, skv, kd] = k.dims;
        let [vb, vh, vs, dv] = v.dims;
        if kb != batch || vb != batch || kd != d || vh != hkv || vs != skv {
            bail!(Shape, "Attention heads do not fit: Q {:?}, K {:?}, V {:?}", q.dims, k.dims, v.dims);
        }
        if hkv == 0 || hq % hkv != 0 {
            bail!(Shape, "Attention needs q heads ({hq}) to be a multiple of kv heads ({hkv})");
        }
        let group = hq / hkv;
        let past_len = past_k.map_or(0, |p| p.shape()[2]);
        let nonpad = match opt_input(inputs, 6) {
            Some(t) if past_k.is_none() => {
                let lens = t.to_i64_vec()?;
                if lens.len() != batch {
                    bail!(Shape, "Attention nonpad_kv_seqlen has {} entries for batch {batch}", lens.len());
                }
                Some(lens)
            }
            Some(_) => bail!(InvalidModel, "Attention nonpad_kv_seqlen cannot be combined with past_key"),
            None => None,
        };
        let mask = opt_input(inputs, 3).map(|m| Mask::new(m, [batch, hq, sq, skv])).transpose()?;
        // The spec scales Q and K by √scale each (in the input type) before their product.
        let round = Rounding::of(qt.dtype());
        let root_scale = round.apply(self.scale.unwrap_or(1.0 / (d as f64).sqrt()).sqrt());
        let scaled = |x: &mut Heads| x.values.iter_mut().for_each(|v| *v = round.apply(*v * root_scale));
        let (mut q, mut k) = (q, k);
        scaled(&mut q);
        let unscaled_keys = k.values.clone();
        scaled(&mut k);

        let dims = HeadDims { sq, skv, d, dv };
        let mut y = try_vec(batch * hq * sq * dv, 0f64)?;
        let mut qk = try_vec(batch * hq * sq * skv, 0f64)?;
        let mut bias = try_vec(sq * skv, 0f64)?;
        for b in 0..batch {
            let valid_keys = nonpad.as_ref().map(|n| n[b]);
            // Keys that precede this query block: query i attends key j iff j <= i + offset.
            let offset = valid_keys.map_or(past_len as i64, |n| n - sq as i64);
            for h in 0..hq {
                for i in 0..sq {
                    for j in 0..skv {
                        let mut x = mask.as_ref().map_or(0.0, |m| m.at(b, h, i, j));
                        let ahead = j as i64 - (i as i64 + offset);
                        let outside_window = (self.left_window >= 0 && -ahead > self.left_window)
                            || (self.right_window >= 0 && ahead > self.right_window);
                        if (self.is_causal && ahead > 0) || outside_window || valid_keys.is_some_and(|n| j as i64 >= n)
                        {
                            x = f64::NEG_INFINITY;
                        }
                        bias[i * skv + j] = x;
                    }
                }
                let kv = b * hkv + h / group;
                let head = (b * hq + h) * sq;
                attend_head(
                    dims,
                    &q.values[head * d..(head + sq) * d],
                    &k.values[kv * skv * d..(kv + 1) * skv * d],
                    &v.values[kv * skv * dv..(kv + 1) * skv * dv],
                    &bias,
                    1.0,
                    self.softcap,
                    self.capture,
                    round,
                    &mut qk[head * skv..(head + sq) * skv],
                    &mut y[head * dv..(head + sq) * dv],
                )?;
            }
        }
        let dtype = qt.dtype();
        let y = if qt.rank() == 3 {
            from_real(dtype, vec![batch, sq, hq * dv], merge_heads(&y, batch, hq, sq, dv)?)?
        } else {
            from_real(dtype, vec![batch, hq, sq, dv], y)?
        };
        Ok(vec![
            y,
            from_real(dtype, vec![batch, hkv, skv, d], unscaled_keys)?,
            from_real(dtype, vec![batch, hkv, skv, dv], v.values)?,
            from_real(dtype, vec![batch, hq, sq, skv], qk)?,
        ])
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // numpy's printed digits, pasted as is
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::{assert_close, build};
    use crate::ErrorKind;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    // One head, two queries, two keys of width 2; expected values from numpy:
    // softmax(q·kᵀ/√2)·v with the causal mask zeroing key 1 for query 0.
    #[test]
    fn causal_single_head() {
        let op = build("Attention", 23, vec![("is_causal", Attr::Int(1))], 1).unwrap();
        let q = Tensor::new(vec![1, 1, 2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let k = Tensor::new(vec![1, 1, 2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let v = Tensor::new(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let out = op.eval(&[Some(&q), Some(&k), Some(&v)]).unwrap();
        // Query 1: scores [0, 1/√2] -> weights [0.33023845, 0.66976155].
        assert_close(&f32s(&out[0]), &[1.0, 2.0, 2.339_523, 3.339_523]);
        assert_eq!(out[3].shape(), &[1, 1, 2, 2]);
    }

    // Three-D inputs with two query heads sharing one kv head, a boolean mask hiding key 0, and a
    // past cache of one key: each query sees keys 1 and 2 only.
    #[test]
    fn gqa_with_past_and_bool_mask() {
        let attrs = vec![("q_num_heads", Attr::Int(2)), ("kv_num_heads", Attr::Int(1)), ("scale", Attr::Float(1.0))];
        let op = build("Attention", 23, attrs, 3).unwrap();
        let q = Tensor::new(vec![1, 1, 2], vec![1.0f32, -1.0]).unwrap();
        let k = Tensor::new(vec![1, 1, 1], vec![2.0f32]).unwrap();
        let v = Tensor::new(vec![1, 1, 1], vec![10.0f32]).unwrap();
        let mask = Tensor::new(vec![3], vec![false, true, true]).unwrap();
        let past_k = Tensor::new(vec![1, 1, 2, 1], vec![5.0f32, 0.0]).unwrap();
        let past_v = Tensor::new(vec![1, 1, 2, 1], vec![99.0f32, 4.0]).unwrap();
        let out = op.eval(&[Some(&q), Some(&k), Some(&v), Some(&mask), Some(&past_k), Some(&past_v)]).unwrap();
        // Head 0 scores over keys 1, 2: [0, 2] -> weights [0.11920292, 0.88079708] -> 9.2847825;
        // head 1: [0, -2] -> [0.88079708, 0.11920292] -> 4.7152175.
        assert_close(&f32s(&out[0]), &[9.2847825, 4.7152175]);
        assert_eq!(out[1].shape(), &[1, 1, 3, 1]);
        assert_close(&f32s(&out[2]), &[99.0, 4.0, 10.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let op = build("Attention", 23, vec![], 1).unwrap();
        let x = Tensor::new(vec![1, 1, 2], vec![1.0f32, 2.0]).unwrap();
        let err = op.eval(&[Some(&x), Some(&x), Some(&x)]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidModel);
        let q = Tensor::new(vec![1, 3, 1, 1], vec![1.0f32; 3]).unwrap();
        let kv = Tensor::new(vec![1, 2, 1, 1], vec![1.0f32; 2]).unwrap();
        assert!(op.eval(&[Some(&q), Some(&kv), Some(&kv)]).is_err());
        assert!(build("Attention", 22, vec![], 1).is_err());
    }
}
