//! 3x3 stride-1 convolutions by Winograd's F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2015): each 4x4 block of outputs comes from a 6x6 block of
//! input, and in the transformed domain the 3x3 convolution is 36 independent channel products,
//! 36 multiplies per output block per (input, output) channel pair instead of 144.
//!
//! The weights are transformed once at prepare time into 36 packed C x M right operands. A run
//! cuts the output tiles of all images into blocks sized for the L2 cache, and the output
//! channels into chunks ([`Split`]); per (block, chunk), one task of the pool, the input tiles are
//! transformed straight into the GEMM's A-panel layout, the 36 products for the chunk's channels
//! run on the GEMM micro-kernels, and the output transform adds the bias and residual and applies
//! the activation as it writes the output. Tiles are the GEMM's rows (MR of them per panel), so
//! small planes (14x14, a handful of tiles) still fill the micro-kernel.

use super::activation::{Activation, ActivationExt};
use super::chunks::Scratch;
use super::gemm::{self, Epilogue, Lhs, Micro, PackedB, PanelsRef, Problem, Rhs};
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::{SharedMut, ThreadPool};
use crate::ops::window::Axis;
use std::cell::RefCell;

/// Outputs per tile side.
const TILE: usize = 4;
/// Inputs per tile side: TILE + 3 - 1.
const ALPHA: usize = 6;
/// Points of the transformed domain: ALPHA x ALPHA.
const POINTS: usize = ALPHA * ALPHA;
/// Tile lanes the input transform works on at once: at least the widest micro-kernel's MR.
const LANES: usize = 8;
/// Output channels the output transform works on at once (one AVX-512 register).
const CHANNELS: usize = 16;
/// Floats of one block's transformed input and products together: about half of Zen 4's 1 MiB
/// L2, so both stay there between the transforms and the products.
const BLOCK_FLOATS: usize = 128 * 1024;
/// Most tiles of one block.
const MAX_BLOCK_TILES: usize = 128;
/// What one block costs beyond its tiles, in tiles, roughly: streaming the transformed weights
/// through the cache again, and the task's hand-off.
const BLOCK_COST_TILES: usize = 4;

/// How a run is cut into tasks: blocks of `tiles` output tiles (whole micro-kernel panels) by
/// chunks of `channels` output channels (whole B panels). Every task transforms its block's input
/// (all input channels), runs the 36 products for its channels, and transforms their outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub tiles: usize,
    pub channels: usize,
}

/// Whether a convolution of `c` input and `m` output channels (3x3, stride 1, no dilation, one
/// group) over planes of `tiles` output tiles per image (if known) runs faster by Winograd than
/// as one implicit-im2col GEMM. Measured on Zen 4 (benches/RESULTS.md): few channels leave the
/// transforms dominating the products, and few tiles leave the micro-kernel's rows idle while
/// the transformed weights (4x the original) stream from memory. Planes of a size unknown at
/// prepare time (a model for images of any size: DBNet's detection head, 96 -> 24 channels at
/// 160x160 for a 640x640 image) are taken too: such models run on large images, where the GEMM
/// took 33 ms a layer at 1 thread on Zen 3 against onnxruntime's 12.
pub fn wins(c: usize, m: usize, tiles: Option<usize>) -> bool {
    c >= 16 && m >= 16 && tiles.is_none_or(|t| t >= 16)
}

/// The transformed weights of one convolution.
#[derive(Debug)]
pub struct Winograd {
    c: usize,
    m: usize,
    /// Per transform point, the C x M right operand of its product.
    u: Vec<PackedB>,
    micro: Micro,
}

/// G x for one column (or row) of 3 weights: the 1-D step of the weight transform `U = G g Gᵀ`
/// (G of F(4x4, 3x3)).
#[inline(always)]
fn filter_1d([a, b, c]: [f64; 3]) -> [f64; ALPHA] {
    // Products with the reciprocals, not divisions: a load transforms millions of filters, and
    // f64 divisions made that half of YOLOv8n's load time. The reciprocals' rounding (2^-53)
    // is far below the f32 result's.
    const SIXTH: f64 = 1.0 / 6.0;
    const TWELFTH: f64 = 1.0 / 12.0;
    const TWENTY_FOURTH: f64 = 1.0 / 24.0;
    let (sum, alt) = (a + c, b * TWELFTH);
    [
        a * 0.25,
        -(sum + b) * SIXTH,
        -(sum - b) * SIXTH,
        a * TWENTY_FOURTH + alt + c * SIXTH,
        a * TWENTY_FOURTH - alt + c * SIXTH,
        c,
    ]
}

