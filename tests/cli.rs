//! The `crx580` command line contract: run (demo, inputs, --output-dir), info, bench --json, devices,
//! and one-line errors with a non-zero exit. The modules under tests/cli_tests/ cover input shapes,
//! closed pipes, `info`'s statistics, images, completions and man pages.

#[path = "cli_tests/docs.rs"]
mod docs;
#[path = "cli_tests/images.rs"]
mod images;
#[path = "cli_tests/info.rs"]
mod info;
#[path = "cli_tests/onnx_writer.rs"]
mod onnx_writer;
#[path = "cli_tests/pipes.rs"]
mod pipes;
#[path = "cli_tests/shapes.rs"]
mod shapes;
#[path = "cli_tests/zoo.rs"]
mod zoo;

mod common;

use onnx_writer::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the command as on a host without OpenCL (a missing loader library), so that what these
/// tests see does not depend on whether the machine has an OpenCL platform (tests/opencl.rs runs
/// the command with one).
fn crx580(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crx580"))
        .args(args)
        .env("CRX580_OPENCL_LIB", "libcrx580-no-such-opencl.so.1")
        .output()
        .expect("start crx580")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("crx580-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn demo_classifies_the_sample_digits() {
    let o = crx580(&["run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("accuracy:")).expect("an accuracy line");
    // "accuracy: 31/32 = ..." : the model reaches >= 90% on its held-out samples.
    let frac = line.split_whitespace().nth(1).unwrap();
    let (ok, n) = frac.split_once('/').unwrap();
    let (ok, n): (f64, f64) = (ok.parse().unwrap(), n.parse().unwrap());
    assert!(n >= 16.0 && ok / n >= 0.9, "{line}");
}

#[test]
fn run_writes_outputs_as_npy_in_graph_order() {
    let dir = temp_dir("run");
    let model = digits().join("digits.onnx");
    let samples = digits().join("samples.npy");
    let o = crx580(&[
        "run",
        model.to_str().unwrap(),
        &format!("image={}", samples.display()),
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let probs = crx580::io::read_tensor_file(&dir.join("output_1.npy")).unwrap().0;
    assert_eq!(probs.shape()[1], 10);
    // Softmax rows sum to one: the written values are real outputs, not placeholders.
    for row in probs.as_slice::<f32>().unwrap().chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // Bare paths bind in input order, too.
    let o = crx580(&["run", model.to_str().unwrap(), samples.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("logits: float32 [32, 10]"), "{}", stdout(&o));
}

#[test]
fn info_reports_opset_io_ops_and_parameters() {
    let model = digits().join("digits.onnx");
    let o = crx580(&["info", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = stdout(&o);
    assert!(j.contains("\"ai.onnx\":13"), "{j}");
    assert!(j.contains("\"name\":\"image\",\"dtype\":\"float32\",\"shape\":[\"N\",1,8,8]"), "{j}");
    assert!(j.contains("\"Conv\":"), "{j}");
    let o = crx580(&["info", model.to_str().unwrap()]);
    assert!(stdout(&o).contains("parameters:"), "{}", stdout(&o));
}

#[test]
fn bench_prints_one_json_line() {
    let model = digits().join("digits.onnx");
    let o = crx580(&["bench", model.to_str().unwrap(), "--runs", "3", "--warmup", "1", "--dim", "N=4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j = stdout(&o);
    assert_eq!(j.trim().lines().count(), 1, "{j}");
    for key in ["median_ms", "p90_ms", "min_ms", "\"runs\":3", "load_ms", "peak_rss_mb", "\"total_nodes\":"] {
        assert!(j.contains(key), "{key} missing in {j}");
    }
}

/// Nodes without names (ONNX allows them) each get their own line in the per-node profile, and
/// the op-type table counts them all: keyed by name alone, they ran together as one.
#[test]
fn the_node_profile_tells_nameless_nodes_apart() {
    let dir = temp_dir("profile");
    let model = dir.join("casts.onnx");
    std::fs::write(&model, cast_model(&[("a", "a_int64", INT64), ("b", "b_uint8", UINT8)], 5)).unwrap();
    let o = crx580(&["bench", model.to_str().unwrap(), "--runs", "2", "--warmup", "1", "--profile=nodes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let casts =
        out.lines().find(|l| l.trim_start().starts_with("Cast ")).unwrap_or_else(|| panic!("no Cast row: {out}"));
    assert_eq!(casts.split_whitespace().nth(1), Some("2"), "{out}");
    for node in ["(Cast #1)", "(Cast #2)"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(node)), "{node} missing in {out}");
    }
}

#[test]
fn devices_lists_the_cpu() {
    let o = crx580(&["devices"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("cpu"), "{}", stdout(&o));
}

#[test]
fn errors_are_one_line_and_name_the_input() {
    let dir = temp_dir("err");
    let o = crx580(&["run", dir.join("missing.onnx").to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("missing.onnx"), "{e}");

    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, b"\x0a\xff\xff\xff\xff\x0fnot a model").unwrap();
    let o = crx580(&["info", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.onnx"), "{}", stderr(&o));

    let model = digits().join("digits.onnx");
    let o = crx580(&["run", model.to_str().unwrap(), "nosuch=x.npy"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nosuch=x.npy") || stderr(&o).contains("x.npy"), "{}", stderr(&o));

    let o = crx580(&["run", model.to_str().unwrap(), "--device", "tpu"]);
    assert!(stderr(&o).contains("unknown device 'tpu'"), "{}", stderr(&o));
}

#[test]
fn max_memory_limits_what_a_model_may_allocate() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/hostile/constant_of_shape_1gib.onnx");
    let o = crx580(&["run", model.to_str().unwrap(), "--max-memory", "64M"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.starts_with("crx580: error: node (ConstantOfShape): tensor of shape [268435456]"), "{err}");
    assert!(err.contains("over the limit of 67108864 bytes"), "{err}");
    let o = crx580(&["info", model.to_str().unwrap(), "--max-memory", "lots"]);
    assert!(stderr(&o).contains("--max-memory 'lots'"), "{}", stderr(&o));
    // The demo runs under a small limit too: its tensors are tiny.
    assert!(crx580(&["run", "--max-memory", "1M"]).status.success());
}

/// An opset-21 model: `y = Cast(x, to=elem)` for each (x, y, elem), float32 inputs of length `n`.
fn cast_model(casts: &[(&str, &str, u64)], n: u64) -> Vec<u8> {
    let mut graph = vec![];
    for (x, y, elem) in casts {
        let to = [bytes_field(1, b"to"), int_field(20, 2), int_field(3, *elem)].concat();
        let node =
            [bytes_field(1, x.as_bytes()), bytes_field(2, y.as_bytes()), bytes_field(4, b"Cast"), bytes_field(5, &to)];
        graph.extend(bytes_field(1, &node.concat()));
    }
    graph.extend(bytes_field(2, b"casts"));
    for (x, _, _) in casts {
        graph.extend(bytes_field(11, &tensor_value(x, FLOAT, Some(&[D::N(n)]))));
    }
    for (_, y, elem) in casts {
        graph.extend(bytes_field(12, &tensor_value(y, *elem, Some(&[D::N(n)]))));
    }
    [int_field(1, 10), bytes_field(7, &graph), bytes_field(8, &int_field(2, 21))].concat()
}

/// The `'descr'` of a `.npy` file's header.
fn npy_descr(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..bytes.len().min(128)]).into_owned();
    let at = header.find("'descr': '").expect("a descr") + "'descr': '".len();
    header[at..].split('\'').next().unwrap().to_string()
}

/// numpy has no 4-bit types: int4 outputs are written as sign-extended int8 values and uint4 as
/// uint8 values (README, `crx580 run`), so that `np.load` gives the right numbers.
#[test]
fn run_writes_4_bit_outputs_as_8_bit_values() {
    const INT4: u64 = 22;
    const UINT4: u64 = 21;
    let dir = temp_dir("int4");
    let model = dir.join("casts.onnx");
    std::fs::write(&model, cast_model(&[("a", "a_int4", INT4), ("b", "b_uint4", UINT4)], 5)).unwrap();
    let a = crx580::ir::Tensor::vector(vec![-8.0f32, -1.0, 0.0, 3.0, 7.0]);
    let b = crx580::ir::Tensor::vector(vec![0.0f32, 1.0, 8.0, 9.0, 15.0]);
    crx580::io::write_npy(&dir.join("a.npy"), &a).unwrap();
    crx580::io::write_npy(&dir.join("b.npy"), &b).unwrap();
    let out = dir.join("out");
    let (a, b) = (dir.join("a.npy"), dir.join("b.npy"));
    let o = crx580(&[
        "run",
        model.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(npy_descr(&out.join("output_0.npy")), "|i1");
    let ints = crx580::io::read_tensor_file(&out.join("output_0.npy")).unwrap().0;
    assert_eq!((ints.shape(), ints.as_slice::<i8>().unwrap()), (&[5][..], &[-8i8, -1, 0, 3, 7][..]));
    assert_eq!(npy_descr(&out.join("output_1.npy")), "|u1");
    let uints = crx580::io::read_tensor_file(&out.join("output_1.npy")).unwrap().0;
    assert_eq!(uints.as_slice::<u8>().unwrap(), &[0u8, 1, 8, 9, 15]);
}
