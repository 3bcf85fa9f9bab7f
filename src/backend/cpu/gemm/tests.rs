//! Every micro-kernel of this CPU against a plain triple loop, on shapes with edges in m, n and k.

use super::*;
use crate::backend::cpu::isa::Isa;

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn naive(m: usize, n: usize, k: usize, a: &MatRef, b: &MatRef) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[test]
fn products_match_the_triple_loop_on_every_isa() {
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (8, 32, 16),
        (13, 37, 300),
        (64, 100, 513),
        (130, 520, 20),
        (7, 1, 9),
        (5, 9, 0),
        (9, 48, 11),
        (10, 49, 5),
        (28, 70, 400),
        // Last panels a column or two past half (49 = 32 + 17, 50 = 32 + 18), over k slices.
        (15, 50, 300),
        (22, 81, 9),
    ];
    // On aarch64 (tests/aarch64.sh runs this under qemu) the NEON kernel must be among those tested.
    #[cfg(target_arch = "aarch64")]
    assert!(Isa::available().contains(&Isa::Neon), "NEON is not detected: {:?}", Isa::available());
    for isa in Isa::available() {
        let micro = micro_for(isa);
        for threads in [1, 3] {
            let pool = ThreadPool::new(threads);
            for &(m, n, k) in &shapes {
                let (av, bv) = (lcg(m as u64 * 31 + k as u64, m * k), lcg(n as u64 * 17 + k as u64, k * n));
                for (ta, tb) in [(false, false), (true, false), (false, true)] {
                    let a = if ta { MatRef::transposed(&av, m) } else { MatRef::row_major(&av, k) };
                    let b = if tb { MatRef::transposed(&bv, k) } else { MatRef::row_major(&bv, n) };
                    let want = naive(m, n, k, &a, &b);
                    let packed_a = PackedA::new(a, m, k, &micro);
                    let packed_b = PackedB::new(&b, k, n, &micro);
                    let lhs = [Lhs::Plain(a), Lhs::Packed(&packed_a)];
                    let rhs = [Rhs::Source(&b), Rhs::Packed(&packed_b)];
                    for l in &lhs {
                        for r in &rhs {
                            let mut c = vec![f32::NAN; m * n];
                            let p =
                                Problem { m, n, k, a: l.reborrow(), b: r.reborrow(), epilogue: Epilogue::default() };
                            run(&pool, &micro, &p, &mut c, n);
                            for (g, w) in c.iter().zip(&want) {
                                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?} {m}x{n}x{k}: {g} vs {w}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn epilogue_adds_bias_then_activates_and_batches_write_their_own_c() {
    let (m, n, k, count) = (10, 33, 17, 3);
    let pool = ThreadPool::new(2);
    for isa in Isa::available() {
        let micro = micro_for(isa);
        let av = lcg(1, count * m * k);
        let bv = lcg(2, k * n);
        let row_bias = lcg(3, m);
        let col_bias = lcg(4, n);
        for (bias, act) in [
            (Bias::PerRow(&row_bias), Activation::Relu),
            (Bias::PerCol(&col_bias), Activation::Sigmoid),
            (Bias::None, Activation::Clip(-0.1, 0.1)),
        ] {
            let b = MatRef::row_major(&bv, n);
            let mut c = vec![0f32; count * m * n];
            let problem = |i: usize| Problem {
                m,
                n,
                k,
                a: Lhs::Plain(MatRef::row_major(&av[i * m * k..(i + 1) * m * k], k)),
                b: Rhs::Source(&b),
                epilogue: Epilogue { bias, act, ..Epilogue::default() },
            };
            run_batch(&pool, &micro, count, &problem, &mut c, m * n, n);
            for i in 0..count {
                let a = MatRef::row_major(&av[i * m * k..(i + 1) * m * k], k);
                let plain = naive(m, n, k, &a, &b);
                for r in 0..m {
                    for j in 0..n {
                        let extra = match bias {
                            Bias::PerRow(v) => v[r],
                            Bias::PerCol(v) => v[j],
                            Bias::None => 0.0,
                        };
                        let want = act.eval(plain[r * n + j] + extra);
                        let got = c[i * m * n + r * n + j];
                        assert!((got - want).abs() < 1e-5, "{isa:?} {act:?} ({i},{r},{j}): {got} vs {want}");
                    }
                }
            }
        }
    }
}

/// Parallel tiles on odd shapes, split by rows (few columns), by columns (few rows) and both,
/// batched too, against the triple loop and against one thread.
#[test]
fn parallel_splits_match_the_triple_loop() {
    let shapes = [(258, 9, 256, 1), (67, 3001, 33, 1), (2050, 49, 40, 1), (129, 387, 70, 1), (37, 61, 130, 5)];
    for isa in Isa::available() {
        let micro = micro_for(isa);
        for &(m, n, k, count) in &shapes {
            let av = lcg(m as u64, count * m * k);
            let bv = lcg(n as u64, k * n);
            let b = MatRef::row_major(&bv, n);
            let packed_b = PackedB::new(&b, k, n, &micro);
            for packed in [false, true] {
                let problem = |i: usize| Problem {
                    m,
                    n,
                    k,
                    a: Lhs::Plain(MatRef::row_major(&av[i * m * k..(i + 1) * m * k], k)),
                    b: if packed { Rhs::Packed(&packed_b) } else { Rhs::Source(&b) },
                    epilogue: Epilogue::default(),
                };
                let mut one = vec![f32::NAN; count * m * n];
                run_batch(&ThreadPool::new(1), &micro, count, &problem, &mut one, m * n, n);
                for threads in [2, 3] {
                    let mut c = vec![f32::NAN; count * m * n];
                    run_batch(&ThreadPool::new(threads), &micro, count, &problem, &mut c, m * n, n);
                    assert_eq!(c, one, "{isa:?} {m}x{n}x{k} x{count} on {threads} threads against one");
                }
                for i in 0..count {
                    let want = naive(m, n, k, &MatRef::row_major(&av[i * m * k..(i + 1) * m * k], k), &b);
                    for (g, w) in one[i * m * n..(i + 1) * m * n].iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?} {m}x{n}x{k}: {g} vs {w}");
                    }
                }
            }
        }
    }
}

/// Products split by depth (small, at least twice as deep as tall) against the triple loop, with
/// every kind of epilogue, both kinds of each operand, and shares of k that start inside k
/// slices (1000 / 3): the partial products are added once each, before the bias, the skip
/// connection and the activation.
#[test]
fn depth_splits_match_the_triple_loop() {
    let shapes = [(24, 100, 300), (8, 33, 1000), (64, 196, 384)];
    // Not on many threads when the calling thread's additions would outweigh a share.
    assert!(!splits_by_depth(64, 196, 384, 16) && splits_by_depth(16, 196, 4000, 16));
    for isa in Isa::available() {
        let micro = micro_for(isa);
        for &(m, n, k) in &shapes {
            let (av, bv) = (lcg(m as u64 + 5, m * k), lcg(n as u64 + 7, k * n));
            let (bias, skip) = (lcg(11, m), lcg(13, m * n));
            let (a, b) = (MatRef::row_major(&av, k), MatRef::row_major(&bv, n));
            let plain = naive(m, n, k, &a, &b);
            let (packed_a, packed_b) = (PackedA::new(a, m, k, &micro), PackedB::new(&b, k, n, &micro));
            for threads in [2, 3] {
                assert!(splits_by_depth(m, n, k, threads), "{m}x{n}x{k} is not split by depth on {threads} threads");
                let pool = ThreadPool::new(threads);
                for (l, r) in [(Lhs::Packed(&packed_a), Rhs::Source(&b)), (Lhs::Plain(a), Rhs::Packed(&packed_b))] {
                    for kind in 0..3 {
                        let mut c = if kind == 2 { skip.clone() } else { vec![f32::NAN; m * n] };
                        let skip_kind = [Skip::None, Skip::Add(&skip), Skip::InOutput][kind];
                        let epilogue = Epilogue { bias: Bias::PerRow(&bias), skip: skip_kind, act: Activation::Relu };
                        let p = Problem { m, n, k, a: l.reborrow(), b: r.reborrow(), epilogue };
                        run(&pool, &micro, &p, &mut c, n);
                        for (i, (g, w)) in c.iter().zip(&plain).enumerate() {
                            let added = if kind == 0 { 0.0 } else { skip[i] };
                            let want = (w + bias[i / n] + added).max(0.0);
                            assert!(
                                (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{isa:?} {m}x{n}x{k} on {threads} threads, skip kind {kind}, element {i}: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The tiles `split` picks give every thread the same work, within a few percent, on the
/// GEMMs of ResNet-50's convolutions (output channels x pixels x input channels times taps;
/// the image side packed per task) and of the VAD's two largest: each thread's arithmetic
/// (padding included) when tasks are claimed in order by whichever thread is free, against an
/// even share of it. (Halving tiles until every thread had two tasks gave up to 1.28 on two
/// threads: 256, 256, 256 and 16 columns.)
#[test]
fn split_gives_each_thread_an_equal_share() {
    let micro = Micro { mr: 8, nr: 32, ..micro_for(Isa::available()[0]) };
    let shapes = [
        (64, 12544, 147),
        (64, 3136, 64),
        (256, 3136, 64),
        (128, 3136, 256),
        (512, 784, 256),
        (128, 784, 512),
        (256, 784, 512),
        (1024, 196, 512),
        (256, 196, 1024),
        (512, 196, 1024),
        (2048, 49, 1024),
        (512, 49, 2048),
        (512, 49, 4608),
        (258, 9, 256),
        (128, 9, 387),
    ];
    let padded = |len: usize, unit: usize| len.div_ceil(unit) * unit;
    for (threads, bound) in [(2, 1.05), (4, 1.15)] {
        for &(m, n, k) in &shapes {
            let (mt, nt) = split(&micro, 1, m, n, k, threads, Packs { a: false, b: true });
            assert!(mt % micro.mr == 0 && nt % micro.nr == 0 && mt <= MC.div_ceil(8) * 8 && nt <= NC);
            let mut load = vec![0usize; threads];
            for m0 in (0..m).step_by(mt) {
                for n0 in (0..n).step_by(nt) {
                    let work = padded(mt.min(m - m0), micro.mr) * padded(nt.min(n - n0), micro.nr) * k;
                    *load.iter_mut().min().unwrap() += work;
                }
            }
            let even = (padded(m, micro.mr) * padded(n, micro.nr) * k) as f64 / threads as f64;
            let worst = *load.iter().max().unwrap() as f64 / even;
            assert!(worst <= bound, "{m}x{n}x{k} on {threads} threads: tiles {mt}x{nt}, {worst:.3} of an even share");
        }
    }
}

#[test]
fn a_column_range_writes_those_columns_alone() {
    // Ranges that start on a panel boundary and end inside one, past n, or at n; NaN around the
    // range's columns in C catches a write outside it.
    for isa in Isa::available() {
        let micro = micro_for(isa);
        let (m, n, k) = (11, 3 * micro.nr + 5, 23);
        let (av, bv) = (lcg(5, m * k), lcg(6, k * n));
        let (a, b) = (MatRef::row_major(&av, k), MatRef::row_major(&bv, n));
        let want = naive(m, n, k, &a, &b);
        let packed_b = PackedB::new(&b, k, n, &micro);
        let col_bias = lcg(7, n);
        let want_biased: Vec<f32> = want.iter().enumerate().map(|(i, w)| w + col_bias[i % n]).collect();
        for cols in [0..micro.nr, micro.nr..2 * micro.nr + 3, 2 * micro.nr..n, micro.nr..n + 40] {
            let p = Problem {
                m,
                n,
                k,
                a: Lhs::Plain(a),
                b: Rhs::Packed(&packed_b),
                epilogue: Epilogue { bias: Bias::PerCol(&col_bias), ..Epilogue::default() },
            };
            let width = cols.end.min(n) - cols.start;
            let ldc = width + 2;
            let mut c = vec![f32::NAN; m * ldc];
            run_serial_columns(&micro, &p, cols.clone(), &mut c, ldc);
            for i in 0..m {
                for j in 0..ldc {
                    let got = c[i * ldc + j];
                    if j >= width {
                        assert!(got.is_nan(), "{isa:?} {cols:?}: wrote column {j} past the range");
                        continue;
                    }
                    let w = want_biased[i * n + cols.start + j];
                    assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?} {cols:?} ({i}, {j}): {got} vs {w}");
                }
            }
        }
    }
}

#[test]
fn prefetch_shares_cover_every_line_of_a_block() {
    // A block of 37 rows of 40 floats, 100 floats apart, starting 3 floats into a line: 3 lines
    // from the first row's start, and one more for rows that start further into theirs. Shares
    // of at most 16 rows: 3 runs of rows per line, 12 shares, then none.
    let data = vec![0f32; 4000];
    let first = data.as_ptr().wrapping_add(16 - (data.as_ptr() as usize / 4) % 16 + 3);
    let rows = Rows { first, stride: 100, rows: 37, width: 40 };
    let line_of = |p: *const f32| p as usize / 64;
    let mut want: Vec<usize> =
        (0..37).flat_map(|r| (0..40).map(move |j| line_of(first.wrapping_add(r * 100 + j)))).collect();
    want.dedup();
    let mut got = vec![];
    for i in 0..20 {
        let share = rows.share(i, 16);
        assert!(share.count <= 16, "share {i} asks for {} lines", share.count);
        assert_eq!(share.count == 0, i >= 12, "share {i}");
        got.extend((0..share.count).map(|s| line_of(share.at.wrapping_add(s * share.stride))));
    }
    // Every line is asked for, and at most one more per row.
    assert!(want.iter().all(|l| got.contains(l)), "a line of the block is not asked for");
    assert!(got.len() <= want.len() + 37, "{} lines asked for, for {}", got.len(), want.len());
}
