//! The ONNX decoder and importer on real files (written by onnx's Python helpers, see
//! tests/models/decode/gen.py) and on hostile ones: truncated, corrupted, deeply nested, or
//! declaring far more data than they hold.

mod common;

use crx580::ir::{DType, Dim, Graph};
use crx580::onnx::import_model;
use crx580::onnx::model::{decode_model, decode_tensor};
use crx580::onnx::tensor::tensor_from_proto;
use crx580::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/decode")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap()
}

fn value_named<'g>(g: &'g Graph, name: &str) -> &'g crx580::ir::Value {
    &g.values[g.find_value(name).unwrap_or_else(|| panic!("no value {name}"))]
}

/// A protobuf field: key, then a varint or a length-delimited payload.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}

fn field_bytes(field: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[test]
fn a_small_model_imports_with_its_inputs_outputs_and_facts() {
    let m = import_model(&read("relu.onnx"), None).unwrap();
    assert_eq!(m.ir_version, 3);
    assert_eq!(m.opsets, [(String::new(), 13)]);
    assert_eq!(m.producer, "crx580-tests 1.0");
    let g = &m.graph;
    assert_eq!(g.name, "relu_graph");
    // W is listed among the inputs too (IR version 3 style) but is a constant.
    let inputs: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
    assert_eq!(inputs, ["X"]);
    let outputs: Vec<&str> = g.outputs.iter().map(|&i| g.values[i].name.as_str()).collect();
    assert_eq!(outputs, ["Y", "Z"]);
    let x = &value_named(g, "X").fact;
    assert_eq!(x.dtype, Some(DType::F32));
    assert_eq!(x.shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(3), Dim::Unknown]));
    let w = value_named(g, "W").constant().unwrap();
    assert_eq!((w.shape(), w.as_slice::<f32>().unwrap()), (&[2][..], &[-1.0f32, 2.0][..]));
    let h = &value_named(g, "H").fact;
    assert_eq!(h.shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(3), Dim::Known(7)]));
    assert_eq!(value_named(g, "Z").fact.concrete_shape(), Some(vec![2]));
    // The file lists "second" before "first"; import sorts them.
    let order: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    let at = |name: &str| order.iter().position(|&n| n == name).unwrap();
    assert!(at("first") < at("second"));
    assert_eq!(g.nodes.len(), 3);
    assert!(g.nodes.iter().all(|n| n.op_type == "Relu" && n.domain.is_empty()));
}

#[test]
fn external_data_loads_relative_to_the_model() {
    let dir = data_dir().join("external");
    let m = import_model(&std::fs::read(dir.join("model.onnx")).unwrap(), Some(&dir)).unwrap();
    let a = value_named(&m.graph, "A").constant().unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.as_slice::<f32>().unwrap(), &[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
    let b = value_named(&m.graph, "B").constant().unwrap();
    assert_eq!(b.as_slice::<i64>().unwrap(), &[7, -8, 9]);
    // Looked up elsewhere, the data file is not found.
    let e = import_model(&std::fs::read(dir.join("model.onnx")).unwrap(), Some(&data_dir())).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    assert!(e.message.contains("tensor 'A': cannot read external data file"), "{e}");
}

#[test]
fn unsupported_operators_are_listed_together() {
    let e = import_model(&read("unsupported.onnx"), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(e.message, "unsupported operators: Foo (opset 13), com.microsoft:Bar (opset 1)");
}

#[test]
fn every_truncation_is_an_error() {
    for name in ["relu.onnx", "subgraph.onnx", "unsupported.onnx", "external/model.onnx"] {
        let bytes = read(name);
        for end in 0..bytes.len() {
            let result = import_model(&bytes[..end], Some(&data_dir().join("external")));
            assert!(result.is_err(), "{name} cut at {end} of {} bytes imported", bytes.len());
            let _ = decode_model(&bytes[..end]);
        }
    }
    let bytes = read("tensors/float32_raw.pb");
    for end in 0..bytes.len() {
        let _ = decode_tensor(&bytes[..end]).map(|t| tensor_from_proto(&t, None));
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ext = data_dir().join("external");
    for name in ["relu.onnx", "subgraph.onnx", "external/model.onnx", "tensors/int64_typed.pb"] {
        let original = read(name);
        for _ in 0..1500 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] = next() as u8;
            }
            let _ = import_model(&bytes, Some(&ext));
            let _ = decode_tensor(&bytes).map(|t| tensor_from_proto(&t, Some(&ext)));
        }
    }
}

#[test]
fn bad_wire_data_is_an_invalid_model() {
    // Wire type 7 for field 7.
    let e = import_model(&[0x3f, 0x00], None).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::InvalidModel, "ModelProto: field 7 has invalid wire type 7 at byte 0")
    );
    // A graph whose length runs past the end.
    let e = import_model(&[0x3a, 0x10, 0x0a], None).unwrap_err();
    assert_eq!(e.message, "ModelProto.graph: length 16 past end of input at byte 1");
}

