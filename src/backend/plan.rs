//! A compiled graph: one prepared kernel per node (from the backend that claimed it), the value
//! lifetimes, the buffers that dead values hand on to later kernels and runs, and the compiled
//! bodies of control-flow ops. Runs are independent, so one compiled graph serves many threads
//! at once.

use super::buffers::BufferPool;
use super::{compile_subgraph, Backend, ExecCtx, Kernel};
use crate::error::ResultExt;
use crate::ir::interp::{bind, computed, last_uses, take_outputs, Slot};
use crate::ir::{Data, DataRef, Graph, GraphExec, Tensor};
use crate::{bail, err, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct CompiledGraph {
    graph: Arc<Graph>,
    kernels: Vec<Box<dyn Kernel>>,
    /// Per node, the name of the backend that runs it.
    placed_on: Vec<&'static str>,
    /// Per value, the node after which it is dead: its last reader, or its writer when nothing
    /// reads it; `usize::MAX` for graph outputs and values no node writes.
    dies_after: Vec<usize>,
    /// Storage of dead values, for later outputs: one pool per input-shape signature.
    pools: ShapePools,
    /// Compiled bodies of control-flow ops, by the address of the body graph the op holds.
    subgraphs: HashMap<usize, CompiledGraph>,
}

/// Time spent per node in one profiled run. Nodes of control-flow bodies are listed after the
/// control-flow node that ran them, named `outer/inner` with a greater `depth`; each node's
/// `time` is its own, without the body nodes listed for it, so the times add up to the run's.
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub node: String,
    pub op_type: String,
    pub kernel: &'static str,
    pub backend: &'static str,
    pub time: Duration,
    /// 0 for a node of the top-level graph, 1 inside one control-flow body, and so on.
    pub depth: usize,
}

impl CompiledGraph {
    pub fn new(graph: Arc<Graph>, backends: &[Arc<dyn Backend>], placement: &[usize]) -> Result<CompiledGraph> {
        let mut kernels = Vec::with_capacity(graph.nodes.len());
        let mut subgraphs = HashMap::new();
        for (node, &b) in graph.nodes.iter().zip(placement) {
            for body in node.op.subgraphs() {
                let compiled =
                    compile_subgraph(body, backends).context(|| format!("a subgraph of {}", node.describe()))?;
                subgraphs.insert(Arc::as_ptr(body) as usize, compiled);
            }
            kernels.push(backends[b].prepare(&graph, node).context(|| node.describe())?);
        }
        let placed_on = placement.iter().map(|&b| backends[b].name()).collect();
        let dies_after = dies_after(&graph);
        let pools = ShapePools::default();
        Ok(CompiledGraph { graph, kernels, placed_on, dies_after, pools, subgraphs })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Per node: its kernel's name and the backend that runs it.
    pub fn kernel_names(&self) -> Vec<(&'static str, &'static str)> {
        self.kernels.iter().map(|k| k.name()).zip(self.placed_on.iter().copied()).collect()
    }

    /// Per node: the input its kernel may write over ([`Kernel::in_place_input`]).
    pub fn in_place_inputs(&self) -> Vec<Option<usize>> {
        self.kernels.iter().map(|k| k.in_place_input()).collect()
    }

    /// Runs with one value per graph input and one per captured value; returns the graph
    /// outputs in order. With `profile`, each node's time is pushed to it.
    pub fn run(
        &self,
        pool: &super::cpu::pool::ThreadPool,
        inputs: &[DataRef],
        captures: &[DataRef],
        mut profile: Option<&mut Vec<NodeTime>>,
    ) -> Result<Vec<Data>> {
        let g = &*self.graph;
        // The workers spin between this run's parallel nodes instead of falling asleep in the
        // serial ones between them.
        let _engaged = pool.engage();
        let exec = SubgraphRunner { plan: self, pool, profile: profile.is_some().then(|| Mutex::new(Vec::new())) };
        let buffers = self.pools.for_inputs(inputs, captures);
        let ctx = ExecCtx { pool, buffers: &buffers, graphs: &exec };
        buffers.start_run();
        let mut slots = bind(g, inputs, captures)?;
        for (i, (node, kernel)) in g.nodes.iter().zip(&self.kernels).enumerate() {
            crate::ir::limits::check_deadline().context(|| node.describe())?;
            let donated = self.donation(i, kernel.as_ref(), &mut slots);
            let given = donated.as_ref().map(|(j, _)| *j);
            let arg = |(j, inp): (usize, &Option<usize>)| match inp {
                Some(v) if Some(j) != given => computed(g, &slots, *v).map(Some),
                _ => Ok(None),
            };
            let args: Vec<Option<DataRef>> = node.inputs.iter().enumerate().map(arg).collect::<Result<_>>()?;
            let start = profile.as_ref().map(|_| Instant::now());
            let outs = match donated {
                Some((_, t)) => kernel.run_in_place(&ctx, &args, t),
                None => kernel.run(&ctx, &args),
            }
            .context(|| node.describe())?;
            if let (Some(p), Some(start)) = (profile.as_deref_mut(), start) {
                let elapsed = start.elapsed();
                let nested = exec.take_profile();
                let in_bodies: Duration = nested.iter().map(|t| t.time).sum();
                p.push(NodeTime {
                    node: node.name.clone(),
                    op_type: node.op_type.clone(),
                    kernel: kernel.name(),
                    backend: self.placed_on[i],
                    time: elapsed.saturating_sub(in_bodies),
                    depth: 0,
                });
                p.extend(nested.into_iter().map(|t| NodeTime {
                    node: format!("{}/{}", node.name, t.node),
                    depth: t.depth + 1,
                    ..t
                }));
            }
            if outs.len() < node.outputs.len() {
                bail!(Runtime, "{} gave {} outputs, expected {}", node.describe(), outs.len(), node.outputs.len());
            }
            for (&id, d) in node.outputs.iter().zip(outs) {
                slots[id] = Some(Slot::Owned(d));
            }
            for &v in node.inputs.iter().flatten().chain(&node.outputs) {
                if self.dies_after[v] == i {
                    if let Some(Slot::Owned(d)) = slots[v].take() {
                        buffers.recycle(d);
                    }
                }
            }
        }
        take_outputs(g, &mut slots)
    }

    /// The input node `i`'s kernel may write over ([`Kernel::in_place_input`]), taken out of its
    /// slot, with its position: only a tensor this run computed, which dies at this node, which
    /// the node reads once, and whose buffer nothing else shares. Graph inputs and constants are
    /// never taken (their slots are borrowed or empty), nor graph outputs (they never die).
    fn donation(&self, i: usize, kernel: &dyn Kernel, slots: &mut [Option<Slot>]) -> Option<(usize, Tensor)> {
        let node = &self.graph.nodes[i];
        let j = kernel.in_place_input()?;
        let v = node.inputs.get(j).copied().flatten()?;
        let reads = node.inputs.iter().flatten().filter(|&&u| u == v).count();
        if self.dies_after[v] != i || reads != 1 {
            return None;
        }
        match slots[v].take() {
            Some(Slot::Owned(Data::Tensor(t))) if t.is_unique_f32() => Some((j, t)),
            other => {
                slots[v] = other;
                None
            }
        }
    }
}

/// Most input-shape signatures whose buffers a compiled graph keeps at once: a server that batches
/// requests runs a few batch sizes, interleaved.
const MAX_SIGNATURES: usize = 4;

/// The recycled buffers of a compiled graph, one pool per input-shape signature (the dtypes and
/// shapes of its inputs), so that runs of one shape do not free the buffers another shape's runs
/// will ask for. The least recently used signature's pool goes when a fifth one comes.
#[derive(Debug, Default)]
struct ShapePools {
    /// Most recently used last.
    pools: Mutex<Vec<(Vec<usize>, Arc<BufferPool>)>>,
}

impl ShapePools {
    fn for_inputs(&self, inputs: &[DataRef], captures: &[DataRef]) -> Arc<BufferPool> {
        let signature = signature(inputs.iter().chain(captures));
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let found = pools.iter().position(|(s, _)| *s == signature);
        let entry = match found {
            Some(i) => pools.remove(i),
            None => {
                if pools.len() == MAX_SIGNATURES {
                    pools.remove(0);
                }
                (signature, Arc::new(BufferPool::new(crate::ir::limits::max_tensor_bytes())))
            }
        };
        let pool = entry.1.clone();
        pools.push(entry);
        pool
    }
}

/// Each input's dtype, rank and dims, one after another (non-tensor values count by kind only).
fn signature<'a>(values: impl Iterator<Item = &'a DataRef<'a>>) -> Vec<usize> {
    let mut s = Vec::new();
    for v in values {
        match v.tensor() {
            Some(t) => {
                s.extend([t.dtype() as usize, t.rank()]);
                s.extend_from_slice(t.shape());
            }
            None => s.push(usize::MAX),
        }
    }
    s
}

