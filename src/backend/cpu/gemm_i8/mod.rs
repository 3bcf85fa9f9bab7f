//! Integer GEMM: uint8 A (m x k, rows of `lda` bytes) times a packed int8 B (k x n) in exact,
//! wrapping int32 arithmetic, with the zero points applied through row and column sums and an
//! epilogue to int32 or to f32 (`sum as f32 * scale[j]`, then `+ bias[j]`) fused in.
//!
//! `sum_k (a - za)(b - zb_j) = sum_k a*b - za * colsum_j - zb_j * rowsum_i + k * za * zb_j`
//!
//! The micro-kernels (micro.rs, one per instruction set) only sum raw byte products; the terms
//! in `za` are one per column (computed once per run) and those in `zb_j * rowsum_i` one per
//! element of the epilogue, never inside the k loop. Callers bring their operands into this
//! u8 x s8 domain: an int8 A is flipped to uint8 (`a ^ 0x80 = a + 128`, zero point + 128), a
//! uint8 B to int8 (`b - 128`, zero point - 128); the differences `a - za`, `b - zb` are the same.
//!
//! B is packed once (by whoever owns the constant weights) into panels of [`NR`] columns, k in
//! groups of four bytes: a group of four k rows of a panel is 128 bytes, two AVX-512 vectors.

#[cfg(target_arch = "x86_64")]
mod amx;
mod micro;
mod requant;
#[cfg(test)]
mod tests;

pub use micro::{micro_for, Micro8};
pub use requant::{requantize_lanes, Requant};

use super::isa::Isa;
use super::pool::{SharedMut, ThreadPool};

/// Columns of a packed B panel.
pub const NR: usize = 32;
/// Rows of one micro-kernel call.
pub const MR: usize = 8;
/// Rows of one task: its A rows (128 x k bytes) stay in L2 while the panel (k x 32 bytes) stays
/// in L1 or L2. 128 rather than 64: a transformer's weights (MiniLM's 21 MB) stream from memory
/// every run, and a panel read for a whole sequence of 128 rows is read from memory once, not
/// once per 64-row block.
const MC: usize = 128;
/// Multiply-adds below which a product runs on the calling thread alone.
const SERIAL_WORK: usize = 1 << 18;

/// B (k x n, int8) in panels of NR columns: for each group of four k, NR x 4 bytes, column-major
/// within the group; zero past k and n. With the column sums over k.
#[derive(Debug)]
pub struct PackedB8 {
    pub k: usize,
    pub n: usize,
    data: Vec<i8>,
    colsum: Vec<i32>,
}

impl PackedB8 {
    /// Packs `b`, row-major k x n.
    pub fn new(b: &[i8], k: usize, n: usize) -> PackedB8 {
        let bytes: &[u8] = bytemuck::cast_slice(b);
        PackedB8::from_bytes(k, n, 0, |kk| &bytes[kk * n..])
    }

    /// Packs the k x n matrix whose row `kk` is the first n bytes of `row(kk)`, each read as
    /// `(byte ^ flip) as i8`: a uint8 matrix (flip 0x80, the value minus 128) or an int8 one
    /// (flip 0) in the int8 domain.
    pub fn from_bytes<'a>(k: usize, n: usize, flip: u8, row: impl Fn(usize) -> &'a [u8]) -> PackedB8 {
        let mut data = vec![0i8; PackedView::bytes_for(k, n)];
        let mut colsum = vec![0i32; n];
        PackedView::pack_into(k, n, flip, row, &mut data, &mut colsum);
        PackedB8 { k, n, data, colsum }
    }

    /// The packed panels as [`run`] reads them.
    pub fn view(&self) -> PackedView<'_> {
        PackedView { k: self.k, n: self.n, data: &self.data, colsum: &self.colsum }
    }

    /// Columns rounded up to whole panels: the length of the per-column slices [`run`] takes.
    pub fn padded_n(&self) -> usize {
        self.view().padded_n()
    }
}

/// A packed B in borrowed memory: a [`PackedB8`]'s, or one packed per run into scratch (a
/// convolution's input), so that a run allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct PackedView<'a> {
    pub k: usize,
    pub n: usize,
    data: &'a [i8],
    colsum: &'a [i32],
}

impl<'a> PackedView<'a> {
    /// Bytes of the panels of a k x n matrix.
    pub fn bytes_for(k: usize, n: usize) -> usize {
        n.div_ceil(NR) * k.div_ceil(4) * NR * 4
    }

