//! The `ai.onnx.preview.training` optimizers: Adagrad, Adam and Momentum (standard and Nesterov).
//! Inputs are the learning rate `R`, the update count `T`, then per-tensor groups laid out by kind
//! (all X, then all G, then each state); outputs are the new X, then each new state, in that layout.
//! The math runs in f64 and is rounded once to the tensors' type.

use super::{input, BuildCtx, Op, Registry};
use crate::ir::{DType, Fact, Tensor};
use crate::{bail, Result};

pub const TRAINING: &str = "ai.onnx.preview.training";

pub fn register(r: &mut Registry) {
    r.add_in(TRAINING, "Adagrad", build_adagrad);
    r.add_in(TRAINING, "Adam", build_adam);
    r.add_in(TRAINING, "Momentum", build_momentum);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Adagrad { norm: f64, epsilon: f64, decay: f64 },
    Adam { norm: f64, norm_post: f64, alpha: f64, beta: f64, epsilon: f64 },
    Momentum { norm: f64, alpha: f64, beta: f64, nesterov: bool },
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Adagrad { .. } => "Adagrad",
            Rule::Adam { .. } => "Adam",
            Rule::Momentum { .. } => "Momentum",
        }
    }

    /// Inputs per optimized tensor: X, G and the states.
    fn group(self) -> usize {
        match self {
            Rule::Adam { .. } => 4,
            _ => 3,
        }
    }

    /// One element's update: `x`, gradient `g` and states in, new `x` and states out.
    fn step(self, r: f64, t: i64, x: f64, g: f64, state: [f64; 2]) -> (f64, [f64; 2]) {
        match self {
            Rule::Adagrad { norm, epsilon, decay } => {
                let r = r / (1.0 + t as f64 * decay);
                let g = norm * x + g;
                let h = state[0] + g * g;
                (x - r * g / (h.sqrt() + epsilon), [h, 0.0])
            }
            Rule::Adam { norm, norm_post, alpha, beta, epsilon } => {
                let g = norm * x + g;
                let v = alpha * state[0] + (1.0 - alpha) * g;
                let h = beta * state[1] + (1.0 - beta) * g * g;
                // Bias correction from the second update on.
                let r = if t > 0 {
                    let t = t as f64;
                    r * (1.0 - beta.powf(t)).sqrt() / (1.0 - alpha.powf(t))
                } else {
                    r
                };
                let x = x - r * v / (h.sqrt() + epsilon);
                ((1.0 - norm_post) * x, [v, h])
            }
            Rule::Momentum { norm, alpha, beta, nesterov } => {
                let g = norm * x + g;
                // The first update takes the whole gradient.
                let beta = if t > 0 { beta } else { 1.0 };
                let v = alpha * state[0] + beta * g;
                let x = if nesterov { x - r * (g + alpha * v) } else { x - r * v };
                (x, [v, 0.0])
            }
        }
    }
}

#[derive(Debug)]
struct Optimizer {
    rule: Rule,
}

fn float(ctx: &BuildCtx, name: &str, default: f32) -> Result<f64> {
    ctx.attrs.float_or(name, default).map(f64::from)
}

fn build_adagrad(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let rule = Rule::Adagrad {
        norm: float(ctx, "norm_coefficient", 0.0)?,
        epsilon: float(ctx, "epsilon", 1e-6)?,
        decay: float(ctx, "decay_factor", 0.0)?,
    };
    Ok(Box::new(Optimizer { rule }))
}

fn build_adam(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let rule = Rule::Adam {
        norm: float(ctx, "norm_coefficient", 0.0)?,
        norm_post: float(ctx, "norm_coefficient_post", 0.0)?,
        alpha: float(ctx, "alpha", 0.9)?,
        beta: float(ctx, "beta", 0.999)?,
        epsilon: float(ctx, "epsilon", 1e-6)?,
    };
    Ok(Box::new(Optimizer { rule }))
}

