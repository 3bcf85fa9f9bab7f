//! Depthwise convolution on small planes, 16 channels at a time in the lanes of AVX-512 vectors.
//!
//! On planes of 28x28 and less the per-plane kernel ([`super::depthwise`]) spends most of its
//! time on per-plane work (padding a band, partial tiles, row ends) rather than on the taps.
//! Here a block of 16 channels is transposed into a zero-padded `[rows][cols][16]` scratch, so a
//! tap of an output pixel is one vector FMA for all 16 channels whatever the plane's width,
//! stride or dilation; the sums go to a `[pixels][16]` scratch and are transposed back into the
//! 16 output planes, with the residual and activation applied in the same pass. (onnxruntime
//! keeps MobileNets in this blocked layout between layers, NCHWc; the graph here stays NCHW, so
//! the two transposes are the price, 16x16 blocks in registers.) On AVX2 the same in blocks of 8
//! channels ([`avx2`]).

use super::activation::{avx512, piecewise, ActivationExt};
use super::depthwise::{forced, Depthwise, Forced};
use super::isa::{isa, Isa};
use super::pool::{SharedMut, ThreadPool};
use crate::ops::window::Axis;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Channels per block: the lanes of one vector (AVX-512; AVX2's blocks are [`avx2::LANES`]).
const LANES: usize = 16;
/// The largest input plane (in pixels) this kernel takes at stride 1, and at larger strides:
/// chosen by measurement against the per-plane kernel (`cargo bench --bench peak`, MobileNetV2's
/// 3x3 layers, one thread). At stride 1 this kernel ran 1.6-2.4x faster on planes of 7x7 to
/// 28x28, 1.0-1.1x on 56x56 and 112x112, and 0.7-1.0x on 256x256; at stride 2, 2.9-4.3x faster
/// on 14x14 and 28x28, 1.2-1.7x on 56x56 and 112x112 (the per-plane kernel's phase split costs
/// more there than a skipped pixel here).
const MAX_PLANE: [usize; 2] = [64 * 64, 128 * 128];
/// [`MAX_PLANE`] for AVX2's 8-channel blocks (Zen 3, whole models at 1 thread, alternated with
/// `CRX580_DEPTHWISE=plane`): MobileNetV2's 3x3 layers ran 1.1-3x faster here on every plane,
/// 112x112 at stride 1 included (0.35-0.39 against 0.37-0.50 ms); DBNet's 320x320 at stride 1
/// ran slower (1.06-1.15 against 0.74-0.77 ms).
const MAX_PLANE_AVX2: [usize; 2] = [128 * 128, 128 * 128];

/// Whether this kernel runs `p`: AVX-512 or AVX2, and small planes (see
/// [`super::depthwise::forced`]).
pub fn suits(p: &Depthwise) -> bool {
    let most = if isa() == Isa::Avx512 { MAX_PLANE } else { MAX_PLANE_AVX2 };
    let small = p.h.input * p.w.input <= most[usize::from(p.h.stride * p.w.stride > 1)];
    let chosen = match forced() {
        Some(k) => k == Forced::Blocked,
        None => small,
    };
    matches!(isa(), Isa::Avx512 | Isa::Avx2) && chosen && p.h.output * p.w.output > 0
}

/// The padded scratch's shape; the same for every block of one call.
#[derive(Clone, Copy, PartialEq)]
struct Padded {
    h: Axis,
    w: Axis,
    /// Padded rows: every row a tap reads and every input row.
    rows: usize,
    /// Padded columns, likewise.
    cols: usize,
}

impl Padded {
    fn new(h: Axis, w: Axis) -> Padded {
        let extent =
            |a: &Axis| ((a.output - 1) * a.stride + (a.kernel - 1) * a.dilation + 1).max(a.pad_begin + a.input);
        Padded { h, w, rows: extent(&h), cols: extent(&w) }
    }

    /// Floats of the input scratch for blocks of `lanes` channels.
    fn input_len(&self, lanes: usize) -> usize {
        self.rows * self.cols * lanes
    }

    /// Floats of the output scratch for blocks of `lanes` channels: whole blocks of `lanes`
    /// pixels.
    fn output_len(&self, lanes: usize) -> usize {
        (self.h.output * self.w.output).next_multiple_of(lanes) * lanes
    }
}

thread_local! {
    /// This thread's scratch, kept between calls so steady-state runs do not allocate.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new(), padded_for: None }) };
}

/// A thread's scratch: input block, output block, weights and bias, 64-byte aligned. The input
/// block's padding depends only on the geometry, so it is zeroed once per geometry and blocks
/// then write only the input pixels.
struct Scratch {
    buf: Vec<f32>,
    /// The geometry (and block width) whose padding holds zeros in the input block.
    padded_for: Option<(Padded, usize)>,
}

impl Scratch {
    /// The scratch for `g` with `taps` filter taps in blocks of `lanes` channels: (input block,
    /// the rest), the input block's padding zeroed.
    fn prepare(&mut self, g: &Padded, taps: usize, lanes: usize) -> (&mut [f32], &mut [f32]) {
        let len = g.input_len(lanes) + g.output_len(lanes) + (taps + 1) * lanes;
        if self.buf.len() < len + LANES {
            // A new allocation moves the aligned start: the padding is laid again below.
            self.buf = vec![0.0; len + LANES];
            self.padded_for = None;
        }
        let skip = self.buf.as_ptr().align_offset(64).min(LANES - 1);
        let (input, rest) = self.buf[skip..skip + len].split_at_mut(g.input_len(lanes));
        if self.padded_for != Some((*g, lanes)) {
            // Only the padding is zeroed (a whole 114x114 block is 0.8 MB, and the layers of a
            // MobileNet change the geometry at every call): blocks write every input pixel.
            // Debug builds fill those with NaN first, so that a pixel they miss shows.
            if cfg!(debug_assertions) {
                input.fill(f32::NAN);
            }
            let (top, left) = (g.h.pad_begin, g.w.pad_begin);
            for (r, row) in input.chunks_exact_mut(g.cols * lanes).enumerate() {
                if r < top || r >= top + g.h.input {
                    row.fill(0.0);
                } else {
                    row[..left * lanes].fill(0.0);
                    row[(left + g.w.input) * lanes..].fill(0.0);
                }
            }
            self.padded_for = Some((*g, lanes));
        }
        if cfg!(debug_assertions) {
            rest.fill(f32::NAN);
        }
        (input, rest)
    }
}

/// Runs the convolution into `y` (`planes` output planes), one task per block of 16 channels (8
/// on AVX2) of one image.
pub fn run(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32]) {
    assert!(suits(p), "depthwise_blocked: needs AVX-512 or AVX2 and a small plane");
    let width = if isa() == Isa::Avx512 { LANES } else { avx2::LANES };
    let (h, w) = (p.h, p.w);
    let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
    assert!(p.x.len() >= planes * in_plane && y.len() >= planes * out_plane, "depthwise: buffers too small");
    assert!(planes.is_multiple_of(p.channels), "depthwise: planes are whole images");
    let taps = h.kernel * w.kernel;
    assert!(p.weights.len() >= p.channels * taps && p.bias.is_none_or(|b| b.len() >= p.channels));
    assert!(p.residual.is_none_or(|r| r.len() >= planes * out_plane));
    let g = Padded::new(h, w);
    // Where each tap reads in the input block, relative to its output pixel's first read.
    // Inline for windows up to 8x8, so a run allocates nothing.
    let offsets: smallvec::SmallVec<[usize; 64]> =
        (0..taps).map(|k| ((k / w.kernel) * h.dilation * g.cols + (k % w.kernel) * w.dilation) * width).collect();
    let per_image = p.channels.div_ceil(width);
    let out = SharedMut(y.as_mut_ptr());
    // A block's work: its multiply-adds, and a step for each element transposed in (the input
    // plane, 4x the output at stride 2) and out. Counting the multiply-adds alone ran MobileNetV2's
    // 576-channel 14x14 -> 7x7 layer on one thread of two.
    let work = (out_plane * taps + in_plane + out_plane) * width;
    pool.parallel_for_work(planes / p.channels * per_image, work, &|b| {
        let o = out;
        let c0 = b % per_image * width;
        let block = Block {
            p,
            g: &g,
            offsets: &offsets[..],
            plane0: b / per_image * p.channels + c0,
            c0,
            lanes: width.min(p.channels - c0),
        };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (input, rest) = s.prepare(&g, taps, width);
            // SAFETY: AVX-512F, or AVX2 and FMA, are there (`suits`, and `width` follows the
            // ISA); the block writes only its own output planes, `plane0..plane0 + lanes`, inside
            // `y` (checked above), and the scratch is sized for `g` and `width` by `prepare`.
            unsafe {
                if width == LANES {
                    block.run(input, rest, o.0)
                } else {
                    avx2::run(&block, input, rest, o.0)
                }
            };
        });
        if !piecewise(p.act) {
            for c in 0..block.lanes {
                let at = (block.plane0 + c) * out_plane;
                // SAFETY: this block's own plane, inside `y`, no longer borrowed by the kernel.
                let plane = unsafe { std::slice::from_raw_parts_mut(o.0.add(at), out_plane) };
                p.act.apply(plane);
            }
        }
    });
}

