//! One node at a time on the device against the reference interpreter: every op kernel the
//! OpenCL backend places (convolution, pooling, norms, data movement, reductions, resize,
//! recurrent layers), on random data of odd shapes, with f32 and float16 storage.

use super::*;

/// An input of a one-node graph: fed at run time or a constant.
enum In {
    Fed(Tensor),
    Const(Tensor),
    Absent,
}

fn op(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, num_inputs: usize) -> Arc<dyn Op> {
    op_outputs(op_type, opset, attrs, num_inputs, 1)
}

fn op_outputs(op_type: &str, opset: i64, attrs: Vec<(&str, Attr)>, num_inputs: usize, outputs: usize) -> Arc<dyn Op> {
    let attrs = Attributes::new(attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect());
    let ctx = BuildCtx { op_type, domain: "", opset, attrs: &attrs, num_inputs, num_outputs: outputs };
    Arc::from(registry().get("", op_type).unwrap()(&ctx).unwrap())
}

fn t(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::new(shape.to_vec(), random(shape.iter().product(), seed)).unwrap()
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// Runs one node on the device (it must be placed there) and with the reference interpreter.
fn check_node(name: &str, op_type: &str, op: Arc<dyn Op>, inputs: Vec<In>, tol: f32) {
    check_node_on(&context(), name, op_type, op, inputs, tol)
}

/// [`check_node`] on the device of `ctx` (float16 storage or not).
fn check_node_on(ctx: &Arc<Context>, name: &str, op_type: &str, op: Arc<dyn Op>, inputs: Vec<In>, tol: f32) {
    check_outputs_on(ctx, name, op_type, op, inputs, 1, tol)
}

/// [`check_node_on`] for a node with `outputs` outputs, each compared.
fn check_outputs_on(
    ctx: &Arc<Context>,
    name: &str,
    op_type: &str,
    op: Arc<dyn Op>,
    inputs: Vec<In>,
    outputs: usize,
    tol: f32,
) {
    let mut g = Graph::default();
    let (mut ids, mut fed) = (vec![], vec![]);
    for (i, inp) in inputs.iter().enumerate() {
        let id = match inp {
            In::Fed(t) => {
                let id = g.add_value(
                    format!("x{i}"),
                    Fact::new(t.dtype(), t.shape().iter().map(|&d| Dim::Known(d)).collect()),
                );
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
    let ys: Vec<usize> = (0..outputs).map(|k| g.add_value(format!("y{k}"), Fact::unknown())).collect();
    g.outputs = ys.clone();
    g.nodes.push(Node {
        name: name.into(),
        domain: String::new(),
        op_type: op_type.into(),
        attrs: Attributes::default(),
        op,
        inputs: ids,
        outputs: ys,
    });
    infer_facts(&mut g).unwrap();
    let refs: Vec<DataRef> = fed.iter().map(|&t| DataRef::Tensor(t)).collect();
    let want = Interpreter.run(&g, &refs, &[]).unwrap();
    let plan = compile_on(ctx, &g);
    assert_eq!(plan.kernel_names()[0].1, "opencl", "{name}: not placed on the device");
    let got = plan.run(&ThreadPool::new(1), &refs, &[], None).unwrap();
    assert_eq!(got.len(), want.len(), "{name}: outputs");
    for (k, (got, want)) in got.into_iter().zip(want).enumerate() {
        let (got, want) = (got.into_tensor().unwrap(), want.into_tensor().unwrap());
        let what = format!("{name} output {k}");
        assert_eq!(got.shape(), want.shape(), "{what}");
        assert!(got.storage().device_buffer().is_some(), "{what}: the output is the device's");
        assert_close(got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap(), tol, &what);
    }
}

#[test]
fn convolutions_match_the_reference() {
    type Case = (&'static str, Vec<usize>, Vec<usize>, Vec<(&'static str, Attr)>);
    let cases: Vec<Case> = vec![
        ("3x3 pad 1", vec![2, 3, 11, 13], vec![5, 3, 3, 3], vec![("pads", ints(&[1, 1, 1, 1]))]),
        ("1x1", vec![1, 7, 9, 5], vec![11, 7, 1, 1], vec![]),
        ("1x1 stride 2", vec![1, 4, 9, 7], vec![6, 4, 1, 1], vec![("strides", ints(&[2, 2]))]),
        (
            "5x3 stride 2 dilation 2",
            vec![1, 3, 17, 15],
            vec![4, 3, 5, 3],
            vec![("strides", ints(&[2, 1])), ("dilations", ints(&[2, 2])), ("pads", ints(&[2, 1, 0, 3]))],
        ),
        (
            "depthwise",
            vec![2, 6, 10, 9],
            vec![6, 1, 3, 3],
            vec![("group", Attr::Int(6)), ("pads", ints(&[1, 1, 1, 1]))],
        ),
        (
            "depthwise stride 2",
            vec![1, 5, 13, 11],
            vec![5, 1, 3, 3],
            vec![("group", Attr::Int(5)), ("strides", ints(&[2, 2])), ("auto_pad", Attr::String("SAME_UPPER".into()))],
        ),
        ("grouped", vec![1, 6, 7, 8], vec![9, 2, 3, 3], vec![("group", Attr::Int(3))]),
        ("1-D", vec![2, 4, 29], vec![3, 4, 5], vec![("pads", ints(&[2, 2]))]),
    ];
    for (i, (name, xs, ws, attrs)) in cases.into_iter().enumerate() {
        let seed = 1000 + i as u64 * 10;
        let conv = op("Conv", 18, attrs, 3);
        let with = |bias: bool| {
            let mut v = vec![In::Fed(t(seed, &xs)), In::Const(t(seed + 1, &ws))];
            if bias {
                v.push(In::Const(t(seed + 2, &[ws[0]])));
            }
            v
        };
        check_node(name, "Conv", conv.clone(), with(true), 1e-4);
        check_node(name, "Conv", conv.clone(), with(false), 1e-4);
        for act in [Activation::Relu, Activation::HardSwish] {
            let fused = Arc::new(FusedConv { conv: conv.clone(), residual: false, act });
            check_node(&format!("{name} + {act:?}"), "FusedConv", fused, with(true), 1e-4);
        }
        // A skip connection: the output's shape, added before the activation.
        let want = conv.eval(&[Some(&t(seed, &xs)), Some(&t(seed + 1, &ws))]).unwrap().remove(0);
        // The activation after the residual runs in the GEMM's epilogue on the im2col path:
        // relu and clip as vectors, hard-swish per lane; with and without a bias.
        let residual_cases = [
            (Activation::None, true),
            (Activation::Relu, false),
            (Activation::Relu, true),
            (Activation::HardSwish, true),
        ];
        for (act, bias) in residual_cases {
            // Without a bias the slot before the residual is empty.
            let mut inputs = with(bias);
            if !bias {
                inputs.push(In::Absent);
            }
            inputs.push(In::Fed(t(seed + 3, want.shape())));
            let fused = Arc::new(FusedConv { conv: conv.clone(), residual: true, act });
            check_node(&format!("{name} + residual + {act:?}"), "FusedConv", fused, inputs, 1e-4);
        }
    }
}

#[test]
fn pooling_matches_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    let max = |attrs| op("MaxPool", 18, attrs, 1);
    check_node(
        "max 3x3 s2 pad 1",
        "MaxPool",
        max(vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))]),
        vec![x(1, &[2, 3, 13, 11])],
        0.0,
    );
    check_node(
        "max 2x2 ceil",
        "MaxPool",
        max(vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2])), ("ceil_mode", Attr::Int(1))]),
        vec![x(2, &[1, 5, 9, 7])],
        0.0,
    );
    check_node(
        "max dilated 1-D",
        "MaxPool",
        max(vec![("kernel_shape", ints(&[3])), ("dilations", ints(&[2]))]),
        vec![x(3, &[2, 3, 17])],
        0.0,
    );
    let avg = op("AveragePool", 18, vec![("kernel_shape", ints(&[3, 2])), ("strides", ints(&[2, 1]))], 1);
    check_node("avg 3x2 s(2,1)", "AveragePool", avg, vec![x(4, &[2, 3, 11, 9])], 1e-5);
    check_node(
        "global avg",
        "GlobalAveragePool",
        op("GlobalAveragePool", 18, vec![], 1),
        vec![x(5, &[3, 7, 5, 9])],
        1e-5,
    );
    check_node("global max", "GlobalMaxPool", op("GlobalMaxPool", 18, vec![], 1), vec![x(6, &[2, 5, 13])], 0.0);
}

