//! Every integer micro-kernel and block loop this CPU runs against a plain triple loop, on odd
//! sizes and zero points at the ends of their ranges (the single-node tables in `cpu::tests`
//! reach only the one instruction set `isa()` picks).

use super::micro::portable_8x32;
use super::*;
use crate::ir::DType;

/// Every kernel this CPU runs: AVX-512 VNNI with and without AMX where it has AMX.
fn available() -> Vec<Micro8> {
    let mut out: Vec<Micro8> = Isa::available().into_iter().map(micro_for).collect();
    out.dedup_by_key(|m| m.isa);
    let vnni_alone = out.iter().filter(|m| m.amx).map(|m| Micro8 { amx: false, ..*m }).collect::<Vec<_>>();
    out.extend(vnni_alone);
    out
}

/// Deterministic bytes covering 0..=255, with the extremes first.
fn bytes(seed: usize, n: usize) -> Vec<u8> {
    let mut s = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect();
    v.iter_mut().zip([0u8, 255, 255, 0, 128, 127]).for_each(|(d, x)| *d = x);
    v
}

#[test]
fn every_micro_kernel_agrees() {
    let kq = 37;
    let a = bytes(1, MR * kq * 4);
    let b: Vec<i8> = bytes(2, kq * NR * 4).into_iter().map(|v| v as i8).collect();
    let ptrs: [*const u8; MR] = std::array::from_fn(|r| a[r * kq * 4..].as_ptr());
    let mut want = [[0i32; NR]; MR];
    // SAFETY: the rows and the panel have the sizes the kernels read.
    unsafe { portable_8x32(kq, &ptrs, b.as_ptr(), &mut want) };
    // The first element by hand.
    let first: i32 = (0..kq * 4).map(|t| a[t] as i32 * b[(t / 4) * NR * 4 + t % 4] as i32).sum();
    assert_eq!(want[0][0], first);
    for micro in available() {
        let mut got = [[0i32; NR]; MR];
        // SAFETY: as above; only kernels this CPU runs are listed.
        unsafe { (micro.run)(kq, &ptrs, b.as_ptr(), &mut got) };
        assert_eq!(got, want, "{:?}", micro.isa);
    }
}

/// A 255 x 127 row of the worst sign everywhere: the sums `vpmaddubsw` would saturate.
#[test]
fn extreme_products_do_not_saturate() {
    // 40 rows: one AMX tile and the rest on the vector kernel.
    let (m, k, n) = (40, 64, 5);
    for (av, bv) in [(255u8, 127i8), (255, -128), (0, -128)] {
        let a = vec![av; m * k];
        let b = vec![bv; k * n];
        for micro in available() {
            let got = product(micro, &a, m, k, &b, n, 0, &[0; 5]);
            assert!(got.iter().all(|&v| v == k as i32 * av as i32 * bv as i32), "{:?} {av} x {bv}", micro.isa);
        }
    }
}

/// `(A - za)(B - zb)` through [`run`], int32 out.
#[allow(clippy::too_many_arguments)]
fn product(micro: Micro8, a: &[u8], m: usize, k: usize, b: &[i8], n: usize, za: i32, zb: &[i32]) -> Vec<i32> {
    let packed = PackedB8::new(b, k, n);
    let lda = k.div_ceil(4) * 4;
    let mut ap = vec![0u8; m * lda];
    ap.chunks_exact_mut(lda).zip(a.chunks_exact(k)).for_each(|(d, s)| d[..k].copy_from_slice(s));
    let mut rowsum = vec![0; m];
    row_sums(&ap, lda, &mut rowsum);
    let mut zbp = zb.to_vec();
    zbp.resize(packed.padded_n(), 0);
    let mut offset = vec![0; packed.padded_n()];
    let mut y = vec![0; m * n];
    let pool = ThreadPool::new(3);
    run(
        &pool,
        micro,
        &Lhs { data: &ap, lda, rowsum: &rowsum },
        m,
        packed.view(),
        za,
        &zbp,
        &mut offset,
        Out::Int(&mut y),
    );
    y
}

#[test]
fn products_match_a_plain_loop() {
    // Odd sizes on every side, one large enough for the pool; zero points at their ends.
    for (case, &(m, k, n)) in
        // (k a multiple of 64 and 32 rows or more: AMX tiles, with rows left to the vector kernel)
        [
            (1, 1, 1),
            (7, 5, 33),
            (9, 16, 32),
            (70, 130, 70),
            (13, 384, 65),
            (128, 96, 40),
            (100, 192, 45),
            (64, 64, 33),
            (261, 64, 70),
        ]
        .iter()
        .enumerate()
    {
        let a = bytes(case, m * k);
        let b: Vec<i8> = bytes(case + 100, k * n).into_iter().map(|v| v as i8).collect();
        for (za, zb_of) in [(0, 0), (255, -128), (128, 127), (3, -5)] {
            let zb: Vec<i32> = (0..n).map(|j| if j % 3 == 1 { -zb_of } else { zb_of }.clamp(-128, 127)).collect();
            let want: Vec<i32> = (0..m * n)
                .map(|e| {
                    let (i, j) = (e / n, e % n);
                    (0..k).map(|t| (a[i * k + t] as i32 - za) * (b[t * n + j] as i32 - zb[j])).sum()
                })
                .collect();
            for micro in available() {
                let got = product(micro, &a, m, k, &b, n, za, &zb);
                assert_eq!(got, want, "{:?} amx {} {m}x{k}x{n} za {za} zb {zb_of}", micro.isa, micro.amx);
            }
        }
    }
}

