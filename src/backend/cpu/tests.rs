//! Every fast CPU kernel against the reference kernels (the oracle), one table of single-node
//! graphs, run through the whole compile path (fusion, placement, prepare) with 1 and 3 threads.

use crate::backend::cpu::pool::ThreadPool;
use crate::backend::{backends_for, compile, Device};
use crate::ir::infer::infer_facts;
use crate::ir::interp::Interpreter;
use crate::ir::{Attr, Attributes, DataRef, Dim, Fact, Graph, Node, Op, Tensor};
use crate::ops::fused::{Activation, FusedConv, FusedMatMul};
use crate::ops::{registry, BuildCtx};
use std::sync::Arc;

pub(super) fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub(super) fn tensor(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::new(shape.to_vec(), values(seed, shape.iter().product())).unwrap()
}

pub(super) fn build(op_type: &str, attrs: Vec<(&str, Attr)>, num_inputs: usize) -> Arc<dyn Op> {
    build_at(op_type, 18, attrs, num_inputs)
}

pub(super) fn build_at(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, num_inputs: usize) -> Arc<dyn Op> {
    build_outputs(op_type, opset, attrs, num_inputs, 1)
}

fn build_outputs(
    op_type: &str,
    opset: i64,
    attrs: Vec<(&str, Attr)>,
    num_inputs: usize,
    num_outputs: usize,
) -> Arc<dyn Op> {
    let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
    let ctx = BuildCtx { op_type, domain: "", opset, attrs: &attrs, num_inputs, num_outputs };
    Arc::from(registry().get("", op_type).unwrap()(&ctx).unwrap())
}

/// An input of the node: fed at run time, a constant of the graph, or omitted.
pub(super) enum In {
    Fed(Tensor),
    Const(Tensor),
    Absent,
}

/// Runs `op` on `inputs` compiled (the fast kernels) and with the reference interpreter, and
/// checks they agree; returns the kernel name that ran.
pub(super) fn check(name: &str, op: Arc<dyn Op>, inputs: Vec<In>) -> &'static str {
    check_outputs(name, op, inputs, 1)
}

/// [`check`] for a node with `outputs` outputs: every one must agree, f32 within the bound and
/// any other type exactly.
pub(super) fn check_outputs(name: &str, op: Arc<dyn Op>, inputs: Vec<In>, outputs: usize) -> &'static str {
    let mut g = Graph::default();
    let mut ids = vec![];
    let mut fed = vec![];
    for (i, inp) in inputs.iter().enumerate() {
        let id = match inp {
            In::Fed(t) => {
                let dims = t.shape().iter().map(|&d| Dim::Known(d)).collect();
                let id = g.add_value(format!("x{i}"), Fact::new(t.dtype(), dims));
                g.inputs.push(id);
                fed.push(t);
                id
            }
            In::Const(t) => g.add_value(format!("c{i}"), Fact::constant(Arc::new(t.clone()))),
            In::Absent => {
                ids.push(None);
                continue;
            }
        };
        ids.push(Some(id));
    }
    let ys: Vec<usize> = (0..outputs).map(|i| g.add_value(format!("y{i}"), Fact::unknown())).collect();
    g.outputs = ys.clone();
    g.nodes.push(Node {
        name: name.into(),
        domain: String::new(),
        op_type: name.into(),
        attrs: Attributes::default(),
        op,
        inputs: ids,
        outputs: ys,
    });
    infer_facts(&mut g).unwrap();
    let refs: Vec<DataRef> = fed.iter().map(|&t| DataRef::Tensor(t)).collect();
    let wants = Interpreter.run(&g, &refs, &[]).unwrap();
    let compiled = compile(&g, &backends_for(Device::Cpu).unwrap()).unwrap();
    let kernel = compiled.kernel_names()[0].0;
    for threads in [1, 3] {
        let pool = ThreadPool::new(threads);
        let gots = compiled.run(&pool, &refs, &[], None).unwrap();
        assert_eq!(gots.len(), wants.len(), "{name}");
        for (got, want) in gots.into_iter().zip(&wants) {
            let (got, want) = (got.into_tensor().unwrap(), want.clone().into_tensor().unwrap());
            assert_eq!((got.shape(), got.dtype()), (want.shape(), want.dtype()), "{name}");
            if want.dtype() != crate::ir::DType::F32 {
                let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
                assert!(g == w, "{name} ({kernel}) with {threads} threads: {g:?} vs {w:?}");
                continue;
            }
            let (g, w) = (got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
            let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
            // Winograd's transforms multiply by up to 8 and divide by 24 on the way, so its rounding
            // error is 10-20x the direct sum's: 1.4e-4 at worst over 200 channels and 26,000
            // outputs (still far inside the conformance and onnxruntime comparisons' 1e-3
            // relative bound).
            let bound = if kernel == "conv-winograd" { 2e-4 } else { 1e-5 };
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= bound * scale + bound * b.abs();
                assert!(same, "{name} ({kernel}) element {i}: {a} vs {b}");
            }
        }
    }
    kernel
}

/// A node of a hand-built test graph, named after its op type.
pub(super) fn graph_node(op: Arc<dyn Op>, op_type: &str, inputs: Vec<usize>, outputs: Vec<usize>) -> Node {
    Node {
        name: op_type.into(),
        domain: String::new(),
        op_type: op_type.into(),
        attrs: Attributes::default(),
        op,
        inputs: inputs.into_iter().map(Some).collect(),
        outputs,
    }
}

/// A constant of a hand-built test graph.
pub(super) fn graph_const(g: &mut Graph, name: &str, t: Tensor) -> usize {
    g.add_value(name, Fact::constant(Arc::new(t)))
}

/// Infers `g`'s facts, compiles it (fusions included) and checks its first output against the
/// interpreter on the unfused graph at 1 and 3 threads, within `tol` relative (0: exactly).
/// Returns the kernels that ran and the interpreter's output.
pub(super) fn compile_and_compare(g: &mut Graph, inputs: &[&Tensor], tol: f32) -> (Vec<&'static str>, Tensor) {
    infer_facts(g).unwrap();
    let refs: Vec<DataRef> = inputs.iter().map(|&t| DataRef::Tensor(t)).collect();
    let want = Interpreter.run(g, &refs, &[]).unwrap().remove(0).into_tensor().unwrap();
    let compiled = compile(g, &backends_for(Device::Cpu).unwrap()).unwrap();
    for threads in [1, 3] {
        let got = compiled.run(&ThreadPool::new(threads), &refs, &[], None).unwrap().remove(0).into_tensor().unwrap();
        assert_eq!(got.shape(), want.shape());
        for (a, b) in got.as_slice::<f32>().unwrap().iter().zip(want.as_slice::<f32>().unwrap()) {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b} at {threads} threads");
        }
    }
    (compiled.kernel_names().into_iter().map(|(k, _)| k).collect(), want)
}

pub(super) fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// "conv-direct" where the direct kernel wins on this machine for a conv of `c` input channels and
/// a `window` over an output plane of `oh x ow` (strided or not), else `other`.
fn direct_or(
    other: &'static str,
    c: usize,
    window: (usize, usize),
    out: (usize, usize),
    strided: bool,
) -> &'static str {
    if super::conv_direct::wins(c, window, Some((out.0 * out.1, out.1)), strided) {
        "conv-direct"
    } else {
        other
    }
}

