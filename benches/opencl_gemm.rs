//! GEMM and convolution throughput of the OpenCL kernels (`kernels/gemm.cl`, `kernels/conv.cl`)
//! on the first OpenCL device, in GFLOP/s, per kernel configuration, next to CLBlast's SGEMM on the
//! same device (`cargo bench --bench opencl_gemm`; benches/RESULTS.md keeps the numbers).
//!
//! Configurations: `CRX580_BENCH_CONFIGS` (a `;`-separated list of `registers:MWI,VW,NV` /
//! `local:MWG,NWG,KWG,MWI,NWI`), else the one sessions would use (tune file or table). CLBlast
//! comes from `libclblast.so.1` by dlopen (Debian: `apt-get install libclblast-dev`); without it
//! the column says so. Rounds alternate the kernels (every configuration, then CLBlast, per shape)
//! so that load from other processes falls on all of them alike; each cell is the best window
//! over the rounds. Every result is checked. A second table gives GFLOP per second of the
//! process's CPU time (PoCL's worker threads are in-process): on a loaded machine, where the wall
//! clock measures the other tenants as much as the kernel, that is what tells kernels apart.

#[path = "support/clblast.rs"]
mod clblast;

use crx580::backend::opencl::conv::{ConvProgram, ConvShape};
use crx580::backend::opencl::gemm::{Gemm, GemmCall};
use crx580::backend::opencl::tuning::{gemm_params, GemmParams};
use crx580::backend::opencl::{Buffer, Context};
use crx580::ops::window::Axis;
use std::sync::Arc;
use std::time::Instant;

/// One measured problem: a plain GEMM, or a convolution run as the backend runs it (im2col, then
/// GEMM of the weights by the columns).
#[derive(Clone, Copy)]
enum Problem {
    Gemm(usize, usize, usize),
    /// N=1 image of C x H x W, M output channels, a K x K kernel at `stride`, padding K/2.
    Conv {
        c: usize,
        hw: usize,
        m: usize,
        kernel: usize,
        stride: usize,
    },
}

impl Problem {
    fn name(&self) -> String {
        match *self {
            Problem::Gemm(m, n, k) => format!("gemm ({m}, {n}, {k})"),
            Problem::Conv { c, hw, m, kernel, stride } => {
                format!("conv {c}->{m} {kernel}x{kernel}/{stride} on {hw}x{hw}")
            }
        }
    }

    /// The equivalent GEMM (M, N, K): for a convolution, weights by im2col columns.
    fn gemm(&self) -> (usize, usize, usize) {
        match *self {
            Problem::Gemm(m, n, k) => (m, n, k),
            Problem::Conv { .. } => {
                let s = self.conv_shape();
                (s.m, s.h.output * s.w.output, s.c * s.h.kernel * s.w.kernel)
            }
        }
    }

    fn conv_shape(&self) -> ConvShape {
        let Problem::Conv { c, hw, m, kernel, stride } = *self else { unreachable!() };
        let pad = kernel / 2;
        let output = (hw + 2 * pad - kernel) / stride + 1;
        let axis = Axis { input: hw, kernel, stride, dilation: 1, pad_begin: pad, pad_end: pad, output };
        ConvShape { n: 1, c, m, group: 1, h: axis, w: axis }
    }

    fn flop(&self) -> f64 {
        let (m, n, k) = self.gemm();
        2.0 * (m * n * k) as f64
    }
}

/// One configuration's programs and a problem's buffers.
struct Ours {
    gemm: Gemm,
    conv: Arc<ConvProgram>,
}

struct Buffers {
    a: Buffer,
    b: Buffer,
    c: Buffer,
    columns: Option<Buffer>,
}

fn run_ours(o: &Ours, p: &Problem, bufs: &Buffers) -> crx580::Result<()> {
    let (m, n, k) = p.gemm();
    match p {
        Problem::Gemm(..) => o.gemm.run(&GemmCall::new(m, n, k), &bufs.a, &bufs.b, None, None, &bufs.c),
        Problem::Conv { .. } => {
            // As the backend runs it: the image is B (im2col'd unless 1x1 stride 1), weights A.
            let s = p.conv_shape();
            let b = match &bufs.columns {
                Some(cols) => {
                    o.conv.im2col(&s, &bufs.b, cols)?;
                    cols
                }
                None => &bufs.b,
            };
            o.gemm.run(&GemmCall::new(m, n, k), &bufs.a, b, None, None, &bufs.c)
        }
    }
}

