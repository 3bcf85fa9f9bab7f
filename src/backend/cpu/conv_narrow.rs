//! Convolutions with only a few output pixels: the frames of a short audio window (a VAD's STFT
//! and the 1-D convs after it), the last stages of a 1-D network. The usual conv GEMM puts the
//! pixels along the micro-kernel's wide side (NR = 32 columns on AVX-512), so 5 pixels leave 27
//! of every 32 lanes idle. Here the product is taken transposed, C^T (pixels x channels) =
//! cols^T · W^T: the channels span NR and the pixels the short side (MR rows). The column matrix
//! is small and built explicitly; the weights are packed as a right operand on first use (most
//! convolutions never take this path, so they never pay for the second packing).

use super::activation::Activation;
use super::conv::Im2col;
use super::gemm::{self, Bias, Epilogue, Lhs, MatRef, Micro, PackedB, Problem, Rhs};
use super::pool::ThreadPool;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Whether a product with `pixels` output columns wastes enough of the micro-kernel's width
/// that the transposed product is the better one: fewer than half of NR, and fewer than MR
/// (the transposed product's short side, which then wastes less).
pub fn prefers_transposed(micro: &Micro, pixels: usize) -> bool {
    pixels * 2 <= micro.nr && pixels <= micro.mr
}

/// The weights of each group as a right operand (K x M/group), packed on first use.
#[derive(Debug, Default)]
pub struct NarrowWeights {
    packed: OnceLock<Vec<PackedB>>,
}

thread_local! {
    /// The column matrix and C^T of this thread, kept between runs (no allocation in steady state).
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// One (image, group) product of a conv, taken transposed.
pub(super) struct NarrowProduct<'a> {
    pub(super) cols: Im2col<'a>,
    /// Output channels of the group (rows of the conv's C).
    pub channels: usize,
    pub pixels: usize,
    pub k: usize,
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

impl NarrowWeights {
    /// The packed weights, made from `weights` (all groups, row-major M x K per group) the first
    /// time.
    fn packed(&self, weights: &[f32], groups: usize, k: usize, micro: &Micro) -> &[PackedB] {
        self.packed.get_or_init(|| {
            let mg = weights.len() / (groups * k);
            (0..groups)
                .map(|g| {
                    let w = &weights[g * mg * k..(g + 1) * mg * k];
                    PackedB::new(&MatRef::transposed(w, k), k, mg, micro)
                })
                .collect()
        })
    }

    /// Writes one product (group `group`) into `y`, the group's `channels x pixels` output.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        pool: &ThreadPool,
        micro: &Micro,
        weights: &[f32],
        groups: usize,
        group: usize,
        p: &NarrowProduct,
        y: &mut [f32],
    ) {
        let packed = &self.packed(weights, groups, p.k, micro)[group];
        let (n, m) = (p.pixels, p.channels);
        SCRATCH.with(|s| {
            let mut guard = s.try_borrow_mut();
            // A nested call on this thread (never expected) gets buffers of its own.
            let mut local = (Vec::new(), Vec::new());
            let (cols, ct) = match guard.as_deref_mut() {
                Ok((cols, ct)) => (cols, ct),
                Err(_) => (&mut local.0, &mut local.1),
            };
            cols.resize(p.k * n, 0.0);
            ct.resize(n * m, 0.0);
            // Packing n columns as one panel writes the column matrix itself: K rows of n pixels.
            use super::gemm::PackB;
            p.cols.pack_b(0, p.k, 0, n, n, cols);
            let problem = Problem {
                m: n,
                n: m,
                k: p.k,
                a: Lhs::Plain(MatRef::transposed(cols, n)),
                b: Rhs::Packed(packed),
                epilogue: Epilogue { bias: p.bias.map_or(Bias::None, Bias::PerCol), act: p.act, ..Epilogue::default() },
            };
            gemm::run(pool, micro, &problem, ct, m);
            for (c, row) in y.chunks_exact_mut(n).enumerate().take(m) {
                row.iter_mut().zip(ct[c..].iter().step_by(m)).for_each(|(o, v)| *o = *v);
            }
        });
    }
}
