//! LinearAttention (opset 27): attention whose keys and values are folded into a recurrent
//! `[d_k, d_v]` state per KV head, updated token by token (linear, gated, delta or gated-delta
//! rule) and read by each query: `o_t = scale · q_tᵀ S_t`.
//!
//! Q, K, V, decay and beta are packed `[batch, seq, heads*size]`; the state is
//! `[batch, kv_heads, d_k, d_v]`. Query head `h` reads the state of KV head `h / (q_heads /
//! kv_heads)`. Everything is computed in f32, as the reference does for every input type.

use super::real::{from_real, to_real, wants_f64};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::try_vec;
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("LinearAttention", build);
}

#[derive(Debug)]
struct LinearAttention {
    q_heads: usize,
    kv_heads: usize,
    /// `None`: 1/√d_k.
    scale: Option<f32>,
    /// The state decays by exp(decay) before each update.
    gated: bool,
    /// The update writes β·(v − Sᵀk) instead of v (the delta rule).
    delta: bool,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 27 {
        return Err(ctx.unsupported_version());
    }
    let a = ctx.attrs;
    let q_heads = a.req_int("q_num_heads")?;
    let kv_heads = a.req_int("kv_num_heads")?;
    if q_heads <= 0 || kv_heads <= 0 || q_heads % kv_heads != 0 {
        bail!(
            InvalidModel,
            "LinearAttention q_num_heads ({q_heads}) must be a positive multiple of kv_num_heads ({kv_heads})"
        );
    }
    let (gated, delta) = match a.string_or("update_rule", "gated_delta".into())?.as_str() {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        other => {
            bail!(Unsupported, "LinearAttention update_rule '{other}' is not one of linear, gated, delta, gated_delta")
        }
    };
    let scale = a.float_or("scale", 0.0)?;
    // chunk_size only tunes chunk-parallel kernels; the sequential recurrence ignores it.
    Ok(Box::new(LinearAttention {
        q_heads: q_heads as usize,
        kv_heads: kv_heads as usize,
        scale: (scale != 0.0).then_some(scale),
        gated,
        delta,
    }))
}

/// A packed `[batch, seq, width]` input, checked against the query's batch and sequence.
fn packed<'a>(t: &'a Tensor, name: &str, batch: usize, seq: usize) -> Result<(std::borrow::Cow<'a, [f32]>, usize)> {
    match *t.shape() {
        [b, s, width] if b == batch && s == seq => Ok((to_real::<f32>(t)?, width)),
        _ => bail!(Shape, "LinearAttention {name} must be [{batch}, {seq}, _], got {:?}", t.shape()),
    }
}

impl LinearAttention {
    fn rule(&self) -> &'static str {
        match (self.gated, self.delta) {
            (false, false) => "linear",
            (true, false) => "gated",
            (false, true) => "delta",
            (true, true) => "gated_delta",
        }
    }
}

impl Op for LinearAttention {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (q, v) = (input(inputs, 0)?, input(inputs, 2)?);
        let state_dtype = opt_input(inputs, 3).map_or(q.dtype, |p| p.dtype);
        let known = |f: &Fact, axis: usize| match f.shape.as_deref() {
            Some(s) if s.len() == 3 => Some(s[axis].clone()),
            _ => None,
        };
        let per_head = |d: Option<Dim>, heads: usize| match d {
            Some(Dim::Known(n)) => Dim::Known(n / heads),
            _ => Dim::Unknown,
        };
        let (Some(batch), Some(seq)) = (known(q, 0), known(q, 1)) else {
            return Ok(vec![
                Fact { dtype: q.dtype, shape: None, value: None },
                Fact { dtype: state_dtype, shape: None, value: None },
            ]);
        };
        let d_k = per_head(known(q, 2), self.q_heads);
        let d_v = per_head(known(v, 2), self.kv_heads);
        let hidden = match &d_v {
            Dim::Known(d) => Dim::Known(d * self.q_heads),
            _ => Dim::Unknown,
        };
        let state = vec![batch.clone(), Dim::Known(self.kv_heads), d_k, d_v];
        Ok(vec![
            Fact { dtype: q.dtype, shape: Some(vec![batch, seq, hidden]), value: None },
            Fact { dtype: state_dtype, shape: Some(state), value: None },
        ])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (qt, kt, vt) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dtype = qt.dtype();
        wants_f64("LinearAttention", dtype)?;
        let (hq, hkv) = (self.q_heads, self.kv_heads);
        let [batch, seq, q_width] = *qt.shape() else {
            bail!(Shape, "LinearAttention query must be rank 3 [batch, seq, heads*size], got {:?}", qt.shape());
        };
        let (q, _) = packed(qt, "query", batch, seq)?;
        let (k, k_width) = packed(kt, "key", batch, seq)?;
        let (v, v_width) = packed(vt, "value", batch, seq)?;
        if q_width % hq != 0 || v_width % hkv != 0 {
            bail!(
                Shape,
                "LinearAttention query width {q_width} / value width {v_width} do not split into {hq} / {hkv} heads"
            );
        }
        let (dk, dv) = (q_width / hq, v_width / hkv);
        if k_width != hkv * dk {
            bail!(Shape, "LinearAttention key width {k_width} is not kv_num_heads ({hkv}) x head size {dk}");
        }

