//! Direct convolution with the output channels along the vector lanes: ResNet's convolutions on
//! small planes (3x3 at 28x28, 14x14 and 7x7), where the GEMM and Winograd lose.
//!
//! The GEMM puts the pixels along its 32-wide side and packs the image into panels per run: at
//! 196 or 49 pixels the packing (a gather per element of a 9x larger column matrix) costs about
//! as much as the products, and the last panel is mostly padding. Here nothing is packed: the
//! input is copied once into a zero-bordered plane, a register tile of up to `MAX_PIXELS`
//! consecutive output pixels of one row (or of two rows of 7, a 7x7 plane's) by 32 output
//! channels (two vectors) accumulates over every input channel and tap, each input value
//! broadcast from the plane and each weight vector read once per tap from weights packed at
//! prepare time per block of 32 channels. A block's weights (K x 32 floats) stay in L2 while the
//! rows of the output go by. Bias and activation are applied to the tile in registers, and it is
//! written to the NCHW output through a 16x16 transpose in registers (with a skip connection, or
//! an activation not computed in registers, the epilogue applies them to the output rows after).
//!
//! On AVX2 (16 ymm registers) a tile is 6 output pixels by 16 channels, the GEMM's 6x16 kernel
//! with pixels for rows: any 6 consecutive pixels of the plane, across rows too (a 7x7 plane's 49
//! pixels are 8 tiles and one pixel), each read at its own offset in the padded planes. Its sums
//! are written to the output a float at a time (a tile is K x 96 multiply-adds, its 96 writes
//! nothing beside them) and the epilogue runs over a band's output rows after.

// x86 only: on other targets the module compiles, but nothing runs its kernels (`available`
// says no there), so their paths are unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables, unused_macros, unreachable_code))]

#[cfg(target_arch = "x86_64")]
use super::activation::avx512;
use super::activation::{in_registers, Activation};
use super::chunks::ChunkBuf;
#[cfg(target_arch = "x86_64")]
use super::depthwise_blocked::transpose16;
use super::gemm::{Bias, Epilogue, Skip};
use super::isa::{isa, Isa};
use super::pool::{SharedMut, ThreadPool};
use crate::ops::window::Axis;
use std::cell::RefCell;
use std::ops::Range;

/// Output channels per block: two 16-lane vectors.
const BLOCK: usize = 32;
/// Most output pixels per register tile: 2 x 14 accumulators, two weight vectors and a broadcast.
const MAX_PIXELS: usize = 14;
/// Output channels per block on AVX2: two 8-lane vectors.
const AVX2_BLOCK: usize = 16;
/// Output pixels per AVX2 register tile: 6 x 2 accumulators, two weight vectors and a broadcast
/// in the 16 ymm registers.
const AVX2_PIXELS: usize = 6;

/// Whether the kernel runs on this machine.
pub fn available() -> bool {
    matches!(isa(), Isa::Avx512 | Isa::Avx2)
}

/// The output channels of one block on this machine.
fn block_width() -> usize {
    if isa() == Isa::Avx512 {
        BLOCK
    } else {
        AVX2_BLOCK
    }
}

