//! `OpenClBackend`: which nodes the device takes, and their prepared kernels. It claims f32
//! MatMul, Gemm, FusedMatMul, elementwise arithmetic (Pow with an f32 exponent too) and
//! activations (gemm.cl, elementwise.cl), Conv/FusedConv (conv.cl with gemm.cl), group-1
//! ConvTranspose (gemm.cl, then conv.cl's col2im), MaxPool,
//! AveragePool, global pooling (pool.cl), Softmax/LogSoftmax, inference BatchNormalization,
//! InstanceNormalization, LayerNormalization/RMSNormalization and the fused LayerNorm (norm.cl),
//! the Reduce* ops (reduce.cl), Resize/Upsample (resize.cl), Transpose, Slice, Split, Concat, Pad
//! and Gather (movement.cl), and RNN/GRU/LSTM layers with default activations (rnn.cl).
//! Tensors stay on the device between these nodes (`resident.rs`); weights are uploaded once, at
//! prepare. A run that meets inputs a kernel does not take (another dtype, shapes it has no
//! path for) runs the reference kernel instead, so the answer is always right.

use super::conv::{self, ConvProgram};
use super::conv_transpose;
use super::elementwise::{BinaryOp, Elementwise};
use super::gemm::{BiasLayout, Gemm, GemmCall};
use super::movement::{self, MovementProgram};
use super::norm::{self, NormProgram};
use super::pool::{self, PoolProgram};
use super::reduce::{self, ReduceProgram};
use super::resident::{self, ClTensor};
use super::resize::{self, ResizeProgram};
use super::rnn::{self, RnnProgram};
use super::Context;
use crate::backend::cpu::{f32_input, maybe_f32, Reference};
use crate::backend::{Backend, ExecCtx, Kernel};
use crate::ir::shape::broadcast_shapes;
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::binary::{Binary, Kind, Pow};
use crate::ops::fused::{activation_of, Activation, FusedMatMul};
use crate::ops::matmul::{Gemm as GemmOp, MatMul};
use crate::Result;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The OpenCL backend of one session: a context on the chosen device and its programs, each
/// built on first use (and then taken from the disk cache).
pub struct OpenClBackend {
    ctx: Arc<Context>,
    gemm: OnceLock<Arc<Gemm>>,
    elementwise: OnceLock<Arc<Elementwise>>,
    conv: OnceLock<Arc<ConvProgram>>,
    pool: OnceLock<Arc<PoolProgram>>,
    norm: OnceLock<Arc<NormProgram>>,
    movement: OnceLock<Arc<MovementProgram>>,
    reduce: OnceLock<Arc<ReduceProgram>>,
    resize: OnceLock<Arc<ResizeProgram>>,
    rnn: OnceLock<Arc<RnnProgram>>,
}

/// The backend's part of the session options.
#[derive(Debug, Clone, Default)]
pub struct OpenClOptions {
    /// Tensors on the device as float16 (computed in f32).
    pub half_storage: bool,
    /// Where compiled programs are cached; `None`: [`super::cache::default_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// The program in `slot`, built by `make` on first use.
fn get<T>(slot: &OnceLock<Arc<T>>, make: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
    if let Some(p) = slot.get() {
        return Ok(p.clone());
    }
    let p = Arc::new(make()?);
    Ok(slot.get_or_init(|| p).clone())
}

impl OpenClBackend {
    /// The backend on the first OpenCL device (GPUs first).
    pub fn new(options: &OpenClOptions) -> Result<OpenClBackend> {
        let device = Context::first_device()?;
        log::debug!("OpenCL device: {}", device.describe());
        let cache_dir = options.cache_dir.clone().or_else(super::cache::default_dir);
        Ok(OpenClBackend::on(Context::with_storage(device, cache_dir, options.half_storage)?))
    }