#[test]
fn normalisations_match_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    for (axis, shape) in [(-1i64, vec![3, 37]), (1, vec![2, 5, 7]), (0, vec![9, 4])] {
        for kind in ["Softmax", "LogSoftmax"] {
            let o = op(kind, 13, vec![("axis", Attr::Int(axis))], 1);
            check_node(&format!("{kind} axis {axis} {shape:?}"), kind, o, vec![x(7, &shape)], 1e-5);
        }
    }
    let legacy = op("Softmax", 11, vec![("axis", Attr::Int(1))], 1);
    check_node("Softmax opset 11 (2-D coerced)", "Softmax", legacy, vec![x(8, &[2, 3, 5])], 1e-5);
    let c = 7;
    let positive: Vec<f32> = random(c, 9).iter().map(|v| v.abs() + 0.1).collect();
    let bn = op("BatchNormalization", 15, vec![("epsilon", Attr::Float(1e-3))], 5);
    let params = vec![
        x(10, &[2, c, 5, 3]),
        In::Const(t(11, &[c])),
        In::Const(t(12, &[c])),
        In::Const(t(13, &[c])),
        In::Const(Tensor::new(vec![c], positive).unwrap()),
    ];
    check_node("BatchNormalization", "BatchNormalization", bn, params, 1e-4);
    let ln = Arc::new(FusedLayerNorm { epsilon: 1e-5 });
    check_node(
        "FusedLayerNorm",
        "FusedLayerNorm",
        ln,
        vec![x(14, &[3, 5, 33]), In::Const(t(15, &[33])), In::Const(t(16, &[33]))],
        1e-4,
    );
}