    /// Packs as [`PackedB8::from_bytes`] into `data` (at least [`PackedView::bytes_for`] bytes)
    /// and `colsum` (at least n), writing every byte it reads later (zeros past k and n), so
    /// the scratch may hold anything before. For operands that change every run, so the loops
    /// run over whole rows of bytes.
    pub fn pack_into<'r>(
        k: usize,
        n: usize,
        flip: u8,
        row: impl Fn(usize) -> &'r [u8],
        data: &'a mut [i8],
        colsum: &'a mut [i32],
    ) -> PackedView<'a> {
        let (kq, panels) = (k.div_ceil(4), n.div_ceil(NR));
        let (data, colsum) = (&mut data[..PackedView::bytes_for(k, n)], &mut colsum[..n]);
        colsum.fill(0);
        for q in 0..kq {
            // The group's rows; those past k are zero.
            let count = 4.min(k - q * 4);
            let rows: [&[u8]; 4] = std::array::from_fn(|t| if t < count { &row(q * 4 + t)[..n] } else { &[] });
            for r in &rows[..count] {
                for (s, &v) in colsum.iter_mut().zip(r.iter()) {
                    *s = s.wrapping_add((v ^ flip) as i8 as i32);
                }
            }
            for p in 0..panels {
                let (j0, width) = (p * NR, NR.min(n - p * NR));
                let group = &mut data[(p * kq + q) * NR * 4..][..NR * 4];
                if count == 4 {
                    let [r0, r1, r2, r3] = rows.map(|r| &r[j0..j0 + width]);
                    for (j, d) in group.chunks_exact_mut(4).take(width).enumerate() {
                        d.copy_from_slice(&[r0[j], r1[j], r2[j], r3[j]].map(|v| (v ^ flip) as i8));
                    }
                    group[width * 4..].fill(0);
                } else {
                    group.fill(0);
                    for (t, r) in rows[..count].iter().enumerate() {
                        for (j, &v) in r[j0..j0 + width].iter().enumerate() {
                            group[j * 4 + t] = (v ^ flip) as i8;
                        }
                    }
                }
            }
        }
        PackedView { k, n, data, colsum }
    }

    fn panel(&self, p: usize) -> &'a [i8] {
        let len = self.k.div_ceil(4) * NR * 4;
        &self.data[p * len..(p + 1) * len]
    }

    /// Columns rounded up to whole panels: the length of the per-column slices [`run`] takes.
    pub fn padded_n(&self) -> usize {
        self.n.div_ceil(NR) * NR
    }
}

/// A in the uint8 domain: `m` rows of `lda` bytes (`lda` a multiple of four, zero past k), and
/// each row's sum over k.
pub struct Lhs<'a> {
    pub data: &'a [u8],
    pub lda: usize,
    pub rowsum: &'a [i32],
}

/// Where the results go, row-major with `n` columns.
pub enum Out<'a> {
    Int(&'a mut [i32]),
    /// `sum as f32 * scale[j]`, then `+ bias[j]` where there is a bias: the graph's Cast, Mul
    /// and Add, in that order, so the floats are the unfused graph's. Both have
    /// [`PackedB8::padded_n`] values.
    Float {
        y: &'a mut [f32],
        scale: &'a [f32],
        bias: Option<&'a [f32]>,
    },
    /// Requantized row by row: row i is `saturate(round_half_even((sum + bias[i]) as f32 * mult[i]) + q.zero_point)`, each `mult[i]` finite (a
    /// convolution's output channels are rows). Both have at least m values.
    Bytes {
        y: &'a mut [u8],
        mult: &'a [f32],
        bias: &'a [i32],
        q: Requant,
    },
    /// Requantized column by column (a matrix product's weights with a scale per column):
    /// `saturate(round_half_even(sum as f32 * mult[j]) + q.zero_point)`, each `mult[j]` finite;
    /// [`PackedB8::padded_n`] of them.
    BytesByColumn {
        y: &'a mut [u8],
        mult: &'a [f32],
        q: Requant,
    },
}

/// The epilogue's per-column data, padded to whole panels.
struct Columns<'a> {
    /// `k * za * zb_j - za * colsum_j`.
    offset: &'a [i32],
    /// `zb_j`, multiplied by each row sum.
    zb: &'a [i32],
}