#[test]
fn convolutions_match_the_reference() {
    type Case = (&'static str, [usize; 4], [usize; 4], Vec<(&'static str, Attr)>, bool, &'static str);
    // Plain 1x1 convolutions over few channels run on their own kernel where it exists.
    let pointwise = if super::conv_pointwise::available(8) { "conv-pointwise" } else { "conv-gemm" };
    let direct = if super::conv_direct::available() { "conv-direct" } else { "conv-gemm" };
    // Stems (one group, 1..=4 input channels, a window of 3x3 or more, no residual): the stem
    // kernel on AVX-512; elsewhere the direct kernel where it wins, else the GEMM (worked out per
    // case below, from the output's shape).
    const NO_STEM: &str = "no stem kernel";
    let stem = if super::isa::isa() == super::isa::Isa::Avx512 { "conv-stem" } else { NO_STEM };
    let cases: Vec<Case> = vec![
        ("pointwise", [1, 8, 5, 7], [16, 8, 1, 1], vec![], true, pointwise),
        ("3x3 pad 1", [2, 3, 9, 11], [5, 3, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))], true, stem),
        (
            "3x3 stride 2 dilation 2",
            [1, 4, 13, 12],
            [7, 4, 3, 3],
            vec![("strides", ints(&[2, 2])), ("dilations", ints(&[2, 2])), ("pads", ints(&[2, 1, 0, 2]))],
            false,
            stem,
        ),
        ("1x1 stride 2", [1, 6, 9, 9], [4, 6, 1, 1], vec![("strides", ints(&[2, 2]))], true, "conv-gemm"),
        (
            "grouped",
            [1, 4, 6, 6],
            [6, 2, 3, 3],
            vec![("group", Attr::Int(2)), ("pads", ints(&[1, 1, 1, 1]))],
            true,
            "conv-gemm",
        ),
        (
            "depthwise stride 2",
            [2, 6, 7, 8],
            [6, 1, 3, 3],
            vec![("group", Attr::Int(6)), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            true,
            "conv-depthwise",
        ),
        (
            "depthwise 5x5",
            [1, 3, 10, 9],
            [3, 1, 5, 5],
            vec![("group", Attr::Int(3)), ("pads", ints(&[2, 2, 2, 2]))],
            false,
            "conv-depthwise",
        ),
        (
            "same upper",
            [1, 3, 8, 5],
            [2, 3, 4, 2],
            vec![("auto_pad", Attr::String("SAME_UPPER".into())), ("strides", ints(&[2, 1]))],
            true,
            direct_or("conv-gemm", 3, (4, 2), (4, 5), true),
        ),
        (
            "wide k",
            [1, 40, 6, 6],
            [9, 40, 3, 3],
            vec![("pads", ints(&[1, 1, 1, 1]))],
            true,
            direct_or("conv-gemm", 40, (3, 3), (6, 6), false),
        ),
        // Past the GEMM's blocking: k in two slices, an output plane over several column tiles and
        // epilogue groups with a ragged end, channels not a multiple of the micro-kernel's rows.
        ("large plane", [1, 24, 23, 37], [12, 24, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))], true, "conv-gemm"),
        // 3x3 stride 1 with enough channels and tiles, on planes past the direct kernel's 28x28:
        // Winograd. Planes not a multiple of the 4x4 tile, two images, asymmetric padding, k
        // past one GEMM slice, several tile blocks.
        ("winograd", [2, 16, 29, 30], [24, 16, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))], true, "conv-winograd"),
        (
            "winograd asymmetric pads",
            [1, 20, 33, 31],
            [17, 20, 3, 3],
            vec![("pads", ints(&[0, 2, 1, 0]))],
            false,
            "conv-winograd",
        ),
        (
            "winograd deep",
            [1, 200, 28, 29],
            [32, 200, 3, 3],
            vec![("pads", ints(&[1, 1, 1, 1]))],
            true,
            "conv-winograd",
        ),
        ("winograd blocks", [1, 18, 50, 47], [20, 18, 3, 3], vec![], true, "conv-winograd"),
        (
            "large plane stride 2",
            [1, 5, 40, 41],
            [9, 5, 3, 3],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 0, 1, 1]))],
            true,
            direct_or("conv-gemm", 5, (3, 3), (20, 20), true),
        ),
        // Output rows so narrow that a panel spans more of them than the packing's table holds.
        ("narrow output", [1, 3, 12, 3], [4, 3, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))], true, stem),
        // A kernel wider than the packing's table, and a stride of 3.
        ("1x9 kernel", [1, 2, 5, 12], [3, 2, 1, 9], vec![("pads", ints(&[0, 4, 0, 4]))], false, "conv-gemm"),
        ("stride 3", [1, 3, 11, 14], [5, 3, 3, 3], vec![("strides", ints(&[3, 3]))], true, stem),
        // Stems: ResNet's 7x7 stride 2 on an odd plane with channels past one tile; one input
        // channel, dilated, stride 3 across; rows of 5 vectors (groups of 3 + 2).
        (
            "stem 7x7 stride 2",
            [1, 3, 37, 45],
            [13, 3, 7, 7],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[3, 3, 3, 3]))],
            true,
            stem,
        ),
        (
            "stem one channel dilated",
            [2, 1, 20, 70],
            [8, 1, 3, 5],
            vec![("strides", ints(&[1, 3])), ("dilations", ints(&[2, 1])), ("pads", ints(&[1, 0, 2, 4]))],
            false,
            stem,
        ),
        (
            "stem stride 2 even pad odd width",
            [1, 3, 30, 31],
            [9, 3, 4, 4],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[2, 2, 1, 1]))],
            true,
            stem,
        ),
        (
            "stem wide row",
            [1, 2, 5, 150],
            [17, 2, 3, 3],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            true,
            stem,
        ),
        // Wide strided convolutions over more channels (YOLO's downsampling convs): the stem
        // kernel too; odd channel counts, two images, asymmetric padding, a ragged last vector
        // (with a residual, the direct kernel on planes up to its 28x28, else the GEMM).
        (
            "wide stride 2",
            [2, 17, 23, 90],
            [37, 17, 3, 3],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            true,
            stem,
        ),
        ("wide stride 1", [1, 16, 7, 53], [13, 16, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))], true, stem),
        (
            "wide stride 2 deep",
            [1, 64, 11, 97],
            [11, 64, 3, 3],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 0, 0, 1]))],
            false,
            stem,
        ),
        // More output channels than one tile's rows.
        ("many channels", [1, 8, 5, 7], [400, 8, 1, 1], vec![], true, pointwise),
        // Small planes over many channels and taps: the direct kernel (conv_direct.rs), with
        // channels no multiple of its 32-lane blocks and rows longer than its 14-pixel tiles.
        ("direct 3x3", [2, 17, 9, 11], [37, 17, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))], true, direct),
        // Up to 28x28: rows of two full register tiles and a ragged one (29 = 14 + 14 + 1);
        // Winograd where the direct kernel is not.
        (
            "direct 3x3 wide rows",
            [1, 16, 27, 29],
            [40, 16, 3, 3],
            vec![("pads", ints(&[1, 1, 1, 1]))],
            true,
            direct_or("conv-winograd", 16, (3, 3), (27, 29), false),
        ),
        (
            "direct stride 2 dilation 2",
            [1, 16, 24, 31],
            [40, 16, 3, 3],
            vec![("strides", ints(&[2, 2])), ("dilations", ints(&[2, 2])), ("pads", ints(&[1, 2, 0, 1]))],
            false,
            direct,
        ),
        (
            "direct 7x7",
            [1, 5, 20, 20],
            [33, 5, 7, 7],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[3, 3, 3, 3]))],
            true,
            direct,
        ),
        // Strided 1x1s run on their subsampled planes (more planes than one task gathers); with
        // padding read, through the implicit im2col. Last, so the cases above keep their seeds.
        ("1x1 stride 3x2", [2, 37, 10, 13], [9, 37, 1, 1], vec![("strides", ints(&[3, 2]))], true, "conv-gemm"),
        (
            "1x1 stride 2 padded",
            [1, 5, 8, 8],
            [4, 5, 1, 1],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            true,
            "conv-gemm",
        ),
        // Rows of 7 go two to a register tile when a task has whole planes (three channel
        // blocks at 1 thread; single rows at 3), the 7th row alone; strided, so the second row
        // reads two padded rows further on.
        (
            "direct rows in pairs",
            [1, 16, 14, 13],
            [70, 16, 3, 3],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            true,
            direct,
        ),
        // Strides 1 and 2 are constants of their tile kernels; others are read at run time.
        (
            "direct stride 3",
            [1, 16, 23, 23],
            [40, 16, 3, 3],
            vec![("strides", ints(&[3, 3])), ("pads", ints(&[1, 1, 1, 1]))],
            false,
            direct,
        ),
    ];
    for (i, (name, xs, ws, attrs, bias, kernel)) in cases.into_iter().enumerate() {
        let seed = i as u64 * 10;
        let mut inputs = vec![In::Fed(tensor(seed, &xs)), In::Const(tensor(seed + 1, &ws))];
        if bias {
            inputs.push(In::Const(tensor(seed + 2, &[ws[0]])));
        }
        let n = inputs.len();
        let strided =
            attrs.iter().any(|(a, v)| *a == "strides" && matches!(v, Attr::Ints(s) if s.iter().any(|&s| s > 1)));
        let conv = build("Conv", attrs, n);
        let out = compile_shape(&conv, &xs, &ws);
        let window = (ws[2], ws[3]);
        let kernel =
            if kernel == NO_STEM { direct_or("conv-gemm", ws[1], window, (out[2], out[3]), strided) } else { kernel };
        assert_eq!(check(name, conv.clone(), inputs), kernel, "{name}");
        for act in [Activation::Relu, Activation::Silu, Activation::HardSwish, Activation::Clip(-0.2, 0.3)] {
            let mut inputs = vec![In::Fed(tensor(seed, &xs)), In::Const(tensor(seed + 1, &ws))];
            if bias {
                inputs.push(In::Const(tensor(seed + 2, &[ws[0]])));
            }
            check(name, Arc::new(FusedConv { conv: conv.clone(), residual: false, act }), inputs);
        }
        // With a skip connection: input 3 has the output's shape (bias slot empty or not).
        for act in [Activation::None, Activation::Relu] {
            let mut inputs = vec![In::Fed(tensor(seed, &xs)), In::Const(tensor(seed + 1, &ws))];
            inputs.push(if bias { In::Const(tensor(seed + 2, &[ws[0]])) } else { In::Absent });
            inputs.push(In::Fed(tensor(seed + 3, &out)));
            let fused = Arc::new(FusedConv { conv: conv.clone(), residual: true, act });
            // The stem kernel adds no residual: the direct kernel's where it wins, else the GEMM's.
            let direct = direct_or("", ws[1], window, (out[2], out[3]), strided) == "conv-direct";
            let kernel = match kernel {
                "conv-stem" if direct => "conv-direct",
                "conv-stem" => "conv-gemm",
                other => other,
            };
            assert_eq!(check(name, fused, inputs), kernel, "{name} with a residual");
        }
    }
}

