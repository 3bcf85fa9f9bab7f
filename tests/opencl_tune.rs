//! `crx580 tune`'s search and tune file on a real OpenCL device (PoCL in CI): a tiny search
//! finishes, rejects a candidate that cannot build and one whose answers are wrong, and writes a
//! file that a later session on the same device uses; re-tuning replaces the file; a corrupt or
//! stale file is ignored with the built-in parameters, and the session's answers stay right.
//! No test skips: without an OpenCL device they fail and say what to install.
#![cfg(feature = "opencl")]

mod common;

use crx580::backend::opencl::gemm::Gemm;
use crx580::backend::opencl::tune::{self, GemmShape, Outcome, SearchOptions};
use crx580::backend::opencl::tuning::{gemm_params, table_params, tune_file, GemmParams};
use crx580::backend::opencl::{Context, DeviceInfo};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The tests here set CRX580_KERNELS_DIR (read by every program build in the process) one at a
/// time.
static ENV: Mutex<()> = Mutex::new(());

fn device() -> DeviceInfo {
    Context::first_device().unwrap_or_else(|e| {
        panic!("the OpenCL tests need an OpenCL device: install pocl-opencl-icd and ocl-icd-libopencl1 (CI does): {e}")
    })
}

/// A fresh directory under target/ for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("opencl-tune-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small(mwi: usize, vw: usize, nv: usize) -> GemmParams {
    GemmParams::Registers { mwi, vw, nv }
}

fn tiny_search(ctx: &Arc<Context>, candidates: Vec<GemmParams>) -> tune::Report {
    let options = SearchOptions {
        shapes: vec![(GemmShape::new(64, 64, 64), 2), (GemmShape::new(50, 33, 70), 1)],
        candidates,
        seconds_per_shape: 0.02,
    };
    let mut events = 0;
    let report = tune::search(ctx, &options, &mut |_| events += 1).unwrap();
    assert_eq!(events, 2 * options.candidates.len(), "progress hears of each candidate twice");
    report
}

fn tune_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("tune-"))
        .count()
}

#[test]
fn a_tiny_search_writes_a_tune_file_that_a_later_session_uses() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = fresh_dir("search");
    let ctx = Context::new(device(), Some(dir.clone())).unwrap();
    let started = std::time::Instant::now();
    let unbuildable = small(2, 5, 1); // VW 5 is no OpenCL vector width
    let report = tiny_search(&ctx, vec![small(2, 4, 1), unbuildable, small(4, 8, 1)]);
    assert!(started.elapsed().as_secs() < 300, "a tiny search took {:?}", started.elapsed());
    assert!(matches!(report.trial(unbuildable).unwrap().outcome, Outcome::Failed(_)), "{report:?}");
    for p in [small(2, 4, 1), small(4, 8, 1)] {
        match &report.trial(p).unwrap().outcome {
            Outcome::Timed { seconds } => assert!(seconds.len() == 2 && seconds.iter().all(|&s| s > 0.0)),
            other => panic!("{p} should be right and timed: {other:?}"),
        }
    }
    let winner = report.winner.unwrap();
    assert!(winner == small(2, 4, 1) || winner == small(4, 8, 1));

    let path = tune::save(&ctx, &report).unwrap();
    assert_eq!(path, tune_file(&dir, &ctx.device));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&ctx.device.name) && text.contains(&ctx.device.driver_version), "{text}");
    assert_eq!(gemm_params(&ctx.device, Some(&dir)).unwrap(), (winner, "tune file"));

    // Re-tuning replaces the file: a one-candidate search makes the other set the winner.
    let other = if winner == small(2, 4, 1) { small(4, 8, 1) } else { small(2, 4, 1) };
    let again = tiny_search(&ctx, vec![other]);
    tune::save(&ctx, &again).unwrap();
    assert_eq!(tune_files(&dir), 1, "re-tuning must replace the tune file, not add one");
    assert_eq!(gemm_params(&ctx.device, Some(&dir)).unwrap().0, other);

    // A later session on the device, with only the tune file in its cache directory, builds the
    // tuned GEMM program and answers as onnxruntime does.
    let later = fresh_dir("later-session");
    std::fs::copy(&path, tune_file(&later, &ctx.device)).unwrap();
    let gemm = Gemm::new(&Context::new(device(), Some(later.clone())).unwrap()).unwrap();
    assert_eq!(gemm.params, other);
    let device_options = crx580::backend::DeviceOptions { cache_dir: Some(later.clone()), ..Default::default() };
    let options = crx580::SessionOptions { device: crx580::Device::OpenCl, device_options, ..Default::default() };
    let mlp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/mlp");
    common::run_case_with(&mlp, &options, 1e-3, 1e-4).unwrap();
    let GemmParams::Registers { mwi, vw, nv } = other else { unreachable!() };
    let tuned_options = format!("-DMWI={mwi} -DVW={vw} -DNV={nv}");
    let programs: Vec<String> = std::fs::read_dir(&later)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("gemm_cl"))
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect();
    assert!(
        programs.iter().any(|p| p.contains(&tuned_options)),
        "the session's GEMM program was not built with the tuned {tuned_options}"
    );
}

