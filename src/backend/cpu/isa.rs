//! Which instruction set the fast CPU kernels use, detected once at start (onnxruntime's MLAS
//! fills its function table the same way). `CRX580_ISA=avx512|avx2|neon|portable` picks a lower
//! one, for tests that check every kernel family on one machine and for comparing them.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust, whatever the compiler makes of it: every target.
    Portable,
    /// aarch64 Advanced SIMD.
    Neon,
    /// x86-64 AVX2 with FMA.
    Avx2,
    /// x86-64 AVX-512F (plus AVX2/FMA).
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Every instruction set this CPU can run, best last.
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Neon, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.supported()).collect()
    }

    /// Whether this CPU can run the kernels of `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::Avx2.supported() && is_x86_feature_detected!("avx512f"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The instruction set the kernels use: the best this CPU has, or a lower one named by
/// `CRX580_ISA` (an unknown or unsupported name is ignored with a warning).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = *Isa::available().last().expect("portable is always available");
        match std::env::var("CRX580_ISA") {
            Ok(name) => match Isa::available().into_iter().find(|i| i.name() == name) {
                Some(i) => i,
                None => {
                    log::warn!("CRX580_ISA={name} is not an instruction set this CPU runs; using {}", best.name());
                    best
                }
            },
            Err(_) => best,
        }
    })
}

/// Whether a layer input of `floats` f32 values is read from memory, not the caches, whatever
/// the layer before did (16 MiB or more): the kernels whose reads the hardware prefetchers of
/// some cores take up too late ask for such inputs ahead ([`prefetch`]). Below it, where the
/// input sits in the caches, the extra instructions cost up to 1.25x (MobileNetV2's depthwise
/// layers, ResNet-50's max pool on AMD Zen 4; benches/RESULTS.md, session 26).
pub fn prefetch_pays(floats: usize) -> bool {
    floats.saturating_mul(4) >= 16 << 20
}

/// Which cache [`prefetch`] brings lines into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    L1,
    L2,
}

/// Asks for every cache line of `data` to be brought into `cache` ahead of its use, for streams
/// that the hardware prefetchers of some cores take up too late (short rows read a few KiB
/// apart). A hint: it reads nothing and cannot fault; a no-op off x86-64.
#[inline(always)]
pub fn prefetch(data: &[f32], cache: Cache) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        // SAFETY: a prefetch has no architectural effect (SSE is part of x86-64's baseline).
        unsafe {
            match cache {
                Cache::L1 => _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()),
                Cache::L2 => _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, cache);
}
