//! The compute type of float kernels: f64 for float64 tensors, f32 for every narrower float
//! (float16 and bfloat16 are widened on the way in and rounded once on the way out).

use crate::ir::{DType, Scalar, Tensor};
use crate::{bail, dispatch, Result};
use std::borrow::Cow;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Sub};

/// f32 or f64, with the arithmetic and functions the NN kernels need.
pub trait Real:
    Scalar + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + AddAssign + MulAssign
{
    fn sqrt(self) -> Self;
    fn powf(self, p: Self) -> Self;
    fn abs(self) -> Self;
    fn recip(self) -> Self;
}

macro_rules! impl_real {
    ($($t:ty),*) => {$(
        impl Real for $t {
            fn sqrt(self) -> Self { <$t>::sqrt(self) }
            fn powf(self, p: Self) -> Self { <$t>::powf(self, p) }
            fn abs(self) -> Self { <$t>::abs(self) }
            fn recip(self) -> Self { <$t>::recip(self) }
        }
    )*};
}
impl_real!(f32, f64);

/// Whether a float kernel for `dtype` computes in f64 (true) or f32 (false); an error for non-float
/// dtypes names the op.
pub fn wants_f64(op: &str, dtype: DType) -> Result<bool> {
    match dtype {
        DType::F64 => Ok(true),
        DType::F32 | DType::F16 | DType::BF16 => Ok(false),
        other => bail!(Unsupported, "{op} does not take {other} tensors"),
    }
}

/// The elements of a float tensor in the compute type `R`, borrowed when no conversion is needed.
pub fn to_real<R: Real>(t: &Tensor) -> Result<Cow<'_, [R]>> {
    if let Ok(s) = t.as_slice::<R>() {
        return Ok(Cow::Borrowed(s));
    }
    dispatch!(t.dtype(); T => Ok(Cow::Owned(t.as_slice::<T>()?.iter().map(|v| R::from_f64(v.to_f64())).collect()));
        F32 | F64 | F16 | BF16;
        else => bail!(Unsupported, "expected a float tensor, got {}", t.dtype()))
}

/// A tensor of `dtype` from values computed in `R` (rounded once when `dtype` is narrower).
pub fn from_real<R: Real>(dtype: DType, shape: Vec<usize>, values: Vec<R>) -> Result<Tensor> {
    if dtype == R::DTYPE {
        return Tensor::new(shape, values);
    }
    dispatch!(dtype; T => Tensor::new(shape, values.into_iter().map(|v| T::from_f64(v.to_f64())).collect::<Vec<T>>());
        F32 | F64 | F16 | BF16;
        else => bail!(Unsupported, "cannot store float results as {dtype}"))
}
