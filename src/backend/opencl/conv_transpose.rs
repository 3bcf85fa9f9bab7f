//! The device kernel of ConvTranspose nodes with constant f32 weights, group 1 and 1 or 2 spatial
//! axes: a GEMM of the transposed weights by the input (every input pixel's contribution to each
//! output tap), then `col2im` in conv.cl gathers the taps of each output element and adds the bias.

use super::backend::{op_name, reference};
use super::conv::{ConvProgram, ConvShape};
use super::gemm::{Gemm, GemmCall};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op};
use crate::ops::conv_transpose::ConvTranspose;
use crate::ops::window::Axis;
use crate::Result;
use std::sync::Arc;

/// The largest tap-column scratch buffer; a bigger problem runs the reference kernel.
const MAX_COLUMNS_BYTES: usize = 256 << 20;

/// Whether the device takes this node: a ConvTranspose with constant f32 weights of rank 3 or 4,
/// group 1, and a constant bias (or none).
pub fn claims(graph: &Graph, node: &Node) -> bool {
    let Some(op) = node.op.downcast_ref::<ConvTranspose>() else { return false };
    op.group() == 1 && super::conv::constant_weights_and_bias(graph, node)
}

pub fn prepare(node: &Node, program: Arc<ConvProgram>, gemm: Arc<Gemm>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(ConvTransposeKernel { op: node.op.clone(), program, gemm }))
}

#[derive(Debug)]
struct ConvTransposeKernel {
    op: Arc<dyn Op>,
    program: Arc<ConvProgram>,
    gemm: Arc<Gemm>,
}

impl Kernel for ConvTransposeKernel {
    fn name(&self) -> &'static str {
        "opencl-conv-transpose"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let op = self.op.downcast_ref::<ConvTranspose>().expect("claims checked it");
        let (Some(x), Some(w)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else {
            return fallback();
        };
        let bias = f32_input(inputs, 2);
        let (xs, ws) = (x.shape(), w.shape());
        if !matches!(xs.len(), 3 | 4) || ws.len() != xs.len() {
            return fallback();
        }
        let (group, axes) = op.geometry(xs, ws)?;
        let (n, c, m) = (xs[0], xs[1], ws[1]);
        if group != 1 || ws[0] != c || bias.is_some_and(|b| b.len() != m) {
            return fallback();
        }
        // The forward view: a convolution of the output (C = m channels) into the input's plane.
        let (h, wa) = match axes[..] {
            [w] => (Axis::UNIT, w),
            [h, w] => (h, w),
            _ => return fallback(),
        };
        let s = ConvShape { n, c: m, m: c, group: 1, h, w: wa };
        let taps = h.kernel * wa.kernel;
        let in_plane = h.output * wa.output;
        let dev = self.program.context();
        // Hostile shapes overflow: they take the reference kernel, which reports them.
        let columns_bytes = [m, taps, in_plane, dev.element_bytes()].iter().try_fold(n, |a, &b| a.checked_mul(b));
        if columns_bytes.is_none_or(|b| b > MAX_COLUMNS_BYTES.min(dev.device.max_alloc as usize)) {
            return fallback();
        }
        let dx = resident::input(dev, x)?;
        let dw = resident::input(dev, w)?;
        let db = bias.map(|b| resident::input(dev, b)).transpose()?;
        // col[n] = W^T (m*taps x c) x X[n] (c x in_plane): W is stored c x (m*taps).
        let columns = ClTensor::alloc(dev, n * m * taps * in_plane)?;
        let call = GemmCall { batch: n, trans_a: true, a_batched: false, ..GemmCall::new(m * taps, in_plane, c) };
        self.gemm.run(&call, dw.buffer(), dx.buffer(), None, None, columns.buffer())?;
        let out_len = n * m * h.input * wa.input;
        let y = ClTensor::alloc(dev, out_len)?;
        self.program.col2im(&s, columns.buffer(), db.as_ref().map(|b| b.buffer()), y.buffer())?;
        let mut shape = vec![n, m];
        shape.extend(axes.iter().map(|a| a.input));
        Ok(vec![y.into_data(shape)?])
    }
}