#[test]
fn deep_nesting_is_an_error() {
    // graph, then (node, attribute, g) ten thousand times, each message wrapping the next.
    let levels = 10_000;
    let field = |i: usize| if i == 0 { 7 } else { [1, 5, 6][(i - 1) % 3] };
    let mut lens = vec![0usize; levels + 1];
    for i in (0..levels).rev() {
        let mut head = vec![];
        varint((field(i) << 3) | 2, &mut head);
        varint(lens[i + 1] as u64, &mut head);
        lens[i] = head.len() + lens[i + 1];
    }
    let mut bytes = vec![];
    for i in 0..levels {
        varint((field(i) << 3) | 2, &mut bytes);
        varint(lens[i + 1] as u64, &mut bytes);
    }
    let e = import_model(&bytes, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidModel);
    assert!(e.message.contains("nest deeper than"), "{e}");
}

#[test]
fn a_huge_declared_tensor_in_a_tiny_file_fails_fast() {
    // An initializer declaring 10 GiB of float32 with 4 bytes of raw data.
    let mut tensor = vec![];
    field_varint(1, 10 << 28, &mut tensor);
    field_varint(2, 1, &mut tensor);
    field_bytes(8, b"w", &mut tensor);
    field_bytes(9, &[0, 0, 128, 63], &mut tensor);
    let mut graph = vec![];
    field_bytes(5, &tensor, &mut graph);
    let mut output = vec![];
    field_bytes(1, b"w", &mut output);
    field_bytes(12, &output, &mut graph);
    let mut model = vec![];
    field_varint(1, 8, &mut model);
    field_bytes(7, &graph, &mut model);
    let mut opset = vec![];
    field_varint(2, 13, &mut opset);
    field_bytes(8, &opset, &mut model);
    assert!(model.len() < 64);
    let start = Instant::now();
    let e = import_model(&model, None).unwrap_err();
    // 10 GiB is over the default 4 GiB tensor limit, checked before the data's length.
    assert_eq!(e.kind, ErrorKind::ResourceLimit);
    assert_eq!(
        e.message,
        "tensor 'w': tensor of shape [2684354560] (float32) would take 10737418240 bytes, over the limit of 4294967296 bytes"
    );
    assert!(start.elapsed().as_secs() < 1);
}

/// Every model and tensor file of the ONNX node tests (generated into `$CRX580_NODE_TESTS` by
/// tests/conformance/gen_node_tests.py, as for tests/conformance.rs): every model must decode, and
/// import may only fail for lack of an operator or dtype, never call a valid model invalid; every
/// data file must decode as a tensor or fail cleanly (sequences and optionals are other messages).
/// Every case on tests/conformance/node.txt must be among them. Without the generated cases this
/// says so loudly, and with `CRX580_REQUIRE_NODE_TESTS=1` (as in CI) fails.
#[test]
fn onnx_node_test_files_decode() {
    let Some(root) = common::generated_dir(
        "CRX580_NODE_TESTS",
        "onnx-node-tests",
        "CRX580_REQUIRE_NODE_TESTS",
        "ONNX node test decoding",
        "tests/conformance/gen_node_tests.py",
    ) else {
        return;
    };
    let cases = common::cases_in(&root, None);
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/node.txt")).unwrap();
    let missing: Vec<&str> = manifest
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|n| !n.is_empty() && !root.join(n).join("model.onnx").exists())
        .collect();
    assert!(
        missing.is_empty(),
        "{} cases of tests/conformance/node.txt are not in {} (regenerate: python tests/conformance/gen_node_tests.py --out {}): {}",
        missing.len(),
        root.display(),
        root.display(),
        missing.join(", ")
    );
    let (mut imported, mut tensors) = (0, 0);
    let mut failures = vec![];
    for dir in &cases {
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        match decode_model(&bytes) {
            Ok(model) if model.graph.is_some() => {}
            Ok(_) => failures.push(format!("{}: no graph", dir.display())),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
        match import_model(&bytes, Some(dir)) {
            Ok(_) => imported += 1,
            Err(e) if e.kind == ErrorKind::Unsupported => {}
            Err(e) => failures.push(format!("{}: import: {e}", dir.display())),
        }
        for set in common::data_sets(dir) {
            for pb in std::fs::read_dir(&set).unwrap().flatten() {
                let bytes = std::fs::read(pb.path()).unwrap();
                if decode_tensor(&bytes).map(|t| tensor_from_proto(&t, None)).is_ok_and(|t| t.is_ok()) {
                    tensors += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} node test models fail to decode or import:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{} node test models decode, {imported} import; {tensors} data files decode as tensors", cases.len());
}
