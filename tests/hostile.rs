//! Hostile models (tests/models/hostile, made by gen_hostile.py): each asks, from a few hundred
//! bytes, for memory or time that no machine has. Every one must load and run with a clear error
//! (or a correct, cheap result), and the whole test must stay small in memory: the process's peak
//! resident set is checked at the end (the other tests here are tiny).

mod common;

use crx580::ir::Dim;
use crx580::{ErrorKind, LoadOptions, Model, Session, SessionOptions, Tensor};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/hostile").join(format!("{name}.onnx"))
}

fn session(name: &str) -> Session {
    let model = Model::load(case(name)).unwrap_or_else(|e| panic!("{name} should load: {e}"));
    Session::new(model, &SessionOptions::default()).unwrap()
}

/// Runs `name` (no inputs) and expects a `ResourceLimit` error whose message names `place`.
fn expect_limit(name: &str, place: &str) {
    let e = session(name).run(&[]).expect_err(name);
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{name}: {e}");
    assert!(e.message.contains(place), "{name}: the error should name {place}: {e}");
}

/// Peak resident set of this process in MiB (VmHWM), from /proc.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

#[test]
fn hostile_models_fail_cleanly_and_stay_small() {
    // ConstantOfShape of 2^28 floats: not folded at load, refused under a smaller session limit.
    let model = Model::load(case("constant_of_shape_1gib")).unwrap();
    assert_eq!(model.graph().nodes.len(), 1, "the 1 GiB constant must be left to run time");
    let small = SessionOptions { max_tensor_bytes: 64 << 20, ..SessionOptions::default() };
    let e = Session::new(model, &small).unwrap().run(&[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{e}");
    assert!(e.message.contains("ConstantOfShape") && e.message.contains("over the limit of 67108864"), "{e}");

    // TfIdfVectorizer with 2^40 / 2^61 gram lengths and 2^62 skips: runs, cheaply and correctly.
    let row = Tensor::vector(vec![1i64, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]);
    for name in ["tfidf_gram_2_40", "tfidf_gram_2_61", "tfidf_skip_2_62"] {
        let y = session(name).run(&[("x", &row)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = std::fs::read(case(name).with_extension("expected.npy")).unwrap();
        let expected = crx580::io::npy::from_npy(&expected).unwrap();
        assert_eq!(y[0], expected, "{name}");
    }

    // Dims of empty tensors: a [0, 2^40] tensor made at run time, or declared as an initializer.
    expect_limit("resize_antialias_empty_2_40", "empty tensor of shape [0, 1099511627776]");
    let e = Model::load(case("empty_initializer_2_40")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{e}");
    assert!(e.message.contains("initializer 'x'") || e.message.contains("'x'"), "{e}");

    // 2^40 mel bins, and 2^27 pieces of an empty tensor.
    expect_limit("mel_weight_matrix_2_40", "MelWeightMatrix");
    expect_limit("split_to_sequence_empty_2_27", "SplitToSequence");

    // Window attributes of 2^40: the output is refused before any per-position table is made.
    for name in ["maxpool_pads_2_40", "conv_dilations_2_40", "conv_transpose_strides_2_40"] {
        expect_limit(name, "overflows");
    }

    let peak = peak_rss_mib();
    assert!(peak < 1024, "peak resident set {peak} MiB: some bomb was materialised");
}

/// Every model of the bomb scan (tests/models/hostile/gen_bomb_scan.py: each op with a size-like
/// attribute or input at 2^40) loads and runs to a result or a clear error under small limits:
/// never a panic (reported as an internal error), an abort, or a hang.
#[test]
fn every_bomb_scan_model_ends_cleanly() {
    let Some(dir) = common::generated_dir(
        "CRX580_BOMB_SCAN",
        "bomb-scan",
        "CRX580_REQUIRE_BOMB_SCAN",
        "the bomb scan",
        "tests/models/hostile/gen_bomb_scan.py",
    ) else {
        return;
    };
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 70, "expected the bomb scan's models in {}, found {}", dir.display(), models.len());
    let limit = 256 << 20;
    let load = LoadOptions { max_tensor_bytes: limit, ..LoadOptions::default() };
    let run = SessionOptions {
        max_tensor_bytes: limit,
        max_run_time: Some(Duration::from_secs(10)),
        ..SessionOptions::default()
    };
    let mut problems = vec![];
    for m in &models {
        let start = Instant::now();
        let result = Model::load_with(m, &load).and_then(|model| Session::new(model, &run)).and_then(|s| s.run(&[]));
        let name = m.file_stem().unwrap().to_string_lossy();
        match result {
            Err(e) if e.message.contains("internal error") => problems.push(format!("{name}: {e}")),
            _ if start.elapsed() > Duration::from_secs(20) => {
                problems.push(format!("{name}: took {:?}", start.elapsed()))
            }
            _ => {}
        }
    }
    assert!(problems.is_empty(), "bomb-scan models that did not end cleanly:\n{}", problems.join("\n"));
    let peak = peak_rss_mib();
    assert!(peak < 1024, "peak resident set {peak} MiB over the bomb scan");
}

#[test]
fn a_time_limit_stops_an_endless_loop() {
    let model = Model::load(case("loop_2_62")).unwrap();
    let options = SessionOptions { max_run_time: Some(Duration::from_millis(200)), ..SessionOptions::default() };
    let start = Instant::now();
    let e = Session::new(model, &options).unwrap().run(&[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceLimit, "{e}");
    assert!(e.message.contains("time limit of 200 ms") && e.message.contains("Loop"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10), "stopped after {:?}", start.elapsed());
}

#[test]
fn negative_declared_dims_are_dynamic() {
    // paddle2onnx writes -1 for dynamic dims; onnxruntime runs such models, and so must we.
    let s = session("paddle_negative_dims");
    assert_eq!(s.model().inputs()[0].shape, Some(vec![Dim::Unknown, Dim::Known(3), Dim::Unknown]));
    let x = Tensor::new(vec![2, 3, 1], vec![-1f32, 2., -3., 4., -5., 6.]).unwrap();
    let y = s.run(&[("x", &x)]).unwrap();
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[0., 2., 0., 4., 0., 6.]);
}

#[test]
fn a_model_file_over_2_gib_is_refused_before_it_is_read() {
    // A sparse file: 3 GiB long, no disk blocks. ONNX files cannot be over 2 GiB (protobuf's
    // limit), so the size alone condemns it; mapping or reading it would touch 3 GiB.
    let dir = std::env::temp_dir().join(format!("crx580-hostile-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.onnx");
    std::fs::File::create(&path).unwrap().set_len(3 << 30).unwrap();
    let e = Model::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    // The size check's own message: refused before a byte was mapped or read.
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    assert!(e.message.contains("3221225472 bytes, more than the 2147483648"), "{e}");
}
