//! ONNX Attention in f32 as one fused kernel (what the attention fusion pass turns BERT-style
//! written-out attention into). Per task (one head of one batch item, a block of query rows):
//! the scores block Q·Kᵀ by the packed GEMM, scaled, masked and exponentiated in place while it
//! is in cache, times V, each output row divided by its softmax sum and written straight into
//! the output's layout. Q, K and V are read where they lie (3-D `[b, s, h*d]` or 4-D
//! `[b, h, s, d]`) through strides, so the head split and merge cost no copies and no
//! `[b, h, sq, skv]` tensor is ever materialised. Tasks are spread over the pool.
//!
//! Handled: 3-D or 4-D f32 Q/K/V, grouped-query heads, an f32 or boolean mask broadcasting to
//! `[b, h, sq, skv]`, is_causal and an explicit or default scale. Past key/value caches,
//! `nonpad_kv_seqlen`, softcap, sliding windows and the extra outputs run the reference kernel.

use super::gemm::{self, Epilogue, Lhs, MatRef, Problem, Rhs};
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::SharedMut;
use super::softmax::{exp_shifted_lanes, fold_lanes, lanes_max16};
use super::{f32_input, maybe_f32, Reference};
use crate::backend::{ExecCtx, Kernel};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Graph, Node, Op, Tensor};
use crate::ops::attention::{Attention, PlainAttention};
use crate::Result;
use std::cell::RefCell;
use std::sync::Arc;

/// Scores per task at most: a rows x skv block of them stays in L2 between the two products
/// (64 KiB: all 128 queries of a 128-key encoder head, so K and V are packed once a head).
const BLOCK_SCORES: usize = 16 * 1024;

/// Query rows per task for `skv` keys: a multiple of the micro-kernel's `mr` (whole A panels).
fn query_block(skv: usize, mr: usize) -> usize {
    (BLOCK_SCORES / skv.max(1) / mr).max(1) * mr
}

pub fn prepare(graph: &Graph, node: &Node) -> Option<Box<dyn Kernel>> {
    let plain = node.op.downcast_ref::<Attention>()?.plain()?;
    let extra_inputs = node.inputs.iter().skip(4).any(|i| i.is_some());
    if extra_inputs || node.outputs.len() != 1 || !maybe_f32(graph, node.inputs.first().copied().flatten()) {
        return None;
    }
    Some(Box::new(AttentionKernel { op: node.op.clone(), plain, micro: gemm::micro_for(isa()) }))
}

#[derive(Debug)]
struct AttentionKernel {
    op: Arc<dyn Op>,
    plain: PlainAttention,
    micro: gemm::Micro,
}

/// Where element (batch, head, position, feature) of Q, K, V or Y lies: strides of the first three
/// (features are contiguous).
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub batch: usize,
    pub head: usize,
    pub pos: usize,
}

impl Layout {
    fn at(&self, b: usize, h: usize, s: usize) -> usize {
        b * self.batch + h * self.head + s * self.pos
    }
}

/// `[b, heads, seq, size]` of a 3-D (`heads` given) or 4-D tensor, with its layout.
fn heads_of(shape: &[usize], heads: Option<usize>) -> Option<([usize; 4], Layout)> {
    match *shape {
        [b, h, s, d] => Some(([b, h, s, d], Layout { batch: h * s * d, head: s * d, pos: d })),
        [b, s, hidden] => {
            let h = heads.filter(|&h| h > 0 && hidden % h == 0)?;
            Some(([b, h, s, hidden / h], Layout { batch: s * hidden, head: hidden / h, pos: hidden }))
        }
        _ => None,
    }
}

/// The mask as additive f32 values with the strides that broadcast it to `[b, h, sq, skv]`;
/// `len` keys along its last axis (keys past it are masked, as the op pads a short mask).
pub(super) struct Mask<'a> {
    pub bias: std::borrow::Cow<'a, [f32]>,
    pub strides: [usize; 4],
    pub len: usize,
}

