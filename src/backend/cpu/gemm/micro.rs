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
    pub run: Kernel,
    /// The same over the first `nr / 2` columns alone (B panels still `nr` wide; C written
    /// `nr / 2` wide): for a last panel of at most that many columns (a 14x14 plane's 196 pixels
    /// leave 4 in the seventh panel of 32), which the full kernel would compute at full cost.
    pub half: Kernel,
    /// [`run`](Self::run) reading B's `kc` rows of `nr` floats in place, `b_stride` floats apart
    /// (a row-major operand), and writing them to `copy` as the packed panel: the first of the
    /// kernels that share a panel packs it while it multiplies, where a packing pass waited on
    /// its rows first. `None` where the instruction set has no such kernel.
    ///
    /// # Safety
    /// As [`run`](Self::run), with `b` valid for `kc` rows of `nr` floats `b_stride` apart and
    /// `copy` for `kc * nr` floats not overlapping them.
    pub copying: Option<CopyingKernel>,
    /// The instruction set the kernels use.
    pub isa: Isa,
}

/// A copying micro-kernel's signature; see [`Micro::copying`].
pub type CopyingKernel = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    b_stride: usize,
    copy: *mut f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    ahead: Ahead,
);

/// A micro-kernel's signature; see [`Micro::run`].
pub type Kernel =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool, ahead: Ahead);

/// Cache lines a micro-kernel asks to be brought into L2 while it runs, one every two k steps:
/// `count` lines `stride` floats apart from `at`. The GEMM points them at what it packs next (the
/// rows of the next B panel in a 1x1 conv's image, 12 KiB apart), which packing would otherwise
/// wait for from L3 a line at a time: 162 -> 190 GFLOP/s on (64 x 576) . (576 x 3136) in a C
/// replica. A prefetch reads nothing and cannot fault, so any address will do.
#[derive(Clone, Copy)]
pub struct Ahead {
    pub at: *const f32,
    pub stride: usize,
    pub count: usize,
}

impl Ahead {
    pub const NONE: Ahead = Ahead { at: std::ptr::null(), stride: 0, count: 0 };

    /// Asks for line `s` of the `count` (nothing past them).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn line(&self, s: usize) {
        if s < self.count {
            // SAFETY: a prefetch has no architectural effect; the address is never dereferenced.
            unsafe {
                use std::arch::x86_64::*;
                _mm_prefetch::<_MM_HINT_T1>(self.at.wrapping_add(s * self.stride).cast());
            }
        }
    }
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
        Isa::Avx512 => Micro {
            mr: 8,
            nr: 32,
            run: x86::avx512_8x32,
            half: x86::avx512_8x16,
            copying: Some(x86::avx512_8x32_copying),
            isa,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Micro {
            mr: 6,
            nr: 16,
            run: x86::avx2_6x16,
            half: x86::avx2_6x8,
            copying: Some(x86::avx2_6x16_copying),
            isa,
        },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Micro { mr: 8, nr: 8, run: neon::neon_8x8, half: neon::neon_8x4, copying: None, isa },
        _ => Micro { mr: 4, nr: 16, run: portable_4x16, half: portable_4x8, copying: None, isa },
    }
}

impl Micro {
    /// The kernel for products of `m` rows whose A operand is packed at run time (a MatMul's
    /// activations), where the panel height is free: on AVX-512 the taller 14x32, unless its
    /// last panel's padding costs more than it gains (128 rows take 10 panels of 14, 140 rows,
    /// against 16 of 8). Constant A operands (conv weights) keep [`micro_for`]'s, whose 8-row
    /// panels divide the usual channel counts.
    pub fn for_plain_a(&self, m: usize) -> Micro {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if self.nr == 32 && m.div_ceil(14) * 14 * 100 <= m.div_ceil(8) * 8 * 105 => Micro {
                mr: 14,
                run: x86::avx512_14x32,
                half: x86::avx512_14x16,
                copying: Some(x86::avx512_14x32_copying),
                ..*self
            },
            _ => {
                let _ = m;
                *self
            }
        }
    }
}

/// The portable kernel: plain Rust arrays that the compiler keeps in registers and vectorises.
///
/// # Safety
/// See [`Micro::run`].
unsafe fn portable_4x16(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool, _: Ahead) {
    unsafe { portable_4xn::<16>(kc, a, b, c, ldc, accumulate) }
}

