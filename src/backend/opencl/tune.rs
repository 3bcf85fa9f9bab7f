//! The GEMM parameter search behind `crx580 tune`: every candidate of the device's parameter space
//! (`tuning.rs`'s GemmParams) is built, run on each shape, checked against a CPU reference (a
//! candidate with a wrong answer, or one the device cannot build or run, is out) and timed; the
//! fastest over all shapes is written to the device's tune file, which sessions then read.
//!
//! Convolutions are tuned through GEMM: a group-1 Conv runs as im2col + GEMM (`conv.rs`), so a
//! model's convolutions add their GEMM shapes (M = output channels, N = OH*OW, K = C*KH*KW, the
//! weights shared by the batch). Grouped and depthwise convolutions have no parameters yet.

use super::context::{Buffer, Context};
use super::device::DeviceInfo;
use super::gemm::{BiasLayout, Gemm, GemmCall};
use super::tuning::{is_pocl, table_params, tune_file, tune_text, GemmParams};
use crate::ops::fused::Activation;
use crate::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// One GEMM problem to tune for: `batch` products of M x K by K x N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    /// One A shared by every batch (a convolution's weights).
    pub shared_a: bool,
}

impl GemmShape {
    pub fn new(m: usize, n: usize, k: usize) -> GemmShape {
        GemmShape { m, n, k, batch: 1, shared_a: false }
    }

    pub fn flop(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch) as f64
    }
}

impl std::fmt::Display for GemmShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.m, self.n, self.k)?;
        if self.batch > 1 {
            write!(f, " (batch {}{})", self.batch, if self.shared_a { ", shared A" } else { "" })?;
        }
        Ok(())
    }
}

/// `crx580 tune --gemm`'s shapes: a ResNet 3x3 convolution's im2col GEMM (3136,64,576), the cubes
/// 256 and 1024, and a transformer projection (64,384,384).
pub fn standard_shapes() -> Vec<GemmShape> {
    [(3136, 64, 576), (256, 256, 256), (64, 384, 384), (1024, 1024, 1024)]
        .into_iter()
        .map(|(m, n, k)| GemmShape::new(m, n, k))
        .collect()
}

/// The parameter sets searched on `device`, the table's own entry first (so tuning never picks
/// something slower than the table on the shapes measured). CPU devices (PoCL) get register
/// blocks without local memory; GPUs local-memory tiles of 64 to 256 work-items that fit the
/// device (and GCN's 32 KB per work-group).
pub fn candidates(device: &DeviceInfo) -> Vec<GemmParams> {
    let mut all = vec![table_params(device).0];
    if !device.is_gpu || is_pocl(device) {
        for mwi in [4, 8, 12] {
            for (vw, nv) in [(8, 2), (8, 4), (16, 1), (16, 2)] {
                all.push(GemmParams::Registers { mwi, vw, nv });
            }
        }
    } else {
        for (mwg, nwg) in [(32, 32), (64, 64), (64, 128), (128, 64), (128, 128)] {
            for kwg in [16, 32] {
                for (mwi, nwi) in [(2, 2), (4, 4), (4, 8), (8, 4), (8, 8)] {
                    let p = GemmParams::Local { mwg, nwg, kwg, mwi, nwi };
                    let work_items = (mwg / mwi) * (nwg / nwi);
                    if (64..=256).contains(&work_items) && p.defines(device).is_ok() {
                        all.push(p);
                    }
                }
            }
        }
    }
    let mut unique = Vec::with_capacity(all.len());
    for p in all {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    unique
}

/// What a search measures: the shapes (with how often each occurs: a model's repeated layers
/// weigh more), the candidates, and how long to time each candidate on each shape.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub shapes: Vec<(GemmShape, usize)>,
    pub candidates: Vec<GemmParams>,
    /// Seconds of timed runs per candidate and shape (at least two runs each).
    pub seconds_per_shape: f64,
}

/// How one candidate fared.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Right on every shape: the best time per run of each shape, in the order of the options.
    Timed { seconds: Vec<f64> },
    /// An answer differed from the CPU reference.
    Wrong(String),
    /// The device could not build or run it.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub params: GemmParams,
    pub outcome: Outcome,
}

