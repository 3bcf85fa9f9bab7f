//! The reference interpreter: runs a graph node by node with each op's reference kernel, freeing
//! every intermediate value after its last use. It is the oracle the compiled engine is tested
//! against, and what constant folding and op tests use to run subgraphs.

use super::data::{Data, DataRef};
use super::graph::{Graph, ValueId};
use super::op::GraphExec;
use crate::error::ResultExt;
use crate::{bail, err, Result};
use std::sync::Arc;

/// Runs graphs with reference kernels; stateless, so one value serves every caller.
#[derive(Debug, Default, Clone, Copy)]
pub struct Interpreter;

impl GraphExec for Interpreter {
    fn run_graph(&self, graph: &Arc<Graph>, inputs: &[DataRef], captures: &[DataRef]) -> Result<Vec<Data>> {
        self.run(graph, inputs, captures)
    }
}

/// For each value, the index of the last node that reads it (`usize::MAX` for graph outputs), so
/// that runners free intermediates early.
pub fn last_uses(g: &Graph) -> Vec<usize> {
    let mut last_use = vec![0usize; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            last_use[v] = i;
        }
    }
    for &o in &g.outputs {
        last_use[o] = usize::MAX;
    }
    last_use
}

/// A value of the current run: borrowed from the caller (or the enclosing graph), or computed.
pub enum Slot<'a> {
    Borrowed(DataRef<'a>),
    Owned(Data),
}

impl Slot<'_> {
    pub fn as_ref(&self) -> DataRef<'_> {
        match self {
            Slot::Borrowed(d) => *d,
            Slot::Owned(d) => DataRef::Data(d),
        }
    }
}

/// The slots of one run with the graph inputs and captures bound, after checking their counts.
pub fn bind<'a>(g: &Graph, inputs: &[DataRef<'a>], captures: &[DataRef<'a>]) -> Result<Vec<Option<Slot<'a>>>> {
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
    Ok(slots)
}

/// The value `v`: given or computed this run, or a constant of the graph.
pub fn computed<'a>(g: &'a Graph, slots: &'a [Option<Slot>], v: ValueId) -> Result<DataRef<'a>> {
    match (&slots[v], g.values[v].constant()) {
        (Some(s), _) => Ok(s.as_ref()),
        (None, Some(c)) => Ok(DataRef::Tensor(c.as_ref())),
        (None, None) => Err(err!(Runtime, "value '{}' was not computed", g.values[v].name)),
    }
}

/// The graph outputs of a finished run, in order. The last mention of an output moves it out;
/// an earlier duplicate copies it.
pub fn take_outputs(g: &Graph, slots: &mut [Option<Slot>]) -> Result<Vec<Data>> {
    let mut results = Vec::with_capacity(g.outputs.len());
    for (k, &o) in g.outputs.iter().enumerate() {
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

impl Interpreter {
    /// Runs with one value per graph input and one per captured value (in `graph.captures`
    /// order); returns the graph outputs in order.
    pub fn run(&self, g: &Graph, inputs: &[DataRef], captures: &[DataRef]) -> Result<Vec<Data>> {
        let last_use = last_uses(g);
        let mut slots = bind(g, inputs, captures)?;
        for (i, node) in g.nodes.iter().enumerate() {
            super::limits::check_deadline().context(|| node.describe())?;
            let args: Vec<Option<DataRef>> =
                node.inputs.iter().map(|inp| inp.map(|v| computed(g, &slots, v)).transpose()).collect::<Result<_>>()?;
            let outs = node.op.eval_with(&args, self).context(|| node.describe())?;
            if outs.len() < node.outputs.len() {
                bail!(Runtime, "{} gave {} outputs, expected {}", node.describe(), outs.len(), node.outputs.len());
            }
            for (&id, d) in node.outputs.iter().zip(outs) {
                slots[id] = Some(Slot::Owned(d));
            }
            for &v in node.inputs.iter().flatten() {
                if last_use[v] == i {
                    slots[v] = None;
                }
            }
        }
        take_outputs(g, &mut slots)
    }
}
