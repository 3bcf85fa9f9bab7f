//! LSTM and GRU in f32 with constant weights. Prepared once: W packed for the GEMM that projects
//! every time step's input at once (with both biases folded in where the cell allows), and R
//! transposed so that each step's recurrent product is a few contiguous axpys that vectorise.
//! Per step the gates are activated a block at a time with the fast activations. Directions of a
//! bidirectional layer run on two threads.
//!
//! Handled: forward, reverse and bidirectional; layout 0; the activations the fused epilogue
//! knows (Sigmoid, Tanh, Relu, LeakyRelu, HardSigmoid); clip; GRU with either reset order.
//! Anything else (peepholes, input_forget, layout 1, sequence lengths shorter than the sequence,
//! other activations) runs the reference.

use super::activation::{Activation, ActivationExt};
use super::gemm::{self, Bias, Epilogue, Lhs, MatRef, PackedB, Problem, Rhs};
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::{const_f32, f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::rnn::{self, Cell, Recurrent};
use crate::Result;
use std::sync::Arc;

/// Multiply-adds of the recurrence below which both directions run on the calling thread.
const SERIAL_WORK: usize = 1 << 16;

pub fn prepare(graph: &Graph, node: &Node) -> Result<Option<Box<dyn Kernel>>> {
    let Some(rec) = node.op.downcast_ref::<Recurrent>() else { return Ok(None) };
    let (cell, gates) = match rec.cell {
        Cell::Lstm { input_forget: false } => (Kind::Lstm, 4),
        Cell::Gru { linear_before_reset } => (Kind::Gru { linear_before_reset }, 3),
        _ => return Ok(None),
    };
    if rec.batch_first || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return Ok(None);
    }
    // Peepholes (input 7) are left to the reference.
    if node.inputs.get(7).copied().flatten().is_some() {
        return Ok(None);
    }
    let (Some(w), Some(r)) = (const_f32(graph, node, 1), const_f32(graph, node, 2)) else { return Ok(None) };
    let dirs = rec.direction.count();
    let (&[wd, wrows, input], &[rd, rrows, hidden]) = (w.shape(), r.shape()) else { return Ok(None) };
    let rows = gates * hidden;
    if rec.hidden_size.is_some_and(|h| h != hidden) || wd != dirs || rd != dirs || wrows != rows || rrows != rows {
        return Ok(None);
    }
    let b = match node.inputs.get(3).copied().flatten() {
        None => None,
        Some(_) => match const_f32(graph, node, 3) {
            Some(b) if b.shape() == [dirs, 2 * rows] => Some(b.as_slice::<f32>()?),
            _ => return Ok(None),
        },
    };
    let Some(acts) = rec.activations.iter().map(|&a| activation(a)).collect::<Option<Vec<_>>>() else {
        return Ok(None);
    };
    let micro = gemm::micro_for(isa());
    let (wv, rv) = (w.as_slice::<f32>()?, r.as_slice::<f32>()?);
    let per_direction = acts.len() / dirs;
    let directions = (0..dirs)
        .map(|d| {
            let wd = &wv[d * rows * input..(d + 1) * rows * input];
            let rd = &rv[d * rows * hidden..(d + 1) * rows * hidden];
            let zeros = vec![0f32; 2 * rows];
            let bias = b.map_or(&zeros[..], |b| &b[d * 2 * rows..(d + 1) * 2 * rows]);
            let (wb, rb) = bias.split_at(rows);
            // Rb joins Wb in the input projection, except GRU's candidate part when the reset
            // gate multiplies it (linear_before_reset).
            let mut bias_x: Vec<f32> = wb.iter().zip(rb).map(|(a, b)| a + b).collect();
            let mut bias_h = Vec::new();
            if cell == (Kind::Gru { linear_before_reset: true }) {
                bias_x[2 * hidden..].copy_from_slice(&wb[2 * hidden..]);
                bias_h = rb[2 * hidden..].to_vec();
            }
            let mut rt = vec![0f32; hidden * rows];
            for (j, row) in rd.chunks_exact(hidden).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    rt[k * rows + j] = v;
                }
            }
            Direction {
                w: PackedB::new(&MatRef::transposed(wd, input), input, rows, &micro),
                rt,
                bias_x,
                bias_h,
                acts: acts[d * per_direction..(d + 1) * per_direction].to_vec(),
            }
        })
        .collect();
    Ok(Some(Box::new(RecurrentKernel {
        op: node.op.clone(),
        cell,
        hidden,
        input,
        clip: rec.clip.map(|c| c as f32),
        reversed: (0..dirs).map(|d| rec.direction.is_reversed(d)).collect(),
        directions,
        outputs: rec.num_outputs,
        micro,
    })))
}