/// One block of up to 16 channels of one image.
struct Block<'a> {
    p: &'a Depthwise<'a>,
    g: &'a Padded,
    offsets: &'a [usize],
    /// The block's first plane (image * channels + c0) and channel.
    plane0: usize,
    c0: usize,
    /// Channels in the block (16, or AVX2's 8, but in the last block of an image).
    lanes: usize,
}

impl Block<'_> {
    /// Writes the filter as one vector of `width` lanes per tap (channels in lanes), then the
    /// bias; missing channels 0.
    fn fill_filter(&self, filter: &mut [f32], width: usize) {
        let (p, taps) = (self.p, self.offsets.len());
        for l in 0..width {
            let c = self.c0 + l;
            for k in 0..taps {
                filter[k * width + l] = if l < self.lanes { p.weights[c * taps + k] } else { 0.0 };
            }
            filter[taps * width + l] = match p.bias {
                Some(b) if l < self.lanes => b[c],
                _ => 0.0,
            };
        }
    }

    /// # Safety
    /// Needs AVX-512F; `input` and `rest` as [`Scratch::prepare`] gives them for this block's
    /// geometry; `y` holds the block's output planes.
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, input: &mut [f32], rest: &mut [f32], y: *mut f32) {
        let g = self.g;
        let taps = self.offsets.len();
        let (out, filter) = rest.split_at_mut(g.output_len(LANES));
        assert!(input.len() >= g.input_len(LANES) && filter.len() >= (taps + 1) * LANES);
        self.fill_filter(filter, LANES);
        // SAFETY (the three steps): every pointer they form is inside the slice it came from;
        // see each one's bounds notes.
        unsafe {
            self.transpose_in(input.as_mut_ptr());
            self.taps(input.as_ptr(), filter.as_ptr(), out.as_mut_ptr());
            self.transpose_out(out.as_ptr(), y);
        }
    }

    /// Copies the block's input planes into the padded input block, pixel-major.
    ///
    /// # Safety
    /// Needs AVX-512F; `input` holds [`Padded::input_len`] floats (of 16-channel blocks).
    #[inline(always)]
    unsafe fn transpose_in(&self, input: *mut f32) {
        let (g, p) = (self.g, self.p);
        let (ih, iw) = (g.h.input, g.w.input);
        let plane = ih * iw;
        let x = p.x.as_ptr().add(self.plane0 * plane);
        let (mut iy, mut ix) = (0, 0);
        for q in (0..plane).step_by(LANES) {
            let n = LANES.min(plane - q);
            let mut r = if n == LANES && self.lanes == LANES {
                // A whole block: plain loads, so the 16 vectors stay in registers (a zeroed
                // array filled by masked loads went through the stack).
                std::array::from_fn(|c| _mm512_loadu_ps(x.add(c * plane + q)))
            } else {
                let mask = lane_mask(n);
                let mut r = [_mm512_setzero_ps(); LANES];
                for (c, v) in r.iter_mut().enumerate().take(self.lanes) {
                    // Masked: lanes past the plane's end are not read (run() checked the planes).
                    *v = _mm512_maskz_loadu_ps(mask, x.add(c * plane + q));
                }
                r
            };
            transpose16(&mut r);
            for v in r.iter().take(n) {
                // iy < ih and ix < iw: inside the input block (Padded::new).
                let at = ((iy + g.h.pad_begin) * g.cols + ix + g.w.pad_begin) * LANES;
                _mm512_storeu_ps(input.add(at), *v);
                ix += 1;
                if ix == iw {
                    ix = 0;
                    iy += 1;
                }
            }
        }
    }

    /// Every output pixel's sums over the taps, into `out` (pixel-major, bias included).
    ///
    /// # Safety
    /// Needs AVX-512F; `input`, `filter` and `out` as [`Block::run`] lays them.
    #[inline(always)]
    unsafe fn taps(&self, input: *const f32, filter: *const f32, out: *mut f32) {
        let g = self.g;
        let (oh, ow) = (g.h.output, g.w.output);
        let step = g.w.stride * LANES;
        // Reads stay inside the input block: the last output row and column read padded row
        // (oh - 1) * stride + (kh - 1) * dilation < rows, and likewise for columns.
        for oy in 0..oh {
            let row = input.add(oy * g.h.stride * g.cols * LANES);
            let dst = out.add(oy * ow * LANES);
            let mut ox = 0;
            while ox + 8 <= ow {
                self.tile::<8>(row.add(ox * step), step, filter, dst.add(ox * LANES));
                ox += 8;
            }
            if ox + 4 <= ow {
                self.tile::<4>(row.add(ox * step), step, filter, dst.add(ox * LANES));
                ox += 4;
            }
            if ox + 2 <= ow {
                self.tile::<2>(row.add(ox * step), step, filter, dst.add(ox * LANES));
                ox += 2;
            }
            if ox < ow {
                self.tile::<1>(row.add(ox * step), step, filter, dst.add(ox * LANES));
            }
        }
    }

    /// `T` adjacent output pixels, their sums in registers over all taps.
    ///
    /// # Safety
    /// Needs AVX-512F; `src + offset + t * step` (t < T) inside the input block for every tap.
    #[inline(always)]
    unsafe fn tile<const T: usize>(&self, src: *const f32, step: usize, filter: *const f32, dst: *mut f32) {
        let taps = self.offsets.len();
        let mut acc = [_mm512_loadu_ps(filter.add(taps * LANES)); T];
        for (k, &off) in self.offsets.iter().enumerate() {
            let wt = _mm512_loadu_ps(filter.add(k * LANES));
            for (t, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_loadu_ps(src.add(off + t * step)), wt, *a);
            }
        }
        for (t, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(dst.add(t * LANES), *a);
        }
    }

    /// Transposes the sums back into the block's output planes, adding the residual and applying
    /// the activation on the way.
    ///
    /// # Safety
    /// Needs AVX-512F; `out` holds [`Padded::output_len`] floats (of 16-channel blocks), `y`
    /// the block's planes.
    #[inline(always)]
    unsafe fn transpose_out(&self, out: *const f32, y: *mut f32) {
        let (g, p) = (self.g, self.p);
        let plane = g.h.output * g.w.output;
        for q in (0..plane).step_by(LANES) {
            let n = LANES.min(plane - q);
            let mask = lane_mask(n);
            // Whole 16-pixel blocks: the output block is rounded up to them.
            let mut r: [__m512; LANES] = std::array::from_fn(|j| _mm512_loadu_ps(out.add((q + j) * LANES)));
            transpose16(&mut r);
            for (c, &v) in r.iter().enumerate().take(self.lanes) {
                let at = (self.plane0 + c) * plane + q;
                if n == LANES {
                    // Whole vectors: plain loads and stores (the masked store was this kernel's
                    // hottest instruction).
                    let v = match p.residual {
                        Some(res) => _mm512_add_ps(v, _mm512_loadu_ps(res.as_ptr().add(at))),
                        None => v,
                    };
                    _mm512_storeu_ps(y.add(at), avx512::apply_piecewise(p.act, v));
                    continue;
                }
                let v = match p.residual {
                    // Masked: lanes past the plane's end are neither read nor written.
                    Some(res) => _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, res.as_ptr().add(at))),
                    None => v,
                };
                _mm512_mask_storeu_ps(y.add(at), mask, avx512::apply_piecewise(p.act, v));
            }
        }
    }
}

