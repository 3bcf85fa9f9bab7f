//! The launcher of `kernels/norm.cl` and the device kernels of Softmax and LogSoftmax (any axis,
//! either opset's meaning), inference BatchNormalization (one output, per-channel parameters),
//! InstanceNormalization, LayerNormalization and RMSNormalization (one output, scale and bias
//! over the normalised axes) and the fused LayerNorm of `passes::layer_norm`.

use super::backend::{op_name, reference};
use super::context::Context;
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Graph, Node, Op};
use crate::ops::fused::FusedLayerNorm;
use crate::ops::norm::{BatchNorm, InstanceNorm, LayerNorm};
use crate::ops::softmax::{Kind, Softmax};
use crate::Result;
use std::sync::Arc;

#[derive(Debug)]
pub struct NormProgram {
    ctx: Arc<Context>,
    softmax: ClKernel,
    batch_norm: ClKernel,
    layer_norm: ClKernel,
    instance_norm: ClKernel,
}

impl NormProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<NormProgram> {
        let program = Program::build(ctx, "norm.cl", &[])?;
        Ok(NormProgram {
            ctx: ctx.clone(),
            softmax: program.kernel("softmax")?,
            batch_norm: program.kernel("batch_norm")?,
            layer_norm: program.kernel("layer_norm")?,
            instance_norm: program.kernel("instance_norm")?,
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
    if let Some(l) = node.op.downcast_ref::<LayerNorm>() {
        return l.single_output().is_some();
    }
    node.op.is::<FusedLayerNorm>() || node.op.is::<InstanceNorm>()
}

/// Whether a LayerNormalization parameter of `shape` (broadcast against X of `x_shape`) varies
/// only along the normalised axes from `axis` on, with one value per position there.
fn per_position(shape: &[usize], x_shape: &[usize], axis: usize) -> bool {
    let n: usize = x_shape[axis..].iter().product();
    let normalised = x_shape.len() - axis;
    shape.len() <= x_shape.len()
        && shape.iter().product::<usize>() == n
        && shape.iter().rev().skip(normalised).all(|&d| d == 1)
        && shape.iter().rev().zip(x_shape.iter().rev()).all(|(&p, &d)| p == 1 || p == d)
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
        if let Some(inorm) = self.op.downcast_ref::<InstanceNorm>() {
            let (Some(scale), Some(bias)) = (f32_input(inputs, 1), f32_input(inputs, 2)) else {
                return fallback();
            };
            if xs.len() < 3 || scale.shape() != [xs[1]] || bias.shape() != [xs[1]] {
                return fallback();
            }
            let (dx, ds, db) = (resident::input(dev, x)?, resident::input(dev, scale)?, resident::input(dev, bias)?);
            let y = ClTensor::alloc(dev, x.len())?;
            let planes = xs[0] * xs[1];
            let args = [
                Arg::Buf(dx.buffer()),
                Arg::Buf(y.buffer()),
                Arg::Buf(ds.buffer()),
                Arg::Buf(db.buffer()),
                ints(planes),
                ints(xs[1]),
                ints(x.len() / planes),
                Arg::F32(inorm.epsilon() as f32),
            ];
            p.instance_norm.launch(&args, &[planes], None)?;
            return Ok(vec![y.into_data(xs)?]);
        }
        // LayerNormalization / RMSNormalization over the axes from `axis` on, or the fused
        // LayerNorm over the last axis.
        let (axis, epsilon, rms) = if let Some(l) = self.op.downcast_ref::<LayerNorm>() {
            let Some((axis, epsilon, rms)) = l.single_output() else { return fallback() };
            let Ok(axis) = crate::ir::shape::normalize_axis(axis, xs.len()) else { return fallback() };
            (axis, epsilon as f32, rms)
        } else if let Some(f) = self.op.downcast_ref::<FusedLayerNorm>() {
            (xs.len().saturating_sub(1), f.epsilon, false)
        } else {
            return fallback();
        };
        let n: usize = xs[axis..].iter().product();
        let Some(scale) = f32_input(inputs, 1) else {
            return fallback();
        };
        let bias = f32_input(inputs, 2);
        if inputs.get(2).copied().flatten().is_some() && bias.is_none() {
            return fallback();
        }
        let fits = |t: &crate::ir::Tensor| per_position(t.shape(), &xs, axis);
        let fused = self.op.is::<FusedLayerNorm>();
        if n == 0 || !fits(scale) || !bias.is_none_or(fits) || (fused && bias.is_none()) {
            return fallback();
        }
        let ds = resident::input(dev, scale)?;
        let db = bias.map(|b| resident::input(dev, b)).transpose()?;
        let dx = resident::input(dev, x)?;
        let y = ClTensor::alloc(dev, x.len())?;
        let rows = x.len() / n;
        let args = [
            Arg::Buf(dx.buffer()),
            Arg::Buf(y.buffer()),
            Arg::Buf(ds.buffer()),
            Arg::Buf(db.as_ref().map_or(ds.buffer(), |b| b.buffer())),
            ints(rows),
            ints(n),
            Arg::F32(epsilon),
            Arg::I32(rms as i32),
            Arg::I32(db.is_some() as i32),
        ];
        p.layer_norm.launch(&args, &[rows], None)?;
        Ok(vec![y.into_data(xs)?])
    }
}
