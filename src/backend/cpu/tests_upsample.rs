//! Resize and ConvTranspose kernels against the reference kernels (the oracle), through the whole
//! compile path at 1 and 3 threads; see `tests.rs` for the helpers.

use super::tests::{build, build_at, check, compile_and_compare, graph_const, graph_node, ints, tensor, In};
use crate::ir::{Attr, DType, Dim, Fact, Graph, Tensor};
use crate::ops::fused::{Activation, FusedConvTranspose};
use std::sync::Arc;

fn s(v: &str) -> Attr {
    Attr::String(v.into())
}

fn f32s(v: &[f32]) -> Tensor {
    Tensor::vector(v.to_vec())
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::vector(v.to_vec())
}

/// Resize-18 of a fed `x` with constant scales or sizes (and roi), checked against the reference.
fn resize(attrs: Vec<(&str, Attr)>, x: &[usize], roi: Option<Tensor>, scales: Option<Tensor>, sizes: Option<Tensor>) {
    let name = format!("Resize {attrs:?} {x:?} scales {scales:?} sizes {sizes:?}");
    let op = build_at("Resize", 19, attrs, 4);
    let c = |t: Option<Tensor>| t.map_or(In::Absent, In::Const);
    let kernel = check(&name, op, vec![In::Fed(tensor(7, x)), c(roi), c(scales), c(sizes)]);
    assert_eq!(kernel, "resize", "{name}");
}

#[test]
fn nearest_resizes_match_the_reference() {
    let coords = ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric"];
    let roundings = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
    for coord in coords {
        for rounding in roundings {
            let attrs = || {
                vec![
                    ("mode", s("nearest")),
                    ("coordinate_transformation_mode", s(coord)),
                    ("nearest_mode", s(rounding)),
                ]
            };
            resize(attrs(), &[1, 3, 5, 7], None, Some(f32s(&[1., 1., 2., 2.])), None);
            resize(attrs(), &[2, 2, 7, 5], None, Some(f32s(&[1., 1., 1.7, 0.6])), None);
            resize(attrs(), &[1, 2, 4, 6], None, None, Some(i64s(&[1, 2, 9, 3])));
            // Resampled leading axes and a rank-3 input.
            resize(attrs(), &[2, 3, 5], None, Some(f32s(&[2., 1.5, 1.])), None);
        }
    }
    // Only the width: the rows are copied as they are.
    resize(vec![("mode", s("nearest"))], &[1, 2, 3, 8], None, Some(f32s(&[1., 1., 3., 1.])), None);
    // Opset 18's axes.
    let axes = || vec![("mode", s("nearest")), ("axes", ints(&[3, 2]))];
    resize(axes(), &[1, 2, 3, 5], None, Some(f32s(&[2., 3.])), None);
    resize(axes(), &[1, 2, 3, 5], None, None, Some(i64s(&[4, 7])));
    // Integer upscales of the last axis (DBNet's neck: asymmetric, floor), each source value
    // repeated: the unrolled factors and another one, on odd widths.
    let neck = || vec![("mode", s("nearest")), ("nearest_mode", s("floor"))];
    for (x, scales) in [
        ([1, 3, 5, 7], [1., 1., 2., 2.]),
        ([1, 2, 3, 5], [1., 1., 4., 4.]),
        ([2, 2, 3, 9], [1., 1., 8., 8.]),
        ([1, 3, 4, 5], [1., 1., 1., 3.]),
        ([1, 2, 5, 3], [1., 1., 2., 5.]),
    ] {
        resize(neck(), &x, None, Some(f32s(&scales)), None);
    }
    // Rank 1 and a single element.
    resize(vec![("mode", s("nearest"))], &[5], None, Some(f32s(&[2.6])), None);
    resize(vec![("mode", s("nearest"))], &[1, 1, 1, 1], None, Some(f32s(&[1., 1., 3., 2.])), None);
}