/// `y = (A - za)(B - zb)` with `zb` per column (`zb.len() == b.padded_n()`, in the int8 domain)
/// and `za` for all of A (in the uint8 domain), written to `out`. `offset` is scratch of
/// `b.padded_n()` values.
#[allow(clippy::too_many_arguments)]
pub fn run(
    pool: &ThreadPool,
    micro: Micro8,
    a: &Lhs,
    m: usize,
    b: PackedView,
    za: i32,
    zb: &[i32],
    offset: &mut [i32],
    out: Out,
) {
    let (k, n) = (b.k, b.n);
    assert!(a.lda.is_multiple_of(4) && a.lda >= k && a.data.len() >= m * a.lda && a.rowsum.len() >= m);
    assert!(zb.len() == b.padded_n() && offset.len() == b.padded_n());
    match &out {
        Out::Int(y) => assert!(y.len() >= m * n),
        Out::Float { y, scale, bias } => {
            assert!(y.len() >= m * n && scale.len() == b.padded_n() && bias.is_none_or(|b| b.len() == scale.len()))
        }
        Out::Bytes { y, mult, bias, .. } => assert!(y.len() >= m * n && mult.len() >= m && bias.len() >= m),
        Out::BytesByColumn { y, mult, .. } => assert!(y.len() >= m * n && mult.len() == b.padded_n()),
    }
    for (j, o) in offset.iter_mut().enumerate() {
        let cs = b.colsum.get(j).copied().unwrap_or(0);
        *o = (k as i32).wrapping_mul(za).wrapping_mul(zb[j]).wrapping_sub(za.wrapping_mul(cs));
    }
    let cols = Columns { offset, zb };
    let b = &b;
    let target = match out {
        Out::Int(y) => Target::Int(SharedMut(y.as_mut_ptr())),
        Out::Float { y, scale, bias } => Target::Float(SharedMut(y.as_mut_ptr()), scale, bias),
        Out::Bytes { y, mult, bias, q } => Target::Bytes(SharedMut(y.as_mut_ptr()), mult, bias, q),
        Out::BytesByColumn { y, mult, q } => Target::BytesByColumn(SharedMut(y.as_mut_ptr()), mult, q),
    };
    let panels = n.div_ceil(NR);
    let blocks = m.div_ceil(MC);
    let block = block_fn(micro.isa);
    let task = |t: usize| {
        let (blk, p) = (t / panels, t % panels);
        let rows = blk * MC..((blk + 1) * MC).min(m);
        // SAFETY: the asserts above give every size `block` reads and writes; tasks write
        // disjoint blocks of the output; the micro-kernel was chosen for this CPU.
        unsafe { block(micro, a, rows, b, p, &cols, target) };
    };
    if m * n * k < SERIAL_WORK {
        (0..blocks * panels).for_each(task);
    } else {
        pool.parallel_for(blocks * panels, &task);
    }
}

/// The output as the tasks see it.
#[derive(Clone, Copy)]
enum Target<'a> {
    Int(SharedMut<i32>),
    Float(SharedMut<f32>, &'a [f32], Option<&'a [f32]>),
    Bytes(SharedMut<u8>, &'a [f32], &'a [i32], Requant),
    BytesByColumn(SharedMut<u8>, &'a [f32], Requant),
}

type BlockFn = unsafe fn(Micro8, &Lhs, std::ops::Range<usize>, &PackedView, usize, &Columns, Target);

/// The block loop compiled for `isa`, so that its epilogue is vectorised for it.
fn block_fn(isa: Isa) -> BlockFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::block_avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::block_avx2,
        _ => block_portable,
    }
}