impl Trial {
    /// Seconds for the whole workload (each shape's time times its count), if it was timed.
    pub fn score(&self, shapes: &[(GemmShape, usize)]) -> Option<f64> {
        match &self.outcome {
            Outcome::Timed { seconds } => {
                Some(seconds.iter().zip(shapes).map(|(s, (_, count))| s * *count as f64).sum())
            }
            _ => None,
        }
    }
}

/// A finished search: every trial, and the fastest right one.
#[derive(Debug, Clone)]
pub struct Report {
    pub shapes: Vec<(GemmShape, usize)>,
    pub trials: Vec<Trial>,
    pub winner: Option<GemmParams>,
}

impl Report {
    pub fn trial(&self, p: GemmParams) -> Option<&Trial> {
        self.trials.iter().find(|t| t.params == p)
    }
}

/// A search's progress: candidate `index` of `total` is about to be built and run (`trial`
/// `None`), or has been (`Some`).
pub struct Progress<'a> {
    pub index: usize,
    pub total: usize,
    pub params: GemmParams,
    pub trial: Option<&'a Trial>,
}

/// One shape's inputs on the device and the CPU reference result.
struct Problem {
    shape: GemmShape,
    a: Buffer,
    b: Buffer,
    c: Buffer,
    bias: Option<Buffer>,
    call: GemmCall,
    expected: Vec<f32>,
}