/// `G g Gᵀ` of one 3x3 filter (row-major), point by point; in f64, so it adds no rounding.
fn transform_filter(g: &[f32]) -> [f32; POINTS] {
    let g = |i: usize| g[i] as f64;
    let cols: [[f64; ALPHA]; 3] = std::array::from_fn(|j| filter_1d([g(j), g(3 + j), g(6 + j)]));
    let mut u = [0f32; POINTS];
    for i in 0..ALPHA {
        let row = filter_1d([cols[0][i], cols[1][i], cols[2][i]]);
        for (j, v) in row.into_iter().enumerate() {
            u[i * ALPHA + j] = v as f32;
        }
    }
    u
}

thread_local! {
    /// One block's transformed input and products, kept per thread between runs so steady-state
    /// runs do not allocate.
    static SCRATCH: RefCell<(Scratch, Scratch)> = const { RefCell::new((Scratch::new(), Scratch::new())) };
}

/// What one run convolves: the input and output geometry and the epilogue.
pub struct Run<'a> {
    pub x: &'a [f32],
    pub batch: usize,
    pub h: Axis,
    pub w: Axis,
    pub bias: Option<&'a [f32]>,
    /// A tensor of the output's shape added before the activation.
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

impl Winograd {
    /// `w`: the weights, M x C x 3 x 3.
    pub fn new(w: &[f32], m: usize, c: usize, micro: &Micro) -> Winograd {
        assert!(micro.mr <= LANES, "a micro-kernel taller than the input transform's lanes");
        let mut u: Vec<PackedB> = (0..POINTS).map(|_| PackedB::zeroed(c, m, micro)).collect();
        // Per panel (NR output channels), a few input channels at a time: each output channel's
        // filters for those channels are read as one run (one input channel at a time read a
        // filter per cache line, c x 36 bytes apart, and pulled every line from memory again
        // for the next channel), and each operand's panel rows for them are written whole.
        const CHANNELS: usize = 8;
        let nr = micro.nr;
        let mut rows = vec![0f32; CHANNELS * POINTS * nr];
        for panel in 0..m.div_ceil(nr) {
            for c0 in (0..c).step_by(CHANNELS) {
                let cs = CHANNELS.min(c - c0);
                rows.fill(0.0);
                for (j, mo) in (panel * nr..m.min((panel + 1) * nr)).enumerate() {
                    let filters = &w[(mo * c + c0) * 9..(mo * c + c0 + cs) * 9];
                    for (t, g) in filters.chunks_exact(9).enumerate() {
                        for (p, v) in transform_filter(g).into_iter().enumerate() {
                            rows[(t * POINTS + p) * nr + j] = v;
                        }
                    }
                }
                for (t, points) in rows.chunks_exact(POINTS * nr).take(cs).enumerate() {
                    for (u, row) in u.iter_mut().zip(points.chunks_exact(nr)) {
                        u.panel_row_mut(panel, c0 + t).copy_from_slice(row);
                    }
                }
            }
        }
        Winograd { c, m, u, micro: *micro }
    }

    /// Most tiles of one block whose products cover `channels` output channels: the transformed
    /// input (36 x tiles x C) and the products (36 x tiles x channels) within `floats`, a whole
    /// number of micro-kernel panels.
    fn max_block_tiles(&self, channels: usize, floats: usize) -> usize {
        let mr = self.micro.mr;
        let fit = floats / (POINTS * (self.c + channels));
        (fit / mr * mr).clamp(mr, MAX_BLOCK_TILES / mr * mr)
    }