/// # Safety
/// See [`block`].
unsafe fn block_portable(
    micro: Micro8,
    a: &Lhs,
    rows: std::ops::Range<usize>,
    b: &PackedView,
    p: usize,
    cols: &Columns,
    target: Target,
) {
    unsafe { block(micro, finish_rows, a, rows, b, p, cols, target) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{block, finish_rows, Columns, Lhs, Micro8, PackedView, RowsOut, Target, NR};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// See [`block`]; needs AVX-512F/BW.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub unsafe fn block_avx512(m: Micro8, a: &Lhs, r: Range<usize>, b: &PackedView, p: usize, c: &Columns, t: Target) {
        unsafe { block(m, finish_rows_avx512, a, r, b, p, c, t) }
    }

    /// [`super::finish_rows`] in two halves of sixteen lanes, the partial last panel through
    /// masked stores; the panel's columns (offsets, zero points, scales, biases) loaded once for
    /// all the rows, and the zero points' term left out when they are all zero (symmetric
    /// weights: a dynamically quantised transformer's).
    ///
    /// # Safety
    /// See [`super::FinishRows`]; needs AVX-512F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn finish_rows_avx512(
        sums: &[[i32; NR]],
        offset: &[i32; NR],
        zb: &[i32; NR],
        rowsums: &[i32],
        width: usize,
        ld: usize,
        out: RowsOut,
    ) {
        let mask: u32 = if width >= NR { !0 } else { (1u32 << width) - 1 };
        let with_zb = zb.iter().any(|&z| z != 0);
        unsafe {
            for h in 0..2 {
                let lanes = (mask >> (16 * h)) as u16;
                let at = |p: *const i32| _mm512_loadu_si512(p.add(16 * h) as *const __m512i);
                let (off, zbh) = (at(offset.as_ptr()), at(zb.as_ptr()));
                // Row r's exact int32 values.
                let value = |r: usize| {
                    let v = _mm512_add_epi32(at(sums[r].as_ptr()), off);
                    if with_zb {
                        _mm512_sub_epi32(v, _mm512_mullo_epi32(zbh, _mm512_set1_epi32(rowsums[r])))
                    } else {
                        v
                    }
                };
                match out {
                    RowsOut::Int(y) => {
                        for r in 0..sums.len() {
                            _mm512_mask_storeu_epi32(y.0.add(r * ld + 16 * h), lanes, value(r));
                        }
                    }
                    RowsOut::Float(y, scale, bias) => {
                        let sc = _mm512_loadu_ps(scale.as_ptr().add(16 * h));
                        let bi = bias.map(|b| _mm512_loadu_ps(b.as_ptr().add(16 * h)));
                        for r in 0..sums.len() {
                            let mut f = _mm512_mul_ps(_mm512_cvtepi32_ps(value(r)), sc);
                            if let Some(bi) = bi {
                                f = _mm512_add_ps(f, bi);
                            }
                            _mm512_mask_storeu_ps(y.0.add(r * ld + 16 * h), lanes, f);
                        }
                    }
                    RowsOut::Bytes(y, mult, bias, q) => {
                        for r in 0..sums.len() {
                            let f = _mm512_cvtepi32_ps(_mm512_add_epi32(value(r), _mm512_set1_epi32(bias[r])));
                            let f = _mm512_mul_ps(f, _mm512_set1_ps(mult[r]));
                            store_bytes(y.0.add(r * ld + 16 * h), lanes, f, q);
                        }
                    }
                    RowsOut::BytesByColumn(y, mult, q) => {
                        let m = _mm512_loadu_ps(mult.as_ptr().add(16 * h));
                        for r in 0..sums.len() {
                            let f = _mm512_mul_ps(_mm512_cvtepi32_ps(value(r)), m);
                            store_bytes(y.0.add(r * ld + 16 * h), lanes, f, q);
                        }
                    }
                }
            }
        }
    }

    /// Rounds, clamps and stores 16 requantized values (the `lanes` of them) as bytes, as
    /// requant::requantize_lanes does: the bounds less the zero point, then it added.
    ///
    /// # Safety
    /// `y` is valid for the lanes' bytes; needs AVX-512F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn store_bytes(y: *mut u8, lanes: u16, f: __m512, q: super::Requant) {
        let f = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(f);
        let f = _mm512_min_ps(
            _mm512_max_ps(f, _mm512_set1_ps((q.lo - q.zero_point) as f32)),
            _mm512_set1_ps((q.hi - q.zero_point) as f32),
        );
        let r = _mm512_add_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(q.zero_point));
        // In -128..=255: the low byte is the uint8 or int8 value.
        // SAFETY: the caller's promise.
        unsafe { _mm_mask_storeu_epi8(y as *mut i8, lanes, _mm512_cvtepi32_epi8(r)) };
    }

    /// [`super::row_sums`] by `vpsadbw` against zero: 32 bytes summed into four u64 lanes a step
    /// (the sum mod 2^32 is the same as the u32 fold's).
    ///
    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn row_sums_avx2(a: &[u8], lda: usize, rowsum: &mut [i32]) {
        for (row, s) in a.chunks_exact(lda.max(1)).zip(rowsum.iter_mut()) {
            let body = row.len() / 32 * 32;
            let mut lanes = [0u64; 4];
            // SAFETY: the loads read row[i..i + 32] with i + 32 <= body <= row.len(); the CPU
            // has AVX2 (the caller's promise).
            unsafe {
                let mut acc = _mm256_setzero_si256();
                for i in (0..body).step_by(32) {
                    let v = _mm256_loadu_si256(row.as_ptr().add(i) as *const __m256i);
                    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, _mm256_setzero_si256()));
                }
                _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
            }
            let tail = row[body..].iter().fold(0u32, |acc, &v| acc.wrapping_add(v as u32));
            *s = (lanes.iter().sum::<u64>() as u32).wrapping_add(tail) as i32;
        }
    }

    /// # Safety
    /// See [`block`]; needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_avx2(m: Micro8, a: &Lhs, r: Range<usize>, b: &PackedView, p: usize, c: &Columns, t: Target) {
        unsafe { block(m, finish_rows, a, r, b, p, c, t) }
    }
}

