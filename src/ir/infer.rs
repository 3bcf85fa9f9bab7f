//! Shape and type inference over a whole graph: each node's op computes its output facts from its
//! input facts, in topological order. Computed facts win over the model's declarations (exporters
//! write wrong ones); declarations only fill what inference left unknown.

use super::graph::Graph;
use super::shape::{Dim, Fact};
use crate::error::ResultExt;
use crate::{bail, Result};

/// Recomputes the facts of every node output in `graph`.
pub fn infer_facts(graph: &mut Graph) -> Result<()> {
    for n in 0..graph.nodes.len() {
        let node = &graph.nodes[n];
        let facts: Vec<Option<&Fact>> = node.inputs.iter().map(|i| i.map(|v| &graph.values[v].fact)).collect();
        let out = node.op.infer(&facts).context(|| node.describe())?;
        if out.len() < node.outputs.len() {
            bail!(
                Shape,
                "{}: inference gave {} outputs, the node has {}",
                node.describe(),
                out.len(),
                node.outputs.len()
            );
        }
        let outputs = node.outputs.clone();
        for (id, computed) in outputs.into_iter().zip(out) {
            let declared = &graph.values[id].fact;
            let merged = merge(computed, declared);
            graph.values[id].fact = merged;
        }
    }
    Ok(())
}

/// Computed facts, with unknown parts filled in from the declared ones where they do not conflict.
fn merge(computed: Fact, declared: &Fact) -> Fact {
    let dtype = computed.dtype.or(declared.dtype);
    let shape = match (computed.shape, &declared.shape) {
        (None, d) => d.clone(),
        (Some(c), Some(d)) if c.len() == d.len() => Some(
            c.into_iter()
                .zip(d)
                .map(|(c, d)| match (&c, d) {
                    (Dim::Unknown, _) => d.clone(),
                    _ => c,
                })
                .collect(),
        ),
        (Some(c), _) => Some(c),
    };
    Fact { dtype, shape, value: computed.value }
}
