//! The launcher of `kernels/movement.cl` and the device kernels of the data movement of f32
//! tensors: Transpose (up to 6 axes), Slice (any steps, up to 6 axes), Split, Concat, Pad (every
//! mode, up to 6 axes) and Gather (any axis; the indices cross to the device once per distinct
//! value). Data stays on the device through the reshuffles between convolutions and attention heads.

use super::backend::{op_name, reference, tensors};
use super::context::{Buffer, Context};
use super::program::{Arg, Kernel as ClKernel, Program};
use super::resident::{self, ClTensor};
use crate::backend::cpu::{f32_input, maybe_f32};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::normalize_axis;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::gather::Gather;
use crate::ops::slice::{Concat, Pad, PadMode, Slice, Split};
use crate::ops::transpose::Transpose;
use crate::Result;
use std::sync::{Arc, Mutex};

/// The most axes `strided_copy` and `pad` take.
pub const MAX_RANK: usize = 6;

#[derive(Debug)]
pub struct MovementProgram {
    ctx: Arc<Context>,
    strided: ClKernel,
    block: ClKernel,
    pad: ClKernel,
    gather: ClKernel,
}

/// `v` as a kernel's int argument.
fn int(v: usize) -> Arg<'static> {
    Arg::I32(v as i32)
}

/// `dims` padded in front with `fill` to [`MAX_RANK`] values, as kernel arguments.
fn padded(dims: &[i64], fill: i64) -> Vec<Arg<'static>> {
    let lead = MAX_RANK - dims.len();
    std::iter::repeat_n(fill, lead).chain(dims.iter().copied()).map(|v| Arg::I32(v as i32)).collect()
}

impl MovementProgram {
    pub fn new(ctx: &Arc<Context>) -> Result<MovementProgram> {
        let program = Program::build(ctx, "movement.cl", &[])?;
        Ok(MovementProgram {
            ctx: ctx.clone(),
            strided: program.kernel("strided_copy")?,
            block: program.kernel("copy_block")?,
            pad: program.kernel("pad")?,
            gather: program.kernel("gather")?,
        })
    }

    /// Enqueues y[i] = x[base + sum of coord_d(i) * strides[d]] over the output `dims`, after
    /// checking that every element read lies inside `x` (of `x_len` elements).
    pub fn strided_copy(
        &self,
        x: &Buffer,
        x_len: usize,
        y: &Buffer,
        dims: &[usize],
        base: isize,
        strides: &[isize],
    ) -> Result<()> {
        let n: usize = dims.iter().product();
        if dims.len() > MAX_RANK || dims.len() != strides.len() || n > i32::MAX as usize || x_len > i32::MAX as usize {
            crate::bail!(Unsupported, "a strided copy over {dims:?} does not fit the OpenCL kernel");
        }
        if n == 0 {
            return Ok(());
        }
        // The lowest and highest element read, so no stride sends the kernel outside x.
        let (mut lo, mut hi) = (base as i128, base as i128);
        for (&d, &s) in dims.iter().zip(strides) {
            let reach = (d as i128 - 1) * s as i128;
            if reach < 0 {
                lo += reach;
            } else {
                hi += reach;
            }
        }
        if lo < 0 || hi >= x_len as i128 {
            crate::bail!(Runtime, "a strided copy reads elements {lo}..={hi} of a device tensor of {x_len}");
        }
        let mut args = vec![Arg::Buf(x), Arg::Buf(y), int(n), Arg::I32(base as i32)];
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let strides: Vec<i64> = strides.iter().map(|&s| s as i64).collect();
        args.extend(padded(&dims, 1));
        args.extend(padded(&strides, 0));
        self.strided.launch(&args, &[n], None)
    }
}

pub fn claims(graph: &Graph, node: &Node) -> bool {
    let op = &node.op;
    if op.is::<Transpose>() || op.is::<Slice>() || op.is::<Split>() || op.is::<Pad>() {
        return true;
    }
    if op.is::<Gather>() {
        return node.inputs.get(1).copied().flatten().is_some();
    }
    op.is::<Concat>() && !node.inputs.is_empty() && node.inputs.iter().all(|&v| v.is_some() && maybe_f32(graph, v))
}

pub fn prepare(node: &Node, program: Arc<MovementProgram>) -> Result<Box<dyn Kernel>> {
    Ok(Box::new(MovementKernel { op: node.op.clone(), program, indices: Mutex::new(None) }))
}

