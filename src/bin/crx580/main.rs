//! The `crx580` command line: run, info, bench, devices.

mod demo;
mod json;

use clap::{Args, Parser, Subcommand};
use crx580::ir::{Dim, Tensor};
use crx580::{bail, err, Device, LoadOptions, Model, Result, Session, SessionOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "crx580", version, about = "A lean ONNX inference runtime", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on input files; with no MODEL, run the built-in digits demo.
    Run(RunArgs),
    /// Show a model's opset, inputs, outputs, operators and parameter count.
    Info(InfoArgs),
    /// Time a model's runs (random inputs from the declared shapes unless inputs are given).
    Bench(BenchArgs),
    /// List the devices this build can run on.
    Devices,
}

#[derive(Args)]
struct DeviceArgs {
    /// Where to run: cpu, opencl or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Stop a run that takes longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_time: Option<f64>,
    #[command(flatten)]
    limits: LimitArgs,
}

impl DeviceArgs {
    fn session_options(&self) -> Result<SessionOptions> {
        let max_run_time = match self.max_time {
            None => None,
            Some(s) => Some(
                std::time::Duration::try_from_secs_f64(s)
                    .map_err(|_| err!(InvalidInput, "--max-time {s} is not a number of seconds"))?,
            ),
        };
        Ok(SessionOptions {
            device: self.device.parse::<Device>()?,
            threads: self.threads,
            max_tensor_bytes: self.limits.max_tensor_bytes()?,
            max_run_time,
        })
    }
}

#[derive(Args)]
struct LimitArgs {
    /// The largest tensor the model may make, at load or run time (bytes, or with K, M or G).
    #[arg(long, value_name = "SIZE", default_value = "4G")]
    max_memory: String,
}

impl LimitArgs {
    fn max_tensor_bytes(&self) -> Result<usize> {
        parse_size(&self.max_memory)
    }

    fn load(&self, path: &Path) -> Result<Model> {
        Model::load_with(path, &LoadOptions { max_tensor_bytes: self.max_tensor_bytes()?, ..LoadOptions::default() })
    }
}

/// `4096`, `64K`, `512M` or `4G` (powers of 1024) as bytes.
fn parse_size(s: &str) -> Result<usize> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => bail!(InvalidInput, "--max-memory '{s}': unknown unit (use K, M, G or T)"),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| err!(InvalidInput, "--max-memory '{s}' is not a positive size such as 512M or 4G"))
}