/// Whether a convolution of `c` input channels and a `kh x kw` window over an output `plane` of
/// (pixels per image, row width), where known, runs faster here than as a GEMM or by Winograd.
/// Measured on ResNet-50 on Sapphire Rapids, whole model, 1 and 2 threads: its 3x3 convs at 14x14
/// and 7x7 went from 2.6 ms (Winograd, whose 4x larger weights stream from memory) and 3.5 ms
/// (GEMM) to 1.6 and 2.3 ms. At 28x28 too, where Winograd streams 2.4 MB of weights a layer
/// against 0.6 MB here and slowed down more than this kernel when another process shared the L3
/// (ResNet-50's 128-channel layers: 1.6-1.9 against 1.4-1.5 ms; the whole model 2% faster at 1
/// and 2 threads, YOLOv8n 1-1.5%); at 40x40 and 56x56, Winograd's fewer multiplies win (YOLOv8n
/// 8% slower, all 3x3 layers up to 40x40 direct). The GEMM keeps 1x1 convs (few products per
/// output: the transposed writes cost too much) and large planes (its packing is amortised over
/// long panels); rows narrower than 7 leave too few accumulators busy.
///
/// On AVX2 (Zen 3, whole models at 1 thread) Winograd keeps the stride-1 planes from 15x15 on (at
/// 28x28 it took 1.5 ms where this kernel's multiplies alone would take 2.7; at 14x14, whose 256
/// channels' transformed weights stream 9.4 MB a layer, 3.3-4.8 ms against 2.9-3.2 here), so the
/// direct kernel takes the planes up to 14x14, and the strided convs of any size and depth,
/// stems included, whose implicit im2col gathers a 9x to 49x larger matrix: ResNet-50's 7x7 stem
/// 5.2 -> 3.3 ms, MobileNetV2's 3x3 stem 1.20 -> 0.62, YOLOv8n 124-128 -> 107-109 ms. 2-D
/// windows only: 1-D convs (audio front ends, frames of hundreds of taps) were not measured.
pub fn wins(c: usize, (kh, kw): (usize, usize), plane: Option<(usize, usize)>, strided: bool) -> bool {
    let taps = kh.saturating_mul(kw);
    let deep = taps > 1 && c.saturating_mul(taps) >= 128;
    match (isa(), plane) {
        (Isa::Avx512, Some((pixels, width))) => deep && pixels <= 28 * 28 && width >= 7,
        (Isa::Avx512, None) => false,
        (_, plane) => {
            let small = deep && plane.is_some_and(|(pixels, _)| pixels <= 14 * 14);
            available() && kh > 1 && kw > 1 && (strided || small)
        }
    }
}

/// The weights of an M x C x KH x KW convolution (one group), per block of output channels (32,
/// or 16 on AVX2): for each input channel and tap, the block's weights (zeros past M).
#[derive(Debug)]
pub struct DirectWeights {
    block: usize,
    m: usize,
    c: usize,
    kh: usize,
    kw: usize,
    packed: ChunkBuf,
}

impl DirectWeights {
    /// Packs `w` (row-major M x C x KH x KW).
    pub fn new(w: &[f32], [m, c, kh, kw]: [usize; 4]) -> DirectWeights {
        let k = c * kh * kw;
        assert_eq!(w.len(), m * k, "direct conv weights: M x C x KH x KW");
        let block = block_width();
        let mut packed = ChunkBuf::zeroed(m.div_ceil(block) * k * block);
        // A transpose per block, in tiles of 16 taps: row by row over all of k wrote each packed
        // cache line once per row of the block, 32 times in all, from L2 (ResNet-50's 3x3
        // layers pack 2-9 MB each at load).
        const TAPS: usize = 16;
        for (b, rows) in w.chunks(block * k.max(1)).enumerate() {
            let out = &mut packed[b * k * block..(b + 1) * k * block];
            for k0 in (0..k).step_by(TAPS) {
                let k1 = (k0 + TAPS).min(k);
                for (lane, wr) in rows.chunks_exact(k).enumerate() {
                    for (kk, &v) in (k0..k1).zip(&wr[k0..k1]) {
                        out[kk * block + lane] = v;
                    }
                }
            }
        }
        DirectWeights { block, m, c, kh, kw, packed }
    }
}

impl DirectWeights {
    /// Whether the zero-bordered copy of an input of this geometry stays near the input's own
    /// size: huge pads with a huge stride (a hostile model) would make it unbounded.
    pub fn padding_fits(&self, h: Axis, w: Axis) -> bool {
        let side = |a: Axis| {
            let last = a.output.checked_sub(1)?.checked_mul(a.stride)?;
            last.checked_add(a.kernel.checked_sub(1)?.checked_mul(a.dilation)?)?.checked_add(1)
        };
        let padded = side(h).zip(side(w)).and_then(|(ph, pw)| ph.checked_mul(pw)?.checked_mul(self.c));
        let input = self.c.saturating_mul(h.input).saturating_mul(w.input);
        padded.is_some_and(|p| p <= input.saturating_mul(4).saturating_add(1 << 16))
    }
}

/// One image's run: `x` is C planes of `h.input x w.input`, `y` (and `residual`) M planes of
/// `h.output x w.output`.
pub struct Direct<'a> {
    pub x: &'a [f32],
    pub h: Axis,
    pub w: Axis,
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

