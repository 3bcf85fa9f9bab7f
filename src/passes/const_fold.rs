//! Constant folding: a deterministic node whose inputs are all constants is run once at load time
//! and its outputs become constants. Values whose inference already produced a value (e.g. `Shape`
//! of a statically shaped tensor) become constants too.

use super::Pass;
use crate::ir::limits::{max_tensor_bytes, with_max_tensor_bytes, with_time_limit};
use crate::ir::{Fact, Graph, Tensor};
use crate::{ErrorKind, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ConstFold {
    /// When folding stops for this load (see [`FOLD_TIME_BUDGET`]); the pass runs many rounds.
    budget_end: Instant,
}

impl ConstFold {
    pub fn new() -> ConstFold {
        ConstFold { budget_end: Instant::now() + FOLD_TIME_BUDGET }
    }
}

impl Default for ConstFold {
    fn default() -> ConstFold {
        ConstFold::new()
    }
}

/// Folding must not blow memory up: outputs larger than this many bytes, and larger than the
/// node's constant inputs, stay computed at run time (a ConstantOfShape of a big shape, say), where
/// the session's limit applies.
const MAX_FOLDED_BYTES: usize = 64 << 20;

/// And all the bytes that folding adds to the model (outputs beyond the inputs they replace) stay
/// under this, so that many medium-sized folds cannot add up to a bomb either.
const MAX_FOLDED_GROWTH: usize = 256 << 20;

/// And folding takes at most this long for one load, all rounds together: a constant Loop of 2^24 iterations is left
/// to run time, where the session's time limit applies. Folding or not never changes results.
const FOLD_TIME_BUDGET: Duration = Duration::from_secs(2);

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const_fold"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        let mut growth = 0usize;
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
            // What folding may produce: a small bound, or the size of what it replaces.
            let allowed = MAX_FOLDED_BYTES.max(in_bytes).min(in_bytes + MAX_FOLDED_GROWTH.saturating_sub(growth));
            let declared = (node.outputs.iter())
                .try_fold(0usize, |sum, &o| fact_bytes(&graph.values[o].fact).map(|b| sum.saturating_add(b)));
            if declared.is_some_and(|b| b > allowed) {
                keep.push(node);
                continue;
            }
            // Kernels check their allocations against the limit in force, so an output bigger than
            // inference knew stops early instead of being made and thrown away.
            let limit = allowed.min(max_tensor_bytes());
            let time_left = self.budget_end.saturating_duration_since(Instant::now());
            let fold = || with_time_limit(Some(time_left), || node.op.eval(&inputs));
            let outputs = match with_max_tensor_bytes(limit, fold) {
                Ok(outputs) => outputs,
                Err(e) if e.kind == ErrorKind::ResourceLimit => {
                    keep.push(node);
                    continue;
                }
                Err(e) => return Err(e.context(format!("constant folding {}", node.describe()))),
            };
            let out_bytes: usize = outputs.iter().map(|t| t.len() * t.dtype().size()).sum();
            if out_bytes > allowed {
                keep.push(node);
                continue;
            }
            growth += out_bytes.saturating_sub(in_bytes);
            for (&id, t) in node.outputs.iter().zip(outputs) {
                graph.values[id].fact = Fact::constant(Arc::new(t));
            }
            changed = true;
        }
        graph.nodes = keep;
        Ok(changed)
    }
}

/// The bytes of a value whose dtype and shape inference fully knows.
fn fact_bytes(fact: &Fact) -> Option<usize> {
    let shape = fact.concrete_shape()?;
    shape.iter().try_fold(fact.dtype?.size().max(1), |n, &d| n.checked_mul(d)).or(Some(usize::MAX))
}
