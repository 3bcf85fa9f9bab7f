//! 3x3 and 5x5 depthwise convolution at stride 1 or 2 straight from the NCHW rows (MobileNets'
//! layers on planes of 14x14 and wider), 16 output columns in the lanes of an AVX-512 vector.
//!
//! A tile of 4 output rows by up to 4 vectors (2 for 5x5) keeps its sums in registers. Each input
//! row it reads is loaded once per vector and feeds every output row of the tile it belongs to:
//! at stride 1 one masked load per vector gives the columns at the centre of its taps, and
//! shifts across it and its neighbours the rest; at stride 2 32-column windows (two loads each)
//! give them through even/odd permutes. 3x3 filters at stride 1 run in strips of 4 vectors
//! instead, rolled down bands of rows one input row at a time ([`Plane::strips`]); on inputs
//! out of the caches, 3x3 filters at stride 2 take tiles of 2 rows by 8 vectors, which read the
//! input in the order it lies in memory ([`WIDE`]). The load masks stand in for the zero
//! columns of the padding, and input rows above and below the plane read a row of zeros. So
//! nothing is copied first: the per-plane kernel ([`super::depthwise`]) copies bands into a
//! padded scratch and the blocked one ([`super::depthwise_blocked`]) transposes 16 planes in
//! and out, which on MobileNetV2's 112x112 and 56x56 layers cost about as much again as the
//! taps (the blocked kernel ran at ~30 cycles per vector in L2, the strips at ~11).

use super::activation::{avx512, piecewise, ActivationExt};
use super::depthwise::{forced, Depthwise, Forced};
use super::isa::{isa, prefetch_pays, Cache, Isa};
use super::pool::{SharedMut, ThreadPool};
use crate::ops::window::Axis;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Output columns per vector.
pub(super) const LANES: usize = 16;
/// Output rows per tile.
const ROWS: usize = 4;
/// Vectors per tile for 3x3 filters (a row's last tile takes what is left); 5x5 tiles take 2,
/// so that 8 sums and the taps of a row stay in registers.
const VECTORS: usize = 4;
/// Vectors per wide tile: [`WIDE_ROWS`] output rows by up to 8 vectors, for 3x3 filters at stride
/// 2 on inputs out of the caches whose rows are wider than [`VECTORS`]. Such a tile reads its
/// 5 input rows one after another, whole up to 256 columns (8 vectors at stride 2), in the
/// order they lie in memory, and the hardware prefetchers keep up with that; the 4-row tiles
/// read 9 rows 512 bytes at a time, which they do not follow (asking for the input ahead got
/// those to 63% of the triad). AMD Zen 4, 128 planes of 256x256: 21 -> 33-34 GB/s, 63 -> 95%
/// of the triad (1 row by 8 vectors: 27 GB/s). At stride 1 the same tiles ran slower than the
/// 4-row ones (23 -> 16.5 GB/s): a vector's taps there cost as much as its memory, and 16 sums
/// and their taps spilled. Vectors of the last tile past the row's end load and store nothing.
/// Only rows of one wide tile (and up to [`VECTORS`] vectors after it, in 4-row tiles) take
/// them: rows of two read 5 pieces of rows at a time again, and the 4-row tiles asking ahead
/// ran 2x faster there (16 x 640x640: 1.2 against 2.4-3.1 ms; 32 x 512x512, 48 x 448x448 the
/// same), while rows of 7, 9, 10 and 12 vectors ran 1.05-1.2x faster in wide tiles.
const WIDE: usize = 8;
/// The input rows a band of stride-1 strips reads, at most, on inputs in the caches
/// ([`Plane::strips`]): the next strip finds the rows the last one shared with it in the
/// caches. Each band's strips read the two rows above it again, so the fewer bands the better
/// there (MobileNetV2's 112x112 and 56x56 layers in one band: 1.07x faster than in bands of
/// 16 rows).
pub(super) const STRIP_BAND_BYTES: usize = 64 << 10;
/// Output rows per band of strips, on inputs out of the caches, and the fewest in cache: AMD
/// Zen 4, 128 planes of 256x256, 16-row bands ran at 32 GB/s (95% of the triad), 8-row 30.5,
/// 32-row 29, 64-row (64 KiB) 18-21.
pub(super) const STRIP_ROWS: usize = 16;
/// Output rows per wide tile ([`WIDE`]).
const WIDE_ROWS: usize = 2;
/// The narrowest output rows this kernel takes: narrower ones leave too many lanes idle, and
/// the blocked kernel, all 16 lanes busy whatever the width, wins there (14 columns: as fast at
/// stride 1, 1.2x faster at stride 2; 7 columns: 1.6x slower).
const MIN_WIDTH: usize = 14;
/// Outputs of this many bytes or more are written with non-temporal stores, which bypass the
/// caches and skip reading each line before it is written: such an output cannot wait in the
/// caches for the next layer anyway, and that read is a third of the memory traffic. Measured
/// at stride 1 on 256x256 planes in huge pages, with a reader summing the output right after:
/// streamed, 8 and 16 MiB ran 1.35x slower (the reader found nothing in the caches), 24 MiB 1.1x
/// faster, 32 MiB 1.05-1.2x and 64 MiB 1.2-1.3x faster; 32 MiB is the safe side of the turn for
/// machines with larger caches (benches/RESULTS.md, session 24).
const STREAM_BYTES: usize = 32 << 20;
/// Lanes 0, 2, ..., 30 and 1, 3, ..., 31 of two vectors side by side.
pub(super) const EVEN: [u32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
pub(super) const ODD: [u32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];

thread_local! {
    /// What a thread's planes share, kept between calls.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { zeros: Vec::new(), row: Vec::new(), of: None }) };
}

/// A thread's scratch: a row of zeros for the input rows above and below the plane, and the
/// loads of each vector of a row ([`Loads::of`]), the same for every row of every plane with
/// the same width axis: worked out when that axis changes, not per tile (the masks' arithmetic
/// was a third of a stride-1 tile's instructions) nor per plane (14x14 planes ran 1.6x slower).
struct Scratch {
    zeros: Vec<f32>,
    row: Vec<Loads>,
    /// The width axis `row` is for.
    of: Option<Axis>,
}

/// Whether this kernel runs `p`: AVX-512, a 3x3 or 5x5 filter at stride 1 or 2 (the same on both
/// axes) and dilation 1, at most 4 columns and rows of padding before the plane, and output planes
/// of at least [`ROWS`] rows of [`MIN_WIDTH`] (see [`super::depthwise::forced`]).
pub fn suits(p: &Depthwise) -> bool {
    let fits = |a: &Axis| a.kernel == p.h.kernel && a.stride == p.h.stride && a.dilation == 1 && a.pad_begin <= 4;
    let chosen = match forced() {
        Some(k) => k == Forced::Rows,
        // Flatter planes (a text recogniser's 2 x 80) would waste most of a tile's rows.
        None => p.w.output >= MIN_WIDTH && p.h.output >= ROWS,
    };
    isa() == Isa::Avx512
        && matches!(p.h.stride, 1 | 2)
        && matches!(p.h.kernel, 3 | 5)
        && fits(&p.h)
        && fits(&p.w)
        && chosen
        && p.h.output * p.w.output > 0
}

/// Whether an output of `len` floats at `y` is written with streamed stores ([`STREAM_BYTES`]).
/// They need whole, aligned vectors, and an output that is final once stored (an activation
/// applied after the tiles would read it back).
fn streams(p: &Depthwise, len: usize, y: *const f32) -> bool {
    len * 4 >= STREAM_BYTES && piecewise(p.act) && whole_aligned_vectors(p, y)
}

/// Whether every vector the tiles store at `y` is whole and 64-byte aligned, as streamed stores
/// need: rows of whole vectors in an aligned buffer.
fn whole_aligned_vectors(p: &Depthwise, y: *const f32) -> bool {
    p.w.output.is_multiple_of(LANES) && (y as usize).is_multiple_of(64)
}

/// Runs the convolution into `y` (`planes` output planes), one task per plane.
pub fn run(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32]) {
    let stream = streams(p, planes * p.h.output * p.w.output, y.as_ptr());
    let out_of_cache = prefetch_pays(planes * p.h.input * p.w.input);
    run_with(pool, p, planes, y, stream, out_of_cache);
}

