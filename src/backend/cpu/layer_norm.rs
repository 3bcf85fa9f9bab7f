//! FusedLayerNorm (layer normalisation over the last axis) and ONNX LayerNormalization (over the
//! axes from `axis` on, bias optional, only its first output) in f32: per row, the mean, then the
//! variance about it (two passes, as the written-out graph computes it), then
//! `(x - mean) * inv_std * scale + bias`; rows spread over the pool. Sums run in 16 f32 lanes;
//! the reference works in f64, far inside the tolerance for rows of thousands of values.
//!
//! onnxruntime's SkipLayerNormalization (and its RMS form, SkipSimplifiedLayerNormalization)
//! runs here too: each row's `input + skip + bias` is formed in the output row, in cache, then
//! normalised in place, with the optional mean, inverse deviation and sum outputs.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::softmax::fold_lanes;
use super::{f32_input, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::contrib::SkipLayerNorm;
use crate::ops::fused::FusedLayerNorm;
use crate::ops::norm::LayerNorm;
use crate::Result;
use std::sync::Arc;

/// Elements per task.
const CHUNK: usize = 16 * 1024;

pub fn prepare(_graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    if let Some(op) = node.op.downcast_ref::<SkipLayerNorm>() {
        let (beta, bias) = op.beta_bias();
        let kernel = SkipKernel {
            op: node.op.clone(),
            epsilon: op.epsilon as f32,
            beta,
            bias,
            rms: op.simplified,
            outputs: node.outputs.len(),
        };
        return Some(Box::new(kernel));
    }
    let (epsilon, axis) = if let Some(f) = node.op.downcast_ref::<FusedLayerNorm>() {
        (f.epsilon, None)
    } else {
        // RMSNormalization and the Mean/InvStdDev outputs stay on the reference.
        let (axis, epsilon, false) = node.op.downcast_ref::<LayerNorm>()?.single_output()? else { return None };
        (epsilon as f32, Some(axis))
    };
    Some(Box::new(LayerNormKernel { op: node.op.clone(), epsilon, axis }))
}

#[derive(Debug)]
struct LayerNormKernel {
    op: Arc<dyn Op>,
    epsilon: f32,
    /// LayerNormalization's first normalised axis (rows are everything before it, the bias is
    /// optional); `None` for FusedLayerNorm (the last axis, a bias).
    axis: Option<i64>,
}

impl Kernel for LayerNormKernel {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let reference = || Reference { op: self.op.clone() }.run(ctx, inputs);
        let (Some(x), Some(scale)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else { return reference() };
        let bias = f32_input(inputs, 2);
        let rank = x.rank() as i64;
        let n = match self.axis {
            None if bias.is_none() => return reference(),
            None => x.shape().last().copied().unwrap_or(0),
            Some(a) if (-rank..rank).contains(&a) => x.shape()[a.rem_euclid(rank.max(1)) as usize..].iter().product(),
            Some(_) => return reference(), // the reference reports the axis
        };
        // Scale and bias broadcast to the normalised shape: the kernel takes them whole.
        if n == 0 || scale.len() != n || bias.is_some_and(|b| b.len() != n) {
            return reference();
        }
        let (s, b) = (scale.as_slice::<f32>()?, bias.map(|b| b.as_slice::<f32>()).transpose()?);
        let mut y = ctx.buffers.output_copied(x.as_slice::<f32>()?)?;
        let rows = y.len() / n;
        let per_task = (CHUNK / n).max(1);
        let out = SharedMut(y.as_mut_ptr());
        let eps = self.epsilon;
        ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
            let o = out;
            for r in t * per_task..((t + 1) * per_task).min(rows) {
                // SAFETY: each task normalises its own rows of y.
                let row = unsafe { std::slice::from_raw_parts_mut(o.0.add(r * n), n) };
                normalize(row, s, b, eps, false);
            }
        });
        Ok(vec![Data::Tensor(y.into_tensor(x.shape().to_vec())?)])
    }
}

/// SkipLayerNormalization / SkipSimplifiedLayerNormalization.
#[derive(Debug)]
struct SkipKernel {
    op: Arc<dyn Op>,
    epsilon: f32,
    /// Input indices of beta (none in the simplified form) and bias.
    beta: Option<usize>,
    bias: usize,
    rms: bool,
    /// The node's outputs: the statistics and the sum are made only when it has them.
    outputs: usize,
}

