//! Cast and CastLike: element type conversion between every numeric type, bool, and string;
//! BitCast: the same bits read as another type of the same width.
//!
//! Numbers convert with C-like semantics ([`Tensor::cast_numeric`]); floats to the 4- and 2-bit
//! integers round to nearest even and then wrap, as ONNX's int4 note says (see `ir::narrow`; out
//! of range the Cast spec leaves float to int undefined, and onnxruntime wraps too). Strings follow the ONNX
//! reference (numpy): floats print as their shortest round-trip decimal (`0.47892547`, `1e+20`,
//! `nan`, `-inf`), and parsing accepts what C's `strtod` would, including `INF` and `NaN`.
//! The float8 targets honour `saturate` (opset 19) and float8e8m0 also `round_mode` (opset 24);
//! see `ir::narrow` for the conversions themselves.

use super::{input, BuildCtx, Op, Registry};
use crate::ir::narrow::{RoundMode, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, F8E8M0};
use crate::ir::{bytes, DType, Fact, Scalar, Tensor};
use crate::{bail, dispatch, Result};
use half::{bf16, f16};
use std::sync::Arc;

pub fn register(r: &mut Registry) {
    r.add("Cast", build_cast);
    r.add("CastLike", |ctx| Ok(Box::new(Cast { to: None, rounding: rounding(ctx)? })));
    r.add("BitCast", |ctx| Ok(Box::new(BitCast { to: target_dtype(ctx.attrs.req_int("to")?)? })));
}

/// Inference computes the value of a cast of a constant this small (shape arithmetic such as
/// `Shape -> Cast -> Mul -> Cast -> Reshape`) so that later ops can use it before folding.
const MAX_INFERRED_ELEMENTS: usize = 64;

/// The dtype for an ONNX `TensorProto.DataType` code, naming the types this runtime lacks.
fn target_dtype(code: i64) -> Result<DType> {
    let code = i32::try_from(code).ok();
    if let Some(dt) = code.and_then(DType::from_onnx_code) {
        return Ok(dt);
    }
    match code.and_then(crate::ir::dtype::onnx_type_name) {
        Some(name) => bail!(Unsupported, "Cast to {name} is not supported"),
        None => bail!(InvalidModel, "Cast 'to' is {}, which is not an ONNX data type", code.unwrap_or(-1)),
    }
}

/// How a cast to a float8 type treats values it cannot represent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rounding {
    /// Out of range values become the largest finite value rather than infinity or NaN.
    pub saturate: bool,
    /// float8e8m0 only.
    pub mode: RoundMode,
}

impl Default for Rounding {
    fn default() -> Self {
        Rounding { saturate: true, mode: RoundMode::Up }
    }
}

fn rounding(ctx: &BuildCtx) -> Result<Rounding> {
    let mode = match ctx.attrs.string_or("round_mode", "up".into())?.as_str() {
        "up" => RoundMode::Up,
        "down" => RoundMode::Down,
        "nearest" => RoundMode::Nearest,
        other => bail!(InvalidModel, "Cast round_mode must be up, down or nearest, got '{other}'"),
    };
    Ok(Rounding { saturate: ctx.attrs.int_or("saturate", 1)? != 0, mode })
}

fn build_cast(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    Ok(Box::new(Cast { to: Some(target_dtype(ctx.attrs.req_int("to")?)?), rounding: rounding(ctx)? }))
}

#[derive(Debug)]
pub struct Cast {
    /// The target type; `None` for CastLike, which takes it from its second input.
    to: Option<DType>,
    rounding: Rounding,
}

impl Cast {
    /// The type Cast converts to (`None` for CastLike), for passes that fuse a cast.
    pub fn target(&self) -> Option<DType> {
        self.to
    }
}

impl Op for Cast {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        let to = match self.to {
            Some(to) => Some(to),
            None => input(inputs, 1)?.dtype,
        };
        let value = match (&x.value, to) {
            (Some(v), Some(to)) if v.len() <= MAX_INFERRED_ELEMENTS => Some(Arc::new(cast_with(v, to, self.rounding)?)),
            _ => None,
        };
        Ok(vec![Fact { dtype: to, shape: x.shape.clone(), value }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let to = match self.to {
            Some(to) => to,
            None => input(inputs, 1)?.dtype(),
        };
        Ok(vec![cast_with(x, to, self.rounding)?])
    }
}

/// Converts every element of `x` to `to` with ONNX's default float8 rounding (saturating; round
/// up for float8e8m0).
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    cast_with(x, to, Rounding::default())
}

