//! Products with a constant, mostly-zero weight matrix (pruned models: `crx580 convert --prune`):
//! 1x1 stride-1 convolutions, NCHW. The weights are kept compressed per output channel (its
//! nonzero weights and the input channels they multiply) and the kernel puts pixels on the
//! vector lanes, as XNNPACK's SpMM for sparse inference does: for output channel n and a block of
//! up to 64 pixels, `acc += w * x[k][block]` for each nonzero (k, w): one broadcast and four
//! contiguous loads and multiply-adds per nonzero, whatever the pattern. Bias, residual and the
//! activation are applied in registers, and each output is written once.
//!
//! The dense GEMM does K multiply-adds per output at a higher rate (its tiles reuse each load
//! many times); this kernel does only the nonzeros, each with a load. It wins from about
//! [`MIN_ZEROS`] (65%) of zeros on (measured on MobileNetV2's and ResNet-50's 1x1 layers, see
//! there and benches/RESULTS.md); below it the dense kernels run. AVX-512 kernels; elsewhere
//! the same loops in plain Rust (compiled for AVX2 with FMA where the CPU has them). Other
//! products (MatMul, Gemm, k x k convolutions) stay dense.
//!
//! Semantics: a pruned weight is skipped, not multiplied, so an infinity or NaN in the input
//! times a pruned (zero) weight adds nothing here where the dense product gives NaN. XNNPACK's
//! sparse kernels and every sparse library behave the same; finite inputs give the dense result
//! up to rounding (fewer terms, summed in another order).

use super::activation::{Activation, ActivationExt};
use super::conv_pointwise::Pointwise;
use super::gemm::Skip;
use super::isa::{isa, Isa};
use super::pool::{SharedMut, ThreadPool};

/// The fraction of zero weights from which the sparse kernel runs. Measured by
/// `sparse_crossover` (below) against the dense kernels on MobileNetV2's and ResNet-50's 1x1
/// layers, one thread, Sapphire Rapids: at 50% zeros (2:4's) the sparse kernel runs 0.72-1.05x
/// the dense speed, at 60% 0.8-1.28x (winning where K <= 192, losing up to 20% on ResNet's
/// K >= 512), at 70% 1.06-1.8x, at 80% 1.5-2.2x, at 90% 2.1-3.8x.
pub const MIN_ZEROS: f64 = 0.65;
/// Pixels per block: four 16-float vectors.
const BLOCK: usize = 64;
/// Pixels per parallel task (whole blocks).
const TASK_PIXELS: usize = 4 * BLOCK;
/// Output channels per parallel task, at least, where small planes are split by channels.
const TASK_ROWS: usize = 16;
/// Input channels per chunk: a block reads its chunk's inputs (KC x 64 floats, 32 KiB) for every
/// output row, so they must stay in L1. With K = 384..576 read whole (96-144 KiB, from L2)
/// MobileNetV2's 14x14 projections ran slower than the dense GEMM at 70% zeros (up to 1.1x in a
/// per-node profile); chunked they win (1.27-1.42x, `sparse_crossover`).
const KC: usize = 128;

