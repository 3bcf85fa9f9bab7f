//! QLinearConv, ConvInteger and QLinearMatMul on the integer GEMM against their reference ops
//! (the oracle), exactly: odd shapes, both signednesses of input, weights and output, per-tensor
//! and per-channel weight scales, zero points at the ends of their ranges, padding, strides,
//! dilations and groups. And the QDQ Conv rewrite against the float QDQ graph.

use super::tests::{build, build_at, check, graph_const, graph_node, tensor, values, In};
use super::tests_int8::unfused_and_optimized;
use crate::ir::{Attr, DType, Dim, Fact, Graph, Tensor};

/// Deterministic bytes of the given signedness, the extremes among them.
fn bytes(seed: u64, shape: &[usize], signed: bool) -> Tensor {
    let n = shape.iter().product();
    let mut v: Vec<u8> = values(seed, n).iter().map(|x| ((x + 1.0) * 127.99) as u8).collect();
    v.iter_mut().zip([0u8, 255, 128, 127]).for_each(|(d, x)| *d = x);
    match signed {
        true => Tensor::new(shape.to_vec(), v.into_iter().map(|b| b as i8).collect::<Vec<i8>>()).unwrap(),
        false => Tensor::new(shape.to_vec(), v).unwrap(),
    }
}

/// A one-element zero point, or a vector, of the given signedness.
fn zero(values: &[i32], signed: bool) -> Tensor {
    match (signed, values.len()) {
        (true, 1) => Tensor::scalar(values[0] as i8),
        (false, 1) => Tensor::scalar(values[0] as u8),
        (true, _) => Tensor::vector(values.iter().map(|&v| v as i8).collect::<Vec<i8>>()),
        (false, _) => Tensor::vector(values.iter().map(|&v| v as u8).collect::<Vec<u8>>()),
    }
}

