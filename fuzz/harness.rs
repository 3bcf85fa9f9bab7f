//! What each fuzz target does with its bytes, shared by the cargo-fuzz targets (fuzz_targets/) and
//! the stable regression test that replays every input they found (tests/fuzz_regressions.rs).
//! Every function must return, whatever the bytes: an error is fine, a panic, an abort, a hang or
//! an allocation past the limit is a bug.

#![allow(dead_code)] // each target uses one of these

use crx580::ir::limits::with_max_tensor_bytes;
use crx580::onnx::tensor::data_from_pb_bytes;
use crx580::{DType, Data, Dim, Model, Session, SessionOptions, Tensor, ValueKind};
use std::time::Duration;

/// The size limit the targets run under: far below libFuzzer's -malloc_limit_mb, so that any
/// allocation that reaches that limit was not checked against ours.
pub const LIMIT_BYTES: usize = 64 << 20;

/// Inputs larger than this are not made: the targets look for bugs, not for slow big runs.
const MAX_INPUT_ELEMENTS: usize = 4096;

pub fn load_model(data: &[u8]) {
    let _ = with_max_tensor_bytes(LIMIT_BYTES, || Model::from_bytes(data));
}

pub fn read_npy(data: &[u8]) {
    let _ = with_max_tensor_bytes(LIMIT_BYTES, || crx580::io::npy::from_npy(data));
}

pub fn read_pb(data: &[u8]) {
    with_max_tensor_bytes(LIMIT_BYTES, || {
        let _ = data_from_pb_bytes(data, &ValueKind::Tensor, None);
        let _ = data_from_pb_bytes(data, &ValueKind::Sequence, Some(DType::F32));
        let _ = data_from_pb_bytes(data, &ValueKind::Optional(Box::new(ValueKind::Tensor)), None);
    });
}

/// The bytes as a model and, when it loads, one run on small inputs made from its declared shapes.
pub fn load_and_run(data: &[u8]) {
    let Ok(model) = with_max_tensor_bytes(LIMIT_BYTES, || Model::from_bytes(data)) else { return };
    let Some(inputs) = make_inputs(&model) else { return };
    let options = SessionOptions {
        threads: 1,
        max_tensor_bytes: LIMIT_BYTES,
        max_run_time: Some(Duration::from_secs(2)),
        ..SessionOptions::default()
    };
    let Ok(session) = Session::new(model, &options) else { return };
    let refs: Vec<&Data> = inputs.iter().collect();
    let _ = session.run_data_positional(&refs);
}

/// One input per declared graph input: tensors of the declared dtype and shape (unknown dims 2)
/// holding 0, 1, ..., 6 over and over (valid indices and sizes for most models), empty sequences
/// and empty optionals.
fn make_inputs(model: &Model) -> Option<Vec<Data>> {
    let mut total = 0usize;
    model
        .inputs()
        .into_iter()
        .map(|info| {
            let dtype = info.dtype.unwrap_or(DType::F32);
            match info.kind {
                ValueKind::Tensor => {}
                ValueKind::Sequence => return crx580::Sequence::new(dtype, vec![]).ok().map(Data::Sequence),
                ValueKind::Optional(_) => return Some(Data::Optional(None)),
            }
            let shape: Vec<usize> = info.shape?.iter().map(|d| if let Dim::Known(n) = d { *n } else { 2 }).collect();
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
            total = total.checked_add(n)?;
            if total > MAX_INPUT_ELEMENTS {
                return None;
            }
            let tensor = match dtype {
                DType::String | DType::Bool => Tensor::zeros(dtype, shape),
                _ => Tensor::new(shape, (0..n).map(|i| (i % 7) as f64).collect::<Vec<f64>>())
                    .and_then(|t| t.cast_numeric(dtype)),
            };
            tensor.ok().map(Data::Tensor)
        })
        .collect()
}
