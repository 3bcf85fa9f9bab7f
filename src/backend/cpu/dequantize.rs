//! DequantizeLinear of uint8 or int8 to float32 with one scale and zero point for the whole
//! tensor (a dynamically quantised model's embeddings): through a 256-entry table of
//! `(q - zero_point) as f32 * scale`, the reference's own arithmetic, so the results are
//! identical. Per-axis or blocked parameters, and other types, run the reference.

use super::pool::SharedMut;
use super::Reference;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::quant::DequantizeLinear;
use crate::Result;
use std::sync::Arc;

/// Elements per task.
const CHUNK: usize = 64 * 1024;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    node.op.downcast_ref::<DequantizeLinear>()?;
    let out = *node.outputs.first()?;
    (graph.values[out].fact.dtype == Some(DType::F32)).then(|| Box::new(DequantizeKernel { op: node.op.clone() }) as _)
}

#[derive(Debug)]
struct DequantizeKernel {
    op: Arc<dyn Op>,
}

impl Kernel for DequantizeKernel {
    fn name(&self) -> &'static str {
        "dequantize"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let tensor = |i: usize| inputs.get(i).copied().flatten().and_then(|d| d.tensor());
        let (Some(x), Some(scale), zp) = (tensor(0), tensor(1), tensor(2)) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let per_tensor = scale.dtype() == DType::F32
            && scale.rank() == 0
            && matches!(x.dtype(), DType::U8 | DType::I8)
            && zp.is_none_or(|z| z.rank() == 0 && z.dtype() == x.dtype());
        if !per_tensor {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        }
        let s = scale.as_slice::<f32>()?[0];
        let zero = zp.map(|z| z.to_f64_vec()).transpose()?.map_or(0.0, |z| z[0]);
        // The table is indexed by the stored byte.
        let signed = x.dtype() == DType::I8;
        let table: Vec<f32> =
            (0..=255u8).map(|b| ((if signed { b as i8 as f64 } else { b as f64 }) - zero) as f32 * s).collect();
        let bytes: &[u8] = if signed {
            let v = x.as_slice::<i8>()?;
            // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
            unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len()) }
        } else {
            x.as_slice::<u8>()?
        };
        let mut y = ctx.buffers.zeroed(bytes.len())?;
        let len = y.len();
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(len.div_ceil(CHUNK), &|t| {
            let o = out;
            let start = t * CHUNK;
            // SAFETY: each task writes its own chunk of y.
            let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), CHUNK.min(len - start)) };
            chunk.iter_mut().zip(&bytes[start..]).for_each(|(v, &b)| *v = table[b as usize]);
        });
        Ok(vec![Data::Tensor(Tensor::new(x.shape().to_vec(), y)?)])
    }
}