#[test]
fn interpolating_resizes_match_the_reference() {
    let coords = ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel", "half_pixel_symmetric"];
    for mode in ["linear", "cubic"] {
        for coord in coords {
            let attrs = || vec![("mode", s(mode)), ("coordinate_transformation_mode", s(coord))];
            resize(attrs(), &[1, 3, 5, 7], None, Some(f32s(&[1., 1., 2., 2.])), None);
            resize(attrs(), &[2, 2, 7, 5], None, Some(f32s(&[1., 1., 1.7, 0.6])), None);
            resize(attrs(), &[1, 2, 4, 6], None, None, Some(i64s(&[1, 2, 1, 11])));
            resize(attrs(), &[3, 5], None, Some(f32s(&[2., 0.5])), None);
        }
    }
    // Antialiased downsampling, cubic's exclude_outside and coefficient.
    let attrs = vec![("mode", s("linear")), ("antialias", Attr::Int(1))];
    resize(attrs, &[1, 2, 9, 11], None, Some(f32s(&[1., 1., 0.4, 0.7])), None);
    let attrs = vec![("mode", s("cubic")), ("exclude_outside", Attr::Int(1)), ("cubic_coeff_a", Attr::Float(-0.5))];
    resize(attrs, &[1, 2, 6, 5], None, Some(f32s(&[1., 1., 1.5, 2.5])), None);
    // tf_crop_and_resize: positions outside the roi take the extrapolation value.
    for mode in ["linear", "nearest"] {
        let attrs = vec![
            ("mode", s(mode)),
            ("coordinate_transformation_mode", s("tf_crop_and_resize")),
            ("extrapolation_value", Attr::Float(-3.5)),
        ];
        let roi = f32s(&[0., 0., -0.2, 0.4, 1., 1., 0.9, 1.3]);
        resize(attrs, &[1, 2, 6, 5], Some(roi), None, Some(i64s(&[1, 2, 4, 7])));
    }
    // Aspect-ratio policies with sizes.
    for policy in ["not_larger", "not_smaller"] {
        let attrs = vec![("mode", s("linear")), ("keep_aspect_ratio_policy", s(policy)), ("axes", ints(&[2, 3]))];
        resize(attrs, &[1, 2, 4, 6], None, None, Some(i64s(&[7, 9])));
    }
}

#[test]
fn older_resize_and_upsample_forms_match_the_reference() {
    // Resize-10 and Upsample-9 take scales as input 1 (asymmetric, floor).
    for (op_type, opset) in [("Resize", 10), ("Upsample", 9)] {
        for mode in ["nearest", "linear"] {
            let op = build_at(op_type, opset, vec![("mode", s(mode))], 2);
            let scales = In::Const(f32s(&[1., 1., 2., 1.5]));
            let kernel = check(op_type, op, vec![In::Fed(tensor(3, &[1, 2, 3, 4])), scales]);
            assert_eq!(kernel, "resize");
        }
    }
    // tf_half_pixel_for_nn exists before opset 13.
    let op = build_at("Resize", 11, vec![("coordinate_transformation_mode", s("tf_half_pixel_for_nn"))], 4);
    let inputs = vec![In::Fed(tensor(3, &[1, 2, 3, 4])), In::Absent, In::Const(f32s(&[1., 1., 1.6, 2.2])), In::Absent];
    check("Resize-11", op, inputs);
}

#[test]
fn resizes_of_empty_or_integer_tensors_run_the_reference() {
    let op = build("Resize", vec![("mode", s("nearest"))], 4);
    let x = Tensor::new(vec![1, 0, 2, 2], Vec::<f32>::new()).unwrap();
    check("empty", op.clone(), vec![In::Fed(x), In::Absent, In::Const(f32s(&[1., 1., 2., 2.])), In::Absent]);
    let x = Tensor::new(vec![1, 1, 2, 2], vec![1i64, 2, 3, 4]).unwrap();
    check("int", op, vec![In::Fed(x), In::Absent, In::Const(f32s(&[1., 1., 2., 2.])), In::Absent]);
}

