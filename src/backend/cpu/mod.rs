//! The CPU backend: runs every node. Nodes with a fast kernel get one prepared at compile time,
//! with weights packed once: convolution (implicit-im2col GEMM; Winograd F(4x4, 3x3) for 3x3
//! stride-1 layers where it wins; depthwise), ConvTranspose, matrix products (f32 and integer),
//! LSTM/GRU, Attention (ONNX and com.microsoft), SkipLayerNormalization, BiasGelu/FastGelu,
//! ArgMax/ArgMin, activations, elementwise arithmetic, Pow by a constant, Softmax, FusedLayerNorm,
//! ReduceMean over trailing axes, Cast between f32 and f16, GlobalAveragePool, MaxPool, Transpose,
//! Resize, Concat,
//! DynamicQuantizeLinear, QuantizeLinear, per-tensor DequantizeLinear. Every other node runs its op's reference
//! kernel. Fast kernels fall back to the reference kernel at run time for inputs they do not
//! handle (other dtypes, unusual broadcasts), so they never refuse what the reference runs.

pub mod activation;
pub mod argmax;
pub mod attention;
pub mod attention_contrib;
pub mod binary;
pub mod cast;
mod chunks;
pub mod concat;
pub mod conv;
mod conv_direct;
mod conv_narrow;
pub mod conv_pointwise;
mod conv_stem;
pub mod conv_transpose;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_blocked;
#[cfg(target_arch = "x86_64")]
mod depthwise_rows;
#[cfg(target_arch = "x86_64")]
mod depthwise_rows_avx2;
pub mod dequantize;
pub mod gemm;
pub mod gemm_i8;
mod gemv;
mod int8;
pub mod isa;
pub mod layer_norm;
pub mod matmul;
pub mod matmul_integer;
pub mod maxpool;
#[cfg(target_arch = "x86_64")]
mod maxpool_rows;
pub mod pool;
pub mod qlinear_conv;
pub mod qlinear_depthwise;
pub mod quantize;
pub mod quantize_linear;
pub mod recurrent;
pub mod reduce;
pub mod resize;
pub mod softmax;
pub mod sparse;
pub mod transpose;
pub mod unary;
pub mod winograd;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_attention;
#[cfg(test)]
mod tests_contrib;
#[cfg(test)]
mod tests_int8;
#[cfg(test)]
mod tests_mobilenet;
#[cfg(test)]
mod tests_qlinear;
#[cfg(test)]
mod tests_transformer;
#[cfg(test)]
mod tests_upsample;

use super::{Backend, ExecCtx, Kernel};
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::Result;
use std::sync::Arc;

pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, _graph: &Graph, _node: &Node) -> bool {
        true
    }

    /// Its fast kernels are f32; float16 would run on reference kernels.
    fn widens_f16(&self) -> bool {
        true
    }

    fn prepare(&self, graph: &Graph, node: &Node) -> Result<Box<dyn Kernel>> {
        if let Some(k) = conv::prepare(graph, node)? {
            return Ok(k);
        }
        if let Some(k) = conv_transpose::prepare(graph, node)? {
            return Ok(k);
        }
        if let Some(k) = matmul::prepare(graph, node)? {
            return Ok(k);
        }
        if let Some(k) = matmul_integer::prepare(graph, node)? {
            return Ok(k);
        }
        if let Some(k) = qlinear_conv::prepare(graph, node)? {
            return Ok(k);
        }
        if let Some(k) = dequantize::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = quantize::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = quantize_linear::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = recurrent::prepare(graph, node)? {
            return Ok(k);
        }
        if let Some(k) = maxpool::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = reduce::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = transpose::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = attention::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = attention_contrib::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = argmax::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = layer_norm::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = resize::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = softmax::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = cast::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = unary::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = unary::prepare_pow(graph, node) {
            return Ok(k);
        }
        if let Some(k) = binary::prepare(graph, node) {
            return Ok(k);
        }
        if let Some(k) = concat::prepare(graph, node) {
            return Ok(k);
        }
        Ok(Box::new(Reference { op: node.op.clone() }))
    }
}

/// A node run by its op's reference kernel.
#[derive(Debug)]
pub struct Reference {
    pub op: Arc<dyn Op>,
}

impl Kernel for Reference {
    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        self.op.eval_with(inputs, ctx.graphs)
    }

    fn name(&self) -> &'static str {
        "reference"
    }
}

/// Input `i` as an f32 tensor, if it is one.
pub(crate) fn f32_input<'a>(inputs: &[Option<DataRef<'a>>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten().and_then(|d| d.tensor()).filter(|t| t.dtype() == DType::F32)
}

/// Whether value `v` of `graph` is declared f32 (or not declared at all, which a run checks).
pub(crate) fn maybe_f32(graph: &Graph, v: Option<usize>) -> bool {
    v.is_some_and(|v| graph.values[v].fact.dtype.is_none_or(|d| d == DType::F32))
}

/// The constant input `i` of `node`, if it has one.
pub(crate) fn constant<'g>(graph: &'g Graph, node: &Node, i: usize) -> Option<&'g Tensor> {
    let v = (*node.inputs.get(i)?)?;
    graph.values[v].constant().map(|t| &**t)
}

/// The constant f32 input `i` of `node`, if it has one.
pub(crate) fn const_f32<'g>(graph: &'g Graph, node: &Node, i: usize) -> Option<&'g Tensor> {
    let v = (*node.inputs.get(i)?)?;
    graph.values[v].constant().map(|t| &**t).filter(|t| t.dtype() == DType::F32)
}

/// `cpu: <model name> (<n> threads)` from /proc/cpuinfo where available, with the kernels' ISA.
pub fn describe_cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("cpu: {model} ({threads} hardware threads, {} kernels)", isa::isa().name())
}

/// `dst.copy_from_slice(src)` for short runs (a panel row, a plane's row): whole blocks of
/// `BLOCK` floats as fixed-size copies the compiler keeps inline, where a `memcpy` call per run
/// of a few dozen floats costs more than the copy (4.9% of MobileNetV2 went to such calls).
#[inline(always)]
pub(super) fn copy_short<const BLOCK: usize>(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(BLOCK);
    let mut s = src.chunks_exact(BLOCK);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; BLOCK] = s.try_into().expect("a block");
        let d: &mut [f32; BLOCK] = d.try_into().expect("a block");
        *d = *s;
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}
