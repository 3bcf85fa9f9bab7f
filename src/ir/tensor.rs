//! Tensors: a concrete shape over a run of elements in shared, typed storage. Kernels reach the
//! elements through the [`Elem`] trait (`as_slice::<f32>()`), and pick a Rust type for a [`DType`]
//! with [`dispatch!`].

use super::dtype::DType;
use super::limits;
use super::narrow::{RoundMode, F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0, I2, I4, U2, U4};
use super::storage::{DeviceBuffer, Storage};
use super::words::Word;
use crate::{bail, err, Result};
use half::{bf16, f16};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    String(Vec<String>),
    Bool(Vec<bool>),
    F16(Vec<f16>),
    F64(Vec<f64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    BF16(Vec<bf16>),
    F8E4M3FN(Vec<F8E4M3FN>),
    F8E4M3FNUZ(Vec<F8E4M3FNUZ>),
    F8E5M2(Vec<F8E5M2>),
    F8E5M2FNUZ(Vec<F8E5M2FNUZ>),
    U4(Vec<U4>),
    I4(Vec<I4>),
    F4E2M1(Vec<F4E2M1>),
    F8E8M0(Vec<F8E8M0>),
    U2(Vec<U2>),
    I2(Vec<I2>),
}

/// A Rust element type that a tensor can hold.
pub trait Elem: Clone + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
    fn slice(data: &TensorData) -> Option<&[Self]>;
    fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]>;
    fn wrap(v: Vec<Self>) -> TensorData;
    fn unwrap(data: TensorData) -> Option<Vec<Self>>;
    /// Elements read in place from raw bytes: plain number types (any bits valid) whose bytes
    /// are aligned and whole; `None` otherwise and for every other type.
    fn from_plain_bytes(bytes: &[u8]) -> Option<&[Self]>;
}

