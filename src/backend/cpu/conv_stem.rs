//! Direct convolution for a network's stem: one group over a few input channels (1 to 4) with a
//! window of 3x3 or more (ResNet's 7x7 stride 2 over RGB, MobileNet's and YOLO's 3x3 stride
//! 2), and for YOLO's strided 3x3 convs over wide rows (16 to 64 channels). The GEMM would
//! spend its time packing an implicit im2col of k = 27..576 rows for every block of pixels;
//! here the input rows of a band of output rows are staged (in a per-thread buffer of up to
//! 256 KiB), zero-padded and split by column phase (for stride s, phase p holds padded columns
//! p, p + s, ...), so that the input of 16 consecutive output pixels under any tap is 16
//! contiguous floats. A tile of 8 output channels x up to 48 pixels of one output row
//! accumulates in 24 AVX-512 registers over the taps, each tap one load per 16 pixels and one
//! broadcast weight per channel; bias and the usual activations are applied in registers as the
//! tile is stored. AVX-512 only; elsewhere the GEMM runs these.

// AVX-512 only: on other targets the module compiles, but nothing runs its kernels (`available`
// says no there), so their paths are unused.
#![cfg_attr(
    not(target_arch = "x86_64"),
    allow(dead_code, unused_imports, unused_variables, unused_macros, unreachable_code)
)]

#[cfg(target_arch = "x86_64")]
use super::activation::avx512;
use super::activation::{in_registers, Activation, ActivationExt};
use super::chunks::Scratch;
use super::isa::{isa, Isa};
use super::pool::SharedMut;
use crate::backend::ExecCtx;
use crate::ops::window::Axis;
use std::cell::RefCell;

/// Output channels per tile.
const MB: usize = 8;
/// Most taps a window may have: the tap table lives on the stack.
const MAX_WINDOW: usize = 512;
/// Most input channels of a wide convolution of stride 2 (see [`StemWeights::new`]).
const MAX_WIDE_CHANNELS: usize = 64;
/// Most input channels of a wide convolution of stride 1.
const MAX_WIDE_CHANNELS_STRIDE_1: usize = 16;
/// Narrowest output rows of a wide convolution: the 16-pixel vectors stay mostly full.
const MIN_WIDE_WIDTH: usize = 40;

/// The weights of a stem convolution, in tiles of [`MB`] output channels: `[tile][tap][MB]`,
/// taps in the weights' order (input channel, row, column), channels past `m` zero.
#[derive(Debug)]
pub struct StemWeights {
    m: usize,
    /// Input channels, window rows and columns.
    c: usize,
    kh: usize,
    kw: usize,
    packed: Vec<f32>,
}

impl StemWeights {
    /// The packed weights (`wv`: `[m][c][kh][kw]`) where the stem kernel takes the convolution:
    /// one group, a window of 3x3 or more, no residual to add, AVX-512 (1-D windows, such as an
    /// STFT's frames, were not measured); 1..=4 input channels, or a few more when the output
    /// rows (`out_width`, if known) are wide: YOLO's 3x3 convs of stride 2 (`stride`, along the
    /// rows) over 16 to 64 channels and of stride 1 over 16, where the GEMM's packing and
    /// Winograd's transforms cost more than the products.
    pub fn new(
        wv: &[f32],
        [m, c, kh, kw]: [usize; 4],
        group: usize,
        residual: bool,
        stride: usize,
        out_width: Option<usize>,
    ) -> Option<StemWeights> {
        let taps = c * kh * kw;
        // Measured per layer against the GEMM (stride 2) and Winograd (stride 1): Winograd's
        // transforms cost more than its saved products below 32 channels.
        let channels = if stride == 2 { MAX_WIDE_CHANNELS } else { MAX_WIDE_CHANNELS_STRIDE_1 };
        let wide = c <= channels && stride <= 2 && out_width.is_some_and(|w| w >= MIN_WIDE_WIDTH);
        if !(isa() == Isa::Avx512 && group == 1 && ((1..=4).contains(&c) || wide) && kh >= 3 && kw >= 3)
            || kh * kw > MAX_WINDOW
            || residual
            || wv.len() != m * taps
        {
            return None;
        }
        let tiles = m.div_ceil(MB);
        let mut packed = vec![0f32; tiles * taps * MB];
        for (ch, filter) in wv.chunks_exact(taps).enumerate() {
            let (tile, lane) = (ch / MB, ch % MB);
            for (t, &v) in filter.iter().enumerate() {
                packed[(tile * taps + t) * MB + lane] = v;
            }
        }
        Some(StemWeights { m, c, kh, kw, packed })
    }

