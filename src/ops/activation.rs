//! Activations: Relu, the float-only elementwise family (LeakyRelu, Sigmoid, Tanh, Elu, Selu, Gelu,
//! ...), PRelu (slope broadcast to X), Clip, Shrink, SwiGLU, and Dropout, which is the identity at
//! inference.

use super::broadcast::binary;
use super::{input, opt_input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::shape::broadcast_shapes;
use crate::ir::tensor::{checked_len, try_vec};
use crate::ir::{DType, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};
use std::borrow::Cow;

/// Ops that map each float element through one formula; [`build_float`] parses their attributes.
const FLOAT_ACTIVATIONS: [&str; 15] = [
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "ThresholdedRelu",
    "Mish",
    "Gelu",
    "Swish",
    "Shrink",
];

pub fn register(r: &mut Registry) {
    r.add("Relu", |_| Ok(Box::new(Relu)));
    for name in FLOAT_ACTIVATIONS {
        r.add(name, build_float);
    }
    r.add("PRelu", |ctx| Ok(Box::new(PRelu { slope_per_channel: ctx.opset < 7 })));
    r.add("Clip", build_clip);
    r.add("Dropout", build_dropout);
    r.add("SwiGLU", |ctx| Ok(Box::new(SwiGlu { alpha: f64::from(ctx.attrs.float_or("alpha", 1.0)?) })));
}

#[derive(Debug)]
pub struct Relu;

impl Op for Relu {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        dispatch!(x.dtype(); T => Ok(vec![map::<T>(x, |v| if v > T::zero() { v } else { T::zero() })?]);
            F32 | F64 | F16 | BF16 | I8 | I16 | I32 | I64;
            else => bail!(Unsupported, "Relu does not take {}", x.dtype()))
    }
}

/// Applies `f` to every element, keeping shape and dtype.
pub fn map<T: Scalar>(x: &Tensor, f: impl Fn(T) -> T) -> Result<Tensor> {
    Tensor::new(x.shape().to_vec(), x.as_slice::<T>()?.iter().map(|&v| f(v)).collect())
}

/// The formula of a one-input activation, with its attributes. Evaluated in f64 whatever the
/// tensor's float type, so f16/bf16 get full precision before their final rounding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Formula {
    LeakyRelu { alpha: f64 },
    Sigmoid,
    HardSigmoid { alpha: f64, beta: f64 },
    HardSwish,
    Tanh,
    Elu { alpha: f64 },
    Selu { alpha: f64, gamma: f64 },
    Celu { alpha: f64 },
    Softplus,
    Softsign,
    ThresholdedRelu { alpha: f64 },
    Mish,
    Gelu,
    GeluTanh,
    Swish { alpha: f64 },
    Shrink { lambd: f64, bias: f64 },
}

impl Formula {
    fn apply(self, x: f64) -> f64 {
        match self {
            Formula::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Formula::Sigmoid => sigmoid(x),
            Formula::HardSigmoid { alpha, beta } => hard_sigmoid(x, alpha, beta),
            Formula::HardSwish => x * hard_sigmoid(x, 1.0 / 6.0, 0.5),
            Formula::Tanh => x.tanh(),
            Formula::Elu { alpha } => elu(x, alpha),
            Formula::Selu { alpha, gamma } => gamma * elu(x, alpha),
            Formula::Celu { alpha } => x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0),
            Formula::Softplus => softplus(x),
            Formula::Softsign => x / (1.0 + x.abs()),
            Formula::ThresholdedRelu { alpha } => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            Formula::Mish => x * softplus(x).tanh(),
            // 1 + erf(x/√2) = erfc(-x/√2), which keeps its precision far into the negative tail.
            Formula::Gelu => 0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
            Formula::GeluTanh => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            Formula::Swish { alpha } => x * sigmoid(alpha * x),
            Formula::Shrink { lambd, bias } => {
                if x < -lambd {
                    x + bias
                } else if x > lambd {
                    x - bias
                } else {
                    0.0
                }
            }
        }
    }
}

/// Written in two halves so that neither exponential can overflow.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn hard_sigmoid(x: f64, alpha: f64, beta: f64) -> f64 {
    (alpha * x + beta).clamp(0.0, 1.0)
}

fn elu(x: f64, alpha: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        alpha * x.exp_m1()
    }
}

