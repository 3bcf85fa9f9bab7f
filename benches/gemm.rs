//! GEMM throughput on conv-like shapes at 1 thread (and at every thread count the machine has),
//! for each micro-kernel this CPU runs: `cargo bench --bench gemm`. The weights side is packed
//! once, as the engine does at prepare time; the other side is packed per run.
//! Compare with the FMA peak from `cargo bench --bench peak`.

use crx580::backend::cpu::gemm::{micro_for, run, Epilogue, Lhs, MatRef, PackedA, Problem, Rhs};
use crx580::backend::cpu::isa::Isa;
use crx580::backend::cpu::pool::ThreadPool;
use std::time::Instant;

fn main() {
    // (M, N, K) as the issue states them: M output pixels, N output channels, K = Cin * taps.
    let shapes = [(3136, 64, 576), (784, 128, 1152), (196, 256, 2304), (128, 384, 384)];
    let max_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    for isa in Isa::available() {
        let micro = micro_for(isa);
        for threads in [1, max_threads] {
            let pool = ThreadPool::new(threads);
            for &(pixels, channels, k) in &shapes {
                // The engine's conv layout: C (channels x pixels) = W (channels x k) · cols (k x pixels).
                let (m, n) = (channels, pixels);
                let w: Vec<f32> = (0..m * k).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
                let x: Vec<f32> = (0..k * n).map(|i| ((i % 5) as f32 - 2.0) * 0.01).collect();
                let packed = PackedA::new(MatRef::row_major(&w, k), m, k, &micro);
                let b = MatRef::row_major(&x, n);
                let mut c = vec![0f32; m * n];
                let p = Problem { m, n, k, a: Lhs::Packed(&packed), b: Rhs::Source(&b), epilogue: Epilogue::default() };
                run(&pool, &micro, &p, &mut c, n);
                let flops = 2.0 * (m * n * k) as f64;
                let reps = ((2e9 / flops) as usize).max(3);
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t = Instant::now();
                    for _ in 0..reps {
                        run(&pool, &micro, &p, &mut c, n);
                    }
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                println!(
                    "{:<9} threads {threads}  M,N,K = {pixels:>4},{channels:>3},{k:>4}: {:7.1} GFLOP/s",
                    isa.name(),
                    flops / best / 1e9
                );
            }
        }
    }
}
