//! The int8 kernels against the reference kernels (the oracle), exactly: QuantizeLinear,
//! DequantizeLinear and the integer products with zero points at the ends of their ranges,
//! saturating values, NaN, ties, and lengths that leave vector tails.

use super::tests::{build, build_at, check, compile_and_compare, graph_const, graph_node, tensor, In};
use crate::ir::{Attr, DType, Dim, Fact, Graph, Tensor};

/// Floats around `[-spread, spread]`, with exact ties (k + 0.5 after dividing by `scale`),
/// values far out of range and a NaN.
fn floats(seed: u64, shape: &[usize], spread: f32, scale: f32) -> Tensor {
    let mut v: Vec<f32> = tensor(seed, shape).as_slice::<f32>().unwrap().iter().map(|x| x * spread).collect();
    let specials =
        [2.5 * scale, -2.5 * scale, 0.5 * scale, -0.5 * scale, 1e9, -1e9, f32::NAN, 0.0, -0.0, 127.5 * scale];
    v.iter_mut().step_by(7).zip(specials).for_each(|(d, s)| *d = s);
    Tensor::new(shape.to_vec(), v).unwrap()
}

#[test]
fn quantize_linear_matches_the_reference_exactly() {
    let q = || build_at("QuantizeLinear", 21, vec![], 3);
    let scale = 0.02f32;
    for shape in [vec![1usize], vec![7], vec![3, 67], vec![2, 16, 33], vec![200_003]] {
        for zp in [Tensor::scalar(0u8), Tensor::scalar(255u8), Tensor::scalar(131u8)] {
            let inputs = vec![In::Fed(floats(1, &shape, 3.0, scale)), In::Const(Tensor::scalar(scale)), In::Const(zp)];
            assert_eq!(check("QuantizeLinear u8", q(), inputs), "quantize-linear");
        }
        for zp in [Tensor::scalar(-128i8), Tensor::scalar(127i8), Tensor::scalar(-3i8)] {
            let inputs = vec![In::Fed(floats(2, &shape, 3.0, scale)), In::Const(Tensor::scalar(scale)), In::Fed(zp)];
            assert_eq!(check("QuantizeLinear i8", q(), inputs), "quantize-linear");
        }
        // No zero point: uint8, zero 0.
        let inputs = vec![In::Fed(floats(3, &shape, 3.0, scale)), In::Fed(Tensor::scalar(scale)), In::Absent];
        assert_eq!(check("QuantizeLinear no zero point", q(), inputs), "quantize-linear");
    }
    // A scale of one element in a vector, and a zero scale (infinities and NaN saturate as the
    // reference's do).
    let inputs = vec![In::Fed(floats(4, &[5, 40], 2.0, 0.1)), In::Const(Tensor::vector(vec![0.1f32])), In::Absent];
    check("QuantizeLinear scale [1]", q(), inputs);
    let inputs =
        vec![In::Fed(floats(5, &[100], 2.0, 0.1)), In::Fed(Tensor::scalar(0f32)), In::Fed(Tensor::scalar(9u8))];
    check("QuantizeLinear zero scale", q(), inputs);
}

#[test]
fn per_axis_quantize_linear_matches_the_reference_exactly() {
    let scales = Tensor::vector(vec![0.01f32, 0.5, 0.003]);
    let zps = Tensor::vector(vec![-128i8, 127, 0]);
    let axis1 = build_at("QuantizeLinear", 21, vec![("axis", Attr::Int(1))], 3);
    let x = floats(6, &[2, 3, 70], 2.0, 0.01);
    let inputs = vec![In::Fed(x), In::Const(scales.clone()), In::Const(zps.clone())];
    assert_eq!(check("per-axis QuantizeLinear", axis1, inputs), "quantize-linear");
    // Runs of fewer than 64 elements per scale fall back at run time.
    let last = build_at("QuantizeLinear", 21, vec![("axis", Attr::Int(-1))], 3);
    let inputs = vec![In::Fed(floats(7, &[5, 3], 2.0, 0.01)), In::Const(scales), In::Const(zps)];
    check("per-axis QuantizeLinear, last axis", last, inputs);
}

