//! Dead node removal: nodes none of whose outputs reach a graph output are dropped.

use super::Pass;
use crate::ir::Graph;
use crate::Result;

pub struct DeadNodes;

impl Pass for DeadNodes {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let mut live = vec![false; graph.values.len()];
        for &o in &graph.outputs {
            live[o] = true;
        }
        // Nodes are topologically sorted, so one backward sweep marks everything needed.
        let mut keep = vec![false; graph.nodes.len()];
        for (i, node) in graph.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|&o| live[o]) {
                keep[i] = true;
                for &inp in node.inputs.iter().flatten() {
                    live[inp] = true;
                }
            }
        }
        let before = graph.nodes.len();
        let mut k = keep.into_iter();
        graph.nodes.retain(|_| k.next().unwrap_or(true));
        Ok(graph.nodes.len() != before)
    }
}
