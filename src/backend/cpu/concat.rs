//! Concat in f32 into a buffer from the plan's pool: per outer index, each input's run along the
//! axis is copied in turn, the copies (pieces of long ones) spread over the pool: a serial copy
//! of YOLOv8n's and DBNet's feature-map concats left one core idle at 2 threads. Other dtypes,
//! and inputs the reference would refuse, go to the reference kernel (which also makes the error
//! messages).

use super::pool::SharedMut;
use super::{maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::normalize_axis;
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::slice::Concat;
use crate::Result;
use std::sync::Arc;

/// Most floats one task copies: 64 KiB, a few microseconds.
const CHUNK: usize = 16 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let c = node.op.downcast_ref::<Concat>()?;
    if node.inputs.is_empty() || !node.inputs.iter().all(|&v| v.is_some() && maybe_f32(graph, v)) {
        return None;
    }
    Some(Box::new(ConcatKernel { op: node.op.clone(), axis: c.axis() }))
}

#[derive(Debug)]
struct ConcatKernel {
    op: Arc<dyn Op>,
    axis: i64,
}

impl ConcatKernel {
    /// The inputs, the axis and the output shape, when every input is an f32 tensor of one rank
    /// that agrees with the first outside the axis.
    fn layout<'a>(&self, inputs: &[Option<DataRef<'a>>]) -> Option<(Vec<&'a Tensor>, usize, Vec<usize>)> {
        let xs: Vec<&Tensor> = inputs.iter().map(|d| d.and_then(|d| d.tensor())).collect::<Option<_>>()?;
        let first = xs.first()?;
        let axis = normalize_axis(self.axis, first.rank()).ok()?;
        let mut shape = first.shape().to_vec();
        shape[axis] = 0;
        for x in &xs {
            let same = x.dtype() == DType::F32
                && x.rank() == first.rank()
                && x.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !same {
                return None;
            }
            shape[axis] = shape[axis].checked_add(x.shape()[axis])?;
        }
        Some((xs, axis, shape))
    }
}

impl Kernel for ConcatKernel {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let Some((xs, axis, shape)) = self.layout(inputs) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        // Every element is written below (the runs tile the output).
        let len = checked_len(&shape, DType::F32)?;
        let mut y = ctx.buffers.output(len)?;
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let srcs = xs.iter().map(|x| x.as_slice::<f32>()).collect::<Result<Vec<_>>>()?;
        // Per outer index, each input's run, cut into pieces of at most CHUNK floats: one task
        // each, the tasks of one outer index numbered input by input.
        let runs: Vec<usize> = xs.iter().map(|x| x.shape()[axis] * inner).collect();
        let block: usize = runs.iter().sum();
        let pieces: Vec<usize> = runs.iter().map(|r| r.div_ceil(CHUNK)).collect();
        let per_outer: usize = pieces.iter().sum();
        if per_outer == 0 {
            return Ok(vec![Data::Tensor(y.into_tensor(shape)?)]);
        }
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for_work(outer * per_outer, block.div_ceil(per_outer), &|t| {
            let (o, mut p) = (t / per_outer, t % per_outer);
            let mut at = o * block;
            for ((&run, &n), src) in runs.iter().zip(&pieces).zip(&srcs) {
                if p < n {
                    let (from, to) = (p * CHUNK, ((p + 1) * CHUNK).min(run));
                    let ptr = out;
                    // SAFETY: the pieces of all tasks tile the output without overlap; this one is
                    // floats from..to of input run (o, i), inside the output of outer * block.
                    let dst = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(at + from), to - from) };
                    dst.copy_from_slice(&src[o * run + from..o * run + to]);
                    return;
                }
                p -= n;
                at += run;
            }
        });
        Ok(vec![Data::Tensor(y.into_tensor(shape)?)])
    }
}
