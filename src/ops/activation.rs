//! Activations: Relu, LeakyRelu, Sigmoid, Tanh, Clip, Elu, Selu, ... (elementwise, float in, float out).

use super::{input, same_as_input, BuildCtx, Op, Registry};
use crate::ir::{Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};

pub fn register(r: &mut Registry) {
    r.add("Relu", |_| Ok(Box::new(Relu)));
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

#[allow(dead_code)]
fn _builder_signature_check(_: &BuildCtx) {}
