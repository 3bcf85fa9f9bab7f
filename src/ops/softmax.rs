//! Softmax, LogSoftmax and Hardmax: normalisations along an axis.
//!
//! Before opset 13 the input is coerced to 2-D at `axis` (default 1) and each row of the flattened
//! trailing dims is normalised as one; from 13 only the single `axis` (default -1) is.

use super::attention::Rounding;
use super::{input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::try_vec;
use crate::ir::{Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};

pub fn register(r: &mut Registry) {
    r.add("Softmax", build);
    r.add("LogSoftmax", build);
    r.add("Hardmax", build);
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let kind = match ctx.op_type {
        "Softmax" => Kind::Softmax,
        "LogSoftmax" => Kind::LogSoftmax,
        "Hardmax" => Kind::Hardmax,
        other => bail!(Unsupported, "{other} is not a softmax-like op"),
    };
    let coerce_2d = ctx.opset < 13;
    let axis = ctx.attrs.int_or("axis", if coerce_2d { 1 } else { -1 })?;
    Ok(Box::new(Softmax { kind, axis, coerce_2d }))
}

#[derive(Debug)]
pub struct Softmax {
    pub kind: Kind,
    axis: i64,
    coerce_2d: bool,
}

/// The input seen as `[outer, n, inner]`: each of the `outer * inner` lanes of length `n`, with
/// stride `inner`, is normalised on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lanes {
    pub outer: usize,
    pub n: usize,
    pub inner: usize,
}

impl Softmax {
    pub fn lanes(&self, shape: &[usize]) -> Result<Lanes> {
        let axis = normalize_axis(self.axis, shape.len())?;
        let (before, after) = shape.split_at(axis);
        Ok(if self.coerce_2d {
            Lanes { outer: before.iter().product(), n: after.iter().product(), inner: 1 }
        } else {
            Lanes { outer: before.iter().product(), n: after[0], inner: after[1..].iter().product() }
        })
    }

    fn normalize<T: Scalar>(&self, x: &Tensor) -> Result<Tensor> {
        let Lanes { outer, n, inner } = self.lanes(x.shape())?;
        let src = x.as_slice::<T>()?;
        let mut out = try_vec(src.len(), T::zero())?;
        let mut lane = try_vec(n, 0f64)?;
        let round = Rounding::of(x.dtype());
        for o in 0..outer {
            for i in 0..inner {
                let base = o * n * inner + i;
                for (k, v) in lane.iter_mut().enumerate() {
                    *v = src[base + k * inner].to_f64();
                }
                self.normalize_lane(&mut lane, round);
                for (k, v) in lane.iter().enumerate() {
                    out[base + k * inner] = T::from_f64(*v);
                }
            }
        }
        Tensor::new(x.shape().to_vec(), out)
    }

    /// Normalises one lane in place; subtracting the max first keeps every exponent <= 0.
    /// Softmax rounds each step to the input type (`round`), as a kernel computing in float16 or
    /// bfloat16 does; the reference's results differ by an ulp otherwise.
    fn normalize_lane(&self, lane: &mut [f64], round: Rounding) {
        let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match self.kind {
            Kind::Softmax => round.softmax(lane),
            Kind::LogSoftmax => {
                let log_sum = lane.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lane.iter_mut().for_each(|v| *v = *v - max - log_sum);
            }
            Kind::Hardmax => {
                // The first maximum wins ties, as numpy's argmax does.
                let winner = lane.iter().position(|&v| v == max);
                for (k, v) in lane.iter_mut().enumerate() {
                    *v = if Some(k) == winner { 1.0 } else { 0.0 };
                }
            }
        }
    }
}

/// Softmax of one lane in place; subtracting the max first keeps every exponent <= 0. Shared with
/// the attention kernels.
pub fn softmax_in_place(lane: &mut [f64]) {
    let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in lane.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    lane.iter_mut().for_each(|v| *v /= sum);
}