/// An M x K weight matrix, compressed per row (output channel) and chunk of [`KC`] input rows:
/// row r's nonzeros in chunk j are `vals[starts[i]..starts[i + 1]]` with `i = r * chunks + j`,
/// multiplying input rows `cols[..]` (the same range).
#[derive(Debug)]
pub struct SparseWeights {
    m: usize,
    k: usize,
    chunks: usize,
    starts: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl SparseWeights {
    /// Compresses `w` (row-major M x K) if at least [`MIN_ZEROS`] of it is zeros; `None` else.
    pub fn new(w: &[f32], m: usize, k: usize) -> Option<SparseWeights> {
        Self::with_min_zeros(w, m, k, MIN_ZEROS)
    }

    /// [`Self::new`] from `min_zeros` zeros on (for tests and measurements of other thresholds).
    pub fn with_min_zeros(w: &[f32], m: usize, k: usize, min_zeros: f64) -> Option<SparseWeights> {
        if w.len() != m * k || w.is_empty() || u32::try_from(w.len()).is_err() {
            return None;
        }
        let nonzeros = w.iter().filter(|v| **v != 0.0).count();
        if ((w.len() - nonzeros) as f64) < min_zeros * w.len() as f64 {
            return None;
        }
        let chunks = k.div_ceil(KC);
        let (mut starts, mut cols, mut vals) = (vec![0u32], Vec::with_capacity(nonzeros), Vec::with_capacity(nonzeros));
        for row in w.chunks_exact(k) {
            for (j, part) in row.chunks(KC).enumerate() {
                for (c, &v) in part.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                    cols.push((j * KC + c) as u32);
                    vals.push(v);
                }
                starts.push(cols.len() as u32);
            }
        }
        Some(SparseWeights { m, k, chunks, starts, cols, vals })
    }

    /// Row r's nonzeros in chunk j: (input rows, weights).
    #[inline(always)]
    fn row(&self, r: usize, j: usize) -> (&[u32], &[f32]) {
        let i = r * self.chunks + j;
        let span = self.starts[i] as usize..self.starts[i + 1] as usize;
        (&self.cols[span.clone()], &self.vals[span])
    }

    /// Writes every element of `y` (M rows of `p.pixels`) from `p.x` (K rows of `p.pixels`),
    /// spreading blocks of pixels and of output channels over `pool`.
    pub fn run(&self, pool: &ThreadPool, p: &Pointwise, y: &mut [f32]) {
        self.run_on(isa(), pool, p, y)
    }

    /// [`Self::run`] with the kernels of `isa` (one this CPU runs).
    fn run_on(&self, isa: Isa, pool: &ThreadPool, p: &Pointwise, y: &mut [f32]) {
        assert!(isa.supported(), "sparse: {} does not run here", isa.name());
        let (m, k, n) = (self.m, self.k, p.pixels);
        assert!(p.x.len() >= k * n && y.len() >= m * n, "sparse: buffers too small");
        assert!(p.bias.is_none_or(|b| b.len() >= m) && p.skip.added().is_none_or(|r| r.len() >= m * n));
        assert!(!matches!(p.skip, Skip::InOutput), "sparse: a skip connection comes apart, not in y");
        if n == 0 || m == 0 {
            return;
        }
        let out = SharedMut(y.as_mut_ptr());
        // Tasks of pixel columns; small planes (7x7, 14x14: one column) are also split by output
        // channels, so that two threads share them.
        let columns = n.div_ceil(TASK_PIXELS);
        let splits = (4 / columns).clamp(1, m.div_ceil(TASK_ROWS));
        let per_split = m.div_ceil(splits);
        let work = (self.vals.len() / splits).max(1) * TASK_PIXELS.min(n);
        pool.parallel_for_work(columns * splits, work, &|t| {
            let o = out;
            let (c, split) = (t / splits, t % splits);
            let (p0, p1) = (c * TASK_PIXELS, ((c + 1) * TASK_PIXELS).min(n));
            let rows = split * per_split..((split + 1) * per_split).min(m);
            if rows.is_empty() {
                return;
            }
            // SAFETY: each task writes only pixels p0..p1 of its rows, inside y (checked above);
            // the AVX-512 and AVX2 code runs only where the CPU has them (checked above).
            let fused = match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { x86::columns(self, p, rows.clone(), p0, p1, o.0) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { columns_avx2(self, p, rows.clone(), p0, p1, o.0) },
                _ => unsafe { columns_portable(self, p, rows.clone(), p0, p1, o.0) },
            };
            if !fused && p.act != Activation::None {
                for row in rows {
                    // SAFETY: as above, this task's pixels of row `row`.
                    let seg = unsafe { std::slice::from_raw_parts_mut(o.0.add(row * n + p0), p1 - p0) };
                    p.act.apply(seg);
                }
            }
        });
    }
}