/// `bytemuck`'s checked cast for plain number types, `None` for the rest.
macro_rules! plain_cast {
    (String, $b:expr) => {
        None
    };
    (Bool, $b:expr) => {
        None
    };
    (F32, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (F64, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (F16, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (BF16, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (U8, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (I8, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (U16, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (I16, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (U32, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (I32, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (U64, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    (I64, $b:expr) => {
        bytemuck::try_cast_slice($b).ok()
    };
    ($other:ident, $b:expr) => {
        None
    };
}

macro_rules! impl_elem {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl Elem for $t {
            const DTYPE: DType = DType::$v;
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data { TensorData::$v(v) => Some(v), _ => None }
            }
            fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]> {
                match data { TensorData::$v(v) => Some(v), _ => None }
            }
            fn wrap(v: Vec<Self>) -> TensorData { TensorData::$v(v) }
            fn unwrap(data: TensorData) -> Option<Vec<Self>> {
                match data { TensorData::$v(v) => Some(v), _ => None }
            }
            fn from_plain_bytes(_bytes: &[u8]) -> Option<&[Self]> {
                plain_cast!($v, _bytes)
            }
        }
    )*};
}

impl_elem!(
    f32 => F32, u8 => U8, i8 => I8, u16 => U16, i16 => I16, i32 => I32, i64 => I64,
    String => String, bool => Bool, f16 => F16, f64 => F64, u32 => U32, u64 => U64, bf16 => BF16,
    F8E4M3FN => F8E4M3FN, F8E4M3FNUZ => F8E4M3FNUZ, F8E5M2 => F8E5M2, F8E5M2FNUZ => F8E5M2FNUZ,
    U4 => U4, I4 => I4, F4E2M1 => F4E2M1, F8E8M0 => F8E8M0, U2 => U2, I2 => I2,
);

/// Numeric element types, with lossless-as-possible conversions used by kernels that compute in a
/// wider type (f16 math in f32, index inputs read as i64, Cast).
pub trait Scalar: Elem + Copy + PartialOrd {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;
    fn zero() -> Self;
    fn one() -> Self;
}

macro_rules! impl_scalar_int {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_i64(v: i64) -> Self { v as $t }
            fn zero() -> Self { 0 as $t }
            fn one() -> Self { 1 as $t }
        }
    )*};
}
impl_scalar_int!(u8, i8, u16, i16, i32, i64, u32, u64, f32, f64);

impl Scalar for f16 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        f32::from(self) as i64
    }
    fn from_i64(v: i64) -> Self {
        f16::from_f64(v as f64)
    }
    fn zero() -> Self {
        f16::ZERO
    }
    fn one() -> Self {
        f16::ONE
    }
}

impl Scalar for bf16 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_i64(self) -> i64 {
        f32::from(self) as i64
    }
    fn from_i64(v: i64) -> Self {
        bf16::from_f64(v as f64)
    }
    fn zero() -> Self {
        bf16::ZERO
    }
    fn one() -> Self {
        bf16::ONE
    }
}

// The narrow floats convert from wider types as Cast does by default: rounding to nearest even and
// saturating (float8e8m0: rounding up and saturating).
macro_rules! impl_scalar_narrow_float {
    ($($t:ident),*) => {$(
        impl Scalar for $t {
            fn to_f64(self) -> f64 { f64::from(self.to_f32()) }
            fn from_f64(v: f64) -> Self { $t::from_f64(v, true) }
            fn to_i64(self) -> i64 { self.to_f32() as i64 }
            fn from_i64(v: i64) -> Self { $t::from_f64(v as f64, true) }
            fn zero() -> Self { $t(0) }
            fn one() -> Self { $t::from_f64(1.0, true) }
        }
    )*};
}
impl_scalar_narrow_float!(F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F4E2M1);

impl Scalar for F8E8M0 {
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    fn from_f64(v: f64) -> Self {
        F8E8M0::from_f32(v as f32, true, RoundMode::Up)
    }
    fn to_i64(self) -> i64 {
        self.to_f32() as i64
    }
    fn from_i64(v: i64) -> Self {
        F8E8M0::from_f32(v as f32, true, RoundMode::Up)
    }
    /// float8e8m0 has no zero; its smallest value 2^-127 stands in.
    fn zero() -> Self {
        F8E8M0(0)
    }
    fn one() -> Self {
        F8E8M0(127)
    }
}

macro_rules! impl_scalar_narrow_int {
    ($($t:ident),*) => {$(
        impl Scalar for $t {
            fn to_f64(self) -> f64 { $t::to_i64(self) as f64 }
            fn from_f64(v: f64) -> Self { $t::from_f64(v) }
            fn to_i64(self) -> i64 { $t::to_i64(self) }
            fn from_i64(v: i64) -> Self { $t::wrapping(v) }
            fn zero() -> Self { $t(0) }
            fn one() -> Self { $t(1) }
        }
    )*};
}
impl_scalar_narrow_int!(U4, I4, U2, I2);

impl Scalar for bool {
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn zero() -> Self {
        false
    }
    fn one() -> Self {
        true
    }
}

/// The Rust type behind a `DType` variant name; used by [`dispatch!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __elem_type {
    (F32) => {
        f32
    };
    (F64) => {
        f64
    };
    (F16) => {
        half::f16
    };
    (BF16) => {
        half::bf16
    };
    (U8) => {
        u8
    };
    (I8) => {
        i8
    };
    (U16) => {
        u16
    };
    (I16) => {
        i16
    };
    (I32) => {
        i32
    };
    (I64) => {
        i64
    };
    (U32) => {
        u32
    };
    (U64) => {
        u64
    };
    (Bool) => {
        bool
    };
    (String) => {
        String
    };
    (F8E4M3FN) => {
        $crate::ir::narrow::F8E4M3FN
    };
    (F8E4M3FNUZ) => {
        $crate::ir::narrow::F8E4M3FNUZ
    };
    (F8E5M2) => {
        $crate::ir::narrow::F8E5M2
    };
    (F8E5M2FNUZ) => {
        $crate::ir::narrow::F8E5M2FNUZ
    };
    (U4) => {
        $crate::ir::narrow::U4
    };
    (I4) => {
        $crate::ir::narrow::I4
    };
    (F4E2M1) => {
        $crate::ir::narrow::F4E2M1
    };
    (F8E8M0) => {
        $crate::ir::narrow::F8E8M0
    };
    (U2) => {
        $crate::ir::narrow::U2
    };
    (I2) => {
        $crate::ir::narrow::I2
    };
}