/// Conv (both paths), pooling and the norms with float16 storage: within float16 rounding of
/// the reference (inputs in [-1, 1), so about 1e-3 relative per stored value).
#[test]
fn kernels_with_half_storage_match_the_reference_within_half_rounding() {
    let ctx = own_context(true);
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    let conv = op("Conv", 18, vec![("pads", ints(&[1, 1, 1, 1]))], 3);
    let inputs = vec![x(1, &[1, 5, 9, 11]), In::Const(t(2, &[7, 5, 3, 3])), In::Const(t(3, &[7]))];
    check_node_on(&ctx, "half conv 3x3", "Conv", conv.clone(), inputs, 2e-2);
    // A skip connection added before the activation, in the GEMM's epilogue.
    let inputs =
        vec![x(1, &[1, 5, 9, 11]), In::Const(t(2, &[7, 5, 3, 3])), In::Const(t(3, &[7])), x(9, &[1, 7, 9, 11])];
    let fused = Arc::new(FusedConv { conv, residual: true, act: Activation::Relu });
    check_node_on(&ctx, "half conv 3x3 + residual + relu", "FusedConv", fused, inputs, 2e-2);
    let dw = op("Conv", 18, vec![("group", Attr::Int(4)), ("strides", ints(&[2, 2]))], 2);
    check_node_on(&ctx, "half depthwise", "Conv", dw, vec![x(4, &[2, 4, 9, 8]), In::Const(t(5, &[4, 1, 3, 3]))], 2e-2);
    let max = op("MaxPool", 18, vec![("kernel_shape", ints(&[3, 3])), ("pads", ints(&[1, 1, 1, 1]))], 1);
    check_node_on(&ctx, "half max pool", "MaxPool", max, vec![x(6, &[1, 3, 7, 9])], 2e-3);
    let gap = op("GlobalAveragePool", 18, vec![], 1);
    check_node_on(&ctx, "half global average", "GlobalAveragePool", gap, vec![x(7, &[2, 3, 5, 5])], 2e-3);
    let sm = op("Softmax", 13, vec![("axis", Attr::Int(-1))], 1);
    check_node_on(&ctx, "half softmax", "Softmax", sm, vec![x(8, &[4, 19])], 5e-3);
    let ln = Arc::new(FusedLayerNorm { epsilon: 1e-5 });
    let inputs = vec![x(9, &[3, 21]), In::Const(t(10, &[21])), In::Const(t(11, &[21]))];
    check_node_on(&ctx, "half layer norm", "FusedLayerNorm", ln, inputs, 2e-2);
}

