//! Tensors in and out of JSON and the binary tensor form: the Open Inference Protocol's datatype
//! names, flat or nested JSON lists, and raw little-endian bytes (BYTES as 4-byte length-prefixed
//! strings). Every error is a message for a 400 answer, naming the tensor.

use crate::ir::bytes::{from_le_bytes, to_le_bytes};
use crate::ir::tensor::checked_len;
use crate::ir::{Elem, TensorData};
use crate::{DType, Tensor};
use half::{bf16, f16};
use serde_json::Value;

/// The protocol's name for a dtype, or `None` for the dtypes it has no name for (float8, int4, ...).
pub fn v2_datatype(dt: DType) -> Option<&'static str> {
    Some(match dt {
        DType::Bool => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F16 => "FP16",
        DType::BF16 => "BF16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::String => "BYTES",
        _ => return None,
    })
}

pub fn dtype_from_v2(name: &str) -> Option<DType> {
    DType::ALL.into_iter().find(|&dt| v2_datatype(dt) == Some(name))
}

/// A model's dtype as a protocol name, or an error that says the protocol cannot carry it.
pub fn v2_name_of(dt: DType, tensor: &str) -> Result<&'static str, String> {
    v2_datatype(dt).ok_or_else(|| format!("'{tensor}' is {dt}, which the inference protocol has no datatype for"))
}

/// The element count of `shape`, within the tensor size limit in force.
fn element_count(tensor: &str, shape: &[usize], dtype: DType) -> Result<usize, String> {
    checked_len(shape, dtype).map_err(|e| format!("'{tensor}': {}", e.message))
}

/// The scalars of a flat or nested JSON list, in row-major order, refusing more than `expected`.
fn flatten<'a>(tensor: &str, data: &'a Value, expected: usize) -> Result<Vec<&'a Value>, String> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>, cap: usize) -> bool {
        match v {
            Value::Array(items) => items.iter().all(|i| walk(i, out, cap)),
            scalar if out.len() < cap => {
                out.push(scalar);
                true
            }
            _ => false,
        }
    }
    let mut out = Vec::with_capacity(expected.min(1 << 20));
    if !walk(data, &mut out, expected) || out.len() != expected {
        let got = if out.len() >= expected { "more".to_string() } else { out.len().to_string() };
        return Err(format!("'{tensor}': its shape needs {expected} elements, the data has {got}"));
    }
    Ok(out)
}