/// ln(1 + e^x) without overflow for large x or loss of precision for very negative x.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// Complementary error function with a fractional error below 1.2e-7 everywhere (the Chebyshev fit
/// of Numerical Recipes' `erfcc`): relative, not absolute, accuracy is what Gelu's tail needs.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let coefficients = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
    ];
    let poly = coefficients.iter().rev().fold(0.17087277, |acc, &c| c + t * acc);
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

fn build_float(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let float = |name: &str, default: f32| a.float_or(name, default).map(f64::from);
    let formula = match ctx.op_type {
        "LeakyRelu" => Formula::LeakyRelu { alpha: float("alpha", 0.01)? },
        "Sigmoid" => Formula::Sigmoid,
        "HardSigmoid" => Formula::HardSigmoid { alpha: float("alpha", 0.2)?, beta: float("beta", 0.5)? },
        "HardSwish" => Formula::HardSwish,
        "Tanh" => Formula::Tanh,
        "Elu" => Formula::Elu { alpha: float("alpha", 1.0)? },
        // Opset 6 gave the constants more digits.
        "Selu" if ctx.opset < 6 => Formula::Selu { alpha: float("alpha", 1.6732)?, gamma: float("gamma", 1.0507)? },
        "Selu" => Formula::Selu { alpha: float("alpha", 1.673_263_2)?, gamma: float("gamma", 1.050_701)? },
        "Celu" => Formula::Celu { alpha: float("alpha", 1.0)? },
        "Softplus" => Formula::Softplus,
        "Softsign" => Formula::Softsign,
        "ThresholdedRelu" => Formula::ThresholdedRelu { alpha: float("alpha", 1.0)? },
        "Mish" => Formula::Mish,
        "Gelu" => match a.string_or("approximate", "none".into())?.as_str() {
            "none" => Formula::Gelu,
            "tanh" => Formula::GeluTanh,
            other => bail!(Unsupported, "Gelu approximate='{other}' is not supported (only 'none' and 'tanh')"),
        },
        "Swish" => Formula::Swish { alpha: float("alpha", 1.0)? },
        "Shrink" => Formula::Shrink { lambd: float("lambd", 0.5)?, bias: float("bias", 0.0)? },
        other => bail!(Unsupported, "{other} is not an elementwise activation"),
    };
    if let Formula::Celu { alpha: 0.0 } = formula {
        bail!(InvalidModel, "Celu alpha must not be 0");
    }
    Ok(Box::new(FloatActivation { op_type: ctx.op_type.to_string(), formula }))
}

#[derive(Debug)]
pub struct FloatActivation {
    pub op_type: String,
    pub formula: Formula,
}

impl Op for FloatActivation {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let f = self.formula;
        // Shrink alone also takes integers: computed in f64, converted back with saturation.
        let ints_ok = matches!(f, Formula::Shrink { .. });
        if x.dtype().is_int() && !ints_ok {
            bail!(Unsupported, "{} does not take {}", self.op_type, x.dtype());
        }
        dispatch!(x.dtype(); T => Ok(vec![map::<T>(x, |v| T::from_f64(f.apply(v.to_f64())))?]);
            numeric;
            else => bail!(Unsupported, "{} does not take {}", self.op_type, x.dtype()))
    }
}

/// `x * slope` in T: exact float products rounded once, and wrapping integer products.
fn mul<T: Scalar>(x: T, slope: T) -> T {
    if T::DTYPE.is_float() {
        T::from_f64(x.to_f64() * slope.to_f64())
    } else {
        T::from_i64(x.to_i64().wrapping_mul(slope.to_i64()))
    }
}

#[derive(Debug)]
pub struct PRelu {
    /// Before opset 7 a 1-D slope of length C applied along axis 1 (PyTorch's per-channel PReLU);
    /// from 7 it broadcasts numpy-style, unidirectionally to X.
    slope_per_channel: bool,
}

impl PRelu {
    fn aligned_slope<'a>(&self, x: &Tensor, slope: &'a Tensor) -> Result<Cow<'a, Tensor>> {
        let channels = x.shape().get(1).copied();
        if self.slope_per_channel && slope.rank() == 1 && slope.len() > 1 && Some(slope.len()) == channels {
            let mut shape = vec![1; x.rank() - 1];
            shape[0] = slope.len();
            return Ok(Cow::Owned(slope.clone().reshape(shape)?));
        }
        Ok(Cow::Borrowed(slope))
    }
}

