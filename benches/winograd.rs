//! Winograd F(4x4, 3x3) against the GEMM a 3x3 stride-1 convolution otherwise runs, per shape, at
//! 1 thread: `cargo bench --bench winograd`. The GEMM side is the conv's product with the weights
//! packed once and the column matrix (9C x HW, built beforehand) packed per run, as the
//! implicit-im2col packing does; so it leaves out the im2col gathering, which favours the GEMM
//! slightly. The shapes are ResNet-50's and YOLOv8n's (640x640) 3x3 stride-1 layers. Every figure
//! is the best of several windows, so one quiet window on a shared machine suffices.
//!
//! `cargo bench --bench winograd -- threads`: instead, per shape, the Winograd convolution at 1
//! and 2 threads, cut into tasks by tiles alone (how it was before chunks of output channels)
//! and by the chosen split, alternated window by window; prints the 2-thread speed-ups.

use crx580::backend::cpu::activation::Activation;
use crx580::backend::cpu::gemm::{micro_for, run, Epilogue, Lhs, MatRef, PackedA, Problem, Rhs};
use crx580::backend::cpu::isa::isa;
use crx580::backend::cpu::pool::ThreadPool;
use crx580::backend::cpu::winograd::{self, Split, Winograd};
use crx580::ops::window::Axis;

#[path = "support/timing.rs"]
mod timing;
use timing::best_time;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "threads") {
        return threads();
    }
    if let Some(at) = args.iter().position(|a| a == "grid") {
        return grid(&args[at + 1..].iter().map(|a| a.parse().expect("a number")).collect::<Vec<_>>());
    }
    let micro = micro_for(isa());
    let pool = ThreadPool::new(1);
    println!("(C, M, H=W)       GEMM ms  Winograd ms  speed-up  chosen");
    for (c, m, hw) in [
        (64, 64, 56),
        (128, 128, 28),
        (256, 256, 14),
        (512, 512, 7),
        (16, 16, 160),
        (32, 32, 80),
        (64, 64, 40),
        (128, 128, 20),
        (64, 64, 80),
        (80, 80, 80),
        (64, 64, 20),
        (80, 256, 20),
        (8, 8, 80),
    ] {
        let x: Vec<f32> = (0..c * hw * hw).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..m * c * 9).map(|i| (i % 5) as f32 * 0.01).collect();
        let axis = Axis { input: hw, kernel: 3, stride: 1, dilation: 1, pad_begin: 1, pad_end: 1, output: hw };
        let mut y = vec![0f32; m * hw * hw];
        let windows = 5;
        let reps = (2_000_000_000 / (2 * m * c * 9 * hw * hw)).clamp(1, 50);
        let wg = Winograd::new(&w, m, c, &micro);
        let r = winograd::Run { x: &x, batch: 1, h: axis, w: axis, bias: None, residual: None, act: Activation::None };
        let t_wino = best_time(windows, reps, || wg.run(&pool, &r, &mut y));
        let cols = vec![0.5f32; 9 * c * hw * hw];
        let a = PackedA::new(MatRef::row_major(&w, 9 * c), m, 9 * c, &micro);
        let b = MatRef::row_major(&cols, hw * hw);
        let p =
            Problem { m, n: hw * hw, k: 9 * c, a: Lhs::Packed(&a), b: Rhs::Plain(b), epilogue: Epilogue::default() };
        let t_gemm = best_time(windows, reps, || run(&pool, &micro, &p, &mut y, hw * hw));
        let tiles = hw.div_ceil(4) * hw.div_ceil(4);
        let chosen = if winograd::wins(c, m, Some(tiles)) { "winograd" } else { "gemm" };
        println!(
            "({c:>3}, {m:>3}, {hw:>3})  {:>9.3}  {:>11.3}  {:>8.2}  {chosen}",
            t_gemm * 1e3,
            t_wino * 1e3,
            t_gemm / t_wino
        );
    }
}

/// The shapes of [`main`] whose 3x3 convs run by Winograd.
const THREAD_SHAPES: [(usize, usize, usize); 8] = [
    (64, 64, 56),
    (128, 128, 28),
    (256, 256, 14),
    (16, 16, 160),
    (32, 32, 80),
    (64, 64, 40),
    (128, 128, 20),
    (80, 256, 20),
];