        let rule = self.rule();
        let (decay, beta) = (opt_input(inputs, 4), opt_input(inputs, 5));
        if decay.is_some() != self.gated {
            bail!(
                InvalidModel,
                "LinearAttention update_rule '{rule}' {} the decay input",
                if self.gated { "needs" } else { "forbids" }
            );
        }
        if beta.is_some() != self.delta {
            bail!(
                InvalidModel,
                "LinearAttention update_rule '{rule}' {} the beta input",
                if self.delta { "needs" } else { "forbids" }
            );
        }
        // Decay per KV head (broadcast over d_k) or per key dimension; beta per KV head or shared.
        let decay = decay
            .map(|t| {
                let (g, width) = packed(t, "decay", batch, seq)?;
                match width {
                    w if w == hkv => Ok((g, 1)),
                    w if w == hkv * dk => Ok((g, dk)),
                    w => bail!(
                        Shape,
                        "LinearAttention decay width {w} is neither kv_num_heads ({hkv}) nor kv_num_heads*d_k ({})",
                        hkv * dk
                    ),
                }
            })
            .transpose()?;
        let beta = beta
            .map(|t| {
                let (b, width) = packed(t, "beta", batch, seq)?;
                if width != hkv && width != 1 {
                    bail!(Shape, "LinearAttention beta width {width} is neither kv_num_heads ({hkv}) nor 1");
                }
                Ok((b, width))
            })
            .transpose()?;

        let state_len = batch * hkv * dk * dv;
        let (mut state, state_dtype) = match opt_input(inputs, 3) {
            Some(p) => {
                if p.shape() != [batch, hkv, dk, dv] {
                    bail!(
                        Shape,
                        "LinearAttention past_state must be [{batch}, {hkv}, {dk}, {dv}], got {:?}",
                        p.shape()
                    );
                }
                wants_f64("LinearAttention", p.dtype())?;
                (to_real::<f32>(p)?.into_owned(), p.dtype())
            }
            None => (try_vec(state_len, 0f32)?, dtype),
        };
        let scale = self.scale.unwrap_or(1.0 / (dk as f32).sqrt());
        let group = hq / hkv;