#[derive(Debug)]
struct MovementKernel {
    op: Arc<dyn Op>,
    program: Arc<MovementProgram>,
    /// Gather's last indices on the device: the (checked, non-negative) values and their buffer.
    indices: Mutex<Option<(Vec<i32>, Arc<Buffer>)>>,
}

/// The row-major strides of `shape`.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

impl MovementKernel {
    fn transpose(&self, t: &Transpose, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Data>>> {
        let Some(x) = f32_input(inputs, 0) else { return Ok(None) };
        let Ok(perm) = t.perm(x.rank()) else { return Ok(None) };
        if x.rank() > MAX_RANK || x.len() > i32::MAX as usize {
            return Ok(None);
        }
        let in_strides = strides_of(x.shape());
        let dims: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| in_strides[p] as isize).collect();
        self.copy_view(x, dims, 0, &strides).map(|d| Some(vec![d]))
    }

    /// A device tensor of shape `dims` holding x[base + sum coord_d * strides[d]].
    fn copy_view(&self, x: &Tensor, dims: Vec<usize>, base: isize, strides: &[isize]) -> Result<Data> {
        let dev = &self.program.ctx;
        let y = ClTensor::alloc(dev, dims.iter().product())?;
        if !y.is_empty() {
            let dx = resident::input(dev, x)?;
            self.program.strided_copy(dx.buffer(), x.len(), y.buffer(), &dims, base, strides)?;
        }
        y.into_data(dims)
    }

