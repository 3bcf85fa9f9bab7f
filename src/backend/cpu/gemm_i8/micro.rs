//! Integer GEMM micro-kernels, one per instruction set, side by side. Each sums MR rows of A
//! (uint8, `kq * 4` bytes from each row pointer) times one packed B panel (int8, for each group
//! of four k, NR columns of four bytes) into an MR x NR tile of exact int32 sums, wrapping.

use super::{MR, NR};
use crate::backend::cpu::isa::Isa;

/// A micro-kernel and the instruction set it needs.
#[derive(Clone, Copy, Debug)]
pub struct Micro8 {
    pub isa: Isa,
    /// Whole 32-row tiles go to AMX (`amx.rs`) when k is a multiple of 64; the rest to `run`.
    pub amx: bool,
    /// # Safety
    /// `a[r]` is readable for `kq * 4` bytes, `b` for `kq * NR * 4`; the CPU runs `isa`.
    pub run: unsafe fn(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]),
}

/// The micro-kernel for `isa`: AVX-512 VNNI's `vpdpbusd` where the CPU has it (AVX-512 without
/// VNNI takes the AVX2 kernel), with AMX tiles for whole 32-row blocks where the CPU has those
/// too; AVX2's widening multiply-adds; or plain Rust.
pub fn micro_for(isa: Isa) -> Micro8 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") => {
            Micro8 { isa, amx: super::amx::available(), run: x86::vnni_8x32 }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => Micro8 { isa: Isa::Avx2, amx: false, run: x86::avx2_8x32 },
        _ => Micro8 { isa: Isa::Portable, amx: false, run: portable_8x32 },
    }
}

/// Plain Rust. Per group of four k the panel's bytes are first turned k-major (`bt[t][j]`), so
/// the row loops run over contiguous columns and vectorise: a u8 x s8 product fits an i16
/// exactly (-32640..=32385), so it is an i16 multiply widened into the i32 sum (NEON's `smlal`,
/// SSE2's `pmullw`; SSE2 has no 32-bit multiply).
///
/// # Safety
/// See [`Micro8::run`].
pub unsafe fn portable_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
    // SAFETY: the caller guarantees the sizes.
    let b = unsafe { std::slice::from_raw_parts(b, kq * NR * 4) };
    let rows: [&[u8]; MR] = std::array::from_fn(|r| unsafe { std::slice::from_raw_parts(a[r], kq * 4) });
    let mut acc = [[0i32; NR]; MR];
    let mut bt = [[0i16; NR]; 4];
    for (q, bq) in b.chunks_exact(NR * 4).enumerate() {
        for (j, bj) in bq.chunks_exact(4).enumerate() {
            for t in 0..4 {
                bt[t][j] = bj[t] as i16;
            }
        }
        for (acc, row) in acc.iter_mut().zip(&rows) {
            for (t, bt) in bt.iter().enumerate() {
                let av = row[q * 4 + t] as i16;
                for j in 0..NR {
                    acc[j] = acc[j].wrapping_add((av * bt[j]) as i32);
                }
            }
        }
    }
    *out = acc;
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// AVX2 without `vpmaddubsw`, whose pairwise i16 sums saturate (255 * 127 * 2 > 32767):
    /// A and B are widened to i16 and multiplied with `vpmaddwd`, exact in i32. Per pass, four
    /// rows by eight columns in eight ymm accumulators, each holding two partial sums of four
    /// columns (k = 0,1 and k = 2,3), folded together at the end.
    ///
    /// # Safety
    /// See [`super::Micro8::run`]; needs AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
        const ROWS: usize = 4;
        const COLS: usize = 8;
        unsafe {
            for r0 in (0..MR).step_by(ROWS) {
                for c0 in (0..NR).step_by(COLS) {
                    let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
                    for q in 0..kq {
                        let bq = b.add(q * NR * 4 + c0 * 4);
                        let b_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(bq as *const __m128i));
                        let b_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(bq.add(16) as *const __m128i));
                        for (r, acc) in acc.iter_mut().enumerate() {
                            let four = std::ptr::read_unaligned(a[r0 + r].add(q * 4) as *const i32);
                            let av = _mm256_cvtepu8_epi16(_mm_set1_epi32(four));
                            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, b_lo));
                            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, b_hi));
                        }
                    }
                    for (r, acc) in acc.iter().enumerate() {
                        // hadd gives columns 0 1 4 5 | 2 3 6 7; the permute puts them in order.
                        let sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[0], acc[1]), 0b11_01_10_00);
                        _mm256_storeu_si256(out[r0 + r].as_mut_ptr().add(c0) as *mut __m256i, sums);
                    }
                }
            }
        }
    }

    /// 8 rows x 32 columns in 16 zmm accumulators: per four k, two B loads, eight broadcasts of
    /// four A bytes and sixteen `vpdpbusd` (u8 x s8 products summed in fours, no saturation).
    ///
    /// # Safety
    /// See [`super::Micro8::run`]; needs AVX-512F/BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn vnni_8x32(kq: usize, a: &[*const u8; MR], b: *const i8, out: &mut [[i32; NR]; MR]) {
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for q in 0..kq {
                let bq = b.add(q * NR * 4);
                let b0 = _mm512_loadu_si512(bq as *const __m512i);
                let b1 = _mm512_loadu_si512(bq.add(64) as *const __m512i);
                for r in 0..MR {
                    let av = _mm512_set1_epi32(std::ptr::read_unaligned(a[r].add(q * 4) as *const i32));
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
                }
            }
            for r in 0..MR {
                _mm512_storeu_si512(out[r].as_mut_ptr() as *mut __m512i, acc[r][0]);
                _mm512_storeu_si512(out[r].as_mut_ptr().add(16) as *mut __m512i, acc[r][1]);
            }
        }
    }
}
