//! Integer and quantized products: ConvInteger, MatMulInteger, QLinearConv and QLinearMatMul.
//!
//! Each one subtracts the zero points in i32, runs the shared Conv or MatMul kernel with i32
//! accumulation (wrapping on overflow, as C would), and for the QLinear ops requantizes with
//! `saturate(round_half_even(acc * x_scale * w_scale / y_scale) + y_zero_point)`, the multiplier
//! computed in the scales' float type as onnxruntime does.

use super::broadcast::binary;
use super::conv::{conv_forward, ConvAttrs};
use super::matmul::{matmul, matmul_shape};
use super::quant::{round_to_int, saturated};
use super::real::to_real;
use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::shape::broadcast_shapes;
use crate::ir::{DType, Fact, Tensor};
use crate::{bail, Result};
use half::{bf16, f16};

pub fn register(r: &mut Registry) {
    r.add("ConvInteger", |ctx: &BuildCtx| Ok(Box::new(ConvInteger { attrs: ConvAttrs::parse(ctx.attrs)? })));
    r.add("QLinearConv", |ctx: &BuildCtx| Ok(Box::new(QLinearConv { attrs: ConvAttrs::parse(ctx.attrs)? })));
    r.add("MatMulInteger", |_| Ok(Box::new(MatMulInteger)));
    r.add("QLinearMatMul", |_| Ok(Box::new(QLinearMatMul)));
}

fn check_quantized(op: &str, what: &str, t: &Tensor) -> Result<()> {
    if !matches!(t.dtype(), DType::U8 | DType::I8) {
        bail!(Unsupported, "{op}: {what} must be uint8 or int8, got {}", t.dtype());
    }
    Ok(())
}

/// A per-tensor parameter, or a vector of per-index parameters, reshaped so that it broadcasts
/// onto an operand: a vector is laid on the axis that has `trailing` axes after it.
fn along_axis(t: &Tensor, trailing: usize) -> Result<Tensor> {
    if t.rank() != 1 || t.len() == 1 {
        return Ok(t.clone());
    }
    let mut shape = vec![t.len()];
    shape.resize(1 + trailing, 1);
    t.clone().reshape(shape)
}

/// `t - zero_point` in i32; the zero point is per tensor or a vector along the axis that has
/// `trailing` axes after it, and must not widen `t`'s shape.
fn centered(op: &str, what: &str, t: &Tensor, zp: Option<&Tensor>, trailing: usize) -> Result<Tensor> {
    check_quantized(op, what, t)?;
    let wide = t.cast_numeric(DType::I32)?;
    let Some(zp) = zp else { return Ok(wide) };
    if zp.dtype() != t.dtype() {
        bail!(Shape, "{op}: the zero point of {what} is {} but {what} is {}", zp.dtype(), t.dtype());
    }
    let zp = along_axis(&zp.cast_numeric(DType::I32)?, trailing)?;
    if broadcast_shapes(t.shape(), zp.shape()).ok().as_deref() != Some(t.shape()) {
        bail!(Shape, "{op}: zero point of shape {:?} does not fit {what} of shape {:?}", zp.shape(), t.shape());
    }
    binary::<i32, i32, i32>(&wide, &zp, |a, b| a.wrapping_sub(*b))
}

