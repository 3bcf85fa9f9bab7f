//! Elementwise unary math: Exp, Log, Sqrt, the trigonometric and hyperbolic functions, Erf, Floor,
//! Ceil, Round, Reciprocal (floats); Abs, Neg, Sign (numbers); IsNaN, IsInf (floats to bool).

use super::binary::{check_dtype, Arith};
use super::{input, Op, Registry};
use crate::ir::{DType, Elem, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};
use half::{bf16, f16};
use std::f64::consts::FRAC_2_SQRT_PI;

/// Registers a float function per op: the same body is compiled for f32 (which float16 and bfloat16
/// also use) and for f64.
macro_rules! float_unary {
    ($r:ident; $($op:literal => |$x:ident| $body:expr),* $(,)?) => {$(
        $r.add($op, |_| Ok(Box::new(FloatFn { name: $op, f32: |$x: f32| $body, f64: |$x: f64| $body })));
    )*};
}

pub fn register(r: &mut Registry) {
    float_unary!(r;
        "Exp" => |x| x.exp(),
        "Log" => |x| x.ln(),
        "Sqrt" => |x| x.sqrt(),
        "Reciprocal" => |x| x.recip(),
        "Floor" => |x| x.floor(),
        "Ceil" => |x| x.ceil(),
        "Round" => |x| x.round_ties_even(),
        "Sin" => |x| x.sin(),
        "Cos" => |x| x.cos(),
        "Tan" => |x| x.tan(),
        "Asin" => |x| x.asin(),
        "Acos" => |x| x.acos(),
        "Atan" => |x| x.atan(),
        "Sinh" => |x| x.sinh(),
        "Cosh" => |x| x.cosh(),
        "Asinh" => |x| x.asinh(),
        "Acosh" => |x| x.acosh(),
        "Atanh" => |x| x.atanh(),
        "Erf" => |x| x.gauss_erf(),
    );
    r.add("Abs", |_| Ok(Box::new(Signed::Abs)));
    r.add("Neg", |_| Ok(Box::new(Signed::Neg)));
    r.add("Sign", |_| Ok(Box::new(Signed::Sign)));
    r.add("IsNaN", |_| Ok(Box::new(Classify { name: "IsNaN", nan: true, pos_inf: false, neg_inf: false })));
    r.add("IsInf", |c| {
        let pos_inf = c.attrs.int_or("detect_positive", 1)? != 0;
        let neg_inf = c.attrs.int_or("detect_negative", 1)? != 0;
        Ok(Box::new(Classify { name: "IsInf", nan: false, pos_inf, neg_inf }))
    });
}

/// Float element types. float16 and bfloat16 compute in f32 and round once at the end.
pub trait Float: Scalar {
    fn map_with(self, f32: impl Fn(f32) -> f32, f64: impl Fn(f64) -> f64) -> Self;
    fn zip_with(self, b: Self, f32: impl Fn(f32, f32) -> f32, f64: impl Fn(f64, f64) -> f64) -> Self;
}

impl Float for f32 {
    fn map_with(self, f32: impl Fn(f32) -> f32, _: impl Fn(f64) -> f64) -> f32 {
        f32(self)
    }
    fn zip_with(self, b: f32, f32: impl Fn(f32, f32) -> f32, _: impl Fn(f64, f64) -> f64) -> f32 {
        f32(self, b)
    }
}

impl Float for f64 {
    fn map_with(self, _: impl Fn(f32) -> f32, f64: impl Fn(f64) -> f64) -> f64 {
        f64(self)
    }
    fn zip_with(self, b: f64, _: impl Fn(f32, f32) -> f32, f64: impl Fn(f64, f64) -> f64) -> f64 {
        f64(self, b)
    }
}

macro_rules! impl_half_float {
    ($($t:ty),*) => {$(
        impl Float for $t {
            fn map_with(self, f32: impl Fn(f32) -> f32, _: impl Fn(f64) -> f64) -> $t {
                <$t>::from_f32(f32(self.to_f32()))
            }
            fn zip_with(self, b: $t, f32: impl Fn(f32, f32) -> f32, _: impl Fn(f64, f64) -> f64) -> $t {
                <$t>::from_f32(f32(self.to_f32(), b.to_f32()))
            }
        }
    )*};
}
impl_half_float!(f16, bf16);