impl Op for PRelu {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let slope = self.aligned_slope(x, input(inputs, 1)?)?;
        if slope.dtype() != x.dtype() {
            bail!(Shape, "PRelu slope is {}, X is {}", slope.dtype(), x.dtype());
        }
        if broadcast_shapes(x.shape(), slope.shape()).ok().as_deref() != Some(x.shape()) {
            bail!(Shape, "PRelu slope of shape {:?} does not broadcast to X's shape {:?}", slope.shape(), x.shape());
        }
        dispatch!(x.dtype(); T => Ok(vec![binary::<T, T, T>(x, &slope, |&v, &s| if v < T::zero() { mul(v, s) } else { v })?]);
            numeric;
            else => bail!(Unsupported, "PRelu does not take {}", x.dtype()))
    }
}

fn build_clip(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset >= 11 {
        return Ok(Box::new(Clip { attribute_bounds: None }));
    }
    // Opset 6 defaulted to the float32 range; opset 1 had no defaults, i.e. no bound.
    let limit = if ctx.opset < 6 { f32::INFINITY } else { f32::MAX };
    let min = ctx.attrs.float_or("min", -limit)?;
    let max = ctx.attrs.float_or("max", limit)?;
    Ok(Box::new(Clip { attribute_bounds: Some((min, max)) }))
}

#[derive(Debug)]
pub struct Clip {
    /// Before opset 11 the bounds were float attributes; from 11 they are optional inputs.
    pub attribute_bounds: Option<(f32, f32)>,
}

/// Clip's optional bound input `i`, which must hold exactly one element of X's dtype.
fn bound<T: Scalar>(inputs: &[Option<&Tensor>], i: usize, name: &str) -> Result<Option<T>> {
    let Some(t) = opt_input(inputs, i) else { return Ok(None) };
    if t.dtype() != T::DTYPE {
        bail!(Shape, "Clip {name} is {}, input is {}", t.dtype(), T::DTYPE);
    }
    match t.as_slice::<T>()? {
        [v] => Ok(Some(*v)),
        _ => bail!(Shape, "Clip {name} must be a single value, got shape {:?}", t.shape()),
    }
}

impl Op for Clip {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        dispatch!(x.dtype(); T => {
            let (lo, hi) = match self.attribute_bounds {
                Some((lo, hi)) => (Some(T::from_f64(lo.into())), Some(T::from_f64(hi.into()))),
                None => (bound::<T>(inputs, 1, "min")?, bound::<T>(inputs, 2, "max")?),
            };
            // Max with `min` first, then min with `max`: when min > max every element becomes max.
            let clip = |v: T| {
                let v = match lo { Some(lo) if v < lo => lo, _ => v };
                match hi { Some(hi) if v > hi => hi, _ => v }
            };
            Ok(vec![map::<T>(x, clip)?])
        }; numeric; else => bail!(Unsupported, "Clip does not take {}", x.dtype()))
    }
}

/// `Swish_alpha(A) · B` for two inputs of one shape (no broadcasting), computed in f64.
#[derive(Debug)]
pub struct SwiGlu {
    alpha: f64,
}

impl SwiGlu {
    fn run<T: Scalar>(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let y = a
            .as_slice::<T>()?
            .iter()
            .zip(b.as_slice::<T>()?)
            .map(|(&a, &b)| {
                let a = a.to_f64();
                T::from_f64(a * sigmoid(self.alpha * a) * b.to_f64())
            })
            .collect();
        Tensor::new(a.shape().to_vec(), y)
    }
}

impl Op for SwiGlu {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        if let (Some(sa), Some(sb)) = (a.concrete_shape(), b.concrete_shape()) {
            if sa != sb {
                bail!(Shape, "SwiGLU: A {sa:?} and B {sb:?} must have the same shape");
            }
        }
        same_as_input(inputs)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        if a.shape() != b.shape() || a.dtype() != b.dtype() {
            bail!(
                Shape,
                "SwiGLU: A {:?} ({}) and B {:?} ({}) must have the same shape and type",
                a.shape(),
                a.dtype(),
                b.shape(),
                b.dtype()
            );
        }
        let y = dispatch!(a.dtype(); T => self.run::<T>(a, b)?; float;
            else => bail!(Unsupported, "SwiGLU does not take {}", a.dtype()));
        Ok(vec![y])
    }
}

