//! `OpenClBackend`: claims MatMul, Gemm, FusedMatMul and f32 elementwise nodes (Add, Sub, Mul,
//! Div with broadcasting; the fused activations) and runs them with the kernels of gemm.cl and
//! elementwise.cl. For now each node uploads its inputs and downloads its output (correct, not
//! fast): device-resident tensors come with the engine's device storage. A run that meets inputs
//! the kernels do not take (another dtype, a 1-D MatMul operand, batch dims that broadcast
//! partially) runs the reference kernel instead, so the answer is always right.

use super::elementwise::{BinaryOp, Elementwise};
use super::gemm::{BiasLayout, Gemm, GemmCall};
use super::{Buffer, Context};
use crate::backend::cpu::{f32_input, maybe_f32, Reference};
use crate::backend::{Backend, ExecCtx, Kernel};
use crate::ir::shape::broadcast_shapes;
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::binary::{Binary, Kind};
use crate::ops::fused::{activation_of, Activation, FusedMatMul};
use crate::ops::matmul::{Gemm as GemmOp, MatMul};
use crate::Result;
use std::sync::{Arc, OnceLock};

/// The OpenCL backend of one session: a context on the chosen device and its programs, built on
/// first use (and then taken from the disk cache).
pub struct OpenClBackend {
    ctx: Arc<Context>,
    gemm: OnceLock<Arc<Gemm>>,
    elementwise: OnceLock<Arc<Elementwise>>,
}

impl OpenClBackend {
    /// The backend on the first OpenCL device (GPUs first), caching programs in the default cache
    /// directory.
    pub fn new() -> Result<OpenClBackend> {
        let device = Context::first_device()?;
        log::debug!("OpenCL device: {}", device.describe());
        Ok(OpenClBackend {
            ctx: Context::new(device, super::cache::default_dir())?,
            gemm: OnceLock::new(),
            elementwise: OnceLock::new(),
        })
    }

    fn gemm(&self) -> Result<Arc<Gemm>> {
        if let Some(g) = self.gemm.get() {
            return Ok(g.clone());
        }
        let g = Arc::new(Gemm::new(&self.ctx)?);
        Ok(self.gemm.get_or_init(|| g).clone())
    }

    fn elementwise(&self) -> Result<Arc<Elementwise>> {
        if let Some(e) = self.elementwise.get() {
            return Ok(e.clone());
        }
        let e = Arc::new(Elementwise::new(&self.ctx)?);
        Ok(self.elementwise.get_or_init(|| e).clone())
    }
}

/// The elementwise op of a node the backend takes, if it takes it.
fn elementwise_of(graph: &Graph, node: &Node) -> Option<Elementwise1> {
    if let Some(b) = node.op.downcast_ref::<Binary>() {
        let op = match b.kind {
            Kind::Add => BinaryOp::Add,
            Kind::Sub => BinaryOp::Sub,
            Kind::Mul => BinaryOp::Mul,
            Kind::Div => BinaryOp::Div,
            _ => return None,
        };
        return b.align.is_numpy().then_some(Elementwise1::Binary(op));
    }
    match activation_of(graph, node)? {
        Activation::None => None,
        act => (node.inputs.len() == 1 || matches!(act, Activation::Clip(..))).then_some(Elementwise1::Unary(act)),
    }
}

#[derive(Debug, Clone, Copy)]
enum Elementwise1 {
    Binary(BinaryOp),
    Unary(Activation),
}