/// Rows `rows` of A times panel `p` of B, through the epilogue into the output.
///
/// # Safety
/// The sizes [`run`] asserts; nobody else writes this block of the output; the CPU runs `micro`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    micro: Micro8,
    finish: FinishRows,
    a: &Lhs,
    rows: std::ops::Range<usize>,
    b: &PackedView,
    p: usize,
    cols: &Columns,
    target: Target,
) {
    let n = b.n;
    let (j0, width) = (p * NR, NR.min(n - p * NR));
    let bp = b.panel(p).as_ptr();
    let panel = |s: &[i32]| -> [i32; NR] { s[j0..j0 + NR].try_into().expect("a panel's columns") };
    let (offset, zb) = (panel(cols.offset), panel(cols.zb));
    // The sums of rows i.. (one per row of `sums`) through the epilogue into the output.
    let emit = |i: usize, sums: &[[i32; NR]]| {
        let rows = i..i + sums.len();
        let out = match target {
            Target::Int(y) => RowsOut::Int(SharedMut(y.0.wrapping_add(i * n + j0))),
            Target::Float(y, scale, bias) => RowsOut::Float(
                SharedMut(y.0.wrapping_add(i * n + j0)),
                scale[j0..j0 + NR].try_into().expect("a panel's columns"),
                bias.map(|b| b[j0..j0 + NR].try_into().expect("a panel's columns")),
            ),
            Target::Bytes(y, mult, bias, q) => {
                RowsOut::Bytes(SharedMut(y.0.wrapping_add(i * n + j0)), &mult[rows.clone()], &bias[rows.clone()], q)
            }
            Target::BytesByColumn(y, mult, q) => RowsOut::BytesByColumn(
                SharedMut(y.0.wrapping_add(i * n + j0)),
                mult[j0..j0 + NR].try_into().expect("a panel's columns"),
                q,
            ),
        };
        // SAFETY: this task owns these rows, columns j0..j0 + width of the output.
        unsafe { (finish)(sums, &offset, &zb, &a.rowsum[rows], width, n, out) };
    };
    // Advanced past the AMX tiles, on x86-64 alone.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut start = rows.start;
    // Whole 32-row tiles on AMX, where k comes in whole tile steps.
    #[cfg(target_arch = "x86_64")]
    if micro.amx && a.lda.is_multiple_of(amx::K_STEP) && rows.len() >= amx::ROWS {
        let mut tile = [[0i32; NR]; amx::ROWS];
        // SAFETY: micro.amx is set only where amx::available() said so.
        unsafe { amx::configure() };
        while start + amx::ROWS <= rows.end {
            // SAFETY: rows start..start + 32 of A have lda bytes each (run's asserts), the panel
            // lda / 4 groups (lda is k rounded up to four).
            unsafe { amx::tile_32x32(a.lda / amx::K_STEP, a.data[start * a.lda..].as_ptr(), a.lda, bp, &mut tile) };
            emit(start, &tile);
            start += amx::ROWS;
        }
        // SAFETY: as for configure.
        unsafe { amx::release() };
    }
    let mut acc = [[0i32; NR]; MR];
    for i0 in (start..rows.end).step_by(MR) {
        let count = MR.min(rows.end - i0);
        // Rows past the block repeat its last one; their sums are not written.
        let ptrs: [*const u8; MR] = std::array::from_fn(|r| a.data[(i0 + r.min(count - 1)) * a.lda..].as_ptr());
        // SAFETY: each row pointer has lda = kq * 4 bytes, the panel kq * NR * 4.
        unsafe { (micro.run)(a.lda / 4, &ptrs, bp, &mut acc) };
        emit(i0, &acc[..count]);
    }
}

