//! `crx580 tune MODEL|--gemm`: searches the OpenCL GEMM parameters on this machine's OpenCL device
//! for a model's GEMM and convolution shapes (or a standard set) and keeps the winner in the
//! device's tune file, which every later OpenCL session reads (`backend/opencl/tune.rs` does the
//! search, `tuning.rs` reads the file).

use crate::out::{note, outln};
use crate::shapes::{concrete_shapes, ShapeArgs};
use crate::LimitArgs;
use clap::Args;
use crx580::backend::opencl::tune::{self, GemmShape, Outcome, Progress, SearchOptions};
use crx580::backend::opencl::tuning::{gemm_params, GemmParams};
use crx580::backend::opencl::Context;
use crx580::ir::Graph;
use crx580::{bail, err, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Args)]
pub struct TuneArgs {
    /// The model whose Conv, MatMul and Gemm shapes to tune for.
    #[arg(required_unless_present = "gemm", conflicts_with = "gemm")]
    model: Option<PathBuf>,
    /// Tune for standard GEMM shapes (3136x64x576, 256³, 64x384x384, 1024³) instead of a model's.
    #[arg(long)]
    gemm: bool,
    /// With --gemm: tune for this M,N,K instead of the standard set (repeatable).
    #[arg(long = "gemm-shape", value_name = "M,N,K", requires = "gemm")]
    gemm_shapes: Vec<String>,
    /// With a model: tune for its this-many heaviest GEMM shapes (by FLOPs).
    #[arg(long, default_value_t = 6)]
    max_shapes: usize,
    /// Try only these parameter sets (registers:MWI,VW,NV or local:MWG,NWG,KWG,MWI,NWI;
    /// repeatable); default: the device's whole space.
    #[arg(long = "params", value_name = "SET")]
    params: Vec<String>,
    /// Seconds of timed runs per candidate and shape.
    #[arg(long, default_value_t = 0.3, value_name = "SECONDS")]
    seconds: f64,
    /// Measure and print, but leave the tune file as it is.
    #[arg(long)]
    dry_run: bool,
    /// The cache directory the tune file goes in (default: CRX580_CACHE_DIR, else
    /// ~/.cache/crx580/opencl), the one sessions read with the same --cache-dir.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn tune(a: TuneArgs) -> Result<()> {
    if !(a.seconds > 0.0 && a.seconds <= 60.0) {
        bail!(InvalidInput, "--seconds {} must be above 0 and at most 60", a.seconds);
    }
    let shapes = match &a.model {
        Some(path) => model_shapes(a.shapes.apply(a.limits.load(path)?)?, a.max_shapes)?,
        None if a.gemm_shapes.is_empty() => tune::standard_shapes().into_iter().map(|s| (s, 1)).collect(),
        None => a.gemm_shapes.iter().map(|s| Ok((parse_shape(s)?, 1))).collect::<Result<Vec<_>>>()?,
    };
    let cache_dir = a.cache_dir.clone().or_else(crx580::backend::opencl::cache::default_dir);
    let ctx = Context::new(Context::first_device()?, cache_dir)?;
    let candidates = if a.params.is_empty() {
        tune::candidates(&ctx.device)
    } else {
        a.params.iter().map(|p| p.parse::<GemmParams>()).collect::<Result<Vec<_>>>()?
    };
    let (current, entry) = gemm_params(&ctx.device, ctx.cache_dir.as_deref())?;
    outln!("device: {} (driver {})", ctx.device.name, ctx.device.driver_version);
    outln!("now: {current} ({entry})");
    for (s, count) in &shapes {
        outln!("shape {s} x{count}");
    }
    note!(
        "crx580: tuning {} candidates on {} shapes (each new candidate compiles first: seconds to a minute on PoCL)",
        candidates.len(),
        shapes.len()
    );
    let bar = ProgressBar::new(candidates.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} candidates, {elapsed} (eta {eta}) {msg}") {
        bar.set_style(style);
    }
    let options = SearchOptions { shapes: shapes.clone(), candidates, seconds_per_shape: a.seconds };
    let report = tune::search(&ctx, &options, &mut |p: Progress| match p.trial {
        None => bar.set_message(p.params.to_string()),
        Some(_) => bar.inc(1),
    })?;
    bar.finish_and_clear();

    let header: Vec<String> = shapes.iter().map(|(s, _)| s.to_string()).collect();
    outln!("GFLOP/s per candidate: {}", header.join(" | "));
    for t in &report.trials {
        let text = match &t.outcome {
            Outcome::Timed { seconds } => shapes
                .iter()
                .zip(seconds)
                .map(|((s, _), secs)| format!("{:.1}", s.flop() / secs / 1e9))
                .collect::<Vec<_>>()
                .join(" | "),
            Outcome::Wrong(why) => format!("rejected, wrong result: {why}"),
            Outcome::Failed(why) => format!("failed: {}", why.lines().next().unwrap_or_default()),
        };
        let mark = if Some(t.params) == report.winner { "*" } else { " " };
        outln!("{mark} {:<28} {text}", t.params.to_string());
    }
    let winner = report.winner.ok_or_else(|| err!(Runtime, "no candidate gave right answers: nothing saved"))?;
    let score = |p: GemmParams| report.trial(p).and_then(|t| t.score(&shapes));
    if let (Some(w), Some(c)) = (score(winner), score(current)) {
        outln!("winner: {winner}, {:.2}x the speed of the current {current}", c / w);
    } else {
        outln!("winner: {winner}");
    }
    if a.dry_run {
        outln!("--dry-run: the tune file is left as it is");
        return Ok(());
    }
    let path = tune::save(&ctx, &report)?;
    outln!("saved: {} (OpenCL sessions on this device now use it)", path.display());
    Ok(())
}

