//! Ops that fusion passes make (never found in ONNX files): a convolution or matrix product with
//! its bias and activation applied in the same kernel, and an integer matrix product with its
//! conversion to float, scale and bias. Their reference kernels run the original
//! op and then the activation in f64, so the fused forms stay checked against the same oracle.

use super::activation::{sigmoid, Clip, FloatActivation, Formula, Relu};
use super::conv::Conv;
use super::matmul::MatMul;
use super::quant_conv::MatMulInteger;
use super::unary::{erf, FloatFn};
use super::{input, opt_input, Op};
use crate::ir::{DType, Fact, Graph, Node, Tensor};
use crate::{bail, Result};
use std::sync::Arc;

/// An elementwise activation that a kernel can apply to its output as it writes it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// Clip (and Relu6): min(max(x, lo), hi).
    Clip(f32, f32),
    LeakyRelu(f32),
    Sigmoid,
    /// x * sigmoid(x), also called Swish.
    Silu,
    /// max(0, min(1, alpha * x + beta)).
    HardSigmoid(f32, f32),
    /// x * max(0, min(1, x / 6 + 1 / 2)).
    HardSwish,
    Tanh,
    /// x * Phi(x) with the exact erf.
    Gelu,
    /// The tanh approximation of Gelu.
    GeluTanh,
    /// The elementwise functions of the ops of the same names (not activations, but run alike).
    Erf,
    Sqrt,
    Exp,
}

impl Activation {
    /// The reference value, computed in f64.
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Clip(lo, hi) => x.max(lo as f64).min(hi as f64),
            Activation::LeakyRelu(a) => {
                if x < 0.0 {
                    x * a as f64
                } else {
                    x
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Silu => x * sigmoid(x),
            Activation::HardSigmoid(a, b) => (a as f64 * x + b as f64).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Activation::Erf => erf(x),
            Activation::Sqrt => x.sqrt(),
            Activation::Exp => x.exp(),
        }
    }

    fn apply_reference(self, t: Tensor) -> Result<Tensor> {
        if self == Activation::None {
            return Ok(t);
        }
        let shape = t.shape().to_vec();
        let values: Vec<f32> = t.into_vec::<f32>()?.into_iter().map(|v| self.reference(v as f64) as f32).collect();
        Tensor::new(shape, values)
    }
}

/// The activation `node` computes, if it is one a fused kernel can apply.
pub fn activation_of(graph: &Graph, node: &Node) -> Option<Activation> {
    let op = &node.op;
    if op.is::<Relu>() {
        return Some(Activation::Relu);
    }
    if let Some(f) = op.downcast_ref::<FloatActivation>() {
        return match f.formula {
            Formula::Sigmoid => Some(Activation::Sigmoid),
            Formula::Tanh => Some(Activation::Tanh),
            Formula::LeakyRelu { alpha } => Some(Activation::LeakyRelu(alpha as f32)),
            Formula::HardSigmoid { alpha, beta } => Some(Activation::HardSigmoid(alpha as f32, beta as f32)),
            Formula::HardSwish => Some(Activation::HardSwish),
            Formula::Gelu => Some(Activation::Gelu),
            Formula::GeluTanh => Some(Activation::GeluTanh),
            _ => None,
        };
    }
    if let Some(f) = op.downcast_ref::<FloatFn>() {
        return match f.name {
            "Erf" => Some(Activation::Erf),
            "Sqrt" => Some(Activation::Sqrt),
            "Exp" => Some(Activation::Exp),
            _ => None,
        };
    }
    if let Some(c) = op.downcast_ref::<Clip>() {
        if let Some((lo, hi)) = c.attribute_bounds {
            return Some(Activation::Clip(lo, hi));
        }
        let bound = |i: usize, default: f32| match node.inputs.get(i).copied().flatten() {
            None => Some(default),
            Some(v) => {
                graph.values[v].constant().filter(|t| t.len() == 1).and_then(|t| t.as_slice::<f32>().ok().map(|s| s[0]))
            }
        };
        return Some(Activation::Clip(bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?));
    }
    None
}

/// Conv, then (with `residual`) the addition of a tensor of the output's shape, then an
/// activation: what Conv (+ Add of a skip connection) (+ an activation) becomes. Inputs: Conv's
/// X, W and optional bias, then the residual as input 3.
#[derive(Debug)]
pub struct FusedConv {
    /// The original Conv op.
    pub conv: Arc<dyn Op>,
    pub residual: bool,
    pub act: Activation,
}

impl FusedConv {
    pub fn conv(&self) -> &Conv {
        self.conv.downcast_ref::<Conv>().expect("FusedConv holds a Conv")
    }
}