#[test]
fn transpose_and_concat_match_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    for (perm, shape) in
        [(vec![1, 0], vec![7, 13]), (vec![0, 2, 1, 3], vec![2, 3, 5, 7]), (vec![3, 1, 0, 2], vec![3, 4, 5, 6])]
    {
        let o = op("Transpose", 13, vec![("perm", ints(&perm))], 1);
        check_node(&format!("Transpose {perm:?} of {shape:?}"), "Transpose", o, vec![x(20, &shape)], 0.0);
    }
    let default = op("Transpose", 13, vec![], 1);
    check_node("Transpose reversing 5 axes", "Transpose", default, vec![x(21, &[2, 3, 1, 4, 5])], 0.0);
    let concat = |axis: i64, n| op("Concat", 13, vec![("axis", Attr::Int(axis))], n);
    check_node(
        "Concat axis 1",
        "Concat",
        concat(1, 3),
        vec![x(22, &[2, 3, 5]), x(23, &[2, 1, 5]), x(24, &[2, 4, 5])],
        0.0,
    );
    check_node("Concat axis -1", "Concat", concat(-1, 2), vec![x(25, &[3, 7]), In::Const(t(26, &[3, 2]))], 0.0);
    check_node("Concat axis 0 with an empty input", "Concat", concat(0, 2), vec![x(27, &[0, 4]), x(28, &[3, 4])], 0.0);
}

/// An i64 tensor, for the int inputs of Slice, Pad, Gather, Reduce* and Resize.
fn i64s(shape: &[usize], values: &[i64]) -> Tensor {
    Tensor::new(shape.to_vec(), values.to_vec()).unwrap()
}

fn vector(values: &[i64]) -> In {
    In::Const(i64s(&[values.len()], values))
}

#[test]
fn slice_split_pad_and_gather_match_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    // Slice-13: starts, ends, axes, steps as inputs; negative steps, clamped ends, negative axes.
    let slice = || op("Slice", 13, vec![], 5);
    // (shape, starts, ends, axes, steps)
    type Case<'a> = (&'a [usize], &'a [i64], &'a [i64], &'a [i64], &'a [i64]);
    let cases: [Case; 4] = [
        (&[7, 13], &[1, 2], &[6, 11], &[0, 1], &[2, 3]),
        (&[3, 5, 9], &[-1, 100], &[-100, 0], &[2, 1], &[-2, -1]),
        (&[2, 3, 5, 7, 3], &[1, 0], &[4, 3], &[-2, 1], &[1, 2]),
        (&[11], &[0], &[i64::MAX], &[0], &[5]),
    ];
    for (i, (shape, starts, ends, axes, steps)) in cases.into_iter().enumerate() {
        let inputs = vec![x(30 + i as u64, shape), vector(starts), vector(ends), vector(axes), vector(steps)];
        check_node(
            &format!("Slice {shape:?} {starts:?}..{ends:?} axes {axes:?} steps {steps:?}"),
            "Slice",
            slice(),
            inputs,
            0.0,
        );
    }
    // A slice fed by a runtime starts tensor (not a constant).
    let inputs = vec![x(35, &[5, 6]), In::Fed(i64s(&[1], &[2])), vector(&[5]), vector(&[1])];
    check_node("Slice with fed starts", "Slice", op("Slice", 13, vec![], 4), inputs, 0.0);

    // Split: equal parts, given sizes (input), opset 18's uneven num_outputs.
    let split = op_outputs("Split", 13, vec![("axis", Attr::Int(1))], 1, 3);
    check_outputs_on(&context(), "Split 3 equal", "Split", split, vec![x(40, &[2, 9, 5])], 3, 0.0);
    let split = op_outputs("Split", 13, vec![("axis", Attr::Int(-1))], 2, 3);
    let inputs = vec![x(41, &[3, 4, 11]), vector(&[2, 0, 9])];
    check_outputs_on(&context(), "Split sizes 2,0,9", "Split", split, inputs, 3, 0.0);
    let split = op_outputs("Split", 18, vec![("axis", Attr::Int(0)), ("num_outputs", Attr::Int(2))], 1, 2);
    check_outputs_on(&context(), "Split uneven", "Split", split, vec![x(42, &[7, 3])], 2, 0.0);

    // Pad: every mode, negative pads (cropping), a fill value, an axes input (opset 18).
    for (k, mode) in ["constant", "reflect", "edge", "wrap"].into_iter().enumerate() {
        let pad = op("Pad", 13, vec![("mode", Attr::String(mode.into()))], 3);
        let inputs = vec![
            x(50 + k as u64, &[2, 3, 7, 5]),
            vector(&[0, 1, 3, -1, 1, 0, 2, 4]),
            In::Const(Tensor::scalar(0.5f32)),
        ];
        check_node(&format!("Pad {mode}"), "Pad", pad, inputs, 0.0);
    }
    let pad = op("Pad", 18, vec![("mode", Attr::String("reflect".into()))], 4);
    let inputs = vec![x(55, &[3, 9]), vector(&[4, 2]), In::Absent, vector(&[-1])];
    check_node("Pad reflect with axes", "Pad", pad, inputs, 0.0);
    let legacy = op("Pad", 2, vec![("pads", ints(&[1, 0, 0, 2])), ("value", Attr::Float(-3.0))], 1);
    check_node("Pad-2 with attributes", "Pad", legacy, vec![x(56, &[4, 3])], 0.0);

    // Gather: axis 0 and 1, 2-D and scalar indices, negative indices, fed indices.
    let gather = |axis: i64| op("Gather", 13, vec![("axis", Attr::Int(axis))], 2);
    let inputs = vec![x(60, &[9, 5]), In::Const(i64s(&[2, 3], &[0, 8, -1, 3, 3, -9]))];
    check_node("Gather axis 0", "Gather", gather(0), inputs, 0.0);
    let inputs = vec![x(61, &[2, 7, 3]), In::Fed(i64s(&[4], &[6, 0, -2, 1]))];
    check_node("Gather axis 1 fed indices", "Gather", gather(1), inputs, 0.0);
    let inputs = vec![x(62, &[3, 5, 11]), In::Const(i64s(&[], &[-1]))];
    check_node("Gather axis -1 scalar index", "Gather", gather(-1), inputs, 0.0);
}