impl Backend for OpenClBackend {
    fn name(&self) -> &'static str {
        "opencl"
    }

    fn supports(&self, graph: &Graph, node: &Node) -> bool {
        let f32_inputs = |n: usize| node.inputs.iter().take(n).all(|&v| maybe_f32(graph, v));
        let op = &node.op;
        if op.is::<MatMul>() || op.is::<FusedMatMul>() || op.is::<GemmOp>() {
            return f32_inputs(node.inputs.len());
        }
        match elementwise_of(graph, node) {
            Some(Elementwise1::Binary(_)) => f32_inputs(2),
            Some(Elementwise1::Unary(_)) => f32_inputs(1),
            None => false,
        }
    }

    fn prepare(&self, graph: &Graph, node: &Node) -> Result<Box<dyn Kernel>> {
        let op = node.op.clone();
        if let Some(f) = node.op.downcast_ref::<FusedMatMul>() {
            return Ok(Box::new(MatMulKernel {
                op,
                gemm: self.gemm()?,
                act: f.act,
                fused_bias: true,
                gemm_attrs: None,
            }));
        }
        if node.op.is::<MatMul>() {
            return Ok(Box::new(MatMulKernel {
                op,
                gemm: self.gemm()?,
                act: Activation::None,
                fused_bias: false,
                gemm_attrs: None,
            }));
        }
        if let Some(g) = node.op.downcast_ref::<GemmOp>() {
            let attrs = (g.trans_a, g.trans_b, g.alpha as f32, g.beta as f32);
            return Ok(Box::new(MatMulKernel {
                op,
                gemm: self.gemm()?,
                act: Activation::None,
                fused_bias: false,
                gemm_attrs: Some(attrs),
            }));
        }
        match elementwise_of(graph, node) {
            Some(kind) => Ok(Box::new(ElementwiseKernel { op, ew: self.elementwise()?, kind })),
            None => crate::bail!(Unsupported, "the OpenCL backend has no kernel for {}", node.op_type),
        }
    }
}

/// MatMul (numpy batching), FusedMatMul (bias per column, activation) and Gemm.
#[derive(Debug)]
struct MatMulKernel {
    op: Arc<dyn Op>,
    gemm: Arc<Gemm>,
    act: Activation,
    fused_bias: bool,
    /// Gemm's trans_a, trans_b, alpha, beta; `None` for MatMul.
    gemm_attrs: Option<(bool, bool, f32, f32)>,
}

impl MatMulKernel {
    /// The device call, or `None` when the shapes need the reference kernel.
    fn plan(
        &self,
        a: &[usize],
        b: &[usize],
        c: Option<&[usize]>,
    ) -> Option<(GemmCall, Vec<usize>, Option<BiasLayout>)> {
        if a.len() < 2 || b.len() < 2 {
            return None;
        }
        let (ab, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let (ar, ac, br, bc) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 2], b[b.len() - 1]);
        let (trans_a, trans_b, alpha, beta) = self.gemm_attrs.unwrap_or((false, false, 1.0, 1.0));
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
        if k != kb {
            return None;
        }
        let batch_shape = broadcast_shapes(ab, bb).ok()?;
        let batch: usize = batch_shape.iter().product();
        // Each operand either has every batch (its batch dims are the output's) or one matrix.
        let whole = |dims: &[usize]| {
            let count: usize = dims.iter().product();
            (count == batch && dims.len() == batch_shape.len()).then_some(true).or((count == 1).then_some(false))
        };
        let (a_batched, b_batched) = (whole(ab)?, whole(bb)?);
        let call = GemmCall { m, n, k, batch, trans_a, trans_b, a_batched, b_batched, alpha, beta, act: self.act };
        let mut out = batch_shape;
        out.extend([m, n]);
        let bias = match c {
            None => None,
            Some(c) if self.fused_bias => {
                if c.iter().product::<usize>() != n {
                    return None;
                }
                Some(BiasLayout::per_column())
            }
            Some(c) => {
                // Gemm's C broadcasts to [M, N].
                let (cm, cn) = match *c {
                    [] => (1, 1),
                    [cn] => (1, cn),
                    [cm, cn] => (cm, cn),
                    _ => return None,
                };
                if !(cm == 1 || cm == m) || !(cn == 1 || cn == n) {
                    return None;
                }
                Some(BiasLayout {
                    row_stride: if cm == 1 { 0 } else { cn },
                    col_stride: if cn == 1 { 0 } else { 1 },
                    batch_stride: 0,
                })
            }
        };
        Some((call, out, bias))
    }
}

