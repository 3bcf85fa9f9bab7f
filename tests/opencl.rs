//! The OpenCL layers on a real OpenCL device (PoCL in CI: `apt-get install pocl-opencl-icd`),
//! each kernel against the CPU reference kernels on random data, odd sizes included; the program
//! cache; and a host without libOpenCL. No test skips: without an OpenCL device they fail and say
//! what to install.

mod common;

use crx580::backend::opencl::elementwise::{BinaryOp, Elementwise};
use crx580::backend::opencl::gemm::{BiasLayout, Gemm, GemmCall};
use crx580::backend::opencl::program::{Arg, Program, SOURCES};
use crx580::backend::opencl::tuning::GemmParams;
use crx580::backend::opencl::Context;
use crx580::ops::fused::Activation;
use crx580::Tensor;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The program cache of these tests: under target/, so a second `cargo test` compiles nothing.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("opencl-program-cache")
}

fn context() -> Arc<Context> {
    static CTX: OnceLock<Arc<Context>> = OnceLock::new();
    CTX.get_or_init(|| {
        let device = Context::first_device().unwrap_or_else(|e| {
            panic!(
                "the OpenCL tests need an OpenCL device: install pocl-opencl-icd and ocl-icd-libopencl1 (CI does): {e}"
            )
        });
        Context::new(device, Some(cache_dir())).expect("an OpenCL context")
    })
    .clone()
}

/// Deterministic values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: element {i} is {g}, the reference {w}");
    }
}

/// The reference: the CPU's reference sgemm per batch, then alpha, bias, activation, residual.
#[allow(clippy::too_many_arguments)]
fn reference_gemm(
    c: &GemmCall,
    a: &[f32],
    b: &[f32],
    bias: Option<(&[f32], BiasLayout)>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (m, n, k) = (c.m, c.n, c.k);
    let mut out = vec![0.0f32; c.batch * m * n];
    for batch in 0..c.batch {
        let a = if c.a_batched { &a[batch * m * k..][..m * k] } else { &a[..m * k] };
        let b = if c.b_batched { &b[batch * k * n..][..k * n] } else { &b[..k * n] };
        let out = &mut out[batch * m * n..][..m * n];
        crx580::ops::matmul::sgemm(c.trans_a, c.trans_b, m, n, k, a, b, out).unwrap();
        for i in 0..m {
            for j in 0..n {
                let mut v = c.alpha * out[i * n + j];
                if let Some((bias, l)) = bias {
                    v += c.beta * bias[batch * l.batch_stride + i * l.row_stride + j * l.col_stride];
                }
                v = c.act.reference(v as f64) as f32;
                if let Some(r) = residual {
                    v += r[batch * m * n + i * n + j];
                }
                out[i * n + j] = v;
            }
        }
    }
    out
}

/// Runs one call on the device and compares with the reference.
fn check_gemm(gemm: &Gemm, call: GemmCall, with_bias: Option<BiasLayout>, with_residual: bool, seed: u64) {
    let ctx = context();
    let a_len = call.m * call.k * if call.a_batched { call.batch } else { 1 };
    let b_len = call.k * call.n * if call.b_batched { call.batch } else { 1 };
    let a = random(a_len, seed);
    let b = random(b_len, seed + 1);
    let bias = with_bias.map(|l| (random(call.batch * call.m * call.n, seed + 2), l));
    let residual = with_residual.then(|| random(call.batch * call.m * call.n, seed + 3));
    let want = reference_gemm(&call, &a, &b, bias.as_ref().map(|(v, l)| (v.as_slice(), *l)), residual.as_deref());

    let (da, db) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap());
    let dbias = bias.as_ref().map(|(v, l)| (ctx.upload(v).unwrap(), *l));
    let dres = residual.as_ref().map(|r| ctx.upload(r).unwrap());
    let dc = ctx.alloc::<f32>(call.batch * call.m * call.n).unwrap();
    gemm.run(&call, &da, &db, dbias.as_ref().map(|(buf, l)| (buf, *l)), dres.as_ref(), &dc).unwrap();
    let got = dc.to_vec::<f32>(want.len()).unwrap();
    assert_close(&got, &want, 1e-4, &format!("{:?} {call:?}", gemm.params));
}