impl<'a> Mask<'a> {
    pub fn new(t: &'a Tensor, target: [usize; 4]) -> Option<Mask<'a>> {
        let shape = t.shape();
        if shape.is_empty() || shape.len() > 4 {
            return None;
        }
        let bias = match t.dtype() {
            DType::F32 => std::borrow::Cow::Borrowed(t.as_slice::<f32>().ok()?),
            DType::Bool => {
                let keep = t.as_slice::<bool>().ok()?;
                std::borrow::Cow::Owned(keep.iter().map(|&k| if k { 0.0 } else { f32::NEG_INFINITY }).collect())
            }
            _ => return None,
        };
        let padded: Vec<usize> = std::iter::repeat_n(1, 4 - shape.len()).chain(shape.iter().copied()).collect();
        let len = padded[3];
        if len > target[3] {
            return None;
        }
        let mut strides = [0; 4];
        let mut step = 1;
        for axis in (0..4).rev() {
            let broadcast = padded[axis] == 1 && axis < 3;
            if !broadcast && axis < 3 && padded[axis] != target[axis] {
                return None;
            }
            strides[axis] = if broadcast { 0 } else { step };
            step *= padded[axis];
        }
        Some(Mask { bias, strides, len })
    }
}

/// One run's problem, shared by its tasks. Q, K and V start where their slices start (a packed
/// tensor gives each a subslice).
pub(super) struct Sdpa<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub lq: Layout,
    pub lk: Layout,
    pub lv: Layout,
    pub ly: Layout,
    /// Query heads per key/value head.
    pub group: usize,
    pub sq: usize,
    pub skv: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    /// Keys after the query's position are masked (top-left aligned: `sq == skv` here).
    pub causal: bool,
    pub mask: Option<Mask<'a>>,
}

/// A task's working memory: the scores block (the softmax weights once exponentiated in place),
/// the output block and each row's 1 / sum.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    acc: Vec<f32>,
    inv_sums: Vec<f32>,
}

thread_local! {
    /// This thread's scratch, kept between runs.
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

impl Kernel for AttentionKernel {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>> {
        match self.fused(ctx, inputs)? {
            Some(y) => Ok(vec![Data::Tensor(y)]),
            None => Reference { op: self.op.clone() }.run(ctx, inputs),
        }
    }
}

impl AttentionKernel {
    /// The output, or `None` for inputs the reference kernel must take (it also reports the
    /// errors).
    fn fused(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Option<Tensor>> {
        let (Some(q), Some(k), Some(v)) = (f32_input(inputs, 0), f32_input(inputs, 1), f32_input(inputs, 2)) else {
            return Ok(None);
        };
        if inputs.iter().skip(4).any(|i| i.is_some()) || q.rank() != k.rank() || q.rank() != v.rank() {
            return Ok(None);
        }
        let p = self.plain;
        let (Some((qd, lq)), Some((kd, lk)), Some((vd, lv))) = (
            heads_of(q.shape(), p.q_num_heads),
            heads_of(k.shape(), p.kv_num_heads),
            heads_of(v.shape(), p.kv_num_heads),
        ) else {
            return Ok(None);
        };
        let [batch, hq, sq, d] = qd;
        let [kb, hkv, skv, kdim] = kd;
        let [vb, vh, vs, dv] = vd;
        let fits = kb == batch && vb == batch && kdim == d && vh == hkv && vs == skv && hkv > 0 && hq % hkv == 0;
        if !fits || skv == 0 {
            return Ok(None);
        }
        let mask = match inputs.get(3).copied().flatten() {
            None => None,
            Some(m) => match m.tensor().and_then(|t| Mask::new(t, [batch, hq, sq, skv])) {
                Some(m) => Some(m),
                None => return Ok(None),
            },
        };
        let (y_shape, ly) = if q.rank() == 3 {
            (vec![batch, sq, hq * dv], Layout { batch: sq * hq * dv, head: dv, pos: hq * dv })
        } else {
            (vec![batch, hq, sq, dv], Layout { batch: hq * sq * dv, head: sq * dv, pos: dv })
        };
        let mut y = ctx.buffers.output(checked_len(&y_shape, DType::F32)?)?;
        if y.is_empty() {
            return Ok(Some(y.into_tensor(y_shape)?));
        }
        let scale = p.scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
        let problem = Sdpa {
            q: q.as_slice::<f32>()?,
            k: k.as_slice::<f32>()?,
            v: v.as_slice::<f32>()?,
            lq,
            lk,
            lv,
            ly,
            group: hq / hkv,
            sq,
            skv,
            d,
            dv,
            scale,
            causal: p.is_causal,
            mask,
        };
        attend(ctx, &self.micro, &problem, batch, hq, &mut y);
        Ok(Some(y.into_tensor(y_shape)?))
    }
}

/// Runs `p` for `batch` items of `heads` query heads into `y` (laid out as `p.ly` says, every
/// element written), tasks of a head and a block of queries spread over the pool.
pub(super) fn attend(ctx: &ExecCtx, micro: &gemm::Micro, p: &Sdpa, batch: usize, heads: usize, y: &mut [f32]) {
    let rows = query_block(p.skv, micro.mr);
    let blocks = p.sq.div_ceil(rows);
    let out = SharedMut(y.as_mut_ptr());
    let work = rows.min(p.sq) * p.skv * (p.d + p.dv);
    ctx.pool.parallel_for_work(batch * heads * blocks, work, &|t| {
        let (bh, blk) = (t / blocks, t % blocks);
        let o = out;
        let i0 = blk * rows;
        SCRATCH.with(|s| {
            let mut guard = s.try_borrow_mut();
            let mut local = None;
            let slot = match guard.as_deref_mut() {
                Ok(slot) => slot,
                Err(_) => &mut local,
            };
            let scratch = slot.get_or_insert_with(Scratch::default);
            block(micro, p, bh / heads, bh % heads, i0..(i0 + rows).min(p.sq), scratch, o);
        });
    });
}

/// Keys read as the columns of Kᵀ, for the scores product: B panels written from K's rows
/// (one key's features are contiguous), instead of a gather along each feature.
struct KeysT<'a> {
    k: &'a [f32],
    /// Distance between two keys.
    pos: usize,
}

impl gemm::PackB for KeysT<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nr: usize, n: usize, out: &mut [f32]) {
        let valid = nr.min(n - n0);
        let out = &mut out[..kc * nr];
        for j in 0..valid {
            let key = &self.k[(n0 + j) * self.pos + k0..][..kc];
            out.chunks_exact_mut(nr).zip(key).for_each(|(o, &v)| o[j] = v);
        }
        if valid < nr {
            out.chunks_exact_mut(nr).for_each(|o| o[valid..].fill(0.0));
        }
    }
}

