//! GEMM throughput of the OpenCL kernel (`kernels/gemm.cl`) on the first OpenCL device, in
//! GFLOP/s, with the tuning table's parameters or `CRX580_GEMM_PARAMS`
//! (`cargo bench --bench opencl_gemm`; benches/RESULTS.md keeps the numbers). Each shape runs
//! once to warm up, then as often as fits ~1 s; the best of 3 such rounds is printed.

use crx580::backend::opencl::gemm::{Gemm, GemmCall};
use crx580::backend::opencl::Context;
use std::time::Instant;

fn main() -> crx580::Result<()> {
    let device = Context::first_device()?;
    let cache =
        std::env::var_os("CRX580_CACHE_DIR").map(Into::into).or_else(crx580::backend::opencl::cache::default_dir);
    let ctx = Context::new(device, cache)?;
    let started = Instant::now();
    let gemm = Gemm::new(&ctx)?;
    println!("device: {} (driver {})", ctx.device.name, ctx.device.driver_version);
    println!(
        "parameters: {:?} (built in {:.1} s, from cache: {})",
        gemm.params,
        started.elapsed().as_secs_f64(),
        gemm.from_cache
    );
    // `cargo test --all-targets` runs this without --bench: one small shape, once, as a smoke test.
    let measuring = std::env::args().any(|a| a == "--bench");
    let shapes: &[(usize, usize, usize)] = if measuring {
        &[(256, 256, 256), (1024, 1024, 1024), (3136, 64, 576), (64, 384, 384)]
    } else {
        &[(64, 64, 64)]
    };
    for &(m, n, k) in shapes {
        let a = ctx.upload(&vec![0.5f32; m * k])?;
        let b = ctx.upload(&vec![0.25f32; k * n])?;
        let c = ctx.alloc::<f32>(m * n)?;
        let call = GemmCall::new(m, n, k);
        gemm.run(&call, &a, &b, None, None, &c)?;
        ctx.finish()?;
        let flop = 2.0 * (m * n * k) as f64;
        let reps = if measuring { ((1e9 * 0.3 / flop) as usize).clamp(1, 1000) } else { 1 };
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..reps {
                gemm.run(&call, &a, &b, None, None, &c)?;
            }
            ctx.finish()?;
            best = best.max(flop * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        let check = c.to_vec::<f32>(1)?[0];
        assert!((check - 0.125 * k as f32).abs() < 1e-3 * k as f32, "wrong result {check}");
        println!("({m}, {n}, {k}): {best:.1} GFLOP/s");
    }
    Ok(())
}