#[derive(Args)]
struct RunArgs {
    /// The .onnx model; leave out to run the built-in demo.
    model: Option<PathBuf>,
    /// Inputs as PATH or NAME=PATH (.npy, or ONNX TensorProto .pb); bare PATHs bind in input order.
    inputs: Vec<String>,
    /// Write output k as DIR/output_<k>.npy instead of printing a summary. Types numpy lacks:
    /// bfloat16 as its uint16 bits, float8/float4 as uint8 bit codes, int4/int2 as int8 values,
    /// uint4/uint2 as uint8 values.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct InfoArgs {
    /// The .onnx model.
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// The .onnx model.
    model: PathBuf,
    /// Inputs as PATH or NAME=PATH; without them, random inputs of the declared shapes.
    inputs: Vec<String>,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Fix a symbolic dim for random inputs, e.g. --dim batch=8 (repeatable; unfixed dims are 1).
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    dims: Vec<String>,
    /// Print one JSON line with the timings.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Info(a) => info(a),
        Command::Bench(a) => bench(a),
        Command::Devices => {
            crx580::backend::list_devices().iter().for_each(|d| println!("{d}"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("crx580: error: {}", e.message.replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(a: RunArgs) -> Result<()> {
    let options = a.device.session_options()?;
    let Some(model_path) = &a.model else {
        return demo::run_demo(&options);
    };
    let model = a.device.limits.load(model_path)?;
    let inputs = read_inputs(&model, &a.inputs)?;
    let session = Session::new(model, &options)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let outputs = session.run_positional(&refs)?;
    let infos = session.model().outputs();
    match &a.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| err!(Io, "cannot create {}: {e}", dir.display()))?;
            for (k, t) in outputs.iter().enumerate() {
                crx580::io::write_npy(&dir.join(format!("output_{k}.npy")), t)?;
            }
            println!("wrote {} outputs to {}", outputs.len(), dir.display());
        }
        None => {
            for (info, t) in infos.iter().zip(&outputs) {
                println!("{}: {} {:?} {}", info.name, t.dtype(), t.shape(), summarize(t));
            }
        }
    }
    Ok(())
}

/// Binds `PATH` / `NAME=PATH` arguments to the model's inputs, in model input order.
fn read_inputs(model: &Model, args: &[String]) -> Result<Vec<Tensor>> {
    let infos = model.inputs();
    let mut bound: Vec<Option<Tensor>> = vec![None; infos.len()];
    let mut next_positional = 0;
    for arg in args {
        let named = arg.split_once('=').and_then(|(n, p)| infos.iter().position(|i| i.name == n).map(|k| (k, p)));
        let (k, path) = match named {
            Some((k, p)) => (k, p),
            None => {
                while next_positional < infos.len() && bound[next_positional].is_some() {
                    next_positional += 1;
                }
                if next_positional >= infos.len() {
                    bail!(InvalidInput, "too many inputs: the model takes {} ('{arg}' is extra)", infos.len());
                }
                (next_positional, arg.as_str())
            }
        };
        if bound[k].is_some() {
            bail!(InvalidInput, "input '{}' is given twice", infos[k].name);
        }
        let (t, _) = crx580::io::read_tensor_file(Path::new(path))?;
        bound[k] = Some(t);
    }
    bound
        .into_iter()
        .zip(&infos)
        .map(|(t, info)| t.ok_or_else(|| err!(InvalidInput, "input '{}' is missing", info.name)))
        .collect()
}

/// `min=.. max=.. mean=..` plus the first values, for a quick look at an output.
fn summarize(t: &Tensor) -> String {
    let Ok(v) = t.to_f64_vec() else { return String::new() };
    if v.is_empty() {
        return "(empty)".into();
    }
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.4}")).collect();
    let more = if v.len() > 6 { ", ..." } else { "" };
    format!("min={min:.4} max={max:.4} mean={mean:.4} [{}{more}]", head.join(", "))
}

fn info(a: InfoArgs) -> Result<()> {
    let model = a.limits.load(&a.model)?;
    let imp = model.imported();
    let params = imp.graph.parameter_count();
    let hist = imp.graph.op_histogram();
    let (inputs, outputs) = (model.inputs(), model.outputs());
    if a.json {
        println!("{}", json::info(imp, &inputs, &outputs, &hist, params));
        return Ok(());
    }
    println!("model: {}", a.model.display());
    println!("ir_version: {}  producer: {}", imp.ir_version, if imp.producer.is_empty() { "?" } else { &imp.producer });
    let opsets: Vec<String> =
        imp.opsets.iter().map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
    println!("opsets: {}", opsets.join(", "));
    for (title, list) in [("inputs", &inputs), ("outputs", &outputs)] {
        println!("{title}:");
        for i in list {
            println!("  {}: {}{}", i.name, i.dtype.map_or("?".into(), |d| d.to_string()), shape_string(&i.shape));
        }
    }
    println!("operators ({} nodes):", imp.graph.nodes.len());
    for (op, n) in &hist {
        println!("  {op:<24} {n}");
    }
    println!("parameters: {params}");
    Ok(())
}

fn shape_string(shape: &Option<Vec<Dim>>) -> String {
    match shape {
        Some(s) => format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        None => "[unknown rank]".into(),
    }
}

fn bench(a: BenchArgs) -> Result<()> {
    let mut dims = HashMap::new();
    for d in &a.dims {
        let (name, value) = d.split_once('=').ok_or_else(|| err!(InvalidInput, "--dim '{d}' is not NAME=VALUE"))?;
        let value: usize = value.parse().map_err(|_| err!(InvalidInput, "--dim '{d}': '{value}' is not a size"))?;
        dims.insert(name.to_string(), value);
    }
    let options = a.device.session_options()?;
    let t0 = Instant::now();
    let mut model = a.device.limits.load(&a.model)?;
    if !dims.is_empty() {
        model = model.with_dims(&dims)?;
    }
    let inputs = if a.inputs.is_empty() { random_inputs(&model, &dims)? } else { read_inputs(&model, &a.inputs)? };
    let session = Session::new(model, &options)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    for _ in 0..a.warmup {
        session.run_positional(&refs)?;
    }
    let mut times = Vec::with_capacity(a.runs);
    for _ in 0..a.runs.max(1) {
        let t = Instant::now();
        session.run_positional(&refs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (median, p90, min) = (pct(0.5), pct(0.9), times[0]);
    let rss = peak_rss_mb();
    if a.json {
        println!(
            "{{\"median_ms\":{median:.4},\"p90_ms\":{p90:.4},\"min_ms\":{min:.4},\"runs\":{},\"load_ms\":{load_ms:.3},\"peak_rss_mb\":{rss:.1}}}",
            times.len()
        );
    } else {
        println!(
            "{}: {} runs, median {median:.3} ms, p90 {p90:.3} ms, min {min:.3} ms",
            a.model.display(),
            times.len()
        );
        println!("load {load_ms:.1} ms, peak RSS {rss:.1} MB");
    }
    Ok(())
}

/// Random inputs of the declared shapes: floats uniform in [0, 1), integers 0, bools false (zeros are
/// valid indices and sizes for any model). Symbolic dims not fixed with --dim are 1.
fn random_inputs(model: &Model, dims: &HashMap<String, usize>) -> Result<Vec<Tensor>> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    model
        .inputs()
        .into_iter()
        .map(|info| {
            let dtype = info.dtype.ok_or_else(|| err!(InvalidInput, "input '{}' has no declared dtype", info.name))?;
            let shape = info.shape.ok_or_else(|| err!(InvalidInput, "input '{}' has no declared shape", info.name))?;
            let shape: Vec<usize> = shape
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    Dim::Symbol(s) => dims.get(s).copied().unwrap_or_else(|| {
                        log::warn!("input '{}': symbolic dim '{s}' set to 1 (use --dim {s}=N)", info.name);
                        1
                    }),
                    Dim::Unknown => 1,
                })
                .collect();
            let zeros = Tensor::zeros(dtype, shape.clone())?;
            if !dtype.is_float() {
                return Ok(zeros);
            }
            let v: Vec<f64> = (0..zeros.len()).map(|_| next()).collect();
            Tensor::new(shape, v)?.cast_numeric(dtype)
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
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        for bad in ["", "0", "G", "4X", "-1", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