/// Runs every candidate of `options` on `ctx`'s device; `progress` hears of each. Writes nothing.
pub fn search(ctx: &Arc<Context>, options: &SearchOptions, progress: &mut dyn FnMut(Progress)) -> Result<Report> {
    if options.shapes.is_empty() || options.candidates.is_empty() {
        crate::bail!(InvalidInput, "a tuning search needs at least one shape and one candidate");
    }
    if ctx.half_storage {
        crate::bail!(InvalidInput, "tune on an f32 context: float16 storage would fail the exact checks");
    }
    let mut problems = Vec::with_capacity(options.shapes.len() + 1);
    for (shape, _) in &options.shapes {
        problems.push(problem(ctx, *shape, false)?);
    }
    // Sizes that are no multiple of any tile, with the epilogue, so edge code is checked too
    // (N = 51 leaves 19 columns past a 32-wide block: one vector and a scalar rest).
    let edge = problem(ctx, GemmShape { m: 37, n: 51, k: 29, batch: 2, shared_a: true }, true)?;
    let total = options.candidates.len();
    let mut trials = Vec::with_capacity(total);
    for (index, &params) in options.candidates.iter().enumerate() {
        progress(Progress { index, total, params, trial: None });
        let outcome = match Gemm::with_params(ctx, params) {
            Err(e) => Outcome::Failed(e.message),
            Ok(gemm) => measure(&gemm, &edge, &problems, options.seconds_per_shape),
        };
        trials.push(Trial { params, outcome });
        progress(Progress { index, total, params, trial: trials.last() });
    }
    let winner = trials
        .iter()
        .filter_map(|t| Some((t.params, t.score(&options.shapes)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| p);
    Ok(Report { shapes: options.shapes.clone(), trials, winner })
}

/// Checks `gemm` on the edge problem and every shape, then times it on every shape.
fn measure(gemm: &Gemm, edge: &Problem, problems: &[Problem], seconds: f64) -> Outcome {
    let run = |p: &Problem| -> Result<()> {
        let bias = p.bias.as_ref().map(|b| (b, BiasLayout::per_column()));
        gemm.run(&p.call, &p.a, &p.b, bias, None, &p.c)
    };
    for p in std::iter::once(edge).chain(problems) {
        let got = run(p).and_then(|_| p.c.to_vec::<f32>(p.expected.len()));
        match got {
            Err(e) => return Outcome::Failed(e.message),
            Ok(got) => {
                if let Some(why) = compare(&got, &p.expected, p.shape.k) {
                    return Outcome::Wrong(format!("{}: {why}", p.shape));
                }
            }
        }
    }
    let mut times = Vec::with_capacity(problems.len());
    for p in problems {
        match time(gemm, p, seconds, &run) {
            Ok(t) => times.push(t),
            Err(e) => return Outcome::Failed(e.message),
        }
    }
    Outcome::Timed { seconds: times }
}

/// The best seconds per run over three batches of runs that together take about `seconds` (the
/// best batch, since other processes only ever add time).
fn time(gemm: &Gemm, p: &Problem, seconds: f64, run: &dyn Fn(&Problem) -> Result<()>) -> Result<f64> {
    let ctx = gemm.context();
    let t = Instant::now();
    run(p)?;
    ctx.finish()?;
    let once = t.elapsed().as_secs_f64().max(1e-6);
    let reps = ((seconds / 3.0 / once) as usize).clamp(1, 1000);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            run(p)?;
        }
        ctx.finish()?;
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok(best)
}

/// Random inputs in [-1, 1) (a fixed seed per shape) on the device, and the CPU's answer.
fn problem(ctx: &Arc<Context>, shape: GemmShape, with_epilogue: bool) -> Result<Problem> {
    let GemmShape { m, n, k, batch, shared_a } = shape;
    let a_mats = if shared_a { 1 } else { batch };
    let mut state = (m * 31 + n * 17 + k) as u64 | 1;
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let (a, b) = (random(a_mats * m * k), random(batch * k * n));
    let bias = with_epilogue.then(|| random(n));
    let act = if with_epilogue { Activation::Relu } else { Activation::None };
    let mut expected = vec![0f32; batch * m * n];
    for (bi, c) in expected.chunks_mut(m * n).enumerate() {
        let a = &a[if shared_a { 0 } else { bi * m * k }..][..m * k];
        let b = &b[bi * k * n..][..k * n];
        for (i, row) in c.chunks_mut(n).enumerate() {
            for (kk, &av) in a[i * k..][..k].iter().enumerate() {
                row.iter_mut().zip(&b[kk * n..][..n]).for_each(|(c, &bv)| *c += av * bv);
            }
            if let Some(bias) = &bias {
                row.iter_mut().zip(bias).for_each(|(c, &bv)| *c = (*c + bv).max(0.0));
            }
        }
    }
    let call = GemmCall { batch, a_batched: !shared_a, act, ..GemmCall::new(m, n, k) };
    Ok(Problem {
        shape,
        a: ctx.upload(&a)?,
        b: ctx.upload(&b)?,
        c: ctx.alloc::<f32>(batch * m * n)?,
        bias: bias.map(|b| ctx.upload(&b)).transpose()?,
        call,
        expected,
    })
}

/// Why `got` is not `expected` for sums of `k` products of values in [-1, 1), if it is not.
fn compare(got: &[f32], expected: &[f32], k: usize) -> Option<String> {
    let tolerance = 1e-5 * k as f32 + 1e-4;
    let (i, diff) = got
        .iter()
        .zip(expected)
        .map(|(g, e)| if g.is_nan() { f32::INFINITY } else { (g - e).abs() })
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (diff > tolerance)
        .then(|| format!("element {i} is {} where the CPU has {} (tolerance {tolerance:e})", got[i], expected[i]))
}

/// Writes `report`'s winner into the device's tune file in the context's cache directory
/// (replacing any earlier one, atomically) and returns its path.
pub fn save(ctx: &Context, report: &Report) -> Result<PathBuf> {
    let Some(winner) = report.winner else {
        crate::bail!(Runtime, "no candidate gave right answers on {}: nothing to save", ctx.device.name);
    };
    let Some(dir) = &ctx.cache_dir else {
        crate::bail!(InvalidInput, "no cache directory to keep the tune file in (set CRX580_CACHE_DIR or --cache-dir)");
    };
    let mut comments = vec![format!("written by crx580 {}", crate::version())];
    if let Some(Outcome::Timed { seconds }) = report.trial(winner).map(|t| &t.outcome) {
        for ((shape, count), s) in report.shapes.iter().zip(seconds) {
            comments.push(format!("{shape} x{count}: {:.1} GFLOP/s", shape.flop() / s / 1e9));
        }
    }
    let path = tune_file(dir, &ctx.device);
    let io = |e: std::io::Error| crate::err!(Io, "cannot write the tune file {}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".tune.{}.tmp", std::process::id()));
    std::fs::write(&tmp, tune_text(&ctx.device, winner, &comments)).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_the_worst_element_and_catches_nan() {
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.0], 8), None);
        assert!(compare(&[1.0, 2.5], &[1.0, 2.0], 8).unwrap().starts_with("element 1 is 2.5"));
        assert!(compare(&[f32::NAN], &[0.0], 8).is_some());
    }
}