    /// `y = act(conv(x) + bias)` for `batch` images `x` (`[batch][c][h.input][w.input]`) into
    /// `y` (`[batch][m][h.output][w.output]`).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        ctx: &ExecCtx,
        x: &[f32],
        batch: usize,
        h: Axis,
        w: Axis,
        bias: Option<&[f32]>,
        act: Activation,
        y: &mut [f32],
    ) {
        let (c, taps) = (self.c, self.c * self.kh * self.kw);
        let (oh_n, ow_n) = (h.output, w.output);
        let plane = oh_n * ow_n;
        assert!(x.len() == batch * c * h.input * w.input && y.len() == batch * self.m * plane);
        if plane == 0 || batch == 0 {
            return;
        }
        let vectors = ow_n.div_ceil(16);
        // Staged columns per phase row: the last vector of the last tap stays inside.
        // (One more for `stage_band`'s pairs, whose second halves start one further.)
        let qw = (self.kw - 1) * w.dilation / w.stride + 16 * vectors + 1;
        let row_len = w.stride * qw;
        // Output rows per task: their padded input rows are staged together (at most 16 rows,
        // about 256 KiB; the rows between two bands are staged twice).
        let band = (BAND_FLOATS / (c * row_len * h.stride).max(1)).clamp(1, 16);
        let rows = (band - 1) * h.stride + (self.kh - 1) * h.dilation + 1;
        // Where each tap of the window reads in its channel's staged rows (a channel's rows are
        // `rows * row_len` floats).
        let window = self.kh * self.kw;
        let mut tap_at = [0usize; MAX_WINDOW];
        for (t, at) in tap_at.iter_mut().enumerate().take(window) {
            let (r, col) = (t / self.kw, t % self.kw);
            let shift = col * w.dilation;
            *at = (r * h.dilation * w.stride + shift % w.stride) * qw + shift / w.stride;
        }
        let taps_at = Taps { at: &tap_at[..window], channels: c, channel_stride: rows * row_len };
        let bias = bias.filter(|b| b.len() == self.m);
        let tiles = self.m.div_ceil(MB);
        let (in_plane, out) = (h.input * w.input, SharedMut(y.as_mut_ptr()));
        let bands = oh_n.div_ceil(band);
        ctx.pool.parallel_for_work(batch * bands, band * self.m * ow_n * taps, &|task| {
            let (n, oh0) = (task / bands, task % bands * band);
            let image = &x[n * c * in_plane..(n + 1) * c * in_plane];
            STAGE.with_borrow_mut(|stage| {
                // Grows only: steady-state runs do not allocate.
                let stage = &mut stage.at_least(c * rows * row_len)[..c * rows * row_len];
                stage.fill(0.0);
                stage_band(image, c, &h, &w, oh0 * h.stride, rows, qw, stage);
                for oh in oh0..(oh0 + band).min(oh_n) {
                    let row_stage = &stage[(oh - oh0) * h.stride * row_len..];
                    for tile in 0..tiles {
                        let channels = MB.min(self.m - tile * MB);
                        let mut lane_bias = [0f32; MB];
                        if let Some(b) = bias {
                            lane_bias[..channels].copy_from_slice(&b[tile * MB..tile * MB + channels]);
                        }
                        let weights = &self.packed[tile * taps * MB..(tile + 1) * taps * MB];
                        let first = (n * self.m + tile * MB) * plane + oh * ow_n;
                        let o = out;
                        // SAFETY: the staged rows past this output row's start hold every tap's
                        // reads (qw and rows were sized for the last vector of the last tap of
                        // the band's last row); the tile writes `channels` rows of ow_n outputs
                        // at `first + ch * plane`, this task's output row in y, which outlives
                        // the call; AVX-512 was checked at prepare time (isa() does not change).
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            tile_row(
                                row_stage,
                                &taps_at,
                                weights,
                                &lane_bias,
                                act,
                                o.0.add(first),
                                plane,
                                channels,
                                ow_n,
                            )
                        };
                        #[cfg(not(target_arch = "x86_64"))]
                        unreachable!("stem weights are made for AVX-512 only ({row_stage:p}, {tap_at:?}, {weights:p})");
                        #[cfg(target_arch = "x86_64")]
                        if in_registers(act) {
                            continue;
                        }
                        for ch in 0..channels {
                            // SAFETY: as above, this task's row of channel `tile * MB + ch`.
                            act.apply(unsafe { std::slice::from_raw_parts_mut(o.0.add(first + ch * plane), ow_n) });
                        }
                    }
                }
            });
        });
    }
}

