//! Tensors across the boundary: made from caller memory (copied, or borrowed), and the outputs of a
//! run, whose elements the caller reads in place or copies out.
//!
//! The memory form of a tensor is its elements in row-major order, each in the host's native byte
//! order and C type (`float`, `int64_t`, IEEE half as `uint16_t` bits, bool as one byte 0 or 1).
//! The narrow float8/float4/int4/int2 types and strings cannot cross the C ABI yet.

use super::boundary::{CallError, CallResult, CRX_ERR_BUFFER_TOO_SMALL, CRX_ERR_UNSUPPORTED};
use super::crx_status;
use super::handles::{lookup, register, release};
use crate::ir::tensor::{checked_len, try_vec};
use crate::{dispatch, DType, Tensor};
use std::borrow::Cow;
use std::ffi::c_void;
use std::ptr::NonNull;

/// An element type: ONNX's `TensorProto.DataType` code.
///
/// Tensor memory form, for every function that takes or gives elements: row-major order, each
/// element in the host's byte order as its C type (`float`, `int64_t`, float16 and bfloat16 as
/// their `uint16_t` bits, bool as one byte 0 or 1), `crx_dtype_size(dtype)` bytes each, no padding.
/// Strings and the narrow float8/float4/int4/int2 types cannot cross the C ABI yet.
pub type crx_dtype = i32;
pub const CRX_DTYPE_UNDEFINED: crx_dtype = 0;
pub const CRX_DTYPE_FLOAT32: crx_dtype = 1;
pub const CRX_DTYPE_UINT8: crx_dtype = 2;
pub const CRX_DTYPE_INT8: crx_dtype = 3;
pub const CRX_DTYPE_UINT16: crx_dtype = 4;
pub const CRX_DTYPE_INT16: crx_dtype = 5;
pub const CRX_DTYPE_INT32: crx_dtype = 6;
pub const CRX_DTYPE_INT64: crx_dtype = 7;
/// Strings: reported by `crx_model_input_info`, but string tensors cannot cross the C ABI yet.
pub const CRX_DTYPE_STRING: crx_dtype = 8;
/// One byte per element, 0 or 1 (any non-zero byte reads as true).
pub const CRX_DTYPE_BOOL: crx_dtype = 9;
/// IEEE 754 half precision, as its `uint16_t` bits.
pub const CRX_DTYPE_FLOAT16: crx_dtype = 10;
pub const CRX_DTYPE_FLOAT64: crx_dtype = 11;
pub const CRX_DTYPE_UINT32: crx_dtype = 12;
pub const CRX_DTYPE_UINT64: crx_dtype = 13;
/// bfloat16, as its `uint16_t` bits.
pub const CRX_DTYPE_BFLOAT16: crx_dtype = 16;
/// The narrow types below are reported by `crx_model_input_info`; tensors of them cannot cross the
/// C ABI yet (`CRX_ERR_UNSUPPORTED`).
pub const CRX_DTYPE_FLOAT8E4M3FN: crx_dtype = 17;
pub const CRX_DTYPE_FLOAT8E4M3FNUZ: crx_dtype = 18;
pub const CRX_DTYPE_FLOAT8E5M2: crx_dtype = 19;
pub const CRX_DTYPE_FLOAT8E5M2FNUZ: crx_dtype = 20;
pub const CRX_DTYPE_UINT4: crx_dtype = 21;
pub const CRX_DTYPE_INT4: crx_dtype = 22;
pub const CRX_DTYPE_FLOAT4E2M1: crx_dtype = 23;
pub const CRX_DTYPE_FLOAT8E8M0: crx_dtype = 24;
pub const CRX_DTYPE_UINT2: crx_dtype = 25;
pub const CRX_DTYPE_INT2: crx_dtype = 26;

/// A tensor: a dtype, a shape and its elements. Made by `crx_tensor_create` (a copy),
/// `crx_tensor_create_borrowed` (the caller's memory) or `crx_session_run` (an output); freed by
/// `crx_tensor_free`. Immutable once made: it may be read, and passed to runs, from many threads at
/// once.
pub struct crx_tensor {
    _opaque: [u8; 0],
}

