//! Linear quantization: QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear, and the pieces
//! the quantized products in `quant_conv` share with them (integer ranges, round-and-saturate).
//!
//! Scales and zero points come per tensor, per index of one axis, or (opset 21) per block of
//! `block_size` elements along one axis. The quantized type is an integer (8, 16 or 32 bits, and
//! the narrow int4/uint4/int2/uint2) or a narrow float (float8 with `saturate`, float4e2m1).

use super::real::{from_real, to_real};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::dtype::onnx_type_name;
use crate::ir::narrow::{F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, I2, I4, U2, U4};
use crate::ir::shape::normalize_axis;
use crate::ir::{DType, Dim, Elem, Fact, Scalar, Tensor, TensorData};
use crate::{bail, dispatch, Result};
use half::{bf16, f16};

pub fn register(r: &mut Registry) {
    r.add("QuantizeLinear", build_quantize);
    r.add("DequantizeLinear", build_dequantize);
    r.add("DynamicQuantizeLinear", |_| Ok(Box::new(DynamicQuantizeLinear)));
}

/// The value range of an integer quantized type.
pub(super) fn int_range(op: &str, dtype: DType) -> Result<(i64, i64)> {
    Ok(match dtype {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DType::U4 => (U4::MIN, U4::MAX),
        DType::I4 => (I4::MIN, I4::MAX),
        DType::U2 => (U2::MIN, U2::MAX),
        DType::I2 => (I2::MIN, I2::MAX),
        other => bail!(Unsupported, "{op} does not take {other} quantized tensors"),
    })
}

/// Integer elements `f(i)` for `i in 0..n`, clamped to the range of `dtype` and stored as it.
pub(super) fn saturated(op: &str, dtype: DType, n: usize, f: impl Fn(usize) -> i64) -> Result<TensorData> {
    let (lo, hi) = int_range(op, dtype)?;
    dispatch!(dtype; T => Ok(T::wrap((0..n).map(|i| T::from_i64(f(i).clamp(lo, hi))).collect()));
        U8 | I8 | U16 | I16 | I32 | U4 | I4 | U2 | I2;
        else => bail!(Unsupported, "{op} cannot produce {dtype}"))
}

/// The float types a tensor can be quantized to.
fn is_quant_float(dtype: DType) -> bool {
    matches!(dtype, DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F4E2M1)
}

/// Narrow float elements `f(i)` for `i in 0..n`, rounded to nearest even; `saturate` as Cast's
/// (float4e2m1, with neither infinity nor NaN, always saturates).
fn narrow_floats(op: &str, dtype: DType, n: usize, saturate: bool, f: impl Fn(usize) -> f64) -> Result<TensorData> {
    Ok(match dtype {
        DType::F8E4M3FN => TensorData::F8E4M3FN((0..n).map(|i| F8E4M3FN::from_f64(f(i), saturate)).collect()),
        DType::F8E4M3FNUZ => TensorData::F8E4M3FNUZ((0..n).map(|i| F8E4M3FNUZ::from_f64(f(i), saturate)).collect()),
        DType::F8E5M2 => TensorData::F8E5M2((0..n).map(|i| F8E5M2::from_f64(f(i), saturate)).collect()),
        DType::F8E5M2FNUZ => TensorData::F8E5M2FNUZ((0..n).map(|i| F8E5M2FNUZ::from_f64(f(i), saturate)).collect()),
        DType::F4E2M1 => TensorData::F4E2M1((0..n).map(|i| F4E2M1::from_f64(f(i), true)).collect()),
        other => bail!(Unsupported, "{op} cannot produce {other}"),
    })
}

