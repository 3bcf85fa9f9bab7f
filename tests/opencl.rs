//! The OpenCL layers on a real OpenCL device (PoCL in CI: `apt-get install pocl-opencl-icd`),
//! each kernel against the CPU reference kernels on random data, odd sizes included (the op
//! kernels one node at a time in `opencl/nodes.rs`); the program cache and the buffer pool; the
//! f32 ONNX node tests, golden and zoo models on the device; and a host without libOpenCL. No test
//! skips: without an OpenCL device they fail and say what to install.

mod common;
#[path = "opencl/nodes.rs"]
mod nodes;

use crx580::backend::cpu::pool::ThreadPool;
use crx580::backend::cpu::CpuBackend;
use crx580::backend::opencl::elementwise::{BinaryOp, Elementwise};
use crx580::backend::opencl::gemm::{BiasLayout, Gemm, GemmCall};
use crx580::backend::opencl::program::{Arg, Program, SOURCES};
use crx580::backend::opencl::tuning::GemmParams;
use crx580::backend::opencl::{Context, OpenClBackend};
use crx580::backend::{compile, Backend, CompiledGraph};
use crx580::ir::infer::infer_facts;
use crx580::ir::interp::Interpreter;
use crx580::ir::{Attr, Attributes, DataRef, Dim, Fact, Graph, Node, Op};
use crx580::ops::fused::{Activation, FusedConv, FusedLayerNorm};
use crx580::ops::{registry, BuildCtx};
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

/// The reference: the CPU's reference sgemm per batch, then alpha, bias, activation, residual (the
/// residual before the activation with `residual_first`).
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
                let r = residual.map_or(0.0, |r| r[batch * m * n + i * n + j]);
                if c.residual_first {
                    v += r;
                }
                v = c.act.reference(v as f64) as f32;
                if !c.residual_first {
                    v += r;
                }
                out[i * n + j] = v;
            }
        }
    }
    out
}

/// A device buffer of `data` in the context's storage (halves with float16 storage).
fn to_device(ctx: &Arc<Context>, data: &[f32]) -> crx580::backend::opencl::Buffer {
    if ctx.half_storage {
        ctx.upload(&data.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect::<Vec<u16>>()).unwrap()
    } else {
        ctx.upload(data).unwrap()
    }
}

fn from_device(buf: &crx580::backend::opencl::Buffer, len: usize) -> Vec<f32> {
    if buf.context().half_storage {
        buf.to_vec::<u16>(len).unwrap().into_iter().map(|h| half::f16::from_bits(h).to_f32()).collect()
    } else {
        buf.to_vec::<f32>(len).unwrap()
    }
}

/// Runs one call on the device (the gemm's context: f32 or float16 storage) and compares with the
/// reference. C starts as NaN, so an output element the kernel misses fails the comparison.
fn check_gemm(gemm: &Gemm, call: GemmCall, with_bias: Option<BiasLayout>, with_residual: bool, seed: u64) {
    let ctx = gemm.context().clone();
    // With float16 storage the reference gets the same rounded inputs; the output is rounded once.
    let rounded = |v: Vec<f32>| -> Vec<f32> {
        if ctx.half_storage {
            v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect()
        } else {
            v
        }
    };
    let a_len = call.m * call.k * if call.a_batched { call.batch } else { 1 };
    let b_len = call.k * call.n * if call.b_batched { call.batch } else { 1 };
    let a = rounded(random(a_len, seed));
    let b = rounded(random(b_len, seed + 1));
    let bias = with_bias.map(|l| (rounded(random(call.batch * call.m * call.n, seed + 2)), l));
    let residual = with_residual.then(|| rounded(random(call.batch * call.m * call.n, seed + 3)));
    let want = reference_gemm(&call, &a, &b, bias.as_ref().map(|(v, l)| (v.as_slice(), *l)), residual.as_deref());

    let (da, db) = (to_device(&ctx, &a), to_device(&ctx, &b));
    let dbias = bias.as_ref().map(|(v, l)| (to_device(&ctx, v), *l));
    let dres = residual.as_ref().map(|r| to_device(&ctx, r));
    let dc = to_device(&ctx, &vec![f32::NAN; call.batch * call.m * call.n]);
    gemm.run(&call, &da, &db, dbias.as_ref().map(|(buf, l)| (buf, *l)), dres.as_ref(), &dc).unwrap();
    let got = from_device(&dc, want.len());
    let tol = if ctx.half_storage { 4e-3 } else { 1e-4 };
    assert_close(&got, &want, tol, &format!("{:?} {call:?}", gemm.params));
}

