//! The ONNX messages crx580 reads, as plain structs, with their decoders. Field numbers follow
//! `onnx.proto` (onnx 1.23). Big byte fields (`raw_data`) borrow from the input instead of being
//! copied. Fields we have no use for are kept as raw bytes (`unknown`) in the messages that
//! `write.rs` re-encodes, so that a decoded model is written back without losing them; only
//! `denotation` (of types and dims) and unknown fields of the small messages (opset ids,
//! string pairs, types) are dropped.

use super::wire::{At, Reader, WResult, WireType};
use crate::Result;
use std::borrow::Cow;

/// Decodes a `.onnx` file's bytes.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto<'_>> {
    ModelProto::decode(Reader::new(bytes)).map_err(|e| e.into_error("ModelProto"))
}

/// Decodes a serialized `TensorProto` (the `.pb` files of the ONNX test suite).
pub fn decode_tensor(bytes: &[u8]) -> Result<TensorProto<'_>> {
    TensorProto::decode(Reader::new(bytes)).map_err(|e| e.into_error("TensorProto"))
}

/// Decodes a serialized `SequenceProto` (the test data file of a sequence value).
pub fn decode_sequence(bytes: &[u8]) -> Result<SequenceProto<'_>> {
    SequenceProto::decode(Reader::new(bytes)).map_err(|e| e.into_error("SequenceProto"))
}

/// Decodes a serialized `OptionalProto` (the test data file of an optional value).
pub fn decode_optional(bytes: &[u8]) -> Result<OptionalProto<'_>> {
    OptionalProto::decode(Reader::new(bytes)).map_err(|e| e.into_error("OptionalProto"))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelProto<'a> {
    pub ir_version: i64,
    pub opset_import: Vec<OperatorSetIdProto>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub graph: Option<GraphProto<'a>>,
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Model-local functions, kept only by name (and as bytes, for the writer) so that import can
    /// say why their uses fail.
    pub functions: Vec<FunctionProto>,
    /// Fields not decoded (e.g. `training_info`), each with its key, in file order.
    pub unknown: Vec<&'a [u8]>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorSetIdProto {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringStringEntryProto {
    pub key: String,
    pub value: String,
}

/// Only what identifies a function; its body is kept undecoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionProto {
    pub name: String,
    pub domain: String,
    /// The whole encoded message, for the writer.
    pub encoded: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphProto<'a> {
    pub node: Vec<NodeProto<'a>>,
    pub name: String,
    pub initializer: Vec<TensorProto<'a>>,
    pub sparse_initializer: Vec<SparseTensorProto<'a>>,
    pub doc_string: String,
    pub input: Vec<ValueInfoProto>,
    pub output: Vec<ValueInfoProto>,
    pub value_info: Vec<ValueInfoProto>,
    /// Fields not decoded (e.g. `quantization_annotation`), each with its key.
    pub unknown: Vec<&'a [u8]>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeProto<'a> {
    pub input: Vec<String>,
    pub output: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub attribute: Vec<AttributeProto<'a>>,
    pub doc_string: String,
    /// Fields not decoded (e.g. `overload`, `metadata_props`), each with its key.
    pub unknown: Vec<&'a [u8]>,
}

/// `AttributeProto.AttributeType` codes.
pub mod attr_type {
    pub const UNDEFINED: i32 = 0;
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const GRAPH: i32 = 5;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
    pub const STRINGS: i32 = 8;
    pub const TENSORS: i32 = 9;
    pub const GRAPHS: i32 = 10;
    pub const SPARSE_TENSOR: i32 = 11;
    pub const SPARSE_TENSORS: i32 = 12;
    pub const TYPE_PROTO: i32 = 13;
    pub const TYPE_PROTOS: i32 = 14;
}