/// Rounds half to even and converts to an integer; NaN gives 0 and infinities saturate (the
/// caller clamps to the target range).
pub(super) fn round_to_int(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// A quantized dtype from an `output_dtype`-style attribute code; 0 means "not given".
fn quant_dtype_attr(op: &str, name: &str, code: i64, allowed: &[DType]) -> Result<Option<DType>> {
    if code == 0 {
        return Ok(None);
    }
    let code32 = i32::try_from(code).ok();
    match code32.and_then(DType::from_onnx_code) {
        Some(dt) if allowed.contains(&dt) => Ok(Some(dt)),
        _ => match code32.and_then(onnx_type_name) {
            Some(type_name) => bail!(Unsupported, "{op} with {name} {type_name} is not supported"),
            None => bail!(InvalidModel, "{op}: attribute '{name}' is {code}, which is not an ONNX data type"),
        },
    }
}

/// How the elements of a scale (or zero point) tensor map onto the elements of the tensor they
/// quantize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ParamLayout {
    PerTensor,
    /// One parameter per index of an axis of size `dim`, followed by `inner` elements.
    PerAxis {
        dim: usize,
        inner: usize,
    },
    /// One parameter per `block` consecutive indices of an axis of size `dim`; the parameter
    /// tensor has X's shape except for `blocks` = ceil(dim / block) on that axis.
    Blocked {
        dim: usize,
        inner: usize,
        block: usize,
        blocks: usize,
    },
}

impl ParamLayout {
    /// The layout of parameters shaped `param` for X shaped `x`.
    pub fn new(op: &str, x: &[usize], param: &[usize], axis: i64, block_size: usize) -> Result<ParamLayout> {
        // A single value is per tensor whatever its rank, as in the ONNX reference.
        if param.iter().product::<usize>() == 1 {
            return Ok(ParamLayout::PerTensor);
        }
        let axis = normalize_axis(axis, x.len())?;
        let (dim, inner) = (x[axis], x[axis + 1..].iter().product());
        if block_size == 0 {
            if param.len() != 1 || param[0] != dim {
                bail!(
                    Shape,
                    "{op}: scale of shape {param:?} is neither per tensor nor one per index of axis {axis} of X {x:?}"
                );
            }
            return Ok(ParamLayout::PerAxis { dim, inner });
        }
        let blocks = dim.div_ceil(block_size);
        let fits = param.len() == x.len()
            && param.iter().zip(x).enumerate().all(|(i, (&p, &d))| if i == axis { p == blocks } else { p == d });
        if !fits {
            bail!(
                Shape,
                "{op}: blocked scale of shape {param:?} does not match X {x:?} with block_size {block_size} on axis {axis}"
            );
        }
        Ok(ParamLayout::Blocked { dim, inner, block: block_size, blocks })
    }

    /// The parameter index for element `i` of X.
    pub fn index(&self, i: usize) -> usize {
        match *self {
            ParamLayout::PerTensor => 0,
            ParamLayout::PerAxis { dim, inner } => (i / inner) % dim,
            ParamLayout::Blocked { dim, inner, block, blocks } => {
                let (outer, a, r) = (i / (dim * inner), (i / inner) % dim, i % inner);
                (outer * blocks + a / block) * inner + r
            }
        }
    }
}

/// The zero point's elements (exact in f64 for every quantized type), checked against the scale's
/// shape and X's quantized dtype.
fn zero_points(op: &str, zp: Option<&Tensor>, scale: &Tensor, dtype: DType) -> Result<Option<Vec<f64>>> {
    let Some(zp) = zp else { return Ok(None) };
    if zp.dtype() != dtype {
        bail!(Shape, "{op}: zero point is {} but the quantized tensor is {dtype}", zp.dtype());
    }
    if zp.len() != scale.len() {
        bail!(Shape, "{op}: zero point of shape {:?} does not match scale of shape {:?}", zp.shape(), scale.shape());
    }
    Ok(Some(zp.to_f64_vec()?))
}

/// Rounds an f64 to the float type `dtype` and back, so that arithmetic done in f64 gives what
/// arithmetic in `dtype` would.
fn round_to_float(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => f64::from(v as f32),
        DType::F16 => f64::from(f16::from_f64(v)),
        DType::BF16 => f64::from(bf16::from_f64(v)),
        _ => v,
    }
}

fn build_quantize(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let block_size = a.int_or("block_size", 0)?;
    if block_size < 0 {
        bail!(InvalidModel, "QuantizeLinear: block_size must not be negative, got {block_size}");
    }
    let output_dtype =
        quant_dtype_attr("QuantizeLinear", "output_dtype", a.int_or("output_dtype", 0)?, &quant_types(ctx.opset))?;
    let precision = quant_dtype_attr(
        "QuantizeLinear",
        "precision",
        a.int_or("precision", 0)?,
        &[DType::F32, DType::F16, DType::BF16],
    )?;
    Ok(Box::new(QuantizeLinear {
        axis: a.int_or("axis", 1)?,
        block_size: block_size as usize,
        output_dtype,
        precision,
        saturate: a.int_or("saturate", 1)? != 0,
    }))
}