/// Rounds an f32 result to the float type the scales come in, so that the requantization
/// multiplier is what arithmetic in that type gives.
fn in_scale_type(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// The requantization multiplier `a_scale * b_scale / y_scale` as an f32 tensor; `a` and `b` are
/// already laid out to broadcast onto the accumulator, `y` must be per tensor.
fn multiplier(op: &str, a: &Tensor, b: &Tensor, y: &Tensor) -> Result<Tensor> {
    let dtype = a.dtype();
    if b.dtype() != dtype || y.dtype() != dtype {
        bail!(Shape, "{op}: scales must share one type, got {}, {} and {}", dtype, b.dtype(), y.dtype());
    }
    if y.len() != 1 {
        bail!(Shape, "{op}: y_scale must be a single value, got shape {:?}", y.shape());
    }
    let widen = |t: &Tensor| -> Result<Tensor> { Tensor::new(t.shape().to_vec(), to_real::<f32>(t)?.into_owned()) };
    let y_scale = to_real::<f32>(y)?[0];
    binary::<f32, f32, f32>(&widen(a)?, &widen(b)?, |sa, sb| {
        in_scale_type(dtype, in_scale_type(dtype, sa * sb) / y_scale)
    })
}

/// The quantized output: `saturate(round(acc * multiplier) + zero_point)` with the multiplier
/// broadcast onto `acc`, stored as the zero point's type (else `default_dtype`).
fn requantize(op: &str, acc: &Tensor, mult: &Tensor, y_zp: Option<&Tensor>, default_dtype: DType) -> Result<Tensor> {
    if broadcast_shapes(acc.shape(), mult.shape()).ok().as_deref() != Some(acc.shape()) {
        bail!(Shape, "{op}: scales of shape {:?} do not fit the output of shape {:?}", mult.shape(), acc.shape());
    }
    let (dtype, zp) = match y_zp {
        Some(z) if z.len() != 1 => bail!(Shape, "{op}: y_zero_point must be a single value, got shape {:?}", z.shape()),
        Some(z) => (z.dtype(), z.to_i64_vec()?[0]),
        None => (default_dtype, 0),
    };
    // One f32 per output element: the scaled accumulator before rounding, as onnxruntime computes it.
    let scaled = binary::<i32, f32, f32>(acc, mult, |a, m| *a as f32 * m)?;
    let values = scaled.as_slice::<f32>()?;
    let data = saturated(op, dtype, values.len(), |i| round_to_int(f64::from(values[i])).saturating_add(zp))?;
    Tensor::from_data(acc.shape().to_vec(), data)
}

fn dtype_of(fact: Option<&Fact>, default: Option<DType>) -> Option<DType> {
    match fact {
        Some(f) => f.dtype,
        None => default,
    }
}

/// The integer convolution of X and W after subtracting their zero points (X's per tensor, W's per
/// tensor or per output channel).
fn conv_i32(
    op: &str,
    attrs: &ConvAttrs,
    x: &Tensor,
    x_zp: Option<&Tensor>,
    w: &Tensor,
    w_zp: Option<&Tensor>,
) -> Result<Tensor> {
    if x_zp.is_some_and(|z| z.len() != 1) {
        bail!(Shape, "{op}: x_zero_point must be a single value");
    }
    let xc = centered(op, "X", x, x_zp, 0)?;
    let wc = centered(op, "W", w, w_zp, w.rank().saturating_sub(1))?;
    let (shape, y) = conv_forward(op, attrs, (xc.as_slice::<i32>()?, x.shape()), (wc.as_slice::<i32>()?, w.shape()))?;
    Tensor::new(shape, y)
}

/// Convolution of uint8/int8 tensors with zero points, giving the exact int32 sums.
#[derive(Debug)]
pub struct ConvInteger {
    pub attrs: ConvAttrs,
}

impl Op for ConvInteger {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let shape = self.attrs.forward_shape("ConvInteger", input(inputs, 0)?, input(inputs, 1)?)?;
        Ok(vec![Fact { dtype: Some(DType::I32), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let y = conv_i32("ConvInteger", &self.attrs, x, opt_input(inputs, 2), w, opt_input(inputs, 3))?;
        Ok(vec![y])
    }
}

/// Quantized convolution: inputs x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
/// y_zero_point, and an optional int32 bias quantized with scale x_scale * w_scale.
#[derive(Debug)]
pub struct QLinearConv {
    pub attrs: ConvAttrs,
}

impl Op for QLinearConv {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let shape = self.attrs.forward_shape("QLinearConv", x, input(inputs, 3)?)?;
        Ok(vec![Fact { dtype: dtype_of(opt_input(inputs, 7), x.dtype), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "QLinearConv";
        let (x, x_scale, w, w_scale, y_scale) =
            (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 3)?, input(inputs, 4)?, input(inputs, 6)?);
        let mut acc = conv_i32(OP, &self.attrs, x, opt_input(inputs, 2), w, opt_input(inputs, 5))?;
        let out_rank = acc.rank();
        if let Some(b) = opt_input(inputs, 8) {
            let maps = acc.shape().get(1).copied().unwrap_or(0);
            if b.dtype() != DType::I32 || b.shape() != [maps] {
                bail!(
                    Shape,
                    "{OP}: B must be int32 with one value per output channel ({maps}), got {} {:?}",
                    b.dtype(),
                    b.shape()
                );
            }
            acc = binary::<i32, i32, i32>(&acc, &along_axis(b, out_rank - 2)?, |a, b| a.wrapping_add(*b))?;
        }
        if x_scale.len() != 1 {
            bail!(Shape, "{OP}: x_scale must be a single value, got shape {:?}", x_scale.shape());
        }
        let mult = multiplier(OP, x_scale, &along_axis(w_scale, out_rank - 2)?, y_scale)?;
        Ok(vec![requantize(OP, &acc, &mult, opt_input(inputs, 7), x.dtype())?])
    }
}

/// The int32 numpy matmul of A and B after subtracting their zero points (A's per tensor or per
/// row, B's per tensor or per column).
pub(super) fn matmul_i32(
    op: &str,
    a: &Tensor,
    a_zp: Option<&Tensor>,
    b: &Tensor,
    b_zp: Option<&Tensor>,
) -> Result<Tensor> {
    let ac = centered(op, "A", a, a_zp, 1)?;
    let bc = centered(op, "B", b, b_zp, 0)?;
    let (shape, y) = matmul(ac.as_slice::<i32>()?, a.shape(), bc.as_slice::<i32>()?, b.shape())?;
    Tensor::new(shape, y)
}

/// Numpy matmul of uint8/int8 tensors with zero points, giving the exact int32 sums.
#[derive(Debug)]
pub struct MatMulInteger;

impl Op for MatMulInteger {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let shape = matmul_shape("MatMulInteger", input(inputs, 0)?, input(inputs, 1)?)?;
        Ok(vec![Fact { dtype: Some(DType::I32), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        Ok(vec![matmul_i32("MatMulInteger", a, opt_input(inputs, 2), b, opt_input(inputs, 3))?])
    }
}

/// Quantized matmul: inputs a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
/// y_zero_point; A's parameters per tensor or per row, B's per tensor or per column.
#[derive(Debug)]
pub struct QLinearMatMul;

impl Op for QLinearMatMul {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let a = input(inputs, 0)?;
        let shape = matmul_shape("QLinearMatMul", a, input(inputs, 3)?)?;
        Ok(vec![Fact { dtype: dtype_of(opt_input(inputs, 7), a.dtype), shape, value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        const OP: &str = "QLinearMatMul";
        let (a, a_scale, b, b_scale, y_scale) =
            (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 3)?, input(inputs, 4)?, input(inputs, 6)?);
        let acc = matmul_i32(OP, a, opt_input(inputs, 2), b, opt_input(inputs, 5))?;
        let mult = multiplier(OP, &along_axis(a_scale, 1)?, b_scale, y_scale)?;
        Ok(vec![requantize(OP, &acc, &mult, opt_input(inputs, 7), a.dtype())?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::activation::test_util::build;

    fn eval(op: &str, attrs: Vec<(&str, Attr)>, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        Ok(build(op, 21, attrs, 1)?.eval(inputs)?.remove(0))
    }

    #[test]
    fn matmul_integer_with_row_and_column_zero_points() {
        // ONNX test_matmulinteger: A 4x3 uint8 with zp 12, B 3x2 with zp 0.
        let a = Tensor::new(vec![4, 3], vec![11u8, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]).unwrap();
        let b = Tensor::new(vec![3, 2], vec![1u8, 4, 2, 5, 3, 6]).unwrap();
        let y = eval(
            "MatMulInteger",
            vec![],
            &[Some(&a), Some(&b), Some(&Tensor::scalar(12u8)), Some(&Tensor::scalar(0u8))],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[-38, -83, -44, -98, -50, -113, -56, -128]);
        // numpy: A = [[1, 2], [3, 4]] int8 with row zps [1, 2]; B = [[5, 6], [7, 8]] with column zps [5, 0].
        // (A - [[1], [2]]) @ (B - [5, 0]) = [[0, 1], [1, 2]] @ [[0, 6], [2, 8]] = [[2, 8], [4, 22]]
        let a = Tensor::new(vec![2, 2], vec![1i8, 2, 3, 4]).unwrap();
        let b = Tensor::new(vec![2, 2], vec![5i8, 6, 7, 8]).unwrap();
        let (za, zb) = (Tensor::vector(vec![1i8, 2]), Tensor::vector(vec![5i8, 0]));
        let y = eval("MatMulInteger", vec![], &[Some(&a), Some(&b), Some(&za), Some(&zb)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[2, 8, 4, 22]);
    }

    #[test]
    fn qlinear_matmul_requantizes_with_rounding() {
        // ONNX test_qlinearmatmul_2D_uint8_float32.
        let a = Tensor::new(vec![2, 4], vec![208u8, 236, 0, 238, 3, 214, 255, 29]).unwrap();
        let b = Tensor::new(vec![4, 3], vec![152u8, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247]).unwrap();
        let inputs = [
            Some(&a),
            Some(&Tensor::scalar(0.0066f32)),
            Some(&Tensor::scalar(113u8)),
            Some(&b),
            Some(&Tensor::scalar(0.00705f32)),
            Some(&Tensor::scalar(114u8)),
            Some(&Tensor::scalar(0.0107f32)),
            Some(&Tensor::scalar(118u8)),
        ];
        let y = eval("QLinearMatMul", vec![], &inputs).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[168, 115, 255, 1, 66, 151]);
    }

    #[test]
    fn conv_integer_and_qlinear_conv() {
        // ONNX test_convinteger_with_padding: x = arange(2, 11) 3x3 uint8, zp 1, W ones 2x2, pads 1.
        let x = Tensor::new(vec![1, 1, 3, 3], (2u8..11).collect()).unwrap();
        let w = Tensor::new(vec![1, 1, 2, 2], vec![1u8; 4]).unwrap();
        let attrs = vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))];
        let y = eval("ConvInteger", attrs, &[Some(&x), Some(&w), Some(&Tensor::scalar(1u8))]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]);
        // Pointwise QLinearConv with two output channels, per-channel w scales and a bias:
        // acc = (x - 10) * (w - [0, 1]) + B = [(x-10)*2 + 4, (x-10)*(-2) + 0]; y = round(acc * 0.5 * ws / 1) + 100.
        let x = Tensor::new(vec![1, 1, 1, 3], vec![10u8, 13, 20]).unwrap();
        let w = Tensor::new(vec![2, 1, 1, 1], vec![2i8, -1]).unwrap();
        let b = Tensor::vector(vec![4i32, 0]);
        let inputs = [
            Some(&x),
            Some(&Tensor::scalar(0.5f32)),
            Some(&Tensor::scalar(10u8)),
            Some(&w),
            Some(&Tensor::vector(vec![1f32, 0.25])),
            Some(&Tensor::vector(vec![0i8, 1])),
            Some(&Tensor::scalar(1f32)),
            Some(&Tensor::scalar(100u8)),
            Some(&b),
        ];
        let y = eval("QLinearConv", vec![], &inputs).unwrap();
        // channel 0: acc [4, 10, 24] * 0.5 -> [2, 5, 12]; channel 1: acc [0, -6, -20] * 0.125 -> [0, -0.75, -2.5] -> [0, -1, -2]
        assert_eq!(y.as_slice::<u8>().unwrap(), &[102, 105, 112, 100, 99, 98]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = Tensor::new(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let e = eval("MatMulInteger", vec![], &[Some(&a), Some(&a)]).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
        let q = Tensor::new(vec![2, 2], vec![1u8, 2, 3, 4]).unwrap();
        let e =
            eval("MatMulInteger", vec![], &[Some(&q), Some(&q), Some(&Tensor::vector(vec![1u8, 2, 3]))]).unwrap_err();
        assert!(e.message.contains("does not fit"), "{e}");
        let e = eval("MatMulInteger", vec![], &[Some(&q), Some(&q), Some(&Tensor::scalar(1i8))]).unwrap_err();
        assert!(e.message.contains("zero point of A is int8"), "{e}");
        let x = Tensor::new(vec![1, 1, 2, 2], vec![1u8; 4]).unwrap();
        let w = Tensor::new(vec![1, 2, 1, 1], vec![1u8; 2]).unwrap();
        assert!(eval("ConvInteger", vec![], &[Some(&x), Some(&w)]).is_err());
        let s = Tensor::scalar(1f32);
        let w = Tensor::new(vec![1, 1, 1, 1], vec![1u8]).unwrap();
        let bad_scale = Tensor::vector(vec![1f32, 2.]);
        let inputs = [Some(&x), Some(&s), None, Some(&w), Some(&s), None, Some(&bad_scale), None];
        assert!(eval("QLinearConv", vec![], &inputs).is_err());
    }
}
