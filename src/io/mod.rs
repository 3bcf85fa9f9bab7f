//! Tensor files: `.npy` (numpy) and ONNX `TensorProto` `.pb`, as used by the CLI and tests; and
//! ONNX `SequenceProto` / `OptionalProto` `.pb` files of sequence and optional values. Model files
//! are read through [`mapped`].

pub mod mapped;
pub mod npy;

use crate::ir::{DType, Data, Tensor, ValueKind};
use crate::{err, Result};
use std::path::Path;

/// Reads a tensor from a `.npy` file or an ONNX `TensorProto` (`.pb`) file, chosen by extension
/// (anything but `.npy` is read as a TensorProto). Returns the tensor and, for `.pb`, its stored name.
pub fn read_tensor_file(path: &Path) -> Result<(Tensor, Option<String>)> {
    let bytes = std::fs::read(path).map_err(|e| err!(Io, "cannot read {}: {e}", path.display()))?;
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let r = if is_npy {
        npy::from_npy(&bytes).map(|t| (t, None))
    } else {
        crate::onnx::tensor::tensor_from_pb_bytes(&bytes)
    };
    r.map_err(|e| e.context(path.display()))
}

/// Reads a value declared as `kind` (with element dtype `elem_dtype`, which types empty
/// sequences): tensors as [`read_tensor_file`] does, sequences and optionals from ONNX
/// `SequenceProto` / `OptionalProto` `.pb` files. Returns the value and its stored name.
pub fn read_data_file(path: &Path, kind: &ValueKind, elem_dtype: Option<DType>) -> Result<(Data, Option<String>)> {
    if *kind == ValueKind::Tensor {
        return read_tensor_file(path).map(|(t, name)| (Data::Tensor(t), name));
    }
    let bytes = std::fs::read(path).map_err(|e| err!(Io, "cannot read {}: {e}", path.display()))?;
    crate::onnx::tensor::data_from_pb_bytes(&bytes, kind, elem_dtype).map_err(|e| e.context(path.display()))
}

/// Writes a tensor as a `.npy` file.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let bytes = npy::to_npy(t)?;
    std::fs::write(path, bytes).map_err(|e| err!(Io, "cannot write {}: {e}", path.display()))
}
