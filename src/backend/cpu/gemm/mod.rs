//! f32 GEMM: `C = A · B` (m x k by k x n, C row-major with row stride `ldc`) with packing, cache
//! blocking, a tile grid spread over the thread pool, and a fused epilogue (bias, activation).
//!
//! The loop nest follows BLIS/MLAS: per task (a tile of C), per `KC` slice of k, the B panels of
//! the tile's columns are packed (NR columns each, k-major) and the A panels of its rows (MR rows
//! each), then the micro-kernel runs on every MR x NR block. Constant operands (weights) are packed
//! once at prepare time ([`PackedA`], [`PackedB`]) in the order the loop nest reads them: k slice
//! by k slice, and within a slice panel after panel. The first pass over a slice then streams it
//! from memory as one run that the hardware prefetcher follows, where panels holding all of k
//! left short runs far apart (a 3x3 conv's weights read from DRAM at a fraction of the bandwidth:
//! ResNet-50's layer-3 weights no longer fit the caches when the whole model runs).

mod micro;

pub use micro::{micro_for, Ahead, CopyingKernel, Kernel, Micro};

use super::activation::{Activation, ActivationExt};
use super::chunks::{ChunkBuf, Scratch};
use super::pool::{SharedMut, ThreadPool, MIN_PARALLEL_WORK};
use std::cell::RefCell;
use std::ops::Range;

/// Most depth of one k slice: a B micro-panel (KC x NR floats, 24 KiB for AVX-512's 32 columns)
/// stays in Zen 4's 32 KiB L1d while A panels stream by from L2. k is cut into equal slices of at
/// most this (576 = 3 x 192, not 2 x 256 + 64).
const KC: usize = 192;

/// The depth of every k slice but the last (which may be shorter): k cut into equal slices of at
/// most [`KC`].
fn slice_depth(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC).max(1)).max(1)
}

/// Where rows `rows` of panel `p` lie in an operand of `panels` panels of `width` lanes packed
/// slice-major, when they lie in k slice `slice`: after the slices before it, and the panels
/// before `p` in it. (No division: the GEMM asks for one per micro-kernel call.)
fn slice_rows(panels: usize, width: usize, p: usize, slice: &Range<usize>, rows: Range<usize>) -> Range<usize> {
    debug_assert!(slice.start <= rows.start && rows.end <= slice.end, "rows {rows:?} outside k slice {slice:?}");
    let start = (slice.start * panels + p * slice.len()) * width + (rows.start - slice.start) * width;
    start..start + rows.len() * width
}

/// The k slice (as [`pack_slices`] cuts k) that holds row `i`.
fn slice_of(k: usize, i: usize) -> Range<usize> {
    let depth = slice_depth(k);
    let start = i / depth * depth;
    start..(start + depth).min(k)
}

/// Packs an operand of `panels` panels of `width` lanes over all of `k`, slice-major:
/// `pack(p, k0, kc, out)` packs rows `k0..k0 + kc` of panel `p`.
fn pack_slices(k: usize, panels: usize, width: usize, pack: impl Fn(usize, usize, usize, &mut [f32])) -> ChunkBuf {
    let mut data = ChunkBuf::zeroed(panels * width * k);
    let depth = slice_depth(k);
    for k0 in (0..k).step_by(depth) {
        let kc = depth.min(k - k0);
        for p in 0..panels {
            let slice = k0..k0 + kc;
            pack(p, k0, kc, &mut data[slice_rows(panels, width, p, &slice, slice.clone())]);
        }
    }
    data
}
/// Rows of one task's tile: MC x KC of A (288 KiB) stays in the 1 MiB L2. Convolutions have up to
/// a few hundred output channels, so one tile takes them all and each B panel is packed once.
const MC: usize = 384;
/// Columns of C the epilogue is applied to at a time, once their products are complete.
const EPILOGUE_COLS: usize = 256;
/// Columns of one task's tile.
const NC: usize = 512;
/// Floats from which an operand packed per run is asked for ahead of its packing ([`Ahead`]):
/// smaller ones (a transformer's activations at sequence 128) stay in L2 between products,
/// where asking again only costs the kernels time.
const AHEAD_FROM: usize = 1 << 18;

/// A strided f32 matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl MatRef<'_> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(data: &[f32], cols: usize) -> MatRef<'_> {
        MatRef { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &[f32], cols: usize) -> MatRef<'_> {
        MatRef { data, rs: 1, cs: cols }
    }

    /// The same matrix transposed.
    fn t(&self) -> MatRef<'_> {
        MatRef { data: self.data, rs: self.cs, cs: self.rs }
    }
}

/// Something that can write B panels: k-major, `nr` columns from column `n0`, rows `k0..k0+kc`,
/// zero past the matrix's `n` columns. Convolutions implement it to read the image directly
/// (an implicit im2col) instead of building the column matrix.
pub trait PackB: Sync {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nr: usize, n: usize, out: &mut [f32]);

    /// What [`pack_b`](Self::pack_b) with the same arguments reads, when that is a block of
    /// rows: the micro-kernels ask for it while the panel before runs. `None` when not known.
    fn source_rows(&self, _k0: usize, _kc: usize, _n0: usize, _nr: usize, _n: usize) -> Option<Rows> {
        None
    }

    /// Where panel (k0, kc, n0) of `nr` columns lies in place, when its `kc` rows are `nr`
    /// consecutive floats each (so packing it is a plain copy): the first row and the stride
    /// between rows, in floats. `None` otherwise (then [`pack_b`](Self::pack_b) packs it).
    fn panel_in_place(&self, _k0: usize, _kc: usize, _n0: usize, _nr: usize, _n: usize) -> Option<(*const f32, usize)> {
        None
    }
}

/// A block of memory that packing reads: `rows` runs of `width` floats, `stride` floats apart.
#[derive(Clone, Copy)]
pub struct Rows {
    pub first: *const f32,
    pub stride: usize,
    pub rows: usize,
    pub width: usize,
}

impl Rows {
    /// Where packing panel (k0, kc, n0) of a matrix reads, for a row-major (or transposed
    /// row-major) one.
    fn of(m: &MatRef, k0: usize, kc: usize, n0: usize, cols: usize) -> Option<Rows> {
        let first = m.data.as_ptr().wrapping_add(k0 * m.rs + n0 * m.cs);
        if m.cs == 1 {
            Some(Rows { first, stride: m.rs, rows: kc, width: cols })
        } else if m.rs == 1 {
            Some(Rows { first, stride: m.cs, rows: cols, width: kc })
        } else {
            None
        }
    }