/// With zero points of the weights and without (symmetric weights skip their term), on AMX's
/// 32-row tiles (k a multiple of 64) and on the micro-kernels' 8-row blocks.
#[test]
fn the_float_epilogue_scales_then_adds_the_bias() {
    for ((m, k, n), zb_all) in [(11, 20, 37), (70, 128, 37)].into_iter().flat_map(|s| [(s, -7), (s, 0)]) {
        let a = bytes(7, m * k);
        let b: Vec<i8> = bytes(8, k * n).into_iter().map(|v| v as i8).collect();
        let packed = PackedB8::new(&b, k, n);
        let mut rowsum = vec![0; m];
        let lda = k;
        row_sums(&a, lda, &mut rowsum);
        let pn = packed.padded_n();
        let scale: Vec<f32> = (0..pn).map(|j| 0.01 + j as f32 * 1e-3).collect();
        let bias: Vec<f32> = (0..pn).map(|j| j as f32 * 0.37 - 3.0).collect();
        let (za, zb) = (200, vec![zb_all; pn]);
        let ints = product(micro_for(Isa::Portable), &a, m, k, &b, n, za, &zb[..n]);
        for micro in available() {
            let mut y = vec![0f32; m * n];
            let mut offset = vec![0; pn];
            let pool = ThreadPool::new(1);
            let out = Out::Float { y: &mut y, scale: &scale, bias: Some(&bias) };
            run(&pool, micro, &Lhs { data: &a, lda, rowsum: &rowsum }, m, packed.view(), za, &zb, &mut offset, out);
            for (e, (&got, &int)) in y.iter().zip(&ints).enumerate() {
                let j = e % n;
                let want = (int as f32 * scale[j] + bias[j]).to_bits();
                assert_eq!(got.to_bits(), want, "{:?} amx {} {m}x{k}x{n} zb {zb_all} at {e}", micro.isa, micro.amx);
            }
        }
    }
}

/// The requantizing epilogue of every instruction set against the scalar formula on the int32
/// sums, with ties (multiplier 0.5), saturation at both ends and partial panels.
#[test]
fn the_byte_epilogue_requantizes_each_row() {
    let (m, k, n) = (11, 20, 45);
    let a = bytes(9, m * k);
    let b: Vec<i8> = bytes(10, k * n).into_iter().map(|v| v as i8).collect();
    let packed = PackedB8::new(&b, k, n);
    let mut rowsum = vec![0; m];
    row_sums(&a, k, &mut rowsum);
    let pn = packed.padded_n();
    let (za, zb) = (131, vec![3; pn]);
    let ints = product(micro_for(Isa::Portable), &a, m, k, &b, n, za, &zb[..n]);
    let mult: Vec<f32> = (0..m).map(|i| if i % 3 == 0 { 0.5 } else { 0.003 + i as f32 * 1e-3 }).collect();
    let bias: Vec<i32> = (0..m as i32).map(|i| i * 1001 - 5000).collect();
    for q in [Requant::new(DType::U8, 7).unwrap(), Requant::new(DType::I8, -100).unwrap()] {
        for micro in available() {
            let mut y = vec![0u8; m * n];
            let mut offset = vec![0; pn];
            let out = Out::Bytes { y: &mut y, mult: &mult, bias: &bias, q };
            run(
                &ThreadPool::new(1),
                micro,
                &Lhs { data: &a, lda: k, rowsum: &rowsum },
                m,
                packed.view(),
                za,
                &zb,
                &mut offset,
                out,
            );
            for (e, (&got, &int)) in y.iter().zip(&ints).enumerate() {
                let i = e / n;
                let want = ((int + bias[i]) as f32 * mult[i]).round_ties_even() as i64 + q.zero_point as i64;
                let want = want.clamp(q.lo as i64, q.hi as i64) as u8;
                assert_eq!(got, want, "{:?} zero point {} at {e}", micro.isa, q.zero_point);
            }
        }
    }
}

#[test]
fn row_sums_match_a_plain_fold() {
    for (case, lda) in [1usize, 4, 31, 32, 33, 100, 384, 1000].into_iter().enumerate() {
        let a = bytes(case + 7, 5 * lda);
        let mut got = vec![0; 5];
        row_sums(&a, lda, &mut got);
        let want: Vec<i32> = a.chunks_exact(lda).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
        assert_eq!(got, want, "lda {lda}");
    }
}