/// Converts every element of `x` to `to`.
pub fn cast_with(x: &Tensor, to: DType, rounding: Rounding) -> Result<Tensor> {
    match (x.dtype(), to) {
        (from, to) if from == to => Ok(x.clone()),
        (_, DType::String) => Tensor::new(x.shape().to_vec(), to_strings(x)?),
        (DType::String, to) => from_strings(x, to),
        (_, DType::F8E8M0) => {
            // Through float32, as ONNX's to_float8e8m0 reads its input.
            let Rounding { saturate, mode } = rounding;
            let y = x.to_f64_vec()?.into_iter().map(|v| F8E8M0::from_f32(v as f32, saturate, mode)).collect();
            Tensor::new(x.shape().to_vec(), y)
        }
        (_, to)
            if !rounding.saturate
                && matches!(to, DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ) =>
        {
            let v = x.to_f64_vec()?;
            let shape = x.shape().to_vec();
            // Scalar::from_f64 saturates, so the non-saturating conversion is spelled out.
            match to {
                DType::F8E4M3FN => Tensor::new(shape, v.into_iter().map(|v| F8E4M3FN::from_f64(v, false)).collect()),
                DType::F8E4M3FNUZ => {
                    Tensor::new(shape, v.into_iter().map(|v| F8E4M3FNUZ::from_f64(v, false)).collect())
                }
                DType::F8E5M2 => Tensor::new(shape, v.into_iter().map(|v| F8E5M2::from_f64(v, false)).collect()),
                _ => Tensor::new(shape, v.into_iter().map(|v| F8E5M2FNUZ::from_f64(v, false)).collect()),
            }
        }
        _ => x.cast_numeric(to),
    }
}

fn to_strings(x: &Tensor) -> Result<Vec<String>> {
    let strings = match x.dtype() {
        DType::F64 => x.as_slice::<f64>()?.iter().map(|&v| format_float(v, &format!("{v:e}"), 1e16)).collect(),
        DType::F32 => x.as_slice::<f32>()?.iter().map(|&v| format_float(v.into(), &format!("{v:e}"), 1e6)).collect(),
        DType::F16 => x.as_slice::<f16>()?.iter().map(|&v| format_float(v.into(), &shortest_digits(v), 1e3)).collect(),
        DType::BF16 => {
            x.as_slice::<bf16>()?.iter().map(|&v| format_float(v.into(), &shortest_digits(v), 1e6)).collect()
        }
        DType::Bool => x.as_slice::<bool>()?.iter().map(|&v| if v { "True" } else { "False" }.to_string()).collect(),
        dt => dispatch!(dt; T => x.as_slice::<T>()?.iter().map(|v| v.to_string()).collect();
            U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64;
            else => bail!(Unsupported, "cannot cast {dt} to string")),
    };
    Ok(strings)
}

/// The shortest `{:e}` rendering of a half-precision value that parses back to the same value
/// (Rust's own shortest formatting only exists for f32 and f64).
fn shortest_digits<T: Scalar>(v: T) -> String {
    let wide = v.to_f64() as f32;
    (0..8)
        .map(|precision| format!("{wide:.precision$e}"))
        .find(|s| s.parse::<f64>().map(T::from_f64) == Ok(v))
        .unwrap_or_else(|| format!("{wide:e}"))
}

/// numpy's rendering of a float, given its shortest digits as Rust's `{:e}` writes them
/// (`-1.25e-5`): positional (`123.0`, `0.001`) from 1e-4 up to `positional_below` (which depends
/// on the float type), otherwise scientific with a signed exponent of at least two digits.
fn format_float(v: f64, sci: &str, positional_below: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let abs = v.abs();
    if abs == 0.0 || (1e-4..positional_below).contains(&abs) {
        if exponent < 0 {
            let zeros = "0".repeat((-exponent - 1) as usize);
            return format!("{sign}0.{zeros}{digits}");
        }
        let int_len = exponent as usize + 1;
        let (int_part, frac) = if digits.len() > int_len {
            (digits[..int_len].to_string(), digits[int_len..].to_string())
        } else {
            (format!("{digits:0<int_len$}"), "0".to_string())
        };
        return format!("{sign}{int_part}.{frac}");
    }
    let (first, rest) = digits.split_at(1);
    let dot = if rest.is_empty() { "" } else { "." };
    let exp_sign = if exponent < 0 { '-' } else { '+' };
    format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exponent.abs())
}