/// 1-D convolutions (audio front ends, VAD models) run on the 2-D kernels over a unit height.
#[test]
fn one_d_convolutions_match_the_reference() {
    type Case = (&'static str, [usize; 3], [usize; 3], Vec<(&'static str, Attr)>, &'static str);
    let pointwise = if super::conv_pointwise::available(5) { "conv-pointwise" } else { "conv-gemm" };
    let cases: Vec<Case> = vec![
        ("k3 stride 2", [1, 4, 33], [6, 4, 3], vec![("strides", ints(&[2])), ("pads", ints(&[1, 2]))], "conv-gemm"),
        ("pointwise", [2, 5, 17], [3, 5, 1], vec![], pointwise),
        ("dilated", [1, 3, 20], [4, 3, 3], vec![("dilations", ints(&[3]))], "conv-gemm"),
        ("depthwise", [1, 6, 25], [6, 1, 5], vec![("group", Attr::Int(6)), ("pads", ints(&[2, 2]))], "conv-depthwise"),
        // Outputs of a handful of pixels take the transposed product (conv_narrow.rs).
        ("stft frames", [2, 1, 600], [20, 1, 256], vec![("strides", ints(&[128]))], "conv-gemm"),
        ("few frames", [1, 9, 6], [13, 9, 3], vec![("pads", ints(&[0, 1]))], "conv-gemm"),
        (
            "few frames grouped",
            [1, 8, 5],
            [6, 4, 3],
            vec![("group", Attr::Int(2)), ("pads", ints(&[1, 1]))],
            "conv-gemm",
        ),
    ];
    // On x86 those three cases (3, 5 and 5 output pixels) do take the transposed product.
    #[cfg(target_arch = "x86_64")]
    if matches!(
        crate::backend::cpu::isa::isa(),
        crate::backend::cpu::isa::Isa::Avx512 | crate::backend::cpu::isa::Isa::Avx2
    ) {
        let micro = crate::backend::cpu::gemm::micro_for(crate::backend::cpu::isa::isa());
        assert!([3, 5].iter().all(|&p| super::conv_narrow::prefers_transposed(&micro, p)));
    }
    for (i, (name, xs, ws, attrs, kernel)) in cases.into_iter().enumerate() {
        let seed = 500 + i as u64 * 10;
        let inputs = || {
            vec![In::Fed(tensor(seed, &xs)), In::Const(tensor(seed + 1, &ws)), In::Const(tensor(seed + 2, &[ws[0]]))]
        };
        let conv = build("Conv", attrs, 3);
        assert_eq!(check(name, conv.clone(), inputs()), kernel, "{name}");
        let fused = Arc::new(FusedConv { conv, residual: false, act: Activation::Relu });
        assert_eq!(check(name, fused, inputs()), kernel, "{name} + relu");
    }
}

/// The output shape of `conv` on an input of shape `xs` with weights of shape `ws`.
pub(super) fn compile_shape(conv: &Arc<dyn Op>, xs: &[usize], ws: &[usize]) -> Vec<usize> {
    let fact = |s: &[usize]| Fact::new(crate::ir::DType::F32, s.iter().map(|&d| Dim::Known(d)).collect());
    let facts = conv.infer(&[Some(&fact(xs)), Some(&fact(ws))]).unwrap();
    facts[0].concrete_shape().unwrap()
}

/// A grouped (depthwise) FusedConv case checked against the reference: input `xs`, one filter
/// per channel `ws`, the Conv's `attrs`, tensors from `seed` on, with a constant bias and a fed
/// residual when asked. Returns the kernel that ran.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_depthwise_case(
    name: &str,
    xs: &[usize],
    ws: &[usize],
    attrs: Vec<(&str, Attr)>,
    seed: u64,
    bias: bool,
    residual: bool,
    act: Activation,
) -> &'static str {
    let channels = ws[0];
    let conv = build("Conv", attrs, if bias { 3 } else { 2 });
    let mut inputs = vec![In::Fed(tensor(seed, xs)), In::Const(tensor(seed + 1, ws))];
    if bias || residual {
        inputs.push(if bias { In::Const(tensor(seed + 2, &[channels])) } else { In::Absent });
    }
    if residual {
        inputs.push(In::Fed(tensor(seed + 3, &compile_shape(&conv, xs, ws))));
    }
    check(name, Arc::new(FusedConv { conv, residual, act }), inputs)
}

#[test]
fn matrix_products_match_the_reference() {
    let mm = || build("MatMul", vec![], 2);
    assert_eq!(
        check("matmul const", mm(), vec![In::Fed(tensor(1, &[2, 3, 4, 5])), In::Const(tensor(2, &[5, 6]))]),
        "matmul-packed"
    );
    assert_eq!(
        check("matmul vector", mm(), vec![In::Fed(tensor(3, &[5])), In::Const(tensor(4, &[5, 6]))]),
        "matmul-packed"
    );
    assert_eq!(
        check("matmul dynamic", mm(), vec![In::Fed(tensor(5, &[3, 40])), In::Fed(tensor(6, &[40, 70]))]),
        "matmul"
    );
    check("matmul broadcast", mm(), vec![In::Fed(tensor(7, &[2, 1, 4, 5])), In::Fed(tensor(8, &[3, 5, 6]))]);
    check("matmul 1-d b", mm(), vec![In::Fed(tensor(9, &[3, 4, 5])), In::Fed(tensor(10, &[5]))]);
    for act in [Activation::None, Activation::Gelu, Activation::Relu] {
        let fused = Arc::new(FusedMatMul { act });
        let inputs =
            vec![In::Fed(tensor(11, &[2, 7, 33])), In::Const(tensor(12, &[33, 20])), In::Const(tensor(13, &[20]))];
        assert_eq!(check("fused matmul", fused, inputs), "matmul-packed");
    }
    for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let gemm =
            build("Gemm", vec![("transA", Attr::Int(ta)), ("transB", Attr::Int(tb)), ("beta", Attr::Float(0.5))], 3);
        let a = if ta == 1 { [9, 4] } else { [4, 9] };
        let b = if tb == 1 { [11, 9] } else { [9, 11] };
        let inputs = vec![In::Fed(tensor(14, &a)), In::Const(tensor(15, &b)), In::Const(tensor(16, &[11]))];
        assert_eq!(check("gemm", gemm, inputs), "matmul-packed");
    }
    // One row (the GEMV): odd k, columns no multiple of any panel width, transposed operands,
    // a bias of one value, fused activations.
    for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let gemm = build("Gemm", vec![("transA", Attr::Int(ta)), ("transB", Attr::Int(tb))], 3);
        let a = if ta == 1 { [301, 1] } else { [1, 301] };
        let b = if tb == 1 { [203, 301] } else { [301, 203] };
        let c = if ta == 1 { tensor(22, &[1]) } else { tensor(22, &[203]) };
        let inputs = vec![In::Fed(tensor(20, &a)), In::Const(tensor(21, &b)), In::Const(c)];
        assert_eq!(check("gemm one row", gemm, inputs), "matmul-packed");
    }
    for (k, n, act) in [(1, 5, Activation::None), (2, 33, Activation::Relu), (64, 95, Activation::Gelu)] {
        let inputs = vec![In::Fed(tensor(23, &[1, 1, k])), In::Const(tensor(24, &[k, n])), In::Const(tensor(25, &[n]))];
        assert_eq!(check("fused matmul one row", Arc::new(FusedMatMul { act }), inputs), "matmul-packed");
    }
    // A C that is a full matrix is the reference's.
    let gemm = build("Gemm", vec![], 3);
    let inputs = vec![In::Fed(tensor(17, &[4, 9])), In::Const(tensor(18, &[9, 11])), In::Const(tensor(19, &[4, 11]))];
    assert_eq!(check("gemm full c", gemm, inputs), "reference");
}