/// The first `n` (<= 16) lanes.
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    (((1u32 << n) - 1) & 0xffff) as __mmask16
}

/// Transposes a 16x16 block in registers (`r[i]` lane `j` becomes `r[j]` lane `i`): 64 shuffles,
/// interleaving 32-bit, 64-bit, then 128-bit pieces.
#[inline(always)]
pub(super) unsafe fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let pd = _mm512_castps_pd;
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (a, b) = (4 * i, 4 * i + 2);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[a]), pd(t[b])));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[a]), pd(t[b])));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[a + 1]), pd(t[b + 1])));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[a + 1]), pd(t[b + 1])));
    }
    // u[4i + k] holds rows 4i..4i+4, column k + 4 * (128-bit lane).
    let mut v = [_mm512_setzero_ps(); 16];
    for k in 0..4 {
        v[k] = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
        v[4 + k] = _mm512_shuffle_f32x4::<0xdd>(u[k], u[4 + k]);
        v[8 + k] = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
        v[12 + k] = _mm512_shuffle_f32x4::<0xdd>(u[8 + k], u[12 + k]);
    }
    for k in 0..8 {
        r[k] = _mm512_shuffle_f32x4::<0x88>(v[k], v[8 + k]);
        r[8 + k] = _mm512_shuffle_f32x4::<0xdd>(v[k], v[8 + k]);
    }
}