    /// The backend on an existing context (tests count its transfers).
    pub fn on(ctx: Arc<Context>) -> OpenClBackend {
        OpenClBackend {
            ctx,
            gemm: OnceLock::new(),
            elementwise: OnceLock::new(),
            conv: OnceLock::new(),
            pool: OnceLock::new(),
            norm: OnceLock::new(),
            movement: OnceLock::new(),
            reduce: OnceLock::new(),
            resize: OnceLock::new(),
            rnn: OnceLock::new(),
        }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn gemm(&self) -> Result<Arc<Gemm>> {
        get(&self.gemm, || Gemm::new(&self.ctx))
    }

    fn elementwise(&self) -> Result<Arc<Elementwise>> {
        get(&self.elementwise, || Elementwise::new(&self.ctx))
    }

    fn conv(&self) -> Result<Arc<ConvProgram>> {
        get(&self.conv, || ConvProgram::new(&self.ctx))
    }

    fn pool(&self) -> Result<Arc<PoolProgram>> {
        get(&self.pool, || PoolProgram::new(&self.ctx))
    }

    fn norm(&self) -> Result<Arc<NormProgram>> {
        get(&self.norm, || NormProgram::new(&self.ctx))
    }

    fn movement(&self) -> Result<Arc<MovementProgram>> {
        get(&self.movement, || MovementProgram::new(&self.ctx))
    }

    fn reduce(&self) -> Result<Arc<ReduceProgram>> {
        get(&self.reduce, || ReduceProgram::new(&self.ctx))
    }

    fn resize(&self) -> Result<Arc<ResizeProgram>> {
        get(&self.resize, || ResizeProgram::new(&self.ctx))
    }

    fn rnn(&self) -> Result<Arc<RnnProgram>> {
        get(&self.rnn, || RnnProgram::new(&self.ctx))
    }

    /// Uploads the node's constant f32 inputs now (attached to their storage, so every run and
    /// every node reading them finds them on the device).
    fn upload_weights(&self, graph: &Graph, node: &Node) -> Result<()> {
        for v in node.inputs.iter().flatten() {
            if let Some(c) = graph.values[*v].constant().filter(|c| c.dtype() == crate::DType::F32) {
                resident::input(&self.ctx, c)?;
            }
        }
        Ok(())
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
    if let Some(p) = node.op.downcast_ref::<Pow>() {
        return p.align.is_numpy().then_some(Elementwise1::Binary(BinaryOp::Pow));
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
        let claimed = conv::claims(graph, node)
            || conv_transpose::claims(graph, node)
            || pool::claims(node)
            || norm::claims(graph, node)
            || movement::claims(graph, node)
            || reduce::claims(node)
            || resize::claims(node)
            || rnn::claims(node);
        if claimed {
            return f32_inputs(1);
        }
        match elementwise_of(graph, node) {
            Some(Elementwise1::Binary(_)) => f32_inputs(2),
            Some(Elementwise1::Unary(_)) => f32_inputs(1),
            None => false,
        }
    }

    fn prepare(&self, graph: &Graph, node: &Node) -> Result<Box<dyn Kernel>> {
        let kernel = self.prepare_kernel(graph, node)?;
        if std::env::var_os("CRX580_OPENCL_CHECK").is_some_and(|v| !v.is_empty() && v != "0") {
            return Ok(Box::new(Checked { kernel, op: node.op.clone(), node: node.describe() }));
        }
        Ok(kernel)
    }
}

impl OpenClBackend {
    fn prepare_kernel(&self, graph: &Graph, node: &Node) -> Result<Box<dyn Kernel>> {
        self.upload_weights(graph, node)?;
        let op = node.op.clone();
        if conv::claims(graph, node) {
            return conv::prepare(graph, node, self.conv()?, self.gemm()?);
        }
        if conv_transpose::claims(graph, node) {
            return conv_transpose::prepare(node, self.conv()?, self.gemm()?);
        }
        if pool::claims(node) {
            return pool::prepare(node, self.pool()?);
        }
        if norm::claims(graph, node) {
            return norm::prepare(node, self.norm()?);
        }
        if movement::claims(graph, node) {
            return movement::prepare(node, self.movement()?);
        }
        if reduce::claims(node) {
            return reduce::prepare(node, self.reduce()?);
        }
        if resize::claims(node) {
            return resize::prepare(node, self.resize()?);
        }
        if rnn::claims(node) {
            return rnn::prepare(node, self.rnn()?);
        }
        let matmul = |act, fused_bias, gemm_attrs: Option<(bool, bool, f32, f32)>| -> Result<Box<dyn Kernel>> {
            // A constant transposed B (a fully connected layer's weights) is transposed once here:
            // the kernel reads B row-major and would otherwise transpose it on every run.
            let constant_b = node.inputs.get(1).copied().flatten().and_then(|v| graph.values[v].constant());
            let b_transposed = match (gemm_attrs, constant_b) {
                (Some((_, true, _, _)), Some(b)) if b.dtype() == crate::DType::F32 && b.rank() == 2 => {
                    let (n, k) = (b.shape()[0], b.shape()[1]);
                    let v = b.as_slice::<f32>()?;
                    let t = Tensor::new(vec![k, n], (0..k * n).map(|i| v[(i % n) * k + i / n]).collect())?;
                    resident::input(&self.ctx, &t)?;
                    Some(t)
                }
                _ => None,
            };
            Ok(Box::new(MatMulKernel { op: op.clone(), gemm: self.gemm()?, act, fused_bias, gemm_attrs, b_transposed }))
        };
        if let Some(f) = node.op.downcast_ref::<FusedMatMul>() {
            return matmul(f.act, true, None);
        }
        if node.op.is::<MatMul>() {
            return matmul(Activation::None, false, None);
        }
        if let Some(g) = node.op.downcast_ref::<GemmOp>() {
            return matmul(Activation::None, false, Some((g.trans_a, g.trans_b, g.alpha as f32, g.beta as f32)));
        }
        match elementwise_of(graph, node) {
            Some(kind) => Ok(Box::new(ElementwiseKernel { op, ew: self.elementwise()?, kind })),
            None => crate::bail!(Unsupported, "the OpenCL backend has no kernel for {}", node.op_type),
        }
    }
}

/// A device kernel checked against the reference kernel on every run (`CRX580_OPENCL_CHECK=1`, a
/// debugging aid): the first node whose outputs differ fails the run with its name and the
/// largest difference.
#[derive(Debug)]
struct Checked {
    kernel: Box<dyn Kernel>,
    op: Arc<dyn Op>,
    node: String,
}

impl Kernel for Checked {
    fn name(&self) -> &'static str {
        self.kernel.name()
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let got = self.kernel.run(ctx, inputs)?;
        let want = Reference { op: self.op.clone() }.run(ctx, inputs)?;
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let (Ok(g), Ok(w)) = (g.as_tensor(), w.as_tensor()) else { continue };
            let (Ok(gv), Ok(wv)) = (g.as_slice::<f32>(), w.as_slice::<f32>()) else { continue };
            let worst = gv.iter().zip(wv).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
            if g.shape() != w.shape() || worst.is_nan() || worst > 1e-3 {
                crate::bail!(
                    Runtime,
                    "CRX580_OPENCL_CHECK: output {k} of {} differs from the reference kernel's (shape {:?} vs {:?}, \
                     largest relative difference {worst})",
                    self.node,
                    g.shape(),
                    w.shape()
                );
            }
        }
        log::debug!("CRX580_OPENCL_CHECK: {} matches the reference", self.node);
        Ok(got)
    }
}

/// The reference kernel of `op` on `inputs`, for inputs a device kernel does not take.
pub(super) fn reference(op: &Arc<dyn Op>, what: &str, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
    log::debug!("{what}: inputs its OpenCL kernel does not take; the reference kernel runs");
    Reference { op: op.clone() }.run(ctx, inputs)
}

/// The inputs as tensors (host or device) for an op's accessors, which read only the small
/// host inputs (axes, starts, scales...); `None` when one is not a tensor.
pub(super) fn tensors<'a>(inputs: &[Option<DataRef<'a>>]) -> Option<Vec<Option<&'a Tensor>>> {
    inputs.iter().map(|d| d.map_or(Some(None), |d| d.tensor().map(Some))).collect()
}

