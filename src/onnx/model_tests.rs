//! Tests of the ONNX message decoders (kept apart from `model.rs` to keep it short).

use super::*;
use crate::onnx::wire::enc::Enc;
use crate::onnx::wire::MAX_DEPTH;
use crate::ErrorKind;

fn tensor_type(elem: i64, dims: Enc) -> Enc {
    Enc::new().msg(1, Enc::new().int(1, elem).msg(2, dims))
}

fn sample_model() -> Vec<u8> {
    let shape = Enc::new().msg(1, Enc::new().int(1, 4)).msg(1, Enc::new().str(2, "batch")).msg(1, Enc::new());
    let attr = Enc::new().str(1, "alpha").int(20, 1).float(2, 0.5);
    let ints_attr = Enc::new().str(1, "perm").int(20, 7).packed_ints(8, &[1, 0]).int(8, 2);
    let node = Enc::new()
        .str(1, "x")
        .str(1, "")
        .str(2, "y")
        .str(3, "n0")
        .str(4, "LeakyRelu")
        .msg(5, attr)
        .msg(5, ints_attr)
        .str(6, "doc")
        .str(7, "ai.onnx")
        .uint(99, 5); // unknown field
    let init = Enc::new().packed_ints(1, &[2]).int(2, 1).packed_floats(4, &[1.0, 2.0]).str(8, "w");
    let graph = Enc::new()
        .msg(1, node)
        .str(2, "main")
        .msg(5, init)
        .str(10, "graph doc")
        .msg(11, Enc::new().str(1, "x").msg(2, tensor_type(1, shape)))
        .msg(12, Enc::new().str(1, "y"))
        .msg(13, Enc::new().str(1, "v"));
    Enc::new()
        .int(1, 8)
        .str(2, "prod")
        .str(3, "0.1")
        .str(4, "dom")
        .int(5, 3)
        .str(6, "model doc")
        .msg(7, graph)
        .msg(8, Enc::new().str(1, "").int(2, 17))
        .msg(14, Enc::new().str(1, "k").str(2, "v"))
        .msg(25, Enc::new().str(1, "MyFn").str(10, "local").str(4, "in").msg(7, Enc::new()))
        .key(30, 3) // an unknown group
        .uint(1, 1)
        .key(30, 4)
        .finish()
}