/// [`run`], with streamed stores or not, on an input out of the caches or not (see
/// [`Plane::out_of_cache`]).
fn run_with(pool: &ThreadPool, p: &Depthwise, planes: usize, y: &mut [f32], stream: bool, out_of_cache: bool) {
    assert!(suits(p), "depthwise_rows: needs AVX-512 and a 3x3 or 5x5 filter at stride 1 or 2");
    let taps = p.h.kernel * p.w.kernel;
    let (in_plane, out_plane) = (p.h.input * p.w.input, p.h.output * p.w.output);
    assert!(p.x.len() >= planes * in_plane && y.len() >= planes * out_plane, "depthwise: buffers too small");
    assert!(planes.is_multiple_of(p.channels), "depthwise: planes are whole images");
    assert!(p.weights.len() >= p.channels * taps && p.bias.is_none_or(|b| b.len() >= p.channels));
    assert!(p.residual.is_none_or(|r| r.len() >= planes * out_plane));
    assert!(
        !stream || whole_aligned_vectors(p, y.as_ptr()),
        "depthwise_rows: streamed stores need whole, aligned vectors"
    );
    let out = SharedMut(y.as_mut_ptr());
    pool.parallel_for_work(planes, out_plane * taps, &|i| {
        let o = out;
        let c = i % p.channels;
        SCRATCH.with(|scratch| {
            let Scratch { zeros, row, of } = &mut *scratch.borrow_mut();
            if zeros.len() < p.w.input {
                zeros.resize(p.w.input, 0.0);
            }
            if *of != Some(p.w) {
                // A wide tile's last may reach past the row's end by up to WIDE - 1 vectors.
                row.clear();
                row.extend((0..p.w.output.div_ceil(LANES) + WIDE).map(|v| Loads::of(&p.w, v)));
                *of = Some(p.w);
            }
            let job = Plane {
                x: &p.x[i * in_plane..(i + 1) * in_plane],
                zeros: &zeros[..p.w.input],
                row,
                filter: &p.weights[c * taps..(c + 1) * taps],
                bias: p.bias.map_or(0.0, |b| b[c]),
                residual: p.residual.map(|r| &r[i * out_plane..(i + 1) * out_plane]),
                stream,
                out_of_cache,
                p,
            };
            // SAFETY: each task writes only its own output plane, inside `y` (checked above).
            let y = unsafe { std::slice::from_raw_parts_mut(o.0.add(i * out_plane), out_plane) };
            // SAFETY: AVX-512F is there (`suits`); `job` holds one whole plane of each tensor;
            // with `stream`, every vector stored is whole and 64-byte aligned (checked above).
            unsafe {
                match (p.h.stride, p.h.kernel) {
                    (1, 3) => job.run::<1, 3, VECTORS>(y),
                    (_, 3) => job.run::<2, 3, VECTORS>(y),
                    (1, _) => job.run::<1, 5, 2>(y),
                    _ => job.run::<2, 5, 2>(y),
                }
                if stream {
                    // Streamed stores are weakly ordered: done before the pool reports the
                    // plane written.
                    _mm_sfence();
                }
            };
            if !piecewise(p.act) {
                p.act.apply(y);
            }
        });
    });
}

