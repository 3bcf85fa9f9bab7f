//! The numpy `.npy` format (versions 1-3), little-endian, C order. numpy has no bfloat16, float8,
//! float4, 4-bit or 2-bit types, so those are written as the numpy type a reader gets correct numbers
//! or exact bits from: bfloat16 as its raw bits (`<u2`), float8 (every variant) and float4e2m1 as
//! their bit codes, one per byte (`|u1`), int4 and int2 as their values sign-extended to `int8`
//! (`|i1`), uint4 and uint2 as their values in `uint8` (`|u1`). Reading a `.npy` never gives one of
//! these types back: `<u2` reads as uint16, `|u1` as uint8, `|i1` as int8.

use crate::ir::narrow::{NarrowBits, I2, I4};
use crate::ir::{DType, Elem, Tensor};
use crate::{bail, dispatch, err, Result};
use half::{bf16, f16};

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::BF16 | DType::U16 => "<u2",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        DType::String => return None,
        DType::I4 | DType::I2 => "|i1",
        d if d.is_narrow() => "|u1",
        _ => return None,
    })
}

fn dtype_of_descr(d: &str) -> Result<DType> {
    // '=' and '<' both mean little-endian on the machines we support; '|' is "not applicable".
    let norm = d.replace(['=', '|'], "<");
    for dt in crate::ir::dtype::DType::ALL {
        // These share their descr with a numpy type, which is what the file holds.
        if dt == DType::BF16 || dt.is_narrow() {
            continue;
        }
        if descr(dt).map(|s| s.replace('|', "<")) == Some(norm.clone()) {
            return Ok(dt);
        }
    }
    if norm.starts_with("<U") {
        return Ok(DType::String);
    }
    bail!(Unsupported, "npy dtype '{d}' is not supported (big-endian or unknown)")
}

/// Serialises a tensor as `.npy` bytes.
pub fn to_npy(t: &Tensor) -> Result<Vec<u8>> {
    let shape: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape_str = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.join(", ")),
    };
    let (descr, body) = match t.dtype() {
        DType::String => {
            let v = t.as_slice::<String>()?;
            // Fixed-width UTF-32, as numpy's '<U' dtype.
            let width = v.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1);
            let mut body = Vec::with_capacity(v.len() * width * 4);
            for s in v {
                let mut n = 0;
                for c in s.chars() {
                    body.extend_from_slice(&(c as u32).to_le_bytes());
                    n += 1;
                }
                body.resize(body.len() + (width - n) * 4, 0);
            }
            (format!("<U{width}"), body)
        }
        _ => (descr(t.dtype()).unwrap_or("<u2").to_string(), raw_le_bytes(t)?),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Pad so that the data starts on a 64-byte boundary; the header ends with '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn raw_le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    // numpy has no 4- or 2-bit types: integers are written as int8/uint8 values, floats as their
    // codes, one per byte.
    match t.dtype() {
        DType::I4 => return Ok(t.as_slice::<I4>()?.iter().map(|v| v.to_i64() as i8 as u8).collect()),
        DType::I2 => return Ok(t.as_slice::<I2>()?.iter().map(|v| v.to_i64() as i8 as u8).collect()),
        _ => {}
    }
    if t.dtype().is_narrow() {
        return dispatch!(t.dtype(); T => Ok(t.as_slice::<T>()?.iter().map(|v| v.to_bits()).collect());
            narrow; else => bail!(Unsupported, "{} has no raw byte form", t.dtype()));
    }
    crate::ir::bytes::to_le_bytes(t)
}