/// The cases every GEMM tiling must pass: tile multiples and odd sizes, transposes, batches with
/// shared weights, each epilogue.
fn gemm_cases(gemm: &Gemm) {
    let mut seed = 1;
    // Around the register blocks too: fewer rows than a block with 16-31 columns (vectors moved
    // back inside C), a block's worth plus a few (blocks moved back over their neighbours).
    let shapes =
        [(64, 64, 64), (1, 1, 1), (7, 13, 5), (33, 65, 17), (100, 37, 129), (3, 200, 9), (5, 20, 7), (13, 35, 3)];
    for (m, n, k) in shapes {
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
    // The residual inside the activation (a fused conv's order): relu and clip as vectors,
    // sigmoid per lane, on the vector blocks, the row path (fewer rows than a block) and the
    // scalar path (fewer columns than a vector).
    let first = GemmCall { residual_first: true, ..epilogue };
    check_gemm(gemm, first, Some(column_bias), true, 260);
    check_gemm(
        gemm,
        GemmCall { act: Activation::Clip(-0.5, 0.25), ..first },
        Some(BiasLayout::full(35, 70)),
        true,
        270,
    );
    check_gemm(gemm, GemmCall { act: Activation::Sigmoid, batch: 2, ..first }, None, true, 280);
    // A taller than wide: blocks run along N first.
    check_gemm(gemm, GemmCall { m: 70, n: 35, ..first }, Some(BiasLayout::full(70, 35)), true, 285);
    for (m, n, k) in [(3, 200, 9), (13, 5, 7)] {
        let call = GemmCall { m, n, k, ..first };
        check_gemm(gemm, call, Some(BiasLayout::per_column()), true, 290);
    }
    check_gemm(gemm, GemmCall::new(0, 5, 3), None, false, 240);
    check_gemm(gemm, GemmCall::new(4, 5, 0), Some(BiasLayout::per_column()), false, 250);
}

#[test]
fn gemm_with_the_devices_tuned_parameters_matches_the_reference() {
    gemm_cases(&Gemm::new(&context()).unwrap());
}

#[test]
fn gemm_with_register_blocks_matches_the_reference() {
    // The register-block kernel (PoCL's) at sizes around its blocks: the tuner's candidates, an odd
    // block, and the table's entry with float16 storage (vload_half/vstore_half vectors).
    for (mwi, vw, nv) in [(8, 16, 2), (12, 16, 2), (4, 8, 4), (5, 4, 3)] {
        gemm_cases(&Gemm::with_params(&context(), GemmParams::Registers { mwi, vw, nv }).unwrap());
    }
    let ctx = context();
    let half = Context::with_storage(ctx.device.clone(), Some(cache_dir()), true).unwrap();
    gemm_cases(&Gemm::new(&half).unwrap());
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
    let device_options = crx580::backend::DeviceOptions { cache_dir: Some(cache_dir()), ..Default::default() };
    let options = crx580::SessionOptions { device: crx580::Device::OpenCl, device_options, ..Default::default() };
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
    assert!(
        text.contains(
            "  opencl: runs 26 nodes: Add, Div, Erf, LayerNormalization, MatMul, Mul, Softmax, Transpose; leaves"
        ),
        "{text}"
    );
}

/// A plan of `graph` for the device of `ctx`, the CPU taking the rest.
fn compile_on(ctx: &Arc<Context>, graph: &Graph) -> CompiledGraph {
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(OpenClBackend::on(ctx.clone())), Arc::new(CpuBackend)];
    compile(graph, &backends).unwrap()
}

