//! onnxruntime's `com.microsoft` attention ops in f32 on the fused attention kernel
//! ([`attention::attend`]): Attention (its packed Q/K/V projection one GEMM with the bias in the
//! epilogue, the weights packed once when constant; Q, K and V then read out of the projection
//! through strides) and MultiHeadAttention (separate, packed QKV, packed KV or head-split K/V,
//! read where they lie; a bias costs one copy). Key masks become additive rows of
//! `mask_filter_value`, as the reference adds them; causal masking is the kernel's.
//!
//! Left to the reference: past state, extra outputs, rotary, cross-attention that is also causal,
//! Megatron-style 4-D masks and other dtypes.

use super::attention::{attend, Layout, Mask, Sdpa};
use super::gemm::{self, Bias, Epilogue, Lhs, MatRef, PackedB, Problem, Rhs};
use super::isa::isa;
use super::{const_f32, f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::contrib::{mask_bias, PackedAttention};
use crate::ops::multi_head_attention::{qkv_form, MultiHeadAttention, QkvForm};
use crate::Result;
use std::borrow::Cow;
use std::sync::Arc;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let single = node.outputs.len() == 1 && maybe_f32(graph, node.inputs.first().copied().flatten());
    let micro = gemm::micro_for(isa());
    if node.op.is::<PackedAttention>() && single && node.inputs.iter().skip(4).all(|i| i.is_none()) {
        let weights = const_f32(graph, node, 1).filter(|w| w.rank() == 2).map(|w| {
            let (k, n) = (w.shape()[0], w.shape()[1]);
            PackedB::new(&MatRef::row_major(w.as_slice::<f32>().expect("f32"), n), k, n, &micro)
        });
        return Some(Box::new(ContribAttention { op: node.op.clone(), weights, micro }));
    }
    if node.op.is::<MultiHeadAttention>() && single && node.inputs.iter().skip(6).all(|i| i.is_none()) {
        return Some(Box::new(ContribAttention { op: node.op.clone(), weights: None, micro }));
    }
    None
}

#[cfg(test)]
thread_local! {
    /// Runs this thread handed to the reference: tests check the fused path ran.
    pub(super) static FALLBACKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[derive(Debug)]
struct ContribAttention {
    op: Arc<dyn Op>,
    /// Attention's constant projection weights, packed.
    weights: Option<PackedB>,
    micro: gemm::Micro,
}

impl Kernel for ContribAttention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let y = match (self.op.downcast_ref::<PackedAttention>(), self.op.downcast_ref::<MultiHeadAttention>()) {
            (Some(a), _) => self.packed(ctx, a, inputs)?,
            (_, Some(m)) => self.multi_head(ctx, m, inputs)?,
            _ => None,
        };
        match y {
            Some(y) => Ok(vec![Data::Tensor(y)]),
            None => {
                #[cfg(test)]
                FALLBACKS.with(|n| n.set(n.get() + 1));
                Reference { op: self.op.clone() }.run(ctx, inputs)
            }
        }
    }
}

/// `[b, s, h*d]` rows of width `row`, heads `stride` apart.
fn rows(seq: usize, row: usize, stride: usize) -> Layout {
    Layout { batch: seq * row, head: stride, pos: row }
}

/// The key mask of onnxruntime's attention ops (`mask_index` / `key_padding_mask`, any integer
/// type) as additive rows, `[b, skv]` or `[b, sq, skv]`; `None` for forms the reference must
/// take (it reports the bad ones).
fn key_mask(t: &Tensor, batch: usize, sq: usize, skv: usize, filter: f64) -> Option<Mask<'static>> {
    let per_query = t.rank() == 3;
    let rows = if per_query { sq } else { 1 };
    let m = t.to_i64_vec().ok()?;
    let bias = mask_bias(Some((&m, t.shape())), (batch, rows, skv), filter, false, "").ok()?;
    let strides = [rows * skv, 0, if per_query { skv } else { 0 }, 1];
    Some(Mask { bias: Cow::Owned(bias.into_iter().map(|v| v as f32).collect()), strides, len: skv })
}

/// `a + b` broadcast to `[batch, heads of a, sq, skv]` (both masks over all keys).
fn sum_masks(a: &Mask, b: &Mask, [batch, heads, sq, skv]: [usize; 4]) -> Mask<'static> {
    let heads = if a.strides[1] == 0 { 1 } else { heads };
    let mut bias = Vec::with_capacity(batch * heads * sq * skv);
    for n in 0..batch {
        for h in 0..heads {
            for i in 0..sq {
                let at = |m: &Mask| n * m.strides[0] + h * m.strides[1] + i * m.strides[2];
                let (ra, rb) = (&a.bias[at(a)..][..skv], &b.bias[at(b)..][..skv]);
                bias.extend(ra.iter().zip(rb).map(|(x, y)| x + y));
            }
        }
    }
    let strides = [heads * sq * skv, if heads > 1 { sq * skv } else { 0 }, skv, 1];
    Mask { bias: Cow::Owned(bias), strides, len: skv }
}