impl MatMulKernel {
    fn op_name(&self) -> String {
        format!("{:?}", self.op).split([' ', '{', '(']).next().unwrap_or_default().to_string()
    }
}

impl Kernel for MatMulKernel {
    fn name(&self) -> &'static str {
        "opencl-gemm"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let reference = || {
            log::debug!("{}: inputs its OpenCL kernel does not take; the reference kernel runs", self.op_name());
            Reference { op: self.op.clone() }.run(ctx, inputs)
        };
        let (Some(a), Some(b)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else {
            return reference();
        };
        let c = f32_input(inputs, 2);
        if inputs.get(2).copied().flatten().is_some() && c.is_none() {
            return reference();
        }
        let Some((call, shape, bias_layout)) = self.plan(a.shape(), b.shape(), c.map(|c| c.shape())) else {
            return reference();
        };
        let dev = self.gemm.context();
        let (da, db) = (dev.upload(a.as_slice::<f32>()?)?, dev.upload(b.as_slice::<f32>()?)?);
        let dc = match (c, bias_layout) {
            (Some(c), Some(l)) => Some((dev.upload(c.as_slice::<f32>()?)?, l)),
            _ => None,
        };
        let len = call.batch * call.m * call.n;
        let out = dev.alloc::<f32>(len)?;
        self.gemm.run(&call, &da, &db, dc.as_ref().map(|(buf, l)| (buf, *l)), None, &out)?;
        download(ctx, &out, shape, len)
    }
}

#[derive(Debug)]
struct ElementwiseKernel {
    op: Arc<dyn Op>,
    ew: Arc<Elementwise>,
    kind: Elementwise1,
}

impl ElementwiseKernel {
    fn op_name(&self) -> String {
        format!("{:?}", self.kind)
    }
}

impl Kernel for ElementwiseKernel {
    fn name(&self) -> &'static str {
        "opencl-elementwise"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let reference = || {
            log::debug!("{}: inputs its OpenCL kernel does not take; the reference kernel runs", self.op_name());
            Reference { op: self.op.clone() }.run(ctx, inputs)
        };
        let dev = self.ew.context();
        let Some(x) = f32_input(inputs, 0) else {
            return reference();
        };
        let (shape, out) = match self.kind {
            Elementwise1::Binary(op) => {
                let Some(y) = f32_input(inputs, 1) else {
                    return reference();
                };
                let Ok(shape) = broadcast_shapes(x.shape(), y.shape()) else {
                    return reference();
                };
                if shape.len() > super::elementwise::MAX_RANK {
                    return reference();
                }
                let (dx, dy) = (dev.upload(x.as_slice::<f32>()?)?, dev.upload(y.as_slice::<f32>()?)?);
                let out = dev.alloc::<f32>(shape.iter().product())?;
                self.ew.binary(op, &dx, x.shape(), &dy, y.shape(), &out, &shape, Activation::None)?;
                (shape, out)
            }
            Elementwise1::Unary(act) => {
                let dx = dev.upload(x.as_slice::<f32>()?)?;
                let out = dev.alloc::<f32>(x.len())?;
                self.ew.unary(&dx, &out, x.len(), act)?;
                (x.shape().to_vec(), out)
            }
        };
        let len = shape.iter().product();
        download(ctx, &out, shape, len)
    }
}

/// A device result copied into an f32 tensor over a buffer from the plan's pool.
fn download(ctx: &ExecCtx, out: &Buffer, shape: Vec<usize>, len: usize) -> Result<Vec<Data>> {
    let mut y = ctx.buffers.zeroed(len)?;
    out.read(&mut y)?;
    Ok(vec![Data::Tensor(Tensor::new(shape, y)?)])
}