/// One plane of the problem.
struct Plane<'a> {
    x: &'a [f32],
    /// `w.input` zeros: the padding rows.
    zeros: &'a [f32],
    /// The loads of each vector of a row ([`Loads::of`]).
    row: &'a [Loads],
    filter: &'a [f32],
    bias: f32,
    residual: Option<&'a [f32]>,
    /// Whether the tiles write with non-temporal stores (see [`STREAM_BYTES`]); then every
    /// vector stored is whole and 64-byte aligned.
    stream: bool,
    /// Whether the input is too large for the caches ([`prefetch_pays`]): then 3x3 filters at
    /// stride 2 on rows of 5 to 12 vectors run in wide tiles ([`WIDE`]), and the other tiles
    /// ask for their input ahead.
    out_of_cache: bool,
    p: &'a Depthwise<'a>,
}

/// The loads of one vector of output columns from an input row: the column its first load
/// starts at, and per load the lanes inside the row (the others read as zeros).
#[derive(Clone, Copy)]
struct Loads {
    first: isize,
    /// Stride 1: the vectors before, at and after the centre columns of the taps; stride 2: two
    /// per window.
    masks: [__mmask16; 6],
    /// The output columns inside the row (the lanes stored).
    store: __mmask16,
}

impl Loads {
    /// Where vector `v` of a row of axis `w` loads from: at stride 1 the 16 columns before
    /// those at the centre of its taps (from `first`), those (`first + 16`) and the 16 after;
    /// at stride 2 48 columns from `first` for 3x3, else one 32-column window per two filter
    /// columns (from `first`, `first + 2`, ..., 16 columns a load).
    fn of(w: &Axis, v: usize) -> Loads {
        let (s, k) = (w.stride, w.kernel);
        let x0 = v * LANES;
        let first = match s {
            1 => x0 as isize - w.pad_begin as isize + (k / 2) as isize - LANES as isize,
            _ => (s * x0) as isize - w.pad_begin as isize,
        };
        // The lanes of a 16-column load from column `at` that lie inside the row.
        let inside = |at: isize| -> __mmask16 {
            let lo = (-at).clamp(0, LANES as isize) as u32;
            let hi = (w.input as isize - at).clamp(0, LANES as isize) as u32;
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
        };
        let mut masks = [0; 6];
        for (i, m) in masks.iter_mut().enumerate() {
            *m = match s {
                // Stride 1, and 3x3 at stride 2: three vectors side by side.
                _ if i < 3 && (s == 1 || k == 3) => inside(first + (i * LANES) as isize),
                2 if i < 2 * k.div_ceil(2) => inside(first + (i / 2 * 2 + i % 2 * LANES) as isize),
                _ => 0,
            };
        }
        // Vectors past the row's end (a wide tile's last) store nothing and load nothing.
        let n = LANES.min(w.output.saturating_sub(x0));
        Loads { first, masks, store: ((1u32 << n) - 1) as __mmask16 }
    }
}

