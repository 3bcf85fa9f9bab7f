//! Resize (and Upsample) in f32. The op's own coordinate code gives, per resized axis, the taps
//! of every output position (so every mode and coordinate transformation means what the
//! reference means); this kernel only applies them fast:
//! - nearest everywhere: one pass that gathers each output row from its source row, and copies
//!   the previous output row when it comes from the same source row (an integer upscale);
//! - otherwise (linear, cubic, extrapolated crops): one pass per resized axis in f32, rows spread
//!   over the pool (the reference works in f64; the difference is far inside the tolerance).
//!
//! Empty inputs and other dtypes run the reference.

use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::buffers::Output;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::resize::{Resize, Taps};
use crate::Result;
use std::sync::Arc;

/// Output elements per task.
const CHUNK: usize = 32 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    node.op.downcast_ref::<Resize>()?;
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(ResizeKernel { op: node.op.clone() }))
}

#[derive(Debug)]
struct ResizeKernel {
    op: Arc<dyn Op>,
}

impl Kernel for ResizeKernel {
    fn name(&self) -> &'static str {
        "resize"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let x = match f32_input(inputs, 0) {
            Some(x) if !x.is_empty() && x.rank() > 0 => x,
            _ => return Reference { op: self.op.clone() }.run(ctx, inputs),
        };
        let resize = self.op.downcast_ref::<Resize>().expect("prepared for a Resize");
        let tensors: Vec<Option<&Tensor>> = inputs.iter().map(|d| d.and_then(|d| d.tensor())).collect();
        let (out_shape, axes) = resize.resampling(x.shape(), &tensors)?;
        let xv = x.as_slice::<f32>()?;
        if axes.iter().all(|(_, t)| is_nearest(t)) {
            return Ok(vec![Data::Tensor(gather(ctx, xv, x.shape(), &out_shape, &axes)?.into_tensor(out_shape)?)]);
        }
        // One axis at a time, each pass reading the one before (the input first).
        let mut data: Option<Output> = None;
        let mut shape = x.shape().to_vec();
        for (axis, taps) in &axes {
            let next = resample_axis(ctx, data.as_deref().unwrap_or(xv), &shape, *axis, taps)?;
            if let Some(done) = data.replace(next) {
                ctx.buffers.give(done.into_buffer());
            }
            shape[*axis] = taps.fill.len();
        }
        let y = match data {
            Some(y) => y,
            None => ctx.buffers.output_copied(xv)?,
        };
        Ok(vec![Data::Tensor(y.into_tensor(out_shape)?)])
    }
}

/// Every output position takes exactly one source value, unweighted.
fn is_nearest(t: &Taps) -> bool {
    t.fill.iter().all(Option::is_none)
        && t.starts.windows(2).all(|w| w[1] == w[0] + 1)
        && t.weight.iter().all(|&w| w == 1.0)
}