/// The fused-epilogue form of a recurrent activation, where there is one.
fn activation(a: rnn::Activation) -> Option<Activation> {
    Some(match a {
        rnn::Activation::Sigmoid => Activation::Sigmoid,
        rnn::Activation::Tanh => Activation::Tanh,
        rnn::Activation::Relu => Activation::Relu,
        rnn::Activation::LeakyRelu { alpha } => Activation::LeakyRelu(alpha as f32),
        rnn::Activation::HardSigmoid { alpha, beta } => Activation::HardSigmoid(alpha as f32, beta as f32),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Lstm,
    Gru { linear_before_reset: bool },
}

/// One direction's prepared weights.
#[derive(Debug)]
struct Direction {
    /// W transposed and packed: the input projection is X [steps, I] · W^T.
    w: PackedB,
    /// R transposed, [H, gates * H] row-major: row k is what h[k] adds to every gate.
    rt: Vec<f32>,
    /// Added to the input projection.
    bias_x: Vec<f32>,
    /// GRU with linear_before_reset: the candidate's recurrent bias, inside the reset product.
    bias_h: Vec<f32>,
    /// f, g (and h for LSTM).
    acts: Vec<Activation>,
}

#[derive(Debug)]
struct RecurrentKernel {
    op: Arc<dyn Op>,
    cell: Kind,
    hidden: usize,
    input: usize,
    clip: Option<f32>,
    reversed: Vec<bool>,
    directions: Vec<Direction>,
    outputs: usize,
    micro: gemm::Micro,
}

impl Kernel for RecurrentKernel {
    fn name(&self) -> &'static str {
        match self.cell {
            Kind::Lstm => "lstm",
            Kind::Gru { .. } => "gru",
        }
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        match self.try_run(ctx, inputs)? {
            Some(out) => Ok(out.into_iter().map(Data::Tensor).collect()),
            None => Reference { op: self.op.clone() }.run(ctx, inputs),
        }
    }
}

impl RecurrentKernel {
    fn try_run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Option<Vec<Tensor>>> {
        let Some(x) = f32_input(inputs, 0) else { return Ok(None) };
        let &[seq, batch, input] = x.shape() else { return Ok(None) };
        let (dirs, hidden) = (self.directions.len(), self.hidden);
        if input != self.input || seq == 0 {
            return Ok(None);
        }
        let given = |i: usize| inputs.get(i).copied().flatten();
        // Sequence lengths are fine when every one is the whole sequence.
        if let Some(lens) = given(4) {
            match lens.tensor().map(|t| t.to_i64_vec()) {
                Some(Ok(v)) if v.len() == batch && v.iter().all(|&l| l == seq as i64) => {}
                _ => return Ok(None),
            }
        }
        let state_shape = [dirs, batch, hidden];
        let state = |i: usize| -> Option<Option<Vec<f32>>> {
            match given(i) {
                None => Some(None),
                Some(_) => {
                    let t = f32_input(inputs, i).filter(|t| t.shape() == state_shape)?;
                    Some(Some(t.as_slice::<f32>().ok()?.to_vec()))
                }
            }
        };
        let state_len = checked_len(&state_shape, DType::F32)?;
        let Some(h0) = state(5) else { return Ok(None) };
        let Some(c0) = (if self.cell == Kind::Lstm { state(6) } else { Some(None) }) else { return Ok(None) };
        let mut h = match h0 {
            Some(h) => h,
            None => ctx.buffers.zeroed(state_len)?,
        };
        let mut c = match c0 {
            Some(c) => c,
            None => ctx.buffers.zeroed(state_len)?,
        };
        let rows = self.directions[0].rt.len() / hidden.max(1);
        let steps = seq * batch;
        // Every step's input projection, per direction: [dirs][steps, rows].
        // The products write every element.
        let mut xw = ctx.buffers.output(checked_len(&[dirs, steps, rows], DType::F32)?)?;
        let xv = x.as_slice::<f32>()?;
        for (d, dir) in self.directions.iter().enumerate() {
            let p = Problem {
                m: steps,
                n: rows,
                k: input,
                a: Lhs::Plain(MatRef::row_major(xv, input)),
                b: Rhs::Packed(&dir.w),
                epilogue: Epilogue { bias: Bias::PerCol(&dir.bias_x), ..Epilogue::default() },
            };
            gemm::run(ctx.pool, &self.micro, &p, &mut xw[d * steps * rows..(d + 1) * steps * rows], rows);
        }
        let mut y = ctx.buffers.zeroed(checked_len(&[seq, dirs, batch, hidden], DType::F32)?)?;
        let (yp, hp, cp, xp) = (
            SharedMut(y.as_mut_ptr()),
            SharedMut(h.as_mut_ptr()),
            SharedMut(c.as_mut_ptr()),
            SharedMut(xw.as_mut_ptr()),
        );
        let task = |d: usize| {
            let (yp, hp, cp, xp) = (yp, hp, cp, xp);
            let dir = &self.directions[d];
            let mut scratch = vec![0f32; rows];
            for k in 0..seq {
                let t = if self.reversed[d] { seq - 1 - k } else { k };
                for n in 0..batch {
                    let s = (d * batch + n) * hidden;
                    // SAFETY: direction d is the only task touching its part of xw, h, c and y
                    // (y's rows of direction d at each t); all were sized above.
                    let (g, hs, cs, ys) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(xp.0.add((d * steps + t * batch + n) * rows), rows),
                            std::slice::from_raw_parts_mut(hp.0.add(s), hidden),
                            std::slice::from_raw_parts_mut(cp.0.add(s), hidden),
                            std::slice::from_raw_parts_mut(yp.0.add(((t * dirs + d) * batch + n) * hidden), hidden),
                        )
                    };
                    let step = Step { dir, clip: self.clip, hidden };
                    match self.cell {
                        Kind::Lstm => step.lstm(g, hs, cs, &mut scratch),
                        Kind::Gru { linear_before_reset } => step.gru(g, hs, linear_before_reset, &mut scratch),
                    }
                    ys.copy_from_slice(hs);
                }
            }
        };
        if dirs * steps * rows * hidden < SERIAL_WORK {
            (0..dirs).for_each(task);
        } else {
            ctx.pool.parallel_for(dirs, &task);
        }
        ctx.buffers.give(xw.into_buffer());
        let mut out = vec![Tensor::new(vec![seq, dirs, batch, hidden], y)?, Tensor::new(state_shape.to_vec(), h)?];
        if self.cell == Kind::Lstm {
            out.push(Tensor::new(state_shape.to_vec(), c)?);
        }
        out.truncate(self.outputs);
        Ok(Some(out))
    }
}