/// The caller's buffer behind a borrowed tensor. The caller promises (see
/// `crx_tensor_create_borrowed`) to keep it alive and unchanged while the tensor is used, so
/// sharing the pointer between threads shares only reads.
struct CallerBuffer(NonNull<u8>);
unsafe impl Send for CallerBuffer {}
unsafe impl Sync for CallerBuffer {}

enum Elements {
    Owned(Tensor),
    Borrowed { shape: Vec<usize>, dtype: DType, data: CallerBuffer, bytes: usize },
}

pub(crate) struct TensorEntry {
    elements: Elements,
    /// The shape as C reads it.
    dims: Vec<i64>,
}

impl TensorEntry {
    pub fn owned(tensor: Tensor) -> TensorEntry {
        let dims = tensor.shape().iter().map(|&d| d as i64).collect();
        TensorEntry { elements: Elements::Owned(tensor), dims }
    }

    fn dtype(&self) -> DType {
        match &self.elements {
            Elements::Owned(t) => t.dtype(),
            Elements::Borrowed { dtype, .. } => *dtype,
        }
    }

    /// The elements in their memory form.
    pub fn bytes(&self) -> CallResult<&[u8]> {
        match &self.elements {
            Elements::Owned(t) => tensor_bytes(t),
            // Safety: the caller keeps the buffer alive while the tensor is used.
            Elements::Borrowed { data, bytes, .. } => {
                Ok(unsafe { std::slice::from_raw_parts(data.0.as_ptr(), *bytes) })
            }
        }
    }

    /// The tensor to run with. A borrowed tensor of numbers is read in place (the session copies
    /// any output that views it before returning); booleans, whose bytes C may give as any
    /// value, and empty tensors are copied.
    pub fn tensor(&self) -> CallResult<Cow<'_, Tensor>> {
        match &self.elements {
            Elements::Owned(t) => Ok(Cow::Borrowed(t)),
            Elements::Borrowed { shape, dtype, data, bytes } if dtype.is_plain_number() && *bytes > 0 => {
                // SAFETY: the caller keeps the buffer alive and unchanged while the tensor is used
                // (crx_tensor_create_borrowed), checked aligned and `bytes` long at creation.
                Ok(Cow::Owned(unsafe { Tensor::borrowed(*dtype, shape.clone(), data.0)? }))
            }
            Elements::Borrowed { shape, dtype, .. } => {
                Ok(Cow::Owned(tensor_from_bytes(*dtype, shape.clone(), self.bytes()?)?))
            }
        }
    }
}

fn unsupported(dtype: DType) -> CallError {
    CallError::new(CRX_ERR_UNSUPPORTED, format!("{dtype} tensors cannot cross the C ABI yet"))
}

/// The dtypes whose elements C can read and write in place.
const C_DTYPES: [DType; 13] = [
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U32,
    DType::U64,
    DType::Bool,
];

/// A tensor's elements as bytes, in place.
fn tensor_bytes(t: &Tensor) -> CallResult<&[u8]> {
    dispatch!(t.dtype(); T => {
        let s = t.as_slice::<T>()?;
        // Safety: every C dtype's Rust type is plain data (bool is one byte, 0 or 1).
        Ok(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) })
    }; F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | Bool; else => Err(unsupported(t.dtype())))
}

/// A tensor copied from bytes in memory form; `bytes` must hold exactly its elements.
fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> CallResult<Tensor> {
    let n = checked_len(&shape, dtype)?;
    if dtype == DType::Bool {
        let mut v = try_vec(n, false)?;
        v.iter_mut().zip(bytes).for_each(|(b, &byte)| *b = byte != 0);
        return Ok(Tensor::new(shape, v)?);
    }
    dispatch!(dtype; T => {
        let mut v: Vec<T> = try_vec(n, T::default())?;
        debug_assert_eq!(std::mem::size_of_val(v.as_slice()), bytes.len());
        // Safety: the caller checked the length; these types are plain data, any bits valid.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes.len()) };
        Ok(Tensor::new(shape, v)?)
    }; F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64; else => Err(unsupported(dtype)))
}

