//! The launcher of `kernels/pool.cl` and the device kernels of MaxPool (without its Indices
//! output), AveragePool (padding counted in the divisor or not, as `count_include_pad` says),
//! GlobalAveragePool and GlobalMaxPool, over 1 or 2 spatial axes.

use super::backend::{op_name, reference};
use super::context::Context;
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::f32_input;
use crate::backend::{ExecCtx, Kernel};
use crate::ir::{Data, DataRef, Node, Op};
use crate::ops::pool::{GlobalPool, Pool};
use crate::Result;
use std::sync::Arc;

#[derive(Debug)]
pub struct PoolProgram {
    ctx: Arc<Context>,
    pool2d: ClKernel,
    global: ClKernel,
}

impl PoolProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<PoolProgram> {
        let program = Program::build(ctx, "pool.cl", &[])?;
        Ok(PoolProgram { ctx: ctx.clone(), pool2d: program.kernel("pool2d")?, global: program.kernel("global_pool")? })
    }
}

/// What a pooling node computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Max,
    Average,
    GlobalMax,
    GlobalAverage,
}

fn which(node: &Node) -> Option<Which> {
    if let Some(p) = node.op.downcast_ref::<Pool>() {
        return match node.op_type.as_str() {
            "MaxPool" if p.is_plain_max() => Some(Which::Max),
            "AveragePool" => Some(Which::Average),
            _ => None,
        };
    }
    if let Some(g) = node.op.downcast_ref::<GlobalPool>() {
        return match node.op_type.as_str() {
            "GlobalAveragePool" if g.is_average() => Some(Which::GlobalAverage),
            "GlobalMaxPool" => Some(Which::GlobalMax),
            _ => None,
        };
    }
    None
}

pub fn claims(node: &Node) -> bool {
    which(node).is_some()
}

pub fn prepare(node: &Node, program: Arc<PoolProgram>) -> Result<Box<dyn Kernel>> {
    let which = which(node).ok_or_else(|| crate::err!(Unsupported, "OpenCL pooling: {}", node.op_type))?;
    Ok(Box::new(PoolKernel { op: node.op.clone(), which, program }))
}

#[derive(Debug)]
struct PoolKernel {
    op: Arc<dyn Op>,
    which: Which,
    program: Arc<PoolProgram>,
}

impl Kernel for PoolKernel {
    fn name(&self) -> &'static str {
        "opencl-pool"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let fallback = || reference(&self.op, &op_name(&self.op), ctx, inputs);
        let Some(x) = f32_input(inputs, 0) else {
            return fallback();
        };
        let xs = x.shape();
        if !(3..=4).contains(&xs.len()) || xs.iter().product::<usize>() > i32::MAX as usize {
            return fallback();
        }
        let dev = &self.program.ctx;
        let planes = xs[0] * xs[1];
        match self.which {
            Which::GlobalMax | Which::GlobalAverage => {
                let len: usize = xs[2..].iter().product();
                if len == 0 {
                    return fallback();
                }
                let dx = resident::input(dev, x)?;
                let y = ClTensor::alloc(dev, planes)?;
                let avg = (self.which == Which::GlobalAverage) as i32;
                let args = [
                    Arg::Buf(dx.buffer()),
                    Arg::Buf(y.buffer()),
                    Arg::I32(planes as i32),
                    Arg::I32(len as i32),
                    Arg::I32(avg),
                ];
                self.program.global.launch(&args, &[planes], None)?;
                let mut shape = xs[..2].to_vec();
                shape.extend(std::iter::repeat_n(1, xs.len() - 2));
                Ok(vec![y.into_data(shape)?])
            }
            Which::Max | Which::Average => {
                let pool = self.op.downcast_ref::<Pool>().expect("a pool");
                let Ok((axes, out_shape)) = pool.windows(xs) else {
                    return fallback();
                };
                let (h, w) = (axes[1], axes[2]);
                let avg = self.which == Which::Average;
                let count_pad = pool.average_counts_padding().unwrap_or(false);
                let dx = resident::input(dev, x)?;
                let y = ClTensor::alloc(dev, out_shape.iter().product())?;
                let i = |v: usize| Arg::I32(v as i32);
                let args = [
                    Arg::Buf(dx.buffer()),
                    Arg::Buf(y.buffer()),
                    i(h.input),
                    i(w.input),
                    i(h.output),
                    i(w.output),
                    i(h.kernel),
                    i(w.kernel),
                    i(h.stride),
                    i(w.stride),
                    i(h.dilation),
                    i(w.dilation),
                    i(h.pad_begin),
                    i(w.pad_begin),
                    Arg::I32(avg as i32),
                    Arg::I32(count_pad as i32),
                    i(h.pad_end),
                    i(w.pad_end),
                ];
                self.program.pool2d.launch(&args, &[w.output, h.output, planes], None)?;
                Ok(vec![y.into_data(out_shape)?])
            }
        }
    }
}