#[test]
fn reductions_match_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    let kinds = [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ];
    let shapes: [(&[usize], &[i64]); 5] = [
        (&[3, 37], &[-1]),
        (&[5, 7, 9], &[0, 2]),
        (&[2, 3, 5, 7], &[1]),
        (&[4, 1, 6, 3, 5], &[1, 2, 4]),
        (&[13, 3], &[]),
    ];
    for (k, kind) in kinds.iter().enumerate() {
        for (i, (shape, axes)) in shapes.iter().enumerate() {
            for keepdims in [0, 1] {
                let o = op(kind, 18, vec![("keepdims", Attr::Int(keepdims))], 2);
                let mut inputs = vec![x((k * 10 + i) as u64, shape)];
                if !axes.is_empty() {
                    inputs.push(vector(axes));
                }
                check_node(&format!("{kind} {shape:?} axes {axes:?} keepdims {keepdims}"), kind, o, inputs, 1e-5);
            }
        }
    }
    // ReduceLogSum needs positive sums; opset 13's axes attribute.
    let positive: Vec<f32> = random(5 * 7, 3).iter().map(|v| v + 1.5).collect();
    let o = op("ReduceLogSum", 13, vec![("axes", ints(&[0]))], 1);
    check_node("ReduceLogSum", "ReduceLogSum", o, vec![In::Fed(Tensor::new(vec![5, 7], positive).unwrap())], 1e-5);
    let o = op("ReduceMean", 13, vec![("axes", ints(&[2, 3]))], 1);
    check_node("ReduceMean opset 13 spatial", "ReduceMean", o, vec![x(99, &[2, 3, 9, 11])], 1e-5);
}

