//! The protobuf writer: the ONNX messages of `model.rs` back to bytes, so that conversions can
//! write standard `.onnx` files. Field numbers mirror the decoders in `model.rs`; fields the decoder
//! kept undecoded (`unknown`, function bodies) are written back as they came, after the known
//! fields. Repeated scalars are written packed, as protobuf serializers do. Singular strings and
//! numbers are written when they differ from their defaults (the decoder does not record whether a
//! default value was present), and `denotation` is lost (the decoder drops it).

use super::model::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    StringStringEntryProto, TensorProto, TensorTypeProto, TypeProto, ValueInfoProto,
};

/// Encodes a model as the bytes of a `.onnx` file.
pub fn encode_model(m: &ModelProto) -> Vec<u8> {
    let mut w = Writer::default();
    write_model(&mut w, m);
    w.buf
}

/// Encodes a tensor as the bytes of a `TensorProto` `.pb` file.
pub fn encode_tensor(t: &TensorProto) -> Vec<u8> {
    let mut w = Writer::default();
    write_tensor(&mut w, t);
    w.buf
}

const VARINT: u8 = 0;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// An append-only protobuf encoder. Sub-messages are encoded into a buffer of their own first,
/// since their length prefix comes before them.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    pub fn uint64(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }

    /// `int64`, `int32` and enums: negative values are sign-extended to ten bytes, as protobuf does.
    pub fn int64(&mut self, field: u32, v: i64) {
        self.uint64(field, v as u64);
    }

    /// Writes `v` unless it is 0.
    pub fn int64_nonzero(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.int64(field, v);
        }
    }

    pub fn float(&mut self, field: u32, v: f32) {
        self.key(field, FIXED32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// Writes `v` unless it is empty.
    pub fn string(&mut self, field: u32, v: &str) {
        if !v.is_empty() {
            self.bytes(field, v.as_bytes());
        }
    }

    /// A sub-message written by `body`.
    pub fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        body(&mut inner);
        self.bytes(field, &inner.buf);
    }

    /// Bytes that are already a whole encoded field (key included).
    pub fn raw(&mut self, field_bytes: &[u8]) {
        self.buf.extend_from_slice(field_bytes);
    }

    fn packed(&mut self, field: u32, n: usize, each: impl Fn(&mut Writer, usize)) {
        if n == 0 {
            return;
        }
        let mut inner = Writer::default();
        (0..n).for_each(|i| each(&mut inner, i));
        self.bytes(field, &inner.buf);
    }

    pub fn packed_int64(&mut self, field: u32, vs: &[i64]) {
        self.packed(field, vs.len(), |w, i| w.varint(vs[i] as u64));
    }

    pub fn packed_int32(&mut self, field: u32, vs: &[i32]) {
        self.packed(field, vs.len(), |w, i| w.varint(vs[i] as i64 as u64));
    }

    pub fn packed_uint64(&mut self, field: u32, vs: &[u64]) {
        self.packed(field, vs.len(), |w, i| w.varint(vs[i]));
    }

    pub fn packed_float(&mut self, field: u32, vs: &[f32]) {
        self.packed(field, vs.len(), |w, i| w.buf.extend_from_slice(&vs[i].to_le_bytes()));
    }

    pub fn packed_double(&mut self, field: u32, vs: &[f64]) {
        self.packed(field, vs.len(), |w, i| w.buf.extend_from_slice(&vs[i].to_le_bytes()));
    }
}

fn write_unknown<T: AsRef<[u8]>>(w: &mut Writer, unknown: &[T]) {
    unknown.iter().for_each(|f| w.raw(f.as_ref()));
}

fn write_model(w: &mut Writer, m: &ModelProto) {
    w.int64_nonzero(1, m.ir_version);
    w.string(2, &m.producer_name);
    w.string(3, &m.producer_version);
    w.string(4, &m.domain);
    w.int64_nonzero(5, m.model_version);
    w.string(6, &m.doc_string);
    if let Some(g) = &m.graph {
        w.message(7, |w| write_graph(w, g));
    }
    for o in &m.opset_import {
        w.message(8, |w| write_opset(w, o));
    }
    for p in &m.metadata_props {
        w.message(14, |w| write_string_pair(w, p));
    }
    for f in &m.functions {
        w.bytes(25, &f.encoded);
    }
    write_unknown(w, &m.unknown);
}

fn write_opset(w: &mut Writer, o: &OperatorSetIdProto) {
    w.string(1, &o.domain);
    // The version is required; 0 is unusual but meaningful enough to keep.
    w.int64(2, o.version);
}

fn write_string_pair(w: &mut Writer, p: &StringStringEntryProto) {
    w.string(1, &p.key);
    w.string(2, &p.value);
}

fn write_graph(w: &mut Writer, g: &GraphProto) {
    for n in &g.node {
        w.message(1, |w| write_node(w, n));
    }
    w.string(2, &g.name);
    for t in &g.initializer {
        w.message(5, |w| write_tensor(w, t));
    }
    w.string(10, &g.doc_string);
    for v in &g.input {
        w.message(11, |w| write_value_info(w, v));
    }
    for v in &g.output {
        w.message(12, |w| write_value_info(w, v));
    }
    for v in &g.value_info {
        w.message(13, |w| write_value_info(w, v));
    }
    for s in &g.sparse_initializer {
        w.message(15, |w| write_sparse_tensor(w, s));
    }
    write_unknown(w, &g.unknown);
}