fn build_dropout(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    // Before opset 7, `is_test` chose between training and inference; this runtime only infers,
    // as every other runtime does for these old exports.
    Ok(Box::new(Dropout {
        ratio_from_attribute: (ctx.opset < 12).then(|| ctx.attrs.float_or("ratio", 0.5)).transpose()?,
        bool_mask: ctx.opset >= 10,
        wants_mask: ctx.num_outputs > 1,
    }))
}

#[derive(Debug)]
pub struct Dropout {
    /// Before opset 12 the ratio was an attribute; from 12 it is an optional input (default 0.5).
    ratio_from_attribute: Option<f32>,
    /// From opset 10 the mask is bool; before, it had X's dtype.
    bool_mask: bool,
    wants_mask: bool,
}

/// The only element of a one-element tensor, as f64.
fn single_f64(t: &Tensor, what: &str) -> Result<f64> {
    match t.to_f64_vec()?.as_slice() {
        [v] => Ok(*v),
        _ => bail!(Shape, "{what} must be a single value, got shape {:?}", t.shape()),
    }
}

impl Op for Dropout {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let mask_dtype = if self.bool_mask { Some(DType::Bool) } else { x.dtype };
        let mask = Fact { dtype: mask_dtype, shape: x.shape.clone(), value: None };
        Ok(vec![x.clone(), mask])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let training = match opt_input(inputs, 2) {
            Some(t) => single_f64(t, "Dropout training_mode")? != 0.0,
            None => false,
        };
        if training {
            let ratio = match (self.ratio_from_attribute, opt_input(inputs, 1)) {
                (Some(r), _) => f64::from(r),
                (None, Some(t)) => single_f64(t, "Dropout ratio")?,
                (None, None) => 0.5,
            };
            if ratio != 0.0 {
                bail!(Unsupported, "Dropout in training mode (ratio {ratio}) is not supported: it is random");
            }
        }
        let mut outputs = vec![x.clone()];
        if self.wants_mask {
            let n = checked_len(x.shape(), DType::Bool)?;
            let mask = if self.bool_mask {
                Tensor::new(x.shape().to_vec(), try_vec(n, true)?)?
            } else {
                dispatch!(x.dtype(); T => Tensor::new(x.shape().to_vec(), try_vec(n, T::one())?)?;
                    float; else => bail!(Unsupported, "Dropout does not take {}", x.dtype()))
            };
            outputs.push(mask);
        }
        Ok(outputs)
    }
}

/// Test helpers shared by this op family's files (activation, softmax, cast, constant).
#[cfg(test)]
pub(crate) mod test_util {
    use super::{BuildCtx, Op};
    use crate::ir::{Attr, Attributes};
    use crate::Result;

    /// Builds `op_type` through the registry, as the importer would.
    pub fn build(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, num_outputs: usize) -> Result<Box<dyn Op>> {
        let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
        let ctx = BuildCtx { op_type, domain: "", opset, attrs: &attrs, num_inputs: 1, num_outputs };
        match crate::ops::registry().get("", op_type) {
            Some(builder) => builder(&ctx),
            None => panic!("{op_type} is not registered"),
        }
    }

    /// Builds a sequence/optional op at opset 18 and runs it on `inputs`, checking that it runs
    /// through `eval_data` only; returns its first output.
    pub fn run_data_op(
        op_type: &str,
        attrs: Vec<(&str, Attr)>,
        inputs: &[Option<&crate::ir::Data>],
    ) -> Result<crate::ir::Data> {
        let op = build(op_type, 18, attrs, 1)?;
        assert!(!op.tensors_only());
        assert!(op.eval(&[]).is_err(), "{op_type} must run through eval_data only");
        Ok(op.eval_data(inputs)?.remove(0))
    }

    pub fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "got {got:?}, want {want:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{assert_close, build};
    use super::*;
    use crate::ir::{Attr, Dim};
    use crate::ErrorKind;
    use half::{bf16, f16};

    fn run(op: &dyn Op, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        op.eval(inputs)
    }

    fn run_f32(op_type: &str, attrs: Vec<(&str, Attr)>, x: &[f32]) -> Vec<f32> {
        let op = build(op_type, 22, attrs, 1).unwrap();
        let x = Tensor::vector(x.to_vec());
        run(op.as_ref(), &[Some(&x)]).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
    }

