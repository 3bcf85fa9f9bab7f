//! Peak fp32 FMA throughput: independent chains of fused multiply-adds, enough of them (12) to
//! cover the FMA latency times the number of FMA pipes on current cores (4 cycles x 2 pipes on
//! Zen 4 and Intel cores), so the loop is bound by throughput, not latency. Every kernel the CPU
//! can run is measured (detected at run time); the peak is the best of them. (Zen 4 runs a 512-bit
//! FMA as two 256-bit halves, so AVX-512 and AVX2 reach the same peak there; cores with two
//! 512-bit FMA units double it.)

/// Independent accumulators per kernel.
const CHAINS: usize = 12;

#[derive(Clone, Copy)]
pub enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// Separate multiply and add, as vectorised by the compiler: not a peak, a floor.
    Portable,
}

impl Kernel {
    /// The kernels this CPU can run, widest first.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(Kernel::Avx2Fma);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                kernels.push(Kernel::Neon);
            }
        }
        kernels.push(Kernel::Portable);
        kernels
    }

    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "AVX-512 FMA, 16 lanes",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => "AVX2 FMA, 8 lanes",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "NEON FMA, 4 lanes",
            Kernel::Portable => "portable mul+add, no FMA",
        }
    }

    /// Runs `iters` rounds of the chains on one thread; returns the flops done.
    pub fn flops(self, iters: u64) -> f64 {
        let (lanes, sum) = match self {
            // SAFETY: `available` lists these kernels only after detecting their target features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => (16, unsafe { x86::avx512(iters) }),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => (8, unsafe { x86::avx2(iters) }),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => (4, unsafe { neon(iters) }),
            Kernel::Portable => (8, portable(iters)),
        };
        assert!(sum.is_finite(), "FMA chains diverged");
        (iters * (CHAINS * lanes * 2) as u64) as f64
    }

    /// The flops of `iters` rounds run on each of `threads` threads at once.
    pub fn flops_on_threads(self, threads: usize, iters: u64) -> f64 {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(move || self.flops(iters))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }
}

/// x <- x * M + C stays near C / (1 - M) = 0.1 forever: no overflow, no denormals.
const M: f32 = 0.999;
const C: f32 = 1e-4;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{C, CHAINS, M};
    use std::arch::x86_64::*;

    /// In inline assembly: AVX-512 intrinsics and `target_feature(enable = "avx512f")` need rustc
    /// 1.89, and the crate's MSRV is 1.85. `zmm_k = zmm_k * M + C` on 12 registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    pub unsafe fn avx512(iters: u64) -> f32 {
        assert!(iters > 0, "the loop counts down to zero");
        let (m, c, one) = ([M; 16], [C; 16], [1f32; 16]);
        let mut out = [0f32; 16];
        // SAFETY: the caller checked AVX-512F. zmm0-13 are scratch: clobber_abi("C") tells the
        // compiler that every vector register may be overwritten (the SysV ABI preserves none), and
        // vzeroupper leaves their upper halves clean for the SSE/AVX code after it. The pointers
        // are to 16-float arrays that live across the block.
        std::arch::asm!(
            "vmovups zmm12, [{m}]",
            "vmovups zmm13, [{c}]",
            "vmovups zmm0, [{one}]",
            "vmovaps zmm1, zmm0",
            "vmovaps zmm2, zmm0",
            "vmovaps zmm3, zmm0",
            "vmovaps zmm4, zmm0",
            "vmovaps zmm5, zmm0",
            "vmovaps zmm6, zmm0",
            "vmovaps zmm7, zmm0",
            "vmovaps zmm8, zmm0",
            "vmovaps zmm9, zmm0",
            "vmovaps zmm10, zmm0",
            "vmovaps zmm11, zmm0",
            "2:",
            "vfmadd213ps zmm0, zmm12, zmm13",
            "vfmadd213ps zmm1, zmm12, zmm13",
            "vfmadd213ps zmm2, zmm12, zmm13",
            "vfmadd213ps zmm3, zmm12, zmm13",
            "vfmadd213ps zmm4, zmm12, zmm13",
            "vfmadd213ps zmm5, zmm12, zmm13",
            "vfmadd213ps zmm6, zmm12, zmm13",
            "vfmadd213ps zmm7, zmm12, zmm13",
            "vfmadd213ps zmm8, zmm12, zmm13",
            "vfmadd213ps zmm9, zmm12, zmm13",
            "vfmadd213ps zmm10, zmm12, zmm13",
            "vfmadd213ps zmm11, zmm12, zmm13",
            "dec rcx",
            "jnz 2b",
            "vaddps zmm0, zmm0, zmm1",
            "vaddps zmm0, zmm0, zmm2",
            "vaddps zmm0, zmm0, zmm3",
            "vaddps zmm0, zmm0, zmm4",
            "vaddps zmm0, zmm0, zmm5",
            "vaddps zmm0, zmm0, zmm6",
            "vaddps zmm0, zmm0, zmm7",
            "vaddps zmm0, zmm0, zmm8",
            "vaddps zmm0, zmm0, zmm9",
            "vaddps zmm0, zmm0, zmm10",
            "vaddps zmm0, zmm0, zmm11",
            "vmovups [{out}], zmm0",
            "vzeroupper",
            m = in(reg) m.as_ptr(),
            c = in(reg) c.as_ptr(),
            one = in(reg) one.as_ptr(),
            out = in(reg) out.as_mut_ptr(),
            inout("rcx") iters => _,
            clobber_abi("C"),
            options(nostack),
        );
        std::hint::black_box(out.iter().sum())
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64) -> f32 {
        let (m, c) = (_mm256_set1_ps(M), _mm256_set1_ps(C));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc.iter().fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a)));
        std::hint::black_box(out.iter().sum())
    }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn neon(iters: u64) -> f32 {
    use std::arch::aarch64::*;
    let (m, c) = (vdupq_n_f32(M), vdupq_n_f32(C));
    let mut acc = [vdupq_n_f32(1.0); CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = vfmaq_f32(c, *a, m);
        }
    }
    std::hint::black_box(acc.iter().map(|&a| vaddvq_f32(a)).sum())
}

fn portable(iters: u64) -> f32 {
    let mut acc = [[1f32; 8]; CHAINS];
    for _ in 0..iters {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = *x * M + C;
            }
        }
    }
    std::hint::black_box(acc.iter().flatten().sum())
}