    /// Micro-kernel call `i`'s share of the block's cache lines, when each call asks for at most
    /// `most`: one line of each of a run of rows per call (rows then lines), none past the block.
    fn share(&self, i: usize, most: usize) -> Ahead {
        const LINE: usize = 16;
        let skew = (self.first as usize / std::mem::size_of::<f32>()) % LINE;
        // Rows a whole number of lines apart start at the same place in their lines; others
        // may reach one line further past the first row's span.
        let lines = (skew + self.width).div_ceil(LINE) + usize::from(!self.stride.is_multiple_of(LINE));
        let most = most.max(1);
        let chunks = self.rows.div_ceil(most);
        if self.width == 0 || i >= lines * chunks {
            return Ahead::NONE;
        }
        let (line, start) = (i / chunks, (i % chunks) * most);
        let at = self.first.wrapping_sub(skew).wrapping_add(start * self.stride + line * LINE);
        Ahead { at, stride: self.stride, count: most.min(self.rows - start) }
    }
}

impl PackB for MatRef<'_> {
    fn pack_b(&self, k0: usize, kc: usize, n0: usize, nr: usize, n: usize, out: &mut [f32]) {
        let valid = nr.min(n - n0);
        for (k, row) in out.chunks_exact_mut(nr).take(kc).enumerate() {
            let base = (k0 + k) * self.rs + n0 * self.cs;
            if self.cs == 1 {
                row[..valid].copy_from_slice(&self.data[base..base + valid]);
            } else {
                for (j, v) in row[..valid].iter_mut().enumerate() {
                    *v = self.data[base + j * self.cs];
                }
            }
            row[valid..].fill(0.0);
        }
    }

    fn source_rows(&self, k0: usize, kc: usize, n0: usize, nr: usize, n: usize) -> Option<Rows> {
        Rows::of(self, k0, kc, n0, nr.min(n - n0))
    }

    fn panel_in_place(&self, k0: usize, kc: usize, n0: usize, nr: usize, n: usize) -> Option<(*const f32, usize)> {
        let first = k0 * self.rs + n0;
        let inside = kc > 0 && n0 + nr <= n && first + (kc - 1) * self.rs + nr <= self.data.len();
        (self.cs == 1 && inside).then(|| (self.data[first..].as_ptr(), self.rs))
    }
}

