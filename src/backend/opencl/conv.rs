//! The launcher of `kernels/conv.cl` and the device kernel of Conv/FusedConv nodes with constant
//! f32 weights and 1 or 2 spatial axes: group-1 convolutions as im2col + GEMM (1x1 unpadded
//! stride-1 ones as a plain GEMM over the image), grouped and depthwise ones direct.

use super::backend::{op_name, reference};
use super::context::{Buffer, Context};
use super::gemm::{BiasLayout, Gemm, GemmCall};
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{DType, Data, DataRef, Graph, Node, Op};
use crate::ops::conv::Conv;
use crate::ops::fused::{Activation, FusedConv};
use crate::ops::window::Axis;
use crate::Result;
use std::sync::Arc;

/// The largest im2col scratch buffer; a bigger problem runs the direct kernel.
const MAX_COLUMNS_BYTES: usize = 256 << 20;

/// The compiled conv program of one context.
#[derive(Debug)]
pub struct ConvProgram {
    ctx: Arc<Context>,
    im2col: ClKernel,
    direct: ClKernel,
    col2im: ClKernel,
}

/// The window geometry of one 2-D convolution (a 1-D one has a unit height axis).
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub group: usize,
    pub h: Axis,
    pub w: Axis,
}

impl ConvShape {
    /// The arguments both kernels of conv.cl end with: C, H, W, KH, KW, OH, OW, the strides, the
    /// dilations and the leading pads.
    fn geometry_args(&self) -> [Arg<'static>; 13] {
        let (h, w) = (&self.h, &self.w);
        [
            self.c,
            h.input,
            w.input,
            h.kernel,
            w.kernel,
            h.output,
            w.output,
            h.stride,
            w.stride,
            h.dilation,
            w.dilation,
            h.pad_begin,
            w.pad_begin,
        ]
        .map(|v| Arg::I32(v as i32))
    }

    pub fn out_len(&self) -> usize {
        self.n * self.m * self.h.output * self.w.output
    }

    /// Whether the image itself is the im2col matrix (1x1, stride 1, no padding).
    pub fn pointwise(&self) -> bool {
        [self.h, self.w].iter().all(|a| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.output == a.input)
    }
}

impl ConvProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<ConvProgram> {
        let program = Program::build(ctx, "conv.cl", &[])?;
        Ok(ConvProgram {
            ctx: ctx.clone(),
            im2col: program.kernel("im2col")?,
            direct: program.kernel("conv_direct")?,
            col2im: program.kernel("col2im")?,
        })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Enqueues y = act(conv(x, w) + bias + residual), one work-item per output element.
    #[allow(clippy::too_many_arguments)]
    pub fn direct(
        &self,
        s: &ConvShape,
        x: &Buffer,
        w: &Buffer,
        bias: Option<&Buffer>,
        residual: Option<&Buffer>,
        y: &Buffer,
        act: Activation,
    ) -> Result<()> {
        check_len(s.out_len())?;
        let (code, a, b) = super::activation::args(act);
        let head = [
            Arg::Buf(x),
            Arg::Buf(w),
            Arg::Buf(bias.unwrap_or(w)),
            Arg::I32(bias.is_some() as i32),
            Arg::Buf(residual.unwrap_or(y)),
            Arg::I32(residual.is_some() as i32),
            Arg::Buf(y),
            Arg::I32(s.m as i32),
            Arg::I32(s.group as i32),
            Arg::I32(code),
            Arg::F32(a),
            Arg::F32(b),
        ];
        let args: Vec<Arg> = head.into_iter().chain(s.geometry_args()).collect();
        self.direct.launch(&args, &[s.w.output, s.h.output, s.n * s.m], None)
    }

    /// Enqueues the im2col matrices of every image of x into `col` (N x C*KH*KW x OH*OW).
    pub fn im2col(&self, s: &ConvShape, x: &Buffer, col: &Buffer) -> Result<()> {
        let rows = s.c * s.h.kernel * s.w.kernel;
        let ohw = s.h.output * s.w.output;
        check_len(s.n * rows * ohw)?;
        let args: Vec<Arg> = [Arg::Buf(x), Arg::Buf(col)].into_iter().chain(s.geometry_args()).collect();
        self.im2col.launch(&args, &[rows, s.n], None)
    }
}

impl ConvProgram {
    /// Enqueues ConvTranspose's gather: y (N x C x H x W of `s`, the forward view) = bias + the
    /// tap columns `col` (N x C*KH*KW x OH*OW) summed onto the output elements they land on.
    pub fn col2im(&self, s: &ConvShape, col: &Buffer, bias: Option<&Buffer>, y: &Buffer) -> Result<()> {
        check_len(s.n * s.c * s.h.kernel * s.w.kernel * s.h.output * s.w.output)?;
        check_len(s.n * s.c * s.h.input * s.w.input)?;
        let head = [Arg::Buf(col), Arg::Buf(bias.unwrap_or(col)), Arg::I32(bias.is_some() as i32), Arg::Buf(y)];
        let args: Vec<Arg> = head.into_iter().chain(s.geometry_args()).collect();
        self.col2im.launch(&args, &[s.w.input, s.h.input, s.n * s.c], None)
    }
}

fn check_len(n: usize) -> Result<()> {
    if n > i32::MAX as usize {
        crate::bail!(
            ResourceLimit,
            "a convolution of {n} elements is too large for the OpenCL kernels' 32-bit indices"
        );
    }
    Ok(())
}