/// A C dtype code as a dtype C can pass.
pub fn c_dtype(code: crx_dtype) -> CallResult<DType> {
    let dtype = DType::from_onnx_code(code)
        .ok_or_else(|| CallError::invalid_argument(format!("dtype {code} is not a CRX_DTYPE_* code")))?;
    if C_DTYPES.contains(&dtype) {
        Ok(dtype)
    } else {
        Err(unsupported(dtype))
    }
}

/// Checks a C shape and the byte count of the elements that go with it.
///
/// # Safety
/// `shape` must point to `rank` readable values unless `rank` is 0.
unsafe fn checked_shape(dtype: DType, shape: *const i64, rank: usize, data_bytes: usize) -> CallResult<Vec<usize>> {
    if rank > 0 && shape.is_null() {
        return Err(CallError::null("shape"));
    }
    let dims = if rank == 0 { &[][..] } else { std::slice::from_raw_parts(shape, rank) };
    let shape = dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| CallError::invalid_argument(format!("shape {dims:?} has a negative dim")))
        })
        .collect::<CallResult<Vec<usize>>>()?;
    let need = checked_len(&shape, dtype)? * dtype.size();
    if data_bytes != need {
        return Err(CallError::invalid_argument(format!(
            "data_bytes is {data_bytes}, but a {dtype} tensor of shape {shape:?} has {need} bytes"
        )));
    }
    Ok(shape)
}

/// Makes a tensor holding a copy of `data_bytes` bytes at `data` (the caller may reuse its buffer
/// when the call returns). `shape` holds `rank` dims (NULL when `rank` is 0, a scalar);
/// `data_bytes` must be exactly the product of the dims times `crx_dtype_size(dtype)`; `data` may
/// be NULL when that is 0. On success `*tensor` is a new handle the caller frees with
/// `crx_tensor_free`; on error it is untouched.
///
/// # Safety
/// `shape` must point to `rank` values, `data` to `data_bytes` readable bytes, `tensor` to
/// writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_create(
    dtype: crx_dtype,
    shape: *const i64,
    rank: usize,
    data: *const c_void,
    data_bytes: usize,
    tensor: *mut *mut crx_tensor,
) -> crx_status {
    ffi_boundary!("crx_tensor_create", non_null: [tensor], {
        let dtype = c_dtype(dtype)?;
        let shape = checked_shape(dtype, shape, rank, data_bytes)?;
        let bytes = if data_bytes == 0 {
            &[][..]
        } else if data.is_null() {
            return Err(CallError::null("data"));
        } else {
            std::slice::from_raw_parts(data.cast::<u8>(), data_bytes)
        };
        let t = tensor_from_bytes(dtype, shape, bytes)?;
        *tensor = register(TensorEntry::owned(t));
        Ok(())
    })
}

/// Makes a tensor over the caller's memory, without copying it now. Arguments as for
/// `crx_tensor_create`, and `data` must be aligned to `crx_dtype_size(dtype)` bytes.
///
/// Lifetime: the caller keeps the buffer alive, and does not change it, until `crx_tensor_free`
/// (and until every run using the tensor has returned). `crx_tensor_data` returns `data` itself.
///
/// Runs read the buffer in place (no copy), except for CRX_DTYPE_BOOL tensors, which a run copies
/// once since C may store any byte in them. An output that is the input itself (an Identity or
/// Reshape of it) is copied out before the run returns, so outputs never point into the buffer.
///
/// # Safety
/// As for `crx_tensor_create`, and the lifetime rule above.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_create_borrowed(
    dtype: crx_dtype,
    shape: *const i64,
    rank: usize,
    data: *const c_void,
    data_bytes: usize,
    tensor: *mut *mut crx_tensor,
) -> crx_status {
    ffi_boundary!("crx_tensor_create_borrowed", non_null: [tensor], {
        let dtype = c_dtype(dtype)?;
        let shape = checked_shape(dtype, shape, rank, data_bytes)?;
        let data = match NonNull::new(data.cast_mut().cast::<u8>()) {
            Some(p) => p,
            None if data_bytes == 0 => NonNull::dangling(),
            None => return Err(CallError::null("data")),
        };
        if data.as_ptr().addr() % dtype.size() != 0 {
            return Err(CallError::invalid_argument(format!(
                "data at {:p} is not aligned to {} bytes, the size of {dtype}",
                data.as_ptr(),
                dtype.size()
            )));
        }
        let dims = shape.iter().map(|&d| d as i64).collect();
        let elements = Elements::Borrowed { shape, dtype, data: CallerBuffer(data), bytes: data_bytes };
        *tensor = register(TensorEntry { elements, dims });
        Ok(())
    })
}

