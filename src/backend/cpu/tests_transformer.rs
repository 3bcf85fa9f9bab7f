//! Transformer-block kernels and fusions against the reference kernels (the oracle): the fused
//! layer norm, and the written-out Gelu folded into the matrix product before it.

use super::tests::{build, check, compile_and_compare, graph_const, graph_node, tensor, In};
use crate::ir::{DType, Dim, Fact, Graph, Tensor};
use crate::ops::fused::FusedLayerNorm;
use crate::passes::layer_norm::tests::{chain, Variant};
use std::sync::Arc;

#[test]
fn fused_layer_norms_match_the_reference() {
    for shape in [vec![1usize], vec![3, 17], vec![2, 4, 384], vec![5, 1000], vec![0, 8]] {
        let n = *shape.last().unwrap();
        let op = Arc::new(FusedLayerNorm { epsilon: 1e-5 });
        let x = Tensor::new(
            shape.clone(),
            tensor(1, &shape).as_slice::<f32>().unwrap().iter().map(|v| v * 3.0 + 0.5).collect::<Vec<f32>>(),
        )
        .unwrap();
        let inputs = vec![In::Fed(x), In::Const(tensor(2, &[n])), In::Const(tensor(3, &[n]))];
        assert_eq!(check("FusedLayerNorm", op, inputs), "layer-norm", "{shape:?}");
    }
}

#[test]
fn onnx_layer_normalization_runs_on_the_layer_norm_kernel() {
    use crate::ir::Attr;
    // (shape, axis, with a bias)
    for (shape, axis, bias) in [
        (vec![3usize, 17], -1i64, true),
        (vec![2, 5, 7], -1, false),
        (vec![2, 5, 7], 1, true),
        (vec![4, 3, 2, 9], -2, false),
        (vec![0, 8], -1, true),
    ] {
        let axis_at = axis.rem_euclid(shape.len() as i64) as usize;
        let normalised = &shape[axis_at..];
        let op = build("LayerNormalization", vec![("axis", Attr::Int(axis)), ("epsilon", Attr::Float(1e-4))], 3);
        let x = Tensor::new(
            shape.clone(),
            tensor(5, &shape).as_slice::<f32>().unwrap().iter().map(|v| v * 2.0 - 0.3).collect::<Vec<f32>>(),
        )
        .unwrap();
        let mut inputs = vec![In::Fed(x), In::Const(tensor(6, normalised))];
        inputs.push(if bias { In::Const(tensor(7, normalised)) } else { In::Absent });
        assert_eq!(check("LayerNormalization", op, inputs), "layer-norm", "{shape:?} axis {axis} bias {bias}");
    }
}

#[test]
fn written_out_layer_norm_runs_as_one_kernel() {
    let mut g = chain(Variant::Exact);
    let (kernels, _) = compile_and_compare(&mut g, &[&tensor(4, &[3, 8])], 1e-5);
    assert_eq!(kernels, ["layer-norm"]);
    let mut g = chain(Variant::Quartic);
    let (kernels, _) = compile_and_compare(&mut g, &[&tensor(4, &[3, 8])], 1e-5);
    assert_eq!(kernels.len(), 9);
}

/// MatMul by constant weights + bias, then Gelu written out: Div by sqrt 2, Erf, Add 1, Mul by
/// the product, Mul by 0.5.
#[test]
fn written_out_gelu_fuses_into_the_matrix_product() {
    let mut g = Graph::default();
    let x = g.add_value("x", Fact::new(DType::F32, vec![Dim::Known(5), Dim::Known(16)]));
    g.inputs.push(x);
    let w = graph_const(&mut g, "w", tensor(1, &[16, 24]));
    let b = graph_const(&mut g, "b", tensor(2, &[24]));
    let root2 = graph_const(&mut g, "root2", Tensor::scalar(std::f32::consts::SQRT_2));
    let one = graph_const(&mut g, "one", Tensor::scalar(1f32));
    let half = graph_const(&mut g, "half", Tensor::scalar(0.5f32));
    let [p, h, q, e, a, m, y] = ["p", "h", "q", "e", "a", "m", "y"].map(|n| g.add_value(n, Fact::unknown()));
    g.nodes = vec![
        graph_node(build("MatMul", vec![], 2), "MatMul", vec![x, w], vec![p]),
        graph_node(build("Add", vec![], 2), "Add", vec![p, b], vec![h]),
        graph_node(build("Div", vec![], 2), "Div", vec![h, root2], vec![q]),
        graph_node(build("Erf", vec![], 1), "Erf", vec![q], vec![e]),
        graph_node(build("Add", vec![], 2), "Add", vec![e, one], vec![a]),
        graph_node(build("Mul", vec![], 2), "Mul", vec![h, a], vec![m]),
        graph_node(build("Mul", vec![], 2), "Mul", vec![m, half], vec![y]),
    ];
    g.outputs = vec![y];
    let (kernels, _) = compile_and_compare(&mut g, &[&tensor(3, &[5, 16])], 1e-5);
    assert_eq!(kernels, ["matmul-packed"]);
}

#[test]
fn per_tensor_dequantization_matches_the_reference() {
    use super::tests::build_at;
    let bytes = |signed: bool| {
        let v: Vec<u8> = (0..1000u32).map(|i| (i * 37 % 256) as u8).collect();
        if signed {
            Tensor::new(vec![10, 100], v.into_iter().map(|b| b as i8).collect::<Vec<i8>>()).unwrap()
        } else {
            Tensor::new(vec![10, 100], v).unwrap()
        }
    };
    for signed in [false, true] {
        let zp = if signed { Tensor::scalar(-3i8) } else { Tensor::scalar(131u8) };
        let op = build_at("DequantizeLinear", 21, vec![], 3);
        let inputs = vec![In::Fed(bytes(signed)), In::Const(Tensor::scalar(0.037f32)), In::Const(zp)];
        assert_eq!(check("DequantizeLinear", op.clone(), inputs), "dequantize");
        let inputs = vec![In::Fed(bytes(signed)), In::Const(Tensor::scalar(0.5f32)), In::Absent];
        check("DequantizeLinear without a zero point", op, inputs);
    }
    // Per-axis scales run the reference.
    let op = build_at("DequantizeLinear", 21, vec![("axis", crate::ir::Attr::Int(0))], 3);
    let scales = Tensor::vector((0..10).map(|i| 0.1 + i as f32).collect::<Vec<f32>>());
    let zps = Tensor::vector(vec![7u8; 10]);
    check("per-axis DequantizeLinear", op, vec![In::Fed(bytes(false)), In::Const(scales), In::Const(zps)]);
}
