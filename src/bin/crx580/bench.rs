//! `crx580 bench`: load time, the cold first run, then warm runs summarised by percentiles and
//! throughput, and the peak memory of the process.

use crate::image::ImageArgs;
use crate::out::outln;
use crate::random::{random_tensor, Uniform};
use crate::shapes::{concrete_shapes, shape_string, ShapeArgs};
use crate::{json, load_input, read_inputs, DeviceArgs};
use clap::Args;
use crx580::ir::limits::with_max_tensor_bytes;
use crx580::{err, Model, Result, Session, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// Runs are counted in memory, so their number is bounded.
const MAX_RUNS: usize = 10_000_000;

#[derive(Args)]
pub struct BenchArgs {
    /// The .onnx model.
    model: PathBuf,
    /// Inputs as PATH or NAME=PATH (.npy, .pb, .png, .jpg); without them, random inputs of the
    /// declared shapes.
    inputs: Vec<String>,
    /// Timed (warm) runs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_RUNS as u64))]
    runs: u64,
    /// Untimed runs between the cold first run and the timed runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=MAX_RUNS as u64))]
    warmup: u64,
    /// Print one JSON line with the timings.
    #[arg(long)]
    json: bool,
    /// After timing, profile the warm runs: time per op type (`--profile`), or per node too
    /// (`--profile=nodes`).
    #[arg(long, value_name = "WHAT", num_args = 0..=1, default_missing_value = "ops", value_parser = ["ops", "nodes"])]
    profile: Option<String>,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// What one bench measured; times in milliseconds.
pub struct Report {
    pub load_ms: f64,
    pub cold_ms: f64,
    /// Warm run times, sorted.
    pub times: Vec<f64>,
    pub warmup: usize,
    pub peak_rss_mb: f64,
    pub inputs: Vec<(String, Vec<usize>)>,
    /// Nodes (after fusion) a device backend runs, and all nodes.
    pub device_nodes: usize,
    pub total_nodes: usize,
}

impl Report {
    /// The `p`-th percentile (0..=100) of the warm runs, interpolated linearly between the closest
    /// ranks (numpy's default).
    pub fn percentile(&self, p: f64) -> f64 {
        let t = &self.times;
        let at = (t.len() - 1) as f64 * p / 100.0;
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        t[lo] + (t[hi] - t[lo]) * (at - lo as f64)
    }

    pub fn mean(&self) -> f64 {
        self.times.iter().sum::<f64>() / self.times.len() as f64
    }

    /// Warm runs per second (one run is one inference of the whole input batch).
    pub fn throughput(&self) -> f64 {
        1e3 / self.mean()
    }
}

/// One run whose outputs are on the host when it returns: a device backend's outputs stay on the
/// device until read (and its kernels may still be queued), so a run is timed to the read.
fn run_to_host(session: &Session, refs: &[&Tensor]) -> Result<()> {
    for t in session.run_positional(refs)? {
        t.storage().data()?;
    }
    Ok(())
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let options = a.device.session_options()?;
    let t0 = Instant::now();
    let model = a.shapes.apply(a.device.limits.load(&a.model)?)?;
    let load_model_ms = t0.elapsed().as_secs_f64() * 1e3;
    let infos = model.inputs();
    let max_bytes = a.device.limits.max_tensor_bytes()?;
    let inputs = if a.inputs.is_empty() {
        let shapes = concrete_shapes(&model)?;
        with_max_tensor_bytes(max_bytes, || random_inputs(&model, &shapes))?
    } else {
        if !a.shapes.shapes.is_empty() {
            crate::out::note!("crx580: note: --shape only sizes made-up inputs and the model's dims; input files keep their own shapes");
        }
        read_inputs(&model, &a.inputs, |p, i| load_input(p, i, &ImageArgs::default(), max_bytes))?
    };
    let t1 = Instant::now();
    let session = Session::new(model, &options)?;
    let load_ms = load_model_ms + t1.elapsed().as_secs_f64() * 1e3;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let kernels = session.kernels();

    let (runs, warmup) = (a.runs as usize, a.warmup as usize);
    let progress = progress_bar((1 + warmup + runs) as u64);
    let t = Instant::now();
    run_to_host(&session, &refs)?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    progress.inc(1);
    for _ in 0..warmup {
        run_to_host(&session, &refs)?;
        progress.inc(1);
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        run_to_host(&session, &refs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        progress.inc(1);
    }
    progress.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let report = Report {
        load_ms,
        cold_ms,
        times,
        warmup,
        peak_rss_mb: peak_rss_mb(),
        inputs: infos.iter().zip(&inputs).map(|(i, t)| (i.name.clone(), t.shape().to_vec())).collect(),
        device_nodes: kernels.iter().filter(|(_, _, backend)| *backend != "cpu").count(),
        total_nodes: kernels.len(),
    };
    if a.json {
        outln!("{}", json::bench(&report));
    } else {
        print_report(&a.model, &report);
    }
    if let Some(what) = &a.profile {
        print_profile(&session, &refs, runs, what == "nodes")?;
    }
    Ok(())
}

/// Runs `runs` profiled runs and prints the mean time per op type (with the kernels that ran it),
/// and per node with `per_node`. Nodes inside control-flow bodies count as their own op types and
/// are listed under the node that ran them; a body node that runs many times (a Loop's) shows its
/// total per run.
fn print_profile(session: &Session, inputs: &[&Tensor], runs: usize, per_node: bool) -> Result<()> {
    use std::collections::{BTreeMap, HashMap};
    let mut per_op: BTreeMap<String, (f64, usize, Vec<&'static str>)> = BTreeMap::new();
    // Per node, in first-run order: name, op type, kernel, depth, ms.
    let mut nodes: Vec<(String, String, &'static str, usize, f64)> = Vec::new();
    let mut node_index: HashMap<String, usize> = HashMap::new();
    for _ in 0..runs {
        let (_, times) = session.run_profiled(inputs)?;
        // Nodes are told apart by name; a model may leave names empty, and those of the top-level
        // graph are then told apart by their place among the nameless (inside a body, one that
        // runs many times stays one line per op type).
        let mut nameless = 0;
        for t in &times {
            let key = match (t.node.is_empty(), t.depth) {
                (true, 0) => {
                    nameless += 1;
                    format!("({} #{nameless})", t.op_type)
                }
                (true, _) => format!("({})", t.op_type),
                (false, _) => t.node.clone(),
            };
            let ms = t.time.as_secs_f64() * 1e3 / runs as f64;
            let e = per_op.entry(t.op_type.clone()).or_default();
            e.0 += ms;
            if !e.2.contains(&t.kernel) {
                e.2.push(t.kernel);
            }
            let i = *node_index.entry(key.clone()).or_insert_with(|| {
                e.1 += 1;
                nodes.push((key, t.op_type.clone(), t.kernel, t.depth, 0.0));
                nodes.len() - 1
            });
            nodes[i].4 += ms;
        }
    }
    let total: f64 = per_op.values().map(|v| v.0).sum();
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    outln!("profile: mean of {runs} runs on {} threads, {total:.3} ms in nodes", session.threads());
    outln!("  {:<24} {:>6} {:>10} {:>6}  kernels", "op type", "nodes", "ms", "%");
    for (op, (ms, count, kernels)) in &ops {
        outln!("  {op:<24} {count:>6} {ms:>10.3} {:>5.1}%  {}", 100.0 * ms / total.max(1e-9), kernels.join(", "));
    }
    if per_node {
        outln!("  {:<40} {:<18} {:<16} {:>10}", "node", "op type", "kernel", "ms");
        for (name, op, kernel, depth, ms) in &nodes {
            let name = format!("{}{name}", "  ".repeat(*depth));
            outln!("  {name:<40} {op:<18} {kernel:<16} {ms:>10.3}");
        }
    }
    Ok(())
}

fn print_report(model: &std::path::Path, r: &Report) {
    let inputs: Vec<String> = r
        .inputs
        .iter()
        .map(|(n, s)| format!("{n} {}", shape_string(&s.iter().map(|&d| crx580::Dim::Known(d)).collect::<Vec<_>>())))
        .collect();
    outln!("{}: inputs {}", model.display(), inputs.join(", "));
    outln!("load      {:10.3} ms  (decode, optimise, compile)", r.load_ms);
    outln!("cold run  {:10.3} ms  (the first run, not in the statistics below)", r.cold_ms);
    outln!(
        "warm runs {:10} after {} warmup: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, min {:.3} ms, max {:.3} ms",
        r.times.len(),
        r.warmup,
        r.percentile(50.0),
        r.percentile(90.0),
        r.percentile(99.0),
        r.times[0],
        r.times[r.times.len() - 1]
    );
    outln!("throughput {:9.2} inferences/s (1000 / mean {:.3} ms)", r.throughput(), r.mean());
    outln!("peak RSS  {:10.1} MB", r.peak_rss_mb);
}

/// A bar on stderr when it is a terminal; indicatif draws nothing when it is not (piped, CI).
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed} (eta {eta})") {
        bar.set_style(style);
    }
    bar
}

/// Made-up inputs of the given shapes ([`random_tensor`]).
fn random_inputs(model: &Model, shapes: &[Vec<usize>]) -> Result<Vec<Tensor>> {
    let mut rng = Uniform::new(0x2545_f491_4f6c_dd1d);
    model
        .inputs()
        .into_iter()
        .zip(shapes)
        .map(|(info, shape)| {
            if info.kind != crx580::ValueKind::Tensor {
                return Err(err!(InvalidInput, "input '{}' is a {}: give it as a file", info.name, info.kind));
            }
            let dtype = info.dtype.ok_or_else(|| err!(InvalidInput, "input '{}' has no declared dtype", info.name))?;
            random_tensor(dtype, shape, &mut rng)
        })
        .collect()
}

/// Peak resident set size of this process (VmHWM), in MB; 0 where /proc is not available.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let r = Report {
            load_ms: 0.0,
            cold_ms: 0.0,
            times: vec![1.0, 2.0, 3.0, 4.0],
            warmup: 0,
            peak_rss_mb: 0.0,
            inputs: vec![],
            device_nodes: 0,
            total_nodes: 0,
        };
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) == [2.5, 3.7, 3.97]
        assert_eq!(r.percentile(50.0), 2.5);
        assert!((r.percentile(90.0) - 3.7).abs() < 1e-12);
        assert!((r.percentile(99.0) - 3.97).abs() < 1e-12);
        assert_eq!(r.percentile(0.0), 1.0);
        assert_eq!(r.percentile(100.0), 4.0);
        assert_eq!(r.throughput(), 400.0);
    }
}