/// Applies `f` to every element; the result keeps the shape.
pub(crate) fn map<T: Scalar, O: Elem>(x: &Tensor, f: impl Fn(T) -> O) -> Result<Tensor> {
    Tensor::new(x.shape().to_vec(), x.as_slice::<T>()?.iter().map(|&v| f(v)).collect())
}

/// The output fact of an elementwise unary op: the input's shape, and `out` (or the input's) dtype.
pub(crate) fn map_fact(op: &str, x: &Fact, takes: impl Fn(DType) -> bool, out: Option<DType>) -> Result<Vec<Fact>> {
    check_dtype(op, x.dtype, takes)?;
    Ok(vec![Fact { dtype: out.or(x.dtype), shape: x.shape.clone(), value: None }])
}

/// A float function, with its f32 and f64 versions.
pub struct FloatFn {
    pub name: &'static str,
    f32: fn(f32) -> f32,
    f64: fn(f64) -> f64,
}

impl std::fmt::Debug for FloatFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Op for FloatFn {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        map_fact(self.name, input(inputs, 0)?, DType::is_float, None)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        dispatch!(x.dtype(); T => Ok(vec![map(x, |v: T| v.map_with(self.f32, self.f64))?]); float;
            else => bail!(Unsupported, "{} does not take {} inputs", self.name, x.dtype()))
    }
}

/// Ops defined for integers as well as floats.
#[derive(Debug, Clone, Copy)]
enum Signed {
    Abs,
    Neg,
    Sign,
}

impl Signed {
    fn name(self) -> &'static str {
        match self {
            Signed::Abs => "Abs",
            Signed::Neg => "Neg",
            Signed::Sign => "Sign",
        }
    }

    fn takes(self, dt: DType) -> bool {
        match self {
            Signed::Neg => dt.is_float() || dt.is_signed_int(),
            _ => dt.is_float() || dt.is_int(),
        }
    }
}

impl Op for Signed {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        map_fact(self.name(), input(inputs, 0)?, |d| self.takes(d), None)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        check_dtype(self.name(), Some(x.dtype()), |d| self.takes(d))?;
        let out = dispatch!(x.dtype(); T => match self {
                Signed::Abs => map(x, <T as Arith>::abs)?,
                Signed::Neg => map(x, <T as Arith>::neg)?,
                Signed::Sign => map(x, sign::<T>)?,
            }; numeric;
            else => bail!(Unsupported, "{} does not take {} inputs", self.name(), x.dtype()));
        Ok(vec![out])
    }
}

/// -1, 0 or 1; NaN stays NaN.
fn sign<T: Scalar>(v: T) -> T {
    if v > T::zero() {
        T::one()
    } else if v < T::zero() {
        T::from_i64(-1)
    } else {
        v
    }
}

/// IsNaN and IsInf: which float classes map to true.
#[derive(Debug)]
struct Classify {
    name: &'static str,
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
}

impl Op for Classify {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        map_fact(self.name, input(inputs, 0)?, DType::is_float, Some(DType::Bool))
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        // Every float type widens to f64 exactly, keeping NaN and infinities.
        let test = |v: f64| {
            (self.nan && v.is_nan()) || (self.pos_inf && v == f64::INFINITY) || (self.neg_inf && v == f64::NEG_INFINITY)
        };
        dispatch!(x.dtype(); T => Ok(vec![map(x, |v: T| test(v.to_f64()))?]); float;
            else => bail!(Unsupported, "{} does not take {} inputs", self.name, x.dtype()))
    }
}

/// The error function, under its own name: std's `erf` is not stable.
trait GaussErf {
    fn gauss_erf(self) -> Self;
}

impl GaussErf for f64 {
    fn gauss_erf(self) -> f64 {
        erf(self)
    }
}

impl GaussErf for f32 {
    fn gauss_erf(self) -> f32 {
        erf(self as f64) as f32
    }
}