/// Singular values are `Option`s because files written before IR version 3 have no `type` field:
/// which value is present is then the only hint of the attribute's type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeProto<'a> {
    pub name: String,
    pub ref_attr_name: String,
    pub doc_string: String,
    /// An [`attr_type`] code.
    pub r#type: i32,
    pub f: Option<f32>,
    pub i: Option<i64>,
    pub s: Option<Vec<u8>>,
    pub t: Option<TensorProto<'a>>,
    pub g: Option<GraphProto<'a>>,
    pub sparse_tensor: Option<SparseTensorProto<'a>>,
    pub tp: Option<TypeProto>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    pub strings: Vec<Vec<u8>>,
    pub tensors: Vec<TensorProto<'a>>,
    pub graphs: Vec<GraphProto<'a>>,
    pub sparse_tensors: Vec<SparseTensorProto<'a>>,
    pub type_protos: Vec<TypeProto>,
    /// Fields not decoded, each with its key.
    pub unknown: Vec<&'a [u8]>,
}

/// `TensorProto.DataLocation.EXTERNAL`.
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorProto<'a> {
    pub dims: Vec<i64>,
    /// A `TensorProto.DataType` code.
    pub data_type: i32,
    /// Set when the tensor is one segment of a larger one (a feature no exporter uses).
    pub has_segment: bool,
    pub float_data: Vec<f32>,
    pub int32_data: Vec<i32>,
    pub string_data: Vec<Vec<u8>>,
    pub int64_data: Vec<i64>,
    pub name: String,
    pub doc_string: String,
    /// Borrowed from the file when decoded; owned when made by a conversion.
    pub raw_data: Option<Cow<'a, [u8]>>,
    pub external_data: Vec<StringStringEntryProto>,
    pub data_location: i32,
    pub double_data: Vec<f64>,
    pub uint64_data: Vec<u64>,
    /// Fields not decoded (the `segment`, if any), each with its key.
    pub unknown: Vec<&'a [u8]>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseTensorProto<'a> {
    pub values: Option<TensorProto<'a>>,
    pub indices: Option<TensorProto<'a>>,
    pub dims: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueInfoProto {
    pub name: String,
    pub r#type: Option<TypeProto>,
    pub doc_string: String,
    /// Fields not decoded (e.g. `metadata_props`), each with its key, copied.
    pub unknown: Vec<Vec<u8>>,
}

/// `TypeProto`'s `value` oneof (its `denotation` is dropped).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum TypeProto {
    Tensor(TensorTypeProto),
    SparseTensor(TensorTypeProto),
    Sequence(Option<Box<TypeProto>>),
    Optional(Option<Box<TypeProto>>),
    Map {
        key_type: i32,
        value_type: Option<Box<TypeProto>>,
    },
    Opaque {
        domain: String,
        name: String,
    },
    /// No member of the oneof was set.
    #[default]
    Unset,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorTypeProto {
    /// A `TensorProto.DataType` code; 0 when unknown.
    pub elem_type: i32,
    /// `None` when the rank is unknown.
    pub shape: Option<Vec<Dimension>>,
}

/// `SequenceProto.DataType` and `OptionalProto.DataType`: what a sequence or optional holds.
pub mod value_type {
    pub const UNDEFINED: i32 = 0;
    pub const TENSOR: i32 = 1;
    pub const SPARSE_TENSOR: i32 = 2;
    pub const SEQUENCE: i32 = 3;
    pub const MAP: i32 = 4;
    pub const OPTIONAL: i32 = 5;
}

/// A `SequenceProto`. Sequences of anything but tensors are only counted, for the error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SequenceProto<'a> {
    pub name: String,
    /// A [`value_type`] code.
    pub elem_type: i32,
    pub tensor_values: Vec<TensorProto<'a>>,
    /// Sparse tensors, sequences, maps and optionals the sequence holds.
    pub other_values: usize,
}