#[test]
fn per_tensor_dequantize_linear_is_exact() {
    let n = 16 * 9 + 5;
    let u8s: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
    for (zp, x) in [
        (Tensor::scalar(0u8), Tensor::vector(u8s.clone())),
        (Tensor::scalar(255u8), Tensor::vector(u8s.clone())),
        (Tensor::scalar(-128i8), Tensor::vector(u8s.iter().map(|&b| b as i8).collect::<Vec<i8>>())),
        (Tensor::scalar(127i8), Tensor::vector(u8s.iter().map(|&b| b as i8).collect::<Vec<i8>>())),
    ] {
        let mut g = Graph::default();
        let xin = g.add_value("x", Fact::new(x.dtype(), vec![Dim::Known(n)]));
        g.inputs.push(xin);
        let s = graph_const(&mut g, "s", Tensor::scalar(0.0371f32));
        let z = graph_const(&mut g, "z", zp);
        let y = g.add_value("y", Fact::unknown());
        g.nodes =
            vec![graph_node(build_at("DequantizeLinear", 21, vec![], 3), "DequantizeLinear", vec![xin, s, z], vec![y])];
        g.outputs = vec![y];
        let (kernels, _) = compile_and_compare(&mut g, &[&x], 0.0);
        assert_eq!(kernels, ["dequantize"]);
    }
}

/// A dynamically quantised linear layer (MatMulInteger -> Cast -> Mul -> Add) on odd shapes with
/// the zero points at their ends: the fused integer kernel gives the unfused graph's floats.
#[test]
fn fused_integer_products_are_exact_at_extreme_zero_points() {
    for (case, &(m, k, n)) in [(1, 1, 1), (5, 3, 33), (17, 130, 65), (128, 384, 40)].iter().enumerate() {
        for (za, zb) in [(0u8, -128i8), (255, 127), (128, 0)] {
            let mut g = Graph::default();
            let a = g.add_value("a", Fact::new(DType::U8, vec![Dim::Known(m), Dim::Known(k)]));
            g.inputs.push(a);
            let av =
                Tensor::new(vec![m, k], (0..m * k).map(|i| ((i * 97 + case * 13) % 256) as u8).collect::<Vec<u8>>())
                    .unwrap();
            let bv: Vec<i8> = (0..k * n).map(|i| ((i * 61 + 7) % 256) as u8 as i8).collect();
            let b = graph_const(&mut g, "b", Tensor::new(vec![k, n], bv).unwrap());
            let zav = graph_const(&mut g, "za", Tensor::scalar(za));
            let zbv = graph_const(&mut g, "zb", Tensor::scalar(zb));
            let scale = graph_const(&mut g, "scale", Tensor::scalar(0.00731f32));
            let bias = graph_const(&mut g, "bias", tensor(case as u64, &[n]));
            let [p, f, s, out] = ["p", "f", "s", "out"].map(|v| g.add_value(v, Fact::unknown()));
            g.nodes = vec![
                graph_node(build("MatMulInteger", vec![], 4), "MatMulInteger", vec![a, b, zav, zbv], vec![p]),
                graph_node(build("Cast", vec![("to", Attr::Int(1))], 1), "Cast", vec![p], vec![f]),
                graph_node(build("Mul", vec![], 2), "Mul", vec![f, scale], vec![s]),
                graph_node(build("Add", vec![], 2), "Add", vec![s, bias], vec![out]),
            ];
            g.outputs = vec![out];
            let (kernels, _) = compile_and_compare(&mut g, &[&av], 0.0);
            assert_eq!(kernels, ["matmul-integer"], "{m}x{k}x{n}");
        }
    }
}

