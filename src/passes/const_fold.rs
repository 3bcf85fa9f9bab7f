//! Constant folding: a deterministic node whose inputs are all constants is run once at load time
//! and its outputs become constants. Values whose inference already produced a value (e.g. `Shape`
//! of a statically shaped tensor) become constants too.

use super::Pass;
use crate::error::ResultExt;
use crate::ir::{Fact, Graph, Tensor};
use crate::Result;
use std::sync::Arc;

pub struct ConstFold;

/// Folding must not blow memory up: outputs larger than this many bytes, and larger than the
/// node's constant inputs, stay computed at run time (a ConstantOfShape of a big shape, say).
const MAX_FOLDED_BYTES: usize = 64 << 20;

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const_fold"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut keep = Vec::with_capacity(graph.nodes.len());
        for node in std::mem::take(&mut graph.nodes) {
            let inferred: Vec<Option<Arc<Tensor>>> =
                node.outputs.iter().map(|&o| graph.values[o].fact.value.clone()).collect();
            let outputs_known = inferred.iter().all(|v| v.is_some());
            let inputs_const = node.inputs.iter().flatten().all(|&i| graph.values[i].constant().is_some());
            if outputs_known && node.op.is_deterministic() {
                changed = true; // inference already knows every output's value
                continue;
            }
            // Sequence and optional values are never constants.
            if !(inputs_const && node.op.is_deterministic() && node.op.tensors_only()) {
                keep.push(node);
                continue;
            }
            let inputs: Vec<Option<&Tensor>> =
                node.inputs.iter().map(|i| i.map(|v| graph.values[v].constant().unwrap().as_ref())).collect();
            let in_bytes: usize = inputs.iter().flatten().map(|t| t.len() * t.dtype().size()).sum();
            let outputs = node.op.eval(&inputs).context(|| format!("constant folding {}", node.describe()))?;
            let out_bytes: usize = outputs.iter().map(|t| t.len() * t.dtype().size()).sum();
            if out_bytes > MAX_FOLDED_BYTES && out_bytes > in_bytes {
                keep.push(node);
                continue;
            }
            for (&id, t) in node.outputs.iter().zip(outputs) {
                graph.values[id].fact = Fact::constant(Arc::new(t));
            }
            changed = true;
        }
        graph.nodes = keep;
        Ok(changed)
    }
}
