//! onnxruntime's `com.microsoft` MultiHeadAttention: attention over Q, K, V that the model has
//! already projected, given as separate `[batch, seq, heads*size]` tensors, as packed QKV
//! `[batch, seq, heads, 3, size]`, packed KV `[batch, kv_seq, heads, 2, size]`, or K and V
//! already split into heads (`[batch, heads, kv_seq, size]`). Optional: the projection bias
//! (`[D + D + Dv]`, added to Q, K, V), a key padding mask (lengths or 0/1, masked keys get
//! `mask_filter_value`), an additive `attention_bias` `[batch|1, heads|1, seq, total]`,
//! past key/value appended before the new ones (the present outputs return them), and causal
//! (`unidirectional`) masking aligned to the last keys.

use super::attention::{attend_head, merge_heads, Capture, HeadDims, Rounding};
use super::contrib::mask_bias;
use super::real::{from_real, to_real, wants_f64};
use super::{input, opt_input, BuildCtx, Op};
use crate::ir::tensor::try_vec;
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, Result};

#[derive(Debug)]
pub struct MultiHeadAttention {
    pub num_heads: usize,
    pub causal: bool,
    pub scale: Option<f64>,
    pub mask_filter_value: f64,
}

pub fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let num_heads = a.req_int("num_heads")?;
    if num_heads <= 0 {
        bail!(InvalidModel, "MultiHeadAttention num_heads must be positive, got {num_heads}");
    }
    if ctx.num_outputs > 3 {
        bail!(Unsupported, "com.microsoft MultiHeadAttention's qk output is not supported");
    }
    Ok(Box::new(MultiHeadAttention {
        num_heads: num_heads as usize,
        causal: a.int_or("unidirectional", 0)? != 0,
        scale: a.float("scale")?.map(f64::from).filter(|&s| s != 0.0),
        mask_filter_value: f64::from(a.float_or("mask_filter_value", -10000.0)?),
    }))
}

/// How Q, K and V are given (input shapes, `n` heads of size `h`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QkvForm {
    /// `[b, s, n*h]` each.
    Separate,
    /// Query `[b, s, n, 3, h]`, no key or value.
    PackedQkv,
    /// Query `[b, s, n*h]`, key `[b, kv, n, 2, h]`, no value.
    PackedKv,
    /// Query `[b, s, n*h]`, key and value `[b, n, kv, h]` (already split, no bias).
    SplitKv,
}

/// The form and sizes `[batch, seq, kv_seq, head size, value head size]` of the inputs.
pub fn qkv_form(q: &[usize], k: Option<&[usize]>, v: Option<&[usize]>, n: usize) -> Result<(QkvForm, [usize; 5])> {
    let per_head = |hidden: usize, what: &str| -> Result<usize> {
        if !hidden.is_multiple_of(n) {
            bail!(Shape, "MultiHeadAttention {what} width {hidden} is not a multiple of {n} heads");
        }
        Ok(hidden / n)
    };
    Ok(match (q, k, v) {
        (&[b, s, nq, 3, h], None, None) if nq == n => (QkvForm::PackedQkv, [b, s, s, h, h]),
        (&[b, s, d], Some(&[kb, kv, nk, 2, h]), None) if kb == b && nk == n && d == n * h => {
            (QkvForm::PackedKv, [b, s, kv, h, h])
        }
        (&[b, s, d], Some(&[kb, kv, dk]), Some(&[vb, vkv, dv])) if (kb, vb, vkv, dk) == (b, b, kv, d) => {
            (QkvForm::Separate, [b, s, kv, per_head(d, "query")?, per_head(dv, "value")?])
        }
        (&[b, s, d], Some(&[kb, nk, kv, h]), Some(&[vb, nv, vkv, hv])) if (kb, vb, nk, nv, vkv) == (b, b, n, n, kv) => {
            if d != n * h {
                bail!(Shape, "MultiHeadAttention query width {d} does not match {n} key heads of {h}");
            }
            (QkvForm::SplitKv, [b, s, kv, h, hv])
        }
        _ => bail!(Shape, "MultiHeadAttention query {q:?}, key {k:?} and value {v:?} do not fit together"),
    })
}

