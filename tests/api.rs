//! The Rust API: load from a path or bytes, inspect inputs and outputs, run with named tensors,
//! clear errors for wrong inputs, and one session shared by several threads.

mod common;

use crx580::{DType, Dim, ErrorKind, Model, Session, SessionOptions, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn digits_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits")
}

fn samples() -> Tensor {
    crx580::io::read_tensor_file(&digits_dir().join("samples.npy")).unwrap().0
}

/// onnxruntime's outputs for the samples, from the golden test data.
fn reference_outputs() -> Vec<Tensor> {
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/digits/test_data_set_0");
    (0..2).map(|k| crx580::io::read_tensor_file(&set.join(format!("output_{k}.pb"))).unwrap().0).collect()
}

#[test]
fn inspects_inputs_and_outputs() {
    let model = Model::load(digits_dir().join("digits.onnx")).unwrap();
    let inputs = model.inputs();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].name, "image");
    assert_eq!(inputs[0].dtype, Some(DType::F32));
    assert_eq!(inputs[0].shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(1), Dim::Known(8), Dim::Known(8)]));
    let outputs = model.outputs();
    assert_eq!(outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["logits", "probabilities"]);
    // Shape inference carries the symbolic batch through to the outputs.
    assert_eq!(outputs[0].shape, Some(vec![Dim::Symbol("N".into()), Dim::Known(10)]));
}

#[test]
fn runs_from_bytes_by_name_and_matches_onnxruntime() {
    let bytes = std::fs::read(digits_dir().join("digits.onnx")).unwrap();
    let session = Session::new(Model::from_bytes(&bytes).unwrap(), &SessionOptions::default()).unwrap();
    let x = samples();
    let out = session.run(&[("image", &x)]).unwrap();
    for (o, r) in out.iter().zip(reference_outputs()) {
        common::compare(o, &r, 1e-3, 1e-4).unwrap();
    }
}

#[test]
fn wrong_inputs_get_clear_errors() {
    let session =
        Session::new(Model::load(digits_dir().join("digits.onnx")).unwrap(), &SessionOptions::default()).unwrap();
    let x = samples();
    let e = session.run(&[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(e.message.contains("'image' is missing"), "{e}");
    let e = session.run(&[("img", &x)]).unwrap_err();
    assert!(e.message.contains("no input named 'img'"), "{e}");
    let wrong_type = Tensor::new(vec![1, 1, 8, 8], vec![0i64; 64]).unwrap();
    let e = session.run(&[("image", &wrong_type)]).unwrap_err();
    assert!(e.message.contains("must be float32, got int64"), "{e}");
    let wrong_shape = Tensor::new(vec![1, 1, 8, 7], vec![0f32; 56]).unwrap();
    let e = session.run(&[("image", &wrong_shape)]).unwrap_err();
    assert!(e.message.contains("axis 3"), "{e}");
}

#[test]
fn one_session_runs_on_many_threads() {
    let session = Arc::new(
        Session::new(Model::load(digits_dir().join("digits.onnx")).unwrap(), &SessionOptions::default()).unwrap(),
    );
    let x = Arc::new(samples());
    let reference = reference_outputs();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, x) = (session.clone(), x.clone());
            std::thread::spawn(move || (0..5).map(|_| s.run(&[("image", &x)]).unwrap()).collect::<Vec<_>>())
        })
        .collect();
    for h in handles {
        for out in h.join().unwrap() {
            common::compare(&out[1], &reference[1], 1e-3, 1e-4).unwrap();
        }
    }
}

#[test]
fn unknown_device_is_an_error() {
    // A host without OpenCL is tests/no_opencl.rs (a process of its own: the OpenCL library is
    // loaded once per process, and sessions of other tests here may have loaded it).
    assert!("tpu".parse::<crx580::Device>().is_err());
}

#[test]
fn computed_shapes_win_over_wrong_declarations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/exporter_quirks/model.onnx");
    let model = Model::load(path).unwrap();
    // The file declares output:0 as [7, 7]; inference knows it is [batch, 4].
    let out = &model.outputs()[0];
    assert_eq!(out.name, "output:0");
    assert_eq!(out.shape, Some(vec![Dim::Symbol("batch".into()), Dim::Known(4)]));
}

#[test]
fn whole_input_shapes_fix_the_model_and_are_checked() {
    let model = Model::load(digits_dir().join("digits.onnx")).unwrap();
    let shapes = |dims: &[usize]| [("image".to_string(), dims.to_vec())].into_iter().collect();
    let fixed = model.with_input_shapes(&shapes(&[3, 1, 8, 8])).unwrap();
    assert_eq!(fixed.inputs()[0].shape, Some(vec![Dim::Known(3), Dim::Known(1), Dim::Known(8), Dim::Known(8)]));
    assert_eq!(fixed.outputs()[0].shape, Some(vec![Dim::Known(3), Dim::Known(10)]));
    for (dims, want) in [
        (&[3, 1, 8][..], "input 'image' has rank 4, not 3"),
        (&[3, 2, 8, 8][..], "dim 1 of input 'image' is fixed at 1 by the model, not 2"),
    ] {
        let e = model.with_input_shapes(&shapes(dims)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.to_string().contains(want), "{e}");
    }
    let other = [("images".to_string(), vec![1])].into_iter().collect();
    let e = model.with_input_shapes(&other).unwrap_err();
    assert!(e.to_string().contains("the model has no input 'images' (its inputs: image)"), "{e}");
}