        let mut out = try_vec(batch * seq * hq * dv, 0f32)?;
        let mut retrieved = try_vec(dv, 0f32)?;
        let mut update = try_vec(dv, 0f32)?;
        for b in 0..batch {
            for t in 0..seq {
                let row = b * seq + t;
                for h in 0..hkv {
                    let s = &mut state[(b * hkv + h) * dk * dv..(b * hkv + h + 1) * dk * dv];
                    let k_t = &k[(row * hkv + h) * dk..(row * hkv + h + 1) * dk];
                    let v_t = &v[(row * hkv + h) * dv..(row * hkv + h + 1) * dv];
                    if let Some((g, per)) = &decay {
                        for (i, s_row) in s.chunks_exact_mut(dv).enumerate() {
                            let factor = g[(row * hkv + h) * per + if *per == 1 { 0 } else { i }].exp();
                            s_row.iter_mut().for_each(|x| *x *= factor);
                        }
                    }
                    update.copy_from_slice(v_t);
                    if let Some((bt, width)) = &beta {
                        // retrieved = Sᵀk: what the state already answers for this key.
                        retrieved.fill(0.0);
                        for (s_row, &kd) in s.chunks_exact(dv).zip(k_t) {
                            retrieved.iter_mut().zip(s_row).for_each(|(r, &x)| *r += x * kd);
                        }
                        let rate = bt[row * width + if *width == 1 { 0 } else { h }];
                        update.iter_mut().zip(&retrieved).for_each(|(u, &r)| *u = rate * (*u - r));
                    }
                    for (s_row, &kd) in s.chunks_exact_mut(dv).zip(k_t) {
                        s_row.iter_mut().zip(&update).for_each(|(x, &u)| *x += kd * u);
                    }
                    for qh in h * group..(h + 1) * group {
                        let q_t = &q[(row * hq + qh) * dk..(row * hq + qh + 1) * dk];
                        let o = &mut out[(row * hq + qh) * dv..(row * hq + qh + 1) * dv];
                        for (s_row, &qd) in s.chunks_exact(dv).zip(q_t) {
                            o.iter_mut().zip(s_row).for_each(|(o, &x)| *o += qd * x);
                        }
                        o.iter_mut().for_each(|x| *x *= scale);
                    }
                }
            }
        }
        Ok(vec![
            from_real(dtype, vec![batch, seq, hq * dv], out)?,
            from_real(state_dtype, vec![batch, hkv, dk, dv], state)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::{assert_close, build};
    use crate::ErrorKind;

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().unwrap().to_vec()
    }

    fn attrs(rule: &str, hq: i64, hkv: i64) -> Vec<(&'static str, Attr)> {
        vec![
            ("update_rule", Attr::String(rule.into())),
            ("q_num_heads", Attr::Int(hq)),
            ("kv_num_heads", Attr::Int(hkv)),
            ("scale", Attr::Float(1.0)),
        ]
    }

    // One head, d_k = d_v = 2, two tokens of the linear rule with a past state:
    // S0 = [[1, 0], [0, 1]]; k1 = [1, 0], v1 = [2, 3] -> S1 = [[3, 3], [0, 1]]; q1 = [1, 1] -> [3, 4].
    // k2 = [0, 1], v2 = [1, 1] -> S2 = [[3, 3], [1, 2]]; q2 = [0, 2] -> [2, 4].
    #[test]
    fn linear_rule_with_past() {
        let op = build("LinearAttention", 27, attrs("linear", 1, 1), 2).unwrap();
        let q = Tensor::new(vec![1, 2, 2], vec![1.0f32, 1.0, 0.0, 2.0]).unwrap();
        let k = Tensor::new(vec![1, 2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let v = Tensor::new(vec![1, 2, 2], vec![2.0f32, 3.0, 1.0, 1.0]).unwrap();
        let past = Tensor::new(vec![1, 1, 2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let out = op.eval(&[Some(&q), Some(&k), Some(&v), Some(&past)]).unwrap();
        assert_close(&f32s(&out[0]), &[3.0, 4.0, 2.0, 4.0]);
        assert_close(&f32s(&out[1]), &[3.0, 3.0, 1.0, 2.0]);
    }

    // Gated delta, two query heads sharing one KV head, one token, d_k = d_v = 1 after the
    // decay: S0 = 2, g = ln(0.5) -> 1; retrieved = 1·k = 2 (k = 2); β = 0.5, v = 4 ->
    // update 0.5·(4 − 2) = 1; S = 1 + 2·1 = 3; queries 1 and −1 read 3 and −3.
    #[test]
    fn gated_delta_gqa() {
        let op = build("LinearAttention", 27, attrs("gated_delta", 2, 1), 2).unwrap();
        let q = Tensor::new(vec![1, 1, 2], vec![1.0f32, -1.0]).unwrap();
        let k = Tensor::new(vec![1, 1, 1], vec![2.0f32]).unwrap();
        let v = Tensor::new(vec![1, 1, 1], vec![4.0f32]).unwrap();
        let past = Tensor::new(vec![1, 1, 1, 1], vec![2.0f32]).unwrap();
        let g = Tensor::new(vec![1, 1, 1], vec![0.5f32.ln()]).unwrap();
        let beta = Tensor::new(vec![1, 1, 1], vec![0.5f32]).unwrap();
        let out = op.eval(&[Some(&q), Some(&k), Some(&v), Some(&past), Some(&g), Some(&beta)]).unwrap();
        assert_close(&f32s(&out[0]), &[3.0, -3.0]);
        assert_close(&f32s(&out[1]), &[3.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Tensor::new(vec![1, 1, 2], vec![1.0f32, 2.0]).unwrap();
        let op = build("LinearAttention", 27, attrs("gated", 1, 1), 2).unwrap();
        assert_eq!(op.eval(&[Some(&x), Some(&x), Some(&x)]).unwrap_err().kind, ErrorKind::InvalidModel);
        let op = build("LinearAttention", 27, attrs("linear", 1, 1), 2).unwrap();
        let short_key = Tensor::new(vec![1, 1, 1], vec![1.0f32]).unwrap();
        assert_eq!(op.eval(&[Some(&x), Some(&short_key), Some(&x)]).unwrap_err().kind, ErrorKind::Shape);
        let past = Tensor::new(vec![1, 1, 2, 1], vec![0.0f32; 2]).unwrap();
        assert_eq!(op.eval(&[Some(&x), Some(&x), Some(&x), Some(&past)]).unwrap_err().kind, ErrorKind::Shape);
        assert!(build("LinearAttention", 27, attrs("linear", 3, 2), 2).is_err());
        assert!(build("LinearAttention", 27, attrs("fancy", 1, 1), 2).is_err());
    }
}
