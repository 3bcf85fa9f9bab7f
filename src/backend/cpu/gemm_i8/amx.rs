//! AMX (the tile unit of Sapphire Rapids and later Xeons): `tdpbusd` multiplies a 16 x 64 tile
//! of uint8 A by a 16 x 64 tile of int8 B in the same four-byte groups as VNNI, 16 x 16 int32
//! sums per instruction (1024 multiply-adds, against 16 x 4 for one `vpdpbusd`). The packed B
//! panel (NR = 32 columns, four k a group, 128 bytes a group) is already two B tiles side by
//! side: sixteen groups of columns 0..16 at stride 128, and the same at offset 64. onnxruntime
//! (MLAS) runs its int8 GEMM on AMX where the CPU has it.
//!
//! The instructions go through inline assembly (Rust's AMX intrinsics are not stable). Linux
//! gives a process the tile state only when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which
//! [`available`] does once; any failure there leaves the VNNI kernel in use.

use super::NR;
use std::arch::asm;
use std::sync::OnceLock;

/// Rows of one AMX call: two A tiles.
pub const ROWS: usize = 32;
/// Bytes of k one tile step takes.
pub const K_STEP: usize = 64;

/// Whether this CPU has AMX-INT8 and the OS lets this process use it (asked once). Set
/// `CRX580_NO_AMX` to keep the VNNI kernel (for comparisons).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("CRX580_NO_AMX").is_some() {
            return false;
        }
        // CPUID leaf 7 (present where AVX-512 is, which callers check first): EDX bit 24
        // AMX-TILE, bit 25 AMX-INT8.
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        edx & (3 << 24) == 3 << 24 && request_tile_state()
    })
}

/// Asks Linux for the tile data state (XFEATURE_XTILEDATA, 18) for the whole process.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only changes which register state this process
    // may use; the syscall clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration (palette 1): tmm0/tmm1 A (16 rows x 64 bytes each), tmm2/tmm3 B (16
/// groups of four k x 16 columns), tmm4..tmm7 the four 16 x 16 int32 sums.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Loads the tile configuration on this thread, for the [`tile_32x32`] calls that follow,
/// until [`release`].
///
/// # Safety
/// [`available`] returned true.
#[inline]
pub unsafe fn configure() {
    // SAFETY: the caller's promise; CONFIG is a valid palette-1 configuration, 64-byte aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly)) };
}

/// Frees this thread's tile state (so that context switches stop saving 8 KB of it).
///
/// # Safety
/// [`available`] returned true.
#[inline]
pub unsafe fn release() {
    // SAFETY: the caller's promise.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The int32 sums of 32 rows of A (`a`, rows `lda` bytes apart, `steps * 64` bytes each) times
/// one packed B panel (`steps * 16` groups of four k), into `out`.
///
/// # Safety
/// [`configure`] ran on this thread; `a` is readable for 32 rows of `steps * 64` bytes at
/// stride `lda`, `b` for `steps * 16 * NR * 4` bytes.
#[inline]
pub unsafe fn tile_32x32(steps: usize, a: *const u8, lda: usize, b: *const i8, out: &mut [[i32; NR]; ROWS]) {
    const B_STRIDE: usize = NR * 4;
    const B_STEP: usize = 16 * B_STRIDE;
    const OUT_STRIDE: usize = NR * 4;
    let c = out.as_mut_ptr() as *mut u8;
    // SAFETY: the caller's promises give every address read; `out` is 32 rows of 128 bytes.
    unsafe {
        asm!(
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            "2:",
            // Each load just before its first product: tiles are not renamed, so a load waits
            // for the products still reading that tile; interleaved, each product can start
            // while the next tile loads (8-10% over four loads then four products).
            "tileloadd tmm0, [{a} + {lda}*1]",
            "tileloadd tmm2, [{b} + {bs}*1]",
            "tdpbusd tmm4, tmm0, tmm2",
            "tileloadd tmm3, [{b} + {bs}*1 + 64]",
            "tdpbusd tmm5, tmm0, tmm3",
            "tileloadd tmm1, [{a2} + {lda}*1]",
            "tdpbusd tmm6, tmm1, tmm2",
            "tdpbusd tmm7, tmm1, tmm3",
            "add {a}, 64",
            "add {a2}, 64",
            "add {b}, {bstep}",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{c} + {cs}*1], tmm4",
            "tilestored [{c} + {cs}*1 + 64], tmm5",
            "tilestored [{c2} + {cs}*1], tmm6",
            "tilestored [{c2} + {cs}*1 + 64], tmm7",
            a = inout(reg) a => _,
            a2 = inout(reg) a.add(16 * lda) => _,
            lda = in(reg) lda,
            b = inout(reg) b => _,
            bs = in(reg) B_STRIDE,
            bstep = in(reg) B_STEP,
            steps = inout(reg) steps => _,
            c = in(reg) c,
            c2 = in(reg) c.add(16 * OUT_STRIDE),
            cs = in(reg) OUT_STRIDE,
            options(nostack),
        );
    }
}