/// `M,N,K` (or `MxNxK`).
fn parse_shape(s: &str) -> Result<GemmShape> {
    let v: Vec<usize> = s.split([',', 'x']).filter_map(|p| p.trim().parse().ok()).filter(|&d| d > 0).collect();
    match v.as_slice() {
        &[m, n, k] if m * n * k <= 1 << 34 => Ok(GemmShape::new(m, n, k)),
        _ => {
            Err(err!(InvalidInput, "--gemm-shape '{s}' is not M,N,K with positive sizes of at most 2^34 multiply-adds"))
        }
    }
}

/// The GEMM shapes of the model's group-1 Conv, MatMul and Gemm nodes (an unknown batch taken as
/// 1), counted, and the `max` heaviest of them by FLOPs.
fn model_shapes(model: crx580::Model, max: usize) -> Result<Vec<(GemmShape, usize)>> {
    let concrete: HashMap<String, Vec<usize>> =
        model.inputs().into_iter().zip(concrete_shapes(&model)?).map(|(i, s)| (i.name, s)).collect();
    let model = model.with_input_shapes(&concrete)?;
    let mut counts: BTreeMap<GemmShape, usize> = BTreeMap::new();
    let mut unknown = 0;
    let g = model.graph();
    for n in &g.nodes {
        match gemm_shape(g, n) {
            Some(Some(s)) => *counts.entry(s).or_default() += 1,
            Some(None) => unknown += 1,
            None => {}
        }
    }
    if unknown > 0 {
        note!("crx580: note: {unknown} Conv/MatMul/Gemm nodes have shapes not known before running; they are not tuned for");
    }
    let mut shapes: Vec<(GemmShape, usize)> = counts.into_iter().collect();
    if shapes.is_empty() {
        bail!(InvalidInput, "the model has no Conv, MatMul or Gemm node of known shape to tune for (try --gemm)");
    }
    let total: f64 = shapes.iter().map(|(s, c)| s.flop() * *c as f64).sum();
    shapes.sort_by(|a, b| (b.0.flop() * b.1 as f64).total_cmp(&(a.0.flop() * a.1 as f64)));
    shapes.truncate(max.max(1));
    let kept: f64 = shapes.iter().map(|(s, c)| s.flop() * *c as f64).sum();
    note!("crx580: the {} shapes tuned for are {:.0}% of the model's GEMM FLOPs", shapes.len(), 100.0 * kept / total);
    Ok(shapes)
}

/// `None`: not a GEMM-like node; `Some(None)`: one whose shapes are unknown.
fn gemm_shape(g: &Graph, n: &crx580::ir::Node) -> Option<Option<GemmShape>> {
    let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
    if !default_domain || !matches!(n.op_type.as_str(), "Conv" | "MatMul" | "Gemm") {
        return None;
    }
    // Grouped and depthwise convolutions run a direct kernel without parameters.
    if n.op_type == "Conv" && n.attrs.int_or("group", 1).unwrap_or(1) != 1 {
        return None;
    }
    let shape = |k: usize| g.value((*n.inputs.get(k)?)?).fact.concrete_shape();
    let out = || g.value(*n.outputs.first()?).fact.concrete_shape();
    let known = || -> Option<GemmShape> {
        match n.op_type.as_str() {
            "Conv" => {
                let (w, y) = (shape(1)?, out()?);
                if y.len() < 3 || w.len() < 2 {
                    return None;
                }
                let k = w[1..].iter().product();
                Some(GemmShape { m: w[0], n: y[2..].iter().product(), k, batch: y[0], shared_a: true })
            }
            "MatMul" => {
                let (a, b, y) = (shape(0)?, shape(1)?, out()?);
                if a.len() < 2 || b.len() < 2 {
                    return None;
                }
                let (m, k, nn) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
                let batch: usize = y[..y.len() - 2].iter().product();
                // Shared weights: the batch folds into M (one taller GEMM).
                if b.len() == 2 {
                    Some(GemmShape::new(m * batch, nn, k))
                } else {
                    Some(GemmShape { m, n: nn, k, batch, shared_a: a.len() == 2 })
                }
            }
            _ => {
                let (a, y) = (shape(0)?, out()?);
                let trans_a = n.attrs.int_or("transA", 0).ok()? != 0;
                let k = if trans_a { a.first()? } else { a.get(1)? };
                Some(GemmShape::new(*y.first()?, *y.get(1)?, *k))
            }
        }
    };
    Some(known())
}
