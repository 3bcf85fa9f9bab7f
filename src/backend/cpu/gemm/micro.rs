//! GEMM micro-kernels: one small register-blocked product per instruction set, side by side.
//!
//! Each computes an MR x NR tile of C from a packed A panel (for each k, MR values of a column)
//! and a packed B panel (for each k, NR values of a row), over `kc` steps:
//! `C = (accumulate ? C : 0) + A_panel · B_panel`, C with row stride `ldc`.

use super::super::isa::Isa;

/// A micro-kernel and its tile size.
#[derive(Clone, Copy)]
pub struct Micro {
    pub mr: usize,
    pub nr: usize,
    /// # Safety
    /// `a` holds `kc * mr` floats, `b` holds `kc * nr`, and `c` is valid for `mr` rows of `nr`
    /// floats at row stride `ldc`; the CPU supports the kernel's instruction set.
    pub run: unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool),
    /// The same over the first `nr / 2` columns alone (B panels still `nr` wide; C written
    /// `nr / 2` wide): for a last panel of at most that many columns (a 14x14 plane's 196 pixels
    /// leave 4 in the seventh panel of 32), which the full kernel would compute at full cost.
    pub half: unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool),
}

impl std::fmt::Debug for Micro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Micro({}x{})", self.mr, self.nr)
    }
}

/// The micro-kernel for `isa`.
pub fn micro_for(isa: Isa) -> Micro {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Micro { mr: 8, nr: 32, run: x86::avx512_8x32, half: x86::avx512_8x16 },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Micro { mr: 6, nr: 16, run: x86::avx2_6x16, half: x86::avx2_6x8 },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Micro { mr: 8, nr: 8, run: neon::neon_8x8, half: neon::neon_8x4 },
        _ => Micro { mr: 4, nr: 16, run: portable_4x16, half: portable_4x8 },
    }
}

/// The portable kernel: plain Rust arrays that the compiler keeps in registers and vectorises.
///
/// # Safety
/// See [`Micro::run`].
unsafe fn portable_4x16(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
    unsafe { portable_4xn::<16>(kc, a, b, c, ldc, accumulate) }
}

/// The portable kernel's half; see [`Micro::half`].
///
/// # Safety
/// See [`Micro::run`].
unsafe fn portable_4x8(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
    unsafe { portable_4xn::<8>(kc, a, b, c, ldc, accumulate) }
}