fn main() -> crx580::Result<()> {
    let device = Context::first_device()?;
    let cache =
        std::env::var_os("CRX580_CACHE_DIR").map(Into::into).or_else(crx580::backend::opencl::cache::default_dir);
    let ctx = Context::new(device, cache)?;
    println!("device: {} (driver {})", ctx.device.name, ctx.device.driver_version);
    // `cargo test --all-targets` runs this without --bench: one small shape, once, as a smoke test.
    let measuring = std::env::args().any(|a| a == "--bench");
    let configs: Vec<GemmParams> = match std::env::var("CRX580_BENCH_CONFIGS") {
        Ok(list) => {
            list.split(';').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse()).collect::<Result<_, _>>()?
        }
        Err(_) => vec![gemm_params(&ctx.device, ctx.cache_dir.as_deref())?.0],
    };
    let mut ours = Vec::new();
    for &p in &configs {
        let started = Instant::now();
        let gemm = Gemm::with_params(&ctx, p)?;
        println!(
            "configuration {p}: built in {:.1} s (from cache: {})",
            started.elapsed().as_secs_f64(),
            gemm.from_cache
        );
        ours.push(Ours { gemm, conv: Arc::new(ConvProgram::new(&ctx)?) });
    }
    let clblast = if measuring {
        clblast::ClBlast::new(&ctx.device).map_err(|why| println!("CLBlast: not measured: {why}")).ok()
    } else {
        None
    };
    let problems: Vec<Problem> = if measuring {
        vec![
            Problem::Gemm(3136, 64, 576),
            Problem::Gemm(256, 256, 256),
            Problem::Gemm(64, 384, 384),
            Problem::Gemm(1024, 1024, 1024),
            Problem::Gemm(64, 3136, 576),
            Problem::Conv { c: 64, hw: 56, m: 64, kernel: 3, stride: 1 },
            Problem::Conv { c: 128, hw: 28, m: 128, kernel: 3, stride: 1 },
            Problem::Conv { c: 256, hw: 56, m: 64, kernel: 1, stride: 1 },
        ]
    } else {
        vec![Problem::Gemm(64, 64, 64), Problem::Conv { c: 8, hw: 9, m: 5, kernel: 3, stride: 2 }]
    };
    let rounds = if measuring { 3 } else { 1 };
    let window_seconds = 0.1;
    // best[problem][kernel]: GFLOP/s, kernel = each configuration, then CLBlast; best_cpu the same
    // per second of CPU time.
    let mut best = vec![vec![0.0f64; configs.len() + 1]; problems.len()];
    let mut best_cpu = best.clone();
    for round in 0..rounds {
        for (pi, p) in problems.iter().enumerate() {
            let (m, n, k) = p.gemm();
            let a_host = vec![0.5f32; m * k];
            let (b_host, columns) = match p {
                Problem::Gemm(..) => (vec![0.25f32; k * n], None),
                Problem::Conv { c, hw, .. } => {
                    let s = p.conv_shape();
                    let im2col = !s.pointwise();
                    (vec![0.25f32; c * hw * hw], im2col.then(|| ctx.alloc::<f32>(k * n)).transpose()?)
                }
            };
            let bufs =
                Buffers { a: ctx.upload(&a_host)?, b: ctx.upload(&b_host)?, c: ctx.alloc::<f32>(m * n)?, columns };
            for (ci, o) in ours.iter().enumerate() {
                run_ours(o, p, &bufs)?;
                ctx.finish()?;
                check(p, &bufs.c.to_vec::<f32>(m * n)?, &format!("{}", configs[ci]));
                let once = time_once(|| run_ours(o, p, &bufs).and_then(|_| ctx.finish()).unwrap());
                let reps = ((window_seconds / once) as usize).clamp(1, 1000);
                let (t, cpu) = best_times(3, reps, || {
                    run_ours(o, p, &bufs).unwrap();
                    ctx.finish().unwrap();
                });
                best[pi][ci] = best[pi][ci].max(p.flop() / t / 1e9);
                best_cpu[pi][ci] = best_cpu[pi][ci].max(p.flop() / cpu / 1e9);
            }
            // CLBlast multiplies the same matrices; for a convolution, the im2col matrix ours made.
            if let (Some(cb), Problem::Gemm(..)) = (&clblast, p) {
                let ops = cb.operands(&a_host, &b_host, m * n).map_err(|e| crx580::err!(Runtime, "{e}"))?;
                let sgemm = || cb.sgemm(m, n, k, &ops).map_err(|e| crx580::err!(Runtime, "{e}"));
                sgemm()?;
                cb.finish();
                check(p, &cb.read_c(&ops, m * n), "CLBlast");
                let once = time_once(|| {
                    sgemm().unwrap();
                    cb.finish()
                });
                let reps = ((window_seconds / once) as usize).clamp(1, 1000);
                let (t, cpu) = best_times(3, reps, || {
                    sgemm().unwrap();
                    cb.finish();
                });
                best[pi][configs.len()] = best[pi][configs.len()].max(p.flop() / t / 1e9);
                best_cpu[pi][configs.len()] = best_cpu[pi][configs.len()].max(p.flop() / cpu / 1e9);
            }
        }
        if measuring {
            println!("round {} of {rounds} done", round + 1);
        }
    }
    let mut header: Vec<String> = configs.iter().map(|c| c.to_string()).collect();
    header.push("CLBlast".into());
    let has_clblast = clblast.is_some();
    for (what, table) in [("GFLOP/s (wall clock)", &best), ("GFLOP per CPU-second", &best_cpu)] {
        println!(
            "\n{what}, best window over {rounds} alternated rounds:\n| problem | {} | first / CLBlast |",
            header.join(" | ")
        );
        println!("|---|{}---|", "---|".repeat(header.len()));
        for (p, row) in problems.iter().zip(table) {
            let gemm = matches!(p, Problem::Gemm(..));
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, g)| match (i == configs.len(), gemm) {
                    (true, false) => "(gemm only)".into(),
                    (true, true) if !has_clblast => "-".into(),
                    _ => format!("{g:.1}"),
                })
                .collect();
            let ratio = if gemm && has_clblast { format!("{:.1}x", row[0] / row[configs.len()]) } else { "".into() };
            println!("| {} | {} | {ratio} |", p.name(), cells.join(" | "));
        }
    }
    Ok(())
}