/// Runs `body` with `T` bound to the Rust type of `dtype`, for the listed dtypes:
/// `dispatch!(x.dtype(); T => relu::<T>(x); F32 | F64 | F16; else => bail!(...))`.
/// Group shorthands: `float`, `numeric` (every number type, no bool/string), `narrow` (float8,
/// float4, 4- and 2-bit integers), `all` (every type, narrow ones included: for kernels that only
/// move, compare or convert elements). The narrow types are in neither `float` nor `numeric`, so
/// arithmetic kernels refuse them.
#[macro_export]
macro_rules! dispatch {
    ($dt:expr; $T:ident => $body:expr; float; else => $fallback:expr) => {
        $crate::dispatch!($dt; $T => $body; F32 | F64 | F16 | BF16; else => $fallback)
    };
    ($dt:expr; $T:ident => $body:expr; numeric; else => $fallback:expr) => {
        $crate::dispatch!($dt; $T => $body;
            F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64; else => $fallback)
    };
    ($dt:expr; $T:ident => $body:expr; narrow; else => $fallback:expr) => {
        $crate::dispatch!($dt; $T => $body;
            F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
            else => $fallback)
    };
    ($dt:expr; $T:ident => $body:expr; all; else => $fallback:expr) => {
        $crate::dispatch!($dt; $T => $body;
            F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | Bool | String
            | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
            else => $fallback)
    };
    ($dt:expr; $T:ident => $body:expr; $($v:ident)|+; else => $fallback:expr) => {
        match $dt {
            $( $crate::ir::DType::$v => { #[allow(dead_code)] type $T = $crate::__elem_type!($v); $body } )+
            #[allow(unreachable_patterns)]
            _ => $fallback,
        }
    };
}

/// A tensor: a shape over `len` elements of shared storage, starting at `offset`. Clones share
/// the storage, so Reshape, Squeeze, Unsqueeze, Flatten and Identity cost no copy, and a contiguous
/// Slice is a [`Tensor::view`] into its input. Writing ([`Tensor::as_mut_slice`]) copies first
/// when the storage is shared or bigger than the view (copy on write), so a view never changes
/// what another tensor sees.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::U16(_) => DType::U16,
            TensorData::I16(_) => DType::I16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::String(_) => DType::String,
            TensorData::Bool(_) => DType::Bool,
            TensorData::F16(_) => DType::F16,
            TensorData::F64(_) => DType::F64,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F8E4M3FN(_) => DType::F8E4M3FN,
            TensorData::F8E4M3FNUZ(_) => DType::F8E4M3FNUZ,
            TensorData::F8E5M2(_) => DType::F8E5M2,
            TensorData::F8E5M2FNUZ(_) => DType::F8E5M2FNUZ,
            TensorData::U4(_) => DType::U4,
            TensorData::I4(_) => DType::I4,
            TensorData::F4E2M1(_) => DType::F4E2M1,
            TensorData::F8E8M0(_) => DType::F8E8M0,
            TensorData::U2(_) => DType::U2,
            TensorData::I2(_) => DType::I2,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        dispatch!(self.dtype(); T => T::slice(self).map_or(0, |s| s.len()); all; else => 0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of a plain number `dtype` copied from their bytes (lent memory made owned).
    pub fn from_plain_bytes(dtype: DType, bytes: &[u8]) -> Result<TensorData> {
        dispatch!(dtype; T => {
            let src = T::from_plain_bytes(bytes)
                .ok_or_else(|| err!(InvalidInput, "{} bytes are not whole, aligned {dtype} elements", bytes.len()))?;
            let mut v = limits::with_capacity(src.len())?;
            v.extend_from_slice(src);
            Ok(T::wrap(v))
        }; all; else => bail!(Unsupported, "{dtype} elements cannot be read from bytes"))
    }

    /// A copy of elements `start..start + len`.
    pub(crate) fn copy_range(&self, start: usize, len: usize) -> TensorData {
        dispatch!(self.dtype(); T => T::wrap(T::slice(self).map_or(vec![], |s| s[start..start + len].to_vec()));
            all; else => unreachable!())
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Tensor");
        d.field("shape", &self.shape).field("dtype", &self.dtype());
        // Formatting never downloads: a tensor only on a device says where it is.
        match self.storage.device_buffer() {
            Some(b) if !self.storage.is_on_host() => d.field("on", &b.device()),
            _ => {
                dispatch!(self.dtype(); T => d.field("data", &self.as_slice::<T>().unwrap_or_default()); all; else => &mut d)
            }
        };
        d.finish()
    }
}

/// Equal shapes, dtypes and elements (NaN is unequal to itself, as for floats).
impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && self.dtype() == other.dtype()
            && dispatch!(self.dtype(); T => self.as_slice::<T>().ok() == other.as_slice::<T>().ok(); all; else => false)
    }
}

/// Number of elements of a shape, or an error if it overflows or passes the tensor size limit
/// ([`limits::max_tensor_bytes`]). An empty tensor holds nothing, but its other dims still size
/// loops and per-dim buffers in kernels (a `[0, 2^40]` tensor has 2^40 rows of nothing): its
/// span, the product of its dims with each 0 counted as 1, must fit under the limit too.
pub fn checked_len(shape: &[usize], dtype: DType) -> Result<usize> {
    let mut span: usize = 1;
    for &d in shape {
        span = span.checked_mul(d.max(1)).ok_or_else(|| err!(ResourceLimit, "tensor shape {shape:?} overflows"))?;
    }
    // A string element costs its `String` even when empty (a '<U0' .npy holds no bytes at all).
    let item_bytes = if dtype == DType::String { std::mem::size_of::<String>() } else { dtype.size() };
    let empty = shape.contains(&0);
    if limits::fits(span, item_bytes) {
        return Ok(if empty { 0 } else { span });
    }
    // Every tensor passes here: the message is only built when the check fails.
    if empty {
        bail!(
            ResourceLimit,
            "empty tensor of shape {shape:?} ({dtype}) spans {span} elements, over the limit of {} bytes",
            limits::max_tensor_bytes()
        );
    }
    limits::check_alloc(span, item_bytes, &format!("tensor of shape {shape:?} ({dtype})"))?;
    Ok(span)
}