/// The quantized types of QuantizeLinear and DequantizeLinear at an opset.
fn quant_types(opset: i64) -> Vec<DType> {
    let mut types = vec![DType::U8, DType::I8];
    if opset >= 19 {
        types.extend([DType::F8E4M3FN, DType::F8E4M3FNUZ, DType::F8E5M2, DType::F8E5M2FNUZ]);
    }
    if opset >= 21 {
        types.extend([DType::U16, DType::I16, DType::U4, DType::I4]);
    }
    if opset >= 23 {
        types.push(DType::F4E2M1);
    }
    if opset >= 25 {
        types.extend([DType::U2, DType::I2]);
    }
    types
}

/// `y = saturate(round_half_even(x / y_scale) + y_zero_point)`.
#[derive(Debug)]
pub struct QuantizeLinear {
    pub(crate) axis: i64,
    pub(crate) block_size: usize,
    output_dtype: Option<DType>,
    /// The float type the division is done in; by default y_scale's type.
    pub(crate) precision: Option<DType>,
    /// Float8 outputs only: out of range values become the largest finite value rather than
    /// infinity or NaN. Integer outputs always saturate.
    saturate: bool,
}

impl QuantizeLinear {
    /// The output type for a zero point of type `zp` (or none).
    pub(crate) fn output_dtype(&self, zp: Option<DType>) -> Result<DType> {
        match (zp, self.output_dtype) {
            (Some(z), Some(o)) if z != o => {
                bail!(Shape, "QuantizeLinear: output_dtype {o} differs from the zero point's type {z}")
            }
            (z, o) => Ok(z.or(o).unwrap_or(DType::U8)),
        }
    }
}

impl Op for QuantizeLinear {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let dtype = match opt_input(inputs, 2) {
            Some(zp) if zp.dtype.is_none() => None,
            zp => Some(self.output_dtype(zp.and_then(|z| z.dtype))?),
        };
        Ok(vec![Fact { dtype, shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "QuantizeLinear";
        let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        let out = self.output_dtype(zp.map(Tensor::dtype))?;
        if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16 | DType::I32) {
            bail!(Unsupported, "{OP} does not take {} input", x.dtype());
        }
        if !scale.dtype().is_float() && scale.dtype() != DType::F8E8M0 {
            bail!(Shape, "{OP}: y_scale must be a float tensor, got {}", scale.dtype());
        }
        let layout = ParamLayout::new(OP, x.shape(), scale.shape(), self.axis, self.block_size)?;
        let zps = zero_points(OP, zp, scale, out)?;
        // A power-of-two float8e8m0 scale is no type to divide in: float32 is.
        let precision = self.precision.unwrap_or(match scale.dtype() {
            DType::F8E8M0 => DType::F32,
            dt => dt,
        });
        let (xv, sv) = (x.to_f64_vec()?, scale.to_f64_vec()?);
        let scaled = |i: usize| {
            let p = layout.index(i);
            let q = round_to_float(precision, round_to_float(precision, xv[i]) / round_to_float(precision, sv[p]));
            (q, zps.as_ref().map_or(0.0, |z| z[p]))
        };
        let data = if is_quant_float(out) {
            narrow_floats(OP, out, xv.len(), self.saturate, |i| {
                let (q, zp) = scaled(i);
                round_to_float(precision, q + zp)
            })?
        } else {
            saturated(OP, out, xv.len(), |i| {
                let (q, zp) = scaled(i);
                round_to_int(q).saturating_add(zp as i64)
            })?
        };
        Ok(vec![Tensor::from_data(x.shape().to_vec(), data)?])
    }
}

fn build_dequantize(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let a = ctx.attrs;
    let block_size = a.int_or("block_size", 0)?;
    if block_size < 0 {
        bail!(InvalidModel, "DequantizeLinear: block_size must not be negative, got {block_size}");
    }
    let floats = [DType::F32, DType::F16, DType::BF16];
    let output_dtype = quant_dtype_attr("DequantizeLinear", "output_dtype", a.int_or("output_dtype", 0)?, &floats)?;
    Ok(Box::new(DequantizeLinear { axis: a.int_or("axis", 1)?, block_size: block_size as usize, output_dtype }))
}

const E8M0_NEEDS_OUTPUT_DTYPE: &str = "DequantizeLinear with a float8e8m0 scale needs an output_dtype";

/// `y = (x - x_zero_point) * x_scale`, in the scale's type unless `output_dtype` says otherwise.
#[derive(Debug)]
pub struct DequantizeLinear {
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
}

impl DequantizeLinear {
    /// The axis a vector of scales lies along (possibly negative, as given).
    pub fn axis(&self) -> i64 {
        self.axis
    }

