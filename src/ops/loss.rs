//! Losses: NegativeLogLikelihoodLoss (opsets 12, 13, 22) and SoftmaxCrossEntropyLoss (12, 13),
//! which is NegativeLogLikelihoodLoss of the log-softmax over the class axis (axis 1).

use super::reshape::numel;
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::{Dim, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};

pub fn register(r: &mut Registry) {
    r.add("NegativeLogLikelihoodLoss", |ctx| build(ctx, false));
    r.add("SoftmaxCrossEntropyLoss", |ctx| build(ctx, true));
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

#[derive(Debug)]
pub struct Loss {
    softmax: bool,
    reduction: Reduction,
    ignore_index: Option<i64>,
}

fn build(ctx: &BuildCtx, softmax: bool) -> Result<Box<dyn Op>> {
    if ctx.opset < 12 {
        return Err(ctx.unsupported_version());
    }
    let reduction = match ctx.attrs.string_or("reduction", "mean".into())?.as_str() {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        other => bail!(Unsupported, "{}: reduction '{other}' is not supported", ctx.op_type),
    };
    Ok(Box::new(Loss { softmax, reduction, ignore_index: ctx.attrs.int("ignore_index")? }))
}

impl Loss {
    fn name(&self) -> &'static str {
        if self.softmax {
            "SoftmaxCrossEntropyLoss"
        } else {
            "NegativeLogLikelihoodLoss"
        }
    }

    /// Loss (reduced or per element) and, for SoftmaxCrossEntropyLoss, the log-probabilities, in f64.
    fn compute(&self, x: &Tensor, target: &Tensor, weight: Option<&Tensor>) -> Result<(Vec<f64>, Vec<f64>)> {
        let name = self.name();
        let (shape, tshape) = (x.shape(), target.shape());
        if shape.len() < 2 || tshape.len() + 1 != shape.len() || tshape[0] != shape[0] || tshape[1..] != shape[2..] {
            bail!(Shape, "{name}: input {shape:?} and target {tshape:?} do not fit ([N, C, d...] and [N, d...])");
        }
        let (n, c, d) = (shape[0], shape[1], numel(&shape[2..]));
        let mut values = x.to_f64_vec()?;
        if self.softmax {
            for b in 0..n {
                for k in 0..d {
                    let at = |j: usize| (b * c + j) * d + k;
                    let max = (0..c).map(|j| values[at(j)]).fold(f64::NEG_INFINITY, f64::max);
                    let log_sum = (0..c).map(|j| (values[at(j)] - max).exp()).sum::<f64>().ln();
                    (0..c).for_each(|j| values[at(j)] -= max + log_sum);
                }
            }
        }
        let weights = weight.map(|w| w.to_f64_vec()).transpose()?;
        if let Some(w) = &weights {
            if w.len() != c {
                bail!(Shape, "{name}: weight has {} values for {c} classes", w.len());
            }
        }
        let targets = target.to_i64_vec()?;
        let mut losses = Vec::with_capacity(targets.len());
        let mut weight_sum = 0.0;
        for (i, &t) in targets.iter().enumerate() {
            if Some(t) == self.ignore_index {
                losses.push(0.0);
                continue;
            }
            let class = usize::try_from(t).ok().filter(|&t| t < c);
            let Some(class) = class else { bail!(Runtime, "{name}: target {t} is out of range for {c} classes") };
            let w = weights.as_ref().map_or(1.0, |w| w[class]);
            let (b, k) = (i / d, i % d);
            losses.push(-values[(b * c + class) * d + k] * w);
            weight_sum += w;
        }
        let loss = match self.reduction {
            Reduction::None => losses,
            Reduction::Sum => vec![losses.iter().sum()],
            Reduction::Mean => vec![losses.iter().sum::<f64>() / weight_sum],
        };
        Ok((loss, values))
    }
}

impl Op for Loss {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let loss_shape = match self.reduction {
            Reduction::None => input(inputs, 1)?.shape.clone(),
            _ => Some(Vec::<Dim>::new()),
        };
        let mut facts = vec![Fact { dtype: x.dtype, shape: loss_shape, value: None }];
        if self.softmax {
            facts.push(Fact { dtype: x.dtype, shape: x.shape.clone(), value: None });
        }
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, target) = (input(inputs, 0)?, input(inputs, 1)?);
        let (loss, log_prob) = self.compute(x, target, opt_input(inputs, 2))?;
        let loss_shape = if self.reduction == Reduction::None { target.shape().to_vec() } else { vec![] };
        dispatch!(x.dtype(); T => {
            let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
            let mut out = vec![Tensor::new(loss_shape, cast(loss))?];
            if self.softmax {
                out.push(Tensor::new(x.shape().to_vec(), cast(log_prob))?);
            }
            Ok(out)
        }; float; else => bail!(Unsupported, "{} does not take {}", self.name(), x.dtype()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::{assert_close, build};
    use crate::ErrorKind;

    fn x() -> Tensor {
        Tensor::new(vec![2, 3], vec![1f32, 2., 3., 0.5, -1., 2.]).unwrap()
    }

    #[test]
    fn nll_with_weights_and_ignore_index() {
        let attrs = vec![("reduction", Attr::String("mean".into())), ("ignore_index", Attr::Int(1))];
        let op = build("NegativeLogLikelihoodLoss", 13, attrs, 1).unwrap();
        let target = Tensor::vector(vec![2i64, 1]);
        let weight = Tensor::vector(vec![0.2f32, 0.3, 0.5]);
        // Only sample 0 counts: -x[0, 2] * 0.5 / 0.5.
        let y = op.eval(&[Some(&x()), Some(&target), Some(&weight)]).unwrap().remove(0);
        assert_close(y.as_slice::<f32>().unwrap(), &[-3.0]);
        let op = build("NegativeLogLikelihoodLoss", 13, vec![("reduction", Attr::String("none".into()))], 1).unwrap();
        let target = Tensor::vector(vec![0i64, 2]);
        let y = op.eval(&[Some(&x()), Some(&target)]).unwrap().remove(0);
        assert_close(y.as_slice::<f32>().unwrap(), &[-1.0, -2.0]);
    }

    // numpy: -log_softmax(x)[[0, 1], [2, 0]].mean()
    #[test]
    fn softmax_cross_entropy_mean() {
        let op = build("SoftmaxCrossEntropyLoss", 13, vec![], 2).unwrap();
        let target = Tensor::vector(vec![2i64, 0]);
        let out = op.eval(&[Some(&x()), Some(&target)]).unwrap();
        // log_softmax rows: [-2.4076059, -1.4076059, -0.4076059], [-1.7413113, -3.2413113, -0.2413113]
        assert_close(out[0].as_slice::<f32>().unwrap(), &[1.074_458_6]);
        let want = [-2.407_606, -1.407_606, -0.407_606, -1.741_311_3, -3.241_311_3, -0.241_311_3];
        assert_close(out[1].as_slice::<f32>().unwrap(), &want);
    }

    #[test]
    fn bad_targets_are_errors() {
        let op = build("NegativeLogLikelihoodLoss", 13, vec![], 1).unwrap();
        let target = Tensor::vector(vec![3i64, 0]);
        assert_eq!(op.eval(&[Some(&x()), Some(&target)]).unwrap_err().kind, ErrorKind::Runtime);
        let target = Tensor::vector(vec![0i64, 0, 0]);
        assert_eq!(op.eval(&[Some(&x()), Some(&target)]).unwrap_err().kind, ErrorKind::Shape);
    }
}