#[test]
fn a_corrupt_or_stale_tune_file_is_ignored_and_answers_stay_right() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = fresh_dir("corrupt");
    let device = device();
    let table = table_params(&device).0;
    let path = tune_file(&dir, &device);
    let stale = format!(
        "crx580-opencl-tune v1\ndevice={}\ndriver={}-older\ngemm=registers:2,4,1\n",
        device.name, device.driver_version
    );
    let corrupt: [&[u8]; 5] =
        [b"", b"\xff\xfe\x00garbage", b"crx580-opencl-tune v1\ndevice=", stale.as_bytes(), &[0u8; 4096]];
    for bytes in corrupt {
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(gemm_params(&device, Some(&dir)).unwrap().0, table, "{:?}", String::from_utf8_lossy(bytes));
    }
    // A session over the stale file runs with the table's parameters (its program is compiled
    // into the shared test cache) and still answers as onnxruntime does.
    let shared_cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("opencl-program-cache");
    std::fs::create_dir_all(&shared_cache).unwrap();
    let shared_tune = tune_file(&shared_cache, &device);
    std::fs::write(&shared_tune, b"crx580-opencl-tune v1\ndevice=\x00\x01 not this one\n").unwrap();
    let device_options = crx580::backend::DeviceOptions { cache_dir: Some(shared_cache), ..Default::default() };
    let options = crx580::SessionOptions { device: crx580::Device::OpenCl, device_options, ..Default::default() };
    let mlp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/mlp");
    let result = common::run_case_with(&mlp, &options, 1e-3, 1e-4);
    std::fs::remove_file(&shared_tune).unwrap();
    result.unwrap();
}

#[test]
fn a_candidate_with_wrong_answers_is_rejected() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    // A copy of the kernels whose full-block path adds a small error for MWI=4 only.
    let kernels = fresh_dir("wrong-kernels");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    for entry in std::fs::read_dir(&source).unwrap() {
        let p = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if p.file_name().unwrap() == "gemm.cl" {
            let right = "acc[i][j] = fma(av, bv[j], acc[i][j]);";
            assert!(text.contains(right), "gemm.cl changed: update this test's fault");
            text = text.replace(right, "acc[i][j] = fma(av, bv[j], acc[i][j]) + (floatV)(MWI == 4 ? 0.01f : 0.0f);");
        }
        std::fs::write(kernels.join(p.file_name().unwrap()), text).unwrap();
    }
    std::env::set_var("CRX580_KERNELS_DIR", &kernels);
    let dir = fresh_dir("wrong");
    let ctx = Context::new(device(), Some(dir.clone())).unwrap();
    let options = SearchOptions {
        shapes: vec![(GemmShape::new(64, 64, 64), 1)],
        candidates: vec![small(4, 8, 1), small(2, 8, 1)],
        seconds_per_shape: 0.02,
    };
    let report = tune::search(&ctx, &options, &mut |_| {});
    std::env::remove_var("CRX580_KERNELS_DIR");
    let report = report.unwrap();
    match &report.trial(small(4, 8, 1)).unwrap().outcome {
        Outcome::Wrong(why) => assert!(why.contains("where the CPU has"), "{why}"),
        other => panic!("the faulty candidate was not rejected: {other:?}"),
    }
    assert_eq!(report.winner, Some(small(2, 8, 1)));
}

#[test]
fn the_tables_entry_passes_the_tuners_checks_on_resnet_edge_shapes() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    // A ResNet's late convolutions have N = OH*OW = 196 and 49: blocks cut by the edge of C,
    // whose whole vectors and scalar rest the search checks against its CPU GEMM.
    let ctx = Context::new(device(), Some(fresh_dir("edges"))).unwrap();
    let table = table_params(&ctx.device).0;
    let shapes = [(16, 49, 40), (24, 196, 33), (9, 83, 17), (8, 784, 9)];
    let options = SearchOptions {
        shapes: shapes
            .iter()
            .map(|&(m, n, k)| (GemmShape { batch: 2, shared_a: true, ..GemmShape::new(m, n, k) }, 1))
            .collect(),
        candidates: vec![table],
        seconds_per_shape: 0.01,
    };
    let report = tune::search(&ctx, &options, &mut |_| {}).unwrap();
    assert!(matches!(report.trials[0].outcome, Outcome::Timed { .. }), "{:?}", report.trials[0]);
}

#[cfg(feature = "cli")]
#[test]
fn the_tune_command_saves_a_winner_and_reads_a_models_shapes() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = fresh_dir("cli");
    let crx580 = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crx580")).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "crx580 {args:?} failed:\n{text}");
        text
    };
    let cache = dir.to_str().unwrap();
    let quick =
        ["--params", "registers:2,4,1", "--params", "registers:2,5,1", "--seconds", "0.01", "--cache-dir", cache];
    let text = crx580(&[&["tune", "--gemm", "--gemm-shape", "40,24,16"][..], &quick].concat());
    assert!(text.contains("* registers:2,4,1") && text.contains("failed:"), "{text}");
    assert!(text.contains("saved:") && tune_files(&dir) == 1, "{text}");
    // A model: its convolutions' GEMM shapes (cnn_bn: 3x3 convolutions), nothing saved on a dry run.
    std::fs::remove_file(tune_file(&dir, &device())).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/cnn_bn/model.onnx");
    let text = crx580(&[&["tune", model.to_str().unwrap(), "--dry-run"][..], &quick].concat());
    assert!(text.contains("shape ") && text.contains("--dry-run") && tune_files(&dir) == 0, "{text}");
}