fn write_node(w: &mut Writer, n: &NodeProto) {
    // Empty names are meaningful here: "" is an omitted optional input.
    n.input.iter().for_each(|s| w.bytes(1, s.as_bytes()));
    n.output.iter().for_each(|s| w.bytes(2, s.as_bytes()));
    w.string(3, &n.name);
    w.string(4, &n.op_type);
    for a in &n.attribute {
        w.message(5, |w| write_attribute(w, a));
    }
    w.string(6, &n.doc_string);
    w.string(7, &n.domain);
    write_unknown(w, &n.unknown);
}

fn write_attribute(w: &mut Writer, a: &AttributeProto) {
    w.string(1, &a.name);
    if let Some(f) = a.f {
        w.float(2, f);
    }
    if let Some(i) = a.i {
        w.int64(3, i);
    }
    if let Some(s) = &a.s {
        w.bytes(4, s);
    }
    if let Some(t) = &a.t {
        w.message(5, |w| write_tensor(w, t));
    }
    if let Some(g) = &a.g {
        w.message(6, |w| write_graph(w, g));
    }
    w.packed_float(7, &a.floats);
    w.packed_int64(8, &a.ints);
    a.strings.iter().for_each(|s| w.bytes(9, s));
    for t in &a.tensors {
        w.message(10, |w| write_tensor(w, t));
    }
    for g in &a.graphs {
        w.message(11, |w| write_graph(w, g));
    }
    w.string(13, &a.doc_string);
    if let Some(tp) = &a.tp {
        w.message(14, |w| write_type(w, tp));
    }
    for tp in &a.type_protos {
        w.message(15, |w| write_type(w, tp));
    }
    w.int64_nonzero(20, i64::from(a.r#type));
    w.string(21, &a.ref_attr_name);
    if let Some(s) = &a.sparse_tensor {
        w.message(22, |w| write_sparse_tensor(w, s));
    }
    for s in &a.sparse_tensors {
        w.message(23, |w| write_sparse_tensor(w, s));
    }
    write_unknown(w, &a.unknown);
}

fn write_tensor(w: &mut Writer, t: &TensorProto) {
    w.packed_int64(1, &t.dims);
    w.int64_nonzero(2, i64::from(t.data_type));
    w.packed_float(4, &t.float_data);
    w.packed_int32(5, &t.int32_data);
    t.string_data.iter().for_each(|s| w.bytes(6, s));
    w.packed_int64(7, &t.int64_data);
    w.string(8, &t.name);
    if let Some(raw) = &t.raw_data {
        w.bytes(9, raw);
    }
    w.packed_double(10, &t.double_data);
    w.packed_uint64(11, &t.uint64_data);
    w.string(12, &t.doc_string);
    for p in &t.external_data {
        w.message(13, |w| write_string_pair(w, p));
    }
    w.int64_nonzero(14, i64::from(t.data_location));
    write_unknown(w, &t.unknown);
}

fn write_sparse_tensor(w: &mut Writer, s: &SparseTensorProto) {
    if let Some(v) = &s.values {
        w.message(1, |w| write_tensor(w, v));
    }
    if let Some(i) = &s.indices {
        w.message(2, |w| write_tensor(w, i));
    }
    w.packed_int64(3, &s.dims);
}

fn write_value_info(w: &mut Writer, v: &ValueInfoProto) {
    w.string(1, &v.name);
    if let Some(t) = &v.r#type {
        w.message(2, |w| write_type(w, t));
    }
    w.string(3, &v.doc_string);
    write_unknown(w, &v.unknown);
}

fn write_type(w: &mut Writer, t: &TypeProto) {
    match t {
        TypeProto::Tensor(tt) => w.message(1, |w| write_tensor_type(w, tt)),
        TypeProto::SparseTensor(tt) => w.message(8, |w| write_tensor_type(w, tt)),
        TypeProto::Sequence(elem) => w.message(4, |w| write_elem_type(w, elem)),
        TypeProto::Optional(elem) => w.message(9, |w| write_elem_type(w, elem)),
        TypeProto::Map { key_type, value_type } => w.message(5, |w| {
            w.int64(1, i64::from(*key_type));
            write_elem_type_field(w, 2, value_type);
        }),
        TypeProto::Opaque { domain, name } => w.message(7, |w| {
            w.string(1, domain);
            w.string(2, name);
        }),
        TypeProto::Unset => {}
    }
}

fn write_elem_type(w: &mut Writer, elem: &Option<Box<TypeProto>>) {
    write_elem_type_field(w, 1, elem);
}

fn write_elem_type_field(w: &mut Writer, field: u32, elem: &Option<Box<TypeProto>>) {
    if let Some(t) = elem {
        w.message(field, |w| write_type(w, t));
    }
}

fn write_tensor_type(w: &mut Writer, t: &TensorTypeProto) {
    w.int64_nonzero(1, i64::from(t.elem_type));
    if let Some(dims) = &t.shape {
        // An empty shape message is a scalar; no message at all is an unknown rank.
        w.message(2, |w| {
            for d in dims {
                w.message(1, |w| match d {
                    Dimension::Value(v) => w.int64(1, *v),
                    Dimension::Param(p) => w.bytes(2, p.as_bytes()),
                    Dimension::Unknown => {}
                });
            }
        });
    }
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
