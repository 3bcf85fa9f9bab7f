//! ArgMax and ArgMin in f32, with the reference's rules: the first extreme wins (the last with
//! `select_last_index`), and the first NaN beats everything.
//!
//! Along the innermost axis (a classifier's logits, a CTC decoder's classes) each row takes two
//! vectorised passes while it sits in cache: the extreme value in 16 lanes (noting NaNs), then
//! the first (or last) position holding it, 16 at a time. A row with a NaN takes the scalar rule.
//! Along an outer axis the reduced axis is walked row by row with all lanes of the inner axes side
//! by side, each step a branch-free compare-and-select that vectorises. Tasks split the outer
//! rows and blocks of inner lanes.

use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::shape::normalize_axis;
use crate::ir::{Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::reduce::ArgReduce;
use crate::Result;
use std::sync::Arc;

/// Input elements per task.
const CHUNK: usize = 32 * 1024;
/// Inner lanes per task along an outer axis.
const LANES: usize = 512;

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let op = node.op.downcast_ref::<ArgReduce>()?;
    if !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    let rule = Rule { max: op.max, last: op.select_last_index };
    Some(Box::new(ArgKernel { op: node.op.clone(), rule }))
}

/// Which element wins.
#[derive(Debug, Clone, Copy)]
struct Rule {
    max: bool,
    /// select_last_index: the last of equal extremes.
    last: bool,
}

impl Rule {
    /// Whether `v` (later along the axis) replaces `best`: the reference's rule, branch-free.
    #[inline(always)]
    #[allow(clippy::eq_op)]
    fn better(self, v: f32, best: f32) -> bool {
        let beyond = if self.max { v > best } else { v < best };
        let nan_first = v != v && best == best;
        beyond | nan_first | (self.last & (v == best))
    }
}

#[derive(Debug)]
struct ArgKernel {
    op: Arc<dyn Op>,
    rule: Rule,
}

impl Kernel for ArgKernel {
    fn name(&self) -> &'static str {
        "arg-reduce"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        let reference = || Reference { op: self.op.clone() }.run(ctx, inputs);
        let Some(x) = f32_input(inputs, 0) else { return reference() };
        let op = self.op.downcast_ref::<ArgReduce>().expect("prepared for ArgMax/ArgMin");
        let Ok(axis) = normalize_axis(op.axis, x.rank()) else { return reference() };
        let dim = x.shape()[axis];
        if dim == 0 || x.is_empty() || u32::try_from(dim).is_err() {
            return reference(); // the error, an empty result, or a huge axis
        }
        let (outer, inner) =
            (x.shape()[..axis].iter().product::<usize>(), x.shape()[axis + 1..].iter().product::<usize>());
        let xv = x.as_slice::<f32>()?;
        let mut y = vec![0i64; outer * inner];
        let out = SharedMut(y.as_mut_ptr());
        let rule = self.rule;
        if inner == 1 {
            let per_task = (CHUNK / dim).max(1);
            ctx.pool.parallel_for(outer.div_ceil(per_task), &|t| {
                let o = out;
                for r in t * per_task..((t + 1) * per_task).min(outer) {
                    let winner = row_winner(rule, &xv[r * dim..(r + 1) * dim]);
                    // SAFETY: each task writes the outputs of its own rows.
                    unsafe { *o.0.add(r) = winner as i64 };
                }
            });
        } else {
            let blocks = inner.div_ceil(LANES);
            ctx.pool.parallel_for_work(outer * blocks, dim * LANES.min(inner), &|t| {
                let o = out;
                let (r, j0) = (t / blocks, (t % blocks) * LANES);
                let width = LANES.min(inner - j0);
                // SAFETY: each task writes its own lanes of its own outer row.
                let index = unsafe { std::slice::from_raw_parts_mut(o.0.add(r * inner + j0), width) };
                strided(rule, &xv[r * dim * inner + j0..], dim, inner, index);
            });
        }
        Ok(vec![Data::Tensor(Tensor::new(op.out_dims(x.shape(), axis, 1), y)?)])
    }
}

fn row_winner(rule: Rule, row: &[f32]) -> usize {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { row_winner_avx2(rule, row) },
        _ => row_winner_generic(rule, row),
    }
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_winner_avx2(rule: Rule, row: &[f32]) -> usize {
    row_winner_generic(rule, row)
}

#[inline(always)]
#[allow(clippy::eq_op)]
fn row_winner_generic(rule: Rule, row: &[f32]) -> usize {
    // The extreme in 16 lanes, and whether any value is NaN.
    let start = if rule.max { f32::NEG_INFINITY } else { f32::INFINITY };
    let mut best = [start; 16];
    let mut nan = [false; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            let v = c[i];
            let beyond = if rule.max { v > best[i] } else { v < best[i] };
            best[i] = if beyond { v } else { best[i] };
            nan[i] |= v != v;
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        let beyond = if rule.max { v > best[i] } else { v < best[i] };
        best[i] = if beyond { v } else { best[i] };
        nan[i] |= v != v;
    }
    if nan.iter().any(|&n| n) {
        return row.iter().position(|v| v.is_nan()).unwrap_or(0);
    }
    let extreme =
        best.iter().copied().fold(start, |m, v| if (rule.max && v > m) || (!rule.max && v < m) { v } else { m });
    // The first (or last) position holding it, found 16 at a time (±0 are equal, as in the rule).
    let holds = |c: &[f32]| c.iter().fold(false, |any, &v| any | (v == extreme));
    if rule.last {
        let tail_start = row.len() - row.len() % 16;
        if let Some(i) = row[tail_start..].iter().rposition(|&v| v == extreme) {
            return tail_start + i;
        }
        for (k, c) in row[..tail_start].chunks_exact(16).enumerate().rev() {
            if holds(c) {
                return k * 16 + c.iter().rposition(|&v| v == extreme).unwrap_or(0);
            }
        }
    } else {
        let chunks = row.chunks_exact(16);
        let tail_start = row.len() - chunks.remainder().len();
        for (k, c) in chunks.enumerate() {
            if holds(c) {
                return k * 16 + c.iter().position(|&v| v == extreme).unwrap_or(0);
            }
        }
        if let Some(i) = row[tail_start..].iter().position(|&v| v == extreme) {
            return tail_start + i;
        }
    }
    0
}

/// The winners of `index.len()` lanes whose values along the axis are `inner` apart, starting at
/// `x[0]`.
fn strided(rule: Rule, x: &[f32], dim: usize, inner: usize, index: &mut [i64]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { strided_avx2(rule, x, dim, inner, index) },
        _ => strided_generic(rule, x, dim, inner, index),
    }
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn strided_avx2(rule: Rule, x: &[f32], dim: usize, inner: usize, index: &mut [i64]) {
    strided_generic(rule, x, dim, inner, index)
}

#[inline(always)]
fn strided_generic(rule: Rule, x: &[f32], dim: usize, inner: usize, index: &mut [i64]) {
    let width = index.len();
    let mut best = [0f32; LANES];
    let mut at = [0u32; LANES];
    let (best, at) = (&mut best[..width], &mut at[..width]);
    best.copy_from_slice(&x[..width]);
    for k in 1..dim {
        let row = &x[k * inner..k * inner + width];
        for ((b, i), &v) in best.iter_mut().zip(at.iter_mut()).zip(row) {
            let better = rule.better(v, *b);
            *b = if better { v } else { *b };
            *i = if better { k as u32 } else { *i };
        }
    }
    index.iter_mut().zip(at.iter()).for_each(|(o, &i)| *o = i64::from(i));
}