/// A context of its own (its transfer counts are this test's alone), sharing the program cache.
fn own_context(half_storage: bool) -> Arc<Context> {
    Context::with_storage(context().device.clone(), Some(cache_dir()), half_storage).unwrap()
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden").join(name)
}

/// Runs golden model `name` twice on a plan for `ctx`; checks the outputs against onnxruntime's
/// and that a run uploads only the graph inputs and downloads only the outputs, when read.
/// Returns (device nodes, total nodes).
fn run_resident(ctx: &Arc<Context>, name: &str, rtol: f64, atol: f64) -> (usize, usize) {
    let case = golden(name);
    let model = crx580::Model::load(case.join("model.onnx")).unwrap();
    let plan = compile_on(ctx, model.graph());
    let placed = plan.kernel_names();
    let on_device = placed.iter().filter(|(_, b)| *b == "opencl").count();
    let set = common::data_sets(&case).remove(0);
    let (inputs, want) = common::read_data_set(&set).unwrap();
    let pool = ThreadPool::new(2);
    for run in 0..2 {
        // Fresh input tensors each run: a tensor read again keeps its device copy (no upload).
        let fresh: Vec<Tensor> = inputs
            .iter()
            .map(|t| Tensor::new(t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec()).unwrap())
            .collect();
        let refs: Vec<DataRef> = fresh.iter().map(DataRef::Tensor).collect();
        let before = ctx.transfers();
        let outs = plan.run(&pool, &refs, &[], None).unwrap();
        let ran = ctx.transfers();
        assert_eq!(ran.uploads - before.uploads, inputs.len() as u64, "{name} run {run}: uploads {ran:?}");
        assert_eq!(ran.downloads, before.downloads, "{name} run {run}: nothing comes back until it is read");
        for (k, (o, w)) in outs.iter().zip(&want).enumerate() {
            common::compare(o.as_tensor().unwrap(), w, rtol, atol).unwrap_or_else(|e| panic!("{name} output {k}: {e}"));
        }
        let read = ctx.transfers();
        assert_eq!(read.downloads - ran.downloads, want.len() as u64, "{name} run {run}: one download per output");
    }
    (on_device, placed.len())
}

#[test]
fn chains_of_device_nodes_transfer_only_inputs_and_outputs() {
    let ctx = own_context(false);
    // mlp: MatMul, Add, Relu, Softmax, all on the device. cnn_bn: Conv, BatchNorm, Relu, MaxPool,
    // GlobalAveragePool and Gemm on the device around a Flatten on the CPU (a view: no transfer).
    let (mlp_device, mlp_total) = run_resident(&ctx, "mlp", 1e-3, 1e-4);
    assert_eq!(mlp_device, mlp_total, "every mlp node runs on the device");
    let (cnn_device, cnn_total) = run_resident(&ctx, "cnn_bn", 1e-3, 1e-4);
    assert!(cnn_device + 1 >= cnn_total, "only Flatten stays on the CPU: {cnn_device} of {cnn_total}");
    let t = ctx.transfers();
    eprintln!("transfers after 2 runs of mlp and cnn_bn: {t:?}");
}

#[test]
fn half_storage_halves_device_memory_and_stays_close_to_onnxruntime() {
    let ctx = own_context(true);
    let (device, _) = run_resident(&ctx, "mlp", 2e-2, 2e-3);
    assert!(device > 0);
    let t = ctx.transfers();
    assert!(t.uploads > 0 && t.upload_bytes > 0);
    // Weights and inputs cross as halves: 2 bytes per element. The mlp's tensors are small, so
    // compare with the f32 context's byte count for the same work.
    let f32_ctx = own_context(false);
    run_resident(&f32_ctx, "mlp", 1e-3, 1e-4);
    let t32 = f32_ctx.transfers();
    assert_eq!(t.upload_bytes * 2, t32.upload_bytes, "half storage uploads half the bytes");
    assert_eq!(t.download_bytes * 2, t32.download_bytes);
    run_resident(&ctx, "cnn_bn", 2e-2, 2e-2);
}