/// A QDQ MatMul as `convert --to int8-static` writes it (QuantizeLinear -> DequantizeLinear on
/// the activations, int8 weights behind a DequantizeLinear, a bias Add) runs on the integer
/// kernel after the load-time passes, and agrees with the float QDQ graph to float rounding;
/// with per-tensor weights and with a scale and zero point per column (per_channel weights).
#[test]
fn qdq_matmuls_run_on_the_integer_kernel() {
    let cases = [(true, (2, 3, 5)), (false, (128, 96, 70)), (true, (33, 384, 40))];
    for (per_column, (signed, (m, k, n))) in [false, true].into_iter().flat_map(|p| cases.map(|c| (p, c))) {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, vec![Dim::Known(1), Dim::Known(m), Dim::Known(k)]));
        g.inputs.push(x);
        let (zx, zw) = if signed {
            (Tensor::scalar(-7i8), Tensor::scalar(0i8))
        } else {
            (Tensor::scalar(250u8), Tensor::scalar(3u8))
        };
        let wq: Tensor = if signed {
            Tensor::new(vec![k, n], (0..k * n).map(|i| ((i * 61 + 5) % 256) as u8 as i8).collect::<Vec<i8>>()).unwrap()
        } else {
            Tensor::new(vec![k, n], (0..k * n).map(|i| ((i * 61 + 5) % 256) as u8).collect::<Vec<u8>>()).unwrap()
        };
        let (sw, zw) = match per_column {
            false => (Tensor::scalar(0.0021f32), zw),
            true => (
                Tensor::vector((0..n).map(|j| 0.001 + 0.0001 * j as f32).collect::<Vec<f32>>()),
                match signed {
                    true => Tensor::vector((0..n).map(|j| (j * 7 % 11) as i8 - 5).collect::<Vec<i8>>()),
                    false => Tensor::vector((0..n).map(|j| (j * 13 % 256) as u8).collect::<Vec<u8>>()),
                },
            ),
        };
        let c = graph_const;
        let (sx, zx, sw, zw) =
            (c(&mut g, "sx", Tensor::scalar(0.013f32)), c(&mut g, "zx", zx), c(&mut g, "sw", sw), c(&mut g, "zw", zw));
        let w = c(&mut g, "w", wq);
        let bias = c(&mut g, "bias", tensor(9, &[n]));
        let [xq, xd, wd, p, out] = ["xq", "xd", "wd", "p", "out"].map(|v| g.add_value(v, Fact::unknown()));
        let q = || build_at("QuantizeLinear", 13, vec![], 3);
        let dq = |axis: i64| build_at("DequantizeLinear", 13, vec![("axis", Attr::Int(axis))], 3);
        g.nodes = vec![
            graph_node(q(), "QuantizeLinear", vec![x, sx, zx], vec![xq]),
            graph_node(dq(1), "DequantizeLinear", vec![xq, sx, zx], vec![xd]),
            graph_node(dq(1), "DequantizeLinear", vec![w, sw, zw], vec![wd]),
            graph_node(build("MatMul", vec![], 2), "MatMul", vec![xd, wd], vec![p]),
            graph_node(build("Add", vec![], 2), "Add", vec![p, bias], vec![out]),
        ];
        g.outputs = vec![out];
        let xv = Tensor::new(
            vec![1, m, k],
            tensor(3, &[m * k]).as_slice::<f32>().unwrap().iter().map(|v| v * 2.0).collect::<Vec<f32>>(),
        )
        .unwrap();
        let (want, kernels, got) = unfused_and_optimized(&mut g, &xv);
        assert_eq!(kernels, ["quantize-linear", "matmul-integer"], "{m}x{k}x{n} per column {per_column}");
        assert_eq!(got.shape(), want.shape());
        let (got, want) = (got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
        let scale = want.iter().fold(1f32, |s, v| s.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{m}x{k}x{n} per column {per_column} element {i}: {a} vs {b}");
        }
    }
}

/// `g` (facts inferred here) run by the interpreter as it is, and compiled after the load-time
/// passes (the QDQ fusions among them) on two threads: the interpreter's output, the kernels
/// that ran, and the compiled graph's output.
pub(super) fn unfused_and_optimized(g: &mut Graph, x: &Tensor) -> (Tensor, Vec<&'static str>, Tensor) {
    use crate::backend::cpu::pool::ThreadPool;
    use crate::backend::{backends_for, compile, Device};
    use crate::ir::infer::infer_facts;
    use crate::ir::interp::Interpreter;
    use crate::ir::DataRef;
    infer_facts(g).unwrap();
    let refs = [DataRef::Tensor(x)];
    let want = Interpreter.run(g, &refs, &[]).unwrap().remove(0).into_tensor().unwrap();
    let mut opt = g.clone();
    crate::passes::optimize(&mut opt, &crate::passes::default_passes()).unwrap();
    infer_facts(&mut opt).unwrap();
    let compiled = compile(&opt, &backends_for(Device::Cpu).unwrap()).unwrap();
    let kernels = compiled.kernel_names().into_iter().map(|(k, _)| k).collect();
    let got = compiled.run(&ThreadPool::new(2), &refs, &[], None).unwrap().remove(0).into_tensor().unwrap();
    (want, kernels, got)
}