/// 4 rows by the first `N` of a 16-column B panel.
///
/// # Safety
/// See [`Micro::run`].
#[inline(always)]
unsafe fn portable_4xn<const N: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0f32; N]; MR];
    // SAFETY (whole function): the caller guarantees the panel and tile sizes.
    let (a, b) = unsafe { (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR)) };
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            for j in 0..N {
                acc[r][j] += ak[r] * bk[j];
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let c_row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), N) };
        for (cv, &v) in c_row.iter_mut().zip(row) {
            *cv = if accumulate { *cv + v } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// How far ahead of use the AVX-512 kernel prefetches A, in floats (32 steps of 8 rows).
    const A_AHEAD: usize = 32 * 8;

    /// 8 rows x 32 columns: 16 zmm accumulators, two B loads and eight broadcasts per k.
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512_8x32(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        unsafe { avx512_8xv::<2>(kc, a, b, c, ldc, accumulate) }
    }

    /// [`avx512_8x32`]'s half: 8 accumulators, one B load and eight broadcasts per k.
    ///
    /// # Safety
    /// See [`super::Micro::half`]; needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512_8x16(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        unsafe { avx512_8xv::<1>(kc, a, b, c, ldc, accumulate) }
    }

    /// 8 rows by the first `V` vectors of 16 of a 32-column B panel.
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn avx512_8xv<const V: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 8;
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; MR];
            let (mut a, mut b) = (a, b);
            let step = |acc: &mut [[__m512; V]; MR], a: *const f32, b: *const f32| {
                let bv: [__m512; V] = std::array::from_fn(|h| _mm512_loadu_ps(b.add(16 * h)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r));
                    for (acc, &bh) in row.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(av, bh, *acc);
                    }
                }
            };
            for _ in 0..kc / 2 {
                // Constant A panels (a conv's weights) stream from memory on their first use:
                // ask for them 32 steps ahead (a slice's panels are contiguous), one cache line
                // per two steps (a prefetch every step cost 5% with A in L2).
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_AHEAD).cast());
                step(&mut acc, a, b);
                step(&mut acc, a.add(MR), b.add(32));
                a = a.add(2 * MR);
                b = b.add(64);
            }
            if kc % 2 == 1 {
                step(&mut acc, a, b);
            }
            for (r, row) in acc.iter().enumerate() {
                let p = c.add(r * ldc);
                for (h, &v) in row.iter().enumerate() {
                    let v = if accumulate { _mm512_add_ps(v, _mm512_loadu_ps(p.add(16 * h))) } else { v };
                    _mm512_storeu_ps(p.add(16 * h), v);
                }
            }
        }
    }

    /// 6 rows x 16 columns: 12 ymm accumulators, two B loads and six broadcasts per k.
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_6x16(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        unsafe { avx2_6xv::<2>(kc, a, b, c, ldc, accumulate) }
    }

    /// [`avx2_6x16`]'s half.
    ///
    /// # Safety
    /// See [`super::Micro::half`]; needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_6x8(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        unsafe { avx2_6xv::<1>(kc, a, b, c, ldc, accumulate) }
    }

    /// 6 rows by the first `V` vectors of 8 of a 16-column B panel.
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_6xv<const V: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 6;
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; MR];
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                let bv: [__m256; V] = std::array::from_fn(|h| _mm256_loadu_ps(b.add(8 * h)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r));
                    for (acc, &bh) in row.iter_mut().zip(&bv) {
                        *acc = _mm256_fmadd_ps(av, bh, *acc);
                    }
                }
                a = a.add(MR);
                b = b.add(16);
            }
            for (r, row) in acc.iter().enumerate() {
                let p = c.add(r * ldc);
                for (h, &v) in row.iter().enumerate() {
                    let v = if accumulate { _mm256_add_ps(v, _mm256_loadu_ps(p.add(8 * h))) } else { v };
                    _mm256_storeu_ps(p.add(8 * h), v);
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// 8 rows x 8 columns: 16 q-register accumulators; per k two B loads, two A loads and 16
    /// lane-indexed FMAs.
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs NEON.
    #[target_feature(enable = "neon")]
    pub unsafe fn neon_8x8(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); 2]; 8];
            let (mut a, mut b) = (a, b);
            macro_rules! row {
                ($r:expr, $av:expr, $lane:literal, $b0:expr, $b1:expr) => {
                    acc[$r][0] = vfmaq_laneq_f32::<$lane>(acc[$r][0], $b0, $av);
                    acc[$r][1] = vfmaq_laneq_f32::<$lane>(acc[$r][1], $b1, $av);
                };
            }
            for _ in 0..kc {
                let (b0, b1) = (vld1q_f32(b), vld1q_f32(b.add(4)));
                let (a0, a1) = (vld1q_f32(a), vld1q_f32(a.add(4)));
                row!(0, a0, 0, b0, b1);
                row!(1, a0, 1, b0, b1);
                row!(2, a0, 2, b0, b1);
                row!(3, a0, 3, b0, b1);
                row!(4, a1, 0, b0, b1);
                row!(5, a1, 1, b0, b1);
                row!(6, a1, 2, b0, b1);
                row!(7, a1, 3, b0, b1);
                a = a.add(8);
                b = b.add(8);
            }
            for (r, row) in acc.iter().enumerate() {
                let p = c.add(r * ldc);
                for (h, &v) in row.iter().enumerate() {
                    let v = if accumulate { vaddq_f32(v, vld1q_f32(p.add(4 * h))) } else { v };
                    vst1q_f32(p.add(4 * h), v);
                }
            }
        }
    }

    /// [`neon_8x8`]'s half: 8 accumulators over the first 4 columns of 8-column B panels.
    ///
    /// # Safety
    /// See [`super::Micro::half`]; needs NEON.
    #[target_feature(enable = "neon")]
    pub unsafe fn neon_8x4(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
        unsafe {
            let mut acc = [vdupq_n_f32(0.0); 8];
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                let b0 = vld1q_f32(b);
                let (a0, a1) = (vld1q_f32(a), vld1q_f32(a.add(4)));
                acc[0] = vfmaq_laneq_f32::<0>(acc[0], b0, a0);
                acc[1] = vfmaq_laneq_f32::<1>(acc[1], b0, a0);
                acc[2] = vfmaq_laneq_f32::<2>(acc[2], b0, a0);
                acc[3] = vfmaq_laneq_f32::<3>(acc[3], b0, a0);
                acc[4] = vfmaq_laneq_f32::<0>(acc[4], b0, a1);
                acc[5] = vfmaq_laneq_f32::<1>(acc[5], b0, a1);
                acc[6] = vfmaq_laneq_f32::<2>(acc[6], b0, a1);
                acc[7] = vfmaq_laneq_f32::<3>(acc[7], b0, a1);
                a = a.add(8);
                b = b.add(8);
            }
            for (r, &v) in acc.iter().enumerate() {
                let p = c.add(r * ldc);
                let v = if accumulate { vaddq_f32(v, vld1q_f32(p)) } else { v };
                vst1q_f32(p, v);
            }
        }
    }
}