/// One time step of one sequence.
struct Step<'a> {
    dir: &'a Direction,
    clip: Option<f32>,
    hidden: usize,
}

impl Step<'_> {
    /// Applies activation `k` to pre-activations `x` in place, clipping first.
    fn act(&self, k: usize, x: &mut [f32]) {
        if let Some(c) = self.clip {
            x.iter_mut().for_each(|v| *v = v.clamp(-c, c));
        }
        self.dir.acts[k].apply(x);
    }

    /// `g` (the input projection, gates i, o, f, c) becomes the activated gates; `h` and `c`
    /// are updated in place.
    fn lstm(&self, g: &mut [f32], h: &mut [f32], c: &mut [f32], tmp: &mut [f32]) {
        let hs = self.hidden;
        let rows = g.len();
        add_products(g, h, &self.dir.rt, rows, 0);
        // Gates i, o and f are contiguous and share activation f: one pass over the three.
        let (iof, cand) = g.split_at_mut(3 * hs);
        self.act(0, iof);
        self.act(1, cand);
        let (i, rest) = iof.split_at_mut(hs);
        let (o, f) = rest.split_at_mut(hs);
        let t = &mut tmp[..hs];
        lstm_update(i, f, cand, c, t);
        self.dir.acts[2].apply(t);
        h.iter_mut().zip(o.iter().zip(t.iter())).for_each(|(h, (o, t))| *h = o * t);
    }

    /// `g` holds the input projection of gates z, r, h.
    fn gru(&self, g: &mut [f32], h: &mut [f32], linear_before_reset: bool, tmp: &mut [f32]) {
        let hs = self.hidden;
        let rows = g.len();
        let rt = &self.dir.rt;
        if linear_before_reset {
            // tmp = R·h for all three gates; the candidate's part is scaled by r before joining g.
            tmp.fill(0.0);
            add_products(tmp, h, rt, rows, 0);
            g[..2 * hs].iter_mut().zip(&tmp[..2 * hs]).for_each(|(g, t)| *g += t);
            self.act(0, &mut g[..2 * hs]);
            let (zr, cand) = g.split_at_mut(2 * hs);
            let r = &zr[hs..];
            for (j, v) in cand.iter_mut().enumerate() {
                *v += r[j] * (tmp[2 * hs + j] + self.dir.bias_h[j]);
            }
        } else {
            add_products(&mut g[..2 * hs], h, rt, rows, 0);
            self.act(0, &mut g[..2 * hs]);
            let (zr, cand) = g.split_at_mut(2 * hs);
            let rh = &mut tmp[..hs];
            rh.iter_mut().zip(&zr[hs..]).zip(h.iter()).for_each(|((v, r), h)| *v = r * h);
            add_products(cand, rh, rt, rows, 2 * hs);
        }
        self.act(1, &mut g[2 * hs..]);
        let (z, cand) = (&g[..hs], &g[2 * hs..]);
        h.iter_mut().zip(z.iter().zip(cand)).for_each(|(h, (z, c))| *h = (1.0 - z) * c + z * *h);
    }
}