/// The cases every GEMM tiling must pass: tile multiples and odd sizes, transposes, batches with
/// shared weights, each epilogue.
fn gemm_cases(gemm: &Gemm) {
    let mut seed = 1;
    for (m, n, k) in [(64, 64, 64), (1, 1, 1), (7, 13, 5), (33, 65, 17), (100, 37, 129), (3, 200, 9)] {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let call = GemmCall { trans_a, trans_b, ..GemmCall::new(m, n, k) };
            check_gemm(gemm, call, None, false, seed);
            seed += 10;
        }
    }
    let batched = GemmCall { batch: 3, b_batched: false, ..GemmCall::new(19, 40, 23) };
    check_gemm(gemm, batched, None, false, 100);
    check_gemm(gemm, GemmCall { b_batched: true, a_batched: false, ..batched }, None, false, 110);
    let epilogue = GemmCall { alpha: 0.5, beta: 2.0, act: Activation::Relu, ..GemmCall::new(35, 70, 31) };
    check_gemm(gemm, epilogue, Some(BiasLayout::per_column()), false, 200);
    check_gemm(gemm, epilogue, Some(BiasLayout::full(35, 70)), true, 210);
    let column_bias = BiasLayout { row_stride: 1, col_stride: 0, batch_stride: 0 };
    check_gemm(gemm, GemmCall { act: Activation::Sigmoid, ..epilogue }, Some(column_bias), false, 220);
    check_gemm(
        gemm,
        GemmCall { act: Activation::Gelu, batch: 2, ..epilogue },
        Some(BiasLayout::per_column()),
        true,
        230,
    );
    check_gemm(gemm, GemmCall::new(0, 5, 3), None, false, 240);
    check_gemm(gemm, GemmCall::new(4, 5, 0), Some(BiasLayout::per_column()), false, 250);
}

#[test]
fn gemm_with_the_devices_tuned_parameters_matches_the_reference() {
    gemm_cases(&Gemm::new(&context()).unwrap());
}

#[test]
fn gemm_with_local_memory_tiles_matches_the_reference() {
    // The GCN 4.0 entry's tiling (256 work-items, 64x64 tiles, 4x4 per work-item), run on PoCL:
    // the kernel's local-memory path is checked here even without a GPU.
    let gcn = GemmParams::Local { mwg: 64, nwg: 64, kwg: 16, mwi: 4, nwi: 4 };
    gemm_cases(&Gemm::with_params(&context(), gcn).unwrap());
}