/// Query rows `rows` of head `h` of batch item `b`, written into `y`.
fn block(
    micro: &gemm::Micro,
    p: &Sdpa,
    b: usize,
    h: usize,
    rows: std::ops::Range<usize>,
    s: &mut Scratch,
    y: SharedMut,
) {
    let (i0, m) = (rows.start, rows.len());
    let (skv, d, dv) = (p.skv, p.d, p.dv);
    let kvh = h / p.group;
    s.scores.resize(m * skv, 0.0);
    s.acc.resize(m * dv, 0.0);
    s.inv_sums.resize(m, 0.0);
    let (q0, k0, v0) = (p.lq.at(b, h, i0), p.lk.at(b, kvh, 0), p.lv.at(b, kvh, 0));
    // scores = Q_block · Kᵀ. The GEMM packs both plain row-major operands (queries and, below,
    // the weights) eight rows at a time by register transposes, where writing them into panels
    // here went a float at a time.
    let keys = KeysT { k: &p.k[k0..], pos: p.lk.pos };
    let queries = MatRef { data: &p.q[q0..], rs: p.lq.pos, cs: 1 };
    let product =
        Problem { m, n: skv, k: d, a: Lhs::Plain(queries), b: Rhs::Source(&keys), epilogue: Epilogue::default() };
    gemm::run_serial(micro, &product, &mut s.scores, skv);
    for (r, row) in s.scores.chunks_exact_mut(skv).enumerate() {
        let i = i0 + r;
        // Keys past `limit` are masked: the causal mask, or a mask shorter than the keys.
        let mut limit = if p.causal { (i + 1).min(skv) } else { skv };
        // A mask's last axis is contiguous (only its leading axes broadcast).
        let row_bias = p.mask.as_ref().map(|mk| {
            limit = limit.min(mk.len);
            let base = b * mk.strides[0] + h * mk.strides[1] + i * mk.strides[2];
            &mk.bias[base..base + limit]
        });
        s.inv_sums[r] = exponentiate(row, limit, p.scale, row_bias);
    }
    // acc = exp(scores) · V, then each row divided by its sum.
    let vm = MatRef { data: &p.v[v0..], rs: p.lv.pos, cs: 1 };
    let product = Problem {
        m,
        n: dv,
        k: skv,
        a: Lhs::Plain(MatRef::row_major(&s.scores, skv)),
        b: Rhs::Plain(vm),
        epilogue: Epilogue::default(),
    };
    gemm::run_serial(micro, &product, &mut s.acc, dv);
    for (r, row) in s.acc.chunks_exact(dv).enumerate() {
        let start = p.ly.at(b, h, i0 + r);
        // SAFETY: the output row of this head and query belongs to this task alone
        // (tasks split heads and query blocks), and lies inside y (the layout's bound).
        let out = unsafe { std::slice::from_raw_parts_mut(y.0.add(start), dv) };
        let inv = s.inv_sums[r];
        out.iter_mut().zip(row).for_each(|(o, &a)| *o = a * inv);
    }
}