/// Allocates a vector for `n` elements, checked against the tensor size limit first, without
/// aborting the process if memory is short.
pub fn try_vec<T: Clone>(n: usize, fill: T) -> Result<Vec<T>> {
    let mut v = limits::with_capacity(n)?;
    v.resize(n, fill);
    Ok(v)
}

impl Tensor {
    /// A tensor from a shape and its elements in row-major order.
    pub fn new<T: Elem>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor> {
        Tensor::from_data(shape, T::wrap(data))
    }

    pub fn from_data(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
        let n = checked_len(&shape, data.dtype())?;
        if n != data.len() {
            bail!(Shape, "shape {shape:?} needs {n} elements, data has {}", data.len());
        }
        Ok(Tensor::whole(shape, data))
    }

    /// A tensor over all of `data`, whose length the caller has checked against `shape`.
    fn whole(shape: Vec<usize>, data: TensorData) -> Tensor {
        let len = data.len();
        Tensor { shape, storage: Arc::new(Storage::host(data)), offset: 0, len }
    }

    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor::whole(vec![], T::wrap(vec![v]))
    }

    /// A 1-D tensor.
    pub fn vector<T: Elem>(v: Vec<T>) -> Tensor {
        Tensor::whole(vec![v.len()], T::wrap(v))
    }

    /// A tensor of the given dtype filled with zeros (false, "" for bool and string).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_len(&shape, dtype)?;
        let data = dispatch!(dtype; T => T::wrap(try_vec(n, T::default())?); all; else => unreachable!());
        Ok(Tensor::whole(shape, data))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this tensor views all of its storage (no offset, nothing past its end).
    fn is_whole(&self) -> bool {
        self.offset == 0 && self.len == self.storage.len()
    }

    /// Whether this f32 tensor views part of a storage of its own on the host ([`Tensor::over_part`]):
    /// it is written in place and moved out without copying the rest.
    fn is_f32_part(&self) -> bool {
        !self.is_whole() && self.dtype() == DType::F32 && !self.storage.is_borrowed() && self.storage.is_on_host()
    }

    /// An f32 tensor of `shape` over the elements of `data` from `start`, which may be longer: a
    /// kernel's output written into part of a pooled buffer, which starts it on a huge page and
    /// leaves the rest as it was (no zeroing to shorten or lengthen it), and which goes back to
    /// the pool whole ([`Tensor::into_unique_buffer`]).
    pub fn over_part(shape: Vec<usize>, data: Vec<f32>, start: usize) -> Result<Tensor> {
        let n = checked_len(&shape, DType::F32)?;
        if start.checked_add(n).is_none_or(|end| end > data.len()) {
            bail!(Shape, "shape {shape:?} needs {n} elements from {start}, data has {}", data.len());
        }
        let mut t = Tensor::whole(shape, f32::wrap(data));
        (t.offset, t.len) = (start, n);
        Ok(t)
    }

    /// Whether two tensors view the same storage (a view, a clone or a reshape of each other).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The elements as owned typed data: moved out when this tensor is their only owner and views
    /// all of them, copied otherwise.
    pub fn into_data(self) -> Result<TensorData> {
        if self.is_f32_part() && Arc::strong_count(&self.storage) == 1 {
            // A kernel's output over part of a pooled buffer: moved out, cut to its elements.
            let (offset, len) = (self.offset, self.len);
            let own = Arc::try_unwrap(self.storage).expect("the only owner, checked above");
            let mut v = f32::unwrap(own.into_data()?).expect("an f32 tensor");
            v.truncate(offset + len);
            v.drain(..offset);
            return Ok(f32::wrap(v));
        }
        if !self.is_whole() {
            return Ok(self.storage.data()?.copy_range(self.offset, self.len));
        }
        match Arc::try_unwrap(self.storage) {
            Ok(own) => own.into_data(),
            Err(shared) => Ok(shared.data()?.clone()),
        }
    }

    /// A tensor whose elements a device backend made and holds (`len` of `dtype`, row-major for
    /// `shape`); the host gets them on its first read.
    pub fn on_device(dtype: DType, shape: Vec<usize>, buffer: Arc<dyn DeviceBuffer>) -> Result<Tensor> {
        let len = checked_len(&shape, dtype)?;
        Ok(Tensor { shape, storage: Arc::new(Storage::on_device(dtype, len, buffer)), offset: 0, len })
    }

    /// A tensor over `len(shape)` elements of `dtype` in caller memory at `ptr`, read in place
    /// (the C ABI's borrowed tensors). Plain number dtypes only.
    ///
    /// # Safety
    /// As for [`Storage::borrowed`]: the memory stays alive and unchanged while the tensor, or
    /// any view or clone of it, exists. Sessions copy outputs out of lent memory
    /// ([`Tensor::detached`]) before returning them, so only the run itself must be covered.
    pub unsafe fn borrowed(dtype: DType, shape: Vec<usize>, ptr: std::ptr::NonNull<u8>) -> Result<Tensor> {
        let len = checked_len(&shape, dtype)?;
        if !ptr.as_ptr().addr().is_multiple_of(dtype.size().max(1)) {
            bail!(InvalidInput, "lent memory at {:p} is not aligned for {dtype}", ptr.as_ptr());
        }
        // SAFETY: passed on to the caller of this function.
        let storage = unsafe { Storage::borrowed(dtype, len, ptr)? };
        Ok(Tensor { shape, storage: Arc::new(storage), offset: 0, len })
    }

    /// This tensor, copied into memory of its own when its elements are lent (so it may outlive
    /// the lender's promise); itself otherwise.
    pub fn detached(self) -> Result<Tensor> {
        if !self.storage.is_borrowed() {
            return Ok(self);
        }
        let copy = self.storage.data()?.copy_range(self.offset, self.len);
        Ok(Tensor { shape: self.shape, storage: Arc::new(Storage::host(copy)), offset: 0, len: self.len })
    }

    /// The storage this tensor views (with [`Tensor::offset`]): device backends attach and find
    /// their copies there.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Where this tensor's elements start in its storage, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    fn dtype_error<T: Elem>(&self) -> crate::Error {
        err!(Shape, "expected a {} tensor, got {}", T::DTYPE, self.dtype())
    }

    /// The elements as `&[T]`; an error names both dtypes when `T` is not this tensor's type.
    pub fn as_slice<T: Elem>(&self) -> Result<&[T]> {
        let all = self.storage.slice::<T>()?.ok_or_else(|| self.dtype_error::<T>())?;
        Ok(&all[self.offset..self.offset + self.len])
    }

    /// The elements to write: copies them first unless this tensor is their only owner and views
    /// all of them.
    pub fn as_mut_slice<T: Elem>(&mut self) -> Result<&mut [T]> {
        if T::DTYPE != self.dtype() {
            return Err(self.dtype_error::<T>());
        }
        let in_place = self.is_whole() || self.is_f32_part();
        if !in_place || Arc::get_mut(&mut self.storage).is_none() {
            let copy = self.storage.data()?.copy_range(self.offset, self.len);
            self.storage = Arc::new(Storage::host(copy));
            self.offset = 0;
        }
        let (offset, len) = (self.offset, self.len);
        let own = Arc::get_mut(&mut self.storage).expect("made the sole owner above");
        Ok(&mut T::slice_mut(own.data_mut()?).expect("dtype checked above")[offset..offset + len])
    }

    /// The elements as plain words of their size, for kernels that only move them ([`Word`]).
    pub fn as_words<W: Word>(&self) -> Result<&[W]> {
        let all = self
            .storage
            .words::<W>()?
            .ok_or_else(|| err!(Shape, "a {} tensor is not made of {} words", self.dtype(), W::DTYPE))?;
        Ok(&all[self.offset..self.offset + self.len])
    }

    /// A tensor of `dtype` from words that were moved out of tensors of that dtype ([`Word`]).
    pub fn from_words<W: Word>(dtype: DType, shape: Vec<usize>, words: Vec<W>) -> Result<Tensor> {
        let data =
            W::typed(dtype, words).ok_or_else(|| err!(Shape, "{} words cannot hold a {dtype} tensor", W::DTYPE))?;
        Tensor::from_data(shape, data)
    }

    /// The whole buffer under this tensor, without copying, for a buffer pool to reuse: all of
    /// its storage, also where the tensor views only part of it (a Split's last output, a Slice,
    /// part of a pooled buffer: [`Tensor::over_part`]). `None` when this is not a `T`
    /// tensor, when anything else shares the storage (the other views of a Split, until the last
    /// one dies), or when it is lent or only on a device. Not the tensor's elements: see
    /// [`Tensor::into_vec`] for those.
    pub fn into_unique_buffer<T: Elem>(self) -> Option<Vec<T>> {
        // Elements only on a device are not downloaded to be recycled.
        if T::DTYPE != self.dtype() || self.storage.is_borrowed() || !self.storage.is_on_host() {
            return None;
        }
        Arc::try_unwrap(self.storage).ok()?.into_data().ok().and_then(T::unwrap)
    }

    /// Whether this is an f32 tensor on the host that nothing else shares the storage of (no
    /// view, no clone, not lent): one that [`Tensor::into_unique_f32_part`] takes apart.
    pub fn is_unique_f32(&self) -> bool {
        self.dtype() == DType::F32
            && !self.storage.is_borrowed()
            && self.storage.is_on_host()
            && Arc::strong_count(&self.storage) == 1
    }

    /// [`Tensor::into_unique_buffer`] for an f32 tensor, with where its elements lie in the
    /// buffer (offset, length): for a kernel to write its output over them, in place. The tensor
    /// back where anything else shares the storage (or it is lent, or only on a device).
    pub fn into_unique_f32_part(self) -> std::result::Result<(Vec<f32>, usize, usize), Tensor> {
        if !self.is_unique_f32() {
            return Err(self);
        }
        let (offset, len) = (self.offset, self.len);
        let buffer = self.into_unique_buffer::<f32>().expect("an f32 tensor with no other owner, checked above");
        Ok((buffer, offset, len))
    }

    pub fn into_vec<T: Elem>(self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(self.dtype_error::<T>());
        }
        Ok(T::unwrap(self.into_data()?).expect("dtype checked above"))
    }

    /// Same elements, new shape (element counts must agree); shares the storage.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor> {
        let n = checked_len(&shape, self.dtype())?;
        if n != self.len {
            bail!(Shape, "shape {shape:?} needs {n} elements, the tensor has {}", self.len);
        }
        Ok(Tensor { shape, ..self })
    }

    /// The `shape`-sized run of this tensor's elements that starts at element `start`, sharing the
    /// storage (a contiguous Slice, a batch item).
    pub fn view(&self, shape: Vec<usize>, start: usize) -> Result<Tensor> {
        let n = checked_len(&shape, self.dtype())?;
        if start.checked_add(n).is_none_or(|end| end > self.len) {
            bail!(Shape, "a view of {n} elements at {start} passes the end of a tensor of {}", self.len);
        }
        Ok(Tensor { shape, storage: self.storage.clone(), offset: self.offset + start, len: n })
    }

    /// The elements of an integer tensor widened to i64 (shape-like inputs such as Reshape's shape).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        dispatch!(self.dtype(); T => Ok(self.as_slice::<T>()?.iter().map(|v| v.to_i64()).collect());
            I64 | I32 | I16 | I8 | U8 | U16 | U32 | U64 | Bool | U4 | I4 | U2 | I2;
            else => bail!(Shape, "expected an integer tensor, got {}", self.dtype()))
    }

    /// The elements of a numeric tensor as f64 (scalar attributes given as inputs, comparisons).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        dispatch!(self.dtype(); T => Ok(self.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect());
            F32 | F64 | F16 | BF16 | I64 | I32 | I16 | I8 | U8 | U16 | U32 | U64 | Bool
            | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
            else => bail!(Shape, "expected a numeric tensor, got {}", self.dtype()))
    }

    /// Converts every element to another dtype with C-like `as` semantics (floats to ints truncate,
    /// numbers to bool test != 0). Strings are handled by the Cast op, not here.
    ///
    /// Integers go through i64 (`as` casts both ways, so the bits of u64 survive and narrowing wraps
    /// like C), anything involving a float goes through f64 (exact for every source but 64-bit
    /// integers; narrow floats round once, saturating).
    pub fn cast_numeric(&self, to: DType) -> Result<Tensor> {
        if to == self.dtype() {
            return Ok(self.clone());
        }
        let from = self.dtype();
        if from == DType::String || to == DType::String {
            bail!(Unsupported, "cannot cast {from} to {to}");
        }
        let src_int = from.is_int() || from.is_narrow_int() || from == DType::Bool;
        let data = if src_int && (to.is_int() || to.is_narrow_int()) {
            self.cast_via::<i64>(to)?
        } else {
            self.cast_via::<f64>(to)?
        };
        Ok(Tensor::whole(self.shape.clone(), data))
    }

    /// Casts in chunks through `V`: each source dtype compiles one reader and each destination one
    /// writer, rather than a loop for each of the ~500 pairs.
    fn cast_via<V: Via>(&self, to: DType) -> Result<TensorData> {
        const CHUNK: usize = 256;
        let mut buf = [V::default(); CHUNK];
        dispatch!(to; D => {
            let mut out: Vec<D> = limits::with_capacity(self.len)?;
            for start in (0..self.len).step_by(CHUNK) {
                let chunk = &mut buf[..CHUNK.min(self.len - start)];
                self.read_as(start, chunk)?;
                out.extend(chunk.iter().map(|&v| v.to::<D>()));
            }
            Ok(D::wrap(out))
        }; F32 | F64 | F16 | BF16 | I64 | I32 | I16 | I8 | U8 | U16 | U32 | U64 | Bool
            | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
            else => bail!(Unsupported, "cannot cast {} to {to}", self.dtype()))
    }

    /// Elements `start..start + out.len()` converted to `V`.
    #[inline(never)]
    fn read_as<V: Via>(&self, start: usize, out: &mut [V]) -> Result<()> {
        dispatch!(self.dtype(); S => {
            let src = &self.as_slice::<S>()?[start..start + out.len()];
            for (o, &v) in out.iter_mut().zip(src) {
                *o = V::of(v);
            }
            Ok(())
        }; F32 | F64 | F16 | BF16 | I64 | I32 | I16 | I8 | U8 | U16 | U32 | U64 | Bool
            | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
            else => bail!(Unsupported, "cannot cast {} to a number", self.dtype()))
    }
}