    /// How `total` output tiles are cut into tasks for `threads` threads. Blocks of tiles with
    /// all channels: on one thread the largest block; on more, of the block sizes up to it (whole
    /// panels), the one whose blocks finish soonest, counting each thread's rounds of blocks and
    /// what a block costs beyond its tiles (the 36 transformed weight matrices stream past it
    /// again). The largest block alone left YOLOv8n's 80x80 planes (400 tiles) in blocks of 112,
    /// 112, 112 and 64: 224 tiles on one thread against 176 on the other.
    ///
    /// Where that leaves a thread a single block (ResNet-50's 14x14 planes of 256 channels: 16
    /// tiles, two blocks of 8), every thread would stream all the transformed weights (9.4 MB)
    /// for a few rows of products, bound by the shared L3, so two threads ran such layers hardly
    /// faster than one. Then the output channels are cut into one chunk per thread instead, each
    /// over all the tiles in one block (its buffers allowed twice the budget): each thread streams
    /// its share of the weights, for twice the rows.
    pub fn split(&self, total: usize, threads: usize) -> Split {
        let (mr, nr) = (self.micro.mr, self.micro.nr);
        let all = self.m.div_ceil(nr) * nr;
        let most = self.max_block_tiles(all, BLOCK_FLOATS);
        if threads <= 1 {
            return Split { tiles: most, channels: all };
        }
        let fewest = total.div_ceil(most).max(1);
        let tries = (4 * threads).min(16).min(total.div_ceil(mr).saturating_sub(fewest));
        let mut best = (usize::MAX, most);
        for blocks in fewest..=fewest + tries {
            let size = total.div_ceil(blocks).div_ceil(mr) * mr;
            let cost = total.div_ceil(size).div_ceil(threads) * (size + BLOCK_COST_TILES);
            if cost < best.0 {
                best = (cost, size);
            }
        }
        let tiles = Split { tiles: best.1, channels: all };
        let chunk = self.m.div_ceil(threads).div_ceil(nr) * nr;
        let whole = total.div_ceil(mr) * mr;
        let chunked = Split { tiles: whole, channels: chunk };
        let fits = whole <= self.max_block_tiles(chunk, 2 * BLOCK_FLOATS);
        if total.div_ceil(tiles.tiles) <= threads && self.m.div_ceil(chunk) == threads && fits {
            chunked
        } else {
            tiles
        }
    }

    /// Convolves `r.x` (batch x C x H x W, 3x3 window of stride 1 as `r.h`, `r.w` describe) into
    /// `y` (batch x M x OH x OW).
    pub fn run(&self, pool: &ThreadPool, r: &Run, y: &mut [f32]) {
        let total = r.batch * r.h.output.div_ceil(TILE) * r.w.output.div_ceil(TILE);
        self.run_split(pool, r, y, self.split(total, pool.threads()));
    }

    /// [`run`](Self::run) cut into tasks as `split` says (whole panels of tiles and channels).
    pub fn run_split(&self, pool: &ThreadPool, r: &Run, y: &mut [f32], split: Split) {
        let (oh, ow) = (r.h.output, r.w.output);
        assert_eq!(y.len(), r.batch * self.m * oh * ow, "the output's size");
        assert_eq!(r.x.len(), r.batch * self.c * r.h.input * r.w.input, "the input's size");
        let (mr, nr) = (self.micro.mr, self.micro.nr);
        assert!(
            split.tiles > 0
                && split.tiles.is_multiple_of(mr)
                && split.channels > 0
                && split.channels.is_multiple_of(nr),
            "a split into whole panels"
        );
        let tiles = Tiles { across: ow.div_ceil(TILE), per_image: oh.div_ceil(TILE) * ow.div_ceil(TILE) };
        let total = r.batch * tiles.per_image;
        let (block, chunk) = (split.tiles, split.channels);
        let (blocks, chunks) = (total.div_ceil(block), self.m.div_ceil(chunk));
        let out = SharedMut(y.as_mut_ptr());
        let work = block * POINTS * self.c * chunk;
        pool.parallel_for_work(blocks * chunks, work, &|task| {
            let (b, q) = (task / chunks, task % chunks);
            let first = b * block;
            let count = block.min(total - first);
            let channels = q * chunk..self.m.min((q + 1) * chunk);
            let width = channels.len();
            SCRATCH.with(|s| {
                let mut guard = s.borrow_mut();
                let (v, o) = &mut *guard;
                let panel_floats = count.div_ceil(mr) * mr * self.c;
                let v = v.at_least(POINTS * panel_floats);
                let o = o.at_least(POINTS * count * width);
                transform_input(r, &tiles, self.c, first, count, mr, v);
                for (p, u) in self.u.iter().enumerate() {
                    let problem = Problem {
                        m: count,
                        n: self.m,
                        k: self.c,
                        a: Lhs::Panels(PanelsRef {
                            m: count,
                            k: self.c,
                            data: &v[p * panel_floats..(p + 1) * panel_floats],
                        }),
                        b: Rhs::Packed(u),
                        epilogue: Epilogue::default(),
                    };
                    let products = &mut o[p * count * width..(p + 1) * count * width];
                    gemm::run_serial_columns(&self.micro, &problem, channels.clone(), products, width);
                }
                let products = Products { o, count, channels: channels.clone(), m: self.m };
                transform_output(r, &tiles, &products, first, out);
            });
        });
    }
}