/// The taps of one output pixel: each window tap's offset in a channel's staged rows, for
/// `channels` channels `channel_stride` floats apart.
#[derive(Clone, Copy, Debug)]
struct Taps<'a> {
    at: &'a [usize],
    channels: usize,
    channel_stride: usize,
}

/// Floats of a band's staged input (see [`StemWeights::run`]).
const BAND_FLOATS: usize = 64 * 1024;

thread_local! {
    /// This thread's staged band, kept between runs.
    static STAGE: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Copies padded rows `r0..r0 + rows` of image `x` (`[c][h.input][w.input]`) into the zeroed
/// `stage`, laid out `[c][rows][w.stride phases][qw]`: padded column `p` of a row at phase
/// `p % stride`, position `p / stride`.
#[allow(clippy::too_many_arguments)]
fn stage_band(x: &[f32], c: usize, h: &Axis, w: &Axis, r0: usize, rows: usize, qw: usize, stage: &mut [f32]) {
    let row_len = w.stride * qw;
    let inside = h.pad_begin.max(r0)..(h.pad_begin + h.input).min(r0 + rows);
    for ci in 0..c {
        for r in inside.clone() {
            let src = &x[(ci * h.input + r - h.pad_begin) * w.input..][..w.input];
            let dst = &mut stage[(ci * rows + r - r0) * row_len..][..row_len];
            if w.stride == 2 {
                // Pairs of input columns: the first of each to one phase, the second to the
                // other (a loop the compiler vectorises).
                let (lo, hi) = dst.split_at_mut(qw);
                let (first, second) = if w.pad_begin.is_multiple_of(2) { (lo, hi) } else { (hi, lo) };
                let first = &mut first[w.pad_begin / 2..];
                let second = &mut second[w.pad_begin.div_ceil(2)..];
                let pairs = src.chunks_exact(2);
                if let (Some(&last), Some(d)) = (pairs.remainder().first(), first.get_mut(src.len() / 2)) {
                    *d = last;
                }
                let done = split_pairs(src, first, second);
                for ((a, b), p) in first.iter_mut().zip(second.iter_mut()).zip(pairs).skip(done) {
                    (*a, *b) = (p[0], p[1]);
                }
                continue;
            }
            for phase in 0..w.stride {
                // The first input column landing in this phase, and where it lands.
                let first = (phase + w.stride - w.pad_begin % w.stride) % w.stride;
                let at = (first + w.pad_begin) / w.stride;
                let lane = &mut dst[phase * qw..(phase + 1) * qw];
                let cols = src.iter().skip(first).step_by(w.stride);
                lane.iter_mut().skip(at).zip(cols).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// Splits the first pairs of `src` into `first` (their first halves) and `second`, 16 pairs at
/// a time in AVX-512 registers (the compiler's loop moved one float at a time, a third of a wide
/// convolution's time); returns how many pairs it split, the rest left to the caller.
fn split_pairs(src: &[f32], first: &mut [f32], second: &mut [f32]) -> usize {
    let blocks = (src.len() / 32).min(first.len() / 16).min(second.len() / 16);
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        unsafe fn split(src: &[f32], first: &mut [f32], second: &mut [f32], blocks: usize) {
            let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
            for b in 0..blocks {
                // SAFETY: the caller's block count keeps 32 floats of src and 16 of each half
                // inside their slices.
                unsafe {
                    let lo = _mm512_loadu_ps(src.as_ptr().add(32 * b));
                    let hi = _mm512_loadu_ps(src.as_ptr().add(32 * b + 16));
                    _mm512_storeu_ps(first.as_mut_ptr().add(16 * b), _mm512_permutex2var_ps(lo, evens, hi));
                    _mm512_storeu_ps(second.as_mut_ptr().add(16 * b), _mm512_permutex2var_ps(lo, odds, hi));
                }
            }
        }
        // SAFETY: AVX-512 is present (isa() names only what this CPU has); `blocks` fits every
        // slice.
        unsafe { split(src, first, second, blocks) };
        return 16 * blocks;
    }
    0
}

#[cfg(target_arch = "x86_64")]
/// One output row of one tile: vectors of 16 pixels in groups of up to 3 (7 vectors as
/// 3 + 2 + 2, so no group is left with one).
///
/// # Safety
/// Needs AVX-512F; `stage` holds `ci * channel_stride + at[t] + 16 * vectors(ow_n)` floats for
/// every channel `ci` and window tap `t`;
/// `out` is valid for `channels` rows of `ow_n` floats at stride `plane`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile_row(
    stage: &[f32],
    tap_at: &Taps,
    weights: &[f32],
    bias: &[f32; MB],
    act: Activation,
    out: *mut f32,
    plane: usize,
    channels: usize,
    ow_n: usize,
) {
    let vectors = ow_n.div_ceil(16);
    let groups = vectors.div_ceil(3);
    let mut v0 = 0;
    for g in 0..groups {
        let width = vectors / groups + usize::from(g < vectors % groups);
        let t = Tile { stage, tap_at, weights, bias, act, out, plane, channels, ow_n, v0 };
        // SAFETY: the caller's guarantees, for vectors v0..v0 + width of the row.
        unsafe {
            match width {
                3 => t.run::<3>(),
                2 => t.run::<2>(),
                _ => t.run::<1>(),
            }
        }
        v0 += width;
    }
}

/// The operands of one tile (see [`tile_row`]), from pixel vector `v0`.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    stage: &'a [f32],
    tap_at: &'a Taps<'a>,
    weights: &'a [f32],
    bias: &'a [f32; MB],
    /// Applied as the tile is stored where [`in_registers`]; else by the caller.
    act: Activation,
    out: *mut f32,
    plane: usize,
    channels: usize,
    ow_n: usize,
    v0: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// # Safety
    /// As [`tile_row`], for vectors `v0..v0 + PB`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const PB: usize>(&self) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); PB]; MB];
        for (a, &b) in acc.iter_mut().zip(self.bias) {
            *a = [_mm512_set1_ps(b); PB];
        }
        // SAFETY: the caller's vectors start inside the stage.
        let base = unsafe { self.stage.as_ptr().add(16 * self.v0) };
        let Taps { at: window, channels, channel_stride } = *self.tap_at;
        debug_assert!(window
            .iter()
            .all(|&a| (channels - 1) * channel_stride + a + 16 * (self.v0 + PB) <= self.stage.len()));
        let mut w = self.weights.chunks_exact(MB);
        for ci in 0..channels {
            for (&at, w) in window.iter().zip(&mut w) {
                let mut xs = [_mm512_setzero_ps(); PB];
                for (p, xv) in xs.iter_mut().enumerate() {
                    // SAFETY: within the stage, by the caller's guarantee.
                    *xv = unsafe { _mm512_loadu_ps(base.add(ci * channel_stride + at + 16 * p)) };
                }
                for (a, &wv) in acc.iter_mut().zip(w) {
                    let wv = _mm512_set1_ps(wv);
                    for (s, &xv) in a.iter_mut().zip(&xs) {
                        *s = _mm512_fmadd_ps(wv, xv, *s);
                    }
                }
            }
        }
        for (ch, a) in acc.iter().enumerate().take(self.channels) {
            for (p, &s) in a.iter().enumerate() {
                let j = 16 * (self.v0 + p);
                let left = self.ow_n - j;
                let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                // SAFETY: AVX-512F (this function's feature); the mask keeps the stores inside the
                // row's ow_n outputs.
                unsafe { _mm512_mask_storeu_ps(self.out.add(ch * self.plane + j), mask, avx512::apply(self.act, s)) };
            }
        }
    }
}