impl Plane<'_> {
    /// # Safety
    /// Needs AVX-512F; `self.x` holds a whole input plane, `self.residual` and `y` a whole output
    /// plane.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const S: usize, const K: usize, const V: usize>(&self, y: &mut [f32]) {
        let vectors = self.p.w.output.div_ceil(LANES);
        if S == 1 && K == 3 {
            self.strips(y);
            return;
        }
        let mut first = 0;
        if S == 2 && K == 3 && self.out_of_cache && (VECTORS + 1..=WIDE + VECTORS).contains(&vectors) {
            // A last wide tile of up to VECTORS vectors would mostly compute columns past the
            // row's end: those vectors run in the 4-row tiles below, after the wide ones (the
            // plane is in the caches by then).
            let wide = match vectors % WIDE {
                rest if rest <= VECTORS => vectors - rest,
                _ => vectors,
            };
            for oy in (0..self.p.h.output).step_by(WIDE_ROWS) {
                for v0 in (0..wide).step_by(WIDE) {
                    self.tile::<S, K, WIDE_ROWS, WIDE>(oy, v0, y);
                }
            }
            first = wide;
        }
        for oy in (0..self.p.h.output).step_by(ROWS) {
            let mut v0 = first;
            while v0 + V <= vectors {
                if self.out_of_cache {
                    self.prefetch_next_band(oy, v0..v0 + V);
                }
                self.tile::<S, K, ROWS, V>(oy, v0, y);
                v0 += V;
            }
            // The row's last vectors, fewer than V, in tiles of 2 and 1 (one instance of each,
            // not one per count; none of 2 where V is 2, as for 5x5 filters): the shared
            // library's size budget.
            if self.out_of_cache && v0 < vectors {
                self.prefetch_next_band(oy, v0..vectors);
            }
            while v0 < vectors {
                if V > 2 && vectors - v0 >= 2 {
                    self.tile::<S, K, ROWS, 2>(oy, v0, y);
                    v0 += 2;
                } else {
                    self.tile::<S, K, ROWS, 1>(oy, v0, y);
                    v0 += 1;
                }
            }
        }
    }

    /// 3x3 at stride 1 in strips: [`VECTORS`] vectors of columns wide (the row's last take 2 and
    /// 1), rolled down a band of output rows ([`STRIP_BAND_BYTES`]) one input row at a time.
    /// Each input row is loaded and shifted once and meets the three output rows it belongs to,
    /// whose sums stay in registers until the last of them is complete and stored. A 4-row tile
    /// reads 6 input rows for 4 output rows and keeps 16 sums; a strip reads 1 per output row
    /// and keeps 12, and LLVM schedules its short loop as written (the 4x4 tiles ran at ~17
    /// cycles a vector here in cache, and from build to build anywhere from 13 to 20 as their
    /// 16 sums spilled or not; the strips at ~11).
    ///
    /// # Safety
    /// Needs AVX-512F; as [`Plane::run`].
    #[inline(always)]
    unsafe fn strips(&self, y: &mut [f32]) {
        let (h, w) = (&self.p.h, &self.p.w);
        let vectors = w.output.div_ceil(LANES);
        let band = if self.out_of_cache { STRIP_ROWS } else { (STRIP_BAND_BYTES / (4 * w.input)).max(STRIP_ROWS) };
        for top in (0..h.output).step_by(band) {
            let rows = top..(top + band).min(h.output);
            let mut v0 = 0;
            while v0 < vectors {
                // One instance for each width (the shared library's size budget).
                let width = match vectors - v0 {
                    n if n >= VECTORS => VECTORS,
                    n if n >= 2 => 2,
                    _ => 1,
                };
                if self.out_of_cache {
                    // The input rows the next band reads and this one does not.
                    let end_of = |oy: usize| (oy + 2).saturating_sub(h.pad_begin).min(h.input);
                    self.prefetch_input(end_of(rows.end)..end_of(rows.end + band), v0..v0 + width);
                }
                match width {
                    VECTORS => self.strip::<VECTORS>(rows.clone(), v0, y),
                    2 => self.strip::<2>(rows.clone(), v0, y),
                    _ => self.strip::<1>(rows.clone(), v0, y),
                }
                v0 += width;
            }
        }
    }

    /// Output rows `rows` by vectors `v0..v0 + V` of columns, 3x3 at stride 1 (see
    /// [`Plane::strips`]).
    ///
    /// # Safety
    /// Needs AVX-512F; as [`Plane::run`].
    #[inline(always)]
    unsafe fn strip<const V: usize>(&self, rows: std::ops::Range<usize>, v0: usize, y: &mut [f32]) {
        let (h, w) = (&self.p.h, &self.p.w);
        let loads: [Loads; V] = std::array::from_fn(|v| self.row[v0 + v]);
        let weights: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(self.filter[t]));
        let bias = _mm512_set1_ps(self.bias);
        // Step j reads input row j - pad_begin: filter row 2 of output row j - 2 (sums[0]),
        // row 1 of output row j - 1 (sums[1]) and row 0 of output row j (sums[2]). Output row
        // j - 2 is then complete; the first two steps' sums[0] and sums[1] are for rows before
        // the band, and are not stored.
        let mut sums = [[bias; V]; 3];
        for j in rows.start..rows.end + 2 {
            let row = self.row_at(j as isize - h.pad_begin as isize);
            let mut window = [Self::load(row, &loads[0], 0, 0), Self::load(row, &loads[0], 1, LANES)];
            for (v, l) in loads.iter().enumerate() {
                let next = Self::load(row, l, 2, 2 * LANES);
                let taps = Self::shifted::<3>(window[0], window[1], next);
                window = [window[1], next];
                for (k, sums) in sums.iter_mut().enumerate() {
                    let ky = 2 - k;
                    for (kx, t) in taps.iter().enumerate() {
                        sums[v] = _mm512_fmadd_ps(*t, weights[ky * 3 + kx], sums[v]);
                    }
                }
            }
            if j >= rows.start + 2 {
                let at = (j - 2) * w.output + v0 * LANES;
                for (v, l) in loads.iter().enumerate() {
                    self.put(at + v * LANES, l.store, sums[0][v], y);
                }
            }
            sums = [sums[1], sums[2], [bias; V]];
        }
    }

    /// Input row `iy`, or a row of zeros for rows outside the plane (padding, or rows past the
    /// output's end).
    #[inline(always)]
    fn row_at(&self, iy: isize) -> *const f32 {
        if (0..self.p.h.input as isize).contains(&iy) {
            self.x[iy as usize * self.p.w.input..].as_ptr()
        } else {
            self.zeros.as_ptr()
        }
    }

    /// Asks for the input that the band of output rows after next (from `oy + 2 * ROWS`) reads
    /// and the one before it does not, under the output vectors `vectors`: a tile's share at a
    /// time, into the second-level cache. A plane's rows are read a few KiB at a time, too little
    /// for the hardware prefetchers of some cores: on AMD Zen 4, 128 planes of 256x256 ran at
    /// 10.7 -> 22 GB/s at stride 2 and 14.5 -> 19.6 at stride 1 with it (into the first-level
    /// cache, or one band ahead: 10-18 GB/s at stride 2). Not generic and not inlined: one copy
    /// for every tile instance (the shared library's size budget); a call per tile costs nothing
    /// next to the tile.
    #[inline(never)]
    fn prefetch_next_band(&self, oy: usize, vectors: std::ops::Range<usize>) {
        let h = &self.p.h;
        let (s, k) = (h.stride, h.kernel);
        // Input rows of band `b`: from s * b - pad_begin, (ROWS - 1) * s + k of them.
        let end_of = |b: usize| (s * b + (ROWS - 1) * s + k).saturating_sub(h.pad_begin).min(h.input);
        self.prefetch_input(end_of(oy + ROWS)..end_of(oy + 2 * ROWS), vectors);
    }

    /// Asks for input rows `rows` under the output vectors `vectors`, into the second-level
    /// cache.
    fn prefetch_input(&self, rows: std::ops::Range<usize>, vectors: std::ops::Range<usize>) {
        let (s, w) = (self.p.w.stride, &self.p.w);
        let first = (s * vectors.start * LANES).saturating_sub(w.pad_begin).min(w.input);
        let last = (s * vectors.end * LANES).min(w.input);
        for r in rows {
            if let Some(columns) = self.x.get(r * w.input + first..r * w.input + last) {
                super::isa::prefetch(columns, Cache::L2);
            }
        }
    }

    /// The taps of one vector of output columns at stride 2 from input row `row`, one per
    /// filter column.
    ///
    /// # Safety
    /// Needs AVX-512F; `row` is a whole input row.
    #[inline(always)]
    unsafe fn taps<const K: usize>(row: *const f32, l: &Loads) -> [__m512; K] {
        let mut taps = [_mm512_setzero_ps(); K];
        let (even, odd) = (_mm512_loadu_si512(EVEN.as_ptr().cast()), _mm512_loadu_si512(ODD.as_ptr().cast()));
        if K == 3 {
            // Columns first.. in a and b, the 16 after in c (the next vector's a): filter column
            // 2 reads those of column 0 one lane on, and c's first. Two loads and masks fewer
            // per vector than the windows below, whose masks outnumbered the mask registers.
            let (a, b, c) = (Self::load(row, l, 0, 0), Self::load(row, l, 1, LANES), Self::load(row, l, 2, 2 * LANES));
            taps[0] = _mm512_permutex2var_ps(a, even, b);
            taps[1] = _mm512_permutex2var_ps(a, odd, b);
            taps[2] = align::<1>(c, taps[0]);
            return taps;
        }
        // Window j holds columns first + 2j .. first + 2j + 32: filter columns 2j (its even
        // lanes) and 2j + 1 (its odd ones).
        for j in 0..K.div_ceil(2) {
            let (a, b) = (Self::load(row, l, 2 * j, 2 * j), Self::load(row, l, 2 * j + 1, 2 * j + LANES));
            taps[2 * j] = _mm512_permutex2var_ps(a, even, b);
            if 2 * j + 1 < K {
                taps[2 * j + 1] = _mm512_permutex2var_ps(a, odd, b);
            }
        }
        taps
    }

    /// The taps of one vector of output columns at stride 1 from the vectors `cur` at the
    /// centre columns of its taps and `prev` and `next` beside it, shifted across each pair
    /// (valignd): three loads at columns 1 apart would split two cache lines per vector, and
    /// ran 1.45x slower in cache than one load and two shifts.
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[inline(always)]
    unsafe fn shifted<const K: usize>(prev: __m512, cur: __m512, next: __m512) -> [__m512; K] {
        let mut taps = [cur; K];
        for (kx, t) in taps.iter_mut().enumerate() {
            // Filter column kx reads kx - K / 2 columns from the centre.
            *t = match kx as isize - (K / 2) as isize {
                -2 => align::<14>(cur, prev),
                -1 => align::<15>(cur, prev),
                0 => cur,
                1 => align::<1>(next, cur),
                _ => align::<2>(next, cur),
            };
        }
        taps
    }

    /// Load `i` of a vector's loads from `row`: 16 columns from column `l.first + at`.
    ///
    /// # Safety
    /// Needs AVX-512F; `row` is a whole input row. The load is masked: lanes outside the row are
    /// neither read nor used, so a pointer before the row's start or past its end
    /// (`wrapping_offset`) is never dereferenced there.
    #[inline(always)]
    unsafe fn load(row: *const f32, l: &Loads, i: usize, at: usize) -> __m512 {
        _mm512_maskz_loadu_ps(l.masks[i], row.wrapping_offset(l.first + at as isize))
    }

    /// Output rows `oy..oy + R` (those inside the plane) by vectors `v0..v0 + V` of columns.
    /// Every loop has a constant trip count, so that it unrolls and the sums stay in registers.
    ///
    /// # Safety
    /// Needs AVX-512F; as [`Plane::run`].
    #[inline(always)]
    unsafe fn tile<const S: usize, const K: usize, const R: usize, const V: usize>(
        &self,
        oy: usize,
        v0: usize,
        y: &mut [f32],
    ) {
        let h = &self.p.h;
        let loads: [Loads; V] = std::array::from_fn(|v| self.row[v0 + v]);
        // 3x3: the 9 weights stay in registers beside the sums and 3 taps; 5x5's 25 would not,
        // and are broadcast from the filter at each use.
        let mut weights = [_mm512_setzero_ps(); 9];
        if K == 3 {
            for (t, wt) in weights.iter_mut().enumerate() {
                *wt = _mm512_set1_ps(self.filter[t]);
            }
        }
        let mut acc = [[_mm512_set1_ps(self.bias); V]; R];
        let x0 = v0 * LANES;
        let top = (S * oy) as isize - h.pad_begin as isize;
        // One call per input row, each with its row number written out, so that every filter
        // row index is a constant: a loop over the rows was left to the compiler to unroll,
        // which it did or not from build to build (the tile is near its limit; one build kept
        // a 3x3 instance's loop, its sums indexed on the stack).
        macro_rules! input_rows {
            ($($ir:literal)*) => {
                $(if $ir < (R - 1) * S + K {
                    self.input_row::<S, K, R, V>($ir, top, &loads, &weights, &mut acc);
                })*
            };
        }
        const { assert!((R - 1) * S + K <= 11, "input_rows! lists 11 rows") };
        input_rows!(0 1 2 3 4 5 6 7 8 9 10);
        let stores = std::array::from_fn(|v| loads[v].store);
        self.store::<R, V>(oy, x0, &acc, &stores, y);
    }

    /// Stores the sums `acc` of a tile at output rows `oy..oy + R` (those inside the plane)
    /// and vectors of columns from `x0`, the lanes `stores` of each, with the residual added
    /// and the activation applied. Not inlined: one copy per tile width, not one per filter
    /// and stride, and the tile keeps its sums in registers to the end (a loop over them
    /// inside it made LLVM keep them in memory, stored after every update).
    ///
    /// # Safety
    /// Needs AVX-512F; as [`Plane::run`].
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize, const V: usize>(
        &self,
        oy: usize,
        x0: usize,
        acc: &[[__m512; V]; R],
        stores: &[__mmask16; V],
        y: &mut [f32],
    ) {
        let (h, w) = (&self.p.h, &self.p.w);
        for (r, sums) in acc.iter().enumerate() {
            let row = oy + r;
            if row >= h.output {
                break;
            }
            for (v, &mask) in stores.iter().enumerate() {
                self.put(row * w.output + x0 + v * LANES, mask, sums[v], y);
            }
        }
    }

    /// Stores the sums `s` of one vector at `y[at..]`, the lanes `mask`, with the residual
    /// added and the activation applied.
    ///
    /// # Safety
    /// Needs AVX-512F; the vector lies inside `y`'s plane, as [`Plane::run`].
    #[inline(always)]
    unsafe fn put(&self, at: usize, mask: __mmask16, s: __m512, y: &mut [f32]) {
        if mask == 0 {
            // Past the row's end (a wide tile's last vectors): nothing to store, and a streamed
            // store would write whole.
            return;
        }
        let mut s = s;
        if let Some(res) = self.residual {
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(mask, res.as_ptr().add(at)));
        }
        let s = avx512::apply_piecewise(self.p.act, s);
        if self.stream {
            _mm512_stream_ps(y.as_mut_ptr().add(at), s);
        } else if mask == u16::MAX {
            _mm512_storeu_ps(y.as_mut_ptr().add(at), s);
        } else {
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(at), mask, s);
        }
    }

    /// Adds input row `ir` of a tile (counted from `top`, the first row the tile reads) times
    /// the filter rows it meets into the sums of the tile's output rows.
    ///
    /// # Safety
    /// Needs AVX-512F; as [`Plane::run`].
    #[inline(always)]
    unsafe fn input_row<const S: usize, const K: usize, const R: usize, const V: usize>(
        &self,
        ir: usize,
        top: isize,
        loads: &[Loads; V],
        weights: &[__m512; 9],
        acc: &mut [[__m512; V]; R],
    ) {
        // Rows outside the plane (padding, or rows of a last tile past the output's end) read
        // zeros.
        let iy = top + ir as isize;
        let row = if (0..self.p.h.input as isize).contains(&iy) {
            self.x.as_ptr().add(iy as usize * self.p.w.input)
        } else {
            self.zeros.as_ptr()
        };
        // Stride 1: the vectors before and at the centre columns of the first vector's taps;
        // each vector loads the one after its own.
        let mut window = [_mm512_setzero_ps(); 2];
        if S == 1 {
            window = [Self::load(row, &loads[0], 0, 0), Self::load(row, &loads[0], 1, LANES)];
        }
        for (v, l) in loads.iter().enumerate() {
            let taps = if S == 1 {
                let next = Self::load(row, l, 2, 2 * LANES);
                let taps = Self::shifted::<K>(window[0], window[1], next);
                window = [window[1], next];
                taps
            } else {
                Self::taps::<K>(row, l)
            };
            for (r, sums) in acc.iter_mut().enumerate() {
                // Input row ir is filter row ir - S * r of output row r.
                let ky = ir.wrapping_sub(S * r);
                if ky < K {
                    for (kx, t) in taps.iter().enumerate() {
                        let wt = if K == 3 { weights[ky * K + kx] } else { _mm512_set1_ps(self.filter[ky * K + kx]) };
                        sums[v] = _mm512_fmadd_ps(*t, wt, sums[v]);
                    }
                }
            }
        }
    }
}