/// `[b, n, seq, h]` heads gathered from rows of width `row` (`seq` rows per batch item), where
/// head `i`'s features start at `start + i * stride`, with `bias[i*h..]` added.
#[allow(clippy::too_many_arguments)]
fn gather_heads(
    x: &[f64],
    (batch, seq, n, h): (usize, usize, usize, usize),
    row: usize,
    start: usize,
    stride: usize,
    bias: Option<&[f64]>,
) -> Result<Vec<f64>> {
    let mut out = try_vec(batch * n * seq * h, 0f64)?;
    for b in 0..batch {
        for s in 0..seq {
            for i in 0..n {
                let src = &x[(b * seq + s) * row + start + i * stride..][..h];
                let dst = &mut out[((b * n + i) * seq + s) * h..][..h];
                match bias {
                    Some(bias) => dst.iter_mut().zip(src).zip(&bias[i * h..]).for_each(|((d, s), b)| *d = s + b),
                    None => dst.copy_from_slice(src),
                }
            }
        }
    }
    Ok(out)
}

/// Appends `new` `[b, n, s, h]` after `past` `[b, n, p, h]` along the sequence axis.
fn append(past: Option<&Tensor>, new: Vec<f64>, [b, n, s, h]: [usize; 4], what: &str) -> Result<(Vec<f64>, usize)> {
    let Some(past) = past else { return Ok((new, s)) };
    let p = match *past.shape() {
        [pb, pn, p, ph] if (pb, pn, ph) == (b, n, h) => p,
        _ => bail!(Shape, "MultiHeadAttention past_{what} {:?} does not fit [{b}, {n}, _, {h}]", past.shape()),
    };
    let old = to_real::<f64>(past)?;
    let mut out = try_vec(b * n * (p + s) * h, 0f64)?;
    for (i, dst) in out.chunks_exact_mut((p + s) * h).enumerate() {
        dst[..p * h].copy_from_slice(&old[i * p * h..(i + 1) * p * h]);
        dst[p * h..].copy_from_slice(&new[i * s * h..(i + 1) * s * h]);
    }
    Ok((out, p + s))
}