/// One task's products: per transform point, `count` tiles x `channels.len()` output channels,
/// of `m` in all.
struct Products<'a> {
    o: &'a [f32],
    count: usize,
    channels: std::ops::Range<usize>,
    m: usize,
}

/// How output tiles are numbered: across all images, row by row.
struct Tiles {
    /// Tiles per tile row.
    across: usize,
    per_image: usize,
}

impl Tiles {
    /// Tile `t` as (image, first output row, first output column).
    fn at(&self, t: usize) -> (usize, usize, usize) {
        let (n, rest) = (t / self.per_image, t % self.per_image);
        (n, rest / self.across * TILE, rest % self.across * TILE)
    }
}

type Lanes = [f32; LANES];

/// Bᵀ d for one column of 6 inputs (and d B for one row): the input transform's 1-D step.
#[inline(always)]
fn input_1d(d: &[Lanes; ALPHA]) -> [Lanes; ALPHA] {
    let mut r = [[0f32; LANES]; ALPHA];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

fn transform_input(r: &Run, tiles: &Tiles, c: usize, first: usize, count: usize, mr: usize, v: &mut [f32]) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { transform_input_avx512(r, tiles, c, first, count, mr, v) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { transform_input_avx2(r, tiles, c, first, count, mr, v) },
        _ => transform_input_generic::<false>(r, tiles, c, first, count, mr, v),
    }
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_input_avx2(r: &Run, tiles: &Tiles, c: usize, first: usize, count: usize, mr: usize, v: &mut [f32]) {
    transform_input_generic::<false>(r, tiles, c, first, count, mr, v)
}

/// # Safety
/// Needs AVX-512F (and AVX2 and FMA, which every AVX-512 CPU has).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn transform_input_avx512(
    r: &Run,
    tiles: &Tiles,
    c: usize,
    first: usize,
    count: usize,
    mr: usize,
    v: &mut [f32],
) {
    transform_input_generic::<true>(r, tiles, c, first, count, mr, v)
}

/// One row of 8 input windows that lie side by side, 4 pixels apart (a panel of 8 tiles along
/// an output row): `d_row[j][l] = src[4 * l + j]`, by register permutes from 4 loads, where
/// gathering element by element took 17% of DBNet.
///
/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gather_window_row(src: &[f32], d_row: &mut [[f32; LANES]; ALPHA]) {
    use std::arch::x86_64::*;
    const SPAN: usize = 4 * (LANES - 1) + ALPHA;
    assert!(LANES == 8 && src.len() >= SPAN, "a row of 8 windows");
    let p = src.as_ptr();
    // SAFETY: every load reads inside src[..SPAN] (the last one masked to its first 14 lanes).
    unsafe {
        let low = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let high =
            (_mm512_loadu_ps(p.add(4)), _mm512_maskz_loadu_ps(((1u32 << (SPAN - 20)) - 1) as __mmask16, p.add(20)));
        for (j, out) in d_row.iter_mut().enumerate() {
            let ((a, b), o) = if j < 4 { (low, j as i32) } else { (high, j as i32 - 4) };
            let idx =
                _mm512_setr_epi32(o, o + 4, o + 8, o + 12, o + 16, o + 20, o + 24, o + 28, 0, 0, 0, 0, 0, 0, 0, 0);
            _mm256_storeu_ps(out.as_mut_ptr(), _mm512_castps512_ps256(_mm512_permutex2var_ps(a, idx, b)));
        }
    }
}