/// Parses `.npy` bytes. Every size is checked against the bytes present before allocating.
pub fn from_npy(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!(InvalidInput, "not a .npy file (bad magic)");
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!(InvalidInput, ".npy version {v} is not supported"),
    };
    let header_end = start.checked_add(header_len).filter(|&e| e <= bytes.len());
    let header_end = header_end.ok_or_else(|| err!(InvalidInput, ".npy header runs past the end of the file"))?;
    let header =
        std::str::from_utf8(&bytes[start..header_end]).map_err(|_| err!(InvalidInput, ".npy header is not text"))?;
    let descr = header_field(header, "descr")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    if header_field(header, "fortran_order")?.trim() != "False" {
        bail!(Unsupported, ".npy file is in Fortran order; save it with np.ascontiguousarray");
    }
    let shape_str = header_field(header, "shape")?;
    let shape: Vec<usize> = shape_str
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| err!(InvalidInput, ".npy shape {shape_str} is not valid")))
        .collect::<Result<_>>()?;
    let dtype = dtype_of_descr(descr)?;
    let body = &bytes[header_end..];
    let n = crate::ir::tensor::checked_len(&shape, dtype)?;
    if dtype == DType::String {
        let width: usize = descr[2..].parse().map_err(|_| err!(InvalidInput, "bad .npy string dtype {descr}"))?;
        // A width of 2^62 characters must not overflow: it is only ever longer than the file.
        let need = width.checked_mul(4).and_then(|w| n.checked_mul(w)).filter(|&b| b <= body.len());
        need.ok_or_else(|| err!(InvalidInput, ".npy data is shorter than its shape {shape:?} needs"))?;
        let strings = (0..n)
            .map(|i| {
                body[i * width * 4..(i + 1) * width * 4]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .take_while(|&c| c != 0)
                    .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                    .collect::<String>()
            })
            .collect();
        return Tensor::new(shape, strings);
    }
    let size = dtype.size();
    if body.len() < n * size {
        bail!(InvalidInput, ".npy data has {} bytes, shape {shape:?} of {dtype} needs {}", body.len(), n * size);
    }
    let body = &body[..n * size];
    let data = dispatch!(dtype; T => T::wrap(decode_le::<T>(body));
        F32 | F64 | F16 | BF16 | U8 | I8 | U16 | I16 | I32 | I64 | U32 | U64 | Bool;
        else => bail!(Unsupported, "npy dtype {dtype}"));
    Tensor::from_data(shape, data)
}

/// Finds `'key': value` in a numpy header dict and returns the value text.
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let pat = format!("'{key}':");
    let at = header.find(&pat).ok_or_else(|| err!(InvalidInput, ".npy header has no '{key}'"))? + pat.len();
    let rest = &header[at..];
    let end = if rest.trim_start().starts_with('(') { rest.find(')').map(|i| i + 1) } else { rest.find([',', '}']) };
    Ok(&rest[..end.unwrap_or(rest.len())])
}

/// Types that can be read from little-endian bytes.
trait FromLe: Sized {
    fn from_le(b: &[u8]) -> Self;
}
macro_rules! from_le {
    ($($t:ty),*) => {$( impl FromLe for $t {
        fn from_le(b: &[u8]) -> Self { <$t>::from_le_bytes(b.try_into().unwrap_or_default()) }
    })*};
}
from_le!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);
impl FromLe for f16 {
    fn from_le(b: &[u8]) -> Self {
        f16::from_bits(<u16 as FromLe>::from_le(b))
    }
}
impl FromLe for bf16 {
    fn from_le(b: &[u8]) -> Self {
        bf16::from_bits(<u16 as FromLe>::from_le(b))
    }
}
impl FromLe for bool {
    fn from_le(b: &[u8]) -> Self {
        b[0] != 0
    }
}