    /// Elements per scale along the axis; 0 for per-tensor or per-axis scales.
    pub fn block_size(&self) -> usize {
        self.block_size
    }
}

impl Op for DequantizeLinear {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, scale) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = match self.output_dtype {
            Some(dt) => Some(dt),
            None if scale.dtype == Some(DType::F8E8M0) => bail!(InvalidModel, "{}", E8M0_NEEDS_OUTPUT_DTYPE),
            None => scale.dtype,
        };
        Ok(vec![Fact { dtype, shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "DequantizeLinear";
        let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        if !is_quant_float(x.dtype()) {
            int_range(OP, x.dtype())?;
        }
        let layout = ParamLayout::new(OP, x.shape(), scale.shape(), self.axis, self.block_size)?;
        let zps = zero_points(OP, zp, scale, x.dtype())?;
        let sv = match scale.dtype() {
            DType::F8E8M0 if self.output_dtype.is_none() => bail!(InvalidModel, "{}", E8M0_NEEDS_OUTPUT_DTYPE),
            DType::F8E8M0 => std::borrow::Cow::Owned(scale.to_f64_vec()?.into_iter().map(|v| v as f32).collect()),
            _ => to_real::<f32>(scale)?,
        };
        // Exact: every quantized value, and its difference with a zero point, fits an f64.
        let xv = x.to_f64_vec()?;
        let y: Vec<f32> = (0..xv.len())
            .map(|i| {
                let p = layout.index(i);
                let centered = xv[i] - zps.as_ref().map_or(0.0, |z| z[p]);
                centered as f32 * sv[p]
            })
            .collect();
        Ok(vec![from_real(self.output_dtype.unwrap_or(scale.dtype()), x.shape().to_vec(), y)?])
    }
}

/// Quantizes float32 X to uint8 with a scale and zero point chosen so that X's range, widened to
/// include 0, maps onto 0..=255.
#[derive(Debug)]
pub struct DynamicQuantizeLinear;

impl Op for DynamicQuantizeLinear {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        Ok(vec![
            Fact { dtype: Some(DType::U8), shape: x.shape.clone(), value: None },
            Fact::new(DType::F32, vec![]),
            Fact::new(DType::U8, Vec::<Dim>::new()),
        ])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let Ok(xv) = x.as_slice::<f32>() else {
            bail!(Unsupported, "DynamicQuantizeLinear takes float32 input, got {}", x.dtype());
        };
        let max = xv.iter().fold(0f32, |m, &v| m.max(v));
        let min = xv.iter().fold(0f32, |m, &v| m.min(v));
        // The ONNX reference uses a range of 1 when X is all zeros, which keeps the scale finite.
        let scale = if max == min { 1f32 } else { max - min } / 255.0;
        let zero_point = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
        let y: Vec<u8> =
            xv.iter().map(|&v| ((v / scale).round_ties_even() + zero_point).clamp(0.0, 255.0) as u8).collect();
        Ok(vec![Tensor::new(x.shape().to_vec(), y)?, Tensor::scalar(scale), Tensor::scalar(zero_point as u8)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::narrow::F8E8M0;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::{assert_close, build};

    fn eval(op: &str, opset: i64, attrs: Vec<(&str, Attr)>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        build(op, opset, attrs, 1)?.eval(inputs)
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        // ONNX test_quantizelinear: scale 2, zero point 128.
        let x = Tensor::vector(vec![0f32, 2., 3., 1000., -254., -1000.]);
        let (s, zp) = (Tensor::scalar(2f32), Tensor::scalar(128u8));
        let y = eval("QuantizeLinear", 19, vec![], &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[128, 129, 130, 255, 1, 0]);
        // 2.5 -> 2 and -2.5 -> -2 (half to even), default uint8 output without a zero point.
        let x = Tensor::vector(vec![5f32, -5., 7.]);
        let y = eval("QuantizeLinear", 10, vec![], &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[2, 0, 4]);
        let zp = Tensor::scalar(0i16);
        let x = Tensor::vector(vec![1e6f32, -5., 7.]);
        let y = eval("QuantizeLinear", 21, vec![], &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        assert_eq!(y[0].as_slice::<i16>().unwrap(), &[32767, -2, 4]);
    }

    #[test]
    fn quantize_per_axis_and_blocked() {
        // numpy: x = arange(12).reshape(1, 3, 4) - 6; per-axis on axis 1 with scales [1, 2, 4], zp [0, 1, -1] (int8).
        let x = Tensor::new(vec![1, 3, 4], (0..12).map(|v| v as f32 - 6.).collect()).unwrap();
        let s = Tensor::vector(vec![1f32, 2., 4.]);
        let zp = Tensor::vector(vec![0i8, 1, -1]);
        let y = eval("QuantizeLinear", 13, vec![], &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        // axis 1 row 1: [-2,-1,0,1]/2 = [-1,-0.5,0,0.5] -> [-1,0,0,0] + 1; row 2: [2..5]/4 -> [0,1,1,1] - 1
        assert_eq!(y[0].as_slice::<i8>().unwrap(), &[-6, -5, -4, -3, 0, 1, 1, 1, -1, 0, 0, 0]);
        // Blocked on axis 1 of a [2, 3] tensor with block 2: scales [[1, 10], [2, 20]].
        let x = Tensor::new(vec![2, 3], vec![1f32, 2., 30., 4., 6., 80.]).unwrap();
        let s = Tensor::new(vec![2, 2], vec![1f32, 10., 2., 20.]).unwrap();
        let attrs = vec![("axis", Attr::Int(1)), ("block_size", Attr::Int(2)), ("output_dtype", Attr::Int(3))];
        let y = eval("QuantizeLinear", 21, attrs, &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].as_slice::<i8>().unwrap(), &[1, 2, 3, 2, 3, 4]);
    }

    #[test]
    fn dequantize_per_tensor_axis_and_blocked() {
        // ONNX test_dequantizelinear: (x - 128) * 2.
        let x = Tensor::vector(vec![0u8, 3, 128, 255]);
        let y = eval(
            "DequantizeLinear",
            10,
            vec![],
            &[Some(&x), Some(&Tensor::scalar(2f32)), Some(&Tensor::scalar(128u8))],
        )
        .unwrap();
        assert_close(y[0].as_slice::<f32>().unwrap(), &[-256., -250., 0., 254.]);
        let x = Tensor::new(vec![1, 2, 2], vec![1i32, 2, 3, 4]).unwrap();
        let s = Tensor::vector(vec![0.5f32, 3.]);
        let y = eval("DequantizeLinear", 13, vec![], &[Some(&x), Some(&s)]).unwrap();
        assert_close(y[0].as_slice::<f32>().unwrap(), &[0.5, 1., 9., 12.]);
        // Blocked along axis 0 (block 2) of a [3, 1] tensor: blocks [rows 0-1], [row 2].
        let x = Tensor::new(vec![3, 1], vec![10i16, 20, 30]).unwrap();
        let s = Tensor::new(vec![2, 1], vec![f16::from_f32(0.5), f16::from_f32(2.)]).unwrap();
        let zp = Tensor::new(vec![2, 1], vec![0i16, 10]).unwrap();
        let attrs = vec![("axis", Attr::Int(0)), ("block_size", Attr::Int(2))];
        let y = eval("DequantizeLinear", 21, attrs, &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        let got: Vec<f32> = y[0].as_slice::<f16>().unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(got, &[5., 10., 40.]);
    }

    /// QuantizeLinear saturates where Cast to the same type wraps; both round ties to even. The
    /// QuantizeLinear rows are onnxruntime 1.32's (scale 1, opset 21); its Cast agrees with the
    /// Cast row except at the ties -8.5, -2.5, 0.5, 2.5, which it rounds away from zero.
    #[test]
    fn quantize_to_narrow_ints_saturates_unlike_cast() {
        let x = Tensor::vector(vec![-100f32, -17., -8.5, -2.5, 0.5, 2.5, 7.5, 15., 31., 100.]);
        let s = Tensor::scalar(1f32);
        let q = |zp: Tensor| eval("QuantizeLinear", 21, vec![], &[Some(&x), Some(&s), Some(&zp)]).unwrap().remove(0);
        let i4 = q(Tensor::scalar(I4(0)));
        assert_eq!(i4.as_slice::<I4>().unwrap(), &[-8, -8, -8, -2, 0, 2, 7, 7, 7, 7].map(I4));
        assert_eq!(q(Tensor::scalar(I4(1))).as_slice::<I4>().unwrap(), &[-8, -8, -7, -1, 1, 3, 7, 7, 7, 7].map(I4));
        assert_eq!(q(Tensor::scalar(U4(0))).as_slice::<U4>().unwrap(), &[0, 0, 0, 0, 0, 2, 8, 15, 15, 15].map(U4));
        let cast = crate::ops::cast::cast(&x, DType::I4).unwrap();
        assert_eq!(cast.as_slice::<I4>().unwrap(), &[-4, -1, -8, -2, 0, 2, -8, -1, -1, 4].map(I4));
    }

    #[test]
    fn quantize_to_narrow_types() {
        // ONNX test_quantizelinear_int4: per axis 0, scales [2, 3, 4], zero points 1 (int4).
        let x = Tensor::new(vec![3, 4], vec![0f32, 2.5, 4.8, 8.6, -30., -20., 6., 9., 12., 15., 16., 40.]).unwrap();
        let s = Tensor::vector(vec![2f32, 3., 4.]);
        let zp = Tensor::vector(vec![I4(1); 3]);
        let axis0 = || vec![("axis", Attr::Int(0))];
        let y = eval("QuantizeLinear", 21, axis0(), &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        let want = [1, 2, 3, 5, -8, -6, 3, 4, 4, 5, 5, 7].map(I4);
        assert_eq!(y[0].as_slice::<I4>().unwrap(), &want);
        // The same X to float4e2m1 with zero points 0: ONNX test_quantizelinear_float4e2m1 rows 0-1.
        let zp = Tensor::vector(vec![F4E2M1(0); 3]);
        let y = eval("QuantizeLinear", 23, axis0(), &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        let got: Vec<f32> = y[0].as_slice::<F4E2M1>().unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(&got[..8], &[0., 1., 2., 4., -6., -6., 2., 3.]);
        // ONNX test_quantizelinear_e4m3fn: [0, 1, 2, 100000, 200] / 2 saturates to 448; without
        // saturation `(x / 2).astype(float8_e4m3fn)` gives NaN (0x7f) there.
        let x = Tensor::vector(vec![0f32, 1., 2., 100000., 200.]);
        let (s, zp) = (Tensor::scalar(2f32), Tensor::vector(vec![F8E4M3FN(0)]));
        let y = eval("QuantizeLinear", 19, vec![], &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        let got: Vec<f32> = y[0].as_slice::<F8E4M3FN>().unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(got, [0., 0.5, 1., 448., 96.]);
        let y = eval("QuantizeLinear", 19, vec![("saturate", Attr::Int(0))], &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        assert_eq!(y[0].as_slice::<F8E4M3FN>().unwrap().iter().map(|v| v.0).collect::<Vec<_>>(), [0, 48, 56, 127, 108]);
        // uint2 through output_dtype, clamped to 0..=3.
        let x = Tensor::vector(vec![-1f32, 2., 5., 20.]);
        let y = eval("QuantizeLinear", 25, vec![("output_dtype", Attr::Int(25))], &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].as_slice::<U2>().unwrap(), &[U2(0), U2(1), U2(2), U2(3)]);
    }

    #[test]
    fn dequantize_narrow_types() {
        // ONNX test_dequantizelinear_int4: (x - 1) * 2.
        let x = Tensor::vector([0, 1, 7, -4, -8].map(I4).to_vec());
        let (s, zp) = (Tensor::scalar(2f32), Tensor::vector(vec![I4(1)]));
        let y = eval("DequantizeLinear", 21, vec![], &[Some(&x), Some(&s), Some(&zp)]).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[-2., 0., 12., -10., -18.]);
        // float8e5m2 codes [0x3c (1.0), 0x5f (448), 0xfc (-inf)] scaled by 0.5 into float16.
        let x = Tensor::vector([0x3c, 0x5f, 0xfc].map(F8E5M2).to_vec());
        let s = Tensor::scalar(f16::from_f32(0.5));
        let y = eval("DequantizeLinear", 19, vec![], &[Some(&x), Some(&s)]).unwrap();
        let got: Vec<f32> = y[0].as_slice::<f16>().unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(got, [0.5, 224., f32::NEG_INFINITY]);
        // A float8e8m0 scale (code 128 is 2.0) needs output_dtype; quantizing with it divides in float32.
        let (x, s) = (Tensor::vector(vec![1i8, -3]), Tensor::scalar(F8E8M0(128)));
        let e = eval("DequantizeLinear", 25, vec![], &[Some(&x), Some(&s)]).unwrap_err();
        assert!(e.message.contains("needs an output_dtype"), "{e}");
        let y = eval("DequantizeLinear", 25, vec![("output_dtype", Attr::Int(1))], &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[2., -6.]);
        let x = Tensor::vector(vec![4f32, 7., -300.]);
        let y = eval("QuantizeLinear", 25, vec![("output_dtype", Attr::Int(3))], &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y[0].as_slice::<i8>().unwrap(), &[2, 4, -128]);
        // A float8e8m0 input is not a quantized type.
        let x = Tensor::vector(vec![F8E8M0(127)]);
        assert!(eval("DequantizeLinear", 25, vec![], &[Some(&x), Some(&Tensor::scalar(1f32))]).is_err());
    }

    #[test]
    fn dynamic_quantize_matches_onnx_reference() {
        // ONNX test_dynamicquantizelinear: scale 5 / 255, zp 153.
        let x = Tensor::vector(vec![0f32, 2., -3., -2.5, 1.34, 0.5]);
        let y = eval("DynamicQuantizeLinear", 11, vec![], &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[153, 255, 0, 26, 221, 179]);
        assert_close(y[1].as_slice::<f32>().unwrap(), &[0.019_607_844]);
        assert_eq!(y[2].as_slice::<u8>().unwrap(), &[153]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Tensor::new(vec![2, 3], vec![0f32; 6]).unwrap();
        let s = Tensor::vector(vec![1f32, 2.]);
        let e = eval("QuantizeLinear", 13, vec![], &[Some(&x), Some(&s)]).unwrap_err();
        assert!(e.message.contains("neither per tensor"), "{e}");
        let e = build("QuantizeLinear", 21, vec![("output_dtype", Attr::Int(27))], 1).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
        assert!(e.message.contains("float6e2m3"), "{e}");
        // int2 arrived in opset 25.
        let e = build("QuantizeLinear", 24, vec![("output_dtype", Attr::Int(26))], 1).unwrap_err();
        assert!(e.message.contains("output_dtype int2 is not supported"), "{e}");
        let zp = Tensor::scalar(0i8);
        let attrs = vec![("output_dtype", Attr::Int(2))];
        assert!(eval("QuantizeLinear", 21, attrs, &[Some(&x), Some(&Tensor::scalar(1f32)), Some(&zp)]).is_err());
        let xq = Tensor::vector(vec![1u8, 2]);
        let e = eval("DequantizeLinear", 19, vec![], &[Some(&xq), Some(&Tensor::scalar(1f32)), Some(&zp)]).unwrap_err();
        assert!(e.message.contains("zero point is int8"), "{e}");
        let xf = Tensor::vector(vec![1f32]);
        assert!(eval("DequantizeLinear", 19, vec![], &[Some(&xf), Some(&Tensor::scalar(1f32))]).is_err());
        let attrs = vec![("block_size", Attr::Int(2))];
        let s = Tensor::new(vec![2, 1], vec![1f32, 1.]).unwrap();
        assert!(eval("QuantizeLinear", 21, attrs, &[Some(&x), Some(&s)]).is_err());
    }
}