/// Best seconds per call of `f` over `windows` windows of `reps` calls: of the wall clock, and of
/// the process's CPU time (each window's best taken on its own).
fn best_times(windows: usize, reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    for _ in 0..windows {
        let (t, c) = (Instant::now(), cpu_seconds());
        for _ in 0..reps {
            f();
        }
        wall = wall.min(t.elapsed().as_secs_f64() / reps as f64);
        cpu = cpu.min((cpu_seconds() - c).max(1e-9) / reps as f64);
    }
    (wall, cpu)
}

/// CPU time of every thread of this process (PoCL's workers included), in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn time_once(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64().max(1e-6)
}

/// Every element of A B with A all 0.5 and B (or the image) all 0.25 is 0.125 K, or less for a
/// convolution's output pixels whose window reaches into the padding (0.125 times the taps inside).
fn check(p: &Problem, c: &[f32], who: &str) {
    let k = p.gemm().2 as f32;
    let full = 0.125 * k;
    let bad = match p {
        Problem::Gemm(..) => c.iter().position(|&v| (v - full).abs() > 1e-3 * k),
        Problem::Conv { .. } => c.iter().position(|&v| !(v > 0.0 && v <= full + 1e-3 * k)),
    };
    if let Some(i) = bad {
        panic!("{who} gave a wrong {}: element {i} is {} (0.125 K = {full})", p.name(), c[i]);
    }
    if matches!(p, Problem::Conv { .. }) {
        assert!(c.iter().any(|&v| (v - full).abs() <= 1e-3 * k), "{who}: no interior pixel of {}", p.name());
    }
}
