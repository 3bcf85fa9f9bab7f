//! The CPU backend: runs each node's reference kernel in topological order, freeing every
//! intermediate value after its last use. [`GraphRunner`] does the running, for top-level graphs
//! and for the subgraphs of control-flow ops alike.

pub mod activation;
pub mod gemm;
pub mod isa;
pub mod pool;

use super::{Backend, Plan};
use crate::error::ResultExt;
use crate::ir::{Data, DataRef, Graph, Node, ValueId};
use crate::{bail, err, Result};
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
        Ok(Box::new(CpuPlan { runner: GraphRunner::new(graph) }))
    }
}

/// A graph prepared to run many times (a loop body runs once per iteration): the graph plus, for
/// each value, the index of the last node that reads it, so that intermediates are freed early.
#[derive(Debug)]
pub struct GraphRunner {
    graph: Arc<Graph>,
    last_use: Vec<usize>,
}

impl GraphRunner {
    pub fn new(graph: Arc<Graph>) -> GraphRunner {
        // Graph outputs live to the end.
        let mut last_use = vec![0usize; graph.values.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &v in n.inputs.iter().flatten() {
                last_use[v] = i;
            }
        }
        for &o in &graph.outputs {
            last_use[o] = usize::MAX;
        }
        GraphRunner { graph, last_use }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs with one value per graph input and one per captured value (in `graph.captures`
    /// order); returns the graph outputs in order.
    pub fn run(&self, inputs: &[DataRef], captures: &[DataRef]) -> Result<Vec<Data>> {
        let g = &*self.graph;
        if inputs.len() != g.inputs.len() {
            bail!(InvalidInput, "the graph takes {} inputs, got {}", g.inputs.len(), inputs.len());
        }
        if captures.len() != g.captures.len() {
            bail!(Runtime, "the graph captures {} outer values, got {}", g.captures.len(), captures.len());
        }
        let mut slots: Vec<Option<Slot>> = (0..g.values.len()).map(|_| None).collect();
        for (&id, &d) in g.inputs.iter().zip(inputs).chain(g.captures.iter().zip(captures)) {
            slots[id] = Some(Slot::Borrowed(d));
        }
        for (i, node) in g.nodes.iter().enumerate() {
            crate::ir::limits::check_deadline().context(|| node.describe())?;
            let args: Vec<Option<DataRef>> =
                node.inputs.iter().map(|inp| inp.map(|v| computed(g, &slots, v)).transpose()).collect::<Result<_>>()?;
            let outs = node.op.eval_refs(&args).context(|| node.describe())?;
            if outs.len() < node.outputs.len() {
                bail!(Runtime, "{} gave {} outputs, expected {}", node.describe(), outs.len(), node.outputs.len());
            }
            for (&id, d) in node.outputs.iter().zip(outs) {
                slots[id] = Some(Slot::Owned(d));
            }
            for &v in node.inputs.iter().flatten() {
                if self.last_use[v] == i {
                    slots[v] = None;
                }
            }
        }
        let mut results = Vec::with_capacity(g.outputs.len());
        for (k, &o) in g.outputs.iter().enumerate() {
            // The last mention of an output moves it out; an earlier duplicate copies it.
            let d = match slots[o].take() {
                Some(s) if g.outputs[k + 1..].contains(&o) => {
                    let copy = s.as_ref().to_owned();
                    slots[o] = Some(s);
                    copy
                }
                Some(Slot::Owned(d)) => d,
                Some(Slot::Borrowed(d)) => d.to_owned(),
                None => match g.values[o].constant() {
                    Some(c) => Data::Tensor(c.as_ref().clone()),
                    None => bail!(Runtime, "graph output '{}' was not computed", g.values[o].name),
                },
            };
            results.push(d);
        }
        Ok(results)
    }
}

/// A value of the current run: borrowed from the caller (or the enclosing graph), or computed.
enum Slot<'a> {
    Borrowed(DataRef<'a>),
    Owned(Data),
}

impl Slot<'_> {
    fn as_ref(&self) -> DataRef<'_> {
        match self {
            Slot::Borrowed(d) => *d,
            Slot::Owned(d) => DataRef::Data(d),
        }
    }
}

/// The value `v`: given or computed this run, or a constant of the graph.
fn computed<'a>(g: &'a Graph, slots: &'a [Option<Slot>], v: ValueId) -> Result<DataRef<'a>> {
    match (&slots[v], g.values[v].constant()) {
        (Some(s), _) => Ok(s.as_ref()),
        (None, Some(c)) => Ok(DataRef::Tensor(c.as_ref())),
        (None, None) => Err(err!(Runtime, "value '{}' was not computed", g.values[v].name)),
    }
}

struct CpuPlan {
    runner: GraphRunner,
}

impl Plan for CpuPlan {
    fn run(&self, inputs: &[DataRef]) -> Result<Vec<Data>> {
        self.runner.run(inputs, &[])
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