#[test]
fn every_kernel_file_compiles_with_its_default_macros() {
    for (file, _) in SOURCES {
        Program::build(&context(), file, &[]).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn elementwise_matches_the_reference() {
    let ctx = context();
    let ew = Elementwise::new(&ctx).unwrap();
    let shapes: &[(&[usize], &[usize], &[usize])] = &[
        (&[37], &[37], &[37]),
        (&[3, 5], &[5], &[3, 5]),
        (&[2, 1, 4], &[3, 1], &[2, 3, 4]),
        (&[1], &[2, 3, 1, 5, 1, 2], &[2, 3, 1, 5, 1, 2]),
        (&[0, 3], &[3], &[0, 3]),
    ];
    let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Max, BinaryOp::Min];
    for (seed, &(sa, sb, so)) in shapes.iter().enumerate() {
        for op in ops {
            let a_vals: Vec<f32> = random(sa.iter().product(), seed as u64).iter().map(|v| v + 2.0).collect(); // > 0 for Pow
            let b_vals = random(sb.iter().product(), seed as u64 + 7);
            let (a, b) =
                (Tensor::new(sa.to_vec(), a_vals.clone()).unwrap(), Tensor::new(sb.to_vec(), b_vals.clone()).unwrap());
            for act in [Activation::None, Activation::Relu] {
                let want = crx580::ops::broadcast::binary::<f32, f32, f32>(&a, &b, |x, y| {
                    act.reference(op.reference(*x, *y) as f64) as f32
                })
                .unwrap();
                assert_eq!(want.shape(), so);
                let (da, db) = (ctx.upload(&a_vals).unwrap(), ctx.upload(&b_vals).unwrap());
                let dout = ctx.alloc::<f32>(want.len()).unwrap();
                ew.binary(op, &da, sa, &db, sb, &dout, so, act).unwrap();
                let got = dout.to_vec::<f32>(want.len()).unwrap();
                assert_close(&got, want.as_slice::<f32>().unwrap(), 1e-5, &format!("{op:?} {sa:?} {sb:?} {act:?}"));
            }
        }
    }
    let x = random(1001, 99).iter().map(|v| v * 4.0).collect::<Vec<f32>>();
    let acts = [
        Activation::Relu,
        Activation::Clip(-0.5, 0.7),
        Activation::LeakyRelu(0.1),
        Activation::Sigmoid,
        Activation::Silu,
        Activation::HardSigmoid(0.2, 0.5),
        Activation::HardSwish,
        Activation::Tanh,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Erf,
        Activation::Exp,
    ];
    let dx = ctx.upload(&x).unwrap();
    let dout = ctx.alloc::<f32>(x.len()).unwrap();
    for act in acts {
        ew.unary(&dx, &dout, x.len(), act).unwrap();
        let want: Vec<f32> = x.iter().map(|&v| act.reference(v as f64) as f32).collect();
        assert_close(&dout.to_vec::<f32>(x.len()).unwrap(), &want, 1e-5, &format!("{act:?}"));
    }
    let sq: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    ew.unary(&ctx.upload(&sq).unwrap(), &dout, sq.len(), Activation::Sqrt).unwrap();
    assert_close(
        &dout.to_vec::<f32>(sq.len()).unwrap(),
        &sq.iter().map(|v| v.sqrt()).collect::<Vec<_>>(),
        1e-6,
        "Sqrt",
    );
}

#[test]
fn a_second_build_comes_from_the_cache_and_a_corrupt_entry_is_rebuilt() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("opencl-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ctx = Context::new(context().device.clone(), Some(dir.clone())).unwrap();
    let files = || std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
    let first = Program::build(&ctx, "elementwise.cl", &[]).unwrap();
    assert!(!first.from_cache, "an empty cache compiles");
    assert_eq!(files().len(), 1);
    let second = Program::build(&ctx, "elementwise.cl", &[]).unwrap();
    assert!(second.from_cache, "the second build must compile nothing");
    assert_eq!(files().len(), 1, "the cache must not grow on a rebuild");

    // A corrupt entry (a flipped byte in the binary, then garbage) is rebuilt and rewritten.
    let path = files().remove(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    assert!(!Program::build(&ctx, "elementwise.cl", &[]).unwrap().from_cache);
    std::fs::write(&path, b"not a program").unwrap();
    let rebuilt = Program::build(&ctx, "elementwise.cl", &[]).unwrap();
    assert!(!rebuilt.from_cache);
    assert!(Program::build(&ctx, "elementwise.cl", &[]).unwrap().from_cache, "the rebuilt entry is good again");
    // The rebuilt program works.
    let x = ctx.upload(&[-1.0f32, 2.0]).unwrap();
    let relu = [Arg::I32(2), Arg::Buf(&x), Arg::Buf(&x), Arg::I32(1), Arg::F32(0.0), Arg::F32(0.0)];
    rebuilt.kernel("unary").unwrap().launch(&relu, &[2], None).unwrap();
    assert_eq!(x.to_vec::<f32>(2).unwrap(), vec![0.0, 2.0]);
    assert_eq!(files().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_libopencl_only_the_cpu_is_offered() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crx580"))
        .arg("devices")
        .env("CRX580_OPENCL_LIB", "libcrx580-no-such-opencl.so.1")
        .output()
        .unwrap();
    assert!(out.status.success(), "crx580 devices failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() == 1 && text.starts_with("cpu:"), "only the CPU may be listed: {text}");
    // With the library, the OpenCL device is listed too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crx580")).arg("devices").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("opencl: ") && l.contains("compute units")), "{text}");
}

#[test]
fn golden_models_on_opencl_match_onnxruntime() {
    // MatMul, Gemm, FusedMatMul and f32 elementwise nodes run on the device, the rest on the CPU,
    // against onnxruntime's outputs with the CPU's tolerance.
    context(); // fails with the install hint when there is no device
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden");
    let options = crx580::SessionOptions { device: crx580::Device::OpenCl, ..Default::default() };
    std::env::set_var("CRX580_CACHE_DIR", cache_dir());
    let cases = common::cases_in(&dir, None);
    assert!(cases.len() >= 20, "golden models missing from {}", dir.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| common::run_case_with(c, &options, 1e-3, 1e-4).err().map(|e| format!("{}: {e}", c.display())))
        .collect();
    assert!(failures.is_empty(), "golden models failed on OpenCL:\n{}", failures.join("\n"));
}

#[test]
fn info_shows_which_nodes_the_opencl_device_runs() {
    context(); // fails with the install hint when there is no device
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/attention_block/model.onnx");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crx580"))
        .args(["info", model.to_str().unwrap()])
        .env("CRX580_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  opencl: runs 19 nodes: Add, Div, Erf, MatMul, Mul; leaves"), "{text}");
}
