//! Matrix products in f32: MatMul (numpy batching and broadcasting), FusedMatMul (with bias and
//! activation) and Gemm. A constant right operand (the weights of a linear layer) is packed once
//! at prepare time (a single row multiplies it in [`gemv`]); otherwise both operands are packed
//! per run.

use super::activation::Activation;
use super::gemm::{self, Bias, Epilogue, Lhs, MatRef, PackedB, Problem, Rhs};
use super::gemv;
use super::isa::isa;
use super::{const_f32, f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::broadcast_shapes;
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::fused::FusedMatMul;
use crate::ops::matmul::{Gemm, MatMul};
use crate::Result;
use std::borrow::Cow;
use std::sync::Arc;

pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let op = &node.op;
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return Ok(None);
    }
    let (act, bias, trans_a, trans_b) = if let Some(f) = op.downcast_ref::<FusedMatMul>() {
        let bias = match node.inputs.get(2).copied().flatten() {
            None => None,
            Some(_) => match const_f32(graph, node, 2) {
                Some(b) => Some(b.as_slice::<f32>()?.to_vec()),
                None => return Ok(None),
            },
        };
        (f.act, bias, false, false)
    } else if op.is::<MatMul>() {
        (Activation::None, None, false, false)
    } else if let Some(g) = op.downcast_ref::<Gemm>() {
        if g.alpha != 1.0 {
            return Ok(None);
        }
        let bias = match node.inputs.get(2).copied().flatten() {
            None => None,
            // A C that broadcasts along the rows: a bias per column.
            Some(_) => match const_f32(graph, node, 2) {
                Some(c) if c.rank() <= 1 || (c.rank() == 2 && c.shape()[0] == 1) => {
                    Some(c.as_slice::<f32>()?.iter().map(|v| v * g.beta as f32).collect::<Vec<_>>())
                }
                _ => return Ok(None),
            },
        };
        (Activation::None, bias, g.trans_a, g.trans_b)
    } else {
        return Ok(None);
    };
    let micro = gemm::micro_for(isa());
    let packed_b = match const_f32(graph, node, 1) {
        Some(b) if b.rank() == 2 => {
            let (k, n) = if trans_b { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
            let bv = b.as_slice::<f32>()?;
            let mat = if trans_b { MatRef::transposed(bv, k) } else { MatRef::row_major(bv, n) };
            Some(PackedB::new(&mat, k, n, &micro))
        }
        _ => None,
    };
    if bias.as_ref().is_some_and(|b| packed_b.as_ref().is_some_and(|p| b.len() != p.dims().1 && b.len() != 1)) {
        return Ok(None);
    }
    let is_gemm = op.is::<Gemm>();
    Ok(Some(Box::new(MatMulKernel { op: op.clone(), packed_b, bias, act, trans_a, trans_b, is_gemm, micro })))
}

#[derive(Debug)]
struct MatMulKernel {
    op: Arc<dyn Op>,
    packed_b: Option<PackedB>,
    /// Per output column (one value: the same for all).
    bias: Option<Vec<f32>>,
    act: Activation,
    trans_a: bool,
    trans_b: bool,
    /// Gemm takes matrices only; MatMul batches and promotes 1-D operands.
    is_gemm: bool,
    micro: gemm::Micro,
}

impl Kernel for MatMulKernel {
    fn name(&self) -> &'static str {
        if self.packed_b.is_some() {
            "matmul-packed"
        } else {
            "matmul"
        }
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let a = f32_input(inputs, 0);
        let b = if self.packed_b.is_some() { None } else { f32_input(inputs, 1) };
        let done = match (a, &self.packed_b, b) {
            (Some(a), Some(pb), _) => self.with_packed(ctx, a, pb)?,
            (Some(a), None, Some(b)) => self.batched(ctx, a, b)?,
            _ => None,
        };
        match done {
            Some(y) => Ok(vec![Data::Tensor(y)]),
            None => Reference { op: self.op.clone() }.run(ctx, inputs),
        }
    }
}