/// What [`Tensor::cast_numeric`] converts through: i64 between integers, f64 otherwise.
trait Via: Copy + Default {
    fn of<S: Scalar>(v: S) -> Self;
    fn to<D: Scalar>(self) -> D;
}

impl Via for i64 {
    fn of<S: Scalar>(v: S) -> i64 {
        v.to_i64()
    }
    fn to<D: Scalar>(self) -> D {
        D::from_i64(self)
    }
}

impl Via for f64 {
    fn of<S: Scalar>(v: S) -> f64 {
        v.to_f64()
    }
    /// Scalar::from_f64 for bool tests != 0, so NaN becomes true as ONNX asks.
    fn to<D: Scalar>(self) -> D {
        D::from_f64(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_against_the_limit_by_what_they_cost() {
        use crate::ErrorKind::ResourceLimit;
        limits::with_max_tensor_bytes(4096, || {
            assert_eq!(checked_len(&[1024], DType::F32).unwrap(), 1024);
            assert_eq!(checked_len(&[1025], DType::F32).unwrap_err().kind, ResourceLimit);
            // Empty tensors by their span, strings by their `String` (found by fuzzing: a '<U0'
            // .npy of 64M empty strings holds no bytes but takes 1.5 GB).
            assert_eq!(checked_len(&[0, 1024], DType::F32).unwrap(), 0);
            let e = checked_len(&[0, 1025], DType::F32).unwrap_err();
            assert!(e.message.contains("spans 1025 elements"), "{e}");
            assert!(checked_len(&[4096 / std::mem::size_of::<String>()], DType::String).is_ok());
            assert_eq!(checked_len(&[4096], DType::String).unwrap_err().kind, ResourceLimit);
        });
    }

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::new(vec![2, 3], vec![0f32; 6]).is_ok());
        let e = Tensor::new(vec![2, 3], vec![0f32; 5]).unwrap_err();
        assert!(e.message.contains("needs 6 elements"), "{e}");
    }

