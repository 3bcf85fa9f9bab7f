//! Integer GEMM throughput (u8 x s8 -> i32 -> f32, the dynamically quantised transformer's
//! linear layers) at 1 thread and at every thread count the machine has, for each micro-kernel
//! this CPU runs: `cargo bench --bench gemm_i8 [ISA]`. Shapes (M, N, K) are MiniLM-L6's at
//! sequence 128: the Q/K/V and output projections (128, 384, 384), the feed-forward layers
//! (128, 1536, 384) and (128, 384, 1536). B is packed once, as at prepare time; A is read in
//! place. Every figure is the best of several windows (one quiet window on a shared machine
//! suffices); GOP/s counts a multiply and an add as two operations.

use crx580::backend::cpu::gemm_i8::{micro_for, row_sums, run, Lhs, Out, PackedB8, MR, NR};
use crx580::backend::cpu::isa::Isa;
use crx580::backend::cpu::pool::ThreadPool;

#[path = "support/timing.rs"]
mod timing;
use timing::best_time;

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let shapes = [(128, 384, 384), (128, 1536, 384), (128, 384, 1536)];
    let max_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut seen = vec![];
    for isa in Isa::available() {
        let micro = micro_for(isa);
        if seen.contains(&micro.isa) || (!filter.is_empty() && !filter.iter().any(|f| f == isa.name())) {
            continue;
        }
        seen.push(micro.isa);
        // The micro-kernel alone on an L1-resident panel, k = 384.
        let kq = 96;
        let a = vec![3u8; MR * kq * 4];
        let b = vec![5i8; kq * NR * 4];
        let ptrs: [*const u8; MR] = std::array::from_fn(|r| a[r * kq * 4..].as_ptr());
        let mut acc = [[0i32; NR]; MR];
        // SAFETY: the rows and the panel have the sizes the kernel reads; micro_for picks a kernel
        // this CPU runs.
        let secs = best_time(100, 1000, || unsafe { (micro.run)(kq, &ptrs, b.as_ptr(), &mut acc) });
        std::hint::black_box(&acc);
        let ops = 2.0 * (MR * NR * kq * 4) as f64;
        println!("{:<9} micro-kernel {MR}x{NR} alone: {:7.1} GOP/s", micro.isa.name(), ops / secs / 1e9);
        for threads in [1, max_threads] {
            let pool = ThreadPool::new(threads);
            for &(m, n, k) in &shapes {
                let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 256) as u8).collect();
                let w: Vec<i8> = (0..k * n).map(|i| (i * 13 % 256) as u8 as i8).collect();
                let packed = PackedB8::new(&w, k, n);
                let mut rowsum = vec![0; m];
                row_sums(&a, k, &mut rowsum);
                let (zb, scale) = (vec![0; packed.padded_n()], vec![0.01f32; packed.padded_n()]);
                let mut offset = vec![0; packed.padded_n()];
                let mut y = vec![0f32; m * n];
                let lhs = Lhs { data: &a, lda: k, rowsum: &rowsum };
                let ops = 2.0 * (m * n * k) as f64;
                let reps = ((0.02e9 / ops) as usize).max(1);
                let best = best_time(60, reps, || {
                    let out = Out::Float { y: &mut y, scale: &scale, bias: None };
                    run(&pool, micro, &lhs, m, packed.view(), 131, &zb, &mut offset, out)
                });
                println!(
                    "{:<9} threads {threads}  M,N,K = {m:>4},{n:>4},{k:>4}: {:7.1} GOP/s",
                    micro.isa.name(),
                    ops / best / 1e9
                );
            }
        }
    }
}