/// A short name of an op for messages: its type name.
pub(super) fn op_name(op: &Arc<dyn Op>) -> String {
    format!("{op:?}").split([' ', '{', '(']).next().unwrap_or_default().to_string()
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
    /// A constant B of a Gemm with transB, transposed (K x N) and on the device.
    b_transposed: Option<Tensor>,
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
        let call = GemmCall {
            batch,
            trans_a,
            trans_b,
            a_batched,
            b_batched,
            alpha,
            beta,
            act: self.act,
            ..GemmCall::new(m, n, k)
        };
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

impl Kernel for MatMulKernel {
    fn name(&self) -> &'static str {
        "opencl-gemm"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let (Some(a), Some(b)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else {
            return fallback();
        };
        let c = f32_input(inputs, 2);
        if inputs.get(2).copied().flatten().is_some() && c.is_none() {
            return fallback();
        }
        let Some((call, shape, bias_layout)) = self.plan(a.shape(), b.shape(), c.map(|c| c.shape())) else {
            return fallback();
        };
        let dev = self.gemm.context();
        // The constant B (the only one a Gemm node has in that slot) in its transposed copy.
        let (call, b) = match &self.b_transposed {
            Some(bt) if call.trans_b && b.shape() == [bt.shape()[1], bt.shape()[0]] => {
                (GemmCall { trans_b: false, ..call }, bt)
            }
            _ => (call, b),
        };
        let (da, db) = (resident::input(dev, a)?, resident::input(dev, b)?);
        let dc = match (c, bias_layout) {
            (Some(c), Some(l)) => Some((resident::input(dev, c)?, l)),
            _ => None,
        };
        let out = ClTensor::alloc(dev, call.batch * call.m * call.n)?;
        let bias = dc.as_ref().map(|(buf, l)| (buf.buffer(), *l));
        self.gemm.run(&call, da.buffer(), db.buffer(), bias, None, out.buffer())?;
        Ok(vec![out.into_data(shape)?])
    }
}

#[derive(Debug)]
struct ElementwiseKernel {
    op: Arc<dyn Op>,
    ew: Arc<Elementwise>,
    kind: Elementwise1,
}

impl Kernel for ElementwiseKernel {
    fn name(&self) -> &'static str {
        "opencl-elementwise"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &format!("{:?}", self.kind), ctx, inputs);
        let dev = self.ew.context();
        let Some(x) = f32_input(inputs, 0) else {
            return fallback();
        };
        match self.kind {
            Elementwise1::Binary(op) => {
                let Some(y) = f32_input(inputs, 1) else {
                    return fallback();
                };
                let Ok(shape) = broadcast_shapes(x.shape(), y.shape()) else {
                    return fallback();
                };
                if shape.len() > super::elementwise::MAX_RANK {
                    return fallback();
                }
                let (dx, dy) = (resident::input(dev, x)?, resident::input(dev, y)?);
                let out = ClTensor::alloc(dev, shape.iter().product())?;
                self.ew.binary(
                    op,
                    dx.buffer(),
                    x.shape(),
                    dy.buffer(),
                    y.shape(),
                    out.buffer(),
                    &shape,
                    Activation::None,
                )?;
                Ok(vec![out.into_data(shape)?])
            }
            Elementwise1::Unary(act) => {
                let dx = resident::input(dev, x)?;
                let out = ClTensor::alloc(dev, x.len())?;
                self.ew.unary(dx.buffer(), out.buffer(), x.len(), act)?;
                Ok(vec![out.into_data(x.shape().to_vec())?])
            }
        }
    }
}
