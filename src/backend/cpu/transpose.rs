//! Transpose of f32 tensors. Axes that stay neighbours in the same order are merged first (a
//! head split [1, 128, 12, 32] -> [0, 2, 1, 3] is a [128, 12, 32] -> [1, 0, 2] move of 32-float
//! runs); then each output row is a contiguous copy when the last axis stays last, or a strided
//! gather otherwise. Rows are spread over the pool.

use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::order::sort_positions;
use crate::ir::{Data, DataRef, Graph, Node, Op};
use crate::ops::transpose::Transpose;
use crate::Result;
use std::sync::Arc;

/// Output elements per task.
const CHUNK: usize = 32 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    node.op.downcast_ref::<Transpose>()?;
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(TransposeKernel { op: node.op.clone() }))
}

#[derive(Debug)]
struct TransposeKernel {
    op: Arc<dyn Op>,
}

impl Kernel for TransposeKernel {
    fn name(&self) -> &'static str {
        "transpose"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let t = self.op.downcast_ref::<Transpose>().expect("prepared for a Transpose");
        let Some((x, perm)) = f32_input(inputs, 0).and_then(|x| Some((x, t.perm(x.rank()).ok()?))) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        let xv = x.as_slice::<f32>()?;
        let (dims, perm) = merged(x.shape(), &perm);
        // Input strides of the merged axes, in output order.
        let mut in_strides = vec![0usize; dims.len()];
        let mut s = 1;
        for d in (0..dims.len()).rev() {
            in_strides[d] = s;
            s *= dims[d];
        }
        let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let r = out_dims.len();
        let inner = out_dims.last().copied().unwrap_or(1);
        let inner_stride = strides.last().copied().unwrap_or(1);
        let rows = xv.len().checked_div(inner).unwrap_or(0);
        // Every row is written below.
        let mut y = ctx.buffers.output(xv.len())?;
        let per_task = (CHUNK / inner.max(1)).max(1);
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
            let o = out;
            let first = t * per_task;
            let last = (first + per_task).min(rows);
            // The input offset of row `first`, then stepped like an odometer.
            let mut index = vec![0usize; r.saturating_sub(1)];
            let mut rest = first;
            for d in (0..index.len()).rev() {
                index[d] = rest % out_dims[d];
                rest /= out_dims[d];
            }
            let mut base: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            for row in first..last {
                // SAFETY: each task writes its own rows of y.
                let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(row * inner), inner) };
                if inner_stride == 1 {
                    dst.copy_from_slice(&xv[base..base + inner]);
                } else {
                    for (j, v) in dst.iter_mut().enumerate() {
                        *v = xv[base + j * inner_stride];
                    }
                }
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    base += strides[d];
                    if index[d] < out_dims[d] {
                        break;
                    }
                    base -= strides[d] * out_dims[d];
                    index[d] = 0;
                }
            }
        });
        Ok(vec![Data::Tensor(y.into_tensor(out_shape)?)])
    }
}

/// `shape` and `perm` with size-1 axes dropped and axes that stay adjacent and in order merged.
fn merged(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = perm.iter().copied().filter(|&p| shape[p] != 1).collect();
    // Groups of input axes, in output order: a new group starts unless the axis follows the
    // previous one in the input.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &p in &kept {
        // Size-1 axes between two neighbours do not separate them.
        let follows = |g: &Vec<usize>| g.last().is_some_and(|&l| p > l && (l + 1..p).all(|a| shape[a] == 1));
        match groups.last_mut() {
            Some(g) if follows(g) => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    // Number the groups by their position in the input.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    sort_positions(&mut order, &|a, b| groups[a][0].cmp(&groups[b][0]));
    let dims: Vec<usize> = order.iter().map(|&g| groups[g].iter().map(|&a| shape[a]).product()).collect();
    let mut perm = vec![0; groups.len()];
    for (pos, &g) in order.iter().enumerate() {
        perm[g] = pos;
    }
    if dims.is_empty() {
        return (vec![1], vec![0]);
    }
    (dims, perm)
}