#[test]
fn resize_matches_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    let scales = |v: &[f32]| In::Const(Tensor::new(vec![v.len()], v.to_vec()).unwrap());
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a [f32]>, Option<&'a [i64]>);
    let cases: [Case; 8] = [
        ("nearest", "asymmetric", "floor", Some(&[1.0, 1.0, 2.0, 3.0]), None),
        ("nearest", "half_pixel", "round_prefer_floor", Some(&[1.0, 1.0, 0.6, 1.7]), None),
        ("nearest", "align_corners", "round_prefer_ceil", None, Some(&[2, 3, 13, 4])),
        ("linear", "half_pixel", "", Some(&[1.0, 1.0, 2.0, 2.0]), None),
        ("linear", "align_corners", "", None, Some(&[2, 3, 7, 17])),
        ("linear", "pytorch_half_pixel", "", Some(&[1.0, 1.0, 0.5, 1.3]), None),
        ("linear", "asymmetric", "", Some(&[1.0, 1.5, 1.0, 2.5]), None),
        ("cubic", "half_pixel", "", Some(&[1.0, 1.0, 1.6, 0.7]), None),
    ];
    for (i, (mode, coord, nearest, sc, sizes)) in cases.into_iter().enumerate() {
        let mut attrs =
            vec![("mode", Attr::String(mode.into())), ("coordinate_transformation_mode", Attr::String(coord.into()))];
        if !nearest.is_empty() {
            attrs.push(("nearest_mode", Attr::String(nearest.into())));
        }
        let mut inputs = vec![x(70 + i as u64, &[2, 3, 9, 7]), In::Absent];
        match (sc, sizes) {
            (Some(s), _) => inputs.push(scales(s)),
            (None, Some(z)) => inputs.extend([In::Absent, vector(z)]),
            _ => unreachable!(),
        }
        let o = op("Resize", 13, attrs, inputs.len());
        check_node(&format!("Resize {mode} {coord} {nearest} {sc:?} {sizes:?}"), "Resize", o, inputs, 1e-5);
    }
    let up = op("Upsample", 9, vec![("mode", Attr::String("nearest".into()))], 2);
    check_node("Upsample-9 nearest", "Upsample", up, vec![x(80, &[1, 2, 3, 5]), scales(&[1.0, 1.0, 2.0, 2.0])], 0.0);
}

#[test]
fn instance_layer_and_rms_norms_match_the_reference() {
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    let c = 5;
    let inorm = op("InstanceNormalization", 6, vec![("epsilon", Attr::Float(1e-3))], 3);
    let inputs = vec![x(90, &[2, c, 7, 9]), In::Const(t(91, &[c])), In::Const(t(92, &[c]))];
    check_node("InstanceNormalization 2-D", "InstanceNormalization", inorm.clone(), inputs, 1e-4);
    let inputs = vec![x(93, &[3, c, 13]), In::Const(t(94, &[c])), In::Const(t(95, &[c]))];
    check_node("InstanceNormalization 1-D", "InstanceNormalization", inorm, inputs, 1e-4);
    for (axis, shape, scale_shape, bias) in [
        (-1i64, vec![3, 5, 33], vec![33], true),
        (1, vec![2, 3, 7], vec![3, 7], false),
        (-2, vec![4, 3, 5], vec![1, 3, 5], true),
    ] {
        let ln = op("LayerNormalization", 17, vec![("axis", Attr::Int(axis)), ("epsilon", Attr::Float(1e-4))], 3);
        let mut inputs = vec![x(96, &shape), In::Const(t(97, &scale_shape))];
        if bias {
            inputs.push(In::Const(t(98, &scale_shape)));
        }
        check_node(
            &format!("LayerNormalization axis {axis} {shape:?} bias {bias}"),
            "LayerNormalization",
            ln,
            inputs,
            1e-4,
        );
        let rms = op("RMSNormalization", 23, vec![("axis", Attr::Int(axis))], 2);
        let inputs = vec![x(99, &shape), In::Const(t(100, &scale_shape))];
        check_node(&format!("RMSNormalization axis {axis} {shape:?}"), "RMSNormalization", rms, inputs, 1e-4);
    }
}