    // Expected values below come from numpy / onnx.reference (the formulas of the ONNX node tests).
    #[test]
    fn float_activations_match_numpy() {
        let x = [-1.0f32, 0.0, 1.0];
        assert_close(&run_f32("LeakyRelu", vec![("alpha", Attr::Float(0.1))], &x), &[-0.1, 0.0, 1.0]);
        assert_close(&run_f32("Sigmoid", vec![], &x), &[0.26894143, 0.5, 0.7310586]);
        let hs = vec![("alpha", Attr::Float(0.5)), ("beta", Attr::Float(0.6))];
        assert_close(&run_f32("HardSigmoid", hs, &x), &[0.1, 0.6, 1.0]);
        assert_close(&run_f32("HardSwish", vec![], &[-4.0, -1.0, 1.0, 4.0]), &[0.0, -0.33333334, 0.6666667, 4.0]);
        assert_close(&run_f32("Tanh", vec![], &x), &[-0.7615942, 0.0, 0.7615942]);
        assert_close(&run_f32("Elu", vec![("alpha", Attr::Float(2.0))], &x), &[-1.2642411, 0.0, 1.0]);
        let selu = vec![("alpha", Attr::Float(2.0)), ("gamma", Attr::Float(3.0))];
        assert_close(&run_f32("Selu", selu, &x), &[-3.7927232, 0.0, 3.0]);
        assert_close(&run_f32("Selu", vec![], &x), &[-1.1113307, 0.0, 1.050701]);
        assert_close(&run_f32("Celu", vec![("alpha", Attr::Float(2.0))], &x), &[-0.7869387, 0.0, 1.0]);
        assert_close(&run_f32("Softplus", vec![], &x), &[0.31326166, std::f32::consts::LN_2, 1.3132616]);
        assert_close(&run_f32("Softsign", vec![], &x), &[-0.5, 0.0, 0.5]);
        let tr = vec![("alpha", Attr::Float(2.0))];
        assert_close(&run_f32("ThresholdedRelu", tr, &[-1.5, 0.0, 1.2, 2.0, 2.2]), &[0.0, 0.0, 0.0, 0.0, 2.2]);
        assert_close(&run_f32("Mish", vec![], &x), &[-0.30340144, 0.0, 0.86509836]);
        assert_close(&run_f32("Gelu", vec![], &x), &[-0.15865526, 0.0, 0.8413447]);
        let tanh = vec![("approximate", Attr::String("tanh".into()))];
        assert_close(&run_f32("Gelu", tanh, &x), &[-0.15880796, 0.0, 0.841192]);
        assert_close(&run_f32("Swish", vec![("alpha", Attr::Float(2.0))], &x), &[-0.11920292, 0.0, 0.8807971]);
        let soft = vec![("lambd", Attr::Float(1.5)), ("bias", Attr::Float(1.5))];
        assert_close(&run_f32("Shrink", soft, &[-2.0, -1.0, 0.0, 1.0, 2.0]), &[-0.5, 0.0, 0.0, 0.0, 0.5]);
    }

    #[test]
    fn extremes_stay_finite_and_accurate() {
        let x = [-1000.0f32, 1000.0];
        assert_eq!(run_f32("Sigmoid", vec![], &x), vec![0.0, 1.0]);
        assert_eq!(run_f32("Softplus", vec![], &x), vec![0.0, 1000.0]);
        assert_eq!(run_f32("Mish", vec![], &x), vec![-0.0, 1000.0]);
        // Python: 0.5 * -5 * math.erfc(5 / math.sqrt(2)) = -1.4332578e-06; relative accuracy matters here.
        let g = run_f32("Gelu", vec![], &[-5.0])[0];
        assert!((g / -1.433_257_8e-6 - 1.0).abs() < 1e-5, "{g}");
    }

    #[test]
    fn half_types_compute_in_wide_precision() {
        let op = build("Celu", 22, vec![], 1).unwrap();
        let x = Tensor::vector(vec![f16::from_f32(-1.0), f16::from_f32(2.0)]);
        let y = run(op.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<f16>().unwrap(), &[f16::from_f32(-0.6321206), f16::from_f32(2.0)]);
        let x = Tensor::vector(vec![bf16::from_f32(-1.0)]);
        let y = run(build("Elu", 22, vec![], 1).unwrap().as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<bf16>().unwrap(), &[bf16::from_f32(-0.6321206)]);
    }