/// One convolution case: input shape, weight shape and attributes.
struct Case {
    x: Vec<usize>,
    w: Vec<usize>,
    attrs: Vec<(&'static str, Attr)>,
}

fn cases() -> Vec<Case> {
    let ints = |v: &[i64]| Attr::Ints(v.to_vec());
    vec![
        // 1x1, stride 1: the input planes read in place.
        Case { x: vec![1, 5, 7, 9], w: vec![33, 5, 1, 1], attrs: vec![] },
        Case { x: vec![2, 16, 6, 5], w: vec![8, 16, 1, 1], attrs: vec![] },
        // 3x3 padded, stride 1 and 2; 1x1 with a stride; dilation; asymmetric pads.
        Case { x: vec![1, 3, 11, 13], w: vec![17, 3, 3, 3], attrs: vec![("pads", ints(&[1, 1, 1, 1]))] },
        Case {
            x: vec![2, 4, 9, 8],
            w: vec![6, 4, 3, 3],
            attrs: vec![("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))],
        },
        Case { x: vec![1, 7, 9, 9], w: vec![5, 7, 1, 1], attrs: vec![("strides", ints(&[2, 2]))] },
        Case {
            x: vec![1, 3, 10, 12],
            w: vec![4, 3, 3, 2],
            attrs: vec![("dilations", ints(&[2, 1])), ("pads", ints(&[0, 1, 2, 0]))],
        },
        // Groups, and a 1-D convolution.
        Case {
            x: vec![1, 6, 5, 7],
            w: vec![4, 3, 3, 3],
            attrs: vec![("group", Attr::Int(2)), ("pads", ints(&[1, 1, 1, 1]))],
        },
        Case { x: vec![2, 5, 19], w: vec![7, 5, 3], attrs: vec![("pads", ints(&[2, 0]))] },
    ]
}

#[test]
fn qlinear_conv_matches_the_reference_exactly() {
    for (i, case) in cases().into_iter().enumerate() {
        let co = case.w[0];
        for (xs, ws, ys) in [(false, true, false), (true, true, true), (false, false, true), (true, false, false)] {
            for per_channel in [false, true] {
                let seed = (i * 8) as u64 + xs as u64 * 4 + ws as u64 * 2 + per_channel as u64;
                let w_scale = match per_channel {
                    true => Tensor::vector((0..co).map(|c| 0.002 + 0.0007 * c as f32).collect::<Vec<f32>>()),
                    false => Tensor::scalar(0.0031f32),
                };
                // Weight zero points: one value (the GEMM's), or per channel all alike.
                let wz = if ws { -1 } else { 131 };
                let w_zero = zero(&if per_channel { vec![wz; co] } else { vec![wz] }, ws);
                let x_zero = zero(&[if xs { -128 } else { 255 }], xs);
                let bias = Tensor::vector((0..co as i32).map(|c| c * 977 - 4000).collect::<Vec<i32>>());
                let inputs = vec![
                    In::Fed(bytes(seed, &case.x, xs)),
                    In::Const(Tensor::scalar(0.021f32)),
                    In::Const(x_zero),
                    In::Const(bytes(seed + 100, &case.w, ws)),
                    In::Const(w_scale),
                    In::Const(w_zero),
                    In::Const(Tensor::scalar(0.17f32)),
                    In::Const(zero(&[if ys { 3 } else { 120 }], ys)),
                    if seed.is_multiple_of(3) { In::Absent } else { In::Const(bias) },
                ];
                let op = build_at("QLinearConv", 10, case.attrs.clone(), 9);
                let name = format!("QLinearConv case {i} x {xs} w {ws} y {ys} per-channel {per_channel}");
                assert_eq!(check(&name, op, inputs), "qlinear-conv", "{name}");
            }
        }
    }
}

/// Depthwise QLinearConv (group == channels) on its own kernel: odd sizes, strides, dilations,
/// asymmetric padding, a row wider than its column span, 1-D, and weight zero points that differ
/// per channel (which the GEMM path cannot take).
#[test]
fn qlinear_depthwise_matches_the_reference_exactly() {
    let ints = |v: &[i64]| Attr::Ints(v.to_vec());
    let cases = [
        (vec![1, 5, 7, 9], vec![3, 3], vec![("pads", ints(&[1, 1, 1, 1]))]),
        (vec![2, 17, 11, 13], vec![3, 3], vec![("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))]),
        (vec![1, 3, 9, 10], vec![5, 3], vec![("pads", ints(&[2, 0, 1, 2])), ("dilations", ints(&[1, 2]))]),
        (vec![1, 4, 3, 301], vec![3, 3], vec![("pads", ints(&[1, 1, 1, 1]))]),
        (vec![1, 6, 8, 8], vec![2, 2], vec![("strides", ints(&[3, 2]))]),
        (vec![2, 7, 19], vec![3], vec![("pads", ints(&[2, 1])), ("strides", ints(&[2]))]),
    ];
    for (i, (x, kernel, mut attrs)) in cases.into_iter().enumerate() {
        let c = x[1];
        attrs.push(("group", Attr::Int(c as i64)));
        let mut w = vec![c, 1];
        w.extend(&kernel);
        for (xs, ws, ys) in [(false, true, false), (true, true, true), (false, false, true), (true, false, false)] {
            for per_channel in [false, true] {
                let seed = 300 + (i * 8) as u64 + xs as u64 * 4 + ws as u64 * 2 + per_channel as u64;
                let (w_scale, w_zero) = match per_channel {
                    true => (
                        Tensor::vector((0..c).map(|o| 0.002 + 0.0007 * o as f32).collect::<Vec<f32>>()),
                        zero(
                            &(0..c as i32)
                                .map(|o| if ws { o * 37 % 256 - 128 } else { o * 53 % 256 })
                                .collect::<Vec<_>>(),
                            ws,
                        ),
                    ),
                    false => (Tensor::scalar(0.0031f32), zero(&[if ws { -1 } else { 131 }], ws)),
                };
                let bias = Tensor::vector((0..c as i32).map(|o| o * 977 - 4000).collect::<Vec<i32>>());
                let inputs = vec![
                    In::Fed(bytes(seed, &x, xs)),
                    In::Const(Tensor::scalar(0.021f32)),
                    In::Const(zero(&[if xs { -128 } else { 255 }], xs)),
                    In::Const(bytes(seed + 100, &w, ws)),
                    In::Const(w_scale),
                    In::Const(w_zero),
                    In::Const(Tensor::scalar(0.17f32)),
                    In::Const(zero(&[if ys { 3 } else { 120 }], ys)),
                    if seed.is_multiple_of(3) { In::Absent } else { In::Const(bias) },
                ];
                let op = build_at("QLinearConv", 10, attrs.clone(), 9);
                let name = format!("depthwise QLinearConv case {i} x {xs} w {ws} y {ys} per-channel {per_channel}");
                assert_eq!(check(&name, op, inputs), "qlinear-depthwise", "{name}");
            }
        }
    }
}

#[test]
fn conv_integer_matches_the_reference_exactly() {
    for (i, case) in cases().into_iter().enumerate() {
        for (xs, ws) in [(false, false), (true, true), (false, true), (true, false)] {
            let seed = 500 + (i * 4) as u64 + xs as u64 * 2 + ws as u64;
            let inputs = vec![
                In::Fed(bytes(seed, &case.x, xs)),
                In::Const(bytes(seed + 1, &case.w, ws)),
                if xs { In::Const(zero(&[77], xs)) } else { In::Absent },
                In::Const(zero(&[if ws { 127 } else { 0 }], ws)),
            ];
            let op = build_at("ConvInteger", 10, case.attrs.clone(), 4);
            let name = format!("ConvInteger case {i} x {xs} w {ws}");
            assert_eq!(check(&name, op, inputs), "conv-integer", "{name}");
        }
    }
}

#[test]
fn qlinear_matmul_matches_the_reference_exactly() {
    for (i, &(m, k, n)) in [(1, 1, 1), (5, 3, 33), (17, 130, 65), (64, 96, 40)].iter().enumerate() {
        let signs = [(false, true, false), (true, false, true), (false, false, false)];
        // B's scale and zero point per tensor, and per column (the requantizing epilogue's
        // multiplier per column).
        for ((a_signed, b_signed, y_signed), per_column) in signs.into_iter().flat_map(|s| [(s, false), (s, true)]) {
            let seed = 900 + i as u64 * 8;
            let (b_scale, b_zero) = match per_column {
                false => (Tensor::scalar(0.0021f32), zero(&[if b_signed { -128 } else { 255 }], b_signed)),
                true => (
                    Tensor::vector((0..n).map(|j| 0.0011 + 0.0003 * j as f32).collect::<Vec<f32>>()),
                    zero(
                        &(0..n as i32)
                            .map(|j| if b_signed { j * 29 % 256 - 128 } else { j * 41 % 256 })
                            .collect::<Vec<_>>(),
                        b_signed,
                    ),
                ),
            };
            let inputs = vec![
                In::Fed(bytes(seed, &[2, m, k], a_signed)),
                In::Const(Tensor::scalar(0.013f32)),
                In::Const(zero(&[if a_signed { 127 } else { 0 }], a_signed)),
                In::Const(bytes(seed + 1, &[k, n], b_signed)),
                In::Const(b_scale),
                In::Const(b_zero),
                In::Const(Tensor::scalar(0.0173f32)),
                In::Const(zero(&[if y_signed { -5 } else { 128 }], y_signed)),
            ];
            let name = format!("QLinearMatMul {m}x{k}x{n} per column {per_column}");
            assert_eq!(check(&name, build_at("QLinearMatMul", 10, vec![], 8), inputs), "qlinear-matmul", "{name}");
        }
    }
}

/// A QDQ Conv + Relu as `convert --to int8-static` writes it (QuantizeLinear/DequantizeLinear on
/// the input, int8 weights per channel and an int32 bias behind DequantizeLinear, the Relu folded
/// into the output's QuantizeLinear) runs as one QLinearConv after the load-time passes, and its
/// quantized output is the float QDQ graph's to within one step, on a few elements at most.
#[test]
fn qdq_convs_run_on_the_integer_kernel() {
    let cases = [(true, (3, 16, 15, 3), false), (false, (24, 40, 9, 1), false), (true, (8, 5, 7, 1), false)];
    for (signed, (c, co, hw, kernel), depthwise) in cases {
        let mut g = Graph::default();
        let x =
            g.add_value("x", Fact::new(DType::F32, vec![Dim::Known(1), Dim::Known(c), Dim::Known(hw), Dim::Known(hw)]));
        g.inputs.push(x);
        let (sx, sy) = (0.011f32, 0.009f32);
        let (zx, zy) = match signed {
            true => (Tensor::scalar(-9i8), Tensor::scalar(-128i8)),
            false => (Tensor::scalar(131u8), Tensor::scalar(0u8)),
        };
        let ws: Vec<f32> = (0..co).map(|o| 0.004 + 0.0005 * o as f32).collect();
        let wq = bytes(7, &[co, if depthwise { 1 } else { c }, kernel, kernel], true);
        let bias: Vec<i32> = (0..co as i32).map(|o| o * 311 - 2000).collect();
        let k = graph_const;
        let (sx_v, zx_v, sy_v, zy_v) = (
            k(&mut g, "sx", Tensor::scalar(sx)),
            k(&mut g, "zx", zx),
            k(&mut g, "sy", Tensor::scalar(sy)),
            k(&mut g, "zy", zy),
        );
        let (w, sw, zw) = (
            k(&mut g, "w", wq),
            k(&mut g, "sw", Tensor::vector(ws.clone())),
            k(&mut g, "zw", Tensor::vector(vec![0i8; co])),
        );
        let bscale: Vec<f32> = ws.iter().map(|s| s * sx).collect();
        let (b, sb) = (k(&mut g, "b", Tensor::vector(bias)), k(&mut g, "sb", Tensor::vector(bscale)));
        let [xq, xd, wd, bd, y, r, yq, out] =
            ["xq", "xd", "wd", "bd", "y", "r", "yq", "out"].map(|v| g.add_value(v, Fact::unknown()));
        let q = || build_at("QuantizeLinear", 13, vec![], 3);
        let dq = |axis: i64| build_at("DequantizeLinear", 13, vec![("axis", Attr::Int(axis))], 3);
        let pad = (kernel / 2) as i64;
        let group = if depthwise { c as i64 } else { 1 };
        let conv = build("Conv", vec![("pads", Attr::Ints(vec![pad; 4])), ("group", Attr::Int(group))], 3);
        g.nodes = vec![
            graph_node(q(), "QuantizeLinear", vec![x, sx_v, zx_v], vec![xq]),
            graph_node(dq(1), "DequantizeLinear", vec![xq, sx_v, zx_v], vec![xd]),
            graph_node(dq(0), "DequantizeLinear", vec![w, sw, zw], vec![wd]),
            graph_node(
                build_at("DequantizeLinear", 13, vec![("axis", Attr::Int(0))], 2),
                "DequantizeLinear",
                vec![b, sb],
                vec![bd],
            ),
            graph_node(conv, "Conv", vec![xd, wd, bd], vec![y]),
            graph_node(build("Relu", vec![], 1), "Relu", vec![y], vec![r]),
            graph_node(q(), "QuantizeLinear", vec![r, sy_v, zy_v], vec![yq]),
            graph_node(dq(1), "DequantizeLinear", vec![yq, sy_v, zy_v], vec![out]),
        ];
        g.outputs = vec![out];
        let xv = Tensor::new(
            vec![1, c, hw, hw],
            tensor(3, &[c * hw * hw]).as_slice::<f32>().unwrap().iter().map(|v| v * 1.3).collect::<Vec<f32>>(),
        )
        .unwrap();
        let (want, kernels, got) = unfused_and_optimized(&mut g, &xv);
        let conv_kernel = if depthwise { "qlinear-depthwise" } else { "qlinear-conv" };
        assert_eq!(kernels, ["quantize-linear", conv_kernel, "dequantize"], "signed {signed}");
        assert_eq!(got.shape(), want.shape());
        let (got, want) = (got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
        // The float graph rounds every product and partial sum, the integer one once at the end:
        // an output on a rounding boundary can land one step away.
        let mut off = 0;
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= sy * 1.001, "signed {signed} element {i}: {a} vs {b}");
            off += (a != b) as usize;
        }
        assert!(off * 100 <= got.len(), "signed {signed}: {off} of {} one step off", got.len());
        assert!(want.iter().any(|&v| v > 0.0) && want.contains(&0.0), "a test that exercises the Relu");
    }
}