fn build_momentum(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let req = |name: &str| a.required(name, a.float(name)).map(f64::from);
    let nesterov = match a.required("mode", a.string("mode"))?.as_str() {
        "standard" => false,
        "nesterov" => true,
        other => bail!(InvalidModel, "Momentum mode '{other}' is not 'standard' or 'nesterov'"),
    };
    let rule = Rule::Momentum { norm: req("norm_coefficient")?, alpha: req("alpha")?, beta: req("beta")?, nesterov };
    Ok(Box::new(Optimizer { rule }))
}

impl Optimizer {
    /// How many tensors are optimized, from the number of inputs.
    fn tensors(&self, inputs: usize) -> Result<usize> {
        let group = self.rule.group();
        match inputs.checked_sub(2) {
            Some(n) if n > 0 && n % group == 0 => Ok(n / group),
            _ => bail!(
                InvalidModel,
                "{} takes R, T and groups of {group} tensors, got {inputs} inputs",
                self.rule.name()
            ),
        }
    }
}

impl Op for Optimizer {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let n = self.tensors(inputs.len())?;
        let states = self.rule.group() - 2;
        // Outputs: every X, then every state, each like its input.
        let mut out = vec![];
        for kind in std::iter::once(0).chain(2..2 + states) {
            for i in 0..n {
                let f = input(inputs, 2 + kind * n + i)?;
                out.push(Fact { dtype: f.dtype, shape: f.shape.clone(), value: None });
            }
        }
        Ok(out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let name = self.rule.name();
        let n = self.tensors(inputs.len())?;
        let states = self.rule.group() - 2;
        let (r, t) = (input(inputs, 0)?, input(inputs, 1)?);
        let (&[r], &[t]) = (r.to_f64_vec()?.as_slice(), t.to_i64_vec()?.as_slice()) else {
            bail!(
                Shape,
                "{name} takes a single learning rate R and update count T, got shapes {:?} and {:?}",
                r.shape(),
                t.shape()
            )
        };
        let mut new_x = Vec::with_capacity(n);
        let mut new_states: Vec<Vec<Tensor>> = (0..states).map(|_| Vec::with_capacity(n)).collect();
        for i in 0..n {
            let x = input(inputs, 2 + i)?;
            let dtype = x.dtype();
            if !matches!(dtype, DType::F32 | DType::F64) {
                bail!(Unsupported, "{name} does not take {dtype} tensors");
            }
            let mut others = vec![];
            for kind in 1..2 + states {
                let t = input(inputs, 2 + kind * n + i)?;
                if t.shape() != x.shape() || t.dtype() != dtype {
                    bail!(
                        Shape,
                        "{name}: input {} ({} {:?}) does not match X ({dtype} {:?})",
                        2 + kind * n + i,
                        t.dtype(),
                        t.shape(),
                        x.shape()
                    );
                }
                others.push(t.to_f64_vec()?);
            }
            let xs = x.to_f64_vec()?;
            let mut out_x = Vec::with_capacity(xs.len());
            let mut out_s: Vec<Vec<f64>> = (0..states).map(|_| Vec::with_capacity(xs.len())).collect();
            for (j, &xv) in xs.iter().enumerate() {
                let state = [others.get(1).map_or(0.0, |s| s[j]), others.get(2).map_or(0.0, |s| s[j])];
                let (nx, ns) = self.rule.step(r, t, xv, others[0][j], state);
                out_x.push(nx);
                for (o, v) in out_s.iter_mut().zip(ns) {
                    o.push(v);
                }
            }
            new_x.push(Tensor::new(x.shape().to_vec(), out_x)?.cast_numeric(dtype)?);
            for (dst, s) in new_states.iter_mut().zip(out_s) {
                dst.push(Tensor::new(x.shape().to_vec(), s)?.cast_numeric(dtype)?);
            }
        }
        Ok(new_x.into_iter().chain(new_states.into_iter().flatten()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::ml::tests::build_in;

    fn run(op: &str, attrs: Vec<(&str, Attr)>, t: i64, tensors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let op = build_in(TRAINING, op, 1, attrs, tensors.len() + 2, 0)?;
        let (r, t) = (Tensor::scalar(0.1f32), Tensor::scalar(t));
        let tensors: Vec<Tensor> = tensors.iter().map(|v| Tensor::vector(v.clone())).collect();
        let inputs: Vec<Option<&Tensor>> = [&r, &t].into_iter().chain(&tensors).map(Some).collect();
        op.eval(&inputs)?.iter().map(|t| t.as_slice::<f32>().map(<[f32]>::to_vec)).collect()
    }

    fn assert_close(got: &[Vec<f32>], want: &[&[f32]]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            crate::ops::activation::test_util::assert_close(g, w);
        }
    }

    // Expected values from the ONNX node tests' numpy formulas (apply_adagrad, apply_adam, ...).
    #[test]
    fn adagrad() {
        let attrs = || {
            vec![
                ("norm_coefficient", Attr::Float(0.001)),
                ("epsilon", Attr::Float(1e-5)),
                ("decay_factor", Attr::Float(0.1)),
            ]
        };
        let got = run("Adagrad", attrs(), 0, &[vec![1.0, 2.0], vec![-1.0, -3.0], vec![4.0, 1.0]]).unwrap();
        assert_close(&got, &[&[1.0446854, 2.0948617], &[4.998001, 9.988004]]);
        let got = run("Adagrad", attrs(), 3, &[vec![1.0], vec![-1.0], vec![2.0]]).unwrap();
        assert_close(&got, &[&[1.0443817], &[2.998001]]);
    }

    #[test]
    fn adam() {
        let attrs = vec![
            ("norm_coefficient", Attr::Float(0.001)),
            ("alpha", Attr::Float(0.95)),
            ("beta", Attr::Float(0.1)),
            ("epsilon", Attr::Float(1e-7)),
        ];
        let got = run("Adam", attrs.clone(), 0, &[vec![1.2, 2.8], vec![-0.94, -2.5], vec![1.7, 3.6], vec![0.1, 0.1]])
            .unwrap();
        assert_close(&got, &[&[1.0250363, 2.6610327], &[1.56806, 3.2951398], &[0.8032108, 5.622407]]);
        let got = run("Adam", attrs, 2, &[vec![1.2], vec![-0.94], vec![1.7], vec![0.1]]).unwrap();
        assert_close(&got, &[&[-0.58550407], &[1.56806], &[0.8032108]]);
    }

    #[test]
    fn momentum_and_nesterov() {
        let attrs = |mode: &str| {
            vec![
                ("norm_coefficient", Attr::Float(0.001)),
                ("alpha", Attr::Float(0.95)),
                ("beta", Attr::Float(0.1)),
                ("mode", Attr::String(mode.into())),
            ]
        };
        let tensors = [vec![1.2, 2.8], vec![-0.94, -2.5], vec![1.7, 3.6]];
        let got = run("Momentum", attrs("standard"), 0, &tensors).unwrap();
        assert_close(&got, &[&[1.13238, 2.70772], &[0.67620003, 0.9227998]]);
        let got = run("Momentum", attrs("nesterov"), 0, &tensors).unwrap();
        assert_close(&got, &[&[1.2296411, 2.962054], &[0.67620003, 0.9227998]]);
        let got = run("Momentum", attrs("standard"), 4, &tensors).unwrap();
        assert_close(&got, &[&[1.047888, 2.482972], &[1.5211201, 3.1702797]]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = run("Adam", vec![], 0, &[vec![1.0], vec![1.0], vec![1.0]]).unwrap_err();
        assert!(e.message.contains("groups of 4"), "{e}");
        let e = run("Adagrad", vec![], 0, &[vec![1.0], vec![1.0, 2.0], vec![1.0]]).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Shape);
        let e = build_in(TRAINING, "Momentum", 1, vec![("mode", Attr::String("fast".into()))], 5, 2).unwrap_err();
        assert!(e.message.contains("fast") || e.message.contains("required"), "{e}");
    }
}
