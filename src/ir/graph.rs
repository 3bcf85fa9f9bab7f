//! The computation graph: values (edges with facts), nodes (an op plus its value ids), and the
//! graph's inputs and outputs. Independent of ONNX's protobuf structs.

use super::attr::Attributes;
use super::data::ValueKind;
use super::op::Op;
use super::shape::Fact;
use super::tensor::Tensor;
use crate::{bail, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub type ValueId = usize;

#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub fact: Fact,
    /// What the value is declared to hold; for a sequence or optional, `fact.dtype` is the element
    /// dtype. Values without a declaration count as tensors.
    pub kind: ValueKind,
}

impl Value {
    /// Constant values (initializers, folded results) carry their tensor in the fact.
    pub fn constant(&self) -> Option<&Arc<Tensor>> {
        self.fact.value.as_ref()
    }
}

#[derive(Clone)]
pub struct Node {
    pub name: String,
    /// ONNX domain ("" for the default domain) and op type, kept for messages and `crx580 info`.
    pub domain: String,
    pub op_type: String,
    pub attrs: Attributes,
    pub op: Arc<dyn Op>,
    /// `None` marks an optional input left out (ONNX's empty name).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// `node 'conv1' (Conv)`, for error messages.
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            format!("node ({})", self.op_type)
        } else {
            format!("node '{}' ({})", self.name, self.op_type)
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} -> {:?}", self.describe(), self.inputs, self.outputs)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub values: Vec<Value>,
    /// Kept in an order where every node comes after the producers of its inputs.
    pub nodes: Vec<Node>,
    /// Values fed by the caller, in declaration order (initializers are not inputs).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Values of a subgraph that are bound, by name, to values of the enclosing graph at run time.
    pub captures: Vec<ValueId>,
}

impl Graph {
    pub fn add_value(&mut self, name: impl Into<String>, fact: Fact) -> ValueId {
        self.values.push(Value { name: name.into(), fact, kind: ValueKind::Tensor });
        self.values.len() - 1
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id]
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// For each value, the index of the node that produces it (none for inputs and constants).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                p[o] = Some(i);
            }
        }
        p
    }

    /// Sorts nodes so that producers come before consumers; errors on a cycle or on an input that
    /// nothing produces (and that is not a graph input, capture or constant).
    pub fn sort_nodes(&mut self) -> Result<()> {
        let producers = self.producers();
        let mut state = vec![0u8; self.nodes.len()]; // 0 new, 1 on stack, 2 done
        let mut order = Vec::with_capacity(self.nodes.len());
        for start in 0..self.nodes.len() {
            if state[start] != 0 {
                continue;
            }
            // Iterative DFS: (node, next input index to visit).
            let mut stack = vec![(start, 0usize)];
            state[start] = 1;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                let inputs = &self.nodes[n].inputs;
                if *next < inputs.len() {
                    let inp = inputs[*next];
                    *next += 1;
                    if let Some(p) = inp.and_then(|v| producers[v]) {
                        match state[p] {
                            0 => {
                                state[p] = 1;
                                stack.push((p, 0));
                            }
                            1 => bail!(InvalidModel, "the graph has a cycle through {}", self.nodes[p].describe()),
                            _ => {}
                        }
                    }
                } else {
                    state[n] = 2;
                    order.push(n);
                    stack.pop();
                }
            }
        }
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
        self.nodes = order.into_iter().map(|i| old[i].take().expect("each node is placed once")).collect();
        Ok(())
    }

    /// Number of parameters: elements of all constant values.
    pub fn parameter_count(&self) -> usize {
        let used: std::collections::HashSet<ValueId> =
            self.nodes.iter().flat_map(|n| n.inputs.iter().flatten().copied()).collect();
        self.values
            .iter()
            .enumerate()
            .filter(|(i, v)| v.constant().is_some() && (used.contains(i) || self.outputs.contains(i)))
            .map(|(_, v)| v.constant().map_or(0, |t| t.len()))
            .sum()
    }

    /// How many nodes of each op type, sorted by op type.
    pub fn op_histogram(&self) -> Vec<(String, usize)> {
        let mut h: HashMap<String, usize> = HashMap::new();
        for n in &self.nodes {
            let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            *h.entry(key).or_default() += 1;
        }
        let mut v: Vec<_> = h.into_iter().collect();
        v.sort();
        v
    }
}