/// Writes one A panel: `mr` rows from row `m0` (zero past `m`), columns `k0..k0+kc`, k-major.
fn pack_a(a: &MatRef, m0: usize, mr: usize, m: usize, k0: usize, kc: usize, out: &mut [f32]) {
    let valid = mr.min(m - m0);
    #[cfg(target_arch = "x86_64")]
    if (mr == 6 || (8..=16).contains(&mr)) && valid == mr && a.cs == 1 && std::arch::is_x86_feature_detected!("avx2") {
        // Whole contiguous rows (a MatMul's activations): 8x8 blocks transposed in registers,
        // where the strided loop below moved one float at a time (7% of a MiniLM). Rows past 8
        // come from a second pass over the last 8 rows, which writes rows 6 and 7 of a 14-row
        // panel again with the same values; AVX2's 6-row panels take 6 rows of the block.
        let base = m0 * a.rs + k0;
        assert!(a.data.len() >= base + (mr - 1) * a.rs + kc && out.len() >= mr * kc, "A panel outside A");
        if mr == 6 {
            // SAFETY: AVX2 was detected; the assert bounds the 6 rows read and the panel written.
            unsafe { x86_pack::pack_a_rows::<6>(a.data[base..].as_ptr(), a.rs, kc, out.as_mut_ptr(), mr) };
            return;
        }
        let firsts = [0, mr - 8];
        for &first in &firsts[..if mr > 8 { 2 } else { 1 }] {
            // SAFETY: AVX2 was detected; the assert bounds every row read and the panel written
            // (8 of its mr lanes from `first` per k).
            unsafe {
                x86_pack::pack_a_rows::<8>(
                    a.data[base + first * a.rs..].as_ptr(),
                    a.rs,
                    kc,
                    out.as_mut_ptr().add(first),
                    mr,
                )
            };
        }
        return;
    }
    for r in 0..mr {
        if r < valid {
            let base = (m0 + r) * a.rs + k0 * a.cs;
            for k in 0..kc {
                out[k * mr + r] = a.data[base + k * a.cs];
            }
        } else {
            for k in 0..kc {
                out[k * mr + r] = 0.0;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_pack {
    use std::arch::x86_64::*;

    /// Packs `R` rows (6 or 8; `rs` apart, `kc` floats each from `a`) k-major into `out`, the
    /// `R` values of step k at `out + k * step`.
    ///
    /// # Safety
    /// Needs AVX2; `a` holds (R - 1) * rs + kc floats and `out` (kc - 1) * step + R.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pack_a_rows<const R: usize>(a: *const f32, rs: usize, kc: usize, out: *mut f32, step: usize) {
        const { assert!(R == 6 || R == 8) };
        unsafe {
            let mut k = 0;
            while k + 8 <= kc {
                // Rows past R are zeros, transposed into lanes that are never stored.
                let mut cols: [__m256; 8] =
                    std::array::from_fn(
                        |i| if i < R { _mm256_loadu_ps(a.add(i * rs + k)) } else { _mm256_setzero_ps() },
                    );
                super::super::depthwise_blocked::avx2::transpose8(&mut cols);
                let o = out.add(k * step);
                for (j, &v) in cols.iter().enumerate() {
                    let o = o.add(j * step);
                    if R == 8 {
                        _mm256_storeu_ps(o, v);
                    } else {
                        // 6 lanes: a 4-float and a 2-float store, none past the step's values.
                        _mm_storeu_ps(o, _mm256_castps256_ps128(v));
                        _mm_storel_pd(o.add(4).cast(), _mm_castps_pd(_mm256_extractf128_ps::<1>(v)));
                    }
                }
                k += 8;
            }
            for k in k..kc {
                for r in 0..R {
                    *out.add(k * step + r) = *a.add(r * rs + k);
                }
            }
        }
    }
}

/// A constant left operand packed once into MR-row panels over all of k.
#[derive(Debug, Clone)]
pub struct PackedA {
    m: usize,
    k: usize,
    mr: usize,
    data: ChunkBuf,
}

impl PackedA {
    pub fn new(a: MatRef, m: usize, k: usize, micro: &Micro) -> PackedA {
        let mr = micro.mr;
        let data = pack_slices(k, m.div_ceil(mr), mr, |p, k0, kc, out| pack_a(&a, p * mr, mr, m, k0, kc, out));
        PackedA { m, k, mr, data }
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.m, self.k)
    }

    /// Rows `rows` of panel `p`, inside k slice `slice`.
    fn panel(&self, p: usize, slice: &Range<usize>, rows: Range<usize>) -> &[f32] {
        &self.data[slice_rows(self.m.div_ceil(self.mr), self.mr, p, slice, rows)]
    }
}

/// A constant right operand packed once into NR-column panels over all of k.
#[derive(Debug, Clone)]
pub struct PackedB {
    n: usize,
    k: usize,
    nr: usize,
    data: ChunkBuf,
}

impl PackedB {
    pub fn new(b: &dyn PackB, k: usize, n: usize, micro: &Micro) -> PackedB {
        let nr = micro.nr;
        let data = pack_slices(k, n.div_ceil(nr), nr, |p, k0, kc, out| b.pack_b(k0, kc, p * nr, nr, n, out));
        PackedB { n, k, nr, data }
    }

    /// A k x n operand of zeros, for callers that compute the elements themselves and write them
    /// in place with [`panel_row_mut`](Self::panel_row_mut) (no row-major copy to pack from).
    pub fn zeroed(k: usize, n: usize, micro: &Micro) -> PackedB {
        let nr = micro.nr;
        PackedB { n, k, nr, data: ChunkBuf::zeroed(n.div_ceil(nr) * nr * k) }
    }

    /// Columns `p * nr..(p + 1) * nr` of row `i` (zero past `n`, to be left so), where `nr` is the
    /// micro-kernel's width.
    pub fn panel_row_mut(&mut self, p: usize, i: usize) -> &mut [f32] {
        let panels = self.n.div_ceil(self.nr);
        assert!(i < self.k && p < panels, "row {i} of panel {p} is outside the operand");
        &mut self.data[slice_rows(panels, self.nr, p, &slice_of(self.k, i), i..i + 1)]
    }

    /// Rows `rows` of panel `p`, inside k slice `slice`.
    fn panel(&self, p: usize, slice: &Range<usize>, rows: Range<usize>) -> &[f32] {
        &self.data[slice_rows(self.n.div_ceil(self.nr), self.nr, p, slice, rows)]
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The panel width.
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// Panel `p` slice by slice, as stored: `(k0, rows)` with `rows` holding rows `k0..` of the
    /// panel, `nr` values each (zero past `n`). For the one-row product (`cpu::gemv`), which
    /// streams them once.
    pub fn panel_slices(&self, p: usize) -> impl Iterator<Item = (usize, &[f32])> {
        (0..self.k).step_by(slice_depth(self.k)).map(move |k0| {
            let slice = slice_of(self.k, k0);
            (k0, self.panel(p, &slice, slice.clone()))
        })
    }
}

/// A left operand already laid out as [`PackedA`] holds it (MR-row panels over all of k, the
/// rows past `m` zero), borrowed: for kernels that write their A operand into panels themselves
/// at run time (the Winograd convolution's transformed tiles), so it is not packed again.
#[derive(Clone, Copy)]
pub struct PanelsRef<'a> {
    pub m: usize,
    pub k: usize,
    pub data: &'a [f32],
}

impl PanelsRef<'_> {
    /// Rows `kc` from `k0` of panel `p`, for panels of `mr` rows.
    fn panel(&self, p: usize, mr: usize, k0: usize, kc: usize) -> &[f32] {
        let start = p * mr * self.k + k0 * mr;
        &self.data[start..start + kc * mr]
    }
}

pub enum Lhs<'a> {
    Packed(&'a PackedA),
    Plain(MatRef<'a>),
    Panels(PanelsRef<'a>),
}

pub enum Rhs<'a> {
    Packed(&'a PackedB),
    Plain(MatRef<'a>),
    Source(&'a dyn PackB),
}

impl Rhs<'_> {
    /// What packs this operand per run (`None` when it is packed already).
    fn source(&self) -> Option<&dyn PackB> {
        match self {
            Rhs::Packed(_) => None,
            Rhs::Plain(m) => Some(m),
            Rhs::Source(s) => Some(*s),
        }
    }
}

/// What is added to the product, per row (a conv's output channel) or per column (a MatMul's
/// output feature); then the activation.
#[derive(Clone, Copy, Default)]
pub enum Bias<'a> {
    #[default]
    None,
    PerRow(&'a [f32]),
    PerCol(&'a [f32]),
}

/// A skip connection added to a product's output after the bias, before the activation.
#[derive(Clone, Copy, Default)]
pub enum Skip<'a> {
    #[default]
    None,
    /// A matrix laid out as the output (same row stride).
    Add(&'a [f32]),
    /// The output holds it on entry, and the product is added onto it (C += A · B): a skip
    /// connection the plan let the product write over, in place.
    InOutput,
}

impl<'a> Skip<'a> {
    /// The part of a skip connection laid out as the outputs of several products (or images)
    /// one after another that goes with the output at `range`.
    pub fn part(self, range: Range<usize>) -> Skip<'a> {
        match self {
            Skip::Add(r) => Skip::Add(&r[range]),
            other => other,
        }
    }

    /// The tensor added from apart, if any ([`Skip::Add`]).
    pub fn added(self) -> Option<&'a [f32]> {
        match self {
            Skip::Add(r) => Some(r),
            Skip::None | Skip::InOutput => None,
        }
    }
}

/// What happens to each tile of C once its product is done: C + bias (+ a skip connection),
/// then the activation.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Bias<'a>,
    pub skip: Skip<'a>,
    pub act: Activation,
}

impl Epilogue<'_> {
    /// Whether nothing is left to do once the products are written (a skip connection in C
    /// was added by the products themselves).
    fn is_identity(&self) -> bool {
        matches!(self.bias, Bias::None) && !matches!(self.skip, Skip::Add(_)) && self.act == Activation::None
    }

    /// Whether the product adds onto what C holds.
    fn onto_c(&self) -> bool {
        matches!(self.skip, Skip::InOutput)
    }

    /// Applies to rows `m0..m0+rows`, columns `n0..n0+cols` of C.
    pub(super) fn apply(&self, c: *mut f32, ldc: usize, m0: usize, rows: usize, n0: usize, cols: usize) {
        self.apply_summing(c, ldc, m0..m0 + rows, n0..n0 + cols, &[])
    }

    /// [`apply`](Self::apply) to rows `rows` and columns `cols` of the product, whose first
    /// element is at `c`, first adding to each row the same row of every partial product in
    /// `partials` (whole `rows x cols` matrices one after another).
    fn apply_summing(&self, c: *mut f32, ldc: usize, rows: Range<usize>, cols: Range<usize>, partials: &[f32]) {
        match super::isa::isa() {
            // SAFETY (both): isa() names only instruction sets this CPU has; the caller owns the
            // tile.
            #[cfg(target_arch = "x86_64")]
            super::isa::Isa::Avx512 => unsafe { self.apply_avx512(c, ldc, rows, cols, partials) },
            #[cfg(target_arch = "x86_64")]
            super::isa::Isa::Avx2 => unsafe { self.apply_avx2(c, ldc, rows, cols, partials) },
            _ => self.apply_with(c, ldc, rows, cols, partials),
        }
    }

    /// [`apply_summing`](Self::apply_summing) with the additions in 16-float vectors (a
    /// baseline build's loops move 4 floats an instruction).
    ///
    /// # Safety
    /// Needs AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn apply_avx512(&self, c: *mut f32, ldc: usize, rows: Range<usize>, cols: Range<usize>, partials: &[f32]) {
        self.apply_with(c, ldc, rows, cols, partials)
    }

    /// [`apply_summing`](Self::apply_summing) with the additions in 8-float vectors.
    ///
    /// # Safety
    /// Needs AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, c: *mut f32, ldc: usize, rows: Range<usize>, cols: Range<usize>, partials: &[f32]) {
        self.apply_with(c, ldc, rows, cols, partials)
    }

    #[inline(always)]
    fn apply_with(&self, c: *mut f32, ldc: usize, rows: Range<usize>, cols: Range<usize>, partials: &[f32]) {
        let (m0, n0, width) = (rows.start, cols.start, cols.len());
        for r in 0..rows.len() {
            // SAFETY: the caller owns this tile of C (rows x cols at row stride ldc).
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), width) };
            for partial in partials.chunks_exact(rows.len() * width) {
                row.iter_mut().zip(&partial[r * width..(r + 1) * width]).for_each(|(x, v)| *x += v);
            }
            match self.bias {
                Bias::None => {}
                Bias::PerRow(b) => {
                    let v = b[m0 + r];
                    row.iter_mut().for_each(|x| *x += v);
                }
                Bias::PerCol(b) => row.iter_mut().zip(&b[cols.clone()]).for_each(|(x, v)| *x += v),
            }
            if let Some(res) = self.skip.added() {
                let start = (m0 + r) * ldc + n0;
                row.iter_mut().zip(&res[start..start + width]).for_each(|(x, v)| *x += v);
            }
            self.act.apply(row);
        }
    }
}

