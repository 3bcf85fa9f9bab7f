//! Protobuf encoding, enough to write small ONNX models by hand in a test: every model the CLI
//! tests use is made here, so the expected numbers can be worked out from the model itself.

#![allow(dead_code)]

pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn int_field(field: u64, v: u64) -> Vec<u8> {
    let mut out = vec![];
    varint(field << 3, &mut out);
    varint(v, &mut out);
    out
}

pub fn bytes_field(field: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    varint((field << 3) | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// ONNX element types used by the tests.
pub const FLOAT: u64 = 1;
pub const UINT8: u64 = 2;
pub const INT64: u64 = 7;

/// A declared dim: a size, a name (`dim_param`) or nothing at all.
#[derive(Clone, Copy)]
pub enum D {
    N(u64),
    S(&'static str),
    U,
}

fn tensor_type(elem: u64, dims: Option<&[D]>) -> Vec<u8> {
    let mut t = int_field(1, elem);
    if let Some(dims) = dims {
        let mut shape = vec![];
        for d in dims {
            let dim = match d {
                D::N(n) => int_field(1, *n),
                D::S(s) => bytes_field(2, s.as_bytes()),
                D::U => vec![],
            };
            shape.extend(bytes_field(1, &dim));
        }
        t.extend(bytes_field(2, &shape));
    }
    bytes_field(1, &t)
}

/// ValueInfoProto of a tensor; `dims: None` leaves the rank unknown.
pub fn tensor_value(name: &str, elem: u64, dims: Option<&[D]>) -> Vec<u8> {
    [bytes_field(1, name.as_bytes()), bytes_field(2, &tensor_type(elem, dims))].concat()
}

/// ValueInfoProto of a sequence of tensors.
pub fn sequence_value(name: &str, elem: u64) -> Vec<u8> {
    let seq = bytes_field(1, &tensor_type(elem, None));
    [bytes_field(1, name.as_bytes()), bytes_field(2, &bytes_field(4, &seq))].concat()
}

pub fn attr_int(name: &str, v: i64) -> Vec<u8> {
    [bytes_field(1, name.as_bytes()), int_field(20, 2), int_field(3, v as u64)].concat()
}

pub fn attr_ints(name: &str, v: &[i64]) -> Vec<u8> {
    let mut a = [bytes_field(1, name.as_bytes()), int_field(20, 7)].concat();
    for &x in v {
        a.extend(int_field(8, x as u64));
    }
    a
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut n = vec![];
    for i in inputs {
        n.extend(bytes_field(1, i.as_bytes()));
    }
    for o in outputs {
        n.extend(bytes_field(2, o.as_bytes()));
    }
    n.extend(bytes_field(4, op.as_bytes()));
    for a in attrs {
        n.extend(bytes_field(5, a));
    }
    n
}

/// TensorProto of element type `elem` holding `raw` (little-endian bytes).
fn raw_tensor(name: &str, dims: &[u64], elem: u64, raw: Vec<u8>) -> Vec<u8> {
    let mut t = vec![];
    for &d in dims {
        t.extend(int_field(1, d));
    }
    t.extend(int_field(2, elem));
    t.extend(bytes_field(8, name.as_bytes()));
    t.extend(bytes_field(9, &raw));
    t
}

pub fn float_tensor(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
    raw_tensor(name, dims, FLOAT, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

pub fn int64_tensor(name: &str, dims: &[u64], values: &[i64]) -> Vec<u8> {
    raw_tensor(name, dims, INT64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A ModelProto at the given default-domain opset.
pub fn model(
    nodes: &[Vec<u8>],
    initializers: &[Vec<u8>],
    inputs: &[Vec<u8>],
    outputs: &[Vec<u8>],
    opset: u64,
) -> Vec<u8> {
    let mut graph = vec![];
    for n in nodes {
        graph.extend(bytes_field(1, n));
    }
    graph.extend(bytes_field(2, b"test"));
    for t in initializers {
        graph.extend(bytes_field(5, t));
    }
    for i in inputs {
        graph.extend(bytes_field(11, i));
    }
    for o in outputs {
        graph.extend(bytes_field(12, o));
    }
    [int_field(1, 8), bytes_field(7, &graph), bytes_field(8, &int_field(2, opset))].concat()
}
