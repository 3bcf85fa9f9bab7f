//! Graph rewrites. Each pass is small and says whether it changed the graph; [`optimize`] repeats
//! them until nothing changes.

use crate::ir::Graph;
use crate::Result;

pub mod const_fold;
pub mod dce;

pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrites `graph` in place; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> Result<bool>;
}

/// The passes every model goes through, in order.
pub fn default_passes() -> Vec<Box<dyn Pass>> {
    vec![Box::new(const_fold::ConstFold), Box::new(dce::DeadNodes)]
}

/// Runs `passes` to a fixed point (bounded, so a pass that always reports a change cannot hang).
pub fn optimize(graph: &mut Graph, passes: &[Box<dyn Pass>]) -> Result<()> {
    for _round in 0..16 {
        let mut changed = false;
        for p in passes {
            let c = p.run(graph)?;
            if c {
                log::debug!("pass {} changed the graph ({} nodes left)", p.name(), graph.nodes.len());
            }
            changed |= c;
        }
        if !changed {
            return Ok(());
        }
    }
    Ok(())
}
