//! The launcher of `kernels/movement.cl` and the device kernels of Transpose (up to 6 axes) and
//! Concat of f32 tensors: data stays on the device through the reshuffles between convolutions
//! and attention heads.

use super::backend::{op_name, reference};
use super::context::{Buffer, Context};
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::{f32_input, maybe_f32};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::normalize_axis;
use crate::ir::{Data, DataRef, Graph, Node, Op};
use crate::ops::slice::Concat;
use crate::ops::transpose::Transpose;
use crate::Result;
use std::sync::Arc;

/// The most axes `strided_copy` takes.
pub const MAX_RANK: usize = 6;

#[derive(Debug)]
pub struct MovementProgram {
    ctx: Arc<Context>,
    strided: ClKernel,
    block: ClKernel,
}

impl MovementProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<MovementProgram> {
        let program = Program::build(ctx, "movement.cl", &[])?;
        Ok(MovementProgram {
            ctx: ctx.clone(),
            strided: program.kernel("strided_copy")?,
            block: program.kernel("copy_block")?,
        })
    }

    /// Enqueues y[i] = x[sum of coord_d(i) * strides[d]] over the output `dims`.
    pub fn strided_copy(&self, x: &Buffer, y: &Buffer, dims: &[usize], strides: &[usize]) -> Result<()> {
        let n: usize = dims.iter().product();
        if dims.len() > MAX_RANK || dims.len() != strides.len() || n > i32::MAX as usize {
            crate::bail!(Unsupported, "a strided copy over {dims:?} does not fit the OpenCL kernel");
        }
        let pad = MAX_RANK - dims.len();
        let mut d = [1i32; MAX_RANK];
        let mut s = [0i32; MAX_RANK];
        for k in 0..dims.len() {
            d[pad + k] = dims[k] as i32;
            s[pad + k] = strides[k] as i32;
        }
        let mut args = vec![Arg::Buf(x), Arg::Buf(y), Arg::I32(n as i32)];
        args.extend(d.iter().chain(&s).map(|&v| Arg::I32(v)));
        self.strided.launch(&args, &[n], None)
    }
}

pub fn claims(graph: &Graph, node: &Node) -> bool {
    if node.op.is::<Transpose>() {
        return true;
    }
    node.op.is::<Concat>() && !node.inputs.is_empty() && node.inputs.iter().all(|&v| v.is_some() && maybe_f32(graph, v))
}

pub fn prepare(node: &Node, program: Arc<MovementProgram>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(MovementKernel { op: node.op.clone(), program }))
}

#[derive(Debug)]
struct MovementKernel {
    op: Arc<dyn Op>,
    program: Arc<MovementProgram>,
}

impl MovementKernel {
    fn transpose(&self, t: &Transpose, inputs: &[Option<DataRef>]) -> Result<Option<Data>> {
        let Some(x) = f32_input(inputs, 0) else { return Ok(None) };
        let Ok(perm) = t.perm(x.rank()) else { return Ok(None) };
        if x.rank() > MAX_RANK || x.len() > i32::MAX as usize {
            return Ok(None);
        }
        let mut in_strides = vec![1usize; x.rank()];
        for d in (0..x.rank().saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * x.shape()[d + 1];
        }
        let dims: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let dev = &self.program.ctx;
        let dx = resident::input(dev, x)?;
        let y = ClTensor::alloc(dev, x.len())?;
        self.program.strided_copy(dx.buffer(), y.buffer(), &dims, &strides)?;
        Ok(Some(y.into_data(dims)?))
    }

    fn concat(&self, c: &Concat, inputs: &[Option<DataRef>]) -> Result<Option<Data>> {
        let Some(xs) = (0..inputs.len()).map(|i| f32_input(inputs, i)).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let Some(first) = xs.first() else { return Ok(None) };
        let Ok(axis) = normalize_axis(c.axis(), first.rank()) else { return Ok(None) };
        let agrees = |x: &&crate::ir::Tensor| {
            x.rank() == first.rank()
                && x.shape().iter().zip(first.shape()).enumerate().all(|(d, (a, b))| d == axis || a == b)
        };
        if !xs.iter().all(agrees) {
            return Ok(None);
        }
        let total: usize = xs.iter().map(|x| x.shape()[axis]).sum();
        let mut shape = first.shape().to_vec();
        shape[axis] = total;
        let (outer, inner): (usize, usize) = (shape[..axis].iter().product(), shape[axis + 1..].iter().product());
        let len = outer * total * inner;
        if len > i32::MAX as usize {
            return Ok(None);
        }
        let dev = &self.program.ctx;
        let y = ClTensor::alloc(dev, len)?;
        let mut at = 0;
        for x in &xs {
            let a = x.shape()[axis];
            if !x.is_empty() {
                let dx = resident::input(dev, x)?;
                let i = |v: usize| Arg::I32(v as i32);
                let args = [Arg::Buf(dx.buffer()), Arg::Buf(y.buffer()), i(x.len()), i(a), i(inner), i(total), i(at)];
                self.program.block.launch(&args, &[x.len()], None)?;
            }
            at += a;
        }
        Ok(Some(y.into_data(shape)?))
    }
}

impl Kernel for MovementKernel {
    fn name(&self) -> &'static str {
        "opencl-movement"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let done = if let Some(t) = self.op.downcast_ref::<Transpose>() {
            self.transpose(t, inputs)?
        } else if let Some(c) = self.op.downcast_ref::<Concat>() {
            self.concat(c, inputs)?
        } else {
            None
        };
        match done {
            Some(d) => Ok(vec![d]),
            None => reference(&self.op, &op_name(&self.op), ctx, inputs),
        }
    }
}
