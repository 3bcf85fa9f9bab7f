//! What the integer kernels (matmul_integer.rs, qlinear_conv.rs) share: uint8/int8 tensors as
//! bytes, and the fall-back to the reference for inputs a fast path leaves to it.

use super::Reference;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{DType, Data, DataRef, Op, Tensor};
use crate::Result;
use std::sync::Arc;

/// A u8/i8 tensor's values as i32; `None` for other types.
pub fn widen(t: &Tensor) -> Option<Vec<i32>> {
    match t.dtype() {
        DType::U8 => Some(t.as_slice::<u8>().ok()?.iter().map(|&v| v as i32).collect()),
        DType::I8 => Some(t.as_slice::<i8>().ok()?.iter().map(|&v| v as i32).collect()),
        _ => None,
    }
}

/// A u8/i8 tensor's bytes (an int8 as its two's complement); `None` for other types.
pub fn bytes_of(t: &Tensor) -> Option<&[u8]> {
    match t.dtype() {
        DType::U8 => t.as_slice::<u8>().ok(),
        DType::I8 => Some(bytemuck::cast_slice(t.as_slice::<i8>().ok()?)),
        _ => None,
    }
}

/// Bytes as a tensor of `dtype` (int8 or uint8), without a copy.
pub fn bytes_tensor(shape: Vec<usize>, dtype: DType, y: Vec<u8>) -> Result<Tensor> {
    match dtype {
        DType::I8 => Tensor::new(shape, bytemuck::allocation::cast_vec::<u8, i8>(y)),
        _ => Tensor::new(shape, y),
    }
}

/// The fast path's output, or, where it gave none, the reference's (which also reports bad
/// inputs).
pub fn or_reference(
    fast: Option<Tensor>,
    op: &Arc<dyn Op>,
    ctx: &ExecCtx,
    inputs: &[Option<DataRef>],
) -> Result<Vec<Data>> {
    match fast {
        Some(y) => Ok(vec![Data::Tensor(y)]),
        None => Reference { op: op.clone() }.run(ctx, inputs),
    }
}