/// One product: C (m x n) = A (m x k) · B (k x n), then the epilogue.
pub struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Lhs<'a>,
    pub b: Rhs<'a>,
    pub epilogue: Epilogue<'a>,
}

thread_local! {
    /// Packing buffers of this thread, kept between calls so steady-state runs do not allocate.
    static SCRATCH: RefCell<(Scratch, Scratch)> = const { RefCell::new((Scratch::new(), Scratch::new())) };
}

/// Runs one product; see [`run_batch`].
pub fn run(pool: &ThreadPool, micro: &Micro, p: &Problem, c: &mut [f32], ldc: usize) {
    run_batch(pool, micro, 1, &|_| Problem { a: p.a.reborrow(), b: p.b.reborrow(), ..*p }, c, 0, ldc);
}

impl Lhs<'_> {
    fn reborrow(&self) -> Lhs<'_> {
        match self {
            Lhs::Packed(p) => Lhs::Packed(p),
            Lhs::Plain(m) => Lhs::Plain(*m),
            Lhs::Panels(p) => Lhs::Panels(*p),
        }
    }
}

impl Rhs<'_> {
    fn reborrow(&self) -> Rhs<'_> {
        match self {
            Rhs::Packed(p) => Rhs::Packed(p),
            Rhs::Plain(m) => Rhs::Plain(*m),
            Rhs::Source(s) => Rhs::Source(*s),
        }
    }
}

/// Runs `count` products of the same shape, product `i` writing C at `c[i * c_stride..]` with row
/// stride `ldc`. The tiles of all products are spread over the pool together, so many small
/// products (attention heads) keep every thread busy.
pub fn run_batch<'a>(
    pool: &ThreadPool,
    micro: &Micro,
    count: usize,
    problem: &(dyn Fn(usize) -> Problem<'a> + Sync),
    c: &mut [f32],
    c_stride: usize,
    ldc: usize,
) {
    if count == 0 {
        return;
    }
    let shape = problem(0);
    let (m, n) = (shape.m, shape.n);
    if m == 0 || n == 0 {
        return;
    }
    let plain_a = matches!(shape.a, Lhs::Plain(_));
    let micro = &micro_for_lhs(micro, &shape.a, m);
    assert!(c.len() >= (count - 1) * c_stride + (m - 1) * ldc + n, "C is too small for the product");
    let work = count.saturating_mul(m).saturating_mul(n).saturating_mul(shape.k.max(1));
    let serial = pool.threads() == 1 || work < MIN_PARALLEL_WORK;
    if !serial
        && count == 1
        && splits_by_depth(m, n, shape.k, pool.threads())
        && run_depth_split(pool, micro, &shape, c, ldc)
    {
        return;
    }
    let (mt, nt) = if serial {
        cache_tile(micro)
    } else {
        let packs = Packs { a: plain_a, b: shape.b.source().is_some() };
        split(micro, count, m, n, shape.k, pool.threads(), packs)
    };
    let (tm, tn) = (m.div_ceil(mt), n.div_ceil(nt));
    let cptr = SharedMut(c.as_mut_ptr());
    let run_tile = |t: usize| {
        let (i, rest) = (t / (tm * tn), t % (tm * tn));
        let (m0, n0) = ((rest / tn) * mt, (rest % tn) * nt);
        let p = problem(i);
        assert_eq!(matches!(p.a, Lhs::Plain(_)), plain_a, "the products of one batch differ in their A operands");
        let cp = cptr;
        // SAFETY: each task writes only its own tile of its own product's C.
        let c_tile = unsafe { cp.0.add(i * c_stride + m0 * ldc + n0) };
        tile(micro, &p, m0, mt.min(m - m0), n0, nt.min(n - n0), c_tile, ldc);
    };
    if serial {
        (0..count * tm * tn).for_each(run_tile);
    } else {
        pool.parallel_for(count * tm * tn, &run_tile);
    }
}