#[test]
fn movement_reduce_resize_and_norms_with_half_storage_stay_within_half_rounding() {
    let ctx = own_context(true);
    let x = |seed, s: &[usize]| In::Fed(t(seed, s));
    let inputs = vec![x(1, &[5, 8]), vector(&[1, 7]), vector(&[5, 0]), vector(&[0, 1]), vector(&[2, -3])];
    check_node_on(&ctx, "half Slice", "Slice", op("Slice", 13, vec![], 5), inputs, 2e-3);
    let pad = op("Pad", 13, vec![("mode", Attr::String("reflect".into()))], 2);
    check_node_on(&ctx, "half Pad", "Pad", pad, vec![x(2, &[3, 7]), vector(&[1, 2, 2, 1])], 2e-3);
    let gather = op("Gather", 13, vec![("axis", Attr::Int(1))], 2);
    check_node_on(&ctx, "half Gather", "Gather", gather, vec![x(3, &[3, 7]), vector(&[6, 0, -1])], 2e-3);
    let mean = op("ReduceMean", 18, vec![], 2);
    check_node_on(&ctx, "half ReduceMean", "ReduceMean", mean, vec![x(4, &[3, 5, 7]), vector(&[1])], 5e-3);
    let resize = op("Resize", 13, vec![("mode", Attr::String("linear".into()))], 3);
    let inputs =
        vec![x(5, &[1, 2, 5, 6]), In::Absent, In::Const(Tensor::new(vec![4], vec![1f32, 1.0, 2.0, 1.5]).unwrap())];
    check_node_on(&ctx, "half Resize", "Resize", resize, inputs, 5e-3);
    let inorm = op("InstanceNormalization", 6, vec![], 3);
    let inputs = vec![x(6, &[2, 3, 5, 5]), In::Const(t(7, &[3])), In::Const(t(8, &[3]))];
    check_node_on(&ctx, "half InstanceNormalization", "InstanceNormalization", inorm, inputs, 2e-2);
    let split = op_outputs("Split", 13, vec![("axis", Attr::Int(1))], 1, 2);
    check_outputs_on(&ctx, "half Split", "Split", split, vec![x(9, &[3, 8])], 2, 2e-3);
}

#[test]
fn average_pool_with_padding_matches_the_reference() {
    for (i, count_include_pad) in [0i64, 1].into_iter().enumerate() {
        for ceil in [0i64, 1] {
            let attrs = vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 2])),
                ("count_include_pad", Attr::Int(count_include_pad)),
                ("ceil_mode", Attr::Int(ceil)),
            ];
            let avg = op("AveragePool", 19, attrs, 1);
            let name = format!("AveragePool pads count_include_pad {count_include_pad} ceil {ceil}");
            check_node(&name, "AveragePool", avg, vec![In::Fed(t(110 + i as u64, &[2, 3, 10, 9]))], 1e-5);
        }
    }
    let attrs = vec![("kernel_shape", ints(&[4])), ("pads", ints(&[2, 1])), ("count_include_pad", Attr::Int(1))];
    check_node(
        "AveragePool 1-D",
        "AveragePool",
        op("AveragePool", 19, attrs, 1),
        vec![In::Fed(t(115, &[2, 3, 13]))],
        1e-5,
    );
}

/// RNN, GRU (both reset orders) and LSTM layers, every direction, with and without biases,
/// initial states, peepholes, clip and input_forget; all outputs.
#[test]
fn recurrent_layers_match_the_reference() {
    let (seq, batch, input, hidden) = (5, 3, 7, 9);
    let dir = |d: &str| ("direction", Attr::String(d.into()));
    let lbr = ("linear_before_reset", Attr::Int(1));
    let hs = ("hidden_size", Attr::Int(hidden as i64));
    type Case = (&'static str, usize, Vec<(&'static str, Attr)>, bool);
    let cases: Vec<Case> = vec![
        ("RNN", 1, vec![hs.clone(), dir("forward")], true),
        ("RNN", 2, vec![hs.clone(), dir("bidirectional"), ("clip", Attr::Float(0.5))], false),
        ("GRU", 1, vec![hs.clone(), dir("reverse"), lbr.clone()], true),
        ("GRU", 2, vec![hs.clone(), dir("bidirectional"), lbr.clone()], false),
        ("GRU", 1, vec![hs.clone(), dir("forward"), ("clip", Attr::Float(0.6))], true),
        ("GRU", 2, vec![hs.clone(), dir("bidirectional")], false),
        ("LSTM", 1, vec![hs.clone(), dir("forward")], true),
        ("LSTM", 2, vec![hs.clone(), dir("bidirectional"), ("clip", Attr::Float(0.7))], true),
        ("LSTM", 1, vec![hs.clone(), dir("reverse"), ("input_forget", Attr::Int(1))], false),
    ];
    for (k, (kind, dirs, attrs, full)) in cases.into_iter().enumerate() {
        let gates = match kind {
            "RNN" => 1,
            "GRU" => 3,
            _ => 4,
        };
        let lstm = kind == "LSTM";
        let seed = 200 + 20 * k as u64;
        let mut inputs = vec![
            In::Fed(t(seed, &[seq, batch, input])),
            In::Const(t(seed + 1, &[dirs, gates * hidden, input])),
            In::Const(t(seed + 2, &[dirs, gates * hidden, hidden])),
        ];
        if full {
            inputs.push(In::Const(t(seed + 3, &[dirs, 2 * gates * hidden])));
            inputs.push(In::Const(i64s(&[batch], &vec![seq as i64; batch])));
            inputs.push(In::Fed(t(seed + 4, &[dirs, batch, hidden])));
            if lstm {
                inputs.push(In::Fed(t(seed + 5, &[dirs, batch, hidden])));
                inputs.push(In::Const(t(seed + 6, &[dirs, 3 * hidden])));
            }
        }
        let outputs = if lstm { 3 } else { 2 };
        let o = op_outputs(kind, 14, attrs, inputs.len(), outputs);
        let name = format!("{kind} {dirs} direction(s), case {k}");
        check_outputs_on(&context(), &name, kind, o, inputs, outputs, 1e-4);
    }
}

