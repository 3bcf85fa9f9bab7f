//! CausalConvWithState (opset 27): a depthwise 1-D convolution that sees only current and past
//! positions, with the last `k - 1` inputs carried between calls as state (Mamba, Gated DeltaNet).
//!
//! Tensors are `[batch, channels, length]`, the weight `[channels, 1, k]`. The input is
//! left-padded with `past_state` (zeros when absent), convolved without padding, optionally passed
//! through SiLU, and the last `k - 1` padded positions become `present_state`.

use super::attention::Rounding;
use super::real::{from_real, to_real, wants_f64};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::tensor::try_vec;
use crate::ir::{Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("CausalConvWithState", build);
}

#[derive(Debug)]
struct CausalConvWithState {
    silu: bool,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 27 {
        return Err(ctx.unsupported_version());
    }
    let silu = match ctx.attrs.string_or("activation", "none".into())?.as_str() {
        "none" => false,
        "silu" | "swish" => true,
        other => bail!(Unsupported, "CausalConvWithState activation '{other}' is not one of none, silu, swish"),
    };
    Ok(Box::new(CausalConvWithState { silu }))
}

impl Op for CausalConvWithState {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = x.dtype;
        let Some(xs) = x.shape.as_ref() else {
            return Ok(vec![Fact { dtype, shape: None, value: None }; 2]);
        };
        if xs.len() != 3 {
            bail!(Shape, "CausalConvWithState input must be rank 3 (batch, channels, length), got rank {}", xs.len());
        }
        let carried = match w.shape.as_deref() {
            Some([_, _, Dim::Known(k)]) if *k >= 1 => Dim::Known(k - 1),
            Some([_, _, Dim::Known(_)]) => bail!(Shape, "CausalConvWithState weight has an empty kernel"),
            Some(s) if s.len() != 3 => bail!(Shape, "CausalConvWithState weight must be rank 3, got rank {}", s.len()),
            _ => Dim::Unknown,
        };
        let state = vec![xs[0].clone(), xs[1].clone(), carried];
        Ok(vec![Fact { dtype, shape: Some(xs.clone()), value: None }, Fact { dtype, shape: Some(state), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (xt, wt) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = xt.dtype();
        if wants_f64("CausalConvWithState", dtype)? {
            bail!(Unsupported, "CausalConvWithState does not take {dtype} tensors");
        }
        let [batch, channels, len] = *xt.shape() else {
            bail!(Shape, "CausalConvWithState input must be rank 3 (batch, channels, length), got {:?}", xt.shape());
        };
        let k = match *wt.shape() {
            [c, 1, k] if c == channels && k >= 1 => k,
            _ => {
                bail!(Shape, "CausalConvWithState weight must be [{channels}, 1, k] with k >= 1, got {:?}", wt.shape())
            }
        };
        let carried = k - 1;
        let bias = opt_input(inputs, 2)
            .map(|b| {
                if b.shape() != [channels] {
                    bail!(Shape, "CausalConvWithState bias must be [{channels}], got {:?}", b.shape());
                }
                to_real::<f32>(b)
            })
            .transpose()?;
        let past = opt_input(inputs, 3)
            .map(|p| {
                if p.shape() != [batch, channels, carried] {
                    bail!(
                        Shape,
                        "CausalConvWithState past_state must be [{batch}, {channels}, {carried}], got {:?}",
                        p.shape()
                    );
                }
                to_real::<f32>(p)
            })
            .transpose()?;
        let (x, w) = (to_real::<f32>(xt)?, to_real::<f32>(wt)?);

        // The reference rounds the convolution to the input type before the bias and again before
        // the activation, each step computed in f32; doing the same keeps float16 on its values.
        let round = Rounding::of(dtype);
        let to_type = |v: f32| round.apply(f64::from(v)) as f32;
        let padded_len = carried + len;
        let mut padded = try_vec(padded_len, 0f32)?;
        let mut out = try_vec(batch * channels * len, 0f32)?;
        let mut present = try_vec(batch * channels * carried, 0f32)?;
        for lane in 0..batch * channels {
            let c = lane % channels;
            match &past {
                Some(p) => padded[..carried].copy_from_slice(&p[lane * carried..(lane + 1) * carried]),
                None => padded[..carried].fill(0.0),
            }
            padded[carried..].copy_from_slice(&x[lane * len..(lane + 1) * len]);
            let taps = &w[c * k..(c + 1) * k];
            for (t, o) in out[lane * len..(lane + 1) * len].iter_mut().enumerate() {
                let window = &padded[t..t + k];
                let mut y = to_type(window.iter().zip(taps).fold(0f32, |acc, (a, b)| acc + a * b));
                if let Some(b) = &bias {
                    y = to_type(y + b[c]);
                }
                if self.silu {
                    y = to_type(y * (1.0 / (1.0 + (-y).exp())));
                }
                *o = y;
            }
            present[lane * carried..(lane + 1) * carried].copy_from_slice(&padded[len..]);
        }
        Ok(vec![
            from_real(dtype, vec![batch, channels, len], out)?,
            from_real(dtype, vec![batch, channels, carried], present)?,
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

    // One channel, kernel [1, 2, 3] over [1, 2, 3, 4] with past [10, 20]: padded
    // [10, 20, 1, 2, 3, 4], outputs 10+40+3=53, 20+2+6=28, 1+4+9=14, 2+6+12=20, plus bias 1.
    #[test]
    fn past_state_and_bias() {
        let op = build("CausalConvWithState", 27, vec![], 2).unwrap();
        let x = Tensor::new(vec![1, 1, 4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let w = Tensor::new(vec![1, 1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let b = Tensor::new(vec![1], vec![1.0f32]).unwrap();
        let past = Tensor::new(vec![1, 1, 2], vec![10.0f32, 20.0]).unwrap();
        let out = op.eval(&[Some(&x), Some(&w), Some(&b), Some(&past)]).unwrap();
        assert_close(&f32s(&out[0]), &[54.0, 29.0, 15.0, 21.0]);
        assert_eq!(out[1].shape(), &[1, 1, 2]);
        assert_close(&f32s(&out[1]), &[3.0, 4.0]);
    }

    // Two channels, no past, input shorter than the carried state; SiLU of the convolution:
    // channel 0 kernel [0, 0, 1] is the identity, silu(1) = 0.7310586, silu(-2) = -0.23840584;
    // channel 1 kernel [1, 1, 1] sums: [3, 3 + 4] -> silu(3) = 2.8577223, silu(7) = 6.9936175.
    #[test]
    fn silu_short_input() {
        let op = build("CausalConvWithState", 27, vec![("activation", Attr::String("silu".into()))], 2).unwrap();
        let x = Tensor::new(vec![1, 2, 2], vec![1.0f32, -2.0, 3.0, 4.0]).unwrap();
        let w = Tensor::new(vec![2, 1, 3], vec![0.0f32, 0.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
        let out = op.eval(&[Some(&x), Some(&w)]).unwrap();
        assert_close(&f32s(&out[0]), &[0.7310586, -0.23840584, 2.8577223, 6.993623]);
        assert_close(&f32s(&out[1]), &[1.0, -2.0, 3.0, 4.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let op = build("CausalConvWithState", 27, vec![], 2).unwrap();
        let x = Tensor::new(vec![1, 2, 3], vec![0.0f32; 6]).unwrap();
        let w = Tensor::new(vec![3, 1, 2], vec![0.0f32; 6]).unwrap();
        assert_eq!(op.eval(&[Some(&x), Some(&w)]).unwrap_err().kind, ErrorKind::Shape);
        let w = Tensor::new(vec![2, 1, 2], vec![0.0f32; 4]).unwrap();
        let past = Tensor::new(vec![1, 2, 2], vec![0.0f32; 4]).unwrap();
        assert_eq!(op.eval(&[Some(&x), Some(&w), None, Some(&past)]).unwrap_err().kind, ErrorKind::Shape);
        assert!(build("CausalConvWithState", 27, vec![("activation", Attr::String("gelu".into()))], 2).is_err());
        assert!(build("CausalConvWithState", 26, vec![], 2).is_err());
    }
}
