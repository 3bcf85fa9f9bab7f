//! Winograd F(4x4, 3x3) against the GEMM a 3x3 stride-1 convolution otherwise runs, per shape, at
//! 1 thread: `cargo bench --bench winograd`. The GEMM side is the conv's product with the weights
//! packed once and the column matrix (9C x HW, built beforehand) packed per run, as the
//! implicit-im2col packing does; so it leaves out the im2col gathering, which favours the GEMM
//! slightly. The shapes are ResNet-50's and YOLOv8n's (640x640) 3x3 stride-1 layers. Every figure
//! is the best of several windows, so one quiet window on a shared machine suffices.

use crx580::backend::cpu::activation::Activation;
use crx580::backend::cpu::gemm::{micro_for, run, Epilogue, Lhs, MatRef, PackedA, Problem, Rhs};
use crx580::backend::cpu::isa::isa;
use crx580::backend::cpu::pool::ThreadPool;
use crx580::backend::cpu::winograd::{self, Winograd};
use crx580::ops::window::Axis;

#[path = "support/timing.rs"]
mod timing;
use timing::best_time;

fn main() {
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