    #[test]
    fn tensors_over_part_of_a_buffer_keep_the_rest_and_give_it_back_whole() {
        let buffer: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let t = Tensor::over_part(vec![2, 3], buffer.clone(), 0).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(Tensor::over_part(vec![11], buffer, 0).is_err());
        // Written in place (no copy), only the head.
        let mut w = Tensor::over_part(vec![4], (0..10).map(|v| v as f32).collect(), 0).unwrap();
        let head = w.as_mut_slice::<f32>().unwrap();
        assert_eq!(head.len(), 4);
        head[3] = -3.0;
        let w_at = head.as_ptr();
        // The pool gets the whole buffer back, tail included.
        let whole = w.clone().into_unique_buffer::<f32>();
        assert!(whole.is_none(), "shared with the clone");
        let whole = w.into_unique_buffer::<f32>().unwrap();
        assert_eq!((whole.as_ptr(), whole.len(), whole[3], whole[9]), (w_at, 10, -3.0, 9.0));
        // A view in the middle (a Split's second half) gives its whole buffer back once it is the
        // last one over it.
        let t = Tensor::new(vec![10], (0..10).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
        let (first, second) = (t.view(vec![5], 0).unwrap(), t.view(vec![5], 5).unwrap());
        drop(t);
        assert!(second.clone().into_unique_buffer::<f32>().is_none(), "shared with `first`");
        drop(first);
        assert_eq!(second.into_unique_buffer::<f32>().unwrap().len(), 10);
        // Moved out as data: cut to length, not copied.
        let t = Tensor::over_part(vec![3], (0..10).map(|v| v as f32).collect(), 0).unwrap();
        let t_at = t.as_slice::<f32>().unwrap().as_ptr();
        let v = t.into_vec::<f32>().unwrap();
        assert_eq!((v.as_ptr(), v.as_slice()), (t_at, &[0.0, 1.0, 2.0][..]));
        // A part further in: written in place, moved out without the head.
        let mut t = Tensor::over_part(vec![3], (0..10).map(|v| v as f32).collect(), 4).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[4.0, 5.0, 6.0]);
        let at = t.as_mut_slice::<f32>().unwrap().as_ptr();
        assert_eq!(t.as_slice::<f32>().unwrap().as_ptr(), at, "written in place");
        assert!(Tensor::over_part(vec![3], vec![0.0; 10], 8).is_err());
        assert_eq!(t.into_vec::<f32>().unwrap(), [4.0, 5.0, 6.0]);
        // A reshape keeps the view; a shared one copies on write.
        let t = Tensor::over_part(vec![6], (0..8).map(|v| v as f32).collect(), 0).unwrap().reshape(vec![3, 2]).unwrap();
        let mut c = t.clone();
        c.as_mut_slice::<f32>().unwrap()[0] = 5.0;
        assert_eq!((t.as_slice::<f32>().unwrap()[0], c.as_slice::<f32>().unwrap().len()), (0.0, 6));
    }