impl Op for Softmax {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        if let Some(rank) = input(inputs, 0)?.rank() {
            normalize_axis(self.axis, rank)?;
        }
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        dispatch!(x.dtype(); T => Ok(vec![self.normalize::<T>(x)?]);
            float; else => bail!(Unsupported, "{:?} does not take {}", self.kind, x.dtype()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, DType};
    use crate::ops::activation::test_util::{assert_close, build};
    use crate::ErrorKind;
    use half::{bf16, f16};

    fn build_op(op_type: &str, opset: i64, axis: Option<i64>) -> Box<dyn Op> {
        build(op_type, opset, axis.map(|a| ("axis", Attr::Int(a))).into_iter().collect(), 1).unwrap()
    }

    fn run(op: &dyn Op, x: &Tensor) -> Vec<f32> {
        op.eval(&[Some(x)]).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
    }

    fn x_2x3() -> Tensor {
        Tensor::new(vec![2, 3], vec![1.0f32, 2.0, 3.0, 1.0, 1.0, 1.0]).unwrap()
    }

    // Expected values from numpy: softmax over each row of [[1, 2, 3], [1, 1, 1]].
    #[test]
    fn softmax_over_last_axis() {
        let y = run(build_op("Softmax", 13, None).as_ref(), &x_2x3());
        assert_close(&y, &[0.09003057, 0.24472848, 0.66524094, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
        let y = run(build_op("LogSoftmax", 13, None).as_ref(), &x_2x3());
        assert_close(&y, &[-2.407606, -1.4076059, -0.40760595, -1.0986123, -1.0986123, -1.0986123]);
    }

    #[test]
    fn softmax_over_a_middle_axis() {
        // Shape [1, 2, 3], axis 1: normalise each column pair.
        let x = x_2x3().reshape(vec![1, 2, 3]).unwrap();
        let y = run(build_op("Softmax", 13, Some(1)).as_ref(), &x);
        assert_close(&y, &[0.5, 0.7310586, 0.8807971, 0.5, 0.26894143, 0.11920292]);
    }

    #[test]
    fn old_opsets_flatten_trailing_dims() {
        // Opset 11, axis 1 on [1, 2, 3]: all six values form one row.
        let x = x_2x3().reshape(vec![1, 2, 3]).unwrap();
        let y = run(build_op("Softmax", 11, None).as_ref(), &x);
        assert_close(&y, &[0.07088509, 0.19268565, 0.5237739, 0.07088509, 0.07088509, 0.07088509]);
        let y = run(build_op("Hardmax", 11, None).as_ref(), &x);
        assert_eq!(y, vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn large_values_do_not_overflow() {
        let x = Tensor::new(vec![1, 4], vec![10000.0f32, 10001.0, 10002.0, 10003.0]).unwrap();
        let y = run(build_op("Softmax", 13, None).as_ref(), &x);
        assert_close(&y, &[0.0320586, 0.08714432, 0.23688282, 0.6439142]);
    }

    #[test]
    fn hardmax_picks_the_first_maximum() {
        let x = Tensor::new(vec![2, 4], vec![3.0f32, 3.0, 3.0, 1.0, 0.0, 1.0, 3.0, 2.0]).unwrap();
        let y = run(build_op("Hardmax", 13, None).as_ref(), &x);
        assert_eq!(y, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn half_precision_and_empty_inputs() {
        let x = Tensor::vector(vec![f16::ZERO, f16::ZERO]);
        let y = build_op("Softmax", 13, None).eval(&[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<f16>().unwrap(), &[f16::from_f32(0.5), f16::from_f32(0.5)]);
        let empty = Tensor::new(vec![0, 3], Vec::<f32>::new()).unwrap();
        assert!(run(build_op("LogSoftmax", 13, None).as_ref(), &empty).is_empty());
    }

    // onnx.reference computes bfloat16 softmax step by step in bfloat16: these are its values,
    // where rounding once from exact arithmetic would give 0.12451172, 0.15820313 and 0.08300781
    // for elements 1, 3 and 4.
    #[test]
    #[allow(clippy::excessive_precision)] // exact bfloat16 values, written out in full
    fn bfloat16_rounds_each_step() {
        let x = [0.1259765625f32, -0.1318359375, 0.640625, 0.10498046875, -0.53515625, 0.361328125];
        let x = Tensor::vector(x.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>());
        let y = build_op("Softmax", 13, None).eval(&[Some(&x)]).unwrap();
        let y: Vec<f32> = y[0].as_slice::<bf16>().unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(y, [0.1611328125, 0.1240234375, 0.26953125, 0.1572265625, 0.08349609375, 0.2041015625]);
    }

    #[test]
    fn bad_axis_and_dtype_are_errors() {
        let op = build_op("Softmax", 13, Some(2));
        let e = op.eval(&[Some(&x_2x3())]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(op.infer(&[Some(&Fact::concrete(DType::F32, &[2, 3]))]).is_err());
        assert!(op.infer(&[Some(&Fact::of_dtype(DType::F32))]).is_ok());
        let e = build_op("Softmax", 13, None).eval(&[Some(&Tensor::vector(vec![1i32]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
    }
}