#[test]
fn activations_match_the_reference() {
    let x = || In::Fed(Tensor::new(vec![3, 7001], values(3, 21003).into_iter().map(|v| v * 8.0).collect()).unwrap());
    for op in ["Relu", "Sigmoid", "Tanh", "HardSwish", "LeakyRelu", "HardSigmoid", "Gelu", "Erf", "Exp"] {
        assert_eq!(check(op, build(op, vec![], 1), vec![x()]), "activation", "{op}");
    }
    let clip = build("Clip", vec![], 3);
    let bounds = |v: f32| In::Const(Tensor::scalar(v));
    assert_eq!(check("Clip", clip, vec![x(), bounds(-0.5), bounds(2.0)]), "activation");
}

#[test]
fn elementwise_arithmetic_matches_the_reference() {
    let shapes: [(&[usize], &[usize]); 10] = [
        (&[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[3, 1, 1]),
        (&[2, 3, 4, 5], &[5]),
        (&[2, 3, 4, 5], &[]),
        (&[1], &[2, 3, 4, 5]),
        (&[2, 1, 4, 1], &[1, 3, 1, 5]),
        (&[4, 1], &[1, 4]),
        (&[3, 70000], &[3, 1]),
        // Rows longer than a task: split into pieces.
        (&[70001], &[70001]),
        (&[2, 40001], &[40001]),
    ];
    for op in ["Add", "Sub", "Mul", "Div"] {
        for (i, (a, b)) in shapes.iter().enumerate() {
            let inputs = vec![In::Fed(tensor(i as u64, a)), In::Fed(tensor(100 + i as u64, b))];
            assert_eq!(check(op, build(op, vec![], 2), inputs), "binary", "{op} {a:?} {b:?}");
            let inputs = vec![In::Fed(tensor(i as u64, a)), In::Const(tensor(100 + i as u64, b))];
            check(op, build(op, vec![], 2), inputs);
        }
    }
}

/// Conv -> BatchNormalization -> x * sigmoid(x) compiles to one fused conv and matches the
/// reference interpreter on the unfused graph.
#[test]
fn batch_norm_and_silu_fold_into_the_convolution() {
    let mut g = Graph::default();
    let xs = [1usize, 3, 8, 8];
    let x = g.add_value("x", Fact::new(crate::ir::DType::F32, xs.iter().map(|&d| Dim::Known(d)).collect()));
    g.inputs.push(x);
    let c = graph_const;
    let w = c(&mut g, "w", tensor(1, &[4, 3, 3, 3]));
    let b = c(&mut g, "b", tensor(2, &[4]));
    let gamma = c(&mut g, "gamma", tensor(3, &[4]));
    let beta = c(&mut g, "beta", tensor(4, &[4]));
    let mean = c(&mut g, "mean", tensor(5, &[4]));
    let var = c(&mut g, "var", Tensor::new(vec![4], vec![0.5f32, 1.0, 2.0, 0.25]).unwrap());
    let [y, z, s, out] = ["y", "z", "s", "out"].map(|n| g.add_value(n, Fact::unknown()));
    g.nodes = vec![
        graph_node(build("Conv", vec![("pads", ints(&[1, 1, 1, 1]))], 3), "Conv", vec![x, w, b], vec![y]),
        graph_node(
            build("BatchNormalization", vec![], 5),
            "BatchNormalization",
            vec![y, gamma, beta, mean, var],
            vec![z],
        ),
        graph_node(build("Sigmoid", vec![], 1), "Sigmoid", vec![z], vec![s]),
        graph_node(build("Mul", vec![], 2), "Mul", vec![z, s], vec![out]),
    ];
    g.outputs = vec![out];
    let (kernels, _) = compile_and_compare(&mut g, &[&tensor(6, &xs)], 1e-5);
    // Three input channels under a 3x3 window: a stem, run directly where AVX-512 is.
    let stem = super::isa::isa() == super::isa::Isa::Avx512;
    assert_eq!(kernels, [if stem { "conv-stem" } else { "conv-gemm" }]);
}

/// Bytes spread over the whole range of the type, extremes included.
fn bytes<T: crate::ir::tensor::Elem>(seed: u64, shape: &[usize], of: fn(u8) -> T) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<T> = values(seed, n).into_iter().map(|x| of(((x + 1.0) * 127.99) as u8)).collect();
    if n >= 2 {
        v[0] = of(0);
        v[1] = of(255);
    }
    Tensor::new(shape.to_vec(), v).unwrap()
}

fn u8s(seed: u64, shape: &[usize]) -> Tensor {
    bytes(seed, shape, |b| b)
}

fn i8s(seed: u64, shape: &[usize]) -> Tensor {
    bytes(seed, shape, |b| b as i8)
}

#[test]
fn integer_matrix_products_match_the_reference_exactly() {
    let mm = || build("MatMulInteger", vec![], 4);
    let mmi = |name: &str, inputs: Vec<In>| check(name, mm(), inputs);
    // u8 A with a fed zero point, i8 B with a constant one (the dynamically quantised transformer).
    let k = mmi(
        "u8 x i8",
        vec![
            In::Fed(u8s(1, &[2, 5, 7])),
            In::Const(i8s(2, &[7, 37])),
            In::Fed(Tensor::scalar(131u8)),
            In::Const(Tensor::scalar(-3i8)),
        ],
    );
    assert_eq!(k, "matmul-integer");
    // i8 A, u8 B with a zero point per column; k a multiple of four.
    let zb = Tensor::vector(u8s(5, &[33]).as_slice::<u8>().unwrap().to_vec());
    mmi(
        "i8 x u8 per column",
        vec![In::Fed(i8s(3, &[9, 16])), In::Const(u8s(4, &[16, 33])), In::Fed(Tensor::scalar(-7i8)), In::Const(zb)],
    );
    // u8 x u8 and i8 x i8 without zero points; a vector A; k = 1.
    mmi("u8 x u8", vec![In::Fed(u8s(6, &[3, 11])), In::Const(u8s(7, &[11, 5]))]);
    mmi("i8 x i8", vec![In::Fed(i8s(8, &[4, 6])), In::Const(i8s(9, &[6, 40]))]);
    mmi("vector a", vec![In::Fed(u8s(10, &[13])), In::Const(i8s(11, &[13, 3]))]);
    mmi("k = 1", vec![In::Fed(u8s(12, &[17, 1])), In::Const(i8s(13, &[1, 9])), In::Fed(Tensor::scalar(200u8))]);
    // Large enough to be split over the pool, with edges in both m and n.
    mmi(
        "parallel",
        vec![
            In::Fed(u8s(14, &[3, 70, 130])),
            In::Const(i8s(15, &[130, 70])),
            In::Fed(Tensor::scalar(9u8)),
            In::Const(Tensor::scalar(5i8)),
        ],
    );
    // Falls back at run time: a zero point per row of A.
    let za = Tensor::vector(u8s(16, &[6]).as_slice::<u8>().unwrap().to_vec());
    mmi("row zero points", vec![In::Fed(u8s(17, &[6, 8])), In::Const(i8s(18, &[8, 4])), In::Fed(za)]);
    // A B known only at run time is the reference's.
    assert_eq!(mmi("dynamic b", vec![In::Fed(u8s(19, &[4, 8])), In::Fed(i8s(20, &[8, 4]))]), "reference");
}