/// `acc[j] += sum_k v[k] * rt[k * stride + offset + j]`: the recurrent product as axpys over the
/// rows of R^T.
fn add_products(acc: &mut [f32], v: &[f32], rt: &[f32], stride: usize, offset: usize) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::add_products_avx512(acc, v, rt, stride, offset) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::add_products_avx2(acc, v, rt, stride, offset) },
        _ => add_products_generic(acc, v, rt, stride, offset),
    }
}

#[inline(always)]
fn add_products_generic(acc: &mut [f32], v: &[f32], rt: &[f32], stride: usize, offset: usize) {
    let n = acc.len();
    for (k, &vk) in v.iter().enumerate() {
        let row = &rt[k * stride + offset..k * stride + offset + n];
        acc.iter_mut().zip(row).for_each(|(a, r)| *a += vk * r);
    }
}

/// `c = f * c + i * cand`, and `t = c` (for the output activation).
fn lstm_update(i: &[f32], f: &[f32], cand: &[f32], c: &mut [f32], t: &mut [f32]) {
    for j in 0..c.len() {
        c[j] = f[j] * c[j] + i[j] * cand[j];
        t[j] = c[j];
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `acc[j] += sum_k v[k] * rt[k * stride + offset + j]` with the accumulators held in
    /// registers across k, up to 16 vectors (256 columns) at a time: a step's whole gate row fits
    /// for hidden sizes up to 64, and the per-k loads and stores of `acc` (a store-forwarding
    /// chain per k) are gone. Leftover columns (fewer than 16) take the generic loop.
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn add_products_avx512(acc: &mut [f32], v: &[f32], rt: &[f32], stride: usize, offset: usize) {
        let n = acc.len();
        if v.is_empty() || n == 0 {
            return;
        }
        // Every row read below lies inside rt.
        assert!((v.len() - 1) * stride + offset + n <= rt.len(), "R^T too short for the recurrent product");
        let vectors = n / 16;
        let mut j = 0;
        while j < vectors {
            let w = (vectors - j).min(16);
            let (a, r) = (acc.as_mut_ptr().add(j * 16), rt.as_ptr().add(offset + j * 16));
            // SAFETY: columns j * 16..(j + w) * 16 <= n of acc and of each row of rt (asserted).
            match w {
                16 => block::<16>(a, v, r, stride),
                15 => block::<15>(a, v, r, stride),
                14 => block::<14>(a, v, r, stride),
                13 => block::<13>(a, v, r, stride),
                12 => block::<12>(a, v, r, stride),
                11 => block::<11>(a, v, r, stride),
                10 => block::<10>(a, v, r, stride),
                9 => block::<9>(a, v, r, stride),
                8 => block::<8>(a, v, r, stride),
                7 => block::<7>(a, v, r, stride),
                6 => block::<6>(a, v, r, stride),
                5 => block::<5>(a, v, r, stride),
                4 => block::<4>(a, v, r, stride),
                3 => block::<3>(a, v, r, stride),
                2 => block::<2>(a, v, r, stride),
                _ => block::<1>(a, v, r, stride),
            }
            j += w;
        }
        let done = vectors * 16;
        if done < n {
            super::add_products_generic(&mut acc[done..], v, rt, stride, offset + done);
        }
    }

    /// W vectors of accumulators at `acc`, rows of R^T at `rt + k * stride`.
    ///
    /// # Safety
    /// AVX-512F; `acc[..16 W]` and `rt[k * stride..k * stride + 16 W]` for k < v.len() valid.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn block<const W: usize>(acc: *mut f32, v: &[f32], rt: *const f32, stride: usize) {
        let mut a = [_mm512_setzero_ps(); W];
        for (i, a) in a.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(acc.add(i * 16));
        }
        for (k, &vk) in v.iter().enumerate() {
            let b = _mm512_set1_ps(vk);
            let row = rt.add(k * stride);
            for (i, a) in a.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(b, _mm512_loadu_ps(row.add(i * 16)), *a);
            }
        }
        for (i, a) in a.iter().enumerate() {
            _mm512_storeu_ps(acc.add(i * 16), *a);
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add_products_avx2(acc: &mut [f32], v: &[f32], rt: &[f32], stride: usize, offset: usize) {
        super::add_products_generic(acc, v, rt, stride, offset)
    }
}
