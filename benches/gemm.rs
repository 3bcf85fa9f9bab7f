//! GEMM throughput on conv-like shapes at 1 thread (and at every thread count the machine has),
//! for each micro-kernel this CPU runs: `cargo bench --bench gemm -- [ISA] [M,N,K ...]` (e.g.
//! `avx512`: only that kernel; `196,256,2304`: only that shape). Each shape runs in two layouts:
//! `conv`, as the engine's convolutions lay it out (channels x pixels, the weights packed as A,
//! the pixels' columns packed per run), and `matmul`, M x K by K x N as a MatMul runs it (A, the
//! activations, packed per run, the weights packed as B). The weights are packed once, as at
//! prepare time; the big operand lives in an activation buffer of the engine's buffer pool. The
//! first lines per instruction set are its micro-kernels alone on cache-resident panels (8x32
//! for constant A operands, 14x32 for A operands packed per run): the ceiling for the rest. Each
//! product's line gives its share of the FMA peak (`cargo bench --bench peak`'s loop) measured in
//! the same windows, after each window's products: a shared machine's speed drifts by 10% within
//! minutes. Every figure is the best of several windows, so one quiet window suffices.

use crx580::backend::buffers::BufferPool;
use crx580::backend::cpu::gemm::{micro_for, run, Ahead, Epilogue, Lhs, MatRef, Micro, PackedA, PackedB, Problem, Rhs};
use crx580::backend::cpu::isa::Isa;
use crx580::backend::cpu::pool::ThreadPool;

#[path = "support/timing.rs"]
mod timing;
use timing::best_time;
// The peak bench's FMA loop: the yardstick, measured in the same run.
#[allow(dead_code)]
#[path = "peak/fma.rs"]
mod fma;

/// This core's FMA rate in GFLOP/s with `kernel`, over `iters` rounds on the calling thread.
fn fma_rate(kernel: fma::Kernel, iters: u64) -> f64 {
    let t = std::time::Instant::now();
    let flops = kernel.flops(iters);
    flops / t.elapsed().as_secs_f64() / 1e9
}

/// The FMA kernel that reaches the peak here, and that peak: the best of `windows` windows each.
fn fma_peak(windows: usize) -> (fma::Kernel, f64) {
    let best = |k: fma::Kernel| (0..windows).map(|_| fma_rate(k, 500_000)).fold(0.0, f64::max);
    fma::Kernel::available().into_iter().map(|k| (k, best(k))).fold((fma::Kernel::Portable, 0.0), |a, b| {
        if b.1 > a.1 {
            b
        } else {
            a
        }
    })
}

/// The micro-kernel alone: one MR x NR block over k = 256 from panels in L1, C in L1.
fn micro_only(micro: &Micro, windows: usize) -> f64 {
    let kc = 256;
    // Panels 64-byte aligned, as the engine's are: a plain Vec starts 16 bytes into a line, so
    // that every B row loaded straddled two lines (8x32: 180-186 -> 191-197 GFLOP/s aligned).
    let (a_data, b_data) = (vec![0.01f32; kc * micro.mr + 16], vec![0.02f32; kc * micro.nr + 16]);
    let a = &a_data[a_data.as_ptr().align_offset(64)..];
    let b = &b_data[b_data.as_ptr().align_offset(64)..];
    let mut c = vec![0f32; micro.mr * micro.nr];
    let reps = 1_000;
    let secs = best_time(windows, reps, || {
        // SAFETY: the panels hold kc * mr and kc * nr floats, C mr x nr; micro_for picks a kernel
        // this CPU runs.
        unsafe { (micro.run)(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), micro.nr, true, Ahead::NONE) };
    });
    std::hint::black_box(&c);
    2.0 * (kc * micro.mr * micro.nr) as f64 / secs / 1e9
}

fn main() {
    // `cargo bench` passes --bench; without it (`cargo test --all-targets`) this is a smoke run:
    // every product once or twice, checked to run, not measured.
    let windows = if std::env::args().any(|a| a == "--bench") { 80 } else { 2 };
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
    let (fma_kernel, peak) = fma_peak((windows / 4).max(1));
    println!("FMA peak of one core before the products: {peak:.1} GFLOP/s ({})", fma_kernel.name());
    for isa in Isa::available() {
        if !filter.is_empty() && !filter.iter().any(|f| *f == isa.name()) {
            continue;
        }
        let micro = micro_for(isa);
        let tall = micro.for_plain_a(14);
        for m in if tall.mr == micro.mr { vec![micro] } else { vec![micro, tall] } {
            println!("{:<9} micro-kernel {}x{} alone: {:7.1} GFLOP/s", isa.name(), m.mr, m.nr, micro_only(&m, windows));
        }
        for threads in [1, max_threads] {
            let pool = ThreadPool::new(threads);
            for &(pixels, channels, k) in &shapes {
                let w: Vec<f32> = (0..channels * k).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
                // The image (or the MatMul's activations) in an output buffer of the engine's
                // buffer pool, as a model's activations are: from 1 MiB up those start on a
                // 2 MiB boundary and ask for huge pages. A plain Vec starts 16 bytes into a
                // page, so that each 32-column row of a B panel spans three cache lines, not two.
                let pool_buffers = BufferPool::new(usize::MAX);
                let mut x = pool_buffers.output(k * pixels).expect("a buffer for the image");
                x.iter_mut().enumerate().for_each(|(i, v)| *v = ((i % 5) as f32 - 2.0) * 0.01);
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
                // C (pixels x channels) = cols (pixels x k, packed per run) · W (k x channels,
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
                    // The peak is measured in the same windows (a short FMA loop after each
                    // window's products), so that the share is of the machine's speed then.
                    let (mut best, mut peak) = (f64::MAX, 0f64);
                    for _ in 0..windows {
                        best = best.min(best_time(1, reps, || run(&pool, &micro, p, &mut c, ldc)));
                        peak = peak.max(fma_rate(fma_kernel, 200_000));
                    }
                    let rate = flops / best / 1e9;
                    println!(
                        "{:<9} threads {threads}  M,N,K = {pixels:>4},{channels:>3},{k:>4} {layout:<6}: {rate:7.1} GFLOP/s, {:3.0}% of {threads} x the peak alongside ({peak:.1})",
                        isa.name(),
                        100.0 * rate / (threads as f64 * peak)
                    );
                }
            }
        }
    }
    println!("FMA peak of one core after the products: {:.1} GFLOP/s", fma_peak((windows / 4).max(1)).1);
}