fn from_strings(x: &Tensor, to: DType) -> Result<Tensor> {
    let src = x.as_slice::<String>()?;
    dispatch!(to; T => {
        let out = src.iter().map(|s| parse::<T>(s)).collect::<Result<Vec<T>>>()?;
        Tensor::new(x.shape().to_vec(), out)
    }; F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | Bool
        | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | U4 | I4 | F4E2M1 | F8E8M0 | U2 | I2;
        else => bail!(Unsupported, "cannot cast string to {to}"))
}

/// One string as a number: integers exactly (wrapping into narrower types like C), anything else
/// through f64, so `"1e3"`, `"-INF"` and `"NaN"` work; bools also take `true`/`false`.
fn parse<T: Scalar>(s: &str) -> Result<T> {
    let t = s.trim();
    if T::DTYPE == DType::Bool {
        if t.eq_ignore_ascii_case("true") {
            return Ok(T::one());
        }
        if t.eq_ignore_ascii_case("false") {
            return Ok(T::zero());
        }
    }
    if T::DTYPE.is_int() {
        if let Ok(v) = t.parse::<i64>() {
            return Ok(T::from_i64(v));
        }
        if let Ok(v) = t.parse::<u64>() {
            return Ok(T::from_i64(v as i64));
        }
    }
    match t.parse::<f64>() {
        Ok(v) => Ok(T::from_f64(v)),
        Err(_) => bail!(Runtime, "cannot parse '{s}' as {}", T::DTYPE),
    }
}

/// BitCast (opset 26): reinterprets the little-endian bytes of each element as `to`.
#[derive(Debug)]
pub struct BitCast {
    to: DType,
}

impl BitCast {
    fn check(&self, from: DType) -> Result<()> {
        if from == DType::String || self.to == DType::String || from.packed_bits() != self.to.packed_bits() {
            bail!(InvalidModel, "BitCast needs two non-string types of one bit width, got {from} to {}", self.to);
        }
        Ok(())
    }
}