fn floats(t: Option<&Tensor>) -> Result<Option<&[f32]>> {
    t.map(|t| t.as_slice::<f32>()).transpose()
}

/// A copy of `x` with `bias` (one row's worth) added to each row.
fn biased(ctx: &ExecCtx, x: &[f32], bias: &[f32]) -> Result<Vec<f32>> {
    let mut v = ctx.buffers.copied(x)?;
    v.chunks_exact_mut(bias.len()).for_each(|r| r.iter_mut().zip(bias).for_each(|(x, b)| *x += b));
    Ok(v)
}

/// The bias of a packed tensor's row: `n` heads of `parts` blocks of `h`, block `w` of head `i`
/// taken from `bias[(first + w) * n * h + i * h..]`.
fn packed_bias(bias: &[f32], n: usize, h: usize, parts: usize, first: usize) -> Vec<f32> {
    let d = n * h;
    (0..n).flat_map(|i| (0..parts).flat_map(move |w| (0..h).map(move |e| bias[(first + w) * d + i * h + e]))).collect()
}

impl ContribAttention {
    fn packed(&self, ctx: &ExecCtx, a: &PackedAttention, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let (Some(x), Some(w)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else { return Ok(None) };
        if inputs.iter().skip(4).any(|i| i.is_some()) {
            return Ok(None);
        }
        let (&[batch, seq, hidden_in], &[w_in, w_out]) = (x.shape(), w.shape()) else { return Ok(None) };
        let [qs, ks, vs] = a.qkv_sizes.unwrap_or([w_out / 3; 3]);
        let n = a.num_heads;
        if w_in != hidden_in || qs + ks + vs != w_out || qs != ks || qs % n != 0 || vs % n != 0 || seq == 0 {
            return Ok(None);
        }
        let bias = match inputs.get(2).copied().flatten() {
            None => None,
            Some(_) => match f32_input(inputs, 2).filter(|b| b.len() == w_out) {
                Some(b) => Some(b.as_slice::<f32>()?),
                None => return Ok(None),
            },
        };
        let mask = match inputs.get(3).copied().flatten() {
            None => None,
            Some(m) => match m.tensor().and_then(|t| key_mask(t, batch, seq, seq, a.mask_filter_value)) {
                Some(m) => Some(m),
                None => return Ok(None),
            },
        };
        let rows_n = batch * seq;
        let mut qkv = ctx.buffers.output(rows_n * w_out)?;
        let projection = Problem {
            m: rows_n,
            n: w_out,
            k: hidden_in,
            a: Lhs::Plain(MatRef::row_major(x.as_slice::<f32>()?, hidden_in)),
            b: match &self.weights {
                Some(p) if p.dims() == (w_in, w_out) => Rhs::Packed(p),
                _ => Rhs::Plain(MatRef::row_major(w.as_slice::<f32>()?, w_out)),
            },
            epilogue: Epilogue { bias: bias.map_or(Bias::None, Bias::PerCol), ..Epilogue::default() },
        };
        gemm::run(ctx.pool, &self.micro, &projection, &mut qkv, w_out);
        let (d, dv) = (qs / n, vs / n);
        let p = Sdpa {
            q: &qkv[..],
            k: &qkv[qs..],
            v: &qkv[qs + ks..],
            lq: rows(seq, w_out, d),
            lk: rows(seq, w_out, d),
            lv: rows(seq, w_out, dv),
            ly: rows(seq, vs, dv),
            group: 1,
            sq: seq,
            skv: seq,
            d,
            dv,
            scale: a.scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32,
            causal: a.causal,
            mask,
        };
        let mut y = ctx.buffers.output(rows_n * vs)?;
        attend(ctx, &self.micro, &p, batch, n, &mut y);
        ctx.buffers.give(qkv.into_buffer());
        Ok(Some(y.into_tensor(vec![batch, seq, vs])?))
    }

    fn multi_head<'a>(
        &self,
        ctx: &ExecCtx,
        m: &MultiHeadAttention,
        inputs: &[Option<DataRef<'a>>],
    ) -> Result<Option<Tensor>> {
        let given = |i: usize| inputs.get(i).copied().flatten().is_some();
        let Some(q) = f32_input(inputs, 0) else { return Ok(None) };
        let (k, v) = (f32_input(inputs, 1), f32_input(inputs, 2));
        if (given(1) && k.is_none()) || (given(2) && v.is_none()) || (6..inputs.len()).any(given) {
            return Ok(None);
        }
        let n = m.num_heads;
        let Ok((form, [batch, sq, skv, h, hv])) = qkv_form(q.shape(), k.map(|t| t.shape()), v.map(|t| t.shape()), n)
        else {
            return Ok(None);
        };
        let (d, dv) = (n * h, n * hv);
        if (m.causal && sq != skv) || sq == 0 || skv == 0 {
            return Ok(None);
        }
        let bias = match inputs.get(3).copied().flatten() {
            None => None,
            Some(_) => match f32_input(inputs, 3).filter(|b| b.len() == 2 * d + dv && form != QkvForm::SplitKv) {
                Some(b) => Some(b.as_slice::<f32>()?),
                None => return Ok(None),
            },
        };
        let key_padding = match inputs.get(4).copied().flatten() {
            None => None,
            Some(t) => match t.tensor().and_then(|t| key_mask(t, batch, sq, skv, m.mask_filter_value)) {
                Some(mask) => Some(mask),
                None => return Ok(None),
            },
        };
        let target = [batch, n, sq, skv];
        let attention_bias = match inputs.get(5).copied().flatten() {
            None => None,
            Some(t) => match t.tensor().filter(|t| t.rank() == 4 && t.shape()[2..] == [sq, skv]) {
                Some(t) => match Mask::new(t, target) {
                    Some(mask) => Some(mask),
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let mask = match (attention_bias, key_padding) {
            (Some(a), Some(b)) => Some(sum_masks(&a, &b, target)),
            (a, b) => a.or(b),
        };
        let qv = q.as_slice::<f32>()?;
        // Biased copies, in the layout of the input they come from; else the inputs as they are.
        let owned: Vec<Vec<f32>> = match (bias, form) {
            (None, _) => Vec::new(),
            (Some(b), QkvForm::PackedQkv) => vec![biased(ctx, qv, &packed_bias(b, n, h, 3, 0))?],
            (Some(b), QkvForm::PackedKv) => vec![
                biased(ctx, qv, &b[..d])?,
                biased(ctx, floats(k)?.expect("packed KV"), &packed_bias(b, n, h, 2, 1))?,
            ],
            (Some(b), _) => vec![
                biased(ctx, qv, &b[..d])?,
                biased(ctx, floats(k)?.expect("key"), &b[d..2 * d])?,
                biased(ctx, floats(v)?.expect("value"), &b[2 * d..])?,
            ],
        };
        let pick = |i: usize, t: Option<&'a Tensor>| match owned.get(i) {
            Some(o) => Ok(Some(&o[..])),
            None => floats(t),
        };
        let (qd, kd, vd) = (pick(0, Some(q))?.expect("query"), pick(1, k)?, pick(2, v)?);
        let (q_at, k_at, v_at, lq, lk, lv) = match form {
            QkvForm::PackedQkv => {
                let packed = rows(sq, 3 * d, 3 * h);
                (qd, &qd[h..], &qd[2 * h..], packed, packed, packed)
            }
            QkvForm::PackedKv => {
                let kv = kd.expect("packed KV");
                (qd, kv, &kv[h..], rows(sq, d, h), rows(skv, 2 * d, 2 * h), rows(skv, 2 * d, 2 * h))
            }
            QkvForm::Separate => {
                let (kd, vd) = (kd.expect("key"), vd.expect("value"));
                (qd, kd, vd, rows(sq, d, h), rows(skv, d, h), rows(skv, dv, hv))
            }
            QkvForm::SplitKv => {
                let (kd, vd) = (kd.expect("key"), vd.expect("value"));
                let split = |size| Layout { batch: n * skv * size, head: skv * size, pos: size };
                (qd, kd, vd, rows(sq, d, h), split(h), split(hv))
            }
        };
        let p = Sdpa {
            q: q_at,
            k: k_at,
            v: v_at,
            lq,
            lk,
            lv,
            ly: rows(sq, dv, hv),
            group: 1,
            sq,
            skv,
            d: h,
            dv: hv,
            scale: m.scale.unwrap_or(1.0 / (h as f64).sqrt()) as f32,
            causal: m.causal,
            mask,
        };
        let mut y = ctx.buffers.output(batch * sq * dv)?;
        attend(ctx, &self.micro, &p, batch, n, &mut y);
        owned.into_iter().for_each(|o| ctx.buffers.give(o));
        Ok(Some(y.into_tensor(vec![batch, sq, dv])?))
    }
}
