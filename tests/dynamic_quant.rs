//! Dynamically quantised models against onnxruntime, and what "matches onnxruntime" means for them
//! (README.md, "Matching onnxruntime").
//!
//! `tests/models/dynamic_quant/crnn_int8` is a CRNN (conv stack, two bidirectional LSTMs, per-frame
//! CTC logits) put through onnxruntime's `quantize_dynamic`, with onnxruntime 1.32's outputs; made
//! by tests/models/gen_dynamic_quant.py. Such a model re-quantises every activation at run time
//! (DynamicQuantizeLinear, and the hidden state inside DynamicQuantizeLSTM at every step), so one
//! float that ends an ulp apart can move a uint8 code by one, and the change then travels on through
//! the recurrence. Where the float arithmetic in front of a quantisation is exactly specified,
//! crx580 matches onnxruntime bit for bit; the LSTM's sigmoid and tanh are not: onnxruntime
//! computes them with MLAS polynomial kernels picked by CPU at run time (a plain SSE2 one or an FMA3
//! one, which need not round alike), crx580 with exact f64 functions. So, per data set:
//!
//! 1. `features`, the conv stack's output (DynamicQuantizeLinear, ConvInteger, Cast, Mul, Add, Relu,
//!    MaxPool, three times), equals onnxruntime's bit for bit.
//! 2. Every logit is within [`MAX_STEPS`] quantisation steps of onnxruntime's, a step being
//!    `(max(ref, 0) - min(ref, 0)) / 255`, the scale DynamicQuantizeLinear gives the logits.
//! 3. The decoding is identical: the argmax of every frame, and so the greedy CTC result.
//!
//! Observed (x86-64 with AVX-512 and FMA, 160 synthetic text lines of 1 to 3 lines, 96 to 320
//! pixels wide): 150 agree to within 0.01 steps (float ulps); in 10 a code flips inside an
//! LSTM and the logits move by up to 1.33 steps (0.94% of max|ref|). 7 of the 9,144 frames
//! changed argmax, every one where onnxruntime's top two logits were less than 1 step apart: no
//! tolerance on the logits can rule that out (a frame whose margin exceeds 2 x MAX_STEPS cannot
//! flip), so rule 3 holds for the committed data sets, and for any input only up to near ties.
//! Two of the three data sets have such a flip (0.68 and 0.83 steps), the third is exact.

mod common;

use crx580::ir::Tensor;
use crx580::{Model, Session, SessionOptions};
use std::path::Path;

/// The bound on |crx580 - onnxruntime| for a dynamically quantised model's float output, in
/// quantisation steps of that output (1.33 observed).
const MAX_STEPS: f64 = 2.0;

/// `(max(ref, 0) - min(ref, 0)) / 255`: DynamicQuantizeLinear's scale for `reference`.
fn quantisation_step(reference: &[f64]) -> f64 {
    let (lo, hi) = reference.iter().fold((0f64, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if hi == lo {
        1.0 / 255.0
    } else {
        (hi - lo) / 255.0
    }
}

/// The argmax of each row of `classes` values (the first of equal maxima).
fn frame_argmax(values: &[f64], classes: usize) -> Vec<usize> {
    values
        .chunks(classes)
        .map(|row| row.iter().enumerate().fold(0, |best, (k, &v)| if v > row[best] { k } else { best }))
        .collect()
}

/// Rules 2 and 3 for logits shaped `[..., classes]`; `Ok` carries the largest difference in steps.
fn check_logits(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("logits shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    let classes = *want.shape().last().ok_or("logits are a scalar")?;
    let (g, w) = (got.to_f64_vec().map_err(|e| e.to_string())?, want.to_f64_vec().map_err(|e| e.to_string())?);
    let step = quantisation_step(&w);
    let steps: Vec<f64> = g.iter().zip(&w).map(|(a, b)| (a - b).abs() / step).collect();
    let (at, worst) = steps.iter().copied().enumerate().fold((0, 0f64), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    if worst > MAX_STEPS {
        return Err(format!(
            "logit {at}: {} vs onnxruntime's {}, {worst:.3} steps of {step:e} apart (at most {MAX_STEPS})",
            g[at], w[at]
        ));
    }
    let (ga, wa) = (frame_argmax(&g, classes), frame_argmax(&w, classes));
    if let Some(frame) = (0..wa.len()).find(|&f| ga[f] != wa[f]) {
        return Err(format!("frame {frame}: argmax {} where onnxruntime's is {}", ga[frame], wa[frame]));
    }
    Ok(worst)
}

#[test]
fn quantize_dynamic_crnn_matches_onnxruntime() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/dynamic_quant/crnn_int8");
    let model = Model::load(case.join("model.onnx")).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    let session = Session::new(model, &SessionOptions::default()).unwrap();
    let sets = common::data_sets(&case);
    assert_eq!(sets.len(), 3, "expected the 3 data sets of {}", case.display());
    let mut failures = vec![];
    for set in &sets {
        let name = set.file_name().unwrap_or_default().to_string_lossy().to_string();
        let (inputs, expected) = common::read_data_set(set).unwrap();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let outputs = session.run_positional(&refs).unwrap();
        let [logits, features] = &outputs[..] else { panic!("{name}: {} outputs, expected 2", outputs.len()) };
        // Rule 1: bit for bit.
        if let Err(e) = common::compare(features, &expected[1], 0.0, 0.0) {
            failures.push(format!("{name}/features (must be bit-exact): {e}"));
        }
        match check_logits(logits, &expected[0]) {
            Ok(worst) => println!("{name}: logits within {worst:.3} steps of onnxruntime, argmax identical"),
            Err(e) => failures.push(format!("{name}/logits: {e}")),
        }
    }
    assert!(failures.is_empty(), "crnn_int8 differs from onnxruntime:\n{}", failures.join("\n"));
}

/// The check fails on what it must reject: a logit past the bound, and a flipped frame within it.
#[test]
fn the_rule_rejects_a_large_difference_and_a_flipped_frame() {
    // Two frames of 3 classes; range 2.55, so one step is 0.01.
    let want = Tensor::new(vec![2, 3], vec![0.5f32, 2.0, -0.55, 1.0, 0.2, 0.995]).unwrap();
    let near = Tensor::new(vec![2, 3], vec![0.51f32, 2.0, -0.55, 1.0, 0.2, 0.99]).unwrap();
    assert!(check_logits(&near, &want).is_ok());
    let far = Tensor::new(vec![2, 3], vec![0.5f32, 2.03, -0.55, 1.0, 0.2, 0.995]).unwrap();
    assert!(check_logits(&far, &want).unwrap_err().contains("steps"));
    let flipped = Tensor::new(vec![2, 3], vec![0.5f32, 2.0, -0.55, 0.99, 0.2, 1.0]).unwrap();
    assert!(check_logits(&flipped, &want).unwrap_err().contains("frame 1"));
}