fn decode_le<T: FromLe>(body: &[u8]) -> Vec<T> {
    body.chunks_exact(std::mem::size_of::<T>()).map(T::from_le).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_dtype() {
        let ts = vec![
            Tensor::new(vec![2, 3], vec![1.5f32, -2.0, 3.0, 4.0, 5.0, 6.25]).unwrap(),
            Tensor::new(vec![3], vec![1i64, -2, i64::MAX]).unwrap(),
            Tensor::new(vec![2], vec![true, false]).unwrap(),
            Tensor::scalar(f16::from_f32(0.5)),
            Tensor::new(vec![2], vec!["ab".to_string(), "héllo".to_string()]).unwrap(),
            Tensor::new(vec![0, 4], Vec::<u8>::new()).unwrap(),
        ];
        for t in ts {
            let bytes = to_npy(&t).unwrap();
            assert!((bytes.len() - t.len() * t.dtype().size()).is_multiple_of(64) || t.dtype() == DType::String);
            assert_eq!(from_npy(&bytes).unwrap(), t);
        }
    }

    #[test]
    fn narrow_types_are_written_as_numpy_reads_them() {
        use crate::ir::narrow::{F4E2M1, F8E4M3FN, F8E8M0, U2, U4};
        let descr_of = |t: &Tensor| {
            let bytes = to_npy(t).unwrap();
            let header = String::from_utf8_lossy(&bytes[10..]).to_string();
            header_field(&header, "descr").unwrap().trim().trim_matches('\'').to_string()
        };
        // Signed narrow integers: their values, sign-extended to int8.
        let t = Tensor::vector(vec![I4(-1), I4(3), I4(-8), I4(7)]);
        assert_eq!(descr_of(&t), "|i1");
        assert_eq!(from_npy(&to_npy(&t).unwrap()).unwrap().as_slice::<i8>().unwrap(), &[-1, 3, -8, 7]);
        let t = Tensor::vector(vec![I2(-2), I2(1), I2(-1)]);
        assert_eq!(from_npy(&to_npy(&t).unwrap()).unwrap().as_slice::<i8>().unwrap(), &[-2, 1, -1]);
        // Unsigned ones: their values as uint8.
        let t = Tensor::vector(vec![U4(15), U4(0), U4(9)]);
        assert_eq!(descr_of(&t), "|u1");
        assert_eq!(from_npy(&to_npy(&t).unwrap()).unwrap().as_slice::<u8>().unwrap(), &[15, 0, 9]);
        let t = Tensor::vector(vec![U2(3), U2(2)]);
        assert_eq!(from_npy(&to_npy(&t).unwrap()).unwrap().as_slice::<u8>().unwrap(), &[3, 2]);
        // Narrow floats: their bit codes as uint8; bfloat16: its bits as uint16.
        let codes = [
            (Tensor::vector(vec![F8E4M3FN(0x7e), F8E4M3FN(0x80)]), [0x7e, 0x80]),
            (Tensor::vector(vec![F4E2M1(0x0f), F4E2M1(0x01)]), [0x0f, 0x01]),
            (Tensor::vector(vec![F8E8M0(0x7f), F8E8M0(0xff)]), [0x7f, 0xff]),
        ];
        for (t, code) in codes {
            assert_eq!(descr_of(&t), "|u1", "{}", t.dtype());
            assert_eq!(from_npy(&to_npy(&t).unwrap()).unwrap().as_slice::<u8>().unwrap(), &code, "{}", t.dtype());
        }
        let t = Tensor::vector(vec![bf16::from_f32(-1.5)]);
        assert_eq!(descr_of(&t), "<u2");
        assert_eq!(from_npy(&to_npy(&t).unwrap()).unwrap().as_slice::<u16>().unwrap(), &[0xbfc0]);
    }

    #[test]
    fn reads_numpy_written_bytes() {
        // np.save(f, np.array([[1, 2]], dtype=np.int32)) produces exactly this header.
        let mut b = b"\x93NUMPY\x01\x00v\x00{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2), }".to_vec();
        b.resize(10 + 0x76 - 1, b' ');
        b.push(b'\n');
        b.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let t = from_npy(&b).unwrap();
        assert_eq!(t.shape(), &[1, 2]);
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, 2]);
    }

    #[test]
    fn rejects_truncated_and_lying_files() {
        let t = Tensor::new(vec![4], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
        let bytes = to_npy(&t).unwrap();
        for cut in 0..bytes.len() {
            assert!(from_npy(&bytes[..cut]).is_err(), "prefix of {cut} bytes was accepted");
        }
        let lying = String::from_utf8_lossy(&bytes).replace("(4,)", "(9999999999999,)");
        assert!(from_npy(lying.as_bytes()).is_err());
    }
}