/// Products of at most this many multiply-adds may be split by depth ([`splits_by_depth`]):
/// MobileNetV2's largest projections (96 x 196 x 576, 320 x 49 x 960) gained as much as the
/// small ones, and ResNet-50's 1x1 convs (51M and more) gained nothing.
const DEPTH_SPLIT_MOST: usize = 16 << 20;
/// The least depth of one thread's share in a depth split.
const DEPTH_SPLIT_SHARE: usize = 32;

/// Whether a product of m x n x k on `threads` threads is split by depth ([`run_depth_split`])
/// rather than into tiles of C: small products at least twice as deep as tall, such as
/// MobileNetV2's projections (64 x 196 x 384) after a depthwise conv. The depthwise conv makes
/// its channels (this product's k) in blocks spread over the threads, so a tile of C took half
/// its B rows from the other cores' caches, and every tile read all of A. Split by depth, each
/// thread reads about the rows its own core made and 1/threads of A; what crosses over is the
/// m x n partial products, fewer floats than the n x k / 2 rows when k >= 2m. In-model at 2
/// threads, the 384 -> 64 projections took 0.044-0.046 ms instead of 0.064-0.073, 576 -> 96
/// 0.093-0.101 instead of 0.124-0.139; expansions (960 x 49 x 160) got slower (0.089 -> 0.116).
///
/// The calling thread adds the other threads' partial products alone, (threads - 1) m n
/// additions against each thread's m n k / threads multiply-adds: a split also needs k large
/// enough that this costs at most a sixteenth of a share (measured at 2 threads only, where
/// that is any k past the least share depth).
fn splits_by_depth(m: usize, n: usize, k: usize, threads: usize) -> bool {
    threads > 1
        && k >= 2 * m
        && k / threads >= DEPTH_SPLIT_SHARE
        && 16 * threads * (threads - 1) <= k
        && m * n * k <= DEPTH_SPLIT_MOST
}