/// Gemm with transB and constant weights (a fully connected layer): B is transposed once when the
/// kernel is prepared; a fed B takes the per-run transpose. f32 and float16 storage, odd sizes.
#[test]
fn gemm_node_with_constant_transposed_weights_matches_the_reference() {
    let attrs = || vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(0.5)), ("beta", Attr::Float(2.0))];
    for (m, n, k) in [(1, 37, 29), (5, 70, 33)] {
        let inputs = |fed_b: bool| {
            let b = t(21, &[n, k]);
            vec![In::Fed(t(20, &[m, k])), if fed_b { In::Fed(b) } else { In::Const(b) }, In::Const(t(22, &[n]))]
        };
        for fed_b in [false, true] {
            let name = format!("Gemm {m}x{n}x{k} transB, B fed: {fed_b}");
            check_node(&name, "Gemm", op("Gemm", 13, attrs(), 3), inputs(fed_b), 1e-4);
        }
        let half = own_context(true);
        check_node_on(&half, "half Gemm transB", "Gemm", op("Gemm", 13, attrs(), 3), inputs(false), 2e-2);
    }
}

/// ConvTranspose (GEMM of the transposed weights, then col2im) on odd shapes: strides, pads,
/// output_padding, dilations, an output_shape, 1-D, with and without a bias; f32 and float16.
#[test]
fn conv_transpose_matches_the_reference() {
    type Case = (&'static str, Vec<usize>, Vec<usize>, Vec<(&'static str, Attr)>);
    let cases: Vec<Case> = vec![
        ("3x3", vec![1, 3, 5, 7], vec![3, 4, 3, 3], vec![]),
        (
            "stride 2 pad 1 output_padding 1",
            vec![2, 5, 7, 6],
            vec![5, 3, 3, 3],
            vec![("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1])), ("output_padding", ints(&[1, 1]))],
        ),
        (
            "4x2 stride (3, 2) dilation (1, 2) asymmetric pads",
            vec![1, 2, 6, 5],
            vec![2, 5, 4, 2],
            vec![("strides", ints(&[3, 2])), ("dilations", ints(&[1, 2])), ("pads", ints(&[2, 0, 1, 1]))],
        ),
        (
            "output_shape",
            vec![1, 3, 4, 4],
            vec![3, 2, 3, 3],
            vec![("strides", ints(&[2, 2])), ("output_shape", ints(&[8, 9]))],
        ),
        ("1-D", vec![2, 4, 9], vec![4, 3, 5], vec![("strides", ints(&[2])), ("pads", ints(&[1, 2]))]),
    ];
    let half = own_context(true);
    for (i, (name, xs, ws, attrs)) in cases.into_iter().enumerate() {
        let seed = 3000 + i as u64 * 10;
        let convt = op("ConvTranspose", 22, attrs, 3);
        let inputs = |bias: bool| {
            let mut v = vec![In::Fed(t(seed, &xs)), In::Const(t(seed + 1, &ws))];
            if bias {
                v.push(In::Const(t(seed + 2, &[ws[1]])));
            }
            v
        };
        check_node(name, "ConvTranspose", convt.clone(), inputs(true), 1e-4);
        check_node(&format!("{name}, no bias"), "ConvTranspose", convt.clone(), inputs(false), 1e-4);
        check_node_on(&half, &format!("half {name}"), "ConvTranspose", convt, inputs(true), 2e-2);
    }
}
