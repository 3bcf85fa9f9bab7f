//! The machine's peaks, the yardsticks of the engine's kernels (issue 13): one core's fp32 FMA
//! throughput (GEMM is held to 80% of it) and a STREAM-style triad bandwidth on 1 and 2 threads
//! (bandwidth-bound kernels are held to 70% of it), then the engine's bandwidth-bound kernels
//! (depthwise conv, max pooling, Add) in GB/s against the triad. Every array is kept as the
//! engine keeps large activations, in huge pages from a 2 MiB boundary (`huge.rs`).
//!
//! `cargo bench --bench peak` measures and prints GFLOP/s and GB/s. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does a short smoke of the same code on tiny sizes.

mod fma;
mod huge;
mod kernels;
mod triad;

use std::time::Instant;

/// The best of `repeats` timings of `f` (it returns the amount of work it did), in work per second.
fn best_rate(repeats: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            let work = f();
            work / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    // `--bench WORD`: only the kernel cases whose name holds WORD (the peaks are always measured).
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
    // Short repeats (~10 ms each), many of them: on a shared machine the best one is a window
    // in which nothing else ran on the core.
    let (fma_iters, triad_len, repeats) = if measuring { (2_000_000, 1 << 23, 60) } else { (10_000, 1 << 12, 2) };

    let mut peak = (0.0, fma::Kernel::Portable);
    for kernel in fma::Kernel::available() {
        let rate = best_rate(repeats, || kernel.flops_on_threads(1, fma_iters)) / 1e9;
        println!("fp32 FMA, 1 core, {}: {rate:.1} GFLOP/s", kernel.name());
        if rate > peak.0 {
            peak = (rate, kernel);
        }
    }
    let (one, kernel) = peak;
    println!("fp32 FMA peak, 1 core: {one:.1} GFLOP/s ({})", kernel.name());
    if threads > 1 {
        let all = best_rate(repeats, || kernel.flops_on_threads(threads, fma_iters)) / 1e9;
        println!("fp32 FMA peak, {threads} threads: {all:.1} GFLOP/s ({})", kernel.name());
    }
    let mut arrays = triad::Arrays::new(triad_len);
    let kib = (triad_len * 8) >> 10;
    let size = if kib >= 1024 { format!("{} MiB", kib >> 10) } else { format!("{kib} KiB") };
    let mut triad_rates = vec![];
    for t in 1..=threads {
        let rate = best_rate(repeats, || arrays.triad(t)) / 1e9;
        println!("triad a = b + s*c (f64, 3 x {size}), {t} thread(s): {rate:.1} GB/s");
        triad_rates.push(rate);
    }
    arrays.verify(repeats * threads);
    println!(
        "targets (issue 13): GEMM at 1 thread >= {:.1} GFLOP/s (80%), bandwidth-bound kernels >= {:.1} GB/s at 1 thread (70%)",
        0.8 * one,
        0.7 * triad_rates[0]
    );
    // Tensors of 128 planes of 256x256 (32 MiB in, as much out): far past the caches a core
    // can count on, as the triad's arrays are; in the same kind of memory (`huge`).
    let (channels, side, kernel_repeats) = if measuring { (128, 256, 15) } else { (3, 9, 2) };
    for mut case in kernels::cases(channels, side).into_iter().filter(|c| c.name.contains(&only)) {
        let rate = best_rate(kernel_repeats, &mut case.run) / 1e9;
        let share = 100.0 * rate / triad_rates[0];
        println!("{}: {rate:.1} GB/s, {share:.0}% of the 1-thread triad", case.name);
    }
    if measuring {
        println!("MobileNetV2's depthwise layers (in cache), 1 thread:");
        for (channels, side, stride) in kernels::MOBILENET_V2 {
            let mut case = kernels::depthwise_case(channels, side, stride);
            if !case.name.contains(&only) {
                continue;
            }
            let rate = best_rate(60, &mut case.run);
            let bytes = (case.run)();
            println!("  {}: {:.3} ms, {:.1} GB/s", case.name, 1e3 * bytes / rate, rate / 1e9);
        }
    }
    if !measuring {
        assert!(one > 0.0 && triad_rates.iter().all(|&r| r > 0.0));
        println!("(a smoke on tiny sizes: `cargo bench --bench peak` measures)");
    }
}