impl MatMulKernel {
    fn epilogue<'a>(&self, bias: &'a [f32]) -> Epilogue<'a> {
        Epilogue {
            bias: if bias.is_empty() { Bias::None } else { Bias::PerCol(bias) },
            act: self.act,
            ..Epilogue::default()
        }
    }

    /// The bias widened to `n` columns (a single value broadcasts); borrowed when it fits as is.
    fn bias_for(&self, n: usize) -> Option<Cow<'_, [f32]>> {
        match &self.bias {
            None => Some(Cow::Borrowed(&[])),
            Some(b) if b.len() == n => Some(Cow::Borrowed(b)),
            Some(b) if b.len() == 1 => Some(Cow::Owned(vec![b[0]; n])),
            Some(_) => None,
        }
    }

    /// A (any rank; rows are all but the last axis) times the packed constant B.
    fn with_packed(&self, ctx: &ExecCtx, a: &Tensor, pb: &PackedB) -> Result<Option<Tensor>> {
        let (k, n) = pb.dims();
        let s = a.shape();
        if s.is_empty() || (self.is_gemm && s.len() != 2) {
            return Ok(None);
        }
        let (m, ka) = if self.trans_a { (s[1], s[0]) } else { (s[..s.len() - 1].iter().product(), s[s.len() - 1]) };
        let Some(bias) = self.bias_for(n) else { return Ok(None) };
        if ka != k {
            return Ok(None);
        }
        let mut out_shape: Vec<usize> = if self.trans_a { vec![m] } else { s[..s.len() - 1].to_vec() };
        out_shape.push(n);
        let av = a.as_slice::<f32>()?;
        if m == 1 {
            // One row (transposed or not, its k values are contiguous): stream the panels once.
            let mut y = ctx.buffers.output(checked_len(&out_shape, DType::F32)?)?;
            gemv::run(ctx.pool, av, pb, &bias, self.act, &mut y);
            return Ok(Some(y.into_tensor(out_shape)?));
        }
        // The product writes every element.
        let mut y = ctx.buffers.output(checked_len(&out_shape, DType::F32)?)?;
        let lhs = if self.trans_a { MatRef::transposed(av, m) } else { MatRef::row_major(av, k) };
        let p = Problem { m, n, k, a: Lhs::Plain(lhs), b: Rhs::Packed(pb), epilogue: self.epilogue(&bias) };
        gemm::run(ctx.pool, &self.micro, &p, &mut y, n);
        Ok(Some(y.into_tensor(out_shape)?))
    }

    /// Both operands at run time, numpy-batched: A [..., m, k] · B [..., k, n].
    fn batched(&self, ctx: &ExecCtx, a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 || (self.is_gemm && (sa.len() != 2 || sb.len() != 2)) {
            return Ok(None);
        }
        let (ra, rb) = (sa.len(), sb.len());
        let (m, k) = if self.trans_a { (sa[ra - 1], sa[ra - 2]) } else { (sa[ra - 2], sa[ra - 1]) };
        let (kb, n) = if self.trans_b { (sb[rb - 1], sb[rb - 2]) } else { (sb[rb - 2], sb[rb - 1]) };
        let Some(bias) = self.bias_for(n) else { return Ok(None) };
        if k != kb {
            return Ok(None);
        }
        let Ok(batch_shape) = broadcast_shapes(&sa[..ra - 2], &sb[..rb - 2]) else { return Ok(None) };
        let count: usize = batch_shape.iter().product();
        let mut out_shape = batch_shape.clone();
        out_shape.extend([m, n]);
        // The products write every element.
        let mut y = ctx.buffers.output(checked_len(&out_shape, DType::F32)?)?;
        let (av, bv) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
        let a_offsets = batch_offsets(&batch_shape, &sa[..ra - 2], m * k);
        let b_offsets = batch_offsets(&batch_shape, &sb[..rb - 2], k * n);
        let epilogue = self.epilogue(&bias);
        let problem = |i: usize| {
            let (ao, bo) = (a_offsets[i], b_offsets[i]);
            let am = &av[ao..ao + m * k];
            let bm = &bv[bo..bo + k * n];
            Problem {
                m,
                n,
                k,
                a: Lhs::Plain(if self.trans_a { MatRef::transposed(am, m) } else { MatRef::row_major(am, k) }),
                b: Rhs::Plain(if self.trans_b { MatRef::transposed(bm, k) } else { MatRef::row_major(bm, n) }),
                epilogue,
            }
        };
        gemm::run_batch(ctx.pool, &self.micro, count, &problem, &mut y, m * n, n);
        Ok(Some(y.into_tensor(out_shape)?))
    }
}

/// For each index of `batch` (row-major), the element offset of the matching matrix in an
/// operand whose batch dims are `dims` (right-aligned, size-1 dims broadcast).
fn batch_offsets(batch: &[usize], dims: &[usize], matrix: usize) -> Vec<usize> {
    let count: usize = batch.iter().product();
    let pad = batch.len() - dims.len();
    let mut strides = vec![0usize; batch.len()];
    let mut s = matrix;
    for d in (0..dims.len()).rev() {
        strides[pad + d] = if dims[d] == 1 { 0 } else { s };
        s *= dims[d];
    }
    (0..count)
        .map(|mut i| {
            let mut off = 0;
            for d in (0..batch.len()).rev() {
                off += (i % batch[d]) * strides[d];
                i /= batch[d];
            }
            off
        })
        .collect()
}