    #[test]
    fn views_share_storage_and_writes_copy_first() {
        let x = Tensor::new(vec![2, 3], (0..6).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
        let row = x.view(vec![3], 3).unwrap();
        assert_eq!(row.as_slice::<f32>().unwrap(), &[3.0, 4.0, 5.0]);
        assert!(row.shares_storage(&x));
        let flat = x.clone().reshape(vec![6]).unwrap();
        assert!(flat.shares_storage(&x));
        assert_eq!(row.view(vec![1, 2], 1).unwrap().as_slice::<f32>().unwrap(), &[4.0, 5.0]);
        assert!(x.view(vec![4], 3).unwrap_err().message.contains("passes the end"));
        assert!(x.clone().reshape(vec![4]).is_err());

        // Writing through a view or a clone never changes the other tensors.
        let mut written = row.clone();
        written.as_mut_slice::<f32>().unwrap()[0] = -1.0;
        assert_eq!(written.as_slice::<f32>().unwrap(), &[-1.0, 4.0, 5.0]);
        assert!(!written.shares_storage(&x));
        assert_eq!(x.as_slice::<f32>().unwrap()[3], 3.0);
        let mut flat = flat;
        flat.as_mut_slice::<f32>().unwrap()[0] = 9.0;
        assert_eq!(x.as_slice::<f32>().unwrap()[0], 0.0);
        assert!(flat.as_mut_slice::<i64>().is_err());

        // A sole owner of its whole storage writes and moves out in place.
        let mut own = Tensor::vector(vec![1i64, 2, 3]);
        let at = own.as_slice::<i64>().unwrap().as_ptr();
        own.as_mut_slice::<i64>().unwrap()[1] = 7;
        assert_eq!(own.as_slice::<i64>().unwrap().as_ptr(), at);
        assert_eq!(own.into_vec::<i64>().unwrap(), [1, 7, 3]);
        assert_eq!(row.into_vec::<f32>().unwrap(), [3.0, 4.0, 5.0]);
        assert_eq!(x.view(vec![2], 1).unwrap(), Tensor::vector(vec![1.0f32, 2.0]));
    }

    #[test]
    fn huge_shapes_are_refused_not_allocated() {
        let e = Tensor::zeros(DType::F32, vec![1 << 20, 1 << 20, 1 << 20]).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::ResourceLimit);
    }

    #[test]
    fn cast_numeric_follows_c_semantics() {
        let t = Tensor::vector(vec![1.7f32, -2.5, 0.0]);
        assert_eq!(t.cast_numeric(DType::I32).unwrap().as_slice::<i32>().unwrap(), &[1, -2, 0]);
        assert_eq!(t.cast_numeric(DType::Bool).unwrap().as_slice::<bool>().unwrap(), &[true, true, false]);
        let big = Tensor::vector(vec![u64::MAX]);
        assert_eq!(big.cast_numeric(DType::I64).unwrap().as_slice::<i64>().unwrap(), &[-1]);
        // More than one chunk of the conversion, and the narrowing that wraps like C.
        let many = Tensor::vector((0..1000i32).collect::<Vec<_>>());
        let bytes = many.cast_numeric(DType::U8).unwrap();
        assert!(bytes.as_slice::<u8>().unwrap().iter().enumerate().all(|(i, &b)| b == i as u8));
        assert!(Tensor::vector(Vec::<String>::new()).cast_numeric(DType::F32).is_err());
    }
}
