//! The launcher of `kernels/elementwise.cl`: binary arithmetic with numpy broadcasting and unary
//! activations, each with a fused activation.

use super::activation;
use super::context::{Buffer, Context};
use super::program::{Arg, Kernel, Program};
use crate::ops::fused::Activation;
use crate::Result;
use std::sync::Arc;

/// The most dimensions a broadcast operand may have (gemm.cl's MAX_RANK default).
pub const MAX_RANK: usize = 6;

/// The binary operations of elementwise.cl, with their kernel codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Pow = 4,
    Max = 5,
    Min = 6,
}

impl BinaryOp {
    /// The op of an ONNX op type, if elementwise.cl has it.
    pub fn from_onnx(op_type: &str) -> Option<BinaryOp> {
        Some(match op_type {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            "Div" => BinaryOp::Div,
            "Pow" => BinaryOp::Pow,
            "Max" => BinaryOp::Max,
            "Min" => BinaryOp::Min,
            _ => return None,
        })
    }

    /// The reference value (the kernel computes the same in f32).
    pub fn reference(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
        }
    }
}

/// The compiled elementwise program of one context.
#[derive(Debug)]
pub struct Elementwise {
    ctx: Arc<Context>,
    flat: Kernel,
    broadcast: Kernel,
    unary: Kernel,
}

impl Elementwise {
    pub fn new(ctx: &Arc<Context>) -> Result<Elementwise> {
        let program = Program::build(ctx, "elementwise.cl", &[("MAX_RANK", MAX_RANK.to_string())])?;
        Ok(Elementwise {
            ctx: ctx.clone(),
            flat: program.kernel("binary_flat")?,
            broadcast: program.kernel("binary_broadcast")?,
            unary: program.kernel("unary")?,
        })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Enqueues out = act(a op b), with a and b broadcast (numpy rules) to `out_shape`.
    #[allow(clippy::too_many_arguments)]
    pub fn binary(
        &self,
        op: BinaryOp,
        a: &Buffer,
        a_shape: &[usize],
        b: &Buffer,
        b_shape: &[usize],
        out: &Buffer,
        out_shape: &[usize],
        act: Activation,
    ) -> Result<()> {
        let n = checked_len(out_shape)?;
        let (code, act_a, act_b) = activation::args(act);
        let tail = [Arg::I32(op as i32), Arg::I32(code), Arg::F32(act_a), Arg::F32(act_b)];
        let eb = self.ctx.element_bytes();
        if out.bytes() < n * eb || a.bytes() < checked_len(a_shape)? * eb || b.bytes() < checked_len(b_shape)? * eb {
            crate::bail!(Runtime, "elementwise {op:?}: a buffer is smaller than its shape");
        }
        if a_shape == out_shape && b_shape == out_shape {
            let args = [[Arg::I32(n as i32), Arg::Buf(a), Arg::Buf(b), Arg::Buf(out)].as_slice(), &tail].concat();
            return self.flat.launch(&args, &[n], None);
        }
        let meta = self.ctx.upload(&broadcast_meta(a_shape, b_shape, out_shape)?)?;
        let args =
            [[Arg::I32(n as i32), Arg::Buf(a), Arg::Buf(b), Arg::Buf(out), Arg::Buf(&meta)].as_slice(), &tail].concat();
        self.broadcast.launch(&args, &[n], None)?;
        // `meta` is released when this returns; OpenCL keeps the memory until the kernel is done.
        Ok(())
    }

    /// Enqueues out = act(x) over `len` elements.
    pub fn unary(&self, x: &Buffer, out: &Buffer, len: usize, act: Activation) -> Result<()> {
        let eb = self.ctx.element_bytes();
        if len > i32::MAX as usize || x.bytes() < len * eb || out.bytes() < len * eb {
            crate::bail!(
                Runtime,
                "elementwise {act:?} over {len} elements: a buffer is too small or the tensor too large"
            );
        }
        let (code, a, b) = activation::args(act);
        self.unary.launch(
            &[Arg::I32(len as i32), Arg::Buf(x), Arg::Buf(out), Arg::I32(code), Arg::F32(a), Arg::F32(b)],
            &[len],
            None,
        )
    }
}

fn checked_len(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= i32::MAX as usize).ok_or_else(|| {
        crate::err!(ResourceLimit, "a tensor of shape {shape:?} is too large for the OpenCL kernels' 32-bit indices")
    })
}

/// The `meta` array of `binary_broadcast`: output dims, then a's and b's strides per output
/// dimension (0 where broadcast), each MAX_RANK long with leading dims of 1.
fn broadcast_meta(a: &[usize], b: &[usize], out: &[usize]) -> Result<Vec<i32>> {
    if out.len() > MAX_RANK || a.len() > out.len() || b.len() > out.len() {
        crate::bail!(
            Unsupported,
            "OpenCL broadcasting supports at most {MAX_RANK} dimensions, got {a:?} and {b:?} to {out:?}"
        );
    }
    let mut meta = vec![1i32; MAX_RANK];
    meta.extend(std::iter::repeat_n(0, 2 * MAX_RANK));
    let pad = MAX_RANK - out.len();
    for (d, &dim) in out.iter().enumerate() {
        meta[pad + d] = dim as i32;
    }
    for (slot, shape) in [(1, a), (2, b)] {
        let mut stride = 1usize;
        for (d, &dim) in shape.iter().enumerate().rev() {
            let out_d = out.len() - shape.len() + d;
            if dim != 1 && dim != out[out_d] {
                crate::bail!(Shape, "cannot broadcast {shape:?} to {out:?}");
            }
            meta[slot * MAX_RANK + pad + out_d] = if dim == 1 { 0 } else { stride as i32 };
            stride *= dim;
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_meta_gives_zero_strides_to_broadcast_dims() {
        let m = broadcast_meta(&[3, 1], &[4], &[3, 4]).unwrap();
        assert_eq!(&m[..MAX_RANK], &[1, 1, 1, 1, 3, 4]);
        assert_eq!(&m[MAX_RANK..2 * MAX_RANK], &[0, 0, 0, 0, 1, 0]);
        assert_eq!(&m[2 * MAX_RANK..], &[0, 0, 0, 0, 0, 1]);
        assert!(broadcast_meta(&[3], &[4], &[4]).is_err());
    }
}
