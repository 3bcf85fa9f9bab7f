//! Linear quantization: QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear, and the pieces
//! the quantized products in `quant_conv` share with them (integer ranges, round-and-saturate).
//!
//! Scales and zero points come per tensor, per index of one axis, or (opset 21) per block of
//! `block_size` elements along one axis. Only the integer quantized types are supported; float8,
//! float4, int4 and int2 are refused with `Unsupported`.

use super::real::{from_real, to_real};
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::dtype::onnx_type_name;
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
        other => bail!(Unsupported, "{op} does not take {other} quantized tensors"),
    })
}

/// Integer elements `f(i)` for `i in 0..n`, clamped to the range of `dtype` and stored as it.
pub(super) fn saturated(op: &str, dtype: DType, n: usize, f: impl Fn(usize) -> i64) -> Result<TensorData> {
    let (lo, hi) = int_range(op, dtype)?;
    dispatch!(dtype; T => Ok(T::wrap((0..n).map(|i| T::from_i64(f(i).clamp(lo, hi))).collect()));
        U8 | I8 | U16 | I16 | I32;
        else => bail!(Unsupported, "{op} cannot produce {dtype}"))
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

/// The zero point's elements as i64, checked against the scale's shape and X's quantized dtype.
fn zero_points(op: &str, zp: Option<&Tensor>, scale: &Tensor, dtype: DType) -> Result<Option<Vec<i64>>> {
    let Some(zp) = zp else { return Ok(None) };
    if zp.dtype() != dtype {
        bail!(Shape, "{op}: zero point is {} but the quantized tensor is {dtype}", zp.dtype());
    }
    if zp.len() != scale.len() {
        bail!(Shape, "{op}: zero point of shape {:?} does not match scale of shape {:?}", zp.shape(), scale.shape());
    }
    Ok(Some(zp.to_i64_vec()?))
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
    let allowed =
        if ctx.opset >= 21 { &[DType::U8, DType::I8, DType::U16, DType::I16][..] } else { &[DType::U8, DType::I8] };
    let output_dtype = quant_dtype_attr("QuantizeLinear", "output_dtype", a.int_or("output_dtype", 0)?, allowed)?;
    let precision = quant_dtype_attr(
        "QuantizeLinear",
        "precision",
        a.int_or("precision", 0)?,
        &[DType::F32, DType::F16, DType::BF16],
    )?;
    // `saturate` only changes float8 outputs; integer outputs always saturate.
    Ok(Box::new(QuantizeLinear {
        axis: a.int_or("axis", 1)?,
        block_size: block_size as usize,
        output_dtype,
        precision,
    }))
}

/// `y = saturate(round_half_even(x / y_scale) + y_zero_point)`.
#[derive(Debug)]
pub struct QuantizeLinear {
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
    /// The float type the division is done in; by default y_scale's type.
    precision: Option<DType>,
}

impl QuantizeLinear {
    fn output_dtype(&self, zp: Option<DType>) -> Result<DType> {
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
        if !scale.dtype().is_float() {
            bail!(Shape, "{OP}: y_scale must be a float tensor, got {}", scale.dtype());
        }
        let layout = ParamLayout::new(OP, x.shape(), scale.shape(), self.axis, self.block_size)?;
        let zps = zero_points(OP, zp, scale, out)?;
        let precision = self.precision.unwrap_or(scale.dtype());
        let (xv, sv) = (x.to_f64_vec()?, scale.to_f64_vec()?);
        let data = saturated(OP, out, xv.len(), |i| {
            let p = layout.index(i);
            let q = round_to_float(precision, round_to_float(precision, xv[i]) / round_to_float(precision, sv[p]));
            round_to_int(q).saturating_add(zps.as_ref().map_or(0, |z| z[p]))
        })?;
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

/// `y = (x - x_zero_point) * x_scale`, in the scale's type unless `output_dtype` says otherwise.
#[derive(Debug)]
pub struct DequantizeLinear {
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
}

impl Op for DequantizeLinear {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let (x, scale) = (input(inputs, 0)?, input(inputs, 1)?);
        Ok(vec![Fact { dtype: self.output_dtype.or(scale.dtype), shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "DequantizeLinear";
        let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        int_range(OP, x.dtype())?;
        let layout = ParamLayout::new(OP, x.shape(), scale.shape(), self.axis, self.block_size)?;
        let zps = zero_points(OP, zp, scale, x.dtype())?;
        let sv = to_real::<f32>(scale)?;
        let xv = x.to_i64_vec()?;
        let y: Vec<f32> = (0..xv.len())
            .map(|i| {
                let p = layout.index(i);
                let centered = xv[i] - zps.as_ref().map_or(0, |z| z[p]);
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
        let e = build("QuantizeLinear", 21, vec![("output_dtype", Attr::Int(17))], 1).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
        assert!(e.message.contains("float8e4m3fn"), "{e}");
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