impl Op for FusedConv {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        self.conv.infer(&inputs[..3.min(inputs.len())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut y = self.conv.eval(&inputs[..3.min(inputs.len())])?.remove(0);
        if self.residual {
            let r = input(inputs, 3)?;
            if r.shape() != y.shape() {
                bail!(Shape, "FusedConv: the residual has shape {:?}, the output {:?}", r.shape(), y.shape());
            }
            y.as_mut_slice::<f32>()?.iter_mut().zip(r.as_slice::<f32>()?).for_each(|(v, r)| *v += r);
        }
        Ok(vec![self.act.apply_reference(y)?])
    }
}

/// ConvTranspose followed by an activation (a decoder's upsampling + Relu, a head's + Sigmoid):
/// the kernel applies it to each output row as it writes the row. Inputs: those of the
/// ConvTranspose.
#[derive(Debug)]
pub struct FusedConvTranspose {
    /// The original ConvTranspose op.
    pub conv_transpose: Arc<dyn Op>,
    pub act: Activation,
}

impl Op for FusedConvTranspose {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        self.conv_transpose.infer(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let y = self.conv_transpose.eval(inputs)?.remove(0);
        Ok(vec![self.act.apply_reference(y)?])
    }
}

/// MatMul (B 2-D) plus a bias along the last axis, then an activation: what MatMul + Add (+ an
/// activation) becomes. Inputs: A, B, bias (optional, shape [N]).
#[derive(Debug)]
pub struct FusedMatMul {
    pub act: Activation,
}

impl Op for FusedMatMul {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        MatMul.infer(&inputs[..2.min(inputs.len())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let y = MatMul.eval(&[Some(a), Some(b)])?.remove(0);
        let y = match opt_input(inputs, 2) {
            None => y,
            Some(bias) => {
                let n = *y.shape().last().unwrap_or(&1);
                let bv = bias.as_slice::<f32>()?;
                if bv.len() != n {
                    bail!(Shape, "the fused bias has {} elements, the product's last axis {n}", bv.len());
                }
                let shape = y.shape().to_vec();
                let mut v = y.into_vec::<f32>()?;
                v.chunks_exact_mut(n.max(1)).for_each(|row| row.iter_mut().zip(bv).for_each(|(x, b)| *x += b));
                Tensor::new(shape, v)?
            }
        };
        Ok(vec![self.act.apply_reference(y)?])
    }
}

/// MatMulInteger whose int32 result is cast to float32, then (`scaled`) multiplied by a scalar
/// and (`biased`) added a per-column bias: what a dynamically quantised linear layer's
/// MatMulInteger -> Cast -> Mul -> Add becomes. Inputs: A, B, a_zero_point, b_zero_point (both
/// optional), scale (f32 scalar, or `[N]` per column: a per-channel QDQ weight's), bias (f32 `[N]`). The reference takes the same f32 steps in the
/// same order, so the fused kernel's results are identical to the unfused graph's.
#[derive(Debug)]
pub struct FusedMatMulInteger {
    pub scaled: bool,
    pub biased: bool,
}

impl Op for FusedMatMulInteger {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let mut facts = MatMulInteger.infer(&inputs[..4.min(inputs.len())])?;
        facts[0].dtype = Some(DType::F32);
        Ok(facts)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let y = MatMulInteger.eval(&inputs[..4.min(inputs.len())])?.remove(0);
        let shape = y.shape().to_vec();
        let mut v: Vec<f32> = y.as_slice::<i32>()?.iter().map(|&x| x as f32).collect();
        let n = *shape.last().unwrap_or(&1);
        if self.scaled {
            let s = input(inputs, 4)?.as_slice::<f32>()?;
            match s {
                &[s] => v.iter_mut().for_each(|x| *x *= s),
                // One per column (a per-channel QDQ weight's).
                _ if s.len() == n => {
                    v.chunks_exact_mut(n.max(1)).for_each(|row| row.iter_mut().zip(s).for_each(|(x, s)| *x *= s))
                }
                _ => bail!(Shape, "the fused scale has {} elements, not 1 or the product's last axis {n}", s.len()),
            }
        }
        if self.biased {
            let b = input(inputs, 5)?.as_slice::<f32>()?;
            if b.len() != n {
                bail!(Shape, "the fused bias has {} elements, the product's last axis {n}", b.len());
            }
            v.chunks_exact_mut(n.max(1)).for_each(|row| row.iter_mut().zip(b).for_each(|(x, b)| *x += b));
        }
        Ok(vec![Tensor::new(shape, v)?])
    }
}

/// Layer normalisation over the last axis as exporters write it out (ReduceMean, Sub, Pow 2,
/// ReduceMean, Add epsilon, Sqrt, Div, Mul by a per-column scale, Add a per-column bias):
/// `(x - mean) / sqrt(mean((x - mean)^2) + epsilon) * scale + bias`. Inputs: X, scale and bias
/// (both `[N]` for a last axis of N). The reference computes each row in f64.
#[derive(Debug)]
pub struct FusedLayerNorm {
    pub epsilon: f32,
}

impl Op for FusedLayerNorm {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        Ok(vec![Fact { dtype: x.dtype, shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, scale, bias) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let n = *x.shape().last().ok_or_else(|| crate::err!(Shape, "FusedLayerNorm needs X of rank 1 or more"))?;
        let (s, b) = (scale.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        if s.len() != n || b.len() != n {
            bail!(Shape, "FusedLayerNorm: scale and bias have {} and {} values, X's last axis {n}", s.len(), b.len());
        }
        let mut y = x.as_slice::<f32>()?.to_vec();
        for row in y.chunks_exact_mut(n.max(1)) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + self.epsilon as f64).sqrt();
            for ((v, &s), &b) in row.iter_mut().zip(s).zip(b) {
                *v = ((*v as f64 - mean) * inv * s as f64 + b as f64) as f32;
            }
        }
        Ok(vec![Tensor::new(x.shape().to_vec(), y)?])
    }
}