/// Frees a tensor. NULL is a no-op; so is a handle already freed. A borrowed tensor's buffer stays
/// the caller's.
///
/// # Safety
/// `tensor` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_free(tensor: *mut crx_tensor) {
    ffi_boundary!("crx_tensor_free", non_null: [], { release(tensor, "tensor") });
}

/// Writes the tensor's element type to `*dtype`.
///
/// # Safety
/// `dtype` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_dtype(tensor: *const crx_tensor, dtype: *mut crx_dtype) -> crx_status {
    ffi_boundary!("crx_tensor_dtype", non_null: [dtype], {
        *dtype = lookup(tensor, "tensor")?.dtype().onnx_code();
        Ok(())
    })
}

/// Writes the tensor's rank to `*rank` and a pointer to its `rank` dims to `*dims` (owned by the
/// tensor, valid until `crx_tensor_free`).
///
/// # Safety
/// `dims` and `rank` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_shape(
    tensor: *const crx_tensor,
    dims: *mut *const i64,
    rank: *mut usize,
) -> crx_status {
    ffi_boundary!("crx_tensor_shape", non_null: [dims, rank], {
        let entry = lookup(tensor, "tensor")?;
        *dims = entry.dims.as_ptr();
        *rank = entry.dims.len();
        Ok(())
    })
}

/// Writes a pointer to the tensor's elements (memory form, read-only) to `*data` and their size in
/// bytes to `*data_bytes`. Owned by the tensor, valid until `crx_tensor_free`; for a borrowed tensor
/// it is the caller's buffer.
///
/// # Safety
/// `data` and `data_bytes` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_data(
    tensor: *const crx_tensor,
    data: *mut *const c_void,
    data_bytes: *mut usize,
) -> crx_status {
    ffi_boundary!("crx_tensor_data", non_null: [data, data_bytes], {
        let entry = lookup(tensor, "tensor")?;
        let bytes = entry.bytes()?;
        *data = bytes.as_ptr().cast();
        *data_bytes = bytes.len();
        Ok(())
    })
}

/// Copies the tensor's elements into `buffer` of `capacity` bytes; a smaller buffer is
/// `CRX_ERR_BUFFER_TOO_SMALL` and nothing is written. `bytes_written` may be NULL.
///
/// # Safety
/// `buffer` must point to `capacity` writable bytes; `bytes_written` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn crx_tensor_copy_to(
    tensor: *const crx_tensor,
    buffer: *mut c_void,
    capacity: usize,
    bytes_written: *mut usize,
) -> crx_status {
    ffi_boundary!("crx_tensor_copy_to", non_null: [buffer], {
        let entry = lookup(tensor, "tensor")?;
        let bytes = entry.bytes()?;
        check_capacity(bytes.len(), capacity, "the tensor")?;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len());
        if !bytes_written.is_null() {
            *bytes_written = bytes.len();
        }
        Ok(())
    })
}

pub fn check_capacity(need: usize, capacity: usize, what: &str) -> CallResult {
    if capacity < need {
        return Err(CallError::new(
            CRX_ERR_BUFFER_TOO_SMALL,
            format!("{what} has {need} bytes, the buffer holds only {capacity}"),
        ));
    }
    Ok(())
}

/// Bytes per element of `dtype` in memory form; 0 for a code that is not a dtype the C ABI can
/// pass (undefined, string, the narrow types).
#[no_mangle]
pub extern "C" fn crx_dtype_size(dtype: crx_dtype) -> usize {
    c_dtype(dtype).map_or(0, |d| d.size())
}