#[test]
fn dynamic_quantization_matches_the_reference_exactly() {
    let dq = || build("DynamicQuantizeLinear", vec![], 1);
    let scaled = |seed: u64, shape: &[usize], by: f32, shift: f32| {
        let t = tensor(seed, shape);
        Tensor::new(shape.to_vec(), t.as_slice::<f32>().unwrap().iter().map(|v| v * by + shift).collect()).unwrap()
    };
    for (name, x) in [
        ("mixed signs", scaled(1, &[3, 7, 129], 4.0, 0.5)),
        ("all positive", scaled(2, &[1000], 1.0, 2.0)),
        ("all negative", scaled(3, &[5, 5], 3.0, -7.0)),
        ("zeros", Tensor::new(vec![17], vec![0f32; 17]).unwrap()),
        ("large", scaled(4, &[200_000], 10.0, 0.0)),
        ("odd tail", scaled(5, &[16 * 5 + 7], 0.3, 0.1)),
        ("nan", {
            let mut v = scaled(6, &[40], 2.0, 0.0).as_slice::<f32>().unwrap().to_vec();
            v[3] = f32::NAN;
            v[33] = f32::NAN;
            Tensor::new(vec![40], v).unwrap()
        }),
    ] {
        assert_eq!(check_outputs(name, dq(), vec![In::Fed(x)], 3), "dynamic-quantize", "{name}");
    }
}

#[test]
fn softmax_matches_the_reference() {
    let x = |seed: u64, shape: &[usize]| {
        let t = tensor(seed, shape);
        In::Fed(Tensor::new(shape.to_vec(), t.as_slice::<f32>().unwrap().iter().map(|v| v * 20.0).collect()).unwrap())
    };
    for op in ["Softmax", "LogSoftmax"] {
        // The last axis: attention scores, an odd row length, rows split over the pool.
        assert_eq!(check(op, build(op, vec![], 1), vec![x(1, &[2, 3, 17, 33])]), "softmax", "{op}");
        check(op, build(op, vec![], 1), vec![x(2, &[300, 129])]);
        check(op, build(op, vec![], 1), vec![x(3, &[5, 1])]);
        // Opset 11 flattens the axes from `axis` on: still contiguous lanes.
        check(op, build_at(op, 11, vec![("axis", Attr::Int(1))], 1), vec![x(4, &[3, 4, 5])]);
        // A middle axis at opset 18 is strided: lanes normalised side by side, in column chunks
        // with a ragged end (YOLOv8's distribution head: 16 bins over 4 x N boxes).
        check(op, build(op, vec![("axis", Attr::Int(1))], 1), vec![x(5, &[3, 4, 5])]);
        check(op, build(op, vec![("axis", Attr::Int(1))], 1), vec![x(8, &[1, 16, 4, 1050])]);
        check(op, build(op, vec![("axis", Attr::Int(-2))], 1), vec![x(9, &[2, 3, 7, 130])]);
    }
    // Masked rows: -inf entries (zero after the softmax, within the bound).
    let mut v = values(6, 40);
    v[3] = f32::NEG_INFINITY;
    v[17] = f32::NEG_INFINITY;
    check("masked", build("Softmax", vec![], 1), vec![In::Fed(Tensor::new(vec![2, 20], v.clone()).unwrap())]);
    let strided = build("Softmax", vec![("axis", Attr::Int(0))], 1);
    check("masked strided", strided, vec![In::Fed(Tensor::new(vec![2, 20], v).unwrap())]);
    // Hardmax is the reference's.
    assert_eq!(check("Hardmax", build("Hardmax", vec![], 1), vec![x(7, &[4, 6])]), "reference");
}

#[test]
fn recurrent_layers_match_the_reference() {
    // (name, op, direction, hidden, [seq, batch, input], extra attributes, with B, with states, kernel)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        usize,
        [usize; 3],
        Vec<(&'static str, Attr)>,
        bool,
        bool,
        &'static str,
    );
    let s = |v: &str| Attr::String(v.into());
    let acts = |v: &[&str]| Attr::Strings(v.iter().map(|a| a.to_string()).collect());
    let cases: Vec<Case> = vec![
        ("lstm forward", "LSTM", "forward", 6, [7, 2, 5], vec![], true, true, "lstm"),
        ("lstm bidirectional", "LSTM", "bidirectional", 5, [4, 1, 3], vec![], false, false, "lstm"),
        ("lstm large", "LSTM", "bidirectional", 32, [20, 3, 16], vec![], true, true, "lstm"),
        // Gate rows past one register block (77 * 4 = 19 vectors and 4 columns).
        ("lstm wide", "LSTM", "forward", 77, [6, 2, 9], vec![], true, true, "lstm"),
        // The candidate's product starts at a column that is no multiple of a vector.
        ("gru reset after", "GRU", "reverse", 21, [5, 2, 7], vec![], true, true, "gru"),
        (
            "lstm reverse clip",
            "LSTM",
            "reverse",
            4,
            [5, 2, 3],
            vec![("clip", Attr::Float(0.7)), ("activations", acts(&["HardSigmoid", "Tanh", "Relu"]))],
            true,
            true,
            "lstm",
        ),
        ("gru", "GRU", "forward", 6, [6, 2, 4], vec![], true, true, "gru"),
        (
            "gru linear before reset",
            "GRU",
            "bidirectional",
            7,
            [5, 3, 4],
            vec![("linear_before_reset", Attr::Int(1))],
            true,
            true,
            "gru",
        ),
        (
            "gru large",
            "GRU",
            "bidirectional",
            40,
            [16, 2, 24],
            vec![("linear_before_reset", Attr::Int(1))],
            true,
            false,
            "gru",
        ),
        (
            "gru softsign",
            "GRU",
            "forward",
            3,
            [3, 1, 2],
            vec![("activations", acts(&["Softsign", "Tanh"]))],
            true,
            false,
            "reference",
        ),
        (
            "lstm input forget",
            "LSTM",
            "forward",
            3,
            [3, 1, 2],
            vec![("input_forget", Attr::Int(1))],
            true,
            false,
            "reference",
        ),
    ];
    for (i, (name, op, direction, hidden, xs, attrs, bias, states, kernel)) in cases.into_iter().enumerate() {
        let seed = 500 + i as u64 * 10;
        let dirs = if direction == "bidirectional" { 2 } else { 1 };
        let gates = if op == "LSTM" { 4 } else { 3 };
        let outputs = if op == "LSTM" { 3 } else { 2 };
        let mut attrs = attrs;
        attrs.push(("direction", s(direction)));
        attrs.push(("hidden_size", Attr::Int(hidden as i64)));
        let mut inputs = vec![
            In::Fed(tensor(seed, &xs)),
            In::Const(tensor(seed + 1, &[dirs, gates * hidden, xs[2]])),
            In::Const(tensor(seed + 2, &[dirs, gates * hidden, hidden])),
            if bias { In::Const(tensor(seed + 3, &[dirs, 2 * gates * hidden])) } else { In::Absent },
        ];
        if states {
            inputs.push(In::Fed(Tensor::new(vec![xs[1]], vec![xs[0] as i32; xs[1]]).unwrap()));
            inputs.push(In::Fed(tensor(seed + 4, &[dirs, xs[1], hidden])));
            if op == "LSTM" {
                inputs.push(In::Fed(tensor(seed + 5, &[dirs, xs[1], hidden])));
            }
        }
        let n = inputs.len();
        let built = build_outputs(op, 18, attrs, n, outputs);
        assert_eq!(check_outputs(name, built, inputs, outputs), kernel, "{name}");
    }
    // Shorter sequences fall back at run time; peepholes at prepare time; Y alone is fine.
    let lstm = |outputs: usize, n: usize| build_outputs("LSTM", 18, vec![("hidden_size", Attr::Int(3))], n, outputs);
    let base = |seed: u64| {
        vec![
            In::Fed(tensor(seed, &[4, 2, 2])),
            In::Const(tensor(seed + 1, &[1, 12, 2])),
            In::Const(tensor(seed + 2, &[1, 12, 3])),
            In::Const(tensor(seed + 3, &[1, 24])),
        ]
    };
    let mut short = base(600);
    short.push(In::Fed(Tensor::new(vec![2], vec![4i32, 2]).unwrap()));
    assert_eq!(check_outputs("short sequence", lstm(3, 5), short, 3), "lstm");
    let mut peep = base(610);
    peep.extend([In::Absent, In::Absent, In::Absent, In::Const(tensor(611, &[1, 9]))]);
    assert_eq!(check_outputs("peepholes", lstm(3, 8), peep, 3), "reference");
    assert_eq!(check_outputs("y only", lstm(1, 4), base(620), 1), "lstm");
}

