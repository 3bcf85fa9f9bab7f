//! The launcher of `kernels/reduce.cl` and the device kernel of the Reduce* ops of f32 tensors
//! over any axes (up to 3 runs of kept and 3 of reduced axes once neighbours are merged, which
//! covers every tensor of up to 6 axes).

use super::backend::{op_name, reference, tensors};
use super::context::Context;
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Node, Op};
use crate::ops::reduce::{Reduce, ReduceKind};
use crate::Result;
use std::sync::Arc;

/// Runs of kept and of reduced axes the kernel takes (each).
const MAX_RUNS: usize = 3;

#[derive(Debug)]
pub struct ReduceProgram {
    ctx: Arc<Context>,
    reduce: ClKernel,
}

impl ReduceProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<ReduceProgram> {
        let program = Program::build(ctx, "reduce.cl", &[])?;
        Ok(ReduceProgram { ctx: ctx.clone(), reduce: program.kernel("reduce")? })
    }
}

pub fn claims(node: &Node) -> bool {
    node.op.is::<Reduce>()
}

pub fn prepare(node: &Node, program: Arc<ReduceProgram>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(ReduceKernel { op: node.op.clone(), program }))
}

/// The kernel's op code (`OP_*` in reduce.cl).
fn code(kind: ReduceKind) -> i32 {
    match kind {
        ReduceKind::Sum => 0,
        ReduceKind::Mean => 1,
        ReduceKind::Max => 2,
        ReduceKind::Min => 3,
        ReduceKind::Prod => 4,
        ReduceKind::L1 => 5,
        ReduceKind::L2 => 6,
        ReduceKind::LogSum => 7,
        ReduceKind::LogSumExp => 8,
        ReduceKind::SumSquare => 9,
    }
}

/// Axes that the kernel walks as one: (size, stride).
type Run = (usize, usize);

/// The kept and the reduced runs of a contiguous tensor of `shape` (outermost first): neighbouring
/// axes of one kind merge, axes of size 1 vanish.
pub fn runs(shape: &[usize], reduced: &[bool]) -> (Vec<Run>, Vec<Run>) {
    let (mut kept, mut gone): (Vec<Run>, Vec<Run>) = (vec![], vec![]);
    let mut last: Option<bool> = None;
    let mut stride = 1;
    for (&d, &r) in shape.iter().zip(reduced).rev() {
        if d == 1 {
            continue;
        }
        let list = if r { &mut gone } else { &mut kept };
        match (last == Some(r), list.last_mut()) {
            (true, Some(run)) => run.0 *= d,
            _ => list.push((d, stride)),
        }
        last = Some(r);
        stride *= d;
    }
    kept.reverse();
    gone.reverse();
    (kept, gone)
}

#[derive(Debug)]
struct ReduceKernel {
    op: Arc<dyn Op>,
    program: Arc<ReduceProgram>,
}

impl Kernel for ReduceKernel {
    fn name(&self) -> &'static str {
        "opencl-reduce"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let r = self.op.downcast_ref::<Reduce>().expect("claims checked it");
        let (Some(x), Some(ts)) = (f32_input(inputs, 0), tensors(inputs)) else { return fallback() };
        // Identity reductions (no axes, noop_with_empty_axes) and bad axes go to the reference.
        let Ok(Some((mask, out_shape))) = r.reduced(x.shape(), &ts) else { return fallback() };
        let (kept, gone) = runs(x.shape(), &mask);
        let count: usize = gone.iter().map(|g| g.0).product();
        let n: usize = kept.iter().map(|k| k.0).product();
        if x.is_empty() || count == 0 || x.len() > i32::MAX as usize || kept.len() > MAX_RUNS || gone.len() > MAX_RUNS {
            return fallback();
        }
        let pad = |runs: &[Run]| {
            let mut all = vec![(1usize, 0usize); MAX_RUNS - runs.len()];
            all.extend_from_slice(runs);
            all
        };
        let (k, g) = (pad(&kept), pad(&gone));
        let dev = &self.program.ctx;
        let dx = resident::input(dev, x)?;
        let y = ClTensor::alloc(dev, n)?;
        let i = |v: usize| Arg::I32(v as i32);
        let args = [
            Arg::Buf(dx.buffer()),
            Arg::Buf(y.buffer()),
            i(n),
            Arg::I32(code(r.kind())),
            i(k[1].0),
            i(k[2].0),
            i(k[0].1),
            i(k[1].1),
            i(k[2].1),
            i(g[0].0),
            i(g[1].0),
            i(g[2].0),
            i(g[0].1),
            i(g[1].1),
            i(g[2].1),
        ];
        self.program.reduce.launch(&args, &[n], None)?;
        Ok(vec![y.into_data(out_shape)?])
    }
}
