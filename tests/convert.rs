//! `crx580::convert` on the golden models: the converted models load and run in crx580, and their
//! outputs stay within bounds of onnxruntime's float outputs stored with each model (the
//! reference, not our own float run). int8-static is calibrated on copies of each model's test
//! inputs scaled by a seeded factor per element. The interop side (onnx.checker, onnxruntime running the
//! converted models, onnxruntime's own quantize_dynamic) is tests/convert/check_convert.py.

mod common;

use crx580::convert::calibrate::{calibrate, Batch, Method};
use crx580::convert::dynamic::{to_int8_dynamic, DynamicOptions};
use crx580::convert::fp16::{to_fp16, Fp16Options};
use crx580::convert::prune::{prune, Pattern};
use crx580::convert::qdq::{tensors_to_calibrate, to_int8_static, ActivationType, StaticOptions};
use crx580::convert::{value_types, Notes};
use crx580::onnx::model::{decode_model, ModelProto};
use crx580::onnx::write::encode_model;
use crx580::{Model, Session, SessionOptions, Tensor};
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden").join(name)
}

/// Converts a golden model with `convert`, then returns (relative max error, cosine) of each float
/// output against the stored onnxruntime outputs, over all its data sets.
fn converted_errors(
    name: &str,
    convert: impl Fn(&mut ModelProto, &crx580::convert::ValueTypes) -> Notes,
) -> Vec<(f64, f64)> {
    let bytes = std::fs::read(golden(name).join("model.onnx")).unwrap();
    let types = value_types(&bytes).unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let notes = convert(&mut model, &types);
    assert!(notes.converted > 0, "{name}: nothing converted");
    let out = encode_model(&model);
    let session = Session::new(Model::from_bytes(&out).unwrap(), &SessionOptions::default()).unwrap();
    let mut errors = vec![];
    for set in common::data_sets(&golden(name)) {
        let (inputs, expected) = common::read_data_set(&set).unwrap();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let got = session.run_positional(&refs).unwrap();
        for (g, w) in got.iter().zip(&expected) {
            let (g, w) = (g.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
            let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
            let max_err = g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            let dot: f64 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
            let norms = g.iter().map(|a| a * a).sum::<f64>().sqrt() * w.iter().map(|a| a * a).sum::<f64>().sqrt();
            errors.push((max_err / scale, if norms > 0.0 { dot / norms } else { 1.0 }));
        }
    }
    errors
}

fn fp16(m: &mut ModelProto, t: &crx580::convert::ValueTypes) -> Notes {
    to_fp16(m, t, &Fp16Options::default(), &mut || {}).unwrap()
}

fn dynamic(per_channel: bool) -> impl Fn(&mut ModelProto, &crx580::convert::ValueTypes) -> Notes {
    move |m, t| to_int8_dynamic(m, t, &DynamicOptions { per_channel, ..DynamicOptions::default() }, &mut || {}).unwrap()
}

#[test]
fn fp16_models_stay_within_one_percent_of_onnxruntime_float() {
    for name in ["cnn_bn", "mlp", "digits", "attention_block", "attention_block_decomposed"] {
        for (rel, cos) in converted_errors(name, fp16) {
            assert!(rel < 1e-2 && cos > 0.9999, "{name}: fp16 relative error {rel:.2e}, cosine {cos:.6}");
        }
    }
}

#[test]
fn int8_dynamic_models_keep_cosine_above_099() {
    for name in ["mlp", "attention_block", "cnn_bn"] {
        for per_channel in [false, true] {
            for (rel, cos) in converted_errors(name, dynamic(per_channel)) {
                assert!(cos > 0.99, "{name} per_channel={per_channel}: int8 cosine {cos:.6} (rel {rel:.2e})");
            }
        }
    }
}

#[test]
fn fp16_keeps_named_nodes_and_fragile_ops_in_float32() {
    let bytes = std::fs::read(golden("cnn_bn").join("model.onnx")).unwrap();
    let types = value_types(&bytes).unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let first_conv = model.graph.as_ref().unwrap().node.iter().find(|n| n.op_type == "Conv").unwrap().name.clone();
    let keep = if first_conv.is_empty() { "Conv".to_string() } else { first_conv.clone() };
    let notes =
        to_fp16(&mut model, &types, &Fp16Options { keep_float: vec![keep], ..Fp16Options::default() }, &mut || {})
            .unwrap();
    assert!(notes.kept_ops.contains("BatchNormalization"), "{notes:?}");
    assert!(notes.kept.iter().any(|k| k.contains("--keep-float")), "{notes:?}");
    let g = model.graph.as_ref().unwrap();
    // Inputs and outputs keep float32; the model still loads and runs.
    let out = encode_model(&model);
    let m = Model::from_bytes(&out).unwrap();
    assert!(m.inputs().iter().chain(&m.outputs()).all(|i| i.dtype == Some(crx580::DType::F32)));
    assert!(g.node.iter().any(|n| n.op_type == "Cast"));
    let bn = g.node.iter().find(|n| n.op_type == "BatchNormalization").unwrap();
    assert!(bn.input.iter().all(|i| !i.ends_with("_fp16")), "BatchNormalization reads float16: {:?}", bn.input);
}

#[test]
fn int8_dynamic_refuses_old_opsets_clearly_and_leaves_other_ops_alone() {
    let bytes = std::fs::read(golden("opset9_legacy").join("model.onnx")).unwrap();
    let types = value_types(&bytes).unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let e = to_int8_dynamic(&mut model, &types, &DynamicOptions::default(), &mut || {}).unwrap_err();
    assert!(e.message.contains("opset 11"), "{}", e.message);
    // A model with control flow and QDQ nodes: fp16 leaves what it cannot convert, and the result runs.
    for name in ["if_nested", "qdq_cnn"] {
        let bytes = std::fs::read(golden(name).join("model.onnx")).unwrap();
        let types = value_types(&bytes).unwrap();
        let mut model = decode_model(&bytes).unwrap();
        let notes = to_fp16(&mut model, &types, &Fp16Options::default(), &mut || {}).unwrap();
        assert!(!notes.kept_ops.is_empty(), "{name}: {notes:?}");
        let out = encode_model(&model);
        let session = Session::new(Model::from_bytes(&out).unwrap(), &SessionOptions::default()).unwrap();
        let set = &common::data_sets(&golden(name))[0];
        let (inputs, expected) = common::read_data_set(set).unwrap();
        let got = session.run_positional(&inputs.iter().collect::<Vec<_>>()).unwrap();
        for (g, w) in got.iter().zip(&expected) {
            common::compare(g, w, 2e-2, 2e-2).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// Calibration batches for a one-input golden model: its test inputs, each element scaled by a
/// factor in [0.8, 1.2) from a fixed xorshift stream.
fn calibration_batches(name: &str, count: usize) -> Vec<Batch> {
    let model = Model::load(golden(name).join("model.onnx")).unwrap();
    let input = model.inputs()[0].name.clone();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut batches = vec![];
    for set in common::data_sets(&golden(name)).iter().cycle().take(count) {
        let x = common::read_data_set(set).unwrap().0.remove(0);
        let values: Vec<f32> = x
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|v| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                v * (0.8 + 0.4 * (state >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect();
        batches.push(vec![(input.clone(), Tensor::new(x.shape().to_vec(), values).unwrap())]);
    }
    batches
}

fn static_int8(
    name: &str,
    opts: StaticOptions,
    method: Method,
) -> impl Fn(&mut ModelProto, &crx580::convert::ValueTypes) -> Notes {
    let bytes = std::fs::read(golden(name).join("model.onnx")).unwrap();
    let batches = calibration_batches(name, 4);
    move |m, t| {
        let tensors = tensors_to_calibrate(m, t, &opts).unwrap();
        assert!(!tensors.is_empty());
        let ranges = calibrate(&bytes, &tensors, &batches, method, &SessionOptions::default(), &mut || {}).unwrap();
        assert_eq!(ranges.len(), tensors.len());
        to_int8_static(m, t, &ranges, &opts, &mut || {}).unwrap()
    }
}

#[test]
fn int8_static_models_keep_cosine_above_099_with_every_method() {
    for name in ["cnn_bn", "mlp", "digits"] {
        for per_channel in [false, true] {
            for activation_type in [ActivationType::Int8, ActivationType::Uint8] {
                for method in [Method::MinMax, Method::Percentile(99.999), Method::Entropy] {
                    let opts = StaticOptions { per_channel, activation_type, keep_float: vec![] };
                    for (rel, cos) in converted_errors(name, static_int8(name, opts, method)) {
                        assert!(
                            cos > 0.99,
                            "{name} per_channel={per_channel} {activation_type:?} {method:?}: cosine {cos:.6} (rel {rel:.2e})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn int8_static_writes_qdq_pairs_per_channel_weights_and_int32_biases() {
    let bytes = std::fs::read(golden("cnn_bn").join("model.onnx")).unwrap();
    let types = value_types(&bytes).unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let opts = StaticOptions { per_channel: true, keep_float: vec!["Gemm".into()], ..StaticOptions::default() };
    let notes = static_int8("cnn_bn", opts, Method::MinMax)(&mut model, &types);
    assert!(notes.kept.iter().any(|k| k.contains("--keep-float")), "{notes:?}");
    assert!(notes.kept_ops.contains("BatchNormalization"), "{notes:?}");
    let g = model.graph.as_ref().unwrap();
    let producer = |v: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == v));
    let init = |v: &str| g.initializer.iter().find(|t| t.name == v);
    for conv in g.node.iter().filter(|n| n.op_type == "Conv") {
        // Activation through Q -> DQ, weight and bias through DQ of int8 / int32 initializers.
        let x = producer(&conv.input[0]).unwrap();
        assert_eq!(x.op_type, "DequantizeLinear");
        assert_eq!(producer(&x.input[0]).unwrap().op_type, "QuantizeLinear");
        let w = producer(&conv.input[1]).unwrap();
        assert_eq!(w.op_type, "DequantizeLinear");
        assert_eq!(init(&w.input[0]).unwrap().data_type, crx580::DType::I8.onnx_code());
        assert_eq!(init(&w.input[1]).unwrap().dims.len(), 1, "per-channel weight scales");
        assert!(w.attribute.iter().any(|a| a.name == "axis" && a.i == Some(0)));
        if let Some(b) = conv.input.get(2) {
            let b = producer(b).unwrap();
            assert_eq!(init(&b.input[0]).unwrap().data_type, crx580::DType::I32.onnx_code());
        }
    }
    // --keep-float Gemm: its weight is read in float, straight from the initializer.
    let gemm = g.node.iter().find(|n| n.op_type == "Gemm").unwrap();
    assert!(init(&gemm.input[1]).is_some());
}

#[test]
fn int8_static_raises_old_opsets_only_when_safe() {
    // opset9_legacy has Slice, Squeeze, Clip and Dropout, which changed meaning by opset 10-13:
    // the model cannot simply be relabelled, so int8-static refuses and names them.
    let bytes = std::fs::read(golden("opset9_legacy").join("model.onnx")).unwrap();
    let types = value_types(&bytes).unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let e = to_int8_static(&mut model, &types, &Default::default(), &StaticOptions::default(), &mut || {}).unwrap_err();
    assert!(e.message.contains("opset 10") && e.message.contains("Slice"), "{}", e.message);
    // An opset-13 model with per-channel weights stays at 13; mlp converts without opset change.
    let bytes = std::fs::read(golden("mlp").join("model.onnx")).unwrap();
    let types = value_types(&bytes).unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let opts = StaticOptions { per_channel: true, ..StaticOptions::default() };
    static_int8("mlp", opts, Method::MinMax)(&mut model, &types);
    assert_eq!(crx580::convert::edit::onnx_opset(&model), 13);
}

#[test]
fn pruning_reaches_the_sparsity_asked_and_the_model_still_runs() {
    let bytes = std::fs::read(golden("cnn_bn").join("model.onnx")).unwrap();
    for (pattern, sparsity) in [(Pattern::Unstructured, 0.3), (Pattern::TwoOfFour, 0.5), (Pattern::Channel, 0.25)] {
        let mut model = decode_model(&bytes).unwrap();
        let layers = prune(&mut model, sparsity, pattern, &[]).unwrap();
        assert_eq!(layers.len(), 3, "{pattern:?}: two Convs and a Gemm");
        for l in &layers {
            let frac = l.zeros_after as f64 / l.elements as f64;
            // Rows of 9 weights (3x3 depthwise) hold 4 zeros under 2:4, and 5 channels cannot lose 25%.
            assert!((frac - sparsity).abs() <= 0.06, "{pattern:?} {}: {frac:.3}", l.node);
        }
        let session =
            Session::new(Model::from_bytes(&encode_model(&model)).unwrap(), &SessionOptions::default()).unwrap();
        let set = &common::data_sets(&golden("cnn_bn"))[0];
        let (inputs, _) = common::read_data_set(set).unwrap();
        assert!(session.run_positional(&inputs.iter().collect::<Vec<_>>()).is_ok());
    }
    let mut model = decode_model(&bytes).unwrap();
    assert!(prune(&mut model, 0.3, Pattern::TwoOfFour, &[]).unwrap_err().message.contains("0.5"));
    assert!(prune(&mut model, 1.0, Pattern::Unstructured, &[]).is_err());
}

/// A graph input or output of f32 elements and fixed `dims`.
fn f32_info(name: &str, dims: &[i64]) -> crx580::onnx::model::ValueInfoProto {
    use crx580::onnx::model::{Dimension, TensorTypeProto, TypeProto, ValueInfoProto};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto::Tensor(TensorTypeProto {
            elem_type: 1,
            shape: Some(dims.iter().map(|&d| Dimension::Value(d)).collect()),
        })),
        ..ValueInfoProto::default()
    }
}

/// A model of `graph` at ONNX opset 13.
fn opset13_model(graph: crx580::onnx::model::GraphProto<'_>) -> ModelProto<'_> {
    use crx580::onnx::model::OperatorSetIdProto;
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..ModelProto::default()
    }
}

/// A model where the default float16 rules fail: `h = x · W1` reaches ~1.6e5 (x in [0.5, 1), W1's
/// entries ~20000, all within float16's range, so no weight rule fires), then `y = h * 1e-3 +
/// 16384 - 16384` loses everything below float16's spacing of 16 at 16384; a second output
/// `z = Relu(x · W2)` is harmless. Returns the model, its calibration batches and, per batch, `y`
/// and `z` computed here in f64 (the reference).
fn fp16_fragile_model() -> (Vec<u8>, Vec<Batch>, Vec<[Vec<f64>; 2]>) {
    use crx580::convert::edit::{node, tensor_f32};
    use crx580::onnx::model::GraphProto;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f64 / (1u64 << 24) as f64
    };
    let w1: Vec<f32> = (0..64).map(|_| (20000.0 * (0.9 + 0.2 * uniform())) as f32).collect();
    let w2: Vec<f32> = (0..64).map(|_| (uniform() - 0.5) as f32).collect();
    let info = |name: &str| f32_info(name, &[4, 8]);
    let graph = GraphProto {
        name: "fp16_fragile".into(),
        node: vec![
            node("MatMul", "big".into(), &["x", "w1"], &["h"], vec![]),
            node("Mul", "scale".into(), &["h", "milli"], &["h2"], vec![]),
            node("Add", "offset".into(), &["h2", "c"], &["h3"], vec![]),
            node("Sub", "unoffset".into(), &["h3", "c"], &["y"], vec![]),
            node("MatMul", "small".into(), &["x", "w2"], &["z0"], vec![]),
            node("Relu", "relu".into(), &["z0"], &["z"], vec![]),
        ],
        initializer: vec![
            tensor_f32("w1", &[8, 8], &w1),
            tensor_f32("w2", &[8, 8], &w2),
            tensor_f32("milli", &[], &[1e-3]),
            tensor_f32("c", &[], &[16384.0]),
        ],
        input: vec![info("x")],
        output: vec![info("y"), info("z")],
        ..GraphProto::default()
    };
    let model = opset13_model(graph);
    let (mut batches, mut expected) = (vec![], vec![]);
    for _ in 0..3 {
        let x: Vec<f32> = (0..32).map(|_| (0.5 + 0.5 * uniform()) as f32).collect();
        let product = |w: &[f32], r: usize, c: usize| {
            (0..8).map(|k| f64::from(x[r * 8 + k]) * f64::from(w[k * 8 + c])).sum::<f64>()
        };
        let y = (0..32).map(|i| product(&w1, i / 8, i % 8) * 1e-3).collect();
        let z = (0..32).map(|i| product(&w2, i / 8, i % 8).max(0.0)).collect();
        batches.push(vec![("x".to_string(), Tensor::new(vec![4, 8], x).unwrap())]);
        expected.push([y, z]);
    }
    (encode_model(&model), batches, expected)
}

/// The largest error of each output over all batches, relative to its largest reference value.
/// Per output, the largest error over the largest expected magnitude, with float16 computed as
/// written (every result rounded to float16), as the conversion's accuracy is judged.
fn relative_errors(model: &[u8], batches: &[Batch], expected: &[[Vec<f64>; 2]]) -> [f64; 2] {
    relative_errors_with(model, batches, expected, true)
}

/// [`relative_errors`], with float16 regions widened to f32 unless `as_written`.
fn relative_errors_with(model: &[u8], batches: &[Batch], expected: &[[Vec<f64>; 2]], as_written: bool) -> [f64; 2] {
    let mut options = SessionOptions::default();
    options.device_options.f16_as_written = as_written;
    let session = Session::new(Model::from_bytes(model).unwrap(), &options).unwrap();
    let mut worst = [0f64; 2];
    for (batch, want) in batches.iter().zip(expected) {
        let got = session.run(&[("x", &batch[0].1)]).unwrap();
        for k in 0..2 {
            let g = got[k].to_f64_vec().unwrap();
            let scale = want[k].iter().fold(0f64, |m, v| m.max(v.abs()));
            let err =
                g.iter()
                    .zip(&want[k])
                    .fold(0f64, |m, (a, b)| if (a - b).is_nan() { f64::INFINITY } else { m.max((a - b).abs()) });
            worst[k] = worst[k].max(err / scale);
        }
    }
    worst
}

#[test]
fn fp16_auto_keeps_overflowing_and_cancelling_nodes_float32() {
    use crx580::convert::fp16_auto::{choose_float_islands, AutoOptions};
    let (bytes, batches, expected) = fp16_fragile_model();
    let types = value_types(&bytes).unwrap();
    assert!(relative_errors(&bytes, &batches, &expected)[0] < 1e-4, "the float model itself");
    // The default rules alone: h overflows float16 and y is lost.
    let mut naive = decode_model(&bytes).unwrap();
    to_fp16(&mut naive, &types, &Fp16Options::default(), &mut || {}).unwrap();
    let naive_err = relative_errors(&encode_model(&naive), &batches, &expected);
    assert!(naive_err[0] > 1.0, "the default fp16 rules should break y here: {naive_err:?}");
    // The CPU backend computes the float16 region in f32 (passes/widen_f16.rs): h no longer
    // overflows, and only the rounding of the weights, inputs and outputs is left.
    let widened_err = relative_errors_with(&encode_model(&naive), &batches, &expected, false);
    assert!(widened_err[0] < 1e-2 && widened_err[1] < 1e-2, "widened: {widened_err:?}");
    // Islands from the calibration batches.
    let auto = AutoOptions { tolerance: 1e-2, ..AutoOptions::default() };
    let mut runs = 0;
    let choice = choose_float_islands(
        &bytes,
        &types,
        &Fp16Options::default(),
        &batches,
        &auto,
        &SessionOptions::default(),
        &mut || runs += 1,
    )
    .unwrap();
    assert!(choice.error_default > 1.0 && choice.error <= 1e-2, "{choice:?}");
    // Scored in both semantics; the choice holds in the worse.
    assert_eq!(choice.error, choice.scored.worst(), "{choice:?}");
    assert!(choice.scored.as_written <= 1e-2 && choice.scored.widened <= 1e-2, "{choice:?}");
    let mut kept: Vec<usize> = choice.float_nodes.keys().copied().collect();
    kept.sort();
    // MatMul 'big' and Mul 'scale' touch h (by range); Add and Sub lose y's digits (by measurement);
    // the second branch stays float16.
    assert_eq!(kept, [0, 1, 2, 3], "{choice:?}");
    assert_eq!((choice.by_range, choice.by_measurement), (2, 2), "{choice:?}");
    assert!(runs >= 3 + choice.evaluations, "progress ticks: {runs}");
    let mut model = decode_model(&bytes).unwrap();
    let opts = Fp16Options { float_nodes: choice.float_nodes, ..Fp16Options::default() };
    let notes = to_fp16(&mut model, &types, &opts, &mut || {}).unwrap();
    assert_eq!(notes.converted, 2, "{notes:?}");
    assert!(notes.kept.iter().any(|k| k.contains("big (MatMul)") && k.contains("65504")), "{notes:?}");
    assert!(notes.kept.iter().any(|k| k.contains("offset (Add)") && k.contains("target")), "{notes:?}");
    let err = relative_errors(&encode_model(&model), &batches, &expected);
    assert!(err[0] < 1e-3 && err[1] < 1e-2, "{err:?}");
}

#[test]
fn fp16_io_makes_float_inputs_and_outputs_float16_and_keeps_their_names() {
    for name in ["mlp", "cnn_bn"] {
        let bytes = std::fs::read(golden(name).join("model.onnx")).unwrap();
        let types = value_types(&bytes).unwrap();
        let mut model = decode_model(&bytes).unwrap();
        let opts = Fp16Options { half_io: true, ..Fp16Options::default() };
        to_fp16(&mut model, &types, &opts, &mut || {}).unwrap();
        let converted = Model::from_bytes(&encode_model(&model)).unwrap();
        let original = Model::from_bytes(&bytes).unwrap();
        let io = |m: &Model| m.inputs().into_iter().chain(m.outputs()).map(|i| (i.name, i.dtype)).collect::<Vec<_>>();
        for ((a, at), (b, bt)) in io(&original).into_iter().zip(io(&converted)) {
            assert_eq!(a, b, "{name}: names kept");
            let want = if at == Some(crx580::DType::F32) { Some(crx580::DType::F16) } else { at };
            assert_eq!(bt, want, "{name}: '{a}'");
        }
        // Fed float16 copies of the test inputs, the outputs stay within 1e-2 of onnxruntime's float ones.
        let session = Session::new(converted, &SessionOptions::default()).unwrap();
        for set in common::data_sets(&golden(name)) {
            let (inputs, expected) = common::read_data_set(&set).unwrap();
            let half: Vec<Tensor> = inputs
                .iter()
                .map(|t| {
                    if t.dtype() == crx580::DType::F32 {
                        t.cast_numeric(crx580::DType::F16).unwrap()
                    } else {
                        t.clone()
                    }
                })
                .collect();
            let got = session.run_positional(&half.iter().collect::<Vec<_>>()).unwrap();
            for (g, w) in got.iter().zip(&expected) {
                assert_eq!(g.dtype(), crx580::DType::F16);
                let (g, w) = (g.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
                let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
                let err = g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(err / scale < 1e-2, "{name}: relative error {:.2e}", err / scale);
            }
        }
    }
}

#[test]
fn int8_dynamic_keeps_recurrent_ops_float_with_a_note() {
    for name in ["lstm_bidir_ocr", "gru_batch_first"] {
        let bytes = std::fs::read(golden(name).join("model.onnx")).unwrap();
        let types = value_types(&bytes).unwrap();
        let mut model = decode_model(&bytes).unwrap();
        let notes = to_int8_dynamic(&mut model, &types, &DynamicOptions::default(), &mut || {}).unwrap();
        assert_eq!(notes.converted, 0, "{name}");
        assert!(notes.kept.iter().any(|k| k.contains("recurrent ops do not pay")), "{name}: {notes:?}");
        assert_eq!(encode_model(&model), encode_model(&decode_model(&bytes).unwrap()), "{name}: model unchanged");
    }
}

/// A chain of 24 Mul/Add nodes on values near 1: float16 rounds at every node, so no few nodes
/// are to blame, and a tolerance below float16's precision cannot be met by islands. The search
/// must say so after a few islands that do not halve the error, not keep the whole graph float32.
#[test]
fn fp16_auto_stops_when_the_error_is_spread_over_the_graph() {
    use crx580::convert::edit::{node, tensor_f32};
    use crx580::convert::fp16_auto::{choose_float_islands, AutoOptions, STALL_ISLANDS};
    use crx580::onnx::model::GraphProto;
    const NODES: usize = 24;
    let info = |name: &str| f32_info(name, &[64]);
    let value = |i: usize| {
        if i == 0 {
            "x".to_string()
        } else if i == NODES {
            "y".to_string()
        } else {
            format!("v{i}")
        }
    };
    let mut nodes = vec![];
    let mut initializer = vec![];
    for i in 0..NODES {
        let (op, c) = if i % 2 == 0 { ("Mul", 1.0 + 0.01 * i as f32) } else { ("Add", 0.013 * i as f32) };
        let name = format!("c{i}");
        initializer.push(tensor_f32(&name, &[], &[c]));
        nodes.push(node(op, format!("n{i}"), &[&value(i), &name], &[&value(i + 1)], vec![]));
    }
    let graph = GraphProto {
        name: "rounding_chain".into(),
        node: nodes,
        initializer,
        input: vec![info("x")],
        output: vec![info("y")],
        ..GraphProto::default()
    };
    let model = opset13_model(graph);
    let bytes = encode_model(&model);
    let x: Vec<f32> = (0..64).map(|i| 0.5 + i as f32 / 128.0).collect();
    let batches = vec![vec![("x".to_string(), Tensor::new(vec![64], x).unwrap())]];
    let types = value_types(&bytes).unwrap();
    let auto = AutoOptions { tolerance: 1e-7, ..AutoOptions::default() };
    let choice = choose_float_islands(
        &bytes,
        &types,
        &Fp16Options::default(),
        &batches,
        &auto,
        &SessionOptions::default(),
        &mut || {},
    )
    .unwrap();
    assert!(choice.diffuse && !choice.budget_ran_out, "{choice:?}");
    assert!(choice.error > auto.tolerance && choice.error <= choice.error_default, "{choice:?}");
    assert!(choice.by_measurement < NODES / 2, "islands kept: {choice:?}");
    assert!(choice.evaluations <= (STALL_ISLANDS + choice.by_measurement + 1) * 6, "{choice:?}");
}

/// A Conv with SiLU written out (`y * Sigmoid(y)`, as YOLO exports it) converted to float16 runs
/// as written (every float16 result rounded): the SiLU fusion is for float32 Convs only.
#[test]
fn fp16_conv_with_silu_runs_as_written() {
    use crx580::convert::edit::{node, tensor_f32};
    use crx580::onnx::model::GraphProto;
    let w: Vec<f32> = (0..4 * 3 * 9).map(|i| ((i * 37 % 17) as f32 - 8.0) / 20.0).collect();
    let graph = GraphProto {
        name: "conv_silu".into(),
        node: vec![
            node("Conv", "conv".into(), &["x", "w"], &["y"], vec![]),
            node("Sigmoid", "sig".into(), &["y"], &["s"], vec![]),
            node("Mul", "silu".into(), &["y", "s"], &["z"], vec![]),
        ],
        initializer: vec![tensor_f32("w", &[4, 3, 3, 3], &w)],
        input: vec![f32_info("x", &[1, 3, 7, 5])],
        output: vec![f32_info("z", &[1, 4, 5, 3])],
        ..GraphProto::default()
    };
    let bytes = encode_model(&opset13_model(graph));
    let x = Tensor::new(vec![1, 3, 7, 5], (0..105).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let float = Session::new(Model::from_bytes(&bytes).unwrap(), &SessionOptions::default()).unwrap();
    let want = float.run(&[("x", &x)]).unwrap()[0].to_f64_vec().unwrap();
    let mut model = decode_model(&bytes).unwrap();
    let notes = to_fp16(&mut model, &value_types(&bytes).unwrap(), &Fp16Options::default(), &mut || {}).unwrap();
    assert_eq!(notes.converted, 3, "{notes:?}");
    for as_written in [true, false] {
        let mut options = SessionOptions::default();
        options.device_options.f16_as_written = as_written;
        let session = Session::new(Model::from_bytes(&encode_model(&model)).unwrap(), &options).unwrap();
        let got = session.run(&[("x", &x)]).unwrap()[0].to_f64_vec().unwrap();
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err / scale < 1e-2, "as written {as_written}: relative error {:.2e}", err / scale);
    }
}