/// Turns a row of raw scores into unnormalised softmax weights in place: `x = s * scale + bias`
/// over the first `limit` keys (the rest weigh 0), `exp(x - max)`. Returns 1 / the sum, or 0 for
/// a row that attends nothing (all masked), whose output is then zeros as the op defines.
fn exponentiate(row: &mut [f32], limit: usize, scale: f32, bias: Option<&[f32]>) -> f32 {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::exponentiate_avx512(row, limit, scale, bias) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::exponentiate_avx2(row, limit, scale, bias) },
        _ => exponentiate_generic::<false>(row, limit, scale, bias, max_of_lanes, sum_of_lanes),
    }
}

/// The largest of 16 lanes, folded in halves.
fn max_of_lanes(m: [f32; 16]) -> f32 {
    fold_lanes(m, f32::max)
}

/// The sum of 16 lanes, folded in halves.
fn sum_of_lanes(s: [f32; 16]) -> f32 {
    fold_lanes(s, |a, b| a + b)
}

/// [`exponentiate`], the 16 lanes of the row's max and of its sum folded by `max16` and
/// `sum16` (a key row is short: a fold of scalars cost as much as its exponentials).
#[inline(always)]
fn exponentiate_generic<const FMA: bool>(
    row: &mut [f32],
    limit: usize,
    scale: f32,
    bias: Option<&[f32]>,
    max16: impl Fn([f32; 16]) -> f32,
    sum16: impl Fn([f32; 16]) -> f32,
) -> f32 {
    let (live, dead) = row.split_at_mut(limit);
    dead.iter_mut().for_each(|x| *x = 0.0);
    match bias {
        Some(b) => live.iter_mut().zip(b).for_each(|(x, &b)| *x = *x * scale + b),
        None => live.iter_mut().for_each(|x| *x *= scale),
    }
    let max = max16(lanes_max16(live));
    if max == f32::NEG_INFINITY {
        live.iter_mut().for_each(|x| *x = 0.0);
        return 0.0;
    }
    1.0 / sum16(exp_shifted_lanes::<FMA>(live, max))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The lanes folded in one zmm register each.
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn exponentiate_avx512(row: &mut [f32], limit: usize, scale: f32, bias: Option<&[f32]>) -> f32 {
        // SAFETY: this function runs only where AVX-512F does; the loads read the arrays' 16 values.
        let max16 = |m: [f32; 16]| unsafe { _mm512_reduce_max_ps(_mm512_loadu_ps(m.as_ptr())) };
        let sum16 = |s: [f32; 16]| unsafe { _mm512_reduce_add_ps(_mm512_loadu_ps(s.as_ptr())) };
        super::exponentiate_generic::<true>(row, limit, scale, bias, max16, sum16)
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exponentiate_avx2(row: &mut [f32], limit: usize, scale: f32, bias: Option<&[f32]>) -> f32 {
        super::exponentiate_generic::<true>(row, limit, scale, bias, super::max_of_lanes, super::sum_of_lanes)
    }
}
