//! The product of one row with a constant matrix packed as the GEMM packs it (a linear layer at
//! batch 1: a classifier's last Gemm, a decoder's MatMul). The GEMM would pad the row to a
//! micro-kernel's rows and reload it per block of k; here each task streams its panels (`nr`
//! columns, stored k slice by k slice) once, with the row's values broadcast, so the product
//! runs at the speed the weights arrive from memory. Tasks split the columns by panels.

use super::activation::{Activation, ActivationExt};
use super::gemm::PackedB;
use super::isa::isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::pool::{SharedMut, ThreadPool};

/// Widest panel the accumulators hold.
const NR_MAX: usize = 64;

/// `y = act(a · B + bias)` for the row `a` (k values) and the packed `b` (k x n); `bias` holds
/// one value per column or is empty; `y` holds n values.
pub fn run(pool: &ThreadPool, a: &[f32], b: &PackedB, bias: &[f32], act: Activation, y: &mut [f32]) {
    let (k, n) = b.dims();
    let nr = b.nr();
    assert!(a.len() == k && y.len() == n && (bias.is_empty() || bias.len() == n) && nr <= NR_MAX);
    let out = SharedMut(y.as_mut_ptr());
    pool.parallel_for_work(n.div_ceil(nr), k * nr, &|p| {
        let cols = p * nr..((p + 1) * nr).min(n);
        let mut acc = [0f32; NR_MAX];
        for (k0, rows) in b.panel_slices(p) {
            dot_panel(&a[k0..k0 + rows.len() / nr], rows, &mut acc[..nr]);
        }
        let o = out;
        // SAFETY: each task writes its own panel's columns of y, which outlives the call.
        let dst = unsafe { std::slice::from_raw_parts_mut(o.0.add(cols.start), cols.len()) };
        dst.copy_from_slice(&acc[..cols.len()]);
        if !bias.is_empty() {
            dst.iter_mut().zip(&bias[cols]).for_each(|(v, b)| *v += b);
        }
        act.apply(dst);
    });
}

/// `acc[j] += sum over i of a[i] * panel[i * nr + j]`, `nr = acc.len()`: one k slice. The sum
/// runs in the GEMM micro-kernel's order (one chain per column from zero, fused where its kernel
/// fuses), so a batch of one gives bit for bit what the same row gives inside a larger batch.
fn dot_panel(a: &[f32], panel: &[f32], acc: &mut [f32]) {
    match (isa(), acc.len()) {
        // SAFETY: isa() names only instruction sets this CPU runs.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 32) => unsafe { dot_panel32_avx512(a, panel, acc) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 16) => unsafe { dot_panel16_avx2(a, panel, acc) },
        // The portable micro-kernel multiplies and adds; NEON's fuses.
        #[cfg(not(target_arch = "aarch64"))]
        (_, 16) => dot_panel_chain::<16, false>(a, panel, acc),
        #[cfg(target_arch = "aarch64")]
        (_, 8) => dot_panel_chain::<8, true>(a, panel, acc),
        _ => {
            let nr = acc.len();
            let mut sums = [0f32; 64];
            for (&ai, row) in a.iter().zip(panel.chunks_exact(nr)) {
                sums.iter_mut().zip(row).for_each(|(c, &b)| *c += ai * b);
            }
            acc.iter_mut().zip(sums).for_each(|(c, s)| *c += s);
        }
    }
}

/// [`dot_panel`] for panels of `NR` columns, with fused multiply-adds or not.
#[inline(always)]
fn dot_panel_chain<const NR: usize, const FUSED: bool>(a: &[f32], panel: &[f32], acc: &mut [f32]) {
    let mut sums = [0f32; NR];
    for (&v, row) in a.iter().zip(panel.chunks_exact(NR)) {
        if FUSED {
            sums.iter_mut().zip(row).for_each(|(c, &b)| *c = v.mul_add(b, *c));
        } else {
            sums.iter_mut().zip(row).for_each(|(c, &b)| *c += v * b);
        }
    }
    acc.iter_mut().zip(sums).for_each(|(c, s)| *c += s);
}

/// # Safety
/// Needs AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_panel16_avx2(a: &[f32], panel: &[f32], acc: &mut [f32]) {
    dot_panel_chain::<16, true>(a, panel, acc)
}

/// [`dot_panel`] for the AVX-512 GEMM's 32-column panels: two vectors of columns.
///
/// # Safety
/// Needs AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_panel32_avx512(a: &[f32], panel: &[f32], acc: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(panel.len() == a.len() * 32 && acc.len() == 32);
    let (mut c0, mut c1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (&v, row) in a.iter().zip(panel.chunks_exact(32)) {
        let (v, r) = (_mm512_set1_ps(v), row.as_ptr());
        // SAFETY: each chunk of the panel holds 32 floats.
        unsafe {
            c0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(r), c0);
            c1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(r.add(16)), c1);
        }
    }
    // SAFETY: acc holds 32 floats.
    unsafe {
        let sum0 = _mm512_add_ps(c0, _mm512_loadu_ps(acc.as_ptr()));
        let sum1 = _mm512_add_ps(c1, _mm512_loadu_ps(acc.as_ptr().add(16)));
        _mm512_storeu_ps(acc.as_mut_ptr(), sum0);
        _mm512_storeu_ps(acc.as_mut_ptr().add(16), sum1);
    }
}
