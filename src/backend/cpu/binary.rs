//! Elementwise Add, Sub, Mul and Div in f32 with numpy broadcasting. The output is walked in rows
//! of its trailing dims over which each operand is either whole or a single repeated value (a
//! bias per channel, a scalar, a vector along the last axis), so the inner loop is always one of
//! vector-vector, vector-scalar or scalar-vector and vectorises.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::broadcast_shapes;
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op};
use crate::ops::binary::{Binary, Kind};
use crate::Result;
use std::sync::Arc;

/// Output elements per task.
const CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let b = node.op.downcast_ref::<Binary>()?;
    let arith = match b.kind {
        Kind::Add => Arith::Add,
        Kind::Sub => Arith::Sub,
        Kind::Mul => Arith::Mul,
        Kind::Div => Arith::Div,
        _ => return None,
    };
    if !b.align.is_numpy() || !node.inputs.iter().all(|&v| maybe_f32(graph, v)) {
        return None;
    }
    Some(Box::new(BinaryKernel { op: node.op.clone(), arith }))
}

#[derive(Debug)]
struct BinaryKernel {
    op: Arc<dyn Op>,
    arith: Arith,
}

/// How one operand appears along a row of the output: all of it, or one value.
#[derive(Clone, Copy)]
enum Row {
    Whole,
    Repeat,
}

impl Kernel for BinaryKernel {
    fn name(&self) -> &'static str {
        "binary"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let (Some(a), Some(b)) = (f32_input(inputs, 0), f32_input(inputs, 1)) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let Ok(shape) = broadcast_shapes(a.shape(), b.shape()) else {
            return Reference { op: self.op.clone() }.run(ctx, inputs);
        };
        let mut y = ctx.buffers.output(checked_len(&shape, DType::F32)?)?;
        let (av, bv) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
        let sa = aligned_strides(a.shape(), &shape);
        let sb = aligned_strides(b.shape(), &shape);
        // The trailing dims where each operand keeps one way of appearing.
        let r = shape.len();
        let mut k = r;
        let (mut ka, mut kb) = (None, None);
        while k > 0 {
            let d = k - 1;
            if shape[d] == 1 {
                k -= 1;
                continue;
            }
            let (wa, wb) = (sa[d] != 0, sb[d] != 0);
            if ka.is_some_and(|x| x != wa) || kb.is_some_and(|x| x != wb) {
                break;
            }
            ka = Some(wa);
            kb = Some(wb);
            k -= 1;
        }
        let inner: usize = shape[k..].iter().product();
        let rows = y.len().checked_div(inner).unwrap_or(0);
        let (row_a, row_b) = (
            if ka.unwrap_or(true) { Row::Whole } else { Row::Repeat },
            if kb.unwrap_or(true) { Row::Whole } else { Row::Repeat },
        );
        let offsets = |row: usize| {
            let (mut i, mut oa, mut ob) = (row, 0, 0);
            for d in (0..k).rev() {
                let idx = i % shape[d];
                i /= shape[d];
                oa += idx * sa[d];
                ob += idx * sb[d];
            }
            (oa, ob)
        };
        // A task is a group of short rows, or a piece of a long one (a same-shape Add is a single
        // row: in pieces, two threads share it).
        let pieces = inner.div_ceil(CHUNK).max(1);
        let rows_per_task = (CHUNK / inner.max(1)).max(1);
        let tasks = if pieces > 1 { rows * pieces } else { rows.div_ceil(rows_per_task) };
        let out = SharedMut(y.as_mut_ptr());
        let arith = self.arith;
        let segment = |row: usize, from: usize, to: usize| {
            let o = out;
            let (oa, ob) = offsets(row);
            // SAFETY: each task writes its own rows, or pieces of a row, of y.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(row * inner + from), to - from) };
            let x = match row_a {
                Row::Whole => Operand::Slice(&av[oa + from..oa + to]),
                Row::Repeat => Operand::Value(av[oa]),
            };
            let z = match row_b {
                Row::Whole => Operand::Slice(&bv[ob + from..ob + to]),
                Row::Repeat => Operand::Value(bv[ob]),
            };
            apply(arith, x, z, dst);
        };
        ctx.pool.parallel_for(tasks, &|t| {
            if pieces > 1 {
                let (row, piece) = (t / pieces, t % pieces);
                segment(row, piece * CHUNK, ((piece + 1) * CHUNK).min(inner));
            } else {
                for row in t * rows_per_task..((t + 1) * rows_per_task).min(rows) {
                    segment(row, 0, inner);
                }
            }
        });
        Ok(vec![Data::Tensor(y.into_tensor(shape)?)])
    }
}

/// Strides (in elements) of an operand of shape `dims` broadcast to `out`: 0 along broadcast axes.
fn aligned_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - dims.len();
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for d in (0..dims.len()).rev() {
        strides[pad + d] = if dims[d] == 1 { 0 } else { s };
        s *= dims[d];
    }
    strides
}

#[derive(Clone, Copy)]
enum Operand<'a> {
    Slice(&'a [f32]),
    Value(f32),
}

/// `y = a + b` over equal-length slices on the calling thread: the kernel's inner loop, public
/// for the bandwidth measurement in `benches/peak`.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    assert!(a.len() == y.len() && b.len() == y.len(), "add: slices of different lengths");
    apply(Arith::Add, Operand::Slice(a), Operand::Slice(b), y)
}

fn apply(arith: Arith, a: Operand, b: Operand, y: &mut [f32]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { apply_avx2(arith, a, b, y) },
        _ => apply_generic(arith, a, b, y),
    }
}

/// # Safety
/// Needs AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2(arith: Arith, a: Operand, b: Operand, y: &mut [f32]) {
    apply_generic(arith, a, b, y)
}

#[inline(always)]
fn apply_generic(arith: Arith, a: Operand, b: Operand, y: &mut [f32]) {
    macro_rules! each {
        ($f:expr) => {
            match (a, b) {
                (Operand::Slice(a), Operand::Slice(b)) => {
                    y.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&p, &q))| *o = $f(p, q))
                }
                (Operand::Slice(a), Operand::Value(q)) => y.iter_mut().zip(a).for_each(|(o, &p)| *o = $f(p, q)),
                (Operand::Value(p), Operand::Slice(b)) => y.iter_mut().zip(b).for_each(|(o, &q)| *o = $f(p, q)),
                (Operand::Value(p), Operand::Value(q)) => y.fill($f(p, q)),
            }
        };
    }
    match arith {
        Arith::Add => each!(|p: f32, q: f32| p + q),
        Arith::Sub => each!(|p: f32, q: f32| p - q),
        Arith::Mul => each!(|p: f32, q: f32| p * q),
        Arith::Div => each!(|p: f32, q: f32| p / q),
    }
}
