//! QuantizeLinear of float32 to uint8 or int8, per tensor or per index of one axis, in float32
//! (the reference's f64 division of two f32 values, rounded to f32, is f32 division): the
//! vectorised pass DynamicQuantizeLinear uses, with QuantizeLinear's NaN rule. The QDQ models
//! `crx580 convert --to int8-static` writes quantize every activation this way. Blocked
//! parameters, other types, or a `precision` other than float32 run the reference.

use super::pool::SharedMut;
use super::quantize::{quantize_bytes, Bounds};
use super::{f32_input, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::normalize_axis;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::quant::QuantizeLinear;
use crate::Result;
use std::sync::Arc;

/// Elements per task, about.
const CHUNK: usize = 64 * 1024;

pub fn prepare(_graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let q = node.op.downcast_ref::<QuantizeLinear>()?;
    if q.block_size != 0 || q.precision.is_some_and(|p| p != DType::F32) {
        return None;
    }
    Some(Box::new(QuantizeLinearKernel { op: node.op.clone(), axis: q.axis }))
}

#[derive(Debug)]
struct QuantizeLinearKernel {
    op: Arc<dyn Op>,
    axis: i64,
}

impl Kernel for QuantizeLinearKernel {
    fn name(&self) -> &'static str {
        "quantize-linear"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        match self.try_run(ctx, inputs)? {
            Some(y) => Ok(vec![Data::Tensor(y)]),
            None => Reference { op: self.op.clone() }.run(ctx, inputs),
        }
    }
}

impl QuantizeLinearKernel {
    /// The quantized tensor, or `None` for inputs the reference handles (and reports).
    fn try_run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let (Some(x), Some(scale)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else { return Ok(None) };
        let zp = inputs.get(2).copied().flatten().and_then(|d| d.tensor());
        let Some(q) = self.op.downcast_ref::<QuantizeLinear>() else { return Ok(None) };
        let Ok(dtype) = q.output_dtype(zp.map(Tensor::dtype)) else { return Ok(None) };
        let bounds = match dtype {
            DType::U8 => Bounds { lo: 0.0, hi: 255.0, nan_to_zero_point: true },
            DType::I8 => Bounds { lo: -128.0, hi: 127.0, nan_to_zero_point: true },
            _ => return Ok(None),
        };
        // One (scale, zero point) per `inner` elements, cycling through `dim` of them.
        let (dim, inner) = if scale.len() == 1 {
            (1, x.len().max(1))
        } else {
            let Ok(axis) = normalize_axis(self.axis, x.rank()) else { return Ok(None) };
            if scale.rank() != 1 || scale.len() != x.shape()[axis] {
                return Ok(None);
            }
            let inner = x.shape()[axis + 1..].iter().product::<usize>();
            // Short runs (an axis near the end) would be a task or a call per few elements.
            if inner < 64 {
                return Ok(None);
            }
            (scale.len(), inner)
        };
        if zp.is_some_and(|z| z.len() != scale.len()) {
            return Ok(None);
        }
        let zps: Vec<f32> = match zp {
            None => vec![0.0; dim],
            Some(z) => z.to_f64_vec()?.into_iter().map(|v| v as f32).collect(),
        };
        let (xv, sv) = (x.as_slice::<f32>()?, scale.as_slice::<f32>()?);
        let mut y = ctx.buffers.bytes_for_overwrite(xv.len())?;
        if inner == 0 {
            return Ok(Some(self.tensor(x.shape(), dtype, y)?));
        }
        // Tasks of whole runs of `inner`, or chunks of one long run.
        let per_run = inner.div_ceil(CHUNK);
        let step = inner.div_ceil(per_run);
        let runs = xv.len() / inner;
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(runs * per_run, &|t| {
            let o = out;
            let (run, part) = (t / per_run, t % per_run);
            let p = run % dim;
            let start = run * inner + part * step;
            let end = (run * inner + inner).min(start + step);
            // SAFETY: each task writes its own part of y.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), end - start) };
            quantize_bytes(&xv[start..end], sv[p], zps[p], bounds, dst);
        });
        Ok(Some(self.tensor(x.shape(), dtype, y)?))
    }

    fn tensor(&self, shape: &[usize], dtype: DType, y: Vec<u8>) -> Result<Tensor> {
        match dtype {
            DType::I8 => Tensor::new(shape.to_vec(), bytemuck::allocation::cast_vec::<u8, i8>(y)),
            _ => Tensor::new(shape.to_vec(), y),
        }
    }
}