/// [`columns_portable`] compiled for AVX2 with FMA.
///
/// # Safety
/// Needs AVX2 and FMA; as [`columns_portable`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(
    w: &SparseWeights,
    p: &Pointwise,
    rows: std::ops::Range<usize>,
    p0: usize,
    p1: usize,
    y: *mut f32,
) -> bool {
    // SAFETY: as the caller promised.
    unsafe { columns_portable(w, p, rows, p0, p1, y) }
}

/// Pixels `p0..p1` of output rows `rows`, in plain Rust (the compiler vectorises the lanes'
/// loops). Returns whether the activation was applied (never: the caller applies it).
///
/// # Safety
/// `y` holds M rows of `p.pixels`; the sizes were checked by [`SparseWeights::run`], and no
/// other thread writes these pixels of these rows.
#[inline(always)]
unsafe fn columns_portable(
    w: &SparseWeights,
    p: &Pointwise,
    rows: std::ops::Range<usize>,
    p0: usize,
    p1: usize,
    y: *mut f32,
) -> bool {
    let n = p.pixels;
    for at in (p0..p1).step_by(BLOCK) {
        let width = BLOCK.min(p1 - at);
        for j in 0..w.chunks {
            for r in rows.clone() {
                // SAFETY: pixels at..at + width of row r, this task's (as the caller promised).
                let dst = unsafe { std::slice::from_raw_parts_mut(y.add(r * n + at), width) };
                let mut acc = [p.bias.map_or(0.0, |b| b[r]); BLOCK];
                if j > 0 {
                    acc[..width].copy_from_slice(dst);
                }
                let (cols, vals) = w.row(r, j);
                for (&c, &v) in cols.iter().zip(vals) {
                    let x = &p.x[c as usize * n + at..][..width];
                    acc.iter_mut().zip(x).for_each(|(a, x)| *a += v * x);
                }
                if let Some(res) = p.skip.added().filter(|_| j + 1 == w.chunks) {
                    acc.iter_mut().zip(&res[r * n + at..][..width]).for_each(|(a, r)| *a += r);
                }
                dst.copy_from_slice(&acc[..width]);
            }
        }
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::activation::avx512::apply as act;
    use super::super::activation::in_registers as fuses;
    use super::{Pointwise, SparseWeights, BLOCK};
    use std::arch::x86_64::*;

    /// Pixels `p0..p1` of output rows `rows`, block by block of 64 pixels (a block's K x 64
    /// inputs stay in cache while every row reads them). Returns whether the activation was
    /// applied.
    ///
    /// # Safety
    /// Needs AVX-512F; `y` holds M rows of `p.pixels`, the sizes were checked by the caller, and
    /// no other thread writes these pixels of these rows.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn columns(
        w: &SparseWeights,
        p: &Pointwise,
        rows: std::ops::Range<usize>,
        p0: usize,
        p1: usize,
        y: *mut f32,
    ) -> bool {
        let fused = fuses(p.act);
        for at in (p0..p1).step_by(BLOCK) {
            let width = BLOCK.min(p1 - at);
            let masks: [__mmask16; 4] = std::array::from_fn(|v| {
                let lanes = width.saturating_sub(16 * v).min(16);
                ((1u32 << lanes) - 1) as __mmask16
            });
            // SAFETY: as the caller promised; the blocks read and write only their masked lanes.
            unsafe {
                match width.div_ceil(16) {
                    4 if width == BLOCK => block::<4, true>(w, p, rows.clone(), at, &masks, fused, y),
                    4 => block::<4, false>(w, p, rows.clone(), at, &masks, fused, y),
                    3 => block::<3, false>(w, p, rows.clone(), at, &masks, fused, y),
                    2 => block::<2, false>(w, p, rows.clone(), at, &masks, fused, y),
                    _ => block::<1, false>(w, p, rows.clone(), at, &masks, fused, y),
                }
            }
        }
        fused
    }

    /// The `V` vectors of pixels from `at` (the masked lanes of them; all of them where `FULL`)
    /// of output rows `rows`, chunk by chunk of input rows: the first starts from the bias, the
    /// others from the sums stored so far, and the last adds the residual and the activation.
    /// Nonzeros are taken two at a time into two sets of sums: one set
    /// of V chains of multiply-adds would wait on their latency.
    ///
    /// # Safety
    /// See [`columns`].
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const V: usize, const FULL: bool>(
        w: &SparseWeights,
        p: &Pointwise,
        rows: std::ops::Range<usize>,
        at: usize,
        masks: &[__mmask16; 4],
        fused: bool,
        y: *mut f32,
    ) {
        let n = p.pixels;
        // SAFETY (every load and store below): input row c < K and output row r < M hold
        // `n` pixels, and the lanes read and written are those of the block, inside them.
        let x = unsafe { p.x.as_ptr().add(at) };
        let load = |c: u32| -> [__m512; V] {
            let xc = unsafe { x.add(c as usize * n) };
            std::array::from_fn(|v| unsafe {
                if FULL {
                    _mm512_loadu_ps(xc.add(16 * v))
                } else {
                    _mm512_maskz_loadu_ps(masks[v], xc.add(16 * v))
                }
            })
        };
        for j in 0..w.chunks {
            let last = j + 1 == w.chunks;
            for r in rows.clone() {
                // SAFETY: as above.
                unsafe { row::<V, FULL>(w, p, r, j, last, at, masks, fused, &load, y) };
            }
        }
    }

    /// Output row `r`, chunk `j` of [`block`].
    ///
    /// # Safety
    /// See [`columns`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn row<const V: usize, const FULL: bool>(
        w: &SparseWeights,
        p: &Pointwise,
        r: usize,
        j: usize,
        last: bool,
        at: usize,
        masks: &[__mmask16; 4],
        fused: bool,
        load: &impl Fn(u32) -> [__m512; V],
        y: *mut f32,
    ) {
        let offset = p.pixels * r + at;
        // SAFETY: the block's lanes of output row r < M (see `block`).
        let mut acc = if j == 0 {
            [_mm512_set1_ps(p.bias.map_or(0.0, |b| b[r])); V]
        } else {
            std::array::from_fn(|l| unsafe { _mm512_maskz_loadu_ps(masks[l], y.add(offset + 16 * l)) })
        };
        let mut odd = [_mm512_setzero_ps(); V];
        let (cols, vals) = w.row(r, j);
        let mut pairs_c = cols.chunks_exact(2);
        let mut pairs_v = vals.chunks_exact(2);
        for (c, v) in (&mut pairs_c).zip(&mut pairs_v) {
            let (x0, x1) = (load(c[0]), load(c[1]));
            let (w0, w1) = (_mm512_set1_ps(v[0]), _mm512_set1_ps(v[1]));
            for l in 0..V {
                acc[l] = _mm512_fmadd_ps(w0, x0[l], acc[l]);
                odd[l] = _mm512_fmadd_ps(w1, x1[l], odd[l]);
            }
        }
        if let (&[c], &[v]) = (pairs_c.remainder(), pairs_v.remainder()) {
            let (x0, w0) = (load(c), _mm512_set1_ps(v));
            for l in 0..V {
                acc[l] = _mm512_fmadd_ps(w0, x0[l], acc[l]);
            }
        }
        for l in 0..V {
            let mut sum = _mm512_add_ps(acc[l], odd[l]);
            if let Some(res) = p.skip.added().filter(|_| last) {
                sum = _mm512_add_ps(sum, unsafe { _mm512_maskz_loadu_ps(masks[l], res.as_ptr().add(offset + 16 * l)) });
            }
            if fused && last {
                sum = unsafe { act(p.act, sum) };
            }
            unsafe { _mm512_mask_storeu_ps(y.add(offset + 16 * l), masks[l], sum) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::tests::{build, check, tensor, values, In};
    use crate::ir::{Attr, Tensor};
    use crate::ops::fused::FusedConv;
    use std::sync::Arc;

    /// A pseudo-random generator for the cases.
    struct Pick(u64);
    impl Pick {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    /// M x K weights with `zeros` of them zero (at random places), and `empty` rows all zero.
    fn pruned(seed: u64, m: usize, k: usize, zeros: f64, empty: &[usize]) -> Vec<f32> {
        let mut w = values(seed, m * k);
        let mut pick = Pick(seed);
        let target = (zeros * (m * k) as f64).ceil() as usize;
        for &r in empty {
            w[r * k..(r + 1) * k].fill(0.0);
        }
        let mut zeros = w.iter().filter(|v| **v == 0.0).count();
        while zeros < target {
            let i = pick.below(m * k);
            zeros += usize::from(w[i] != 0.0);
            w[i] = 0.0;
        }
        w
    }

    /// 1x1 convolutions with pruned weights (60% to all zeros, whole zero channels), K across
    /// the input chunks (1 to 300), M and the planes no multiple of any block (1x1 to 270
    /// pixels), batches of 1 and 2, bias, residual and every kind of activation (in registers
    /// and applied after): the compiled node runs `conv-sparse`, at 1 and 3 threads, and
    /// matches the reference op.
    #[test]
    fn sparse_conv_matches_the_reference() {
        use crate::ops::fused::Activation as Act;
        let acts =
            [Act::None, Act::Relu, Act::Clip(0.0, 6.0), Act::HardSwish, Act::Silu, Act::Gelu, Act::LeakyRelu(0.1)];
        let mut pick = Pick(5);
        for case in 0..40 {
            let k = [1, 3, 17, 96, 129, 300][case % 6];
            let m = [1, 5, 23, 70][pick.below(4)];
            let (h, w) = [(1, 1), (7, 7), (5, 13), (14, 14), (9, 30), (1, 65)][pick.below(6)];
            let batch = 1 + pick.below(2);
            let zeros = [MIN_ZEROS, 0.75, 0.9, 0.97, 1.0][pick.below(5)];
            let empty: Vec<usize> = if case % 3 == 0 { vec![m / 2] } else { vec![] };
            let (bias, residual) = (pick.below(3) != 0, pick.below(3) == 0);
            let act = acts[pick.below(acts.len())];
            let seed = 900 + 10 * case as u64;
            let name = format!("case {case}: K {k} M {m} {h}x{w} batch {batch} zeros {zeros} {act:?}");
            let conv = build("Conv", vec![], if bias { 3 } else { 2 });
            let weights = Tensor::new(vec![m, k, 1, 1], pruned(seed + 1, m, k, zeros, &empty)).unwrap();
            let mut inputs = vec![In::Fed(tensor(seed, &[batch, k, h, w])), In::Const(weights)];
            if bias || residual {
                inputs.push(if bias { In::Const(tensor(seed + 2, &[m])) } else { In::Absent });
            }
            if residual {
                inputs.push(In::Fed(tensor(seed + 3, &[batch, m, h, w])));
            }
            let op = Arc::new(FusedConv { conv, residual, act });
            assert_eq!(check(&name, op, inputs), "conv-sparse", "{name}");
        }
    }

    /// Below [`MIN_ZEROS`] the dense kernels run; a strided or padded 1x1 conv with sparse
    /// weights still gives the reference result (on the GEMM).
    #[test]
    fn sparse_conv_only_where_it_pays_and_fits() {
        let (m, k) = (40, 50);
        let dense = Tensor::new(vec![m, k, 1, 1], pruned(3, m, k, 0.4, &[])).unwrap();
        let conv = build("Conv", vec![], 2);
        let kernel = check("40% zeros", conv, vec![In::Fed(tensor(1, &[1, k, 9, 9])), In::Const(dense)]);
        assert_ne!(kernel, "conv-sparse");
        let sparse = Tensor::new(vec![m, k, 1, 1], pruned(4, m, k, 0.8, &[])).unwrap();
        let strided =
            build("Conv", vec![("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 0, 1, 0]))], 2);
        check("strided", strided, vec![In::Fed(tensor(2, &[2, k, 9, 11])), In::Const(sparse)]);
    }

    /// A pruned weight is skipped: an infinity in an input channel that only pruned weights
    /// read leaves the outputs finite (the dense product would give NaN), as documented.
    #[test]
    fn sparse_conv_skips_pruned_weights() {
        let (m, k, pixels) = (3, 8, 20);
        let mut w = vec![0.0; m * k];
        w[1] = 2.0; // row 0 reads channel 1 only
        w[k + 2] = -1.0;
        let sparse = SparseWeights::new(&w, m, k).expect("sparse enough");
        let mut x = values(7, k * pixels);
        x[5 * pixels..6 * pixels].fill(f32::INFINITY);
        let p = Pointwise { x: &x, pixels, bias: None, skip: Skip::None, act: Activation::None };
        let mut y = vec![f32::NAN; m * pixels];
        sparse.run(&ThreadPool::new(1), &p, &mut y);
        for (i, v) in y.iter().enumerate() {
            let want = match i / pixels {
                0 => 2.0 * x[pixels + i],
                1 => -x[2 * pixels + i % pixels],
                _ => 0.0,
            };
            assert_eq!(*v, want, "element {i}");
        }
    }

    /// Every instruction set's kernel this CPU runs against a plain sum, with bias, residual
    /// and an activation applied after (the portable and AVX2 paths never fuse it).
    #[test]
    fn sparse_kernels_of_every_isa_agree() {
        use super::super::activation::ActivationExt;
        let mut pick = Pick(11);
        for case in 0..24 {
            let (m, k) = ([1, 9, 33][case % 3], [2, 70, 131, 260][pick.below(4)]);
            let pixels = [1, 15, 64, 100, 257][pick.below(5)];
            let zeros = [0.6, 0.9, 1.0][pick.below(3)];
            let w = pruned(case as u64, m, k, zeros, &[m - 1]);
            let x = values(case as u64 + 1, k * pixels);
            let (bias, residual) = (values(case as u64 + 2, m), values(case as u64 + 3, m * pixels));
            let act = [Activation::None, Activation::Relu, Activation::Tanh][case % 3];
            let mut want = residual.clone();
            for r in 0..m {
                for q in 0..pixels {
                    let sum: f32 = (0..k).map(|c| w[r * k + c] * x[c * pixels + q]).sum();
                    want[r * pixels + q] = act.eval(want[r * pixels + q] + sum + bias[r]);
                }
            }
            let sparse = SparseWeights::with_min_zeros(&w, m, k, 0.0).unwrap();
            let p = Pointwise { x: &x, pixels, bias: Some(&bias), skip: Skip::Add(&residual), act };
            for isa in Isa::available() {
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; m * pixels];
                    sparse.run_on(isa, &ThreadPool::new(threads), &p, &mut y);
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        let close = (a - b).abs() <= 1e-5 * (1.0 + b.abs()) * (k as f32).sqrt();
                        assert!(close, "case {case} ({}, {threads} threads) element {i}: {a} vs {b}", isa.name());
                    }
                }
            }
        }
    }

    /// The crossover: per 1x1 layer shape of MobileNetV2 and ResNet-50, the compiled dense conv
    /// (as the session runs it) against this kernel at 50..90% zeros, best of alternated runs.
    /// `cargo test --release --lib sparse_crossover -- --ignored --nocapture` (threads from
    /// CRX580_THREADS, default 1).
    #[test]
    #[ignore]
    fn sparse_crossover() {
        use crate::backend::{backends_for, compile, Device};
        use crate::ir::infer::infer_facts;
        use crate::ir::{Attributes, DataRef, Dim, Fact, Graph, Node};
        use std::time::Instant;
        let threads = std::env::var("CRX580_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
        let pool = ThreadPool::new(threads);
        let shapes = [
            ("mv2 24>144 56x56", 24, 144, 3136),
            ("mv2 144>24 56x56", 144, 24, 3136),
            ("mv2 32>192 28x28", 32, 192, 784),
            ("mv2 192>32 28x28", 192, 32, 784),
            ("mv2 64>384 14x14", 64, 384, 196),
            ("mv2 384>64 14x14", 384, 64, 196),
            ("mv2 96>576 14x14", 96, 576, 196),
            ("mv2 576>96 14x14", 576, 96, 196),
            ("mv2 160>960 7x7", 160, 960, 49),
            ("mv2 960>160 7x7", 960, 160, 49),
            ("mv2 320>1280 7x7", 320, 1280, 49),
            ("r50 64>256 56x56", 64, 256, 3136),
            ("r50 256>64 56x56", 256, 64, 3136),
            ("r50 512>128 28x28", 512, 128, 784),
            ("r50 128>512 28x28", 128, 512, 784),
            ("r50 1024>256 14x14", 1024, 256, 196),
            ("r50 256>1024 14x14", 256, 1024, 196),
            ("r50 2048>512 7x7", 2048, 512, 49),
            ("r50 512>2048 7x7", 512, 2048, 49),
        ];
        let levels = [0.5, 0.6, 0.7, 0.8, 0.9];
        println!("dense time / sparse time at {levels:?} zeros, {threads} thread(s)");
        for (name, k, m, pixels) in shapes {
            let x = tensor(1, &[1, k, 1, pixels]);
            let mut g = Graph::default();
            let xi = g.add_value(
                "x",
                Fact::new(crate::ir::DType::F32, vec![Dim::Known(1), Dim::Known(k), Dim::Known(1), Dim::Known(pixels)]),
            );
            g.inputs.push(xi);
            let wi = g.add_value("w", Fact::constant(Arc::new(tensor(2, &[m, k, 1, 1]))));
            let bi = g.add_value("b", Fact::constant(Arc::new(tensor(3, &[m]))));
            let yi = g.add_value("y", Fact::unknown());
            g.outputs.push(yi);
            let op = Arc::new(FusedConv { conv: build("Conv", vec![], 3), residual: false, act: Activation::Relu });
            let attrs = Attributes::default();
            let node = Node {
                name: name.into(),
                domain: String::new(),
                op_type: "FusedConv".into(),
                attrs,
                op,
                inputs: vec![Some(xi), Some(wi), Some(bi)],
                outputs: vec![yi],
            };
            g.nodes.push(node);
            infer_facts(&mut g).unwrap();
            let compiled = compile(&g, &backends_for(Device::Cpu).unwrap()).unwrap();
            let refs = [DataRef::Tensor(&x)];
            let bias = values(3, m);
            let xs = x.as_slice::<f32>().unwrap();
            let p = Pointwise { x: xs, pixels, bias: Some(&bias), skip: Skip::None, act: Activation::Relu };
            let mut y = vec![0f32; m * pixels];
            let reps = (20_000_000 / (m * k * pixels)).clamp(3, 200);
            let mut line = format!("{name:22} ({:13}):", compiled.kernel_names()[0].0);
            for zeros in levels {
                let sparse = SparseWeights::with_min_zeros(&pruned(4, m, k, zeros, &[]), m, k, 0.0).unwrap();
                let (mut dense_best, mut sparse_best) = (f64::MAX, f64::MAX);
                for _ in 0..5 {
                    let t = Instant::now();
                    for _ in 0..reps {
                        compiled.run(&pool, &refs, &[], None).unwrap();
                    }
                    dense_best = dense_best.min(t.elapsed().as_secs_f64());
                    let t = Instant::now();
                    for _ in 0..reps {
                        sparse.run(&pool, &p, &mut y);
                    }
                    sparse_best = sparse_best.min(t.elapsed().as_secs_f64());
                }
                line += &format!(" {:5.2}", dense_best / sparse_best);
            }
            println!("{line}");
        }
    }
}