impl Op for MultiHeadAttention {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let q = input(inputs, 0)?;
        let n = self.num_heads;
        let known = |f: Option<&Fact>, i: usize| f.and_then(|f| f.shape.as_ref()).and_then(|s| s.get(i)).cloned();
        let (k, v) = (opt_input(inputs, 1), opt_input(inputs, 2));
        let (batch, seq) = (known(Some(q), 0), known(Some(q), 1));
        let rank = |f: Option<&Fact>| f.and_then(|f| f.shape.as_ref()).map(|s| s.len());
        let dv = match (rank(Some(q)), rank(k), rank(v)) {
            (Some(5), _, _) => known(Some(q), 4).and_then(|d| d.known()).map(|h| Dim::Known(n * h)),
            (_, Some(5), _) => known(k, 4).and_then(|d| d.known()).map(|h| Dim::Known(n * h)),
            (_, _, Some(3)) => known(v, 2),
            (_, _, Some(4)) => known(v, 3).and_then(|d| d.known()).map(|h| Dim::Known(n * h)),
            _ => None,
        };
        let shape = match (batch, seq, dv) {
            (Some(b), Some(s), Some(d)) => Some(vec![b, s, d]),
            _ => None,
        };
        let present = Fact { dtype: q.dtype, shape: None, value: None };
        Ok(vec![Fact { dtype: q.dtype, shape, value: None }, present.clone(), present])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let q = input(inputs, 0)?;
        wants_f64("MultiHeadAttention", q.dtype())?;
        if opt_input(inputs, 8).is_some() || opt_input(inputs, 9).is_some() {
            bail!(Unsupported, "MultiHeadAttention with past_sequence_length or cache_indirection is not supported");
        }
        let (k, v) = (opt_input(inputs, 1), opt_input(inputs, 2));
        let n = self.num_heads;
        let (form, [batch, seq, kv, h, hv]) = qkv_form(q.shape(), k.map(|t| t.shape()), v.map(|t| t.shape()), n)?;
        let (d, dv) = (n * h, n * hv);
        let bias = match opt_input(inputs, 3) {
            None => None,
            Some(_) if form == QkvForm::SplitKv => {
                bail!(Unsupported, "MultiHeadAttention bias with key and value already split into heads")
            }
            Some(b) if b.len() != 2 * d + dv => {
                bail!(Shape, "MultiHeadAttention bias has {} elements, expected {}", b.len(), 2 * d + dv)
            }
            Some(b) => Some(to_real::<f64>(b)?.into_owned()),
        };
        let bias_of = |i: usize| bias.as_deref().map(|b| &b[i * d..]);
        let qv = to_real::<f64>(q)?;
        let (qh, kh, vh) = match form {
            QkvForm::PackedQkv => {
                let dims = (batch, seq, n, h);
                (
                    gather_heads(&qv, dims, 3 * d, 0, 3 * h, bias_of(0))?,
                    gather_heads(&qv, dims, 3 * d, h, 3 * h, bias_of(1))?,
                    gather_heads(&qv, dims, 3 * d, 2 * h, 3 * h, bias_of(2))?,
                )
            }
            QkvForm::PackedKv => {
                let kvv = to_real::<f64>(k.expect("packed KV"))?;
                let dims = (batch, kv, n, h);
                (
                    gather_heads(&qv, (batch, seq, n, h), d, 0, h, bias_of(0))?,
                    gather_heads(&kvv, dims, 2 * d, 0, 2 * h, bias_of(1))?,
                    gather_heads(&kvv, dims, 2 * d, h, 2 * h, bias_of(2))?,
                )
            }
            QkvForm::Separate => (
                gather_heads(&qv, (batch, seq, n, h), d, 0, h, bias_of(0))?,
                gather_heads(&to_real::<f64>(k.expect("key"))?, (batch, kv, n, h), d, 0, h, bias_of(1))?,
                gather_heads(&to_real::<f64>(v.expect("value"))?, (batch, kv, n, hv), dv, 0, hv, bias_of(2))?,
            ),
            QkvForm::SplitKv => (
                gather_heads(&qv, (batch, seq, n, h), d, 0, h, None)?,
                to_real::<f64>(k.expect("key"))?.into_owned(),
                to_real::<f64>(v.expect("value"))?.into_owned(),
            ),
        };
        let (kh, total) = append(opt_input(inputs, 6), kh, [batch, n, kv, h], "key")?;
        let (vh, _) = append(opt_input(inputs, 7), vh, [batch, n, kv, hv], "value")?;
        let mask = opt_input(inputs, 4).map(|m| m.to_i64_vec()).transpose()?;
        let mask = mask.as_deref().zip(opt_input(inputs, 4).map(|m| m.shape()));
        let key_bias = mask_bias(mask, (batch, seq, total), self.mask_filter_value, self.causal, "MultiHeadAttention")?;
        let attention_bias = match opt_input(inputs, 5) {
            None => None,
            Some(t) => match *t.shape() {
                [ab, an, s, tt] if (ab == 1 || ab == batch) && (an == 1 || an == n) && (s, tt) == (seq, total) => {
                    Some((to_real::<f64>(t)?.into_owned(), ab > 1, an > 1))
                }
                _ => bail!(
                    Shape,
                    "MultiHeadAttention attention_bias {:?} does not fit [{batch}, {n}, {seq}, {total}]",
                    t.shape()
                ),
            },
        };
        let scale = self.scale.unwrap_or(1.0 / (h as f64).sqrt());
        let dims = HeadDims { sq: seq, skv: total, d: h, dv: hv };
        let block = seq * total;
        let mut y = try_vec(batch * n * seq * hv, 0f64)?;
        let (mut scores, mut head_bias) = (try_vec(block, 0f64)?, try_vec(block, 0f64)?);
        for b in 0..batch {
            for i in 0..n {
                head_bias.copy_from_slice(&key_bias[b * block..(b + 1) * block]);
                if let Some((ab, per_batch, per_head)) = &attention_bias {
                    let at = (if *per_batch { b } else { 0 } * if *per_head { n } else { 1 })
                        + if *per_head { i } else { 0 };
                    head_bias.iter_mut().zip(&ab[at * block..(at + 1) * block]).for_each(|(x, a)| *x += a);
                }
                let bn = b * n + i;
                attend_head(
                    dims,
                    &qh[bn * seq * h..(bn + 1) * seq * h],
                    &kh[bn * total * h..(bn + 1) * total * h],
                    &vh[bn * total * hv..(bn + 1) * total * hv],
                    &head_bias,
                    scale,
                    0.0,
                    Capture::Scores,
                    Rounding::Exact,
                    &mut scores,
                    &mut y[bn * seq * hv..(bn + 1) * seq * hv],
                )?;
            }
        }
        let dtype = q.dtype();
        Ok(vec![
            from_real(dtype, vec![batch, seq, dv], merge_heads(&y, batch, n, seq, hv)?)?,
            from_real(dtype, vec![batch, n, total, h], kh)?,
            from_real(dtype, vec![batch, n, total, hv], vh)?,
        ])
    }
}
