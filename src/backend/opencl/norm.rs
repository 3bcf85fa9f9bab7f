//! The launcher of `kernels/norm.cl` and the device kernels of Softmax and LogSoftmax (any axis,
//! either opset's meaning), inference BatchNormalization (one output, per-channel parameters) and
//! the fused LayerNorm of `passes::layer_norm`.

use super::backend::{op_name, reference};
use super::context::Context;
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op};
use crate::ops::fused::FusedLayerNorm;
use crate::ops::norm::BatchNorm;
use crate::ops::softmax::{Kind, Softmax};
use crate::Result;
use std::sync::Arc;

#[derive(Debug)]
pub struct NormProgram {
    ctx: Arc<Context>,
    softmax: ClKernel,
    batch_norm: ClKernel,
    layer_norm: ClKernel,
}

impl NormProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<NormProgram> {
        let program = Program::build(ctx, "norm.cl", &[])?;
        Ok(NormProgram {
            ctx: ctx.clone(),
            softmax: program.kernel("softmax")?,
            batch_norm: program.kernel("batch_norm")?,
            layer_norm: program.kernel("layer_norm")?,
        })
    }
}

pub fn claims(_graph: &Graph, node: &Node) -> bool {
    if let Some(s) = node.op.downcast_ref::<Softmax>() {
        return matches!(s.kind, Kind::Softmax | Kind::LogSoftmax);
    }
    if let Some(b) = node.op.downcast_ref::<BatchNorm>() {
        return !b.training && b.spatial && b.num_outputs == 1;
    }
    node.op.is::<FusedLayerNorm>()
}

pub fn prepare(node: &Node, program: Arc<NormProgram>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(NormKernel { op: node.op.clone(), program }))
}

#[derive(Debug)]
struct NormKernel {
    op: Arc<dyn Op>,
    program: Arc<NormProgram>,
}

fn ints(v: usize) -> Arg<'static> {
    Arg::I32(v as i32)
}

impl Kernel for NormKernel {
    fn name(&self) -> &'static str {
        "opencl-norm"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let Some(x) = f32_input(inputs, 0) else {
            return fallback();
        };
        let xs = x.shape().to_vec();
        if x.len() > i32::MAX as usize || x.is_empty() {
            return fallback();
        }
        let dev = &self.program.ctx;
        let p = &self.program;
        if let Some(s) = self.op.downcast_ref::<Softmax>() {
            let Ok(l) = s.lanes(&xs) else {
                return fallback();
            };
            let dx = resident::input(dev, x)?;
            let y = ClTensor::alloc(dev, x.len())?;
            let log = (s.kind == Kind::LogSoftmax) as i32;
            let args = [Arg::Buf(dx.buffer()), Arg::Buf(y.buffer()), ints(l.n), ints(l.inner), Arg::I32(log)];
            p.softmax.launch(&args, &[l.inner, l.outer], None)?;
            return Ok(vec![y.into_data(xs)?]);
        }
        if let Some(b) = self.op.downcast_ref::<BatchNorm>() {
            let params: Vec<_> = (1..5).map(|i| f32_input(inputs, i)).collect();
            if xs.len() < 2 || params.iter().any(|t| t.is_none_or(|t| t.shape() != [xs[1]])) {
                return fallback();
            }
            let dx = resident::input(dev, x)?;
            let dp = params.iter().flatten().map(|t| resident::input(dev, t)).collect::<Result<Vec<_>>>()?;
            let y = ClTensor::alloc(dev, x.len())?;
            let plane: usize = xs[2..].iter().product();
            let mut args = vec![Arg::Buf(dx.buffer()), Arg::Buf(y.buffer())];
            args.extend(dp.iter().map(|d| Arg::Buf(d.buffer())));
            args.extend([Arg::F32(b.epsilon as f32), ints(xs[1]), ints(plane)]);
            p.batch_norm.launch(&args, &[plane, xs[1], xs[0]], None)?;
            return Ok(vec![y.into_data(xs)?]);
        }
        let Some(f) = self.op.downcast_ref::<FusedLayerNorm>() else {
            return fallback();
        };
        let n = *xs.last().unwrap_or(&0);
        let (Some(scale), Some(bias)) = (f32_input(inputs, 1), f32_input(inputs, 2)) else {
            return fallback();
        };
        if n == 0 || scale.len() != n || bias.len() != n {
            return fallback();
        }
        let (dx, ds, db) = (resident::input(dev, x)?, resident::input(dev, scale)?, resident::input(dev, bias)?);
        let y = ClTensor::alloc(dev, x.len())?;
        let rows = x.len() / n;
        let args = [
            Arg::Buf(dx.buffer()),
            Arg::Buf(y.buffer()),
            Arg::Buf(ds.buffer()),
            Arg::Buf(db.buffer()),
            ints(rows),
            ints(n),
            Arg::F32(f.epsilon),
        ];
        p.layer_norm.launch(&args, &[rows], None)?;
        Ok(vec![y.into_data(xs)?])
    }
}