/// An `OptionalProto`; maps and sparse tensors in it are only noted, for the error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptionalProto<'a> {
    pub name: String,
    /// A [`value_type`] code; UNDEFINED for an empty optional.
    pub elem_type: i32,
    pub tensor_value: Option<TensorProto<'a>>,
    pub sequence_value: Option<Box<SequenceProto<'a>>>,
    pub optional_value: Option<Box<OptionalProto<'a>>>,
    /// Set when the optional holds a sparse tensor or a map.
    pub other_value: bool,
}

/// One dim of a `TensorShapeProto`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dimension {
    Value(i64),
    Param(String),
    #[default]
    Unknown,
}

/// Runs `field` for every field of a message. `field` returns false for fields it does not know,
/// which are then skipped. An error that no inner decoder has placed yet gets the field's name.
fn decode_fields<'a>(
    r: Reader<'a>,
    names: &[(u32, &str)],
    field: impl FnMut(&mut Reader<'a>, u32, WireType) -> WResult<bool>,
) -> WResult<()> {
    decode_fields_keeping(r, names, &mut vec![], field)
}

/// [`decode_fields`] that also collects the bytes of each skipped field (key included) in `unknown`.
fn decode_fields_keeping<'a>(
    mut r: Reader<'a>,
    names: &[(u32, &str)],
    unknown: &mut Vec<&'a [u8]>,
    mut field: impl FnMut(&mut Reader<'a>, u32, WireType) -> WResult<bool>,
) -> WResult<()> {
    loop {
        let key_at = r.position();
        let Some((number, wt)) = r.next_field()? else { break };
        let result = match field(&mut r, number, wt) {
            Ok(true) => Ok(()),
            Ok(false) => r.skip(number, wt).map(|()| unknown.push(r.since(key_at))),
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            if e.is_unplaced() {
                match names.iter().find(|(n, _)| *n == number) {
                    Some((_, name)) => e.push_segment(*name),
                    None => e.push_segment(format!("field {number}")),
                }
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// Decodes one element of a repeated message field and appends it, naming it `name[index]` in errors.
fn push_message<'a, T>(
    r: &mut Reader<'a>,
    wt: WireType,
    out: &mut Vec<T>,
    name: &str,
    decode: impl FnOnce(Reader<'a>) -> WResult<T>,
) -> WResult<bool> {
    let index = out.len();
    let item = r.message(wt).and_then(decode).at(|| format!("{name}[{index}]"))?;
    out.push(item);
    Ok(true)
}

/// Decodes a singular message field, naming it in errors.
fn one_message<'a, T>(
    r: &mut Reader<'a>,
    wt: WireType,
    name: &str,
    decode: impl FnOnce(Reader<'a>) -> WResult<T>,
) -> WResult<T> {
    r.message(wt).and_then(decode).at(|| name)
}

fn push_string(r: &mut Reader<'_>, wt: WireType, out: &mut Vec<String>) -> WResult<bool> {
    out.push(r.string(wt)?);
    Ok(true)
}

fn push_bytes(r: &mut Reader<'_>, wt: WireType, out: &mut Vec<Vec<u8>>) -> WResult<bool> {
    out.push(r.bytes(wt)?.to_vec());
    Ok(true)
}

/// Wraps a field assignment as "known field, decoded".
fn set<T>(slot: &mut T, value: WResult<T>) -> WResult<bool> {
    *slot = value?;
    Ok(true)
}

impl<'a> ModelProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<ModelProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "ir_version"),
            (2, "producer_name"),
            (3, "producer_version"),
            (4, "domain"),
            (5, "model_version"),
            (6, "doc_string"),
            (7, "graph"),
            (8, "opset_import"),
            (14, "metadata_props"),
            (25, "functions"),
        ];
        let mut m = ModelProto::default();
        let mut unknown = vec![];
        decode_fields_keeping(r, NAMES, &mut unknown, |r, field, wt| match field {
            1 => set(&mut m.ir_version, r.int64(wt)),
            2 => set(&mut m.producer_name, r.string(wt)),
            3 => set(&mut m.producer_version, r.string(wt)),
            4 => set(&mut m.domain, r.string(wt)),
            5 => set(&mut m.model_version, r.int64(wt)),
            6 => set(&mut m.doc_string, r.string(wt)),
            7 => set(&mut m.graph, one_message(r, wt, "graph", GraphProto::decode).map(Some)),
            8 => push_message(r, wt, &mut m.opset_import, "opset_import", OperatorSetIdProto::decode),
            14 => push_message(r, wt, &mut m.metadata_props, "metadata_props", StringStringEntryProto::decode),
            25 => push_message(r, wt, &mut m.functions, "functions", FunctionProto::decode),
            _ => Ok(false),
        })?;
        m.unknown = unknown;
        Ok(m)
    }
}

impl OperatorSetIdProto {
    fn decode(r: Reader<'_>) -> WResult<OperatorSetIdProto> {
        let mut m = OperatorSetIdProto::default();
        decode_fields(r, &[(1, "domain"), (2, "version")], |r, field, wt| match field {
            1 => set(&mut m.domain, r.string(wt)),
            2 => set(&mut m.version, r.int64(wt)),
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

impl StringStringEntryProto {
    fn decode(r: Reader<'_>) -> WResult<StringStringEntryProto> {
        let mut m = StringStringEntryProto::default();
        decode_fields(r, &[(1, "key"), (2, "value")], |r, field, wt| match field {
            1 => set(&mut m.key, r.string(wt)),
            2 => set(&mut m.value, r.string(wt)),
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

impl FunctionProto {
    fn decode(r: Reader<'_>) -> WResult<FunctionProto> {
        let mut m = FunctionProto { encoded: r.rest().to_vec(), ..FunctionProto::default() };
        decode_fields(r, &[(1, "name"), (10, "domain")], |r, field, wt| match field {
            1 => set(&mut m.name, r.string(wt)),
            10 => set(&mut m.domain, r.string(wt)),
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

impl<'a> GraphProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<GraphProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "node"),
            (2, "name"),
            (5, "initializer"),
            (10, "doc_string"),
            (11, "input"),
            (12, "output"),
            (13, "value_info"),
            (15, "sparse_initializer"),
        ];
        let mut m = GraphProto::default();
        let mut unknown = vec![];
        decode_fields_keeping(r, NAMES, &mut unknown, |r, field, wt| match field {
            1 => push_message(r, wt, &mut m.node, "node", NodeProto::decode),
            2 => set(&mut m.name, r.string(wt)),
            5 => push_message(r, wt, &mut m.initializer, "initializer", TensorProto::decode),
            10 => set(&mut m.doc_string, r.string(wt)),
            11 => push_message(r, wt, &mut m.input, "input", ValueInfoProto::decode),
            12 => push_message(r, wt, &mut m.output, "output", ValueInfoProto::decode),
            13 => push_message(r, wt, &mut m.value_info, "value_info", ValueInfoProto::decode),
            15 => push_message(r, wt, &mut m.sparse_initializer, "sparse_initializer", SparseTensorProto::decode),
            _ => Ok(false),
        })?;
        m.unknown = unknown;
        Ok(m)
    }
}

impl<'a> NodeProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<NodeProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "input"),
            (2, "output"),
            (3, "name"),
            (4, "op_type"),
            (5, "attribute"),
            (6, "doc_string"),
            (7, "domain"),
        ];
        let mut m = NodeProto::default();
        let mut unknown = vec![];
        decode_fields_keeping(r, NAMES, &mut unknown, |r, field, wt| match field {
            1 => push_string(r, wt, &mut m.input),
            2 => push_string(r, wt, &mut m.output),
            3 => set(&mut m.name, r.string(wt)),
            4 => set(&mut m.op_type, r.string(wt)),
            5 => push_message(r, wt, &mut m.attribute, "attribute", AttributeProto::decode),
            6 => set(&mut m.doc_string, r.string(wt)),
            7 => set(&mut m.domain, r.string(wt)),
            _ => Ok(false),
        })?;
        m.unknown = unknown;
        Ok(m)
    }
}

impl<'a> AttributeProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<AttributeProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "name"),
            (2, "f"),
            (3, "i"),
            (4, "s"),
            (5, "t"),
            (6, "g"),
            (7, "floats"),
            (8, "ints"),
            (9, "strings"),
            (10, "tensors"),
            (11, "graphs"),
            (13, "doc_string"),
            (14, "tp"),
            (15, "type_protos"),
            (20, "type"),
            (21, "ref_attr_name"),
            (22, "sparse_tensor"),
            (23, "sparse_tensors"),
        ];
        let mut m = AttributeProto::default();
        let mut unknown = vec![];
        decode_fields_keeping(r, NAMES, &mut unknown, |r, field, wt| match field {
            1 => set(&mut m.name, r.string(wt)),
            2 => set(&mut m.f, r.float(wt).map(Some)),
            3 => set(&mut m.i, r.int64(wt).map(Some)),
            4 => set(&mut m.s, r.bytes(wt).map(|b| Some(b.to_vec()))),
            5 => set(&mut m.t, one_message(r, wt, "t", TensorProto::decode).map(Some)),
            6 => set(&mut m.g, one_message(r, wt, "g", GraphProto::decode).map(Some)),
            7 => r.repeated_float(wt, &mut m.floats).map(|_| true),
            8 => r.repeated_int64(wt, &mut m.ints).map(|_| true),
            9 => push_bytes(r, wt, &mut m.strings),
            10 => push_message(r, wt, &mut m.tensors, "tensors", TensorProto::decode),
            11 => push_message(r, wt, &mut m.graphs, "graphs", GraphProto::decode),
            13 => set(&mut m.doc_string, r.string(wt)),
            14 => set(&mut m.tp, one_message(r, wt, "tp", TypeProto::decode).map(Some)),
            15 => push_message(r, wt, &mut m.type_protos, "type_protos", TypeProto::decode),
            20 => set(&mut m.r#type, r.int32(wt)),
            21 => set(&mut m.ref_attr_name, r.string(wt)),
            22 => set(&mut m.sparse_tensor, one_message(r, wt, "sparse_tensor", SparseTensorProto::decode).map(Some)),
            23 => push_message(r, wt, &mut m.sparse_tensors, "sparse_tensors", SparseTensorProto::decode),
            _ => Ok(false),
        })?;
        m.unknown = unknown;
        Ok(m)
    }
}

impl<'a> TensorProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<TensorProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "dims"),
            (2, "data_type"),
            (3, "segment"),
            (4, "float_data"),
            (5, "int32_data"),
            (6, "string_data"),
            (7, "int64_data"),
            (8, "name"),
            (9, "raw_data"),
            (10, "double_data"),
            (11, "uint64_data"),
            (12, "doc_string"),
            (13, "external_data"),
            (14, "data_location"),
        ];
        let mut m = TensorProto::default();
        let mut unknown = vec![];
        decode_fields_keeping(r, NAMES, &mut unknown, |r, field, wt| match field {
            1 => r.repeated_int64(wt, &mut m.dims).map(|_| true),
            2 => set(&mut m.data_type, r.int32(wt)),
            3 => {
                // Not decoded, but kept (as an unknown field) for the writer.
                m.has_segment = true;
                Ok(false)
            }
            4 => r.repeated_float(wt, &mut m.float_data).map(|_| true),
            5 => r.repeated_int32(wt, &mut m.int32_data).map(|_| true),
            6 => push_bytes(r, wt, &mut m.string_data),
            7 => r.repeated_int64(wt, &mut m.int64_data).map(|_| true),
            8 => set(&mut m.name, r.string(wt)),
            9 => set(&mut m.raw_data, r.bytes(wt).map(|b| Some(Cow::Borrowed(b)))),
            10 => r.repeated_double(wt, &mut m.double_data).map(|_| true),
            11 => r.repeated_uint64(wt, &mut m.uint64_data).map(|_| true),
            12 => set(&mut m.doc_string, r.string(wt)),
            13 => push_message(r, wt, &mut m.external_data, "external_data", StringStringEntryProto::decode),
            14 => set(&mut m.data_location, r.int32(wt)),
            _ => Ok(false),
        })?;
        m.unknown = unknown;
        Ok(m)
    }
}

impl<'a> SparseTensorProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<SparseTensorProto<'a>> {
        let mut m = SparseTensorProto::default();
        decode_fields(r, &[(1, "values"), (2, "indices"), (3, "dims")], |r, field, wt| match field {
            1 => set(&mut m.values, one_message(r, wt, "values", TensorProto::decode).map(Some)),
            2 => set(&mut m.indices, one_message(r, wt, "indices", TensorProto::decode).map(Some)),
            3 => r.repeated_int64(wt, &mut m.dims).map(|_| true),
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

impl<'a> SequenceProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<SequenceProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "name"),
            (2, "elem_type"),
            (3, "tensor_values"),
            (4, "sparse_tensor_values"),
            (5, "sequence_values"),
            (6, "map_values"),
            (7, "optional_values"),
        ];
        let mut m = SequenceProto::default();
        decode_fields(r, NAMES, |r, field, wt| match field {
            1 => set(&mut m.name, r.string(wt)),
            2 => set(&mut m.elem_type, r.int32(wt)),
            3 => push_message(r, wt, &mut m.tensor_values, "tensor_values", TensorProto::decode),
            4..=7 => {
                r.skip(field, wt)?;
                m.other_values += 1;
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

impl<'a> OptionalProto<'a> {
    fn decode(r: Reader<'a>) -> WResult<OptionalProto<'a>> {
        const NAMES: &[(u32, &str)] = &[
            (1, "name"),
            (2, "elem_type"),
            (3, "tensor_value"),
            (4, "sparse_tensor_value"),
            (5, "sequence_value"),
            (6, "map_value"),
            (7, "optional_value"),
        ];
        let mut m = OptionalProto::default();
        decode_fields(r, NAMES, |r, field, wt| match field {
            1 => set(&mut m.name, r.string(wt)),
            2 => set(&mut m.elem_type, r.int32(wt)),
            3 => set(&mut m.tensor_value, one_message(r, wt, "tensor_value", TensorProto::decode).map(Some)),
            5 => set(
                &mut m.sequence_value,
                one_message(r, wt, "sequence_value", SequenceProto::decode).map(|s| Some(Box::new(s))),
            ),
            7 => set(
                &mut m.optional_value,
                one_message(r, wt, "optional_value", OptionalProto::decode).map(|o| Some(Box::new(o))),
            ),
            4 | 6 => {
                r.skip(field, wt)?;
                m.other_value = true;
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

impl ValueInfoProto {
    fn decode(r: Reader<'_>) -> WResult<ValueInfoProto> {
        let mut m = ValueInfoProto::default();
        let mut unknown = vec![];
        decode_fields_keeping(r, &[(1, "name"), (2, "type"), (3, "doc_string")], &mut unknown, |r, field, wt| {
            match field {
                1 => set(&mut m.name, r.string(wt)),
                2 => set(&mut m.r#type, one_message(r, wt, "type", TypeProto::decode).map(Some)),
                3 => set(&mut m.doc_string, r.string(wt)),
                _ => Ok(false),
            }
        })?;
        m.unknown = unknown.into_iter().map(<[u8]>::to_vec).collect();
        Ok(m)
    }
}

/// An optional nested `TypeProto` (the element type of a sequence, optional or map).
fn boxed_type(r: &mut Reader<'_>, wt: WireType, name: &str) -> WResult<Option<Box<TypeProto>>> {
    one_message(r, wt, name, TypeProto::decode).map(|t| Some(Box::new(t)))
}

impl TypeProto {
    fn decode(r: Reader<'_>) -> WResult<TypeProto> {
        const NAMES: &[(u32, &str)] = &[
            (1, "tensor_type"),
            (4, "sequence_type"),
            (5, "map_type"),
            (6, "denotation"),
            (7, "opaque_type"),
            (8, "sparse_tensor_type"),
            (9, "optional_type"),
        ];
        let mut m = TypeProto::Unset;
        decode_fields(r, NAMES, |r, field, wt| match field {
            1 => set(&mut m, one_message(r, wt, "tensor_type", TensorTypeProto::decode).map(TypeProto::Tensor)),
            8 => set(
                &mut m,
                one_message(r, wt, "sparse_tensor_type", TensorTypeProto::decode).map(TypeProto::SparseTensor),
            ),
            4 => set(&mut m, one_message(r, wt, "sequence_type", decode_elem_type).map(TypeProto::Sequence)),
            9 => set(&mut m, one_message(r, wt, "optional_type", decode_elem_type).map(TypeProto::Optional)),
            5 => set(&mut m, one_message(r, wt, "map_type", decode_map_type)),
            7 => set(&mut m, one_message(r, wt, "opaque_type", decode_opaque_type)),
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

/// `TypeProto.Sequence` and `TypeProto.Optional`: one field, `elem_type = 1`.
fn decode_elem_type(r: Reader<'_>) -> WResult<Option<Box<TypeProto>>> {
    let mut elem = None;
    decode_fields(r, &[(1, "elem_type")], |r, field, wt| match field {
        1 => set(&mut elem, boxed_type(r, wt, "elem_type")),
        _ => Ok(false),
    })?;
    Ok(elem)
}

fn decode_map_type(r: Reader<'_>) -> WResult<TypeProto> {
    let (mut key_type, mut value_type) = (0, None);
    decode_fields(r, &[(1, "key_type"), (2, "value_type")], |r, field, wt| match field {
        1 => set(&mut key_type, r.int32(wt)),
        2 => set(&mut value_type, boxed_type(r, wt, "value_type")),
        _ => Ok(false),
    })?;
    Ok(TypeProto::Map { key_type, value_type })
}

fn decode_opaque_type(r: Reader<'_>) -> WResult<TypeProto> {
    let (mut domain, mut name) = (String::new(), String::new());
    decode_fields(r, &[(1, "domain"), (2, "name")], |r, field, wt| match field {
        1 => set(&mut domain, r.string(wt)),
        2 => set(&mut name, r.string(wt)),
        _ => Ok(false),
    })?;
    Ok(TypeProto::Opaque { domain, name })
}

impl TensorTypeProto {
    fn decode(r: Reader<'_>) -> WResult<TensorTypeProto> {
        let mut m = TensorTypeProto::default();
        decode_fields(r, &[(1, "elem_type"), (2, "shape")], |r, field, wt| match field {
            1 => set(&mut m.elem_type, r.int32(wt)),
            2 => set(&mut m.shape, one_message(r, wt, "shape", decode_shape).map(Some)),
            _ => Ok(false),
        })?;
        Ok(m)
    }
}

/// `TensorShapeProto`: repeated `Dimension dim = 1`.
fn decode_shape(r: Reader<'_>) -> WResult<Vec<Dimension>> {
    let mut dims = vec![];
    decode_fields(r, &[(1, "dim")], |r, field, wt| match field {
        1 => push_message(r, wt, &mut dims, "dim", decode_dimension),
        _ => Ok(false),
    })?;
    Ok(dims)
}

fn decode_dimension(r: Reader<'_>) -> WResult<Dimension> {
    let mut d = Dimension::Unknown;
    decode_fields(r, &[(1, "dim_value"), (2, "dim_param"), (3, "denotation")], |r, field, wt| match field {
        1 => set(&mut d, r.int64(wt).map(Dimension::Value)),
        2 => set(&mut d, r.string(wt).map(Dimension::Param)),
        _ => Ok(false),
    })?;
    Ok(d)
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