/// Writes the transformed tiles `first..first + count` as 36 A operands (tiles x C, in panels of
/// `mr` tiles, zero past `count`): point p's operand starts at `p * panels * mr * c`.
/// With `AVX512` (the caller runs with AVX-512F), panels of 8 tiles side by side on one output
/// row are gathered by register permutes.
#[inline(always)]
fn transform_input_generic<const AVX512: bool>(
    r: &Run,
    tiles: &Tiles,
    c: usize,
    first: usize,
    count: usize,
    mr: usize,
    v: &mut [f32],
) {
    let (ih, iw) = (r.h.input, r.w.input);
    let panels = count.div_ceil(mr);
    let panel_floats = panels * mr * c;
    for pi in 0..panels {
        // Each lane's top-left input pixel (in padded coordinates shifted by the padding), and
        // whether its whole 6x6 window lies inside the input.
        let mut origin = [(usize::MAX, 0isize, 0isize); LANES];
        let mut inside = true;
        for (l, o) in origin.iter_mut().enumerate().take(mr) {
            let t = pi * mr + l;
            if t >= count {
                inside = false;
                continue;
            }
            let (n, oy, ox) = tiles.at(first + t);
            let (iy, ix) = (oy as isize - r.h.pad_begin as isize, ox as isize - r.w.pad_begin as isize);
            inside &= iy >= 0 && ix >= 0 && iy as usize + ALPHA <= ih && ix as usize + ALPHA <= iw;
            *o = (n, iy, ix);
        }
        let side_by_side = AVX512
            && inside
            && mr == LANES
            && origin.iter().all(|&(n, iy, _)| n == origin[0].0 && iy == origin[0].1)
            && origin.windows(2).all(|w| w[1].2 == w[0].2 + TILE as isize);
        for ch in 0..c {
            let mut d = [[[0f32; LANES]; ALPHA]; ALPHA];
            if side_by_side {
                let (n, iy, ix) = origin[0];
                let plane = &r.x[(n * c + ch) * ih * iw..(n * c + ch + 1) * ih * iw];
                let base = iy as usize * iw + ix as usize;
                for (i, row) in d.iter_mut().enumerate() {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX512 is set only by the caller that runs with AVX-512F; the 8
                    // windows lie inside the input row, so the slice holds their 34 pixels.
                    unsafe {
                        gather_window_row(&plane[base + i * iw..], row)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (row, base, plane, i);
                }
            }
            for (l, &(n, iy, ix)) in origin.iter().enumerate().take(if side_by_side { 0 } else { mr }) {
                if n == usize::MAX {
                    continue;
                }
                let plane = &r.x[(n * c + ch) * ih * iw..(n * c + ch + 1) * ih * iw];
                if inside {
                    let base = iy as usize * iw + ix as usize;
                    for (i, row) in d.iter_mut().enumerate() {
                        let src = &plane[base + i * iw..base + i * iw + ALPHA];
                        for (j, v) in row.iter_mut().enumerate() {
                            v[l] = src[j];
                        }
                    }
                } else {
                    for (i, row) in d.iter_mut().enumerate() {
                        let y = iy + i as isize;
                        if y < 0 || y as usize >= ih {
                            continue;
                        }
                        for (j, v) in row.iter_mut().enumerate() {
                            let x = ix + j as isize;
                            if x >= 0 && (x as usize) < iw {
                                v[l] = plane[y as usize * iw + x as usize];
                            }
                        }
                    }
                }
            }
            // Bᵀ d B: columns first, then rows.
            let mut cols = [[[0f32; LANES]; ALPHA]; ALPHA];
            for j in 0..ALPHA {
                let t = input_1d(&[d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]]);
                for (i, v) in t.into_iter().enumerate() {
                    cols[i][j] = v;
                }
            }
            for (i, row) in cols.iter().enumerate() {
                let t = input_1d(row);
                for (j, lanes) in t.iter().enumerate() {
                    let at = (i * ALPHA + j) * panel_floats + pi * mr * c + ch * mr;
                    copy_short(&mut v[at..at + mr], &lanes[..mr]);
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the transforms' vectors: a whole vector as one fixed-size copy
/// the compiler keeps inline (a `memcpy` call per 8 or 16 floats cost more than the transforms).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    if let (Ok(d), Ok(s)) = (<&mut [f32; CHANNELS]>::try_from(&mut *dst), <&[f32; CHANNELS]>::try_from(src)) {
        *d = *s;
    } else if let (Ok(d), Ok(s)) = (<&mut [f32; LANES]>::try_from(&mut *dst), <&[f32; LANES]>::try_from(src)) {
        *d = *s;
    } else {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
    }
}

type Chans = [f32; CHANNELS];

/// Aᵀ s for one column of 6 products (and s A for one row): the output transform's 1-D step.
#[inline(always)]
fn output_1d(s: &[Chans; ALPHA]) -> [Chans; TILE] {
    let mut r = [[0f32; CHANNELS]; TILE];
    for l in 0..CHANNELS {
        let [s0, s1, s2, s3, s4, s5] = [s[0][l], s[1][l], s[2][l], s[3][l], s[4][l], s[5][l]];
        let (a, b) = (s1 + s2, s1 - s2);
        let (c, d) = (s3 + s4, s3 - s4);
        r[0][l] = s0 + a + c;
        r[1][l] = b + 2.0 * d;
        r[2][l] = a + 4.0 * c;
        r[3][l] = b + 8.0 * d + s5;
    }
    r
}

fn transform_output(r: &Run, tiles: &Tiles, p: &Products, first: usize, y: SharedMut) {
    match isa() {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { transform_output_avx512(r, tiles, p, first, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { transform_output_avx2(r, tiles, p, first, y) },
        _ => transform_output_generic(r, tiles, p, first, y),
    }
}

/// # Safety
/// Needs AVX-512F; see [`transform_output_generic`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn transform_output_avx512(r: &Run, t: &Tiles, p: &Products, first: usize, y: SharedMut) {
    transform_output_generic(r, t, p, first, y)
}

/// # Safety
/// Needs AVX2 and FMA; see [`transform_output_generic`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_output_avx2(r: &Run, t: &Tiles, p: &Products, first: usize, y: SharedMut) {
    transform_output_generic(r, t, p, first, y)
}

/// Turns the products of tiles `first..first + p.count` into their output pixels of channels
/// `p.channels`, plus bias and residual, through the activation, into `y`: the task owns those
/// tiles' pixels of those output planes.
// The loops walk matrix coordinates that address several arrays at once (the products, the
// transposed tile, the output planes); indices read more plainly than zipped iterators.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn transform_output_generic(r: &Run, tiles: &Tiles, p: &Products, first: usize, y: SharedMut) {
    let (oh, ow) = (r.h.output, r.w.output);
    let (m, count, width) = (p.m, p.count, p.channels.len());
    let plane = oh * ow;
    for t in 0..count {
        let (n, oy, ox) = tiles.at(first + t);
        let (rows, cols) = (TILE.min(oh - oy), TILE.min(ow - ox));
        for m0 in p.channels.clone().step_by(CHANNELS) {
            let lanes = CHANNELS.min(p.channels.end - m0);
            let col = m0 - p.channels.start;
            // Aᵀ s A: columns first, then rows.
            let mut cols6 = [[[0f32; CHANNELS]; ALPHA]; TILE];
            for j in 0..ALPHA {
                let mut s = [[0f32; CHANNELS]; ALPHA];
                for (i, si) in s.iter_mut().enumerate() {
                    let at = ((i * ALPHA + j) * count + t) * width + col;
                    copy_short(&mut si[..lanes], &p.o[at..at + lanes]);
                }
                for (i, v) in output_1d(&s).into_iter().enumerate() {
                    cols6[i][j] = v;
                }
            }
            let mut out = [[0f32; CHANNELS]; TILE * TILE];
            for (i, row) in cols6.iter().enumerate() {
                for (j, v) in output_1d(row).into_iter().enumerate() {
                    out[i * TILE + j] = v;
                }
            }
            if let Some(b) = r.bias {
                for px in out.iter_mut() {
                    px.iter_mut().zip(&b[m0..m0 + lanes]).for_each(|(v, b)| *v += b);
                }
            }
            let at = |k: usize, i: usize, j: usize| ((n * m + m0 + k) * oh + oy + i) * ow + ox + j;
            if let Some(res) = r.residual {
                for i in 0..rows {
                    for j in 0..cols {
                        for k in 0..lanes {
                            out[i * TILE + j][k] += res[at(k, i, j)];
                        }
                    }
                }
            }
            if r.act != Activation::None {
                r.act.apply(out.as_flattened_mut());
            }
            debug_assert!(at(lanes - 1, rows - 1, cols - 1) < r.batch * m * plane);
            for k in 0..lanes {
                for i in 0..rows {
                    for j in 0..cols {
                        // SAFETY: the pixel is inside the output (the tile is clipped to the plane,
                        // the channel below m) and belongs to this task's tiles and channels.
                        unsafe { *y.0.add(at(k, i, j)) = out[i * TILE + j][k] };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::gemm::micro_for;

    /// Channel chunks only where blocks of tiles would leave each thread one block: ResNet-50's
    /// 14x14 planes of 256 channels on two threads, not on one, not YOLOv8n's 80x80 planes.
    #[test]
    fn channels_are_chunked_only_for_few_tiles_per_thread() {
        let micro = micro_for(isa());
        let wide = Winograd::new(&vec![0.0; 256 * 256 * 9], 256, 256, &micro);
        let all = 256usize.div_ceil(micro.nr) * micro.nr;
        let (resnet, yolo) = (16, 400);
        let two = wide.split(resnet, 2);
        if two.channels < all {
            assert_eq!(256usize.div_ceil(two.channels), 2, "{two:?}");
            assert!(two.tiles >= resnet, "{two:?}: one block of all the tiles");
        }
        assert_eq!(wide.split(resnet, 1).channels, all);
        let narrow = Winograd::new(&vec![0.0; 80 * 80 * 9], 80, 80, &micro);
        assert_eq!(narrow.split(yolo, 2).channels, 80usize.div_ceil(micro.nr) * micro.nr);
    }

    /// The transforms against a direct 3x3 convolution, on planes whose sizes are not multiples
    /// of the tile, with padding on every side and several blocks.
    #[test]
    fn matches_a_direct_convolution() {
        let micro = micro_for(isa());
        for (c, m, ih, iw, pad) in
            [(3, 5, 9, 11, 1), (17, 33, 13, 7, 0), (8, 20, 30, 31, 2), (40, 3, 6, 6, 1), (19, 71, 10, 9, 1)]
        {
            let x = crate::backend::cpu::tests::values(1, 2 * c * ih * iw);
            let w = crate::backend::cpu::tests::values(2, m * c * 9);
            let bias = crate::backend::cpu::tests::values(3, m);
            let axis = |input: usize| Axis {
                input,
                kernel: 3,
                stride: 1,
                dilation: 1,
                pad_begin: pad,
                pad_end: pad,
                output: input + 2 * pad - 2,
            };
            let (h, wa) = (axis(ih), axis(iw));
            let (oh, ow) = (h.output, wa.output);
            let residual = crate::backend::cpu::tests::values(4, 2 * m * oh * ow);
            let run =
                Run { x: &x, batch: 2, h, w: wa, bias: Some(&bias), residual: Some(&residual), act: Activation::Relu };
            let wg = Winograd::new(&w, m, c, &micro);
            let total = 2 * oh.div_ceil(TILE) * ow.div_ceil(TILE);
            // The chosen split, and tasks of one panel of tiles by one panel of channels (several
            // of each where the shape has them), by all channels, by all tiles.
            let (mr, nr) = (micro.mr, micro.nr);
            let splits = [
                wg.split(total, 2),
                Split { tiles: mr, channels: nr },
                Split { tiles: mr, channels: m.div_ceil(nr) * nr },
                Split { tiles: total.div_ceil(mr) * mr, channels: nr },
            ];
            for split in splits {
                let mut y = vec![f32::NAN; 2 * m * oh * ow];
                wg.run_split(&ThreadPool::new(2), &run, &mut y, split);
                for n in 0..2 {
                    for mo in 0..m {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut want = bias[mo] as f64;
                                for ci in 0..c {
                                    for ky in 0..3 {
                                        for kx in 0..3 {
                                            let (iy, ix) =
                                                ((oy + ky) as isize - pad as isize, (ox + kx) as isize - pad as isize);
                                            if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                                                want += x[((n * c + ci) * ih + iy as usize) * iw + ix as usize] as f64
                                                    * w[((mo * c + ci) * 3 + ky) * 3 + kx] as f64;
                                            }
                                        }
                                    }
                                }
                                let at = ((n * m + mo) * oh + oy) * ow + ox;
                                let want = (want + residual[at] as f64).max(0.0) as f32;
                                let got = y[at];
                                assert!(
                                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "{c}x{m} {split:?} at {at}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