/// erf to within a few ulps: a series with only positive terms below 2, a continued fraction for
/// erfc from 2 to 6, and ±1 beyond, where erfc is under half an ulp of 1.
pub(crate) fn erf(x: f64) -> f64 {
    let a = x.abs();
    let magnitude = if a.is_nan() {
        return x;
    } else if a < 2.0 {
        // erf(a) = 2/sqrt(pi) e^(-a^2) sum_n 2^n a^(2n+1) / (1*3*...*(2n+1))
        let a2 = a * a;
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * a2 / (2.0 * n + 1.0);
            sum += term;
        }
        FRAC_2_SQRT_PI * (-a2).exp() * sum
    } else if a < 6.0 {
        // erfc(a) = e^(-a^2)/sqrt(pi) 2a / (2a^2+1 - 1*2/(2a^2+5 - 3*4/(2a^2+9 - ...))), evaluated
        // from the 20th level up, which converges to double precision for a >= 2.
        let y = 2.0 * a * a;
        let mut denom = y + 1.0 + 4.0 * 20.0;
        for k in (1..=20).rev() {
            let k = k as f64;
            denom = y + 1.0 + 4.0 * (k - 1.0) - (2.0 * k - 1.0) * (2.0 * k) / denom;
        }
        1.0 - FRAC_2_SQRT_PI * (-a * a).exp() * a / denom
    } else {
        1.0
    };
    magnitude.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::super::binary::testing::{infer, run, values};
    use super::*;
    use crate::ir::{Attr, Dim};
    use crate::ErrorKind;

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "got {got:?}, want {want:?}");
        }
    }

    fn run_f32(op: &str, x: &[f32]) -> Vec<f32> {
        values(&run(op, vec![], &[&Tensor::vector(x.to_vec())]).unwrap())
    }

    #[test]
    #[allow(clippy::approx_constant)] // numpy's printed values, pasted as they are
    fn float_functions_match_numpy() {
        // Values from numpy (float32).
        close(&run_f32("Exp", &[-1., 0., 1.]), &[0.36787942, 1., 2.718282]);
        close(&run_f32("Log", &[1., 10.]), &[0., 2.3025851]);
        close(&run_f32("Sqrt", &[1., 4., 9.]), &[1., 2., 3.]);
        close(&run_f32("Reciprocal", &[-4., 2.]), &[-0.25, 0.5]);
        close(&run_f32("Floor", &[-1.5, 1.2, 2.]), &[-2., 1., 2.]);
        close(&run_f32("Ceil", &[-1.5, 1.2]), &[-1., 2.]);
        close(&run_f32("Sin", &[-1., 0., 1.]), &[-0.841471, 0., 0.841471]);
        close(&run_f32("Cos", &[-1., 0., 1.]), &[0.5403023, 1., 0.5403023]);
        close(&run_f32("Tan", &[-1., 0., 1.]), &[-1.5574077, 0., 1.5574077]);
        close(&run_f32("Asin", &[-0.5, 0., 0.5]), &[-0.5235988, 0., 0.5235988]);
        close(&run_f32("Acos", &[-0.5, 0., 0.5]), &[2.0943952, 1.5707964, 1.0471976]);
        close(&run_f32("Atan", &[-1., 0., 1.]), &[-0.7853982, 0., 0.7853982]);
        close(&run_f32("Sinh", &[-1., 0., 1.]), &[-1.1752012, 0., 1.1752012]);
        close(&run_f32("Cosh", &[-1., 0., 1.]), &[1.5430807, 1., 1.5430807]);
        close(&run_f32("Asinh", &[-1., 0., 1.]), &[-0.8813736, 0., 0.8813736]);
        close(&run_f32("Acosh", &[10., std::f32::consts::E, 1.]), &[2.993223, 1.6574544, 0.]);
        close(&run_f32("Atanh", &[-0.5, 0., 0.5]), &[-0.54930615, 0., 0.54930615]);
    }

    #[test]
    fn round_is_half_to_even() {
        let x = [0.1, 0.5, 0.9, 1.2, 1.5, 1.8, 2.3, 2.5, 2.7, -1.1, -1.5, -1.9, -2.2, -2.5, -2.8];
        let want = [0., 0., 1., 1., 2., 2., 2., 2., 3., -1., -2., -2., -2., -2., -3.];
        assert_eq!(run_f32("Round", &x), want);
    }

    #[test]
    fn erf_matches_math_erf() {
        // Python math.erf at these points.
        let points = [
            (0.0, 0.0),
            (1e-10, 1.1283791670955126e-10),
            (0.3, 0.3286267594591274),
            (-1.0, -0.8427007929497149),
            (1.9999, 0.9953201979070294),
            (2.0, 0.9953222650189527),
            (3.5, 0.9999992569016276),
            (5.9, 0.9999999999999999),
            (-7.0, -1.0),
        ];
        for (x, want) in points {
            let got = erf(x);
            assert!((got - want).abs() <= 4.0 * f64::EPSILON * want.abs().max(1e-300), "erf({x}) = {got}, want {want}");
        }
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::INFINITY), 1.0);
        close(&run_f32("Erf", &[-0.5, 0.5, 1.5]), &[-0.5204999, 0.5204999, 0.96610516]);
    }

    #[test]
    fn half_precision_computes_in_f32() {
        let x = Tensor::vector(vec![f16::from_f32(0.25), f16::from_f32(4.0)]);
        let y = run("Sqrt", vec![], &[&x]).unwrap();
        assert_eq!(values::<f16>(&y), [f16::from_f32(0.5), f16::from_f32(2.0)]);
        let x = Tensor::vector(vec![bf16::from_f32(-2.5), bf16::from_f32(3.5)]);
        assert_eq!(values::<bf16>(&run("Round", vec![], &[&x]).unwrap()), [bf16::from_f32(-2.0), bf16::from_f32(4.0)]);
        let x = Tensor::vector(vec![1f64, 2.0]);
        assert_eq!(values::<f64>(&run("Log", vec![], &[&x]).unwrap()), [0.0, std::f64::consts::LN_2]);
    }

    #[test]
    fn abs_neg_sign_take_integers() {
        let x = Tensor::vector(vec![-3i8, 0, 5, i8::MIN]);
        assert_eq!(values::<i8>(&run("Abs", vec![], &[&x]).unwrap()), [3, 0, 5, i8::MIN]);
        assert_eq!(values::<i8>(&run("Neg", vec![], &[&x]).unwrap()), [3, 0, -5, i8::MIN]);
        assert_eq!(values::<i8>(&run("Sign", vec![], &[&x]).unwrap()), [-1, 0, 1, -1]);
        let u = Tensor::vector(vec![0u32, 7]);
        assert_eq!(values::<u32>(&run("Sign", vec![], &[&u]).unwrap()), [0, 1]);
        assert_eq!(values::<u32>(&run("Abs", vec![], &[&u]).unwrap()), [0, 7]);
        let f = run_f32("Sign", &[-5., -0.5, 0., 2., f32::NAN]);
        assert_eq!(f[..4], [-1., -1., 0., 1.]);
        assert!(f[4].is_nan());
        assert_eq!(run_f32("Abs", &[-1.5, 2.]), [1.5, 2.]);
        assert!(run_f32("Neg", &[0.])[0].is_sign_negative());
    }

    #[test]
    fn isnan_isinf() {
        let x = Tensor::vector(vec![-1.2f32, f32::NAN, f32::INFINITY, 2.8, f32::NEG_INFINITY]);
        assert_eq!(values::<bool>(&run("IsNaN", vec![], &[&x]).unwrap()), [false, true, false, false, false]);
        assert_eq!(values::<bool>(&run("IsInf", vec![], &[&x]).unwrap()), [false, false, true, false, true]);
        let pos = vec![("detect_negative", Attr::Int(0))];
        assert_eq!(values::<bool>(&run("IsInf", pos, &[&x]).unwrap()), [false, false, true, false, false]);
        let neg = vec![("detect_positive", Attr::Int(0))];
        assert_eq!(values::<bool>(&run("IsInf", neg, &[&x]).unwrap()), [false, false, false, false, true]);
        let h = Tensor::vector(vec![f16::NAN, f16::INFINITY, f16::ONE]);
        assert_eq!(values::<bool>(&run("IsNaN", vec![], &[&h]).unwrap()), [true, false, false]);
    }

    #[test]
    fn wrong_dtypes_are_errors() {
        let ints = Tensor::vector(vec![1i32, 2]);
        let e = run("Exp", vec![], &[&ints]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("Exp does not take int32"), "{e}");
        assert!(run("Neg", vec![], &[&Tensor::vector(vec![1u8])]).is_err());
        assert!(run("IsNaN", vec![], &[&ints]).is_err());
        assert!(run("Abs", vec![], &[&Tensor::vector(vec![true])]).is_err());
        assert!(infer("Sqrt", &[&Fact::new(DType::I64, vec![])]).is_err());
    }

    #[test]
    fn infer_keeps_shape() {
        let x = Fact::new(DType::F16, vec![Dim::Symbol("N".into()), Dim::Known(3)]);
        let y = infer("Cos", &[&x]).unwrap();
        assert_eq!((y.dtype, y.shape), (Some(DType::F16), x.shape.clone()));
        let y = infer("IsInf", &[&x]).unwrap();
        assert_eq!((y.dtype, y.shape), (Some(DType::Bool), x.shape.clone()));
        let y = infer("Abs", &[&Fact::unknown()]).unwrap();
        assert_eq!((y.dtype, y.shape), (None, None));
    }
}