/// Rows of the output, `ld` values apart, from column j0 on: int32, or f32 with the panel's
/// scales and biases, or requantized bytes (with each row's multiplier and bias, or the panel's
/// multipliers).
#[derive(Clone, Copy)]
enum RowsOut<'a> {
    Int(SharedMut<i32>),
    Float(SharedMut<f32>, &'a [f32; NR], Option<&'a [f32; NR]>),
    Bytes(SharedMut<u8>, &'a [f32], &'a [i32], Requant),
    BytesByColumn(SharedMut<u8>, &'a [f32; NR], Requant),
}

/// The epilogue for rows of a tile (`sums`, with one row sum each): `sums + offset - zb *
/// rowsum`, to int32 or through the float steps, the first `width` values of each row written.
/// A block of rows at a time, so that the panel's columns are loaded once.
///
/// # Safety
/// The output rows are valid for `width` values at `ld` apart and nobody else writes them; the
/// CPU runs the instruction set the function is for.
type FinishRows = unsafe fn(&[[i32; NR]], &[i32; NR], &[i32; NR], &[i32], usize, usize, RowsOut);

/// # Safety
/// See [`FinishRows`].
#[inline(always)]
unsafe fn finish_rows(
    sums: &[[i32; NR]],
    offset: &[i32; NR],
    zb: &[i32; NR],
    rowsums: &[i32],
    width: usize,
    ld: usize,
    out: RowsOut,
) {
    for (r, (sums, &rowsum)) in sums.iter().zip(rowsums).enumerate() {
        let mut v = [0i32; NR];
        for j in 0..NR {
            v[j] = sums[j].wrapping_add(offset[j]).wrapping_sub(zb[j].wrapping_mul(rowsum));
        }
        // SAFETY (all the slices below): the caller's promise.
        match out {
            RowsOut::Int(y) => {
                unsafe { std::slice::from_raw_parts_mut(y.0.add(r * ld), width) }.copy_from_slice(&v[..width]);
            }
            RowsOut::Bytes(y, mult, bias, q) => {
                let y = unsafe { std::slice::from_raw_parts_mut(y.0.add(r * ld), width) };
                requant::requantize_lanes(&v[..width], bias[r], mult[r], q, y);
            }
            RowsOut::BytesByColumn(y, mult, q) => {
                let y = unsafe { std::slice::from_raw_parts_mut(y.0.add(r * ld), width) };
                for (j, d) in y.iter_mut().enumerate() {
                    requant::requantize_lanes(&v[j..j + 1], 0, mult[j], q, std::slice::from_mut(d));
                }
            }
            RowsOut::Float(y, scale, bias) => {
                let mut f = [0f32; NR];
                for j in 0..NR {
                    f[j] = v[j] as f32 * scale[j];
                }
                if let Some(bias) = bias {
                    for j in 0..NR {
                        f[j] += bias[j];
                    }
                }
                unsafe { std::slice::from_raw_parts_mut(y.0.add(r * ld), width) }.copy_from_slice(&f[..width]);
            }
        }
    }
}

/// The sum of each row of `a` (`m` rows of `lda` bytes), wrapping like the reference.
pub fn row_sums(a: &[u8], lda: usize, rowsum: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(super::isa::isa(), Isa::Avx512 | Isa::Avx2) {
        // SAFETY: both instruction sets include AVX2.
        return unsafe { x86::row_sums_avx2(a, lda, rowsum) };
    }
    row_sums_portable(a, lda, rowsum)
}

/// [`row_sums`] in plain Rust (SSE2 widens four bytes a step: it was a tenth of an int8
/// MiniLM's MatMulInteger time).
fn row_sums_portable(a: &[u8], lda: usize, rowsum: &mut [i32]) {
    for (row, s) in a.chunks_exact(lda.max(1)).zip(rowsum.iter_mut()) {
        // Partial sums in u32 lanes (no overflow below 16M bytes a row), then wrapped to i32.
        *s = row.iter().fold(0u32, |acc, &v| acc.wrapping_add(v as u32)) as i32;
    }
}
