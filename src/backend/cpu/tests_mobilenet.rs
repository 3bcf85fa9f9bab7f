//! MobileNet-family kernels and fusions against the reference (the oracle): the depthwise kernel
//! on random shapes (odd sizes, 1x1 to 7x7 and non-square kernels, strides 1-3, dilation,
//! asymmetric and oversized padding, planes big enough to take several bands and rows wide enough
//! for the wide tiles, with bias, residual and activations fused), and written-out HardSwish folded
//! into the convolution before it.

use super::tests::{
    build, check, check_depthwise_case, compile_and_compare, graph_const, graph_node, ints, tensor, In,
};
use crate::ir::{Attr, DType, Fact, Graph, Tensor};
use crate::ops::fused::{Activation, FusedConv};
use std::sync::Arc;

/// A small deterministic generator of case parameters.
struct Dice(u64);

impl Dice {
    fn pick(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn depthwise_convolutions_match_the_reference_on_random_shapes() {
    let mut dice = Dice(7);
    let acts = [Activation::None, Activation::Relu, Activation::Clip(0.0, 6.0), Activation::HardSwish];
    for case in 0..60 {
        let (kh, kw) = match dice.pick(6) {
            0 => (3, 3),
            1 => (5, 5),
            2 => (1, 1),
            3 => (7, 7),
            4 => (3, 1),
            _ => (1 + dice.pick(4), 1 + dice.pick(5)),
        };
        let (sh, sw) = match dice.pick(4) {
            0 | 1 => (1, 1),
            2 => (2, 2),
            _ => (1 + dice.pick(3), 1 + dice.pick(3)),
        };
        let (dh, dw) = if dice.pick(4) == 0 { (1 + dice.pick(3), 1 + dice.pick(2)) } else { (1, 1) };
        let pads =
            [kh / 2, kw / 2, kh / 2, kw / 2].map(|p| if dice.pick(3) == 0 { dice.pick(kh.max(kw) + 2) } else { p });
        let channels = 2 + dice.pick(11);
        let batch = 1 + dice.pick(2);
        // Heights and widths from 1 to past the widest tile and the band size.
        let size = |d: &mut Dice| match d.pick(5) {
            0 => 1 + d.pick(4),
            1 => 60 + d.pick(90),
            _ => 5 + d.pick(30),
        };
        let (ih, iw) = (size(&mut dice), size(&mut dice));
        let xs = [batch, channels, ih, iw];
        let ws = [channels, 1, kh, kw];
        let attrs = vec![
            ("group", Attr::Int(channels as i64)),
            ("strides", ints(&[sh as i64, sw as i64])),
            ("dilations", ints(&[dh as i64, dw as i64])),
            ("pads", ints(&pads.map(|p| p as i64))),
        ];
        // Shapes with no output (the kernel past the padded input) are the reference's to refuse.
        let reach = |i: usize, k: usize, d: usize, p: usize| i + p > (k - 1) * d;
        if !reach(ih, kh, dh, pads[0] + pads[2]) || !reach(iw, kw, dw, pads[1] + pads[3]) {
            continue;
        }
        let name = format!("case {case}: x {xs:?} w {ws:?} stride {sh}x{sw} dilation {dh}x{dw} pads {pads:?}");
        let seed = 2000 + case as u64 * 10;
        let bias = dice.pick(3) != 0;
        let residual = dice.pick(3) == 0;
        let act = acts[dice.pick(acts.len())];
        let ran = check_depthwise_case(&name, &xs, &ws, attrs, seed, bias, residual, act);
        assert_eq!(ran, "conv-depthwise", "{name}");
    }
}

/// Plain 1x1 convolutions (MobileNets' expansions and projections) on random shapes: input
/// channels across the pointwise kernel's limit, output channels that leave partial groups of 8,
/// pixel counts that leave partial blocks of 48, batches, bias, residual and activations (fused
/// in registers or applied after).
#[test]
fn pointwise_convolutions_match_the_reference_on_random_shapes() {
    let mut dice = Dice(11);
    let acts = [
        Activation::None,
        Activation::Relu,
        Activation::Clip(0.0, 6.0),
        Activation::HardSwish,
        Activation::Silu,
        Activation::LeakyRelu(0.1),
    ];
    let mut pointwise_cases = 0;
    for case in 0..40 {
        let k = match dice.pick(4) {
            0 => 1 + dice.pick(8),
            1 => 60 + dice.pick(10),
            _ => 8 + dice.pick(56),
        };
        let m = 1 + dice.pick(40);
        let (h, w) = (1 + dice.pick(20), 1 + dice.pick(60));
        let batch = 1 + dice.pick(2);
        let xs = [batch, k, h, w];
        let ws = [m, k, 1, 1];
        let name = format!("case {case}: x {xs:?} w {ws:?}");
        let seed = 5000 + case as u64 * 10;
        let bias = dice.pick(3) != 0;
        let residual = dice.pick(3) == 0;
        let act = acts[dice.pick(acts.len())];
        let conv = build("Conv", vec![], if bias { 3 } else { 2 });
        let mut inputs = vec![In::Fed(tensor(seed, &xs)), In::Const(tensor(seed + 1, &ws))];
        if bias || residual {
            inputs.push(if bias { In::Const(tensor(seed + 2, &[m])) } else { In::Absent });
        }
        if residual {
            inputs.push(In::Fed(tensor(seed + 3, &[batch, m, h, w])));
        }
        let op = Arc::new(FusedConv { conv, residual, act });
        let kernel = check(&name, op, inputs);
        let want = if super::conv_pointwise::available(k) { "conv-pointwise" } else { "conv-gemm" };
        assert_eq!(kernel, want, "{name}");
        pointwise_cases += usize::from(kernel == "conv-pointwise");
    }
    // Where the kernel exists, the cases must have exercised it.
    if super::conv_pointwise::available(1) {
        assert!(pointwise_cases >= 20, "only {pointwise_cases} cases ran the pointwise kernel");
    }
}

/// 1x1 convolutions on planes large enough, and with enough output and residual rows, that the
/// pointwise kernel runs its groups of channels outermost (DBNet's neck), on odd sizes: a plane
/// of 81x83, a partial group of 8, with and without the residual.
#[test]
fn pointwise_convolutions_on_large_planes_match_the_reference() {
    for (case, (k, m, residual, act)) in
        [(5, 67, true, Activation::None), (13, 131, false, Activation::Relu), (3, 129, true, Activation::Silu)]
            .into_iter()
            .enumerate()
    {
        let (xs, ws) = ([1, k, 81, 83], [m, k, 1, 1]);
        let name = format!("large plane: x {xs:?} w {ws:?} residual {residual} {act:?}");
        let seed = 6100 + case as u64 * 10;
        let conv = build("Conv", vec![], 3);
        let mut inputs = vec![In::Fed(tensor(seed, &xs)), In::Const(tensor(seed + 1, &ws))];
        inputs.push(In::Const(tensor(seed + 2, &[m])));
        if residual {
            inputs.push(In::Fed(tensor(seed + 3, &[1, m, 81, 83])));
        }
        let op = Arc::new(FusedConv { conv, residual, act });
        let want = if super::conv_pointwise::available(k) { "conv-pointwise" } else { "conv-gemm" };
        assert_eq!(check(&name, op, inputs), want, "{name}");
    }
}

/// MobileNetV3's blocks: a depthwise Conv -> BatchNormalization -> `x * Clip(x + 3, 0, 6) / 6`, and
/// a pointwise Conv -> `x * HardSigmoid(x, 1/6, 0.5)`, each compile to one fused conv.
#[test]
fn written_out_hard_swish_folds_into_the_convolution() {
    let mut g = Graph::default();
    let xs = [1usize, 6, 9, 11];
    let x = g.add_value("x", Fact::concrete(DType::F32, &xs));
    g.inputs.push(x);
    let c = graph_const;
    let w = c(&mut g, "w", tensor(1, &[6, 1, 3, 3]));
    let stats: Vec<usize> = (0..4).map(|i| c(&mut g, &format!("bn{i}"), tensor(2 + i, &[6]))).collect();
    let var = c(&mut g, "var", Tensor::new(vec![6], vec![0.5f32, 1.0, 2.0, 0.25, 1.5, 0.75]).unwrap());
    let scalar = |g: &mut Graph, v: f32| graph_const(g, &format!("k{v}"), Tensor::scalar(v));
    let (three, zero, six) = (scalar(&mut g, 3.0), scalar(&mut g, 0.0), scalar(&mut g, 6.0));
    let w2 = c(&mut g, "w2", tensor(7, &[5, 6, 1, 1]));
    let names = ["y", "z", "a", "clipped", "m", "h", "p", "gate", "out"];
    let [y, z, a, clipped, m, h, p, gate, out] = names.map(|n| g.add_value(n, Fact::unknown()));
    let dw = vec![("group", Attr::Int(6)), ("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))];
    let hard_sigmoid = vec![("alpha", Attr::Float(1.0 / 6.0)), ("beta", Attr::Float(0.5))];
    g.nodes = vec![
        graph_node(build("Conv", dw, 2), "Conv", vec![x, w], vec![y]),
        graph_node(
            build("BatchNormalization", vec![], 5),
            "BatchNormalization",
            vec![y, stats[0], stats[1], stats[2], var],
            vec![z],
        ),
        graph_node(build("Add", vec![], 2), "Add", vec![z, three], vec![a]),
        graph_node(build("Clip", vec![], 3), "Clip", vec![a, zero, six], vec![clipped]),
        graph_node(build("Mul", vec![], 2), "Mul", vec![z, clipped], vec![m]),
        graph_node(build("Div", vec![], 2), "Div", vec![m, six], vec![h]),
        graph_node(build("Conv", vec![], 2), "Conv", vec![h, w2], vec![p]),
        graph_node(build("HardSigmoid", hard_sigmoid, 1), "HardSigmoid", vec![p], vec![gate]),
        graph_node(build("Mul", vec![], 2), "Mul", vec![gate, p], vec![out]),
    ];
    g.outputs = vec![out];
    let x = Tensor::new(
        xs.to_vec(),
        tensor(8, &xs).as_slice::<f32>().unwrap().iter().map(|v| v * 8.0).collect::<Vec<f32>>(),
    )
    .unwrap();
    let (kernels, want) = compile_and_compare(&mut g, &[&x], 1e-5);
    let pointwise = if super::conv_pointwise::available(6) { "conv-pointwise" } else { "conv-gemm" };
    assert_eq!(kernels, ["conv-depthwise", pointwise]);
    let v = want.as_slice::<f32>().unwrap();
    assert!(v.contains(&0.0) && v.iter().any(|&v| v < 0.0), "both bends of HardSwish are reached");
}