#[test]
fn decodes_every_model_field() {
    let bytes = sample_model();
    let m = decode_model(&bytes).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!((m.producer_name.as_str(), m.producer_version.as_str()), ("prod", "0.1"));
    assert_eq!((m.domain.as_str(), m.model_version, m.doc_string.as_str()), ("dom", 3, "model doc"));
    assert_eq!(m.opset_import, [OperatorSetIdProto { domain: String::new(), version: 17 }]);
    assert_eq!(m.metadata_props, [StringStringEntryProto { key: "k".into(), value: "v".into() }]);
    assert_eq!((m.functions[0].name.as_str(), m.functions[0].domain.as_str()), ("MyFn", "local"));
    assert_eq!(m.functions.len(), 1);
    let g = m.graph.unwrap();
    assert_eq!((g.name.as_str(), g.doc_string.as_str()), ("main", "graph doc"));
    let n = &g.node[0];
    assert_eq!(n.input, ["x", ""]);
    assert_eq!(n.output, ["y"]);
    assert_eq!((n.name.as_str(), n.op_type.as_str(), n.domain.as_str()), ("n0", "LeakyRelu", "ai.onnx"));
    assert_eq!(n.doc_string, "doc");
    assert_eq!((n.attribute[0].name.as_str(), n.attribute[0].r#type, n.attribute[0].f), ("alpha", 1, Some(0.5)));
    assert_eq!(n.attribute[1].ints, [1, 0, 2]);
    assert_eq!(g.initializer[0].dims, [2]);
    assert_eq!(g.initializer[0].float_data, [1.0, 2.0]);
    assert_eq!(g.initializer[0].name, "w");
    let TypeProto::Tensor(t) = g.input[0].r#type.as_ref().unwrap() else { panic!("not a tensor type") };
    assert_eq!(t.elem_type, 1);
    assert_eq!(
        t.shape.as_deref().unwrap(),
        [Dimension::Value(4), Dimension::Param("batch".into()), Dimension::Unknown]
    );
    assert_eq!(g.output[0].name, "y");
    assert!(g.output[0].r#type.is_none());
    assert_eq!(g.value_info[0].name, "v");
}

#[test]
fn decodes_every_tensor_field() {
    let bytes = Enc::new()
        .int(1, 3)
        .int(1, 1) // unpacked dims
        .int(2, 6)
        .msg(3, Enc::new().int(1, 0).int(2, 3))
        .float(4, 1.0)
        .packed_ints(5, &[-1, 2])
        .int(5, 3)
        .bytes(6, b"s\xff")
        .packed_ints(7, &[i64::MIN])
        .str(8, "t")
        .bytes(9, &[1, 2, 3])
        .double(10, 0.25)
        .uint(11, u64::MAX)
        .str(12, "doc")
        .msg(13, Enc::new().str(1, "location").str(2, "w.bin"))
        .int(14, 1)
        .finish();
    let t = decode_tensor(&bytes).unwrap();
    assert_eq!(t.dims, [3, 1]);
    assert_eq!(t.data_type, 6);
    assert!(t.has_segment);
    assert_eq!(t.float_data, [1.0]);
    assert_eq!(t.int32_data, [-1, 2, 3]);
    assert_eq!(t.string_data, [b"s\xff".to_vec()]);
    assert_eq!(t.int64_data, [i64::MIN]);
    assert_eq!((t.name.as_str(), t.doc_string.as_str()), ("t", "doc"));
    assert_eq!(t.raw_data.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(t.double_data, [0.25]);
    assert_eq!(t.uint64_data, [u64::MAX]);
    assert_eq!(t.external_data[0].value, "w.bin");
    assert_eq!(t.data_location, DATA_LOCATION_EXTERNAL);
}

#[test]
fn decodes_every_attribute_field() {
    let tp = Enc::new().msg(4, Enc::new().msg(1, Enc::new().msg(1, Enc::new().int(1, 7))));
    let sparse = Enc::new().msg(1, Enc::new().int(2, 1)).msg(2, Enc::new().int(2, 7)).packed_ints(3, &[4]);
    let bytes = Enc::new()
        .str(1, "a")
        .str(21, "ref")
        .str(13, "doc")
        .int(3, -5)
        .bytes(4, b"str")
        .msg(5, Enc::new().int(2, 1))
        .msg(6, Enc::new().str(2, "sub"))
        .msg(22, sparse.clone())
        .msg(14, tp.clone())
        .float(7, 1.5)
        .packed_floats(7, &[2.5])
        .bytes(9, b"x")
        .bytes(9, b"y")
        .msg(10, Enc::new().int(2, 7))
        .msg(11, Enc::new().str(2, "g1"))
        .msg(11, Enc::new().str(2, "g2"))
        .msg(23, sparse)
        .msg(15, tp)
        .finish();
    let a = &AttributeProto::decode(Reader::new(&bytes)).unwrap();
    assert_eq!((a.name.as_str(), a.ref_attr_name.as_str(), a.doc_string.as_str()), ("a", "ref", "doc"));
    assert_eq!((a.i, a.s.as_deref()), (Some(-5), Some(&b"str"[..])));
    assert_eq!(a.t.as_ref().unwrap().data_type, 1);
    assert_eq!(a.g.as_ref().unwrap().name, "sub");
    let sp = a.sparse_tensor.as_ref().unwrap();
    assert_eq!((sp.values.as_ref().unwrap().data_type, sp.indices.as_ref().unwrap().data_type), (1, 7));
    assert_eq!(sp.dims, [4]);
    let seq_of_int64 =
        TypeProto::Sequence(Some(Box::new(TypeProto::Tensor(TensorTypeProto { elem_type: 7, shape: None }))));
    assert_eq!(a.tp.as_ref().unwrap(), &seq_of_int64);
    assert_eq!(a.floats, [1.5, 2.5]);
    assert_eq!(a.strings, [b"x".to_vec(), b"y".to_vec()]);
    assert_eq!(a.tensors.len(), 1);
    assert_eq!(a.graphs.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["g1", "g2"]);
    assert_eq!(a.sparse_tensors.len(), 1);
    assert_eq!(a.type_protos, [seq_of_int64]);
}

#[test]
fn decodes_every_type_variant() {
    let decode = |e: Enc| TypeProto::decode(Reader::new(&e.finish())).unwrap();
    let tensor = |elem| Enc::new().msg(1, Enc::new().int(1, elem));
    let t = |elem| Some(Box::new(TypeProto::Tensor(TensorTypeProto { elem_type: elem, shape: None })));
    assert_eq!(decode(Enc::new()), TypeProto::Unset);
    assert_eq!(decode(Enc::new().msg(9, Enc::new().msg(1, tensor(1)))), TypeProto::Optional(t(1)));
    assert_eq!(decode(Enc::new().msg(4, Enc::new())), TypeProto::Sequence(None));
    assert_eq!(
        decode(Enc::new().msg(5, Enc::new().int(1, 8).msg(2, tensor(1)))),
        TypeProto::Map { key_type: 8, value_type: t(1) }
    );
    assert_eq!(
        decode(Enc::new().msg(7, Enc::new().str(1, "d").str(2, "n"))),
        TypeProto::Opaque { domain: "d".into(), name: "n".into() }
    );
    assert_eq!(
        decode(Enc::new().msg(8, Enc::new().int(1, 1).msg(2, Enc::new()))),
        TypeProto::SparseTensor(TensorTypeProto { elem_type: 1, shape: Some(vec![]) })
    );
    // A oneof set twice keeps the last member; the denotation is skipped.
    assert_eq!(decode(Enc::new().msg(4, Enc::new()).msg(1, Enc::new()).str(6, "IMAGE")), *t(0).unwrap());
}

#[test]
fn errors_say_where() {
    // ModelProto.graph.node[3].attribute[0] whose length runs past the end of the input.
    let mut node3 = Enc::new().str(4, "Relu").key(5, 2).raw(&[0xa0, 0x1f]).finish(); // length 4000
    node3.extend_from_slice(b"abc");
    let mut graph = Enc::new();
    for _ in 0..3 {
        graph = graph.msg(1, Enc::new().str(4, "Relu"));
    }
    let mut graph = graph.finish();
    let node_len = node3.len();
    graph.push(0x0a);
    graph.extend(crate::onnx::wire::enc::varint(node_len as u64));
    graph.extend(node3);
    let mut model = vec![0x3a];
    model.extend(crate::onnx::wire::enc::varint(graph.len() as u64));
    model.extend(graph);
    let length_at = model.windows(2).position(|w| w == [0xa0, 0x1f]).unwrap();
    let e = decode_model(&model).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert_eq!(
        e.message,
        format!("ModelProto.graph.node[3].attribute[0]: length 4000 past end of input at byte {length_at}")
    );
    // A scalar field gets its name.
    let bytes = Enc::new().msg(7, Enc::new().key(2, 0).uint(1, 1)).finish();
    let e = decode_model(&bytes).unwrap_err();
    assert_eq!(e.message, "ModelProto.graph.name: wire type varint, expected length-delimited at byte 3");
    let bytes = Enc::new().key(40, 6).finish();
    assert_eq!(decode_model(&bytes).unwrap_err().message, "ModelProto: field 40 has invalid wire type 6 at byte 0");
    let bytes = Enc::new().key(40, 2).raw(&[5, 1]).finish();
    assert_eq!(decode_model(&bytes).unwrap_err().message, "ModelProto.field 40: length 5 past end of input at byte 2");
}

/// Messages nested `levels` deep: the `head` fields, then the `cycle` fields over and over;
/// built without recursion or quadratic copying.
fn nested(head: &[u32], cycle: &[u32], levels: usize) -> Vec<u8> {
    let field = |i: usize| if i < head.len() { head[i] } else { cycle[(i - head.len()) % cycle.len()] };
    let mut lens = vec![0usize; levels + 1];
    let key_len = |f: u32| crate::onnx::wire::enc::varint(u64::from(f) << 3).len();
    for i in (0..levels).rev() {
        let f = field(i);
        lens[i] = key_len(f) + crate::onnx::wire::enc::varint(lens[i + 1] as u64).len() + lens[i + 1];
    }
    let mut out = Vec::with_capacity(lens[0]);
    for i in 0..levels {
        let f = field(i);
        out.extend(crate::onnx::wire::enc::varint((u64::from(f) << 3) | 2));
        out.extend(crate::onnx::wire::enc::varint(lens[i + 1] as u64));
    }
    out
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // graph -> node -> attribute.g -> node -> ...
    let bytes = nested(&[7], &[1, 5, 6], 10_000);
    let e = decode_model(&bytes).unwrap_err();
    assert!(e.message.contains(&format!("nest deeper than {MAX_DEPTH}")), "{e}");
    assert!(e.message.starts_with("ModelProto.graph.node[0].attribute[0].g.node[0]"), "{e}");
    // Sequence of sequence of ... types.
    let bytes = nested(&[], &[4, 1], 10_000);
    assert!(TypeProto::decode(Reader::new(&bytes)).is_err());
    // Within the limit it decodes.
    let bytes = nested(&[7], &[1, 5, 6], 30);
    assert!(decode_model(&bytes).is_ok());
}

#[test]
fn truncated_and_mangled_models_never_panic() {
    let bytes = sample_model();
    assert!(decode_model(&bytes).is_ok());
    for end in 0..bytes.len() {
        let _ = decode_model(&bytes[..end]);
    }
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % b.len() as u64) as usize;
            b[i] ^= (state >> 32) as u8 | 1;
        }
        let _ = decode_model(&b);
    }
}
