//! The CPU backend: runs each node's reference kernel in topological order, freeing every
//! intermediate tensor after its last use.

use super::{Backend, Plan};
use crate::error::ResultExt;
use crate::ir::{Graph, Node, Tensor};
use crate::{bail, err, Result};
use std::borrow::Cow;
use std::sync::Arc;

pub struct CpuBackend {
    /// Requested worker threads; the reference kernels are single-threaded for now, and the fast
    /// CPU kernels of a later issue use this.
    pub threads: usize,
}

impl CpuBackend {
    pub fn new(threads: usize) -> CpuBackend {
        CpuBackend { threads }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, _node: &Node) -> bool {
        true
    }

    fn compile(&self, graph: Arc<Graph>) -> Result<Box<dyn Plan>> {
        // last_use[v]: index of the last node reading value v; graph outputs live to the end.
        let mut last_use = vec![0usize; graph.values.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &v in n.inputs.iter().flatten() {
                last_use[v] = i;
            }
        }
        for &o in &graph.outputs {
            last_use[o] = usize::MAX;
        }
        Ok(Box::new(CpuPlan { graph, last_use }))
    }
}

struct CpuPlan {
    graph: Arc<Graph>,
    last_use: Vec<usize>,
}

impl CpuPlan {
    fn run_nodes(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let g = &*self.graph;
        let mut slots: Vec<Option<Cow<Tensor>>> = vec![None; g.values.len()];
        for (&id, &t) in g.inputs.iter().zip(inputs) {
            slots[id] = Some(Cow::Borrowed(t));
        }
        for (i, node) in g.nodes.iter().enumerate() {
            let args: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|inp| match inp {
                    None => Ok(None),
                    Some(v) => match (&slots[*v], g.values[*v].constant()) {
                        (Some(t), _) => Ok(Some(t.as_ref())),
                        (None, Some(c)) => Ok(Some(c.as_ref())),
                        (None, None) => Err(err!(Runtime, "value '{}' was not computed", g.values[*v].name)),
                    },
                })
                .collect::<Result<_>>()?;
            let outs = node.op.eval(&args).context(|| node.describe())?;
            if outs.len() < node.outputs.len() {
                bail!(Runtime, "{} gave {} outputs, expected {}", node.describe(), outs.len(), node.outputs.len());
            }
            for (&id, t) in node.outputs.iter().zip(outs) {
                slots[id] = Some(Cow::Owned(t));
            }
            for &v in node.inputs.iter().flatten() {
                if self.last_use[v] == i {
                    slots[v] = None;
                }
            }
        }
        g.outputs
            .iter()
            .map(|&o| match (&slots[o], g.values[o].constant()) {
                (Some(t), _) => Ok(t.as_ref().clone()),
                (None, Some(c)) => Ok(c.as_ref().clone()),
                (None, None) => Err(err!(Runtime, "graph output '{}' was not computed", g.values[o].name)),
            })
            .collect()
    }
}

impl Plan for CpuPlan {
    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        // A kernel bug must come back as an error, never take the host process down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_nodes(inputs))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(err!(Runtime, "internal error (panic) while running: {msg}"))
        })
    }
}

/// `cpu: <model name> (<n> threads)` from /proc/cpuinfo where available.
pub fn describe_cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("cpu: {model} ({threads} hardware threads)")
}
