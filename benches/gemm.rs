//! GEMM throughput on conv-like shapes at 1 thread (and at every thread count the machine has),
//! for each micro-kernel this CPU runs: `cargo bench --bench gemm -- [ISA] [M,N,K ...]` (e.g.
//! `avx512`: only that kernel; `196,256,2304`: only that shape). Each shape runs in two layouts:
//! `conv`, as the engine's convolutions lay it out (channels x pixels, the weights packed as A,
//! the pixels' columns packed per run), and `matmul`, M x K by K x N as a MatMul runs it (A read
//! in place, the weights packed as B). The weights are packed once, as at prepare time. The first line
//! per kernel is the micro-kernel alone on cache-resident panels: the ceiling for the rest.
//! Compare with the FMA peak from `cargo bench --bench peak`. Every figure is the best of
//! several windows, so one quiet window on a shared machine suffices.

use crx580::backend::cpu::gemm::{micro_for, run, Epilogue, Lhs, MatRef, Micro, PackedA, PackedB, Problem, Rhs};
use crx580::backend::cpu::isa::Isa;
use crx580::backend::cpu::pool::ThreadPool;

#[path = "support/timing.rs"]
mod timing;
use timing::best_time;

/// The micro-kernel alone: one MR x NR block over k = 256 from panels in L1, C in L1.
fn micro_only(micro: &Micro) -> f64 {
    let kc = 256;
    let a = vec![0.01f32; kc * micro.mr];
    let b = vec![0.02f32; kc * micro.nr];
    let mut c = vec![0f32; micro.mr * micro.nr];
    let reps = 1_000;
    let secs = best_time(100, reps, || {
        // SAFETY: the panels hold kc * mr and kc * nr floats, C mr x nr; micro_for picks a kernel
        // this CPU runs.
        unsafe { (micro.run)(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), micro.nr, true) };
    });
    std::hint::black_box(&c);
    2.0 * (kc * micro.mr * micro.nr) as f64 / secs / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    // An argument with commas picks a shape (`3136,64,576`); any other picks a kernel.
    let (shape_args, filter): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| a.contains(','));
    // (M, N, K) as the issue states them: M output pixels, N output channels, K = Cin * taps.
    let shapes: Vec<(usize, usize, usize)> = if shape_args.is_empty() {
        vec![(3136, 64, 576), (784, 128, 1152), (196, 256, 2304), (128, 384, 384)]
    } else {
        shape_args
            .iter()
            .map(|a| {
                let d: Vec<usize> = a.split(',').map(|v| v.parse().expect("a shape is M,N,K")).collect();
                assert!(d.len() == 3, "a shape is M,N,K");
                (d[0], d[1], d[2])
            })
            .collect()
    };
    let max_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for isa in Isa::available() {
        if !filter.is_empty() && !filter.iter().any(|f| *f == isa.name()) {
            continue;
        }
        let micro = micro_for(isa);
        println!("{:<9} micro-kernel {}x{} alone: {:7.1} GFLOP/s", isa.name(), micro.mr, micro.nr, micro_only(&micro));
        for threads in [1, max_threads] {
            let pool = ThreadPool::new(threads);
            for &(pixels, channels, k) in &shapes {
                let w: Vec<f32> = (0..channels * k).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
                let x: Vec<f32> = (0..k * pixels).map(|i| ((i % 5) as f32 - 2.0) * 0.01).collect();
                let flops = 2.0 * (pixels * channels * k) as f64;
                let reps = ((0.05e9 / flops) as usize).max(1);
                // The engine's conv layout: C (channels x pixels) = W (channels x k) · cols (k x
                // pixels), the weights packed as A.
                let packed_w = PackedA::new(MatRef::row_major(&w, k), channels, k, &micro);
                let cols = MatRef::row_major(&x, pixels);
                let conv = Problem {
                    m: channels,
                    n: pixels,
                    k,
                    a: Lhs::Packed(&packed_w),
                    b: Rhs::Source(&cols),
                    epilogue: Epilogue::default(),
                };
                // The shape as the issue states it, M x K by K x N, laid out as a MatMul runs:
                // C (pixels x channels) = cols (pixels x k, read in place) · W (k x channels,
                // packed as B). `x` and `w` serve as those matrices (their values do not matter).
                let packed_wt = PackedB::new(&MatRef::row_major(&w, channels), k, channels, &micro);
                let matmul = Problem {
                    m: pixels,
                    n: channels,
                    k,
                    a: Lhs::Plain(MatRef::row_major(&x, k)),
                    b: Rhs::Packed(&packed_wt),
                    epilogue: Epilogue::default(),
                };
                let mut c = vec![0f32; pixels * channels];
                for (layout, p, ldc) in [("conv", &conv, pixels), ("matmul", &matmul, channels)] {
                    run(&pool, &micro, p, &mut c, ldc);
                    let best = best_time(80, reps, || run(&pool, &micro, p, &mut c, ldc));
                    println!(
                        "{:<9} threads {threads}  M,N,K = {pixels:>4},{channels:>3},{k:>4} {layout:<6}: {:7.1} GFLOP/s",
                        isa.name(),
                        flops / best / 1e9
                    );
                }
            }
        }
    }
}