/// `crx580 bench --json` says how many nodes the device runs; `--device auto` does not pick a
/// CPU OpenCL platform such as PoCL (no GPU here), and `--device opencl` does.
#[test]
fn bench_counts_device_nodes_and_auto_prefers_the_native_cpu_to_pocl() {
    let ctx = context();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/digits/digits.onnx");
    let bench = |device: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crx580"))
            .args(["bench", model.to_str().unwrap(), "--runs", "2", "--warmup", "0", "--json", "--device", device])
            .args(["--cache-dir", cache_dir().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let number = |key: &str| -> usize {
            let at =
                text.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} missing in {text}")) + key.len() + 3;
            text[at..].split([',', '}']).next().unwrap().parse().unwrap()
        };
        (number("device_nodes"), number("total_nodes"))
    };
    let (on_device, total) = bench("opencl");
    assert!(total >= 5 && on_device + 1 >= total, "digits: {on_device} of {total} nodes on the device");
    let (auto_device, auto_total) = bench("auto");
    if ctx.device.is_gpu {
        assert_eq!(auto_device, on_device, "auto picks the GPU");
    } else {
        assert_eq!((auto_device, auto_total), (0, total), "auto keeps the native CPU over {}", ctx.device.name);
    }
}

/// The zoo's convolutional families, a detector and a transformer (tests/models/zoo, made by
/// tests/run.sh) with their Conv, GEMM, pooling, norm, resize, data movement and elementwise nodes
/// on the device, against onnxruntime with the zoo's tolerance. PoCL runs them in seconds; the
/// program cache keeps compiles out of reruns.
#[test]
fn zoo_conv_families_on_opencl_match_onnxruntime() {
    context();
    let dir = std::env::var_os("CRX580_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/model-zoo"));
    let device_options = crx580::backend::DeviceOptions { cache_dir: Some(cache_dir()), ..Default::default() };
    let options = crx580::SessionOptions { device: crx580::Device::OpenCl, device_options, ..Default::default() };
    let mut failures = vec![];
    // yolov8n adds Resize, Split and Slice on the device; minilm_l6 Gather and LayerNormalization.
    for name in ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "crnn_mv3", "yolov8n", "minilm_l6"] {
        let case = dir.join(name);
        assert!(
            case.join("model.onnx").exists(),
            "zoo model {name} missing from {}: run python tests/models/zoo/gen_zoo.py --out {0} (tests/run.sh does)",
            dir.display()
        );
        let session = crx580::Session::new(crx580::Model::load(case.join("model.onnx")).unwrap(), &options).unwrap();
        let kernels = session.kernels();
        let on_device = kernels.iter().filter(|k| k.2 == "opencl").count();
        let heavy_on_cpu: Vec<&str> = kernels
            .iter()
            .filter(|k| {
                k.2 == "cpu"
                    && [
                        "Conv",
                        "FusedConv",
                        "MaxPool",
                        "AveragePool",
                        "GlobalAveragePool",
                        "MatMul",
                        "Gemm",
                        "BatchNormalization",
                        "LayerNormalization",
                        "Softmax",
                        "Resize",
                    ]
                    .contains(&k.0.as_str())
            })
            .map(|k| k.0.as_str())
            .collect();
        assert!(heavy_on_cpu.is_empty(), "{name}: heavy nodes left on the CPU: {heavy_on_cpu:?}");
        let started = std::time::Instant::now();
        for set in common::data_sets(&case) {
            let (inputs, want) = common::read_data_set(&set).unwrap();
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let got = session.run_positional(&refs).unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                // yolov8n's [1, 4 + classes, anchors]: pixel coordinates beside scores (tests/zoo.rs).
                let axis = (name == "yolov8n").then_some(1);
                if let Err(e) = common::compare_zoo(g, w, axis) {
                    failures.push(format!("{name} output {k}: {e}"));
                }
            }
        }
        eprintln!(
            "zoo {name}: {on_device} of {} nodes on the device, {:.2}s",
            kernels.len(),
            started.elapsed().as_secs_f64()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `CRX580_OPENCL_CHECK=1` compares every device node with the reference kernel: a correct
/// kernel passes, and a sabotaged one (Add computing a - b, through `CRX580_KERNELS_DIR`) fails
/// the run naming the node.
#[test]
fn the_check_option_names_the_first_node_that_differs() {
    context();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let case = root.join("tests/models/golden/attention_block");
    let bad = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sabotaged-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&bad).unwrap();
    for (file, text) in SOURCES {
        let text = if *file == "elementwise.cl" {
            text.replace("case 0: return a + b;", "case 0: return a - b;")
        } else {
            text.to_string()
        };
        std::fs::write(bad.join(file), text).unwrap();
    }
    let run = |kernels: Option<&PathBuf>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_crx580"));
        cmd.arg("run").arg(case.join("model.onnx")).arg(case.join("test_data_set_0/input_0.pb"));
        cmd.args(["--device", "opencl", "--cache-dir", cache_dir().to_str().unwrap()]).env("CRX580_OPENCL_CHECK", "1");
        if let Some(k) = kernels {
            cmd.env("CRX580_KERNELS_DIR", k);
        }
        cmd.output().unwrap()
    };
    let good = run(None);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    let broken = run(Some(&bad));
    let text = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success() && text.contains("CRX580_OPENCL_CHECK: output 0 of node (Add) differs"), "{text}");
    std::fs::remove_dir_all(&bad).unwrap();
}