/// Lanes `N..N + 16` of `lo` and `hi` side by side (valignd). Written out, because LLVM turns
/// `_mm512_alignr_epi32` into a two-source permute whose index takes a register of its own,
/// and a 3x3 tile has none to spare (its sums spilled to the stack).
///
/// # Safety
/// Needs AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn align<const N: i32>(hi: __m512, lo: __m512) -> __m512 {
    let out: __m512;
    // SAFETY: valignd reads and writes registers only, and AVX-512F is there (the caller's
    // contract).
    unsafe {
        std::arch::asm!(
            "valignd {out}, {hi}, {lo}, {n}",
            out = lateout(zmm_reg) out,
            hi = in(zmm_reg) hi,
            lo = in(zmm_reg) lo,
            n = const N,
            options(pure, nomem, nostack),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::tests::{check_depthwise_case, ints};
    use crate::ir::Attr;

    /// `n` floats from a 64-byte boundary of `buf`, filled by `f`; the rest of `buf` is NaN.
    fn aligned(buf: &mut Vec<f32>, n: usize, f: impl Fn(usize) -> f32) -> &mut [f32] {
        *buf = vec![f32::NAN; n + LANES];
        let skip = buf.as_ptr().align_offset(64);
        let out = &mut buf[skip..skip + n];
        out.iter_mut().enumerate().for_each(|(i, v)| *v = f(i));
        out
    }

    /// 3x3 at stride 1 on rows wider than [`STRIP_BAND_BYTES`] / 4 / [`STRIP_ROWS`] runs in
    /// bands of strips in the caches too: planes of 37 rows (bands of 16, 16 and 5) with each
    /// padding, bias, residual and activation, against the reference.
    #[test]
    fn strips_in_bands_match_the_reference() {
        use crate::ops::fused::Activation as Act;
        let width = STRIP_BAND_BYTES / 4 / STRIP_ROWS + 37;
        let pads = [[1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1], [2, 2, 0, 0]];
        let acts = [Act::Clip(0.0, 6.0), Act::None, Act::HardSwish, Act::Relu];
        for (case, (pads, act)) in pads.into_iter().zip(acts).enumerate() {
            let xs = [1, 2, 37 + 2 - pads[0] - pads[2], width];
            let attrs = vec![("group", Attr::Int(2)), ("pads", ints(&pads.map(|p| p as i64)))];
            let name = format!("strips case {case}: x {xs:?} pads {pads:?} {act:?}");
            let ran = check_depthwise_case(
                &name,
                &xs,
                &[2, 1, 3, 3],
                attrs,
                9700 + case as u64,
                case != 1,
                case % 2 == 0,
                act,
            );
            assert_eq!(ran, "conv-depthwise", "{name}");
        }
    }

    /// The tiles for inputs out of the caches (asking for the input ahead, or wide tiles), with
    /// streamed stores where the rows are whole vectors, write what the tiles for inputs in the
    /// caches do with plain stores, bit for bit (those are checked against the reference
    /// above): 3x3 and 5x5, strides 1 and 2, widths of 1 to 5 vectors and, for the wide tiles
    /// of 3x3 at stride 2, 5 to 10 (a last wide tile whole or part filled, or the row's last
    /// 1 or 2 vectors in 4-row tiles after the wide ones), bias, residual, fused and unfused
    /// activations, planes on 1 and 2 threads.
    #[test]
    fn out_of_cache_tiles_write_what_the_others_do() {
        use crate::ops::fused::Activation as Act;
        if isa() != Isa::Avx512 {
            eprintln!("depthwise_rows: no AVX-512 here, so no streamed stores to check");
            return;
        }
        let acts = [Act::None, Act::Clip(0.0, 6.0), Act::HardSwish, Act::Silu];
        let widths = [(3, 1, 16), (3, 2, 48), (5, 1, 80), (5, 2, 32), (3, 1, 64)];
        let wide = [(3, 2, 80), (3, 2, 112), (3, 2, 128), (3, 2, 150), (3, 2, 160), (3, 2, 129)];
        for (case, (k, stride, out_w)) in widths.into_iter().chain(wide).enumerate() {
            let pad = k / 2;
            let axis = |output: usize| {
                let input = (output - 1) * stride + k - 2 * pad;
                Axis { input, kernel: k, stride, dilation: 1, pad_begin: pad, pad_end: pad, output }
            };
            // 3x3 at stride 1 runs in strips: 40 rows are bands of 16, 16 and 8 out of the
            // caches, one band in them.
            let (h, w) = (axis(if (k, stride) == (3, 1) { 40 } else { 9 }), axis(out_w));
            let channels = 3;
            let planes = 2 * channels;
            let (in_plane, out_plane) = (h.input * w.input, h.output * w.output);
            let x: Vec<f32> = (0..planes * in_plane).map(|i| ((i * 7919) % 113) as f32 / 37.0 - 1.5).collect();
            let weights: Vec<f32> = (0..channels * k * k).map(|i| ((i * 31) % 17) as f32 / 9.0 - 0.9).collect();
            let bias: Vec<f32> = (0..channels).map(|c| c as f32 * 0.25 - 0.3).collect();
            let residual: Vec<f32> = (0..planes * out_plane).map(|i| (i % 5) as f32 * 0.1).collect();
            let p = Depthwise {
                x: &x,
                weights: &weights,
                bias: (case % 2 == 0).then_some(&bias[..]),
                residual: (case % 3 == 1).then_some(&residual[..]),
                act: acts[case % acts.len()],
                channels,
                h,
                w,
            };
            let (mut plain_buf, mut streamed_buf) = (vec![], vec![]);
            let plain = aligned(&mut plain_buf, planes * out_plane, |_| f32::NAN);
            let streamed = aligned(&mut streamed_buf, planes * out_plane, |_| f32::NAN);
            let pool = ThreadPool::new(1 + case % 2);
            run_with(&pool, &p, planes, plain, false, false);
            run_with(&pool, &p, planes, streamed, out_w % LANES == 0, true);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert!(plain.iter().all(|v| v.is_finite()), "case {case}: an output left unwritten");
            assert_eq!(bits(plain), bits(streamed), "case {case}: {k}x{k} stride {stride}, {out_w} columns");
            for buf in [&plain_buf, &streamed_buf] {
                let untouched = buf.iter().filter(|v| v.is_nan()).count();
                assert_eq!(untouched, LANES, "case {case}: a store outside the output");
            }
        }
    }

    /// Outputs of [`STREAM_BYTES`] or more are streamed, when they are whole aligned vectors
    /// and final once stored; smaller ones, rows that end mid-vector, unaligned buffers and
    /// activations applied after the tiles are not.
    #[test]
    fn only_large_aligned_final_outputs_stream() {
        use crate::ops::fused::Activation as Act;
        let axis =
            |output: usize| Axis { input: output, kernel: 3, stride: 1, dilation: 1, pad_begin: 1, pad_end: 1, output };
        let probe = |width: usize, act: Act| Depthwise {
            x: &[],
            weights: &[],
            bias: None,
            residual: None,
            act,
            channels: 1,
            h: axis(256),
            w: axis(width),
        };
        let big = STREAM_BYTES / 4;
        let at = 4096 as *const f32;
        assert!(streams(&probe(256, Act::Relu), big, at));
        assert!(streams(&probe(256, Act::HardSwish), big, at));
        assert!(!streams(&probe(256, Act::Relu), big - 1, at), "below the size");
        assert!(!streams(&probe(250, Act::Relu), big, at), "rows end mid-vector");
        assert!(!streams(&probe(256, Act::Relu), big, at.wrapping_add(1)), "unaligned");
        assert!(!streams(&probe(256, Act::Silu), big, at), "an activation applied after");
    }

    /// 3x3 and 5x5 filters at strides 1 and 2, padding of 0 to 4 before and after (square and
    /// not), output widths
    /// around the vector and tile edges (24 to 100: one to seven vectors, partial last vectors,
    /// more than one tile per row), heights from 1 row to a few tiles (partial last tiles),
    /// channel counts, bias, residual and every activation (fused or applied after), batches of
    /// 1 and 2: against the reference op, and this kernel is the one that ran.
    #[test]
    fn row_depthwise_matches_the_reference() {
        use crate::ops::fused::Activation as Act;
        let acts = [Act::None, Act::Relu, Act::Clip(0.0, 6.0), Act::HardSwish, Act::Silu];
        let mut state = 7u64;
        let mut pick = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % n as u64) as usize
        };
        let (mut rows, mut tall) = (0, 0);
        let cases = 64;
        for case in 0..cases {
            let channels = [2, 3, 16, 17][pick(4)];
            let stride = 1 + case % 2;
            let k = [3, 5][case / 2 % 2];
            let pads = match k {
                3 => [[1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [2, 1, 2, 1], [1, 0, 1, 2]][pick(5)],
                _ => [[2, 2, 2, 2], [0, 0, 2, 2], [2, 2, 0, 0], [4, 3, 4, 3], [2, 1, 2, 3]][pick(5)],
            };
            // Input sizes from the output sizes wanted.
            let input =
                |out: usize, begin: usize, end: usize| ((out - 1) * stride + k).saturating_sub(begin + end).max(1);
            let ow = [24, 25, 31, 32, 33, 47, 48, 63, 64, 65, 70, 100][pick(12)];
            let oh = [1, 2, 3, 4, 5, 7, 8, 9, 13][pick(9)];
            let (ih, iw) = (input(oh, pads[0], pads[2]) + pick(stride), input(ow, pads[1], pads[3]) + pick(stride));
            let batch = 1 + pick(2);
            let xs = [batch, channels, ih, iw];
            let ws = [channels, 1, k, k];
            let attrs = vec![
                ("group", Attr::Int(channels as i64)),
                ("strides", ints(&[stride as i64, stride as i64])),
                ("pads", ints(&pads.map(|p| p as i64))),
            ];
            let name = format!("case {case}: x {xs:?} {k}x{k} stride {stride} pads {pads:?}");
            let seed = 9100 + case as u64 * 10;
            let (bias, residual) = (pick(3) != 0, pick(3) == 0);
            let act = acts[pick(acts.len())];
            let ran = check_depthwise_case(&name, &xs, &ws, attrs, seed, bias, residual, act);
            assert_eq!(ran, "conv-depthwise", "{name}");
            let axis = |input: usize, pad_begin: usize, pad_end: usize| {
                let output = (input + pad_begin + pad_end - k) / stride + 1;
                Axis { input, kernel: k, stride, dilation: 1, pad_begin, pad_end, output }
            };
            let (h, w) = (axis(ih, pads[0], pads[2]), axis(iw, pads[1], pads[3]));
            let probe = Depthwise { x: &[], weights: &[], bias: None, residual: None, act, channels, h, w };
            rows += usize::from(suits(&probe));
            tall += usize::from(h.output >= ROWS);
        }
        if isa() == Isa::Avx512 && forced().is_none() {
            assert!(tall >= cases / 2, "only {tall} cases of {ROWS} rows or more");
            assert_eq!(rows, tall, "cases the row kernel ran");
        } else {
            eprintln!("depthwise_rows: no AVX-512 here (or CRX580_DEPTHWISE is set): the cases ran on another kernel");
        }
    }
}