/// The split of the kernel before chunks of channels: blocks of tiles alone, at most as many as
/// 128K floats of transformed input and products hold, each sized so that the blocks' rounds
/// finish soonest.
fn tiles_only(c: usize, m: usize, total: usize, threads: usize, mr: usize, nr: usize) -> Split {
    let most = ((128 * 1024 / (36 * (c + m))) / mr * mr).clamp(mr, 128 / mr * mr);
    let channels = m.div_ceil(nr) * nr;
    if threads == 1 {
        return Split { tiles: most, channels };
    }
    let fewest = total.div_ceil(most).max(1);
    let tries = (4 * threads).min(16).min(total.div_ceil(mr).saturating_sub(fewest));
    let mut best = (usize::MAX, most);
    for blocks in fewest..=fewest + tries {
        let size = total.div_ceil(blocks).div_ceil(mr) * mr;
        let cost = total.div_ceil(size).div_ceil(threads) * (size + 4);
        if cost < best.0 {
            best = (cost, size);
        }
    }
    Split { tiles: best.1, channels }
}

fn threads() {
    let micro = micro_for(isa());
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    println!("(C, M, H=W)      split    1t ms   2t ms  2t speed-up  (tiles x channels at 1t / 2t)");
    for (c, m, hw) in THREAD_SHAPES {
        let x: Vec<f32> = (0..c * hw * hw).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..m * c * 9).map(|i| (i % 5) as f32 * 0.01).collect();
        let axis = Axis { input: hw, kernel: 3, stride: 1, dilation: 1, pad_begin: 1, pad_end: 1, output: hw };
        let mut y = vec![0f32; m * hw * hw];
        let wg = Winograd::new(&w, m, c, &micro);
        let r = winograd::Run { x: &x, batch: 1, h: axis, w: axis, bias: None, residual: None, act: Activation::None };
        let total = hw.div_ceil(4) * hw.div_ceil(4);
        let reps = (1_000_000_000 / (2 * m * c * 9 * hw * hw)).clamp(1, 50);
        // Per (strategy, threads): the best window, the strategies alternated window by window.
        let splits = |t: usize| [tiles_only(c, m, total, t, micro.mr, micro.nr), wg.split(total, t)];
        let mut best = [[f64::MAX; 2]; 2];
        for _ in 0..7 {
            for (t, pool) in pools.iter().enumerate() {
                for (s, split) in splits(t + 1).into_iter().enumerate() {
                    let time = best_time(1, reps, || wg.run_split(pool, &r, &mut y, split));
                    best[s][t] = best[s][t].min(time);
                }
            }
        }
        for (s, name) in ["tiles", "chosen"].into_iter().enumerate() {
            let [one, two] = best[s];
            let (a, b) = (splits(1)[s], splits(2)[s]);
            println!(
                "({c:>3}, {m:>3}, {hw:>3})  {name:>7}  {:>6.3}  {:>6.3}  {:>11.2}  ({}x{} / {}x{})",
                one * 1e3,
                two * 1e3,
                one / two,
                a.tiles,
                a.channels,
                b.tiles,
                b.channels
            );
        }
    }
}

/// `-- grid C M HW THREADS`: every split of one shape (tiles by channels, whole panels) timed
/// at THREADS threads, fastest last: for tuning `Winograd::split`'s costs.
fn grid(args: &[usize]) {
    let &[c, m, hw, threads] = args else { panic!("grid C M HW THREADS") };
    let micro = micro_for(isa());
    let pool = ThreadPool::new(threads);
    let x: Vec<f32> = (0..c * hw * hw).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..m * c * 9).map(|i| (i % 5) as f32 * 0.01).collect();
    let axis = Axis { input: hw, kernel: 3, stride: 1, dilation: 1, pad_begin: 1, pad_end: 1, output: hw };
    let mut y = vec![0f32; m * hw * hw];
    let wg = Winograd::new(&w, m, c, &micro);
    let r = winograd::Run { x: &x, batch: 1, h: axis, w: axis, bias: None, residual: None, act: Activation::None };
    let total = hw.div_ceil(4) * hw.div_ceil(4);
    let reps = (500_000_000 / (2 * m * c * 9 * hw * hw)).clamp(1, 50);
    let mut splits = Vec::new();
    for tiles in (micro.mr..=total.div_ceil(micro.mr) * micro.mr).step_by(micro.mr).filter(|t| *t <= 128) {
        for channels in (micro.nr..=m.div_ceil(micro.nr) * micro.nr).step_by(micro.nr) {
            splits.push(Split { tiles, channels });
        }
    }
    let mut best = vec![f64::MAX; splits.len()];
    for _ in 0..5 {
        for (b, &split) in best.iter_mut().zip(&splits) {
            *b = b.min(best_time(1, reps, || wg.run_split(&pool, &r, &mut y, split)));
        }
    }
    let mut order: Vec<usize> = (0..splits.len()).collect();
    order.sort_by(|&a, &b| best[b].total_cmp(&best[a]));
    for i in order {
        println!("{:>4} x {:>4}  {:>8.3} ms", splits[i].tiles, splits[i].channels, best[i] * 1e3);
    }
    println!("chosen: {:?}", wg.split(total, threads));
}
