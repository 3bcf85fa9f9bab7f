//! Model conversion: rewrites of a decoded ONNX model into smaller or faster standard ONNX, written
//! back with `onnx::write`. One file per method: `fp16` (float16 compute with float32 islands,
//! which `fp16_auto` can choose from calibration data), `dynamic` (int8 MatMul/Gemm in
//! onnxruntime's `quantize_dynamic` form), `qdq` (static int8 in onnxruntime's `quantize_static`
//! QDQ form, with ranges from `calibrate`), `prune` (magnitude pruning, combinable with the
//! others); `accuracy` measures what a conversion cost; `external` reads and writes initializers
//! kept in a side file (ONNX external data). Calibration and accuracy run models
//! through the public [`Session`](crate::Session) API.

pub mod accuracy;
pub mod calibrate;
pub mod dynamic;
pub mod edit;
pub mod external;
pub mod fp16;
pub mod fp16_auto;
pub mod opset;
pub mod prune;
pub mod qdq;
pub mod quant;

use crate::ir::infer::infer_facts;
use crate::ir::DType;
use crate::onnx::import_model;
use crate::Result;
use std::collections::{BTreeSet, HashMap};

/// Every top-level value's dtype as crx580's type inference finds it (only values it knows).
pub type ValueTypes = HashMap<String, DType>;

/// Infers the dtype of every value of a model's main graph.
pub fn value_types(model_bytes: &[u8]) -> Result<ValueTypes> {
    let mut graph = import_model(model_bytes, None)?.graph;
    infer_facts(&mut graph)?;
    Ok(graph.values.iter().filter_map(|v| v.fact.dtype.map(|d| (v.name.clone(), d))).collect())
}

/// What a conversion did and what it left alone.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    /// Nodes rewritten.
    pub converted: usize,
    /// Nodes left as they were, each with the reason.
    pub kept: Vec<String>,
    /// Op types the method does not convert that occur in the model (kept as they were).
    pub kept_ops: BTreeSet<String>,
}

impl Notes {
    /// One line per kept node (at most `max`) and one for the op types left alone.
    pub fn summary(&self, max: usize) -> Vec<String> {
        let mut lines: Vec<String> = self.kept.iter().take(max).cloned().collect();
        if self.kept.len() > max {
            lines.push(format!("... and {} more nodes kept", self.kept.len() - max));
        }
        if !self.kept_ops.is_empty() {
            let ops: Vec<&str> = self.kept_ops.iter().map(String::as_str).collect();
            lines.push(format!("op types not converted (kept as they were): {}", ops.join(", ")));
        }
        lines
    }
}