impl Kernel for SkipKernel {
    fn name(&self) -> &'static str {
        "skip-layer-norm"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let reference = || Reference { op: self.op.clone() }.run(ctx, inputs);
        let (Some(x), Some(skip), Some(gamma)) = (f32_input(inputs, 0), f32_input(inputs, 1), f32_input(inputs, 2))
        else {
            return reference();
        };
        let n = x.shape().last().copied().unwrap_or(0);
        // An optional per-feature input: absent, or f32 of n values (else the reference decides).
        let per_feature = |i: Option<usize>| match i.and_then(|i| inputs.get(i).copied().flatten()) {
            None => Ok(None),
            Some(_) => i.and_then(|i| f32_input(inputs, i)).filter(|t| t.len() == n).map(Some).ok_or(()),
        };
        let (Ok(beta), Ok(bias)) = (per_feature(self.beta), per_feature(Some(self.bias))) else { return reference() };
        // skip: the input's shape, or fewer rows repeated (a [seq, hidden] skip over batches).
        let fits = skip.shape().last() == Some(&n) && !skip.is_empty() && x.len() % skip.len() == 0;
        if n == 0 || gamma.len() != n || !fits {
            return reference();
        }
        let (xv, sv, g) = (x.as_slice::<f32>()?, skip.as_slice::<f32>()?, gamma.as_slice::<f32>()?);
        let beta = beta.map(|t| t.as_slice::<f32>()).transpose()?;
        let bias = bias.map(|t| t.as_slice::<f32>()).transpose()?;
        let rows = xv.len() / n;
        let outputs = self.outputs;
        let mut y = ctx.buffers.output(xv.len())?;
        let mut sum = if outputs >= 4 { Some(ctx.buffers.output(xv.len())?) } else { None };
        let (mut means, mut inv_stds) = (vec![0f32; rows], vec![0f32; rows]);
        let per_task = (CHUNK / n).max(1);
        let (out, sums) =
            (SharedMut(y.as_mut_ptr()), SharedMut(sum.as_mut().map_or(std::ptr::null_mut(), |s| s.as_mut_ptr())));
        let (mean_out, inv_out) = (SharedMut(means.as_mut_ptr()), SharedMut(inv_stds.as_mut_ptr()));
        let (eps, rms, keep_sum, skip_rows) = (self.epsilon, self.rms, sum.is_some(), sv.len() / n);
        ctx.pool.parallel_for(rows.div_ceil(per_task), &|t| {
            let (o, so, mo, io) = (out, sums, mean_out, inv_out);
            for r in t * per_task..((t + 1) * per_task).min(rows) {
                // SAFETY: each task writes its own rows of y and sum and its own statistics.
                let row = unsafe { std::slice::from_raw_parts_mut(o.0.add(r * n), n) };
                let s = &sv[(r % skip_rows) * n..][..n];
                add_rows(row, &xv[r * n..(r + 1) * n], s, bias);
                if keep_sum {
                    // SAFETY: as above.
                    unsafe { std::slice::from_raw_parts_mut(so.0.add(r * n), n) }.copy_from_slice(row);
                }
                let (mean, inv) = normalize(row, g, beta, eps, rms);
                // SAFETY: as above.
                unsafe { (*mo.0.add(r), *io.0.add(r)) = (mean, inv) };
            }
        });
        let shape = x.shape().to_vec();
        let mut stat_shape = shape.clone();
        *stat_shape.last_mut().expect("rank >= 1") = 1;
        let mut result = vec![Data::Tensor(y.into_tensor(shape.clone())?)];
        if outputs >= 2 {
            result.push(Data::Tensor(Tensor::new(stat_shape.clone(), means)?));
            result.push(Data::Tensor(Tensor::new(stat_shape, inv_stds)?));
        }
        if let Some(sum) = sum {
            result.push(Data::Tensor(sum.into_tensor(shape)?));
        }
        Ok(result)
    }
}

/// `row = x + skip (+ bias)`.
#[inline(always)]
fn add_rows(row: &mut [f32], x: &[f32], skip: &[f32], bias: Option<&[f32]>) {
    match bias {
        Some(b) => row.iter_mut().zip(x).zip(skip).zip(b).for_each(|(((r, x), s), b)| *r = x + s + b),
        None => row.iter_mut().zip(x).zip(skip).for_each(|((r, x), s)| *r = x + s),
    }
}

/// Normalises `row` in place (by its RMS with `rms`, mean 0), returning its mean and 1/deviation.
fn normalize(row: &mut [f32], s: &[f32], b: Option<&[f32]>, eps: f32, rms: bool) -> (f32, f32) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { normalize_avx2(row, s, b, eps, rms) },
        _ => normalize_generic(row, s, b, eps, rms),
    }
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normalize_avx2(row: &mut [f32], s: &[f32], b: Option<&[f32]>, eps: f32, rms: bool) -> (f32, f32) {
    normalize_generic(row, s, b, eps, rms)
}

#[inline(always)]
fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = row.chunks_exact(16);
    for (i, &v) in chunks.remainder().iter().enumerate() {
        acc[i] += f(v);
    }
    for c in chunks {
        for i in 0..16 {
            acc[i] += f(c[i]);
        }
    }
    fold_lanes(acc, |a, b| a + b)
}

#[inline(always)]
fn normalize_generic(row: &mut [f32], s: &[f32], b: Option<&[f32]>, eps: f32, rms: bool) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = if rms { 0.0 } else { lanes_sum(row, |v| v) / n };
    let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    match b {
        Some(b) => {
            for ((v, &s), &b) in row.iter_mut().zip(s).zip(b) {
                *v = (*v - mean) * inv * s + b;
            }
        }
        None => {
            for (v, &s) in row.iter_mut().zip(s) {
                *v = (*v - mean) * inv * s;
            }
        }
    }
    (mean, inv)
}
