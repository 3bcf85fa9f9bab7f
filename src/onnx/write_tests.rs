//! Tests of the writer: every message the decoder reads comes back equal after encoding, unknown
//! fields included, and encoding is stable (encode ∘ decode is the identity on our own output).

use super::*;
use crate::onnx::model::{decode_model, decode_tensor};
use crate::onnx::wire::enc::Enc;
use crate::onnx::wire::Reader;
use std::path::{Path, PathBuf};

/// Decodes, encodes, decodes again: the two decodings must be equal, and encoding the second must
/// give the same bytes as encoding the first.
fn assert_round_trips(bytes: &[u8], what: &str) {
    let first = decode_model(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    let encoded = encode_model(&first);
    let second = decode_model(&encoded).unwrap_or_else(|e| panic!("{what}: re-encoded model does not decode: {e}"));
    assert_eq!(first, second, "{what}: re-encoded model decodes differently");
    assert_eq!(encode_model(&second), encoded, "{what}: encoding is not stable");
}

#[test]
fn varints_and_negative_ints_encode_as_protobuf_does() {
    let mut w = Writer::default();
    w.int64(1, -1);
    assert_eq!(w.buf, [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let mut w = Writer::default();
    w.uint64(2, 300);
    assert_eq!(w.buf, [0x10, 0xac, 0x02]);
    let mut w = Writer::default();
    w.packed_int32(5, &[-1, 2]);
    let mut r = Reader::new(&w.buf);
    let (field, wt) = r.next_field().unwrap().unwrap();
    let mut out = vec![];
    r.repeated_int32(wt, &mut out).unwrap();
    assert_eq!((field, out), (5, vec![-1, 2]));
}

#[test]
fn a_model_with_every_field_and_unknown_ones_round_trips() {
    let shape = Enc::new().msg(1, Enc::new().int(1, 4)).msg(1, Enc::new().str(2, "batch")).msg(1, Enc::new());
    let tensor_type = Enc::new().msg(1, Enc::new().int(1, 1).msg(2, shape));
    let seq_type = Enc::new().msg(4, Enc::new().msg(1, tensor_type.clone()));
    let map_type = Enc::new().msg(5, Enc::new().int(1, 7).msg(2, tensor_type.clone()));
    let sub_graph = Enc::new().str(2, "body").msg(12, Enc::new().str(1, "o"));
    let attrs = [
        Enc::new().str(1, "alpha").int(20, 1).float(2, 0.0),
        Enc::new().str(1, "perm").int(20, 7).packed_ints(8, &[1, -3]),
        Enc::new().str(1, "s").int(20, 3).bytes(4, b""),
        Enc::new().str(1, "t").int(20, 4).msg(5, Enc::new().int(2, 1).packed_floats(4, &[1.5])),
        Enc::new().str(1, "g").int(20, 5).msg(6, sub_graph.clone()),
        Enc::new().str(1, "fs").int(20, 6).packed_floats(7, &[1.0, -2.0]),
        Enc::new().str(1, "ss").int(20, 8).bytes(9, b"a").bytes(9, b""),
        Enc::new().str(1, "ts").int(20, 9).msg(10, Enc::new().int(2, 7).packed_ints(7, &[i64::MIN])),
        Enc::new().str(1, "gs").int(20, 10).msg(11, sub_graph),
        Enc::new().str(1, "tp").int(20, 13).msg(14, seq_type).msg(15, map_type),
        Enc::new().str(1, "r").str(21, "outer").str(13, "doc").uint(40, 9),
        Enc::new()
            .str(1, "sp")
            .int(20, 11)
            .msg(22, Enc::new().msg(1, Enc::new().int(2, 1)).msg(2, Enc::new().int(2, 7)).packed_ints(3, &[4])),
    ];
    let mut node = Enc::new().str(1, "x").str(1, "").str(2, "y").str(3, "n0").str(4, "Op").str(6, "d").str(7, "dom");
    for a in attrs {
        node = node.msg(5, a);
    }
    let node = node.str(8, "overload").msg(9, Enc::new().str(1, "k"));
    let init = Enc::new()
        .packed_ints(1, &[2])
        .int(2, 1)
        .str(8, "w")
        .bytes(9, &[0, 0, 128, 63, 0, 0, 0, 64])
        .msg(3, Enc::new().int(1, 0).int(2, 2))
        .msg(13, Enc::new().str(1, "location").str(2, "w.bin"))
        .int(14, 1)
        .packed_ints(5, &[-7])
        .bytes(6, b"s")
        .double(10, 0.5)
        .uint(11, u64::MAX)
        .str(12, "tdoc");
    let graph = Enc::new()
        .msg(1, node)
        .str(2, "main")
        .msg(5, init)
        .str(10, "graph doc")
        .msg(11, Enc::new().str(1, "x").msg(2, tensor_type).str(3, "in doc").msg(4, Enc::new().str(1, "m")))
        .msg(12, Enc::new().str(1, "y"))
        .msg(13, Enc::new().str(1, "v").msg(2, Enc::new().msg(7, Enc::new().str(1, "d").str(2, "n"))))
        .msg(14, Enc::new().str(1, "y"))
        .msg(15, Enc::new().packed_ints(3, &[3]));
    let bytes = Enc::new()
        .int(1, 8)
        .str(2, "prod")
        .str(3, "0.1")
        .str(4, "dom")
        .int(5, -3)
        .str(6, "model doc")
        .msg(7, graph)
        .msg(8, Enc::new().str(1, "").int(2, 17))
        .msg(14, Enc::new().str(1, "k").str(2, "v"))
        .msg(25, Enc::new().str(1, "MyFn").str(10, "local").str(4, "in").msg(7, Enc::new()))
        .msg(20, Enc::new().str(1, "training info"))
        .finish();
    assert_round_trips(&bytes, "sample");
    let m = decode_model(&bytes).unwrap();
    let encoded = encode_model(&m);
    let again = decode_model(&encoded).unwrap();
    // The undecoded fields come back byte for byte.
    assert_eq!(again.unknown.len(), 1);
    let g = again.graph.as_ref().unwrap();
    assert_eq!((g.unknown.len(), g.node[0].unknown.len(), g.initializer[0].unknown.len()), (1, 2, 1));
    assert_eq!(g.input[0].unknown.len(), 1);
    assert_eq!(g.node[0].attribute[10].unknown.len(), 1);
    assert_eq!(again.functions[0].encoded, m.functions[0].encoded);
}

#[test]
fn tensors_round_trip_alone() {
    let bytes = Enc::new().packed_ints(1, &[2, 0]).int(2, 10).str(8, "h").bytes(9, &[]).finish();
    let t = decode_tensor(&bytes).unwrap();
    assert_eq!(decode_tensor(&encode_tensor(&t)).unwrap(), t);
}

fn onnx_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            onnx_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "onnx") {
            out.push(p);
        }
    }
}

/// Every model committed under tests/ and examples/ (golden, decode, hostile, dynamic_quant,
/// digits) re-encodes to an equal model. The Python interop test checks the same against
/// onnx's own decoder on the generated zoo and node tests.
#[test]
fn every_committed_model_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    onnx_files(&root.join("tests/models"), &mut files);
    onnx_files(&root.join("examples"), &mut files);
    assert!(files.len() >= 40, "found only {} models under tests/models and examples", files.len());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        // Hostile models include some that are meant not to decode; skip only those.
        if decode_model(&bytes).is_err() {
            assert!(
                f.to_string_lossy().contains("hostile") || f.to_string_lossy().contains("decode"),
                "{}",
                f.display()
            );
            continue;
        }
        assert_round_trips(&bytes, &f.display().to_string());
    }
}