/// Nearest resampling of every axis at once: output rows (all axes but the last) gathered from
/// their source rows through per-axis index tables.
fn gather(ctx: &ExecCtx, x: &[f32], shape: &[usize], out_shape: &[usize], axes: &[(usize, Taps)]) -> Result<Output> {
    let r = shape.len();
    // Source index along each axis for each output index.
    let mut index: Vec<Vec<usize>> = shape.iter().map(|&n| (0..n).collect()).collect();
    for (axis, taps) in axes {
        index[*axis] = taps.index.clone();
    }
    let mut strides = vec![1usize; r];
    for d in (0..r.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let row_len = out_shape[r - 1];
    let last = &index[r - 1];
    let last_identity = last.len() == shape[r - 1] && last.iter().enumerate().all(|(i, &s)| i == s);
    // An integer upscale of the last axis (FPN necks: 2x, 4x, 8x) repeats each source value.
    let factor = last.len() / shape[r - 1].max(1);
    let repeats =
        factor > 1 && last.len() == shape[r - 1] * factor && last.iter().enumerate().all(|(i, &s)| i / factor == s);
    // Every row is written below.
    let mut y = ctx.buffers.output(out_shape.iter().product())?;
    let rows = y.len().checked_div(row_len).unwrap_or(0);
    let per_task = (CHUNK / row_len.max(1)).max(1);
    let out = SharedMut(y.as_mut_ptr());
    ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
        let o = out;
        let mut previous: Option<(usize, usize)> = None;
        for row in t * per_task..((t + 1) * per_task).min(rows) {
            let (mut i, mut src) = (row, 0);
            for d in (0..r - 1).rev() {
                src += index[d][i % out_shape[d]] * strides[d];
                i /= out_shape[d];
            }
            // SAFETY: each task writes its own rows of y; `p` is an earlier row of this task.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(row * row_len), row_len) };
            match previous {
                Some((p, s)) if s == src => {
                    dst.copy_from_slice(unsafe { std::slice::from_raw_parts(o.0.add(p * row_len), row_len) })
                }
                _ if last_identity => dst.copy_from_slice(&x[src..src + row_len]),
                _ if repeats => repeat_each(dst, &x[src..src + shape[r - 1]], factor),
                _ => {
                    let line = &x[src..src + shape[r - 1]];
                    dst.iter_mut().zip(last).for_each(|(v, &j)| *v = line[j]);
                }
            }
            previous = Some((row, src));
        }
    });
    Ok(y)
}

/// `dst[i] = line[i / factor]`: each value `factor` times, with the common factors unrolled so
/// that the compiler writes whole vectors.
fn repeat_each(dst: &mut [f32], line: &[f32], factor: usize) {
    fn fixed<const F: usize>(dst: &mut [f32], line: &[f32]) {
        for (out, &v) in dst.chunks_exact_mut(F).zip(line) {
            out.copy_from_slice(&[v; F]);
        }
    }
    match factor {
        2 => fixed::<2>(dst, line),
        4 => fixed::<4>(dst, line),
        8 => fixed::<8>(dst, line),
        _ => dst.chunks_exact_mut(factor).zip(line).for_each(|(out, &v)| out.fill(v)),
    }
}

/// Resamples `data` (of `shape`) along `axis` with `taps`, in f32.
fn resample_axis(ctx: &ExecCtx, data: &[f32], shape: &[usize], axis: usize, taps: &Taps) -> Result<Output> {
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let out_len = taps.fill.len();
    let weight: Vec<f32> = taps.weight.iter().map(|&w| w as f32).collect();
    // Each row is zeroed by its task before its taps add up in it (in cache, not in a pass
    // of its own over the whole output).
    let mut y = ctx.buffers.output(outer.saturating_mul(out_len).saturating_mul(inner))?;
    // One row: one output position of one outer index, `inner` values long.
    let rows = outer * out_len;
    let per_task = (CHUNK / inner.max(1)).max(1);
    let out = SharedMut(y.as_mut_ptr());
    ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
        let o = out;
        for row in t * per_task..((t + 1) * per_task).min(rows) {
            let (b, p) = (row / out_len, row % out_len);
            // SAFETY: each task writes its own rows of y.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(row * inner), inner) };
            if let Some(v) = taps.fill[p] {
                dst.fill(v as f32);
                continue;
            }
            let src = &data[b * len * inner..(b + 1) * len * inner];
            dst.fill(0.0);
            let span = taps.starts[p]..taps.starts[p + 1];
            let row_taps = taps.index[span.clone()].iter().zip(&weight[span]);
            if inner == 1 {
                dst[0] = row_taps.map(|(&i, &w)| w * src[i]).sum();
                continue;
            }
            for (&i, &w) in row_taps {
                dst.iter_mut().zip(&src[i * inner..(i + 1) * inner]).for_each(|(d, &s)| *d += w * s);
            }
        }
    });
    Ok(y)
}
