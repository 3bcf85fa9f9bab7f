//! The little-endian byte form of tensors, as ONNX's `raw_data` and BitCast define it: each element
//! in its own width, the 4- and 2-bit types packed lowest bits first with the last byte padded.
//! File readers and writers and BitCast share it.

use super::narrow::{pack, unpack};
use super::tensor::{Elem, Tensor, TensorData};
use super::DType;
use crate::{bail, dispatch, err, Result};
use half::{bf16, f16};

/// Bytes that `n` elements of `dtype` take. `n` must have passed `checked_len`, which caps
/// `n * size` so this cannot overflow.
pub fn byte_len(dtype: DType, n: usize) -> Result<usize> {
    if dtype == DType::String {
        bail!(Unsupported, "string tensors have no byte form");
    }
    Ok((n * dtype.packed_bits()).div_ceil(8))
}

/// The byte form of `t`.
pub fn to_le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    fn le<T: Elem, const N: usize>(t: &Tensor, bytes: fn(&T) -> [u8; N]) -> Result<Vec<u8>> {
        Ok(t.as_slice::<T>()?.iter().flat_map(bytes).collect())
    }
    match t.dtype() {
        DType::F32 => le(t, |x: &f32| x.to_le_bytes()),
        DType::F64 => le(t, |x: &f64| x.to_le_bytes()),
        DType::F16 => le(t, |x: &f16| x.to_bits().to_le_bytes()),
        DType::BF16 => le(t, |x: &bf16| x.to_bits().to_le_bytes()),
        DType::I8 => le(t, |&x: &i8| [x as u8]),
        DType::U8 => Ok(t.as_slice::<u8>()?.to_vec()),
        DType::I16 => le(t, |x: &i16| x.to_le_bytes()),
        DType::U16 => le(t, |x: &u16| x.to_le_bytes()),
        DType::I32 => le(t, |x: &i32| x.to_le_bytes()),
        DType::U32 => le(t, |x: &u32| x.to_le_bytes()),
        DType::I64 => le(t, |x: &i64| x.to_le_bytes()),
        DType::U64 => le(t, |x: &u64| x.to_le_bytes()),
        DType::Bool => le(t, |&x: &bool| [x as u8]),
        DType::String => bail!(Unsupported, "strings have no raw byte form"),
        narrow => dispatch!(narrow; T => Ok(pack(t.as_slice::<T>()?));
            narrow; else => bail!(Unsupported, "{} has no raw byte form", t.dtype())),
    }
}

/// `n` elements of `dtype` from their byte form.
pub fn from_le_bytes(dtype: DType, n: usize, bytes: &[u8]) -> Result<TensorData> {
    let expected = byte_len(dtype, n)?;
    if bytes.len() != expected {
        bail!(InvalidInput, "{} bytes, {n} elements of {dtype} need {expected}", bytes.len());
    }
    macro_rules! le_values {
        ($t:ty, $size:literal, $wrap:expr) => {
            $wrap(collect_exact(n, bytes.chunks_exact($size).map(|c| <$t>::from_le_bytes(le::<$size>(c))))?)
        };
    }
    Ok(match dtype {
        DType::F32 => le_values!(f32, 4, TensorData::F32),
        DType::F64 => le_values!(f64, 8, TensorData::F64),
        DType::F16 => {
            TensorData::F16(collect_exact(n, bytes.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes(le(c)))))?)
        }
        DType::BF16 => TensorData::BF16(collect_exact(
            n,
            bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes(le(c)))),
        )?),
        DType::U8 => TensorData::U8(collect_exact(n, bytes.iter().copied())?),
        DType::I8 => TensorData::I8(collect_exact(n, bytes.iter().map(|&b| b as i8))?),
        DType::Bool => TensorData::Bool(collect_exact(n, bytes.iter().map(|&b| b != 0))?),
        DType::U16 => le_values!(u16, 2, TensorData::U16),
        DType::I16 => le_values!(i16, 2, TensorData::I16),
        DType::I32 => le_values!(i32, 4, TensorData::I32),
        DType::U32 => le_values!(u32, 4, TensorData::U32),
        DType::I64 => le_values!(i64, 8, TensorData::I64),
        DType::U64 => le_values!(u64, 8, TensorData::U64),
        DType::String => bail!(InvalidModel, "string tensors cannot use raw data"),
        narrow => dispatch!(narrow; T => T::wrap(unpack::<T>(bytes, n)
            .ok_or_else(|| err!(ResourceLimit, "cannot allocate {n} elements"))?);
            narrow; else => bail!(Unsupported, "data type {narrow} has no raw form")),
    })
}

/// Collects exactly `n` items without aborting the process if memory is short.
fn collect_exact<T>(n: usize, items: impl Iterator<Item = T>) -> Result<Vec<T>> {
    let mut v = crate::ir::limits::with_capacity(n)?;
    // Filled whole just below (a model's weights at load, a request's tensors in the server).
    crate::ir::limits::prefault(v.as_ptr(), n * std::mem::size_of::<T>());
    v.extend(items.take(n));
    Ok(v)
}

fn le<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(chunk);
    a
}