#[test]
fn pow_by_a_constant_matches_the_reference() {
    let pow = || build("Pow", vec![], 2);
    let x = || In::Fed(tensor(700, &[3, 7001]));
    assert_eq!(check("square", pow(), vec![x(), In::Const(Tensor::scalar(2f32))]), "pow");
    check("cube as [1]", pow(), vec![x(), In::Const(Tensor::vector(vec![3f32]))]);
    check("integer exponent", pow(), vec![x(), In::Const(Tensor::scalar(2i64))]);
    // A negative base to a fractional power is NaN in both.
    check(
        "fraction",
        pow(),
        vec![
            In::Fed(tensor(701, &[40]).cast_numeric(crate::ir::DType::F32).unwrap()),
            In::Const(Tensor::scalar(0.5f32)),
        ],
    );
    check("scalar base", pow(), vec![In::Fed(Tensor::scalar(1.5f32)), In::Const(Tensor::vector(vec![2f32]))]);
    assert_eq!(check("fed exponent", pow(), vec![x(), In::Fed(Tensor::scalar(2f32))]), "reference");
}

#[test]
fn transposes_match_the_reference() {
    let cases: [(&[usize], Option<&[i64]>); 9] = [
        (&[2, 5, 3, 4], Some(&[0, 2, 1, 3])),
        (&[2, 5, 3, 4], Some(&[0, 2, 3, 1])),
        (&[2, 5, 3, 4], Some(&[3, 2, 1, 0])),
        (&[2, 5, 3, 4], None),
        (&[70, 300], Some(&[1, 0])),
        (&[1, 5, 1, 4], Some(&[2, 3, 0, 1])),
        (&[3, 1, 4, 1, 5], Some(&[4, 0, 3, 2, 1])),
        (&[7], Some(&[0])),
        (&[6, 130, 41], Some(&[1, 0, 2])),
    ];
    for (i, (shape, perm)) in cases.into_iter().enumerate() {
        let attrs = perm.map(|p| vec![("perm", ints(p))]).unwrap_or_default();
        let name = format!("transpose {shape:?} {perm:?}");
        assert_eq!(
            check(&name, build("Transpose", attrs, 1), vec![In::Fed(tensor(800 + i as u64, shape))]),
            "transpose"
        );
    }
}

#[test]
fn means_over_trailing_axes_match_the_reference() {
    let axes = |a: &[i64]| In::Const(Tensor::vector(a.to_vec()));
    let mean = |keep: i64| build("ReduceMean", vec![("keepdims", Attr::Int(keep))], 2);
    let x = || In::Fed(tensor(900, &[2, 128, 37]));
    assert_eq!(check("last axis", mean(1), vec![x(), axes(&[-1])]), "reduce-mean");
    check("last axis dropped", mean(0), vec![x(), axes(&[2])]);
    check("two trailing axes", mean(1), vec![x(), axes(&[1, 2])]);
    check("all axes", mean(0), vec![x()]);
    check("with a size-1 axis", mean(1), vec![In::Fed(tensor(901, &[3, 5, 1])), axes(&[1])]);
    check("many rows", mean(1), vec![In::Fed(tensor(902, &[5000, 20])), axes(&[-1])]);
    // A leading axis is strided: the reference runs it.
    check("first axis", mean(1), vec![x(), axes(&[0])]);
    // Opset 13 takes the axes as an attribute.
    let old = build_at("ReduceMean", 13, vec![("axes", ints(&[-1]))], 1);
    assert_eq!(check("attribute axes", old, vec![x()]), "reduce-mean");
}

/// Products and convolutions large enough to be split over the pool (smaller ones run on the
/// calling thread alone).
#[test]
fn work_split_over_the_pool_matches_the_reference() {
    let mm = build("MatMul", vec![], 2);
    assert_eq!(
        check("split matmul", mm, vec![In::Fed(tensor(1000, &[300, 64])), In::Const(tensor(1001, &[64, 80]))]),
        "matmul-packed"
    );
    let mm = build("MatMul", vec![], 2);
    check("split batched matmul", mm, vec![In::Fed(tensor(1002, &[4, 70, 64])), In::Fed(tensor(1003, &[4, 64, 90]))]);
    let dw = build("Conv", vec![("group", Attr::Int(32)), ("pads", ints(&[1, 1, 1, 1]))], 2);
    let inputs = vec![In::Fed(tensor(1004, &[1, 32, 40, 40])), In::Const(tensor(1005, &[32, 1, 3, 3]))];
    assert_eq!(check("split depthwise", dw, inputs), "conv-depthwise");
    let conv = build("Conv", vec![("pads", ints(&[1, 1, 1, 1]))], 2);
    let inputs = vec![In::Fed(tensor(1006, &[1, 16, 20, 20])), In::Const(tensor(1007, &[24, 16, 3, 3]))];
    // A 20x20 plane: the direct kernel where AVX-512 is, Winograd elsewhere.
    let direct = direct_or("conv-winograd", 16, (3, 3), (20, 20), false);
    assert_eq!(check("split conv", conv, inputs), direct);
    let conv = build("Conv", vec![("pads", ints(&[1, 1, 1, 1]))], 2);
    let inputs = vec![In::Fed(tensor(1008, &[1, 32, 40, 40])), In::Const(tensor(1009, &[32, 32, 3, 3]))];
    assert_eq!(check("split winograd blocks", conv, inputs), "conv-winograd");
    let conv = build("Conv", vec![("pads", ints(&[1, 1, 1, 1]))], 2);
    let inputs = vec![In::Fed(tensor(1010, &[1, 8, 40, 40])), In::Const(tensor(1011, &[24, 8, 3, 3]))];
    // Few channels over rows of 40: the stem kernel where AVX-512 is.
    let stem = if super::isa::isa() == super::isa::Isa::Avx512 { "conv-stem" } else { "conv-gemm" };
    assert_eq!(check("split conv few channels", conv, inputs), stem);
}

#[test]
fn global_average_pools_match_the_reference() {
    let gap = || build("GlobalAveragePool", vec![], 1);
    assert_eq!(check("gap", gap(), vec![In::Fed(tensor(1100, &[2, 24, 7, 9]))]), "global-average-pool");
    check("gap 1-d", gap(), vec![In::Fed(tensor(1101, &[1, 5, 33]))]);
    check("gap 3-d", gap(), vec![In::Fed(tensor(1102, &[1, 3, 4, 5, 6]))]);
    check("gap many planes", gap(), vec![In::Fed(tensor(1103, &[1, 960, 7, 7]))]);
    check("gap rank 2", gap(), vec![In::Fed(tensor(1104, &[3, 4]))]);
}

/// MatMulInteger -> Cast -> Mul by the product of the scales -> Add of a bias (a dynamically
/// quantised linear layer) compiles to one integer kernel writing floats, identical to the
/// interpreter on the unfused graph; a scale computed only after the product stops the fusion.
#[test]
fn integer_product_cast_scale_and_bias_fuse() {
    integer_chain(false);
    integer_chain(true);
}