/// Per value of `g`, the index of the node after which no node reads it (see
/// [`CompiledGraph::dies_after`]).
fn dies_after(g: &Graph) -> Vec<usize> {
    let mut dies = last_uses(g);
    let mut read = vec![false; g.values.len()];
    g.nodes.iter().flat_map(|n| n.inputs.iter().flatten()).for_each(|&v| read[v] = true);
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in &n.outputs {
            if !read[v] && dies[v] != usize::MAX {
                dies[v] = i;
            }
        }
    }
    dies
}

/// Runs control-flow bodies with their compiled plans, collecting their node times when the run
/// is profiled.
struct SubgraphRunner<'a> {
    plan: &'a CompiledGraph,
    pool: &'a super::cpu::pool::ThreadPool,
    profile: Option<Mutex<Vec<NodeTime>>>,
}

impl SubgraphRunner<'_> {
    /// The body node times collected since the last call.
    fn take_profile(&self) -> Vec<NodeTime> {
        self.profile
            .as_ref()
            .map(|p| std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }
}

impl GraphExec for SubgraphRunner<'_> {
    fn run_graph(&self, graph: &Arc<Graph>, inputs: &[DataRef], captures: &[DataRef]) -> Result<Vec<Data>> {
        let compiled = self
            .plan
            .subgraphs
            .get(&(Arc::as_ptr(graph) as usize))
            .ok_or_else(|| err!(Runtime, "a subgraph was not compiled with its graph"))?;
        match &self.profile {
            Some(p) => {
                let mut times = Vec::new();
                let outs = compiled.run(self.pool, inputs, captures, Some(&mut times));
                p.lock().unwrap_or_else(|e| e.into_inner()).extend(times);
                outs
            }
            None => compiled.run(self.pool, inputs, captures, None),
        }
    }
}