#[test]
fn device_memory_is_counted_while_a_session_holds_weights_on_the_device() {
    // The server's crx580_device_memory_bytes gauge reads this counter.
    context();
    let model = crx580::Model::load(golden("mlp").join("model.onnx")).unwrap();
    let device_options = crx580::backend::DeviceOptions { cache_dir: Some(cache_dir()), ..Default::default() };
    let options = crx580::SessionOptions { device: crx580::Device::OpenCl, device_options, ..Default::default() };
    let session = crx580::Session::new(model, &options).unwrap();
    // mlp's weights (16x32 + 32x24 + 24x10 floats and biases) live on the device now.
    let held = crx580::backend::device_memory_bytes().expect("a build with OpenCL counts device memory");
    assert!(held >= (16 * 32 + 32 * 24 + 24 * 10) * 4, "{held} bytes of device memory counted");
    drop(session);
}

/// Device buffers are pooled per context: a model run again on the same shapes creates no
/// buffers, and the idle ones stay bounded when every allocation has a new size.
#[test]
fn a_second_run_creates_no_device_buffers_and_the_pool_stays_bounded() {
    let ctx = own_context(false);
    for name in ["mlp", "cnn_bn"] {
        let model = crx580::Model::load(golden(name).join("model.onnx")).unwrap();
        let plan = compile_on(&ctx, model.graph());
        let (inputs, want) = common::read_data_set(&common::data_sets(&golden(name)).remove(0)).unwrap();
        let pool = ThreadPool::new(2);
        let mut created = vec![];
        for _ in 0..3 {
            let fresh: Vec<Tensor> = inputs
                .iter()
                .map(|t| Tensor::new(t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec()).unwrap())
                .collect();
            let refs: Vec<DataRef> = fresh.iter().map(DataRef::Tensor).collect();
            let before = ctx.buffers_created();
            let outs = plan.run(&pool, &refs, &[], None).unwrap();
            for (o, w) in outs.iter().zip(&want) {
                common::compare(o.as_tensor().unwrap(), w, 1e-3, 1e-4).unwrap();
            }
            drop(outs);
            created.push(ctx.buffers_created() - before);
        }
        assert!(created[0] > 0, "{name}: the first run allocates");
        assert_eq!(&created[1..], [0, 0], "{name}: buffers created per run {created:?}");
        assert!(ctx.pooled_bytes() > 0, "{name}: the run's buffers wait in the pool");
    }
    // Sizes never seen again: the idle bytes stay under twice the peak in use plus the slack.
    let ctx = own_context(false);
    let mb = 1 << 20;
    for i in 0..40 {
        drop(ctx.alloc::<u8>(mb + i * 4096).unwrap());
    }
    assert_eq!(ctx.buffers_created(), 40);
    let bound = 2 * (mb + 39 * 4096) + crx580::backend::opencl::context::POOL_SLACK;
    assert!(ctx.pooled_bytes() > 0 && ctx.pooled_bytes() <= bound, "{} idle bytes", ctx.pooled_bytes());
    drop(ctx.alloc::<u8>(mb + 39 * 4096).unwrap());
    assert_eq!(ctx.buffers_created(), 40, "a size in the pool is reused");
}