fn integer_chain(late_scale: bool) {
    let mut g = Graph::default();
    let fed = |g: &mut Graph, name: &str, dt: crate::ir::DType, dims: &[usize]| {
        let id = g.add_value(name, Fact::new(dt, dims.iter().map(|&d| Dim::Known(d)).collect()));
        g.inputs.push(id);
        id
    };
    let a = fed(&mut g, "a", crate::ir::DType::U8, &[2, 9, 20]);
    let za = fed(&mut g, "za", crate::ir::DType::U8, &[]);
    let scale = fed(&mut g, "scale", crate::ir::DType::F32, &[]);
    let c = graph_const;
    let b = c(&mut g, "b", i8s(1, &[20, 45]));
    let zb = c(&mut g, "zb", Tensor::scalar(3i8));
    let bias = c(&mut g, "bias", tensor(2, &[45]));
    let two = c(&mut g, "two", Tensor::scalar(2f32));
    let [p, f, s, out, sc] = ["p", "f", "s", "out", "sc"].map(|n| g.add_value(n, Fact::unknown()));
    g.nodes = vec![
        graph_node(build("MatMulInteger", vec![], 4), "MatMulInteger", vec![a, b, za, zb], vec![p]),
        graph_node(build("Cast", vec![("to", Attr::Int(1))], 1), "Cast", vec![p], vec![f]),
        graph_node(build("Mul", vec![], 2), "Mul", vec![f, if late_scale { sc } else { scale }], vec![s]),
        graph_node(build("Add", vec![], 2), "Add", vec![bias, s], vec![out]),
    ];
    if late_scale {
        g.nodes.insert(2, graph_node(build("Mul", vec![], 2), "Mul", vec![scale, two], vec![sc]));
    }
    g.outputs = vec![out];
    let (av, zav, sv) = (u8s(3, &[2, 9, 20]), Tensor::scalar(117u8), Tensor::scalar(0.0123f32));
    let (kernels, _) = compile_and_compare(&mut g, &[&av, &zav, &sv], 0.0);
    let want_kernels =
        if late_scale { vec!["matmul-integer", "binary", "binary", "binary"] } else { vec!["matmul-integer"] };
    assert_eq!(kernels, want_kernels);
}

#[test]
fn max_pools_match_the_reference() {
    type Case = (&'static str, Vec<usize>, Vec<(&'static str, Attr)>);
    let cases: Vec<Case> = vec![
        (
            "3x3 stride 2 pad 1",
            vec![1, 8, 15, 16],
            vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
        ),
        ("5x5 same (SPPF)", vec![1, 16, 20, 20], vec![("kernel_shape", ints(&[5, 5])), ("pads", ints(&[2, 2, 2, 2]))]),
        ("2x2 stride 2", vec![2, 3, 9, 10], vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]),
        ("2x1 stride (2, 1)", vec![1, 4, 8, 7], vec![("kernel_shape", ints(&[2, 1])), ("strides", ints(&[2, 1]))]),
        (
            "ceil mode",
            vec![1, 2, 7, 7],
            vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("ceil_mode", Attr::Int(1))],
        ),
        ("dilated", vec![1, 2, 11, 12], vec![("kernel_shape", ints(&[3, 2])), ("dilations", ints(&[2, 3]))]),
        ("1-d", vec![1, 3, 17], vec![("kernel_shape", ints(&[4])), ("strides", ints(&[3])), ("pads", ints(&[2, 1]))]),
        ("many planes", vec![4, 64, 24, 24], vec![("kernel_shape", ints(&[3, 3])), ("pads", ints(&[1, 1, 1, 1]))]),
        // Stride 2 splits rows into even and odd halves (odd widths, dilation, taps in the padding),
        // and keeps the strided path for rows past the split's 1024 columns.
        (
            "stride 2 dilated odd width",
            vec![1, 3, 13, 29],
            vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("dilations", ints(&[2, 2])),
                ("pads", ints(&[2, 1, 1, 2])),
            ],
        ),
        ("stride 2 wide rows", vec![1, 2, 3, 1101], vec![("kernel_shape", ints(&[1, 3])), ("strides", ints(&[1, 2]))]),
        // Rows staged in several chunks, the last one partly in the trailing padding.
        (
            "stride 1 wide rows dilated",
            vec![1, 2, 2, 2100],
            vec![("kernel_shape", ints(&[1, 5])), ("dilations", ints(&[1, 3])), ("pads", ints(&[0, 4, 0, 2]))],
        ),
        (
            "stride 3 odd",
            vec![1, 3, 17, 23],
            vec![("kernel_shape", ints(&[4, 4])), ("strides", ints(&[3, 3])), ("pads", ints(&[1, 2, 2, 1]))],
        ),
        (
            "stride 2 odd width, many vectors",
            vec![1, 5, 7, 75],
            vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
        ),
    ];
    for (i, (name, shape, attrs)) in cases.into_iter().enumerate() {
        assert_eq!(
            check(name, build("MaxPool", attrs, 1), vec![In::Fed(tensor(1200 + i as u64, &shape))]),
            "max-pool",
            "{name}"
        );
    }
    // NaN taps: skipped unless the whole window is NaN.
    let mut v = values(1300, 2 * 36);
    for i in [0, 1, 6, 7, 14, 20, 21, 22, 23, 40] {
        v[i] = f32::NAN;
    }
    let attrs = vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))];
    check("nan", build("MaxPool", attrs, 1), vec![In::Fed(Tensor::new(vec![1, 2, 6, 6], v).unwrap())]);
    // NaN taps through the stride-2 permute: a NaN running maximum, NaN inputs, a NaN window.
    let mut v = values(1303, 2 * 7 * 41);
    for i in
        (0..v.len()).filter(|i| i % 7 == 0 || i % 11 == 3 || *i < 2 || (41..44).contains(i) || (82..85).contains(i))
    {
        v[i] = f32::NAN;
    }
    let attrs = vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))];
    check("nan stride 2", build("MaxPool", attrs, 1), vec![In::Fed(Tensor::new(vec![1, 2, 7, 41], v).unwrap())]);
    // 3-D pooling and the Indices output are the reference's.
    let attrs = vec![("kernel_shape", ints(&[2, 2, 2]))];
    check("3-d", build("MaxPool", attrs, 1), vec![In::Fed(tensor(1301, &[1, 2, 4, 4, 4]))]);
    let with_indices = build_outputs("MaxPool", 18, vec![("kernel_shape", ints(&[2, 2]))], 1, 2);
    assert_eq!(check_outputs("indices", with_indices, vec![In::Fed(tensor(1302, &[1, 2, 5, 5]))], 2), "reference");
}

/// ResNet's block tail: Conv -> Add(skip) -> Relu becomes one FusedConv, placed where the Add was,
/// since the skip branch (here a second Conv listed after the first) runs later.
#[test]
fn a_skip_connection_and_relu_fuse_into_the_convolution() {
    let mut g = Graph::default();
    let xs = [1usize, 4, 6, 6];
    let x = g.add_value("x", Fact::new(crate::ir::DType::F32, xs.iter().map(|&d| Dim::Known(d)).collect()));
    g.inputs.push(x);
    let c = graph_const;
    let w1 = c(&mut g, "w1", tensor(1, &[4, 4, 3, 3]));
    let w2 = c(&mut g, "w2", tensor(2, &[4, 4, 1, 1]));
    let b2 = c(&mut g, "b2", tensor(3, &[4]));
    let [y, skip, sum, out] = ["y", "skip", "sum", "out"].map(|n| g.add_value(n, Fact::unknown()));
    g.nodes = vec![
        graph_node(build("Conv", vec![("pads", ints(&[1, 1, 1, 1]))], 2), "Conv", vec![x, w1], vec![y]),
        graph_node(build("Conv", vec![], 3), "Conv", vec![x, w2, b2], vec![skip]),
        graph_node(build("Add", vec![], 2), "Add", vec![skip, y], vec![sum]),
        graph_node(build("Relu", vec![], 1), "Relu", vec![sum], vec![out]),
    ];
    g.outputs = vec![out];
    let (kernels, want) = compile_and_compare(&mut g, &[&tensor(6, &xs)], 1e-5);
    let pointwise = if super::conv_pointwise::available(4) { "conv-pointwise" } else { "conv-gemm" };
    assert_eq!(kernels, [pointwise, "conv-gemm"]);
    assert!(want.as_slice::<f32>().unwrap().contains(&0.0), "the Relu clips something");
}