    fn slice(&self, s: &Slice, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Data>>> {
        let (Some(x), Some(ts)) = (f32_input(inputs, 0), tensors(inputs)) else { return Ok(None) };
        let Ok((dims, base, strides)) = s.view(x.shape(), &ts) else { return Ok(None) };
        if dims.len() > MAX_RANK || x.len() > i32::MAX as usize {
            return Ok(None);
        }
        self.copy_view(x, dims, base, &strides).map(|d| Some(vec![d]))
    }

    fn split(&self, s: &Split, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Data>>> {
        let (Some(x), Some(ts)) = (f32_input(inputs, 0), tensors(inputs)) else { return Ok(None) };
        let Ok((axis, sizes)) = s.pieces(x.shape(), &ts) else { return Ok(None) };
        if x.len() > i32::MAX as usize {
            return Ok(None);
        }
        let shape = x.shape();
        let (outer, dim, inner) =
            (shape[..axis].iter().product::<usize>(), shape[axis], shape[axis + 1..].iter().product());
        let mut outs = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for size in sizes {
            let mut piece_shape = shape.to_vec();
            piece_shape[axis] = size;
            let dims = vec![outer, size, inner];
            let strides = [(dim * inner) as isize, inner as isize, 1];
            let piece = self.copy_view(x, dims, (at * inner) as isize, &strides)?;
            let Data::Tensor(t) = piece else { unreachable!("copy_view makes tensors") };
            outs.push(Data::Tensor(t.reshape(piece_shape)?));
            at += size;
        }
        Ok(Some(outs))
    }

    fn pad(&self, p: &Pad, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Data>>> {
        let (Some(x), Some(ts)) = (f32_input(inputs, 0), tensors(inputs)) else { return Ok(None) };
        // A fill value of another dtype is the reference's error to report.
        if ts.get(2).copied().flatten().is_some_and(|v| v.dtype() != DType::F32) {
            return Ok(None);
        }
        let Ok((mode, per_axis, fill)) = p.geometry(x.rank(), &ts) else { return Ok(None) };
        let shape = x.shape();
        let out: Option<Vec<usize>> = shape
            .iter()
            .zip(&per_axis)
            .map(|(&d, &(b, e))| usize::try_from(d as i128 + b as i128 + e as i128).ok())
            .collect();
        let Some(out) = out else { return Ok(None) };
        let len: usize = out.iter().product();
        let fits = |v: i64| i32::try_from(v).is_ok();
        if shape.len() > MAX_RANK
            || len > i32::MAX as usize
            || x.len() > i32::MAX as usize
            || per_axis.iter().any(|&(b, e)| !fits(b) || !fits(e))
            || (mode != PadMode::Constant && shape.contains(&0))
        {
            return Ok(None);
        }
        let dev = &self.program.ctx;
        let y = ClTensor::alloc(dev, len)?;
        if len > 0 {
            let dx = resident::input(dev, x)?;
            let mode = match mode {
                PadMode::Constant => 0,
                PadMode::Reflect => 1,
                PadMode::Edge => 2,
                PadMode::Wrap => 3,
            };
            let mut args = vec![Arg::Buf(dx.buffer()), Arg::Buf(y.buffer()), int(len), Arg::I32(mode), Arg::F32(fill)];
            let out_dims: Vec<i64> = out.iter().map(|&d| d as i64).collect();
            let in_dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let begins: Vec<i64> = per_axis.iter().map(|p| p.0).collect();
            for part in [padded(&out_dims, 1), padded(&in_dims, 1), padded(&begins, 0)] {
                args.extend(part);
            }
            self.program.pad.launch(&args, &[len], None)?;
        }
        Ok(Some(vec![y.into_data(out)?]))
    }

    fn gather(&self, g: &Gather, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Data>>> {
        let Some(x) = f32_input(inputs, 0) else { return Ok(None) };
        let Some(indices) = inputs.get(1).copied().flatten().and_then(|d| d.tensor()) else { return Ok(None) };
        let Ok(axis) = normalize_axis(g.axis(), x.rank()) else { return Ok(None) };
        let shape = x.shape();
        let dim = shape[axis];
        let Ok(values) = indices.to_i64_vec() else { return Ok(None) };
        // Out-of-range indices are the reference's error to report.
        let picks: Option<Vec<i32>> = values
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + dim as i64 } else { i };
                (0..dim as i64).contains(&i).then_some(i as i32)
            })
            .collect();
        let Some(picks) = picks else { return Ok(None) };
        let out_shape = [&shape[..axis], indices.shape(), &shape[axis + 1..]].concat();
        let len: usize = out_shape.iter().product();
        if len > i32::MAX as usize || x.len() > i32::MAX as usize {
            return Ok(None);
        }
        let dev = &self.program.ctx;
        let y = ClTensor::alloc(dev, len)?;
        if len > 0 {
            let idx = self.indices_on_device(picks.clone())?;
            let dx = resident::input(dev, x)?;
            let inner: usize = shape[axis + 1..].iter().product();
            let args = [
                Arg::Buf(dx.buffer()),
                Arg::Buf(&idx),
                Arg::Buf(y.buffer()),
                int(len),
                int(dim),
                int(picks.len()),
                int(inner),
            ];
            self.program.gather.launch(&args, &[len], None)?;
        }
        Ok(Some(vec![y.into_data(out_shape)?]))
    }

    /// Gather's indices on the device: the last ones when they are the same (constant indices
    /// cross once), else uploaded (and counted as an upload).
    fn indices_on_device(&self, picks: Vec<i32>) -> Result<Arc<Buffer>> {
        let mut held = self.indices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, buf)) = held.as_ref().filter(|(v, _)| *v == picks) {
            debug_assert_eq!(v.len(), picks.len());
            return Ok(buf.clone());
        }
        let dev = &self.program.ctx;
        let buf = Arc::new(dev.upload(&picks)?);
        dev.count_upload(buf.bytes());
        log::debug!("uploaded {} Gather indices to {}", picks.len(), dev.device.name);
        *held = Some((picks, buf.clone()));
        Ok(buf)
    }

    fn concat(&self, c: &Concat, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Data>>> {
        let Some(xs) = (0..inputs.len()).map(|i| f32_input(inputs, i)).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let Some(first) = xs.first() else { return Ok(None) };
        let Ok(axis) = normalize_axis(c.axis(), first.rank()) else { return Ok(None) };
        let agrees = |x: &&Tensor| {
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
                let args = [
                    Arg::Buf(dx.buffer()),
                    Arg::Buf(y.buffer()),
                    int(x.len()),
                    int(a),
                    int(inner),
                    int(total),
                    int(at),
                ];
                self.program.block.launch(&args, &[x.len()], None)?;
            }
            at += a;
        }
        Ok(Some(vec![y.into_data(shape)?]))
    }
}

impl Kernel for MovementKernel {
    fn name(&self) -> &'static str {
        "opencl-movement"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let op = &self.op;
        let done = if let Some(t) = op.downcast_ref::<Transpose>() {
            self.transpose(t, inputs)?
        } else if let Some(s) = op.downcast_ref::<Slice>() {
            self.slice(s, inputs)?
        } else if let Some(s) = op.downcast_ref::<Split>() {
            self.split(s, inputs)?
        } else if let Some(p) = op.downcast_ref::<Pad>() {
            self.pad(p, inputs)?
        } else if let Some(g) = op.downcast_ref::<Gather>() {
            self.gather(g, inputs)?
        } else if let Some(c) = op.downcast_ref::<Concat>() {
            self.concat(c, inputs)?
        } else {
            None
        };
        match done {
            Some(d) => Ok(d),
            None => reference(&self.op, &op_name(&self.op), ctx, inputs),
        }
    }
}