/// The ONNX node tests the CPU passes (tests/conformance/node.txt) whose inputs and outputs are
/// all f32 tensors, with every node the device claims placed on it (one backend for all cases, so
/// each program loads once), against the expected outputs with the conformance runner's tolerance.
#[test]
fn node_conformance_cases_with_f32_inputs_and_outputs_pass_on_opencl() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir =
        std::env::var_os("CRX580_NODE_TESTS").map(PathBuf::from).unwrap_or_else(|| root.join("target/onnx-node-tests"));
    assert!(
        dir.join("test_abs").exists(),
        "the ONNX node tests are missing from {}: run python tests/conformance/gen_node_tests.py --out {0} (tests/run.sh does)",
        dir.display()
    );
    let listed: Vec<String> = std::fs::read_to_string(root.join("tests/conformance/node.txt"))
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(OpenClBackend::on(own_context(false))), Arc::new(CpuBackend)];
    let f32_tensors = |io: &[crx580::IoInfo]| {
        io.iter().all(|i| matches!(i.kind, crx580::ir::ValueKind::Tensor) && i.dtype == Some(crx580::DType::F32))
    };
    let started = std::time::Instant::now();
    let run = |name: &String| -> Option<Result<usize, String>> {
        let case = dir.join(name);
        let model = crx580::Model::load(case.join("model.onnx")).ok()?;
        if !f32_tensors(&model.inputs()) || !f32_tensors(&model.outputs()) {
            return None;
        }
        let plan = match compile(model.graph(), &backends) {
            Ok(p) => p,
            Err(e) => return Some(Err(format!("{name}: compile: {e}"))),
        };
        let on_device = plan.kernel_names().iter().filter(|(_, b)| *b == "opencl").count();
        let pool = ThreadPool::new(1);
        for set in common::data_sets(&case) {
            let (inputs, want) = match common::read_data_set(&set) {
                Ok(d) => d,
                Err(e) => return Some(Err(format!("{name}: {e}"))),
            };
            let refs: Vec<DataRef> = inputs.iter().map(DataRef::Tensor).collect();
            let got = match plan.run(&pool, &refs, &[], None) {
                Ok(g) => g,
                Err(e) => return Some(Err(format!("{name}: run: {e}"))),
            };
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                if let Err(e) = g.as_tensor().map_err(|e| e.to_string()).and_then(|g| common::compare(g, w, 1e-3, 1e-5))
                {
                    return Some(Err(format!("{name} output {k} ({on_device} device nodes): {e}")));
                }
            }
        }
        Some(Ok(on_device))
    };
    let results: Vec<(String, Option<Result<usize, String>>)> = std::thread::scope(|s| {
        let halves: Vec<_> = listed
            .chunks(listed.len().div_ceil(2).max(1))
            .map(|part| s.spawn(|| part.iter().map(|n| (n.clone(), run(n))).collect::<Vec<_>>()))
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let ran: Vec<&Result<usize, String>> = results.iter().filter_map(|r| r.1.as_ref()).collect();
    let with_device = ran.iter().filter(|r| matches!(r, Ok(n) if *n > 0)).count();
    let failures: Vec<&String> = ran.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "node tests on OpenCL: {} f32 cases of {} listed, {with_device} with device nodes, {} failed, {:.1}s",
        ran.len(),
        listed.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(ran.len() >= 200 && with_device >= 100, "too few cases ran: {} ({with_device} on the device)", ran.len());
    assert!(
        failures.is_empty(),
        "{} cases fail on OpenCL:\n{}",
        failures.len(),
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );
}