impl Op for BitCast {
    fn infer(&self, inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        let x = input(inputs, 0)?;
        if let Some(from) = x.dtype {
            self.check(from)?;
        }
        Ok(vec![Fact { dtype: Some(self.to), shape: x.shape.clone(), value: None }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        self.check(x.dtype())?;
        let data = bytes::from_le_bytes(self.to, x.len(), &bytes::to_le_bytes(x)?)?;
        Ok(vec![Tensor::from_data(x.shape().to_vec(), data)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::narrow::{I4, U2};
    use crate::ir::{Attr, Dim};
    use crate::ops::activation::test_util::build;
    use crate::ErrorKind;

    fn cast_op(to: i64) -> Result<Box<dyn Op>> {
        build("Cast", 19, vec![("to", Attr::Int(to)), ("saturate", Attr::Int(1))], 1)
    }

    fn strings(v: &[&str]) -> Tensor {
        Tensor::vector(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn numeric_casts_round_to_nearest() {
        // The inputs of ONNX's test_cast_FLOAT_to_BFLOAT16 / _to_FLOAT16; expected bits from
        // `x.astype(ml_dtypes.bfloat16).view(np.uint16)` and `x.astype(np.float16).view(np.uint16)`.
        let x: Vec<f32> = ["0.47892547", "0.48033667", "0.49968487", "0.81910545", "0.47031248", "0.816468"]
            .iter()
            .map(|s| s.parse().unwrap())
            .chain([0.21087195, 0.7229038, f32::NAN, f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY])
            .collect();
        let x = Tensor::new(vec![3, 4], x).unwrap();
        let y = cast_op(16).unwrap().eval(&[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[3, 4]);
        let bits: Vec<u16> = y.as_slice::<bf16>().unwrap().iter().map(|v| v.to_bits()).collect();
        let want = [0x3ef5, 0x3ef6, 0x3f00, 0x3f52, 0x3ef1, 0x3f51, 0x3e58, 0x3f39, 0x7fc0, 0x7f80, 0x7f80, 0xff80];
        assert_eq!(bits, want);
        let y = cast_op(10).unwrap().eval(&[Some(&x)]).unwrap().remove(0);
        let bits: Vec<u16> = y.as_slice::<f16>().unwrap().iter().map(|v| v.to_bits()).collect();
        let want = [0x37aa, 0x37af, 0x37ff, 0x3a8e, 0x3786, 0x3a88, 0x32bf, 0x39c9, 0x7e00, 0x7c00, 0x7c00, 0xfc00];
        assert_eq!(bits, want);
        let y = cast_op(7).unwrap().eval(&[Some(&Tensor::vector(vec![f16::from_f32(-2.75)]))]).unwrap();
        assert_eq!(y[0].as_slice::<i64>().unwrap(), &[-2]);
    }

    /// A few of ONNX's test_cast(_no_saturate)_FLOAT_to_FLOAT8* inputs; expected codes from
    /// `onnx.numpy_helper.saturate_cast(x, t)` and `x.astype(t)` (ml_dtypes).
    #[test]
    fn float8_targets_saturate_or_not() {
        let x: Vec<f32> = ["0.47892547", "1000000", "1e-7", "NaN", "INF", "-INF", "-0.0000001", "-1000000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let x = Tensor::vector(x);
        let codes = |saturate: i64, to: i64| -> Vec<u8> {
            let op = build("Cast", 19, vec![("to", Attr::Int(to)), ("saturate", Attr::Int(saturate))], 1).unwrap();
            let y = op.eval(&[Some(&x)]).unwrap().remove(0);
            match to {
                17 => y.as_slice::<F8E4M3FN>().unwrap().iter().map(|v| v.0).collect(),
                19 => y.as_slice::<F8E5M2>().unwrap().iter().map(|v| v.0).collect(),
                _ => y.as_slice::<F8E5M2FNUZ>().unwrap().iter().map(|v| v.0).collect(),
            }
        };
        assert_eq!(codes(1, 17), [0x2f, 0x7e, 0x00, 0x7f, 0x7e, 0xfe, 0x80, 0xfe]);
        assert_eq!(codes(0, 17), [0x2f, 0x7f, 0x00, 0x7f, 0x7f, 0xff, 0x80, 0xff]);
        assert_eq!(codes(1, 19), [0x38, 0x7b, 0x00, 0x7e, 0x7b, 0xfb, 0x80, 0xfb]);
        assert_eq!(codes(0, 19), [0x38, 0x7c, 0x00, 0x7e, 0x7c, 0xfc, 0x80, 0xfc]);
        // From float16 (1e6 is already inf there): x.astype(np.float16) then saturate_cast / astype.
        let x16 = cast(&x, DType::F16).unwrap();
        let fnuz = |saturate: bool| -> Vec<u8> {
            let rounding = Rounding { saturate, mode: RoundMode::Up };
            let y = cast_with(&x16, DType::F8E5M2FNUZ, rounding).unwrap();
            y.as_slice::<F8E5M2FNUZ>().unwrap().iter().map(|v| v.0).collect()
        };
        assert_eq!(fnuz(true), [0x3c, 0x7f, 0x00, 0x80, 0x7f, 0xff, 0x00, 0xff]);
        assert_eq!(fnuz(false), [0x3c, 0x80, 0x00, 0x80, 0x80, 0x80, 0x00, 0x80]);
        // And back: codes [0x2f, 0x7e, 0x80, 0xff] of float8e4m3fn as float16.
        let f8 = Tensor::vector([0x2f, 0x7e, 0x80, 0xff].map(F8E4M3FN).to_vec());
        let y = cast(&f8, DType::F16).unwrap();
        let y: Vec<f32> = y.as_slice::<f16>().unwrap().iter().map(|v| v.to_f32()).collect();
        assert_eq!(&y[..3], &[0.46875, 448.0, -0.0]);
        assert!(y[2].is_sign_negative() && y[3].is_nan());
    }

    #[test]
    fn float8e8m0_round_modes_and_narrow_ints() {
        // onnx.numpy_helper.to_float8e8m0(np.array([0.124, 1.1, 6.0], np.float16), False, "nearest")
        let x = Tensor::vector([0.124f32, 1.1, 6.0].map(f16::from_f32).to_vec());
        let attrs =
            vec![("to", Attr::Int(24)), ("saturate", Attr::Int(0)), ("round_mode", Attr::String("nearest".into()))];
        let y = build("Cast", 25, attrs, 1).unwrap().eval(&[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.as_slice::<F8E8M0>().unwrap(), &[124, 127, 130].map(F8E8M0));
        // Floats to int4 round to nearest even, then wrap (-8.5 is a tie: -8); onnxruntime 1.32 gives
        // the same for the others, from float and from float16, by Cast and by CastLike.
        let x = Tensor::vector(vec![-9f32, -8.5, -8.6, 7.9, 8.0, 15.0, 100.0, 1e10]);
        let want = [7, -8, 7, -8, -8, -1, 4, 0].map(I4);
        let y = cast_op(22).unwrap().eval(&[Some(&x)]).unwrap().remove(0);
        assert_eq!(y.as_slice::<I4>().unwrap(), &want);
        let x16 = cast(&x, DType::F16).unwrap();
        let like = Tensor::vector(vec![I4(0)]);
        let y16 = build("CastLike", 21, vec![], 1).unwrap().eval(&[Some(&x16), Some(&like)]).unwrap().remove(0);
        // 1e10 is infinity in float16, which gives 0 as well.
        assert_eq!(y16.as_slice::<I4>().unwrap(), &want);
        // int4 widens with its sign; integers to narrow ints keep the low bits (onnxruntime 1.32:
        // int32 [300, -300, -9, 16] -> int4 [-4, 4, 7, 0]).
        assert_eq!(cast(&y, DType::I8).unwrap().as_slice::<i8>().unwrap(), &[7, -8, 7, -8, -8, -1, 4, 0]);
        let y = cast(&Tensor::vector(vec![300i32, -300, -9, 16]), DType::I4).unwrap();
        assert_eq!(y.as_slice::<I4>().unwrap(), &[-4, 4, 7, 0].map(I4));
        let y = cast(&Tensor::vector(vec![5i64, -1, 1 << 40]), DType::U2).unwrap();
        assert_eq!(y.as_slice::<U2>().unwrap(), &[U2(1), U2(3), U2(0)]);
    }

    #[test]
    fn floats_format_like_numpy() {
        // np.array([...], dtype=np.float32).astype(np.str_)
        let x = Tensor::vector(vec![
            0.47892547f32,
            1.0,
            1e20,
            1.5e-5,
            1e-4,
            0.0001234,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            123456789.0,
            100000.5,
            1e6,
        ]);
        let y = cast(&x, DType::String).unwrap();
        let want = [
            "0.47892547",
            "1.0",
            "1e+20",
            "1.5e-05",
            "1e-04",
            "0.0001234",
            "-0.0",
            "nan",
            "inf",
            "-inf",
            "1.2345679e+08",
            "100000.5",
            "1e+06",
        ];
        assert_eq!(y.as_slice::<String>().unwrap(), &want.map(String::from));
        let x = Tensor::vector(vec![0.47892547f64, 9899999475269632.0, 1e16, 1e-300]);
        let want = ["0.47892547", "9899999475269632.0", "1e+16", "1e-300"];
        assert_eq!(cast(&x, DType::String).unwrap().as_slice::<String>().unwrap(), &want.map(String::from));
        let x = Tensor::vector([0.47892547f32, 999.0, 1000.0, 65504.0, 1.5e-7].map(f16::from_f32).to_vec());
        let want = ["0.479", "999.0", "1e+03", "6.55e+04", "2e-07"];
        assert_eq!(cast(&x, DType::String).unwrap().as_slice::<String>().unwrap(), &want.map(String::from));
    }

    #[test]
    fn integers_and_bools_to_string() {
        let y = cast(&Tensor::vector(vec![-5i8, 127]), DType::String).unwrap();
        assert_eq!(y.as_slice::<String>().unwrap(), &["-5".to_string(), "127".to_string()]);
        let y = cast(&Tensor::vector(vec![true, false]), DType::String).unwrap();
        assert_eq!(y.as_slice::<String>().unwrap(), &["True".to_string(), "False".to_string()]);
    }

    #[test]
    fn strings_parse_to_numbers() {
        let x = strings(&["0.47892547", "NaN", "INF", "+INF", "-INF", " 1e3 "]);
        let y = cast(&x, DType::F32).unwrap();
        let y = y.as_slice::<f32>().unwrap();
        assert_eq!(y[0], 0.47892547);
        assert!(y[1].is_nan());
        assert_eq!(&y[2..], &[f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, 1000.0]);
        let y = cast(&strings(&["-7", "18446744073709551615", "2.9"]), DType::I64).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[-7, -1, 2]);
        let y = cast(&strings(&["True", "false", "0", "2"]), DType::Bool).unwrap();
        assert_eq!(y.as_slice::<bool>().unwrap(), &[true, false, false, true]);
    }

    #[test]
    fn unparsable_strings_and_unsupported_types_are_errors() {
        let e = cast(&strings(&["1", "abc"]), DType::I32).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Runtime);
        assert!(e.message.contains("'abc'"), "{e}");
        let e = cast_op(27).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("float6e2m3"), "{e}");
        assert_eq!(cast_op(14).unwrap_err().kind, ErrorKind::Unsupported);
        let attrs = vec![("to", Attr::Int(24)), ("round_mode", Attr::String("sideways".into()))];
        assert_eq!(build("Cast", 24, attrs, 1).unwrap_err().kind, ErrorKind::InvalidModel);
        assert_eq!(cast_op(99).unwrap_err().kind, ErrorKind::InvalidModel);
    }

    #[test]
    fn cast_like_takes_the_second_inputs_type() {
        let op = Cast { to: None, rounding: Rounding::default() };
        let x = Tensor::vector(vec![1.5f64, -1.0]);
        let y = op.eval(&[Some(&x), Some(&Tensor::scalar(0f32))]).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.5, -1.0]);
        let facts =
            op.infer(&[Some(&Fact::new(DType::F64, vec![Dim::Symbol("n".into())])), Some(&Fact::of_dtype(DType::I8))]);
        let facts = facts.unwrap();
        assert_eq!(facts[0].dtype, Some(DType::I8));
        assert_eq!(facts[0].shape, Some(vec![Dim::Symbol("n".into())]));
    }

    #[test]
    fn infer_folds_small_constants() {
        let op = cast_op(1).unwrap();
        let shape = Fact::constant(Arc::new(Tensor::vector(vec![2i64, 3])));
        let facts = op.infer(&[Some(&shape)]).unwrap();
        assert_eq!(facts[0].value.as_ref().unwrap().as_slice::<f32>().unwrap(), &[2.0, 3.0]);
    }

    #[test]
    fn bitcast_keeps_the_bits() {
        let op = build("BitCast", 26, vec![("to", Attr::Int(6))], 1).unwrap();
        let x = Tensor::vector(vec![1.0f32, -2.5]);
        let y = op.eval(&[Some(&x)]).unwrap().remove(0);
        // 1.0f32 = 0x3f800000, -2.5f32 = 0xc0200000
        assert_eq!(y.as_slice::<i32>().unwrap(), &[0x3f80_0000, 0xc020_0000u32 as i32]);
        let op = build("BitCast", 26, vec![("to", Attr::Int(2))], 1).unwrap();
        let y = op.eval(&[Some(&Tensor::vector(vec![-1i8, 5]))]).unwrap().remove(0);
        assert_eq!(y.as_slice::<u8>().unwrap(), &[255, 5]);
    }

    #[test]
    fn bitcast_refuses_other_widths_and_strings() {
        let op = build("BitCast", 26, vec![("to", Attr::Int(7))], 1).unwrap();
        let err = op.eval(&[Some(&Tensor::vector(vec![1.0f32]))]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidModel);
        assert!(err.to_string().contains("bit width"), "{err}");
        let op = build("BitCast", 26, vec![("to", Attr::Int(8))], 1).unwrap();
        assert!(op.eval(&[Some(&Tensor::vector(vec![1u8]))]).is_err());
    }
}