/// ConvTranspose-22 of a fed x with constant weights (and bias), checked against the reference.
fn conv_transpose(attrs: Vec<(&str, Attr)>, xs: &[usize], ws: &[usize], bias: bool) {
    let name = format!("ConvTranspose {attrs:?} x {xs:?} w {ws:?}");
    let group = attrs.iter().find(|(n, _)| *n == "group").map_or(1, |(_, a)| if let Attr::Int(g) = a { *g } else { 1 });
    let op = build("ConvTranspose", attrs, 3);
    let b = || if bias { In::Const(tensor(9, &[ws[1] * group as usize])) } else { In::Absent };
    let inputs = || vec![In::Fed(tensor(1, xs)), In::Const(tensor(2, ws)), b()];
    assert_eq!(check(&name, op.clone(), inputs()), "conv-transpose", "{name}");
    // With a fused activation: applied per written row where the taps tile the output, else at
    // the end.
    for act in [Activation::Relu, Activation::Sigmoid] {
        let fused = Arc::new(FusedConvTranspose { conv_transpose: op.clone(), act });
        assert_eq!(check(&name, fused, inputs()), "conv-transpose", "{name} + {act:?}");
    }
}

#[test]
fn transposed_convolutions_match_the_reference() {
    // DBNet's upsampling head: 2x2 kernel, stride 2.
    conv_transpose(vec![("strides", ints(&[2, 2]))], &[1, 4, 5, 6], &[4, 3, 2, 2], true);
    conv_transpose(vec![("strides", ints(&[2, 2]))], &[2, 3, 4, 4], &[3, 1, 2, 2], false);
    // The same with output_padding: trailing rows and columns of bias alone (or zeros).
    for bias in [true, false] {
        let padded = vec![("strides", ints(&[2, 2])), ("output_padding", ints(&[1, 1]))];
        conv_transpose(padded, &[1, 3, 5, 3], &[3, 2, 2, 2], bias);
    }
    // Overlapping taps, pads, dilations, output_padding.
    conv_transpose(vec![], &[1, 2, 5, 4], &[2, 3, 3, 3], true);
    conv_transpose(vec![("strides", ints(&[2, 3])), ("pads", ints(&[1, 0, 2, 1]))], &[1, 3, 5, 4], &[3, 2, 3, 4], true);
    conv_transpose(
        vec![("dilations", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
        &[1, 2, 4, 5],
        &[2, 2, 3, 3],
        false,
    );
    let padded = vec![("strides", ints(&[3, 2])), ("output_padding", ints(&[2, 1]))];
    conv_transpose(padded, &[1, 2, 3, 4], &[2, 2, 3, 3], true);
    // Groups, output_shape, auto_pad, 1-D and 3-D.
    conv_transpose(vec![("group", Attr::Int(2)), ("strides", ints(&[2, 2]))], &[1, 4, 3, 5], &[4, 3, 3, 3], true);
    conv_transpose(vec![("group", Attr::Int(3))], &[2, 3, 4, 4], &[3, 1, 2, 2], true);
    let shaped = vec![("strides", ints(&[2, 2])), ("output_shape", ints(&[10, 8]))];
    conv_transpose(shaped, &[1, 2, 4, 3], &[2, 2, 3, 3], true);
    let same = vec![("strides", ints(&[2, 2])), ("auto_pad", s("SAME_UPPER"))];
    conv_transpose(same, &[1, 2, 3, 3], &[2, 2, 3, 3], false);
    conv_transpose(vec![("strides", ints(&[2]))], &[2, 3, 7], &[3, 2, 3], true);
    conv_transpose(vec![("strides", ints(&[1, 2, 2]))], &[1, 2, 3, 3, 2], &[2, 2, 2, 2, 2], true);
}

#[test]
fn transposed_convolutions_with_bad_shapes_fail_like_the_reference() {
    // X with 3 channels, W made for 2: the geometry check gives the reference's error.
    use crate::ir::{Dim, Fact, Graph};
    let mut g = Graph::default();
    let x = g.add_value(
        "x",
        Fact::new(crate::ir::DType::F32, vec![Dim::Known(1), Dim::Unknown, Dim::Known(3), Dim::Known(3)]),
    );
    g.inputs.push(x);
    let w = super::tests::graph_const(&mut g, "w", tensor(2, &[2, 2, 2, 2]));
    let y = g.add_value("y", Fact::unknown());
    g.outputs.push(y);
    let op = build("ConvTranspose", vec![], 2);
    g.nodes.push(super::tests::graph_node(op, "ConvTranspose", vec![x, w], vec![y]));
    crate::ir::infer::infer_facts(&mut g).unwrap();
    let compiled =
        crate::backend::compile(&g, &crate::backend::backends_for(crate::backend::Device::Cpu).unwrap()).unwrap();
    assert_eq!(compiled.kernel_names()[0].0, "conv-transpose");
    let bad = tensor(3, &[1, 3, 3, 3]);
    let pool = super::pool::ThreadPool::new(1);
    let e = compiled.run(&pool, &[crate::ir::DataRef::Tensor(&bad)], &[], None).unwrap_err();
    assert!(e.message.contains("channels"), "{e}");
}

/// ConvTranspose (group `group`) + BatchNormalization, and (with `shared`) a second user of the
/// ConvTranspose's output, which keeps the BatchNormalization apart.
fn transposed_then_batch_norm(group: i64, shared: bool) -> Vec<&'static str> {
    use super::tests::{compile_and_compare, graph_const, graph_node};
    use crate::ir::{Dim, Fact, Graph};
    let mut g = Graph::default();
    let xs = [1usize, 4, 5, 6];
    let x = g.add_value("x", Fact::new(crate::ir::DType::F32, xs.iter().map(|&d| Dim::Known(d)).collect()));
    g.inputs.push(x);
    let m = 3 * group as usize;
    let c = graph_const;
    let w = c(&mut g, "w", tensor(1, &[4, 3, 2, 2]));
    let b = c(&mut g, "b", tensor(2, &[m]));
    let gamma = c(&mut g, "gamma", tensor(3, &[m]));
    let beta = c(&mut g, "beta", tensor(4, &[m]));
    let mean = c(&mut g, "mean", tensor(5, &[m]));
    let var = c(&mut g, "var", Tensor::new(vec![m], (0..m).map(|i| 0.25 + i as f32).collect()).unwrap());
    let [y, z, out] = ["y", "z", "out"].map(|n| g.add_value(n, Fact::unknown()));
    let attrs = vec![("strides", ints(&[2, 2])), ("group", Attr::Int(group))];
    g.nodes = vec![
        graph_node(build("ConvTranspose", attrs, 3), "ConvTranspose", vec![x, w, b], vec![y]),
        graph_node(
            build("BatchNormalization", vec![], 5),
            "BatchNormalization",
            vec![y, gamma, beta, mean, var],
            vec![z],
        ),
    ];
    if shared {
        g.nodes.push(graph_node(build("Add", vec![], 2), "Add", vec![z, y], vec![out]));
    } else {
        g.nodes.push(graph_node(build("Relu", vec![], 1), "Relu", vec![z], vec![out]));
    }
    g.outputs = vec![out];
    compile_and_compare(&mut g, &[&tensor(6, &xs)], 1e-5).0
}

#[test]
fn batch_norm_folds_into_the_transposed_convolution() {
    // The Relu after it fuses too.
    assert_eq!(transposed_then_batch_norm(1, false), ["conv-transpose"]);
    assert_eq!(transposed_then_batch_norm(2, false), ["conv-transpose"]);
    // A second user of the ConvTranspose's output needs it before the normalisation.
    assert_eq!(transposed_then_batch_norm(1, true), ["conv-transpose", "reference", "binary"]);
}

#[test]
fn transposed_convolutions_without_overlap_match_the_reference() {
    // Kernel = stride: every input pixel owns its block of outputs (the tiled path), with
    // trailing bias-only rows from output_padding or output_shape, groups, 1-D, and tiles of
    // many rows (a 70-pixel-wide image spans several tiles).
    let s2 = || ("strides", ints(&[2, 2]));
    conv_transpose(vec![s2()], &[2, 5, 33, 70], &[5, 3, 2, 2], true);
    conv_transpose(vec![("strides", ints(&[3, 2]))], &[1, 3, 4, 5], &[3, 2, 3, 2], false);
    conv_transpose(vec![s2(), ("output_padding", ints(&[1, 1]))], &[1, 2, 3, 4], &[2, 2, 2, 2], true);
    conv_transpose(vec![s2(), ("output_shape", ints(&[9, 10]))], &[1, 2, 3, 4], &[2, 2, 2, 2], true);
    // output_shape smaller than the taps reach trims them: the general path.
    conv_transpose(vec![s2(), ("output_shape", ints(&[5, 7]))], &[1, 2, 3, 4], &[2, 2, 2, 2], true);
    conv_transpose(vec![s2(), ("group", Attr::Int(2))], &[1, 4, 5, 3], &[4, 2, 2, 2], true);
    conv_transpose(vec![("strides", ints(&[4]))], &[2, 3, 9], &[3, 2, 4], true);
    // The same geometry through pads does overlap-free trimming the general path handles.
    conv_transpose(vec![s2(), ("pads", ints(&[1, 0, 1, 0]))], &[1, 2, 4, 4], &[2, 2, 2, 2], true);
}

/// DBNet's head: ConvTranspose -> BatchNormalization -> Relu -> ConvTranspose -> Sigmoid compiles
/// to two fused transposed convolutions and matches the interpreter on the unfused graph.
#[test]
fn activations_fuse_into_transposed_convolutions() {
    let mut g = Graph::default();
    let xs = [1usize, 5, 7, 9];
    let x = g.add_value("x", Fact::new(DType::F32, xs.iter().map(|&d| Dim::Known(d)).collect()));
    g.inputs.push(x);
    let c = graph_const;
    let w0 = c(&mut g, "w0", tensor(1, &[5, 3, 2, 2]));
    let b0 = c(&mut g, "b0", tensor(2, &[3]));
    let gamma = c(&mut g, "gamma", tensor(3, &[3]));
    let beta = c(&mut g, "beta", tensor(4, &[3]));
    let mean = c(&mut g, "mean", tensor(5, &[3]));
    let var = c(&mut g, "var", Tensor::new(vec![3], vec![0.5f32, 1.0, 2.0]).unwrap());
    let w1 = c(&mut g, "w1", tensor(6, &[3, 1, 2, 2]));
    let b1 = c(&mut g, "b1", tensor(7, &[1]));
    let [y, z, r, t, out] = ["y", "z", "r", "t", "out"].map(|n| g.add_value(n, Fact::unknown()));
    let up = || build("ConvTranspose", vec![("strides", ints(&[2, 2]))], 3);
    g.nodes = vec![
        graph_node(up(), "ConvTranspose", vec![x, w0, b0], vec![y]),
        graph_node(
            build("BatchNormalization", vec![], 5),
            "BatchNormalization",
            vec![y, gamma, beta, mean, var],
            vec![z],
        ),
        graph_node(build("Relu", vec![], 1), "Relu", vec![z], vec![r]),
        graph_node(up(), "ConvTranspose", vec![r, w1, b1], vec![t]),
        graph_node(build("Sigmoid", vec![], 1), "Sigmoid", vec![t], vec![out]),
    ];
    g.outputs = vec![out];
    let (kernels, _) = compile_and_compare(&mut g, &[&tensor(8, &xs)], 1e-5);
    assert_eq!(kernels, ["conv-transpose", "conv-transpose"]);
}