    #[test]
    fn float_activations_refuse_integers_and_bad_attributes() {
        let op = build("Sigmoid", 13, vec![], 1).unwrap();
        let e = run(op.as_ref(), &[Some(&Tensor::vector(vec![1i32]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("Sigmoid does not take int32"), "{e}");
        let e = build("Gelu", 20, vec![("approximate", Attr::String("fast".into()))], 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let e = build("Elu", 6, vec![("alpha", Attr::Int(1))], 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert!(build("Celu", 12, vec![("alpha", Attr::Float(0.0))], 1).is_err());
    }

    #[test]
    fn shrink_takes_integers() {
        let op = build("Shrink", 9, vec![("lambd", Attr::Float(1.0)), ("bias", Attr::Float(1.0))], 1).unwrap();
        let x = Tensor::vector(vec![-3i8, -1, 0, 1, 3]);
        let y = run(op.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<i8>().unwrap(), &[-2, 0, 0, 0, 2]);
    }

    #[test]
    fn prelu_broadcasts_slope_to_x() {
        let op = build("PRelu", 16, vec![], 1).unwrap();
        let x = Tensor::new(vec![2, 2], vec![-1.0f32, 2.0, -3.0, -4.0]).unwrap();
        let slope = Tensor::vector(vec![0.5f32, 0.25]);
        let y = run(op.as_ref(), &[Some(&x), Some(&slope)]).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[-0.5, 2.0, -1.5, -1.0]);
        let xi = Tensor::vector(vec![-2i64, 3]);
        let si = Tensor::scalar(3i64);
        let y = run(op.as_ref(), &[Some(&xi), Some(&si)]).unwrap();
        assert_eq!(y[0].as_slice::<i64>().unwrap(), &[-6, 3]);
    }

    #[test]
    fn prelu_before_opset_7_is_per_channel() {
        let op = build("PRelu", 6, vec![], 1).unwrap();
        let x = Tensor::new(vec![1, 2, 3], vec![-1.0f32, -1.0, -1.0, -2.0, -2.0, 2.0]).unwrap();
        let slope = Tensor::vector(vec![0.5f32, 0.25]);
        let y = run(op.as_ref(), &[Some(&x), Some(&slope)]).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[-0.5, -0.5, -0.5, -0.5, -0.5, 2.0]);
    }

    #[test]
    fn prelu_rejects_slope_that_would_grow_x() {
        let op = build("PRelu", 16, vec![], 1).unwrap();
        let x = Tensor::vector(vec![-1.0f32, 1.0]);
        let slope = Tensor::new(vec![3, 1], vec![1.0f32; 3]).unwrap();
        let e = run(op.as_ref(), &[Some(&x), Some(&slope)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        let e = run(op.as_ref(), &[Some(&x), Some(&Tensor::scalar(1.0f64))]).unwrap_err();
        assert!(e.message.contains("slope is float64"), "{e}");
    }

    #[test]
    fn clip_with_inputs_attributes_and_integers() {
        let op = build("Clip", 13, vec![], 1).unwrap();
        let x = Tensor::vector(vec![-2.0f32, 0.0, 6.0, f32::NAN]);
        let (lo, hi) = (Tensor::scalar(-1.0f32), Tensor::scalar(1.0f32));
        let y = run(op.as_ref(), &[Some(&x), Some(&lo), Some(&hi)]).unwrap();
        let y = y[0].as_slice::<f32>().unwrap();
        assert_eq!(&y[..3], &[-1.0, 0.0, 1.0]);
        assert!(y[3].is_nan());
        // min > max: everything becomes max (numpy's clip, as in test_clip_min_greater_than_max).
        let (lo, hi) = (Tensor::scalar(2.0f32), Tensor::scalar(1.0f32));
        let y = run(op.as_ref(), &[Some(&x), Some(&lo), Some(&hi)]).unwrap();
        assert_eq!(&y[0].as_slice::<f32>().unwrap()[..3], &[1.0, 1.0, 1.0]);
        let xi = Tensor::vector(vec![-5i8, 0, 5]);
        let y = run(op.as_ref(), &[Some(&xi), None, Some(&Tensor::scalar(0i8))]).unwrap();
        assert_eq!(y[0].as_slice::<i8>().unwrap(), &[-5, 0, 0]);
        let old = build("Clip", 6, vec![("min", Attr::Float(-0.5)), ("max", Attr::Float(0.5))], 1).unwrap();
        let y = run(old.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(&y[0].as_slice::<f32>().unwrap()[..3], &[-0.5, 0.0, 0.5]);
        let y = run(build("Clip", 6, vec![], 1).unwrap().as_ref(), &[Some(&Tensor::vector(vec![f32::INFINITY]))]);
        assert_eq!(y.unwrap()[0].as_slice::<f32>().unwrap(), &[f32::MAX]);
    }

    #[test]
    fn clip_rejects_bad_bounds() {
        let op = build("Clip", 13, vec![], 1).unwrap();
        let x = Tensor::vector(vec![1.0f32]);
        let e = run(op.as_ref(), &[Some(&x), Some(&Tensor::vector(vec![0.0f32, 1.0]))]).unwrap_err();
        assert!(e.message.contains("Clip min must be a single value"), "{e}");
        let e = run(op.as_ref(), &[Some(&x), None, Some(&Tensor::scalar(1i64))]).unwrap_err();
        assert!(e.message.contains("Clip max is int64"), "{e}");
        let e = run(op.as_ref(), &[Some(&Tensor::vector(vec![true]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
    }

    #[test]
    fn dropout_is_identity_with_an_all_true_mask() {
        let x = Tensor::vector(vec![-1.0f32, 0.0, 1.0]);
        let op = build("Dropout", 13, vec![("seed", Attr::Int(0))], 2).unwrap();
        let y = run(op.as_ref(), &[Some(&x), Some(&Tensor::scalar(0.1f32))]).unwrap();
        assert_eq!(y[0], x);
        assert_eq!(y[1].as_slice::<bool>().unwrap(), &[true, true, true]);
        let old = build("Dropout", 7, vec![("ratio", Attr::Float(0.2))], 2).unwrap();
        let y = run(old.as_ref(), &[Some(&x)]).unwrap();
        assert_eq!(y[1].as_slice::<f32>().unwrap(), &[1.0, 1.0, 1.0]);
        let single = build("Dropout", 11, vec![], 1).unwrap();
        assert_eq!(run(single.as_ref(), &[Some(&x)]).unwrap().len(), 1);
        let facts = old.infer(&[Some(&Fact::concrete(DType::F32, &[3]))]).unwrap();
        assert_eq!(facts[1].dtype, Some(DType::F32));
        assert_eq!(facts[1].shape, Some(vec![Dim::Known(3)]));
    }

    #[test]
    fn dropout_training_needs_zero_ratio() {
        let x = Tensor::vector(vec![1.0f32, 2.0]);
        let op = build("Dropout", 13, vec![], 1).unwrap();
        let yes = Tensor::scalar(true);
        let y = run(op.as_ref(), &[Some(&x), Some(&Tensor::scalar(0.0f32)), Some(&yes)]).unwrap();
        assert_eq!(y[0], x);
        let e = run(op.as_ref(), &[Some(&x), Some(&Tensor::scalar(0.5f32)), Some(&yes)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let e = run(op.as_ref(), &[Some(&x), None, Some(&yes)]).unwrap_err();
        assert!(e.message.contains("ratio 0.5"), "{e}");
        let e = run(op.as_ref(), &[Some(&x), None, Some(&Tensor::vector(vec![true, false]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
    }

    #[test]
    fn swiglu_gates_b_with_swish_of_a() {
        // numpy: a * sigmoid(alpha * a) * b.
        let a = Tensor::vector(vec![1.0f32, -2.0, 0.5]);
        let b = Tensor::vector(vec![0.5f32, 1.0, 2.0]);
        let y = build("SwiGLU", 28, vec![], 1).unwrap().eval(&[Some(&a), Some(&b)]).unwrap();
        assert_close(y[0].as_slice::<f32>().unwrap(), &[0.3655293, -0.23840584, 0.62245933]);
        let y = build("SwiGLU", 28, vec![("alpha", Attr::Float(0.5))], 1).unwrap().eval(&[Some(&a), Some(&b)]).unwrap();
        assert_close(y[0].as_slice::<f32>().unwrap(), &[0.31122967, -0.53788284, 0.5621765]);
        let short = Tensor::vector(vec![1.0f32]);
        let e = build("SwiGLU", 28, vec![], 1).unwrap().eval(&[Some(&a), Some(&short)]).unwrap_err();
        assert!(e.message.contains("same shape"), "{e}");
    }
}