/// The blocked kernel in AVX2's 8-float vectors: [`Block::run`]'s three steps, 8 channels a block,
/// 8x8 transposes in and out.
pub(super) mod avx2 {
    use super::{Block, Padded};
    use crate::backend::cpu::depthwise::x86::vector_act;
    use std::arch::x86_64::*;

    /// Channels per block: the lanes of one vector.
    pub const LANES: usize = 8;

    /// `-1` (all bits) for the lanes a mask keeps: `MASKS[8 - n..]` keeps the first n of 8.
    static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// The first `n` (<= 8) lanes.
    #[inline(always)]
    unsafe fn lane_mask(n: usize) -> __m256i {
        unsafe { _mm256_loadu_si256(MASKS[8 - n..].as_ptr().cast()) }
    }

    /// [`Block::run`] on AVX2.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `input` and `rest` as [`super::Scratch::prepare`] gives them for this
    /// block's geometry with 8 lanes; `y` holds the block's output planes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(b: &Block, input: &mut [f32], rest: &mut [f32], y: *mut f32) {
        let g = b.g;
        let taps = b.offsets.len();
        let (out, filter) = rest.split_at_mut(g.output_len(LANES));
        assert!(input.len() >= g.input_len(LANES) && filter.len() >= (taps + 1) * LANES);
        b.fill_filter(filter, LANES);
        // SAFETY (the three steps): every pointer they form is inside the slice it came from,
        // as in the AVX-512 kernel's.
        unsafe {
            transpose_in(b, g, input.as_mut_ptr());
            taps_of(b, g, input.as_ptr(), filter.as_ptr(), out.as_mut_ptr());
            transpose_out(b, g, out.as_ptr(), y);
        }
    }

    /// The block's input planes into the padded input block, pixel-major.
    #[inline(always)]
    unsafe fn transpose_in(b: &Block, g: &Padded, input: *mut f32) {
        unsafe {
            let (ih, iw) = (g.h.input, g.w.input);
            let plane = ih * iw;
            let x = b.p.x.as_ptr().add(b.plane0 * plane);
            let (mut iy, mut ix) = (0, 0);
            for q in (0..plane).step_by(LANES) {
                let n = LANES.min(plane - q);
                let mut r = if n == LANES && b.lanes == LANES {
                    std::array::from_fn(|c| _mm256_loadu_ps(x.add(c * plane + q)))
                } else {
                    let mask = lane_mask(n);
                    let mut r = [_mm256_setzero_ps(); LANES];
                    for (c, v) in r.iter_mut().enumerate().take(b.lanes) {
                        // Masked: lanes past the plane's end are not read.
                        *v = _mm256_maskload_ps(x.add(c * plane + q), mask);
                    }
                    r
                };
                transpose8(&mut r);
                for v in r.iter().take(n) {
                    let at = ((iy + g.h.pad_begin) * g.cols + ix + g.w.pad_begin) * LANES;
                    _mm256_storeu_ps(input.add(at), *v);
                    ix += 1;
                    if ix == iw {
                        ix = 0;
                        iy += 1;
                    }
                }
            }
        }
    }

    /// Every output pixel's sums over the taps, into `out` (pixel-major, bias included).
    #[inline(always)]
    unsafe fn taps_of(b: &Block, g: &Padded, input: *const f32, filter: *const f32, out: *mut f32) {
        unsafe {
            let (oh, ow) = (g.h.output, g.w.output);
            let step = g.w.stride * LANES;
            for oy in 0..oh {
                let row = input.add(oy * g.h.stride * g.cols * LANES);
                let dst = out.add(oy * ow * LANES);
                let mut ox = 0;
                while ox + 8 <= ow {
                    tile::<8>(b, row.add(ox * step), step, filter, dst.add(ox * LANES));
                    ox += 8;
                }
                if ox + 4 <= ow {
                    tile::<4>(b, row.add(ox * step), step, filter, dst.add(ox * LANES));
                    ox += 4;
                }
                if ox + 2 <= ow {
                    tile::<2>(b, row.add(ox * step), step, filter, dst.add(ox * LANES));
                    ox += 2;
                }
                if ox < ow {
                    tile::<1>(b, row.add(ox * step), step, filter, dst.add(ox * LANES));
                }
            }
        }
    }

    /// `T` adjacent output pixels, their sums in registers over all taps.
    #[inline(always)]
    unsafe fn tile<const T: usize>(b: &Block, src: *const f32, step: usize, filter: *const f32, dst: *mut f32) {
        unsafe {
            let taps = b.offsets.len();
            let mut acc = [_mm256_loadu_ps(filter.add(taps * LANES)); T];
            for (k, &off) in b.offsets.iter().enumerate() {
                let wt = _mm256_loadu_ps(filter.add(k * LANES));
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(src.add(off + t * step)), wt, *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(dst.add(t * LANES), *a);
            }
        }
    }

    /// The sums back into the block's output planes, with the residual and the activation.
    #[inline(always)]
    unsafe fn transpose_out(b: &Block, g: &Padded, out: *const f32, y: *mut f32) {
        unsafe {
            let p = b.p;
            let plane = g.h.output * g.w.output;
            for q in (0..plane).step_by(LANES) {
                let n = LANES.min(plane - q);
                let mask = lane_mask(n);
                // Whole 8-pixel blocks: the output block is rounded up to them.
                let mut r: [__m256; LANES] = std::array::from_fn(|j| _mm256_loadu_ps(out.add((q + j) * LANES)));
                transpose8(&mut r);
                for (c, &v) in r.iter().enumerate().take(b.lanes) {
                    let at = (b.plane0 + c) * plane + q;
                    if n == LANES {
                        let v = match p.residual {
                            Some(res) => _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(at))),
                            None => v,
                        };
                        _mm256_storeu_ps(y.add(at), vector_act(p.act, v));
                    } else {
                        let v = match p.residual {
                            // Masked: lanes past the plane's end are neither read nor written.
                            Some(res) => _mm256_add_ps(v, _mm256_maskload_ps(res.as_ptr().add(at), mask)),
                            None => v,
                        };
                        _mm256_maskstore_ps(y.add(at), mask, vector_act(p.act, v));
                    }
                }
            }
        }
    }

    /// Transposes an 8x8 block in registers (`r[i]` lane `j` becomes `r[j]` lane `i`): pairs,
    /// then quads, then 128-bit halves.
    #[inline(always)]
    pub(in crate::backend::cpu) unsafe fn transpose8(r: &mut [__m256; 8]) {
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            *r = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::tests::{check_depthwise_case, ints};
    use crate::ir::Attr;

    #[test]
    fn transpose16_swaps_rows_and_columns() {
        if !Isa::Avx512.supported() {
            eprintln!("transpose16: this CPU has no AVX-512, nothing to check");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut t = [0f32; 256];
        // SAFETY: AVX-512F checked above; loads and stores stay inside `m` and `t`.
        unsafe {
            #[target_feature(enable = "avx512f")]
            unsafe fn go(m: &[f32], t: &mut [f32; 256]) {
                let mut r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(m.as_ptr().add(16 * i)));
                transpose16(&mut r);
                for (i, v) in r.iter().enumerate() {
                    _mm512_storeu_ps(t.as_mut_ptr().add(16 * i), *v);
                }
            }
            go(&m, &mut t);
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(t[16 * i + j], m[16 * j + i], "({i}, {j})");
            }
        }
    }

    #[test]
    fn transpose8_swaps_rows_and_columns() {
        if !Isa::Avx2.supported() {
            eprintln!("transpose8: this CPU has no AVX2, nothing to check");
            return;
        }
        let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let mut t = [0f32; 64];
        // SAFETY: AVX2 checked above; loads and stores stay inside `m` and `t`.
        unsafe {
            #[target_feature(enable = "avx2")]
            unsafe fn go(m: &[f32], t: &mut [f32; 64]) {
                let mut r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(m.as_ptr().add(8 * i)));
                avx2::transpose8(&mut r);
                for (i, v) in r.iter().enumerate() {
                    _mm256_storeu_ps(t.as_mut_ptr().add(8 * i), *v);
                }
            }
            go(&m, &mut t);
        }
        for i in 0..8 {
            for j in 0..8 {
                assert_eq!(t[8 * i + j], m[8 * j + i], "({i}, {j})");
            }
        }
    }

    /// Channel counts around the blocks of 8 and 16, planes 1x1 to 30x30 (square and not), strides 1 and
    /// 2 (and 3), dilation, asymmetric padding, bias, residual and activations (fused or
    /// applied after), batches of 1 and 2: all against the reference op. Which kernel ran is
    /// checked too (this one where the CPU has AVX-512 or AVX2).
    #[test]
    fn blocked_depthwise_matches_the_reference() {
        use crate::ops::fused::Activation as Act;
        let acts = [Act::None, Act::Relu, Act::Clip(0.0, 6.0), Act::HardSwish, Act::Silu];
        let mut state = 99u64;
        let mut pick = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        let (mut ran, mut blocked) = (0, 0);
        for case in 0..48 {
            let channels = [2, 5, 15, 16, 17, 31, 33, 40][case % 8];
            let (ih, iw) = match case % 6 {
                0 => (1, 1),
                1 => (30, 30),
                2 => (7, 7),
                3 => (1 + pick(30), 1 + pick(30)),
                4 => (14, 13),
                _ => (2 + pick(8), 20 + pick(11)),
            };
            let (kh, kw) = [(3, 3), (3, 3), (5, 5), (1, 1), (3, 1), (2, 4)][pick(6)];
            let s = [1, 1, 2, 2, 3][pick(5)];
            let (dh, dw) = if pick(5) == 0 { (2, 1 + pick(2)) } else { (1, 1) };
            let pads = [kh / 2, kw / 2, kh / 2, kw / 2].map(|p| if pick(4) == 0 { pick(3) } else { p });
            let batch = 1 + pick(2);
            let reach = |i: usize, k: usize, d: usize, p: usize| i + p > (k - 1) * d;
            if !reach(ih, kh, dh, pads[0] + pads[2]) || !reach(iw, kw, dw, pads[1] + pads[3]) {
                continue;
            }
            let xs = [batch, channels, ih, iw];
            let ws = [channels, 1, kh, kw];
            let attrs = vec![
                ("group", Attr::Int(channels as i64)),
                ("strides", ints(&[s as i64, s as i64])),
                ("dilations", ints(&[dh as i64, dw as i64])),
                ("pads", ints(&pads.map(|p| p as i64))),
            ];
            let name = format!("case {case}: x {xs:?} w {ws:?} stride {s} dilation {dh}x{dw} pads {pads:?}");
            let seed = 7000 + case as u64 * 10;
            let (bias, residual) = (pick(3) != 0, pick(3) == 0);
            let act = acts[pick(acts.len())];
            let kernel = check_depthwise_case(&name, &xs, &ws, attrs, seed, bias, residual, act);
            assert_eq!(kernel, "conv-depthwise", "{name}");
            ran += 1;
            let axis =
                |input: usize, kernel: usize, stride: usize, dilation: usize, pad_begin: usize, pad_end: usize| {
                    let output = (input + pad_begin + pad_end - (kernel - 1) * dilation - 1) / stride + 1;
                    Axis { input, kernel, stride, dilation, pad_begin, pad_end, output }
                };
            let (h, w) = (axis(ih, kh, s, dh, pads[0], pads[2]), axis(iw, kw, s, dw, pads[1], pads[3]));
            let probe = Depthwise { x: &[], weights: &[], bias: None, residual: None, act, channels, h, w };
            // 3x3 stride-1 planes of 24 columns and more go to the row kernel first.
            blocked += usize::from(suits(&probe) || super::super::depthwise_rows::suits(&probe));
        }
        assert!(ran >= 40, "only {ran} cases ran");
        if matches!(isa(), Isa::Avx512 | Isa::Avx2) && forced().is_none() {
            assert_eq!(blocked, ran, "cases the blocked (or row) kernel ran");
        }
    }
}