#[test]
fn concats_match_the_reference() {
    let cases: Vec<(i64, Vec<Vec<usize>>)> = vec![
        (1, vec![vec![1, 3, 4, 5], vec![1, 2, 4, 5], vec![1, 1, 4, 5]]),
        (-1, vec![vec![2, 3, 4], vec![2, 3, 1]]),
        (0, vec![vec![2, 3], vec![5, 3], vec![0, 3]]),
        (2, vec![vec![2, 2, 0], vec![2, 2, 3]]),
        // Long runs cut into pieces over the pool, and many short runs grouped into tasks.
        (1, vec![vec![1, 37, 71, 101], vec![1, 5, 71, 101], vec![1, 1, 71, 101]]),
        (-1, vec![vec![3001, 31, 3], vec![3001, 31, 2]]),
    ];
    for (i, (axis, shapes)) in cases.into_iter().enumerate() {
        let name = format!("concat axis {axis} {shapes:?}");
        let inputs =
            shapes.iter().enumerate().map(|(k, s)| In::Fed(tensor(900 + 10 * i as u64 + k as u64, s))).collect();
        let op = build("Concat", vec![("axis", Attr::Int(axis))], shapes.len());
        assert_eq!(check(&name, op, inputs), "concat", "{name}");
    }
}

/// A Split of the outermost non-unit axis gives views of its input, not copies.
#[test]
fn splits_of_one_run_are_views() {
    let op = build_outputs("Split", 18, vec![("axis", Attr::Int(1)), ("num_outputs", Attr::Int(2))], 1, 2);
    let x = tensor(3, &[1, 4, 3]);
    let outs = op.eval(&[Some(&x)]).unwrap();
    assert_eq!(outs[1].as_slice::<f32>().unwrap(), &x.as_slice::<f32>().unwrap()[6..]);
    assert!(outs.iter().all(|o| o.shares_storage(&x)));
    let outs = op.eval(&[Some(&tensor(3, &[2, 4, 3]))]).unwrap();
    assert_eq!(outs[0].shape(), &[2, 2, 3]);
}

/// A skip connection computed in the run, dying at the conv that adds it: the GEMM and the
/// pointwise kernel write the output over it, in place, and match the interpreter.
#[test]
fn convolutions_write_over_their_dying_skip_connection() {
    let pointwise = if super::conv_pointwise::available(4) { "conv-pointwise" } else { "conv-gemm" };
    for (k, taps, kernel) in [(4, 1, pointwise), (4, 3, "conv-gemm"), (80, 1, "conv-gemm")] {
        let mut g = Graph::default();
        let xs = [1usize, k, 9, 10];
        let x = g.add_value("x", Fact::new(crate::ir::DType::F32, xs.iter().map(|&d| Dim::Known(d)).collect()));
        g.inputs.push(x);
        let w1 = graph_const(&mut g, "w1", tensor(1, &[24, k, taps, taps]));
        let w2 = graph_const(&mut g, "w2", tensor(2, &[24, k, 1, 1]));
        let b1 = graph_const(&mut g, "b1", tensor(3, &[24]));
        let [y, skip, sum, out] = ["y", "skip", "sum", "out"].map(|n| g.add_value(n, Fact::unknown()));
        let pads = ints(&[taps as i64 / 2; 4]);
        g.nodes = vec![
            graph_node(build("Conv", vec![("pads", pads)], 3), "Conv", vec![x, w1, b1], vec![y]),
            graph_node(build("Conv", vec![], 2), "Conv", vec![x, w2], vec![skip]),
            graph_node(build("Add", vec![], 2), "Add", vec![y, skip], vec![sum]),
            graph_node(build("Relu", vec![], 1), "Relu", vec![sum], vec![out]),
        ];
        g.outputs = vec![out];
        let (kernels, _) = compile_and_compare(&mut g, &[&tensor(7, &xs)], 1e-5);
        let compiled = compile(&g, &backends_for(Device::Cpu).unwrap()).unwrap();
        // The skip's conv runs first; the fused one, which adds it, second.
        assert_eq!(kernels[1], kernel, "k {k} taps {taps}");
        assert_eq!(compiled.in_place_inputs(), [None, Some(3)], "k {k} taps {taps}: {kernels:?}");
    }
}

/// The plan hands a kernel the input it asks to write over ([`Kernel::in_place_input`]) only
/// where nothing can see the difference: a tensor this run computed, dying at that node, read
/// by it once, and sharing its storage with nothing (no view of it alive).
#[test]
fn the_plan_hands_over_only_inputs_that_die_unshared() {
    use crate::backend::{run_lent, Backend, ExecCtx, Kernel};
    use crate::ir::Data;
    use std::sync::Mutex;

    type Given = Arc<Mutex<Vec<String>>>;
    /// A CPU kernel that asks for its first input, and records the nodes that got it.
    #[derive(Debug)]
    struct Asks {
        inner: Box<dyn Kernel>,
        node: String,
        given: Given,
    }
    impl Kernel for Asks {
        fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> crate::Result<Vec<Data>> {
            self.inner.run(ctx, inputs)
        }
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        fn in_place_input(&self) -> Option<usize> {
            Some(0)
        }
        fn run_in_place(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>], donated: Tensor) -> crate::Result<Vec<Data>> {
            assert!(inputs[0].is_none(), "the handed-over input is not also lent");
            self.given.lock().unwrap().push(self.node.clone());
            run_lent(self, ctx, inputs, donated)
        }
    }
    struct Recording {
        cpu: Arc<dyn Backend>,
        given: Given,
    }
    impl Backend for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        fn supports(&self, _: &Graph, _: &Node) -> bool {
            true
        }
        fn prepare(&self, graph: &Graph, node: &Node) -> crate::Result<Box<dyn Kernel>> {
            let inner = self.cpu.prepare(graph, node)?;
            Ok(Box::new(Asks { inner, node: node.name.clone(), given: self.given.clone() }))
        }
    }

    let mut g = Graph::default();
    let x = g.add_value("x", Fact::new(crate::ir::DType::F32, vec![Dim::Known(2), Dim::Known(3)]));
    g.inputs.push(x);
    let [a, b, c, d, e, v, w] = ["a", "b", "c", "d", "e", "v", "w"].map(|n| g.add_value(n, Fact::unknown()));
    let node = |op: &str, inputs: Vec<usize>, out: usize, name: &str| {
        let n = if op == "Add" { 2 } else { 1 };
        Node { name: name.into(), ..graph_node(build(op, vec![], n), op, inputs, vec![out]) }
    };
    g.nodes = vec![
        node("Relu", vec![x], a, "a: a graph input"),
        node("Relu", vec![a], b, "b: read again later"),
        node("Add", vec![b, b], c, "c: read twice here"),
        node("Add", vec![a, c], d, "d: dies here"),
        node("Relu", vec![d], e, "e: a graph output"),
        node("Identity", vec![e], v, "v: a view"),
        node("Relu", vec![e], w, "w: a view of it alive"),
    ];
    g.outputs = vec![d, v, w];
    infer_facts(&mut g).unwrap();
    let given = Given::default();
    let cpu = backends_for(Device::Cpu).unwrap().remove(0);
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(Recording { cpu, given: given.clone() })];
    let compiled = crate::backend::plan::CompiledGraph::new(Arc::new(g.clone()), &backends, &[0; 7]).unwrap();
    let xt = tensor(1400, &[2, 3]);
    let refs = [DataRef::Tensor(&xt)];
    let want = Interpreter.run(&g, &refs, &[]).unwrap();
    for _ in 0..2 {
        let got = compiled.run(&ThreadPool::new(1), &refs, &[], None).unwrap();
        for (got, want) in got.into_iter().zip(&want) {
            let (got, want) = (got.into_tensor().unwrap(), want.clone().into_tensor().unwrap());
            assert_eq!(got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
        }
    }
    assert_eq!(*given.lock().unwrap(), ["d: dies here", "d: dies here"]);
}