impl Direct<'_> {
    /// Bias, skip connection and activation as the GEMM's epilogue applies them to output rows.
    fn epilogue(&self) -> Epilogue<'_> {
        Epilogue {
            bias: self.bias.map_or(Bias::None, Bias::PerRow),
            skip: self.residual.map_or(Skip::None, Skip::Add),
            act: self.act,
        }
    }
}

thread_local! {
    /// The zero-bordered input of this thread, kept between runs (no allocation in steady state).
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl DirectWeights {
    /// Writes one image's output into `y`.
    pub fn run(&self, pool: &ThreadPool, d: &Direct, y: &mut [f32]) {
        let (h, w) = (d.h, d.w);
        let (oh, ow) = (h.output, w.output);
        // The rows and columns the taps read, padding included.
        let ph = (oh - 1) * h.stride + (h.kernel - 1) * h.dilation + 1;
        let pw = (ow - 1) * w.stride + (w.kernel - 1) * w.dilation + 1;
        assert_eq!(d.x.len(), self.c * h.input * w.input, "direct conv input: C planes");
        assert_eq!(y.len(), self.m * oh * ow, "direct conv output: M planes");
        PADDED.with(|cell| {
            let mut guard = cell.try_borrow_mut();
            let mut local = Vec::new();
            let xp = match guard.as_deref_mut() {
                Ok(v) => v,
                Err(_) => &mut local,
            };
            pad_planes(pool, d.x, self.c, h, w, ph, pw, xp);
            let xp = &xp[..];
            let blocks = self.m.div_ceil(self.block);
            let ys = SharedMut(y.as_mut_ptr());
            let k = self.c * self.kh * self.kw;
            // A task is a band of output rows of one channel block. With blocks enough for
            // every thread, a band is the whole plane: each thread then reads only its own
            // blocks' weights from memory (rows of one block on two threads read them twice).
            let band = if blocks >= 2 * pool.threads() { oh } else { 1 };
            let bands = oh.div_ceil(band);
            pool.parallel_for_work(blocks * bands, band * ow * self.block * k, &|t| {
                let (b, first) = (t / bands, (t % bands) * band);
                let end = (first + band).min(oh);
                if self.block == AVX2_BLOCK {
                    return self.band_avx2(d, xp, (ph, pw), b, first..end, ys);
                }
                // Rows of at most half a tile go two at a time (ResNet's 7x7 planes: a weight
                // vector loaded once per 14 pixels, not 7).
                let step = if 2 * ow <= MAX_PIXELS { 2 } else { 1 };
                for oy in (first..end).step_by(step) {
                    self.rows(d, xp, (ph, pw), b, oy..(oy + step).min(end), ys);
                }
            });
        });
    }

    /// Output rows `oys` of channel block `b`, from the padded planes `xp` (`ph x pw` each), into
    /// the output at `out`: one row, or two whose pixels fit one tile.
    fn rows(&self, d: &Direct, xp: &[f32], (ph, pw): (usize, usize), b: usize, oys: Range<usize>, out: SharedMut) {
        let (h, w) = (d.h, d.w);
        let (oh, ow) = (h.output, w.output);
        let k = self.c * self.kh * self.kw;
        let weights = &self.packed[b * k * BLOCK..(b + 1) * k * BLOCK];
        let rows = BLOCK.min(self.m - b * BLOCK);
        let geo = TileGeo { pw, plane: ph * pw, c: self.c, kh: self.kh, kw: self.kw, h, w };
        let epilogue = d.epilogue();
        let (oy, count) = (oys.start, oys.len());
        debug_assert!(count == 1 || (count == 2 && 2 * ow <= MAX_PIXELS), "one row, or two that fit a tile");
        // Without a skip connection, bias and activation are applied to the tile in registers,
        // channels along the lanes, before its transpose: a pass over the output rows after it
        // took 7% of a 128-channel 28x28 layer.
        let finished = epilogue.skip.added().is_none() && in_registers(d.act);
        let mut bias = [0f32; BLOCK];
        if let Some(all) = d.bias {
            bias[..rows].copy_from_slice(&all[b * BLOCK..b * BLOCK + rows]);
        }
        let mut tile = [0f32; MAX_PIXELS * BLOCK];
        let mut ox = 0;
        while ox < ow {
            let width = MAX_PIXELS.min(ow - ox);
            let origin = (oy * h.stride) * pw + ox * w.stride;
            // Two rows are whole rows: their pixels follow one another in the output.
            let (pix0, pixels) = (oy * ow + ox, width * count);
            // SAFETY: AVX-512 was checked when this kernel was chosen; the tile's taps lie inside
            // the padded planes (ph x pw cover every tap of every output).
            // The tile's pixels of its channels' output rows (this task's own) lie inside the
            // output.
            unsafe {
                tile_sums(width, count, &geo, &xp[origin..], weights, &mut tile);
                if finished {
                    finish_tile(&mut tile[..pixels * BLOCK], &bias, d.act);
                }
                write_tile(&tile, pixels, rows, out.0.add(b * BLOCK * oh * ow + pix0), oh * ow);
            }
            if !finished {
                // SAFETY: as above: the block's rows, this tile's columns.
                let c = unsafe { out.0.add(b * BLOCK * oh * ow + pix0) };
                epilogue.apply(c, oh * ow, b * BLOCK, rows, pix0, pixels);
            }
            ox += width;
        }
    }
}

impl DirectWeights {
    /// Output rows `oys` of channel block `b` on AVX2: their pixels in tiles of
    /// [`AVX2_PIXELS`], then the epilogue over the rows.
    fn band_avx2(&self, d: &Direct, xp: &[f32], (ph, pw): (usize, usize), b: usize, oys: Range<usize>, out: SharedMut) {
        let (h, w) = (d.h, d.w);
        let plane = h.output * w.output;
        let k = self.c * self.kh * self.kw;
        let weights = &self.packed[b * k * AVX2_BLOCK..(b + 1) * k * AVX2_BLOCK];
        let rows = AVX2_BLOCK.min(self.m - b * AVX2_BLOCK);
        let geo = TileGeo { pw, plane: ph * pw, c: self.c, kh: self.kh, kw: self.kw, h, w };
        let pixels = oys.start * w.output..oys.end * w.output;
        // SAFETY: the block's output planes are inside the output (the caller's task owns them).
        let first = unsafe { out.0.add(b * AVX2_BLOCK * plane) };
        let mut tile = [0f32; AVX2_PIXELS * AVX2_BLOCK];
        // The next pixel's row and column, stepped along (no division per pixel: a stem's tiles
        // are only 147 taps deep).
        let (mut oy, mut ox) = (oys.start, 0);
        for p0 in pixels.clone().step_by(AVX2_PIXELS) {
            let count = AVX2_PIXELS.min(pixels.end - p0);
            let mut offsets = [0; AVX2_PIXELS];
            for o in offsets.iter_mut().take(count) {
                *o = oy * h.stride * pw + ox * w.stride;
                ox += 1;
                if ox == w.output {
                    (oy, ox) = (oy + 1, 0);
                }
            }
            // A last, partial tile computes its last pixel again in the lanes past it (one
            // kernel instance for every tile: instances per width cost the shared library
            // 7 KB, past its 5 MB budget); those sums are not written.
            let last = offsets[count - 1];
            offsets[count..].fill(last);
            // SAFETY: AVX2 and FMA were checked when this kernel was chosen; the offsets are
            // pixels of the output, whose taps lie inside the padded planes.
            unsafe { tile_sums_avx2(&geo, xp, &offsets, weights, &mut tile) };
            for j in 0..rows {
                for i in 0..count {
                    // SAFETY: channel j of the block, pixel p0 + i of the plane: this task's.
                    unsafe { *first.add(j * plane + p0 + i) = tile[i * AVX2_BLOCK + j] };
                }
            }
        }
        // SAFETY: as above: the block's channels, the band's pixels.
        let c = unsafe { first.add(pixels.start) };
        d.epilogue().apply(c, plane, b * AVX2_BLOCK, rows, pixels.start, pixels.len());
    }
}

/// The sums of the output pixels at `offsets` (from the first tap of each in the padded planes
/// `x`) by 16 channels, into `tile` (pixel-major).
///
/// # Safety
/// Needs AVX2 and FMA; every tap of those pixels lies inside `x`.
unsafe fn tile_sums_avx2(
    g: &TileGeo,
    x: &[f32],
    offsets: &[usize; AVX2_PIXELS],
    weights: &[f32],
    tile: &mut [f32; AVX2_PIXELS * AVX2_BLOCK],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's.
    unsafe {
        x86::tile_avx2(g, x, offsets, weights, tile)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("x86 only, {}", g.c + x.len() + offsets.len() + weights.len() + tile.len());
}

/// Copies C planes of `h.input x w.input` into `ph x pw` planes with the padding as zeros,
/// planes spread over the pool. Only the padding is zeroed (the buffer is reused between
/// runs): zeroing it all and then copying cost 8% of ResNet-50's stride-2 layer, and made on
/// one thread it held the other back at two.
#[allow(clippy::too_many_arguments)]
fn pad_planes(pool: &ThreadPool, x: &[f32], c: usize, h: Axis, w: Axis, ph: usize, pw: usize, out: &mut Vec<f32>) {
    out.resize(c * ph * pw, 0.0);
    let rows = h.input.min(ph.saturating_sub(h.pad_begin));
    let cols = w.input.min(pw.saturating_sub(w.pad_begin));
    let (top, left) = (h.pad_begin.min(ph), w.pad_begin.min(pw));
    let planes = SharedMut(out.as_mut_ptr());
    pool.parallel_for_work(c, ph * pw, &|ci| {
        let p = planes;
        // SAFETY: task `ci` alone writes plane ci, inside `out` (sized above).
        let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(ci * ph * pw), ph * pw) };
        let src = &x[ci * h.input * w.input..(ci + 1) * h.input * w.input];
        dst[..top * pw].fill(0.0);
        for (r, row) in dst[top * pw..].chunks_exact_mut(pw).enumerate() {
            if r < rows {
                row[..left].fill(0.0);
                row[left..left + cols].copy_from_slice(&src[r * w.input..r * w.input + cols]);
                row[left + cols..].fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
    });
}

/// What the tile kernel needs of the geometry.
struct TileGeo {
    pw: usize,
    plane: usize,
    c: usize,
    kh: usize,
    kw: usize,
    h: Axis,
    w: Axis,
}

/// Adds the bias (one per channel of the block) to a tile's sums and applies `act`, one of those
/// computed [`in_registers`].
///
/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn finish_tile(tile: &mut [f32], bias: &[f32; BLOCK], act: Activation) {
    use std::arch::x86_64::*;
    let bias = [_mm512_loadu_ps(bias.as_ptr()), _mm512_loadu_ps(bias.as_ptr().add(16))];
    for (i, v) in tile.chunks_exact_mut(16).enumerate() {
        let sum = _mm512_add_ps(_mm512_loadu_ps(v.as_ptr()), bias[i % 2]);
        _mm512_storeu_ps(v.as_mut_ptr(), avx512::apply(act, sum));
    }
}

/// Writes a tile's `pixels` pixels (at most 16) of its first `rows` channels to output rows
/// `stride` floats apart from `out`, 16 channels at a time through a transpose in registers.
///
/// # Safety
/// Needs AVX-512F; `out` holds `pixels` floats at each of the `rows` row starts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn write_tile(tile: &[f32; MAX_PIXELS * BLOCK], pixels: usize, rows: usize, out: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    const { assert!(MAX_PIXELS <= 16, "a tile's pixels fit one vector") };
    let mask = ((1u32 << pixels) - 1) as __mmask16;
    for half in 0..BLOCK / 16 {
        let channels = rows.saturating_sub(16 * half).min(16);
        let mut r = [_mm512_setzero_ps(); 16];
        for (p, v) in r.iter_mut().enumerate().take(pixels) {
            *v = _mm512_loadu_ps(tile.as_ptr().add(p * BLOCK + 16 * half));
        }
        transpose16(&mut r);
        for (j, v) in r.iter().enumerate().take(channels) {
            _mm512_mask_storeu_ps(out.add((16 * half + j) * stride), mask, *v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn write_tile(_: &[f32; MAX_PIXELS * BLOCK], _: usize, _: usize, _: *mut f32, _: usize) {
    unreachable!("AVX-512 only")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn finish_tile(_: &mut [f32], _: &[f32; BLOCK], _: Activation) {
    unreachable!("AVX-512 only")
}

/// The sums of `rows` output rows of `pixels` consecutive outputs each, by 32 channels, into
/// `tile` (pixel-major, row after row).
///
/// # Safety
/// Needs AVX-512F; `x` starts at the tile's first tap and holds every tap of its pixels.
unsafe fn tile_sums(
    pixels: usize,
    rows: usize,
    g: &TileGeo,
    x: &[f32],
    weights: &[f32],
    tile: &mut [f32; MAX_PIXELS * BLOCK],
) {
    // Strides 1 and 2 are constants in the instances of the tiles most rows are made of (14
    // pixels, and 7 for 7x7 planes, alone or in pairs), so that the broadcasts address their
    // pixels with fixed offsets rather than a chain of additions, which took ports from the
    // multiply-adds. The other widths read the stride at run time (0): instances for every
    // width and stride grew the shared library by 3% (past its 5 MB budget).
    macro_rules! dispatch {
        ($($p:literal)*; $($p2:literal)*) => {
            match (pixels, rows, g.w.stride) {
                (14, 1, 1) => unsafe { x86::tile::<14, 1, 1>(g, x, weights, tile) },
                (14, 1, 2) => unsafe { x86::tile::<14, 1, 2>(g, x, weights, tile) },
                (7, 1, 1) => unsafe { x86::tile::<7, 1, 1>(g, x, weights, tile) },
                (7, 1, 2) => unsafe { x86::tile::<7, 1, 2>(g, x, weights, tile) },
                (7, 2, 1) => unsafe { x86::tile::<7, 2, 1>(g, x, weights, tile) },
                (7, 2, 2) => unsafe { x86::tile::<7, 2, 2>(g, x, weights, tile) },
                $(($p, 1, _) => unsafe { x86::tile::<$p, 1, 0>(g, x, weights, tile) },)*
                $(($p2, 2, _) => unsafe { x86::tile::<$p2, 2, 0>(g, x, weights, tile) },)*
                _ => unreachable!("at most {MAX_PIXELS} pixels in one row or two rows of {}", MAX_PIXELS / 2),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14; 1 2 3 4 5 6 7);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 only, {pixels}x{rows} pixels, {}", g.c + x.len() + weights.len() + tile.len());
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{TileGeo, AVX2_BLOCK, AVX2_PIXELS, BLOCK, MAX_PIXELS};
    use std::arch::x86_64::*;

    /// How far ahead of use the weights are prefetched, in floats (16 taps).
    const PREFETCH: usize = 16 * BLOCK;

    /// # Safety
    /// See [`super::tile_sums`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile<const P: usize, const R: usize, const SX: usize>(
        g: &TileGeo,
        x: &[f32],
        weights: &[f32],
        tile: &mut [f32; MAX_PIXELS * BLOCK],
    ) {
        // R (1 or 2) output rows of P pixels; the second reads `row_step` floats further on.
        let row_step = g.h.stride * g.pw;
        let needed = (g.c - 1) * g.plane
            + (R - 1) * row_step
            + (g.kh - 1) * g.h.dilation * g.pw
            + (P - 1) * g.w.stride
            + (g.kw - 1) * g.w.dilation
            + 1;
        assert!(x.len() >= needed && weights.len() >= g.c * g.kh * g.kw * BLOCK, "tile outside its operands");
        unsafe {
            // The first row's accumulators, and the second's (unused, so optimised away, when
            // R is 1). Two flat arrays, not one of rows: the compiler kept that in memory.
            let mut acc = [[_mm512_setzero_ps(); 2]; P];
            let mut acc2 = [[_mm512_setzero_ps(); 2]; P];
            let mut wp = weights.as_ptr();
            let sx = if SX > 0 { SX } else { g.w.stride };
            let (dx, dy) = (g.w.dilation, g.h.dilation * g.pw);
            // The span of a tap row's inputs, in cache lines (a line more for its alignment).
            let span_lines = ((P - 1) * sx + (g.kw - 1) * dx + 1).div_ceil(16) + 1;
            let reads = (R - 1) * g.h.stride + (g.kh - 1) * g.h.dilation + 1;
            for ci in 0..g.c {
                let plane = x.as_ptr().add(ci * g.plane);
                // The next channel's rows are planes apart, where the hardware prefetcher does
                // not follow: ask for them while this channel's taps run.
                let next = plane.wrapping_add(g.plane);
                for row in 0..reads {
                    for l in 0..span_lines {
                        _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(row * g.pw + 16 * l).cast());
                    }
                }
                for ky in 0..g.kh {
                    let row = plane.add(ky * dy);
                    for kx in 0..g.kw {
                        let xs = row.add(kx * dx);
                        // The weights come from memory on a block's first row: ask for them
                        // ahead of use, two cache lines a tap.
                        _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH).cast());
                        _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH + 16).cast());
                        let w0 = _mm512_loadu_ps(wp);
                        let w1 = _mm512_loadu_ps(wp.add(16));
                        for (p, a) in acc.iter_mut().enumerate() {
                            let v = _mm512_set1_ps(*xs.add(p * sx));
                            a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                            a[1] = _mm512_fmadd_ps(v, w1, a[1]);
                        }
                        if R == 2 {
                            let xr = xs.add(row_step);
                            for (p, a) in acc2.iter_mut().enumerate() {
                                let v = _mm512_set1_ps(*xr.add(p * sx));
                                a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                                a[1] = _mm512_fmadd_ps(v, w1, a[1]);
                            }
                        }
                        wp = wp.add(BLOCK);
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(tile.as_mut_ptr().add(p * BLOCK), a[0]);
                _mm512_storeu_ps(tile.as_mut_ptr().add(p * BLOCK + 16), a[1]);
            }
            if R == 2 {
                for (p, a) in acc2.iter().enumerate() {
                    _mm512_storeu_ps(tile.as_mut_ptr().add((P + p) * BLOCK), a[0]);
                    _mm512_storeu_ps(tile.as_mut_ptr().add((P + p) * BLOCK + 16), a[1]);
                }
            }
        }
    }

    /// 6 pixels (at `offsets` in the padded planes, in the plane's order) by 16 channels.
    ///
    /// # Safety
    /// See [`super::tile_sums_avx2`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(
        g: &TileGeo,
        x: &[f32],
        offsets: &[usize; AVX2_PIXELS],
        weights: &[f32],
        tile: &mut [f32; AVX2_PIXELS * AVX2_BLOCK],
    ) {
        const P: usize = AVX2_PIXELS;
        // Pixels in the plane's order, so the last reads furthest.
        let last = (g.c - 1) * g.plane + offsets[P - 1] + (g.kh - 1) * g.h.dilation * g.pw + (g.kw - 1) * g.w.dilation;
        assert!(x.len() > last && weights.len() >= g.c * g.kh * g.kw * AVX2_BLOCK, "tile outside its operands");
        unsafe {
            let off = *offsets;
            let mut acc = [[_mm256_setzero_ps(); 2]; P];
            let mut wp = weights.as_ptr();
            let (dx, dy) = (g.w.dilation, g.h.dilation * g.pw);
            for ci in 0..g.c {
                let plane = x.as_ptr().add(ci * g.plane);
                for ky in 0..g.kh {
                    let row = plane.add(ky * dy);
                    for kx in 0..g.kw {
                        let xs = row.add(kx * dx);
                        // A block's weights come from memory on its first tile: a line a tap,
                        // 16 taps ahead.
                        _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(16 * AVX2_BLOCK).cast());
                        let w0 = _mm256_loadu_ps(wp);
                        let w1 = _mm256_loadu_ps(wp.add(8));
                        for (p, a) in acc.iter_mut().enumerate() {
                            let v = _mm256_broadcast_ss(&*xs.add(off[p]));
                            a[0] = _mm256_fmadd_ps(v, w0, a[0]);
                            a[1] = _mm256_fmadd_ps(v, w1, a[1]);
                        }
                        wp = wp.add(AVX2_BLOCK);
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(tile.as_mut_ptr().add(p * AVX2_BLOCK), a[0]);
                _mm256_storeu_ps(tile.as_mut_ptr().add(p * AVX2_BLOCK + 8), a[1]);
            }
        }
    }
}