/// The shape of nested JSON lists (`[[1, 2], [3, 4]]` is 2x2), checked to be rectangular; a bare
/// scalar has shape `[]`.
pub fn nested_shape(tensor: &str, data: &Value) -> Result<Vec<usize>, String> {
    let mut shape = Vec::new();
    let mut v = data;
    while let Value::Array(items) = v {
        shape.push(items.len());
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    fn check(v: &Value, shape: &[usize]) -> bool {
        match (v, shape.split_first()) {
            (Value::Array(items), Some((&n, rest))) => items.len() == n && items.iter().all(|i| check(i, rest)),
            (Value::Array(_), None) => false,
            (_, None) => true,
            (_, Some(_)) => false,
        }
    }
    if !check(data, &shape) {
        return Err(format!("'{tensor}': the nested lists are not rectangular"));
    }
    Ok(shape)
}

/// A tensor of `dtype` and `shape` from JSON data (flat or nested, row-major).
pub fn tensor_from_json(tensor: &str, dtype: DType, shape: Vec<usize>, data: &Value) -> Result<Tensor, String> {
    let n = element_count(tensor, &shape, dtype)?;
    let values = flatten(tensor, data, n)?;
    let kind = v2_name_of(dtype, tensor)?;
    let bad = |i: usize| format!("'{tensor}': element {i} ({}) is not a {kind} value", short(values[i]));
    macro_rules! convert {
        ($f:expr) => {{
            let mut out = Vec::with_capacity(n);
            for (i, v) in values.iter().enumerate() {
                out.push($f(*v).ok_or_else(|| bad(i))?);
            }
            out
        }};
    }
    let int = |v: &Value| v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
    let data = match dtype {
        DType::F32 => TensorData::F32(convert!(|v: &Value| v.as_f64().map(|x| x as f32))),
        DType::F64 => TensorData::F64(convert!(|v: &Value| v.as_f64())),
        DType::F16 => TensorData::F16(convert!(|v: &Value| v.as_f64().map(f16::from_f64))),
        DType::BF16 => TensorData::BF16(convert!(|v: &Value| v.as_f64().map(bf16::from_f64))),
        DType::I8 => TensorData::I8(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::I16 => TensorData::I16(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::I32 => TensorData::I32(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::I64 => TensorData::I64(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::U8 => TensorData::U8(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::U16 => TensorData::U16(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::U32 => TensorData::U32(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::U64 => TensorData::U64(convert!(|v: &Value| int(v).and_then(|x| x.try_into().ok()))),
        DType::Bool => TensorData::Bool(convert!(|v: &Value| v.as_bool())),
        DType::String => TensorData::String(convert!(|v: &Value| v.as_str().map(String::from))),
        _ => unreachable!("v2_name_of refused {dtype}"),
    };
    Tensor::from_data(shape, data).map_err(|e| format!("'{tensor}': {}", e.message))
}

fn short(v: &Value) -> String {
    super::wire::printable(&v.to_string())
}

/// The elements as a flat JSON list (NaN and infinities, which JSON cannot write, become null).
pub fn tensor_to_json_flat(t: &Tensor) -> Value {
    fn list<T: Copy>(v: &[T], f: impl Fn(T) -> Value) -> Value {
        Value::Array(v.iter().map(|&x| f(x)).collect())
    }
    fn of<T: Elem + Copy>(t: &Tensor, f: impl Fn(T) -> Value) -> Value {
        t.as_slice::<T>().map_or(Value::Null, |v| list(v, f))
    }
    match t.dtype() {
        DType::F32 => of(t, |x: f32| Value::from(x as f64)),
        DType::F64 => of::<f64>(t, Value::from),
        DType::F16 => of(t, |x: f16| Value::from(x.to_f64())),
        DType::BF16 => of(t, |x: bf16| Value::from(x.to_f64())),
        DType::I8 => of::<i8>(t, Value::from),
        DType::I16 => of::<i16>(t, Value::from),
        DType::I32 => of::<i32>(t, Value::from),
        DType::I64 => of::<i64>(t, Value::from),
        DType::U8 => of::<u8>(t, Value::from),
        DType::U16 => of::<u16>(t, Value::from),
        DType::U32 => of::<u32>(t, Value::from),
        DType::U64 => of::<u64>(t, Value::from),
        DType::Bool => of::<bool>(t, Value::from),
        DType::String => t
            .as_slice::<String>()
            .map_or(Value::Null, |v| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect())),
        // Types without a protocol name: their values as numbers where they have them.
        _ => t.to_f64_vec().map(|v| list(&v, Value::from)).unwrap_or(Value::Null),
    }
}

/// The elements as nested JSON lists following the shape (a scalar as a bare value).
pub fn tensor_to_json_nested(t: &Tensor) -> Value {
    let Value::Array(flat) = tensor_to_json_flat(t) else { return Value::Null };
    fn nest(items: &mut std::vec::IntoIter<Value>, shape: &[usize]) -> Value {
        match shape.split_first() {
            None => items.next().unwrap_or(Value::Null),
            Some((&n, rest)) => Value::Array((0..n).map(|_| nest(items, rest)).collect()),
        }
    }
    nest(&mut flat.into_iter(), t.shape())
}

/// A tensor from its binary form: little-endian elements, or for BYTES each element's length as
/// a 4-byte little-endian integer followed by its bytes.
pub fn tensor_from_bytes(tensor: &str, dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, String> {
    let n = element_count(tensor, &shape, dtype)?;
    let data = if dtype == DType::String {
        let mut items = Vec::with_capacity(n.min(bytes.len() / 4 + 1));
        let mut rest = bytes;
        for i in 0..n {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| format!("'{tensor}': the binary data ends before element {i}'s length"))?;
            let len = u32::from_le_bytes(*len) as usize;
            let (item, tail) = tail
                .split_at_checked(len)
                .ok_or_else(|| format!("'{tensor}': element {i} says {len} bytes, fewer are left"))?;
            let s = std::str::from_utf8(item).map_err(|_| format!("'{tensor}': element {i} is not UTF-8 text"))?;
            items.push(s.to_string());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(format!("'{tensor}': {} bytes are left after its {n} elements", rest.len()));
        }
        TensorData::String(items)
    } else {
        v2_name_of(dtype, tensor)?;
        from_le_bytes(dtype, n, bytes).map_err(|e| format!("'{tensor}': {}", e.message))?
    };
    Tensor::from_data(shape, data).map_err(|e| format!("'{tensor}': {}", e.message))
}

/// The binary form of a tensor (see [`tensor_from_bytes`]).
pub fn tensor_to_bytes(t: &Tensor) -> Result<Vec<u8>, String> {
    match t.dtype() {
        DType::String => {
            let items = t.as_slice::<String>().map_err(|e| e.message)?;
            let mut out = Vec::new();
            for s in items {
                let len = u32::try_from(s.len()).map_err(|_| "a string over 4 GiB".to_string())?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Ok(out)
        }
        _ => to_le_bytes(t).map_err(|e| e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_tensors_round_trip_flat_and_nested() {
        let t = tensor_from_json("x", DType::F32, vec![2, 2], &json!([[1, 2.5], [3, 4]])).unwrap();
        assert_eq!(t, Tensor::new(vec![2, 2], vec![1f32, 2.5, 3., 4.]).unwrap());
        assert_eq!(tensor_from_json("x", DType::F32, vec![2, 2], &json!([1, 2.5, 3, 4])).unwrap(), t);
        assert_eq!(tensor_to_json_nested(&t), json!([[1.0, 2.5], [3.0, 4.0]]));
        assert_eq!(nested_shape("x", &json!([[1, 2.5], [3, 4]])).unwrap(), [2, 2]);
        assert_eq!(nested_shape("x", &json!(7)).unwrap(), Vec::<usize>::new());
        let s = tensor_from_json("s", DType::String, vec![2], &json!(["a", "b"])).unwrap();
        assert_eq!(tensor_to_json_flat(&s), json!(["a", "b"]));
    }

    #[test]
    fn bad_json_tensors_are_errors() {
        assert!(nested_shape("x", &json!([[1, 2], [3]])).is_err());
        assert!(nested_shape("x", &json!([[1, 2], 3])).is_err());
        let err = |dt, shape: Vec<usize>, v| tensor_from_json("x", dt, shape, &v).unwrap_err();
        assert_eq!(err(DType::F32, vec![3], json!([1, 2])), "'x': its shape needs 3 elements, the data has 2");
        assert_eq!(err(DType::F32, vec![1], json!([1, 2])), "'x': its shape needs 1 elements, the data has more");
        assert_eq!(err(DType::I8, vec![1], json!([300])), "'x': element 0 (300) is not a INT8 value");
        assert!(err(DType::I64, vec![1], json!([1.5])).contains("not a INT64"));
        assert!(err(DType::F32, vec![1], json!(["a"])).contains("not a FP32"));
        assert!(err(DType::F32, vec![1 << 20, 1 << 20], json!([])).contains("limit"));
        assert!(err(DType::F8E4M3FN, vec![1], json!([1])).contains("no datatype"));
    }

    #[test]
    fn binary_tensors_round_trip_and_check_their_lengths() {
        let t = Tensor::new(vec![3], vec![1i64, -2, 3]).unwrap();
        let b = tensor_to_bytes(&t).unwrap();
        assert_eq!(tensor_from_bytes("x", DType::I64, vec![3], &b).unwrap(), t);
        assert!(tensor_from_bytes("x", DType::I64, vec![2], &b).is_err());
        let s = Tensor::new(vec![2], vec!["hi".to_string(), String::new()]).unwrap();
        let b = tensor_to_bytes(&s).unwrap();
        assert_eq!(b, [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
        assert_eq!(tensor_from_bytes("s", DType::String, vec![2], &b).unwrap(), s);
        assert!(tensor_from_bytes("s", DType::String, vec![3], &b).is_err());
        assert!(tensor_from_bytes("s", DType::String, vec![1], &b).is_err());
        assert!(tensor_from_bytes("s", DType::String, vec![1], &[255, 255, 255, 255]).is_err());
    }
}