/// The Conv inside a Conv or FusedConv node, with the fused residual and activation.
fn conv_of(op: &Arc<dyn Op>) -> Option<(&Conv, bool, Activation)> {
    if let Some(f) = op.downcast_ref::<FusedConv>() {
        return Some((f.conv(), f.residual, f.act));
    }
    op.downcast_ref::<Conv>().map(|c| (c, false, Activation::None))
}

/// Whether the device takes this node: a Conv/FusedConv with constant f32 weights of rank 3 or 4
/// and a constant bias (or none).
pub fn claims(graph: &Graph, node: &Node) -> bool {
    conv_of(&node.op).is_some() && constant_weights_and_bias(graph, node)
}

/// Whether a (transposed) convolution node's weights are a constant f32 tensor of rank 3 or 4
/// and its bias is constant too (or absent): what the device kernels take.
pub(super) fn constant_weights_and_bias(graph: &Graph, node: &Node) -> bool {
    let constant = |i: usize| {
        node.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|v| graph.values[v].constant())
            .filter(|t| t.dtype() == DType::F32)
    };
    let bias_ok = node.inputs.get(2).copied().flatten().is_none() || constant(2).is_some();
    constant(1).is_some_and(|w| matches!(w.rank(), 3 | 4)) && bias_ok
}

pub fn prepare(graph: &Graph, node: &Node, program: Arc<ConvProgram>, gemm: Arc<Gemm>) -> Result<Box<dyn Kernel>> {
    let w = node.inputs[1].and_then(|v| graph.values[v].constant()).expect("claims checked it");
    let ws = match *w.shape() {
        [m, c, k] => [m, c, 1, k],
        [m, c, kh, kw] => [m, c, kh, kw],
        _ => crate::bail!(Unsupported, "OpenCL Conv: weights of shape {:?}", w.shape()),
    };
    Ok(Box::new(ConvKernel { op: node.op.clone(), weights_shape: ws, one_d: w.rank() == 3, program, gemm }))
}

#[derive(Debug)]
struct ConvKernel {
    op: Arc<dyn Op>,
    weights_shape: [usize; 4],
    one_d: bool,
    program: Arc<ConvProgram>,
    gemm: Arc<Gemm>,
}

impl ConvKernel {
    /// The run's geometry, `None` for inputs the kernels do not take.
    fn shape(&self, xs: &[usize]) -> Result<Option<ConvShape>> {
        let (conv, _, _) = conv_of(&self.op).expect("a conv");
        let [m, cg, kh, kw] = self.weights_shape;
        let group = conv.attrs.group;
        if xs.len() != if self.one_d { 3 } else { 4 } || xs[1] != cg * group || !m.is_multiple_of(group) {
            return Ok(None);
        }
        let window = &conv.attrs.window;
        let (h, w) = if self.one_d {
            (Axis::UNIT, window.forward_axis(0, xs[2], kw)?)
        } else {
            (window.forward_axis(0, xs[2], kh)?, window.forward_axis(1, xs[3], kw)?)
        };
        Ok(Some(ConvShape { n: xs[0], c: xs[1], m, group, h, w }))
    }
}

impl Kernel for ConvKernel {
    fn name(&self) -> &'static str {
        "opencl-conv"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let (_, has_residual, act) = conv_of(&self.op).expect("a conv");
        let (Some(x), Some(w)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else {
            return fallback();
        };
        let bias = f32_input(inputs, 2);
        let residual = if has_residual { f32_input(inputs, 3) } else { None };
        let Some(s) = self.shape(x.shape())? else {
            return fallback();
        };
        let mut out_shape = vec![s.n, s.m];
        if !self.one_d {
            out_shape.push(s.h.output);
        }
        out_shape.push(s.w.output);
        if has_residual && residual.is_none_or(|r| r.shape() != out_shape) {
            return fallback();
        }
        if bias.is_some_and(|b| b.len() != s.m) || w.len() != s.m * self.weights_shape[1..].iter().product::<usize>() {
            return fallback();
        }
        let dev = self.program.context();
        let dx = resident::input(dev, x)?;
        let dw = resident::input(dev, w)?;
        let db = bias.map(|b| resident::input(dev, b)).transpose()?;
        let dr = residual.map(|r| resident::input(dev, r)).transpose()?;
        let y = ClTensor::alloc(dev, s.out_len())?;
        let k = s.c * s.h.kernel * s.w.kernel;
        let ohw = s.h.output * s.w.output;
        let columns_bytes = s.n * k * ohw * dev.element_bytes();
        if s.group == 1 && columns_bytes <= MAX_COLUMNS_BYTES.min(dev.device.max_alloc as usize) {
            let columns;
            let b = if s.pointwise() {
                dx.buffer()
            } else {
                columns = ClTensor::alloc(dev, s.n * k * ohw)?;
                self.program.im2col(&s, dx.buffer(), columns.buffer())?;
                columns.buffer()
            };
            // FusedConv adds the residual before the activation: the GEMM's epilogue does both.
            let call =
                GemmCall { batch: s.n, a_batched: false, act, residual_first: true, ..GemmCall::new(s.m, ohw, k) };
            let per_row = BiasLayout { row_stride: 1, col_stride: 0, batch_stride: 0 };
            let bias = db.as_ref().map(|b| (b.buffer(), per_row));
            self.gemm.run(&call, dw.buffer(), b, bias, dr.as_ref().map(|r| r.buffer()), y.buffer())?;
        } else {
            let (b, r) = (db.as_ref().map(|b| b.buffer()), dr.as_ref().map(|r| r.buffer()));
            self.program.direct(&s, dx.buffer(), dw.buffer(), b, r, y.buffer(), act)?;
        }
        Ok(vec![y.into_data(out_shape)?])
    }
}