/// The portable kernel's half; see [`Micro::half`].
///
/// # Safety
/// See [`Micro::run`].
unsafe fn portable_4x8(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool, _: Ahead) {
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

/// Defines micro-kernels of [`Kernel`]'s signature as instances of a generic one.
macro_rules! kernels {
    ($($(#[$doc:meta])* $name:ident = $generic:ident::<$($param:literal),*> on $features:literal;)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// See [`Micro::run`](super::Micro::run); needs the instruction sets named by `target_feature`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool, ahead: Ahead,
        ) {
            unsafe { $generic::<$($param),*>(kc, a, b, c, ldc, accumulate, ahead) }
        }
    )*};
    // Of [`CopyingKernel`]'s signature.
    (copying: $($(#[$doc:meta])* $name:ident = $generic:ident::<$($param:literal),*> on $features:literal;)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// See [`Micro::copying`](super::Micro::copying); needs the instruction sets named by
        /// `target_feature`.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn $name(
            kc: usize, a: *const f32, b: *const f32, b_stride: usize, copy: *mut f32, c: *mut f32, ldc: usize,
            accumulate: bool, ahead: Ahead,
        ) {
            unsafe { $generic::<$($param),*>(kc, a, b, b_stride, copy, c, ldc, accumulate, ahead) }
        }
    )*};
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Ahead;
    use std::arch::x86_64::*;

    /// How far ahead of use the AVX-512 kernels prefetch A, in k steps.
    const A_AHEAD: usize = 32;

    kernels! {
        /// 8 rows x 32 columns: 16 zmm accumulators, two B loads and eight broadcasts per k.
        avx512_8x32 = avx512_kernel::<8, 2> on "avx512f";
        /// [`avx512_8x32`]'s half: 8 accumulators, one B load and eight broadcasts per k.
        avx512_8x16 = avx512_kernel::<8, 1> on "avx512f";
        /// 14 rows x 32 columns: 28 zmm accumulators, two B loads and fourteen broadcasts per k.
        /// Fewer loads per multiply-add than 8x32: 234-240 GFLOP/s alone where 8x32 ran at
        /// 220-241 (C replicas, alternated); for A operands packed at run time, whose panels can
        /// be any height (3136, 784 and 196 pixels are multiples of 14).
        avx512_14x32 = avx512_kernel::<14, 2> on "avx512f";
        /// [`avx512_14x32`]'s half.
        avx512_14x16 = avx512_kernel::<14, 1> on "avx512f";
        /// 6 rows x 16 columns: 12 ymm accumulators, two B loads and six broadcasts per k.
        avx2_6x16 = avx2_6xv::<2> on "avx2,fma";
        /// [`avx2_6x16`]'s half.
        avx2_6x8 = avx2_6xv::<1> on "avx2,fma";
    }

    /// `MR` rows by the first `V` vectors of 16 of a 32-column B panel.
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn avx512_kernel<const MR: usize, const V: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        ahead: Ahead,
    ) {
        unsafe { avx512_body::<MR, V, false>(kc, a, b, 32, std::ptr::null_mut(), c, ldc, accumulate, ahead) }
    }

    kernels! {
        copying:
        /// 8 rows x 32 columns reading B in place (rows `b_stride` apart), packing it into `copy`.
        avx512_8x32_copying = avx512_body::<8, 2, true> on "avx512f";
        /// 14 rows x 32 columns reading B in place, packing it into `copy`.
        avx512_14x32_copying = avx512_body::<14, 2, true> on "avx512f";
    }

    /// The AVX-512 kernels' body: B's rows of step k at `b + k * b_stride`, written to
    /// `copy + 32 * k` as they are loaded when `COPY`.
    ///
    /// # Safety
    /// See [`super::Micro::copying`] (`copy` unused without `COPY`); needs AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_body<const MR: usize, const V: usize, const COPY: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        b_stride: usize,
        copy: *mut f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        ahead: Ahead,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; MR];
            if accumulate {
                // C is read at the end: a skip connection written over in place comes from
                // far (L3) on its first slice; ask for its lines now.
                for r in 0..MR {
                    for h in 0..V {
                        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(r * ldc + 16 * h).cast());
                    }
                }
            }
            let (mut a, mut b, mut copy) = (a, b, copy);
            let step = |acc: &mut [[__m512; V]; MR], a: *const f32, b: *const f32, copy: *mut f32| {
                let bv: [__m512; V] = std::array::from_fn(|h| _mm512_loadu_ps(b.add(16 * h)));
                if COPY {
                    for (h, &v) in bv.iter().enumerate() {
                        _mm512_storeu_ps(copy.add(16 * h), v);
                    }
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r));
                    for (acc, &bh) in row.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(av, bh, *acc);
                    }
                }
            };
            for s in 0..kc / 2 {
                // Constant A panels (a conv's weights) stream from memory on their first use:
                // ask for them 32 steps ahead (a slice's panels are contiguous), one cache line
                // per two steps (a prefetch every step cost 5% with A in L2).
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_AHEAD * MR).cast());
                if MR > 8 {
                    // Two steps of more than 8 rows span more than one line.
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_AHEAD * MR + 16).cast());
                }
                ahead.line(s);
                step(&mut acc, a, b, copy);
                step(&mut acc, a.add(MR), b.add(b_stride), copy.wrapping_add(32));
                a = a.add(2 * MR);
                b = b.add(2 * b_stride);
                copy = copy.wrapping_add(64);
            }
            if kc % 2 == 1 {
                step(&mut acc, a, b, copy);
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
        ahead: Ahead,
    ) {
        unsafe { avx2_body::<V, false>(kc, a, b, 16, std::ptr::null_mut(), c, ldc, accumulate, ahead) }
    }

    kernels! {
        copying:
        /// 6 rows x 16 columns reading B in place (rows `b_stride` apart), packing it into `copy`.
        avx2_6x16_copying = avx2_body::<2, true> on "avx2,fma";
    }

    /// The AVX2 kernels' body: B's rows of step k at `b + k * b_stride`, written to
    /// `copy + 16 * k` as they are loaded when `COPY`.
    ///
    /// # Safety
    /// See [`super::Micro::copying`] (`copy` unused without `COPY`); needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2_body<const V: usize, const COPY: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        b_stride: usize,
        copy: *mut f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        ahead: Ahead,
    ) {
        const MR: usize = 6;
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; MR];
            if accumulate {
                // As in the AVX-512 kernels: C's lines asked for before the sums.
                for r in 0..MR {
                    _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(r * ldc).cast());
                }
            }
            let (mut a, mut b, mut copy) = (a, b, copy);
            for s in 0..kc {
                if s % 2 == 0 {
                    ahead.line(s / 2);
                }
                let bv: [__m256; V] = std::array::from_fn(|h| _mm256_loadu_ps(b.add(8 * h)));
                if COPY {
                    for (h, &v) in bv.iter().enumerate() {
                        _mm256_storeu_ps(copy.add(8 * h), v);
                    }
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r));
                    for (acc, &bh) in row.iter_mut().zip(&bv) {
                        *acc = _mm256_fmadd_ps(av, bh, *acc);
                    }
                }
                a = a.add(MR);
                b = b.add(b_stride);
                copy = copy.wrapping_add(16);
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
    use super::Ahead;
    use std::arch::aarch64::*;

    kernels! {
        /// 8 rows x 8 columns: 16 q-register accumulators; per k two B loads, two A loads and 16
        /// lane-indexed FMAs.
        neon_8x8 = neon_kernel::<2> on "neon";
        /// [`neon_8x8`]'s half: 8 accumulators over the first 4 columns of 8-column B panels.
        neon_8x4 = neon_kernel::<1> on "neon";
    }

    /// 8 rows by the first `V` vectors of 4 of an 8-column B panel. (Prefetching ahead is left to
    /// the hardware here.)
    ///
    /// # Safety
    /// See [`super::Micro::run`]; needs NEON.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn neon_kernel<const V: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        _: Ahead,
    ) {
        unsafe {
            let mut acc = [[vdupq_n_f32(0.0); V]; 8];
            let (mut a, mut b) = (a, b);
            for _ in 0..kc {
                let bv: [float32x4_t; V] = std::array::from_fn(|h| vld1q_f32(b.add(4 * h)));
                let (a0, a1) = (vld1q_f32(a), vld1q_f32(a.add(4)));
                for (r, row) in acc.iter_mut().enumerate() {
                    for (acc, &bh) in row.iter_mut().zip(&bv) {
                        // Row r's A value is lane r % 4 of a0 or a1; the loops unroll, so each
                        // match folds to one lane-indexed FMA.
                        *acc = match r {
                            0 => vfmaq_laneq_f32::<0>(*acc, bh, a0),
                            1 => vfmaq_laneq_f32::<1>(*acc, bh, a0),
                            2 => vfmaq_laneq_f32::<2>(*acc, bh, a0),
                            3 => vfmaq_laneq_f32::<3>(*acc, bh, a0),
                            4 => vfmaq_laneq_f32::<0>(*acc, bh, a1),
                            5 => vfmaq_laneq_f32::<1>(*acc, bh, a1),
                            6 => vfmaq_laneq_f32::<2>(*acc, bh, a1),
                            _ => vfmaq_laneq_f32::<3>(*acc, bh, a1),
                        };
                    }
                }
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
}