thread_local! {
    /// The partial products of a depth split, kept between calls so steady-state runs do not
    /// allocate.
    static PARTIALS: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Runs one product split by depth over the pool's threads ([`splits_by_depth`]): share `t`
/// of k sums over all of C, the first into C itself and each other into a partial product;
/// the partials are then added into C with the epilogue. Does nothing and returns false when
/// this thread's partial products are in use (a product run from inside a depth split's task).
fn run_depth_split(pool: &ThreadPool, micro: &Micro, p: &Problem, c: &mut [f32], ldc: usize) -> bool {
    let (m, n, k) = (p.m, p.n, p.k);
    let shares = pool.threads();
    PARTIALS.with(|s| {
        let Ok(mut partials) = s.try_borrow_mut() else { return false };
        let partials = partials.at_least((shares - 1) * m * n);
        let (cp, pp) = (SharedMut(c.as_mut_ptr()), SharedMut(partials.as_mut_ptr()));
        pool.parallel_for(shares, &|t| {
            let (cp, pp) = (cp, pp);
            // SAFETY: share 0 alone writes C, and share t > 0 alone its partial product, the
            // (t - 1)-th m x n matrix of `partials`.
            let (out, ld) = if t == 0 { (cp.0, ldc) } else { (unsafe { pp.0.add((t - 1) * m * n) }, n) };
            let part =
                Part { k: t * k / shares..(t + 1) * k / shares, onto_c: t == 0 && p.epilogue.onto_c(), finish: false };
            tiles(micro, p, 0..n, out, ld, &part);
        });
        p.epilogue.apply_summing(c.as_mut_ptr(), ldc, 0..m, 0..n, &partials[..(shares - 1) * m * n]);
        true
    })
}

/// The micro-kernel a product of `m` rows with left operand `a` runs: [`Micro::for_plain_a`] for
/// an A packed at run time, `micro` (whose panels the prepacked operands hold) otherwise.
fn micro_for_lhs(micro: &Micro, a: &Lhs, m: usize) -> Micro {
    if matches!(a, Lhs::Plain(_)) {
        micro.for_plain_a(m)
    } else {
        *micro
    }
}

/// Multiply-adds that packing one element costs, roughly: a gather at about an element a cycle,
/// against the micro-kernel's 16-32 multiply-adds a cycle.
const PACK_COST: usize = 16;
/// Multiply-adds that one task costs beyond its own: claiming it, and its panels' cold start.
const TASK_COST: usize = 16 * 1024;
/// Most tile counts per dimension tried beyond the fewest the cache blocking allows.
const MAX_EXTRA_SPLITS: usize = 16;

/// Which operands each task packs for itself: A when it is a plain matrix, B unless prepacked.
#[derive(Clone, Copy)]
struct Packs {
    a: bool,
    b: bool,
}

/// The tile of C one task computes, (rows, columns), when `count` products of m x n x k share
/// `threads` threads: of the tile sizes within the cache blocks (at most [`MC`] x [`NC`], whole
/// micro-blocks), the one whose tasks finish soonest, counting the rounds of tasks each thread
/// runs (tasks claimed dynamically, near-equal by construction), the work of the widest task
/// including its padding, and what each task packs. Halving tiles until every thread had two
/// tasks left one thread with a third (ResNet-50's 2048 x 49 1x1 convs: 6 tiles of 384 rows for
/// 5.3 tiles' work, so 3 against 2.3 on two threads); equal tiles in a multiple of the thread
/// count do not. The dimension whose operand the tasks pack is split less: tiles side by side
/// along it pack the same panels again (a conv's image columns when split by output channels).
fn split(micro: &Micro, count: usize, m: usize, n: usize, k: usize, threads: usize, packs: Packs) -> (usize, usize) {
    /// Per tile count tried along one dimension: the tile size (whole micro-blocks) and the
    /// number of tiles that size gives.
    fn sizes(len: usize, unit: usize, most: usize, extra: usize) -> ([(usize, usize); MAX_EXTRA_SPLITS + 1], usize) {
        let mut out = [(0, 0); MAX_EXTRA_SPLITS + 1];
        let fewest = len.div_ceil(most);
        let tries = (extra + 1).min(len.div_ceil(unit) + 1 - fewest);
        for (i, o) in out.iter_mut().enumerate().take(tries) {
            let size = len.div_ceil(fewest + i).div_ceil(unit) * unit;
            *o = (size, len.div_ceil(size));
        }
        (out, tries)
    }
    let extra = (4 * threads).min(MAX_EXTRA_SPLITS);
    let (most_rows, most_cols) = cache_tile(micro);
    let (rows, rn) = sizes(m, micro.mr, most_rows, extra);
    let (cols, cn) = sizes(n, micro.nr, most_cols, extra);
    let k = k.max(1);
    let mut best = (usize::MAX, rows[0].0, cols[0].0);
    for &(mt, tm) in &rows[..rn] {
        for &(nt, tn) in &cols[..cn] {
            let packed = if packs.a { mt } else { 0 } + if packs.b { nt } else { 0 };
            // The widest task is a whole tile, unless one tile takes every column: then its last
            // panel may be one the half-width kernel computes at half the cost (MobileNetV2's 196
            // pixels: 6 panels and a half, not 7; counting 7 split 96 x 196 by columns into 4 + 3
            // panels instead of by rows into two equal halves).
            let cols = if tn == 1 { computed_cols(n, micro.nr) } else { nt };
            let task = mt * cols * k + PACK_COST * packed * k + TASK_COST;
            let rounds = (count * tm * tn).div_ceil(threads);
            let cost = rounds.saturating_mul(task);
            if cost < best.0 {
                best = (cost, mt, nt);
            }
        }
    }
    (best.1, best.2)
}

/// Most columns past half a panel that a last panel's block computes a column at a time (beside
/// the half-width kernel) rather than at full width: a 7x7 plane's 49 pixels leave 17 in their
/// second panel of 32, which the full kernel computed as 32.
const EDGE_COLUMNS: usize = 2;

/// Columns `cols` (at most [`EDGE_COLUMNS`]) of one block into `out` (rows of `nr` floats), from
/// the block's packed A panel (`kc` x `micro.mr`) and B panel (`kc` x `nr`): each sum over k
/// as a vector of the panel's rows. Overwrites those columns.
fn edge_columns(micro: &Micro, kc: usize, a: &[f32], b: &[f32], cols: Range<usize>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(micro.isa, super::isa::Isa::Avx512 | super::isa::Isa::Avx2) {
        // SAFETY: the ISA was detected at start; both imply AVX2 and FMA.
        return unsafe { edge_columns_avx2(micro, kc, a, b, cols, out) };
    }
    // The portable kernel's 4 rows, NEON's 8.
    edge_columns_with(micro, kc, a, b, cols, out, &[4, 8])
}

/// [`edge_columns`] with 8-float vectors for the rows.
///
/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn edge_columns_avx2(micro: &Micro, kc: usize, a: &[f32], b: &[f32], cols: Range<usize>, out: &mut [f32]) {
    edge_columns_with(micro, kc, a, b, cols, out, &[6, 8, 14])
}

/// The body of [`edge_columns`], with the panel height a constant for the heights in `heights`
/// (those of the instruction sets the caller serves: an instance for every height in every
/// caller cost the shared library 4.5 KB, past its 5 MB budget).
#[inline(always)]
fn edge_columns_with(
    micro: &Micro,
    kc: usize,
    a: &[f32],
    b: &[f32],
    cols: Range<usize>,
    out: &mut [f32],
    heights: &[usize],
) {
    let (mr, nr) = (micro.mr, micro.nr);
    /// Each column's sums in [`CHAINS`] partial sums over interleaved steps of k, added at the
    /// end: one running sum waited on its previous addition every step (4 cycles), which made
    /// a 7x7 plane's 17th column cost as much as the 16 before it.
    #[inline(always)]
    fn sums<const MR: usize>(kc: usize, a: &[f32], b: &[f32], nr: usize, cols: Range<usize>, out: &mut [f32]) {
        const CHAINS: usize = 4;
        assert!(cols.len() <= EDGE_COLUMNS && cols.end <= nr && a.len() >= kc * MR && b.len() >= kc * nr);
        let whole = kc / CHAINS * CHAINS;
        for c in cols {
            let mut acc = [[0f32; MR]; CHAINS];
            for (ak, bk) in a[..whole * MR].chunks_exact(CHAINS * MR).zip(b.chunks_exact(CHAINS * nr)) {
                for (chain, sum) in acc.iter_mut().enumerate() {
                    let bv = bk[chain * nr + c];
                    for (s, &av) in sum.iter_mut().zip(&ak[chain * MR..(chain + 1) * MR]) {
                        *s += av * bv;
                    }
                }
            }
            for k in whole..kc {
                let bv = b[k * nr + c];
                for (s, &av) in acc[0].iter_mut().zip(&a[k * MR..(k + 1) * MR]) {
                    *s += av * bv;
                }
            }
            for r in 0..MR {
                out[r * nr + c] = (acc[0][r] + acc[1][r]) + (acc[2][r] + acc[3][r]);
            }
        }
    }
    match mr {
        4 if heights.contains(&4) => sums::<4>(kc, a, b, nr, cols, out),
        6 if heights.contains(&6) => sums::<6>(kc, a, b, nr, cols, out),
        8 if heights.contains(&8) => sums::<8>(kc, a, b, nr, cols, out),
        14 if heights.contains(&14) => sums::<14>(kc, a, b, nr, cols, out),
        _ => {
            for c in cols {
                for r in 0..mr {
                    out[r * nr + c] = (0..kc).map(|k| a[k * mr + r] * b[k * nr + c]).sum();
                }
            }
        }
    }
}

/// The columns the micro-kernels compute for `n` columns of C: whole panels, and a last one of at
/// most half a panel at half width (see [`Micro::half`]).
fn computed_cols(n: usize, nr: usize) -> usize {
    match n % nr {
        0 => n,
        rest if rest <= nr / 2 => n - rest + nr / 2,
        rest => n - rest + nr,
    }
}

/// Runs one product on the calling thread alone: for kernels that spread their own work over the
/// pool and call the GEMM from inside a task. With [`Lhs::Panels`], `p.a.data` must hold
/// `p.m.div_ceil(micro.mr)` panels.
pub fn run_serial(micro: &Micro, p: &Problem, c: &mut [f32], ldc: usize) {
    run_serial_columns(micro, p, 0..p.n, c, ldc)
}

/// [`run_serial`] for columns `cols` of the product alone, column `cols.start` written at C's
/// column 0: for kernels that split a product's columns (a conv's output channels) over their
/// own tasks. `cols.start` must be a multiple of the micro-kernel's NR (a whole B panel).
pub fn run_serial_columns(micro: &Micro, p: &Problem, cols: Range<usize>, c: &mut [f32], ldc: usize) {
    let micro = &micro_for_lhs(micro, &p.a, p.m);
    let cols = cols.start..cols.end.min(p.n);
    if p.m == 0 || cols.is_empty() {
        return;
    }
    assert!(cols.start.is_multiple_of(micro.nr), "columns from {} start inside a B panel", cols.start);
    assert!(c.len() >= (p.m - 1) * ldc + cols.len(), "C is too small for the product");
    if let Lhs::Panels(a) = &p.a {
        assert!(a.data.len() >= p.m.div_ceil(micro.mr) * micro.mr * p.k, "A's panels are too short");
    }
    tiles(micro, p, cols, c.as_mut_ptr(), ldc, &Part::whole(p));
}

/// The tile of C one task computes on the calling thread alone: the cache blocks, whole
/// micro-blocks.
fn cache_tile(micro: &Micro) -> (usize, usize) {
    (MC.div_ceil(micro.mr) * micro.mr, NC.div_ceil(micro.nr) * micro.nr)
}

/// Columns `cols` of a product on the calling thread, tile by [`cache_tile`], each summing
/// `part`; column `cols.start` of C is at `c`, which holds all the product's rows of those
/// columns at row stride `ldc`.
fn tiles(micro: &Micro, p: &Problem, cols: Range<usize>, c: *mut f32, ldc: usize, part: &Part) {
    let (mt, nt) = cache_tile(micro);
    for m0 in (0..p.m).step_by(mt) {
        for n0 in cols.clone().step_by(nt) {
            // SAFETY: (m0, n0 - cols.start) is inside C, as the caller promised.
            let c_tile = unsafe { c.add(m0 * ldc + n0 - cols.start) };
            tile_part(micro, p, m0, mt.min(p.m - m0), n0, nt.min(cols.end - n0), c_tile, ldc, part.clone());
        }
    }
}

/// Asks for share `i` of `parts` of `data`'s cache lines to be brought into L2.
#[inline(always)]
fn prefetch_share(data: &[f32], i: usize, parts: usize) {
    const LINE: usize = 16;
    let lines = data.len().div_ceil(LINE);
    let per = lines.div_ceil(parts);
    for l in (i * per..((i + 1) * per).min(lines)).map(|l| l * LINE) {
        // SAFETY: a prefetch has no effect on memory; the address is inside `data`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            use std::arch::x86_64::*;
            _mm_prefetch::<_MM_HINT_T1>(data.as_ptr().add(l).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = l;
    }
}

/// One task: rows `m0..m0+mc`, columns `n0..n0+nc` of C, whose top-left element is `c`.
#[allow(clippy::too_many_arguments)]
fn tile(micro: &Micro, p: &Problem, m0: usize, mc: usize, n0: usize, nc: usize, c: *mut f32, ldc: usize) {
    tile_part(micro, p, m0, mc, n0, nc, c, ldc, Part::whole(p))
}

/// The share of a product's depth one task sums: rows `k` of B (columns of A), added onto C
/// when `onto_c` (else written over it), and the epilogue applied after when `finish`.
#[derive(Clone)]
struct Part {
    k: Range<usize>,
    onto_c: bool,
    finish: bool,
}

impl Part {
    /// All of the product: onto C when its skip connection is there, then the epilogue.
    fn whole(p: &Problem) -> Part {
        Part { k: 0..p.k, onto_c: p.epilogue.onto_c(), finish: true }
    }
}

/// [`tile`] over part of k.
#[allow(clippy::too_many_arguments)]
fn tile_part(
    micro: &Micro,
    p: &Problem,
    m0: usize,
    mc: usize,
    n0: usize,
    nc: usize,
    c: *mut f32,
    ldc: usize,
    part: Part,
) {
    let (mr, nr) = (micro.mr, micro.nr);
    let (mp, np) = (mc.div_ceil(mr), nc.div_ceil(nr));
    if part.k.is_empty() {
        // An empty sum: C as it was when the product adds onto it, else zeros.
        if !part.onto_c {
            for r in 0..mc {
                // SAFETY: the tile belongs to this task.
                unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), nc) }.fill(0.0);
            }
        }
        if part.finish {
            p.epilogue.apply(c, ldc, m0, mc, n0, nc);
        }
        return;
    }
    SCRATCH.with(|s| {
        let mut guard = s.try_borrow_mut();
        let mut local = (Scratch::new(), Scratch::new());
        let (abuf, bbuf) = match guard.as_deref_mut() {
            Ok((a, b)) => (a, b),
            Err(_) => (&mut local.0, &mut local.1),
        };
        let kc_max = slice_depth(p.k);
        let abuf = abuf.at_least(if matches!(p.a, Lhs::Plain(_)) { mp * mr * kc_max } else { 0 });
        let bbuf = bbuf.at_least(if p.b.source().is_some() { nr * kc_max } else { 0 });
        let mut edge = [0f32; 16 * 64];
        // The k slices of the part: the product's slices (those of the packed operands), cut
        // to the part's range.
        let slices = (0..p.k).step_by(kc_max).filter_map(|s| {
            let slice = slice_of(p.k, s);
            let (k0, end) = (s.max(part.k.start), slice.end.min(part.k.end));
            end.checked_sub(k0).filter(|&kc| kc > 0).map(|kc| (slice, k0, kc))
        });
        for (slice, k0, kc) in slices {
            let last = k0 + kc == part.k.end && part.finish;
            if let Lhs::Plain(a) = &p.a {
                for i in 0..mp {
                    pack_a(a, m0 + i * mr, mr, p.m, k0, kc, &mut abuf[i * mr * kc..(i + 1) * mr * kc]);
                }
            }
            let accumulate = k0 > part.k.start || part.onto_c;
            // What is packed next, asked for while this slice's products run: the next slice
            // of a plain A (spread over all the slice's kernels), the next B panel (over one
            // panel's kernels).
            let next_kc = kc_max.min(part.k.end - (k0 + kc).min(part.k.end));
            let a_next = match &p.a {
                Lhs::Plain(a) if next_kc > 0 && p.m * p.k >= AHEAD_FROM => Rows::of(&a.t(), k0 + kc, next_kc, m0, mc),
                _ => None,
            };
            let src = p.b.source().filter(|_| p.k * p.n >= AHEAD_FROM);
            for j in 0..np {
                let b_next = src.and_then(|s| {
                    if j + 1 < np {
                        s.source_rows(k0, kc, n0 + (j + 1) * nr, nr, p.n)
                    } else if next_kc > 0 {
                        s.source_rows(k0 + kc, next_kc, n0, nr, p.n)
                    } else {
                        None
                    }
                });
                // A B panel is packed just before the A panels stream past it, so it is in L1;
                // or, when its rows lie in place in a row-major operand and a copying kernel
                // exists, by the first of those kernels as it multiplies (`in_place`).
                let mut in_place = None;
                let bp: *mut f32 = match &p.b {
                    Rhs::Packed(b) => b.panel((n0 / nr) + j, &slice, k0..k0 + kc).as_ptr().cast_mut(),
                    Rhs::Plain(_) | Rhs::Source(_) => {
                        let source = p.b.source().expect("an unpacked operand");
                        in_place = micro.copying.zip(source.panel_in_place(k0, kc, n0 + j * nr, nr, p.n));
                        if in_place.is_none() {
                            source.pack_b(k0, kc, n0 + j * nr, nr, p.n, &mut bbuf[..nr * kc]);
                        }
                        bbuf[..nr * kc].as_mut_ptr()
                    }
                };
                let cols = nr.min(nc - j * nr);
                // A prepacked B (a MatMul's weights) comes from memory: the next panel is asked
                // for while this one's products run, a share of its lines per A panel.
                let next_b = match &p.b {
                    Rhs::Packed(b) if j + 1 < np => Some(b.panel((n0 / nr) + j + 1, &slice, k0..k0 + kc)),
                    _ => None,
                };
                for i in 0..mp {
                    if let Some(next) = next_b {
                        prefetch_share(next, i, mp);
                    }
                    let ap = match &p.a {
                        Lhs::Packed(a) => a.panel((m0 / mr) + i, &slice, k0..k0 + kc),
                        Lhs::Plain(_) => &abuf[i * mr * kc..(i + 1) * mr * kc],
                        Lhs::Panels(a) => a.panel((m0 / mr) + i, mr, k0, kc),
                    };
                    let ahead = match (b_next, a_next) {
                        (Some(b), _) => b.share(i, kc / 2),
                        (None, Some(a)) => a.share(j * mp + i, kc / 2),
                        (None, None) => Ahead::NONE,
                    };
                    let rows = mr.min(mc - i * mr);
                    // SAFETY (every call): full panels (the packed B panel in `bp` written by the
                    // first kernel when in place, whose rows `panel_in_place` bounds), C valid for
                    // mr rows of nr floats at `ldc`; the ISA was checked at selection.
                    let block = |run: Kernel, c: *mut f32, ldc: usize, accumulate: bool| unsafe {
                        match in_place {
                            Some((copying, (at, stride))) if i == 0 => {
                                copying(kc, ap.as_ptr(), at, stride, bp, c, ldc, accumulate, ahead)
                            }
                            _ => run(kc, ap.as_ptr(), bp, c, ldc, accumulate, ahead),
                        }
                    };
                    // SAFETY: (i, j) is inside this task's tile.
                    let cb = unsafe { c.add(i * mr * ldc + j * nr) };
                    if rows == mr && cols == nr {
                        block(micro.run, cb, ldc, accumulate);
                    } else {
                        // A partial block goes through a full-size buffer; one of at most half
                        // the columns is computed at half the cost, one of a few more by the
                        // half kernel and the rest a column at a time.
                        let past_half = cols.saturating_sub(nr / 2);
                        if cols <= nr / 2 {
                            block(micro.half, edge.as_mut_ptr(), nr, false);
                        } else if past_half <= EDGE_COLUMNS && in_place.is_none() {
                            block(micro.half, edge.as_mut_ptr(), nr, false);
                            // SAFETY: `bp` holds the panel's kc rows of nr floats (packed).
                            let panel = unsafe { std::slice::from_raw_parts(bp.cast_const(), kc * nr) };
                            edge_columns(micro, kc, ap, panel, nr / 2..cols, &mut edge);
                        } else {
                            block(micro.run, edge.as_mut_ptr(), nr, false);
                        }
                        for r in 0..rows {
                            let dst = unsafe { std::slice::from_raw_parts_mut(cb.add(r * ldc), cols) };
                            let src = &edge[r * nr..r * nr + cols];
                            if accumulate {
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                            } else {
                                dst.copy_from_slice(src);
                            }
                        }
                    }
                }
                // The epilogue runs on groups of column strips as their products complete, while
                // they are still in cache; groups rather than single strips, so that its rows are
                // long enough for the vector loops.
                let strips = (EPILOGUE_COLS / nr).max(1);
                if last && !p.epilogue.is_identity() && ((j + 1) % strips == 0 || j + 1 == np) {
                    let first = j / strips * strips;
                    let width = (j * nr + cols) - first * nr;
                    // SAFETY: the strips are inside this task's tile.
                    let group = unsafe { c.add(first * nr) };
                    p.epilogue.apply(group, ldc, m0, mc, n0 + first * nr, width);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests;
