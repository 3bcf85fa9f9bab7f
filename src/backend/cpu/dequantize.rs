//! DequantizeLinear of uint8 or int8 to float32 with one scale and zero point for the whole
//! tensor (a dynamically quantised model's embeddings, a QDQ model's activations):
//! `(q - zero_point) as f32 * scale`, the reference's own arithmetic (the difference is an exact
//! integer), so the results are identical; vectorised, the bytes widened in registers.
//! Per-axis or blocked parameters, and other types, run the reference.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::Reference;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{DType, Data, DataRef, Graph, Node, Op};
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
        let zero = zp.map(|z| z.to_f64_vec()).transpose()?.map_or(0.0, |z| z[0]) as i32;
        // An int8 as its byte flipped to uint8 (+128), its zero point moved alike.
        let signed = x.dtype() == DType::I8;
        let (bytes, flip, zero): (&[u8], u8, i32) = if signed {
            let v = x.as_slice::<i8>()?;
            (bytemuck::cast_slice(v), 0x80, zero + 128)
        } else {
            (x.as_slice::<u8>()?, 0, zero)
        };
        let mut y = ctx.buffers.output(bytes.len())?;
        let len = y.len();
        let out = SharedMut(y.as_mut_ptr());
        ctx.pool.parallel_for(len.div_ceil(CHUNK), &|t| {
            let o = out;
            let start = t * CHUNK;
            // SAFETY: each task writes its own chunk of y.
            let chunk = unsafe { std::slice::from_raw_parts_mut(o.0.add(start), CHUNK.min(len - start)) };
            dequantize_bytes(&bytes[start..start + chunk.len()], flip, zero, s, chunk);
        });
        Ok(vec![Data::Tensor(y.into_tensor(x.shape().to_vec())?)])
    }
}

/// `((b ^ flip) - zero) as f32 * scale` for each byte, the chosen instruction set's way.
fn dequantize_bytes(b: &[u8], flip: u8, zero: i32, scale: f32, y: &mut [f32]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dequantize_avx512(b, flip, zero, scale, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dequantize_avx2(b, flip, zero, scale, y) },
        _ => dequantize(b, flip, zero, scale, y),
    }
}

/// Plain Rust that the compiler vectorises for the instruction set it is compiled for.
#[inline(always)]
fn dequantize(b: &[u8], flip: u8, zero: i32, scale: f32, y: &mut [f32]) {
    for (v, &q) in y.iter_mut().zip(b) {
        *v = ((q ^ flip) as i32 - zero) as f32 * scale;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// # Safety
    /// Needs AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn dequantize_avx512(b: &[u8], flip: u8, zero: i32, scale: f32, y: &mut [f32]) {
        super::dequantize(b, flip, zero, scale, y)
    }

    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dequantize_avx2(b: &[u8], flip: u8, zero: i32, scale: f32, y: &mut [f32]) {
        super::dequantize(b, flip, zero, scale, y)
    }
}
