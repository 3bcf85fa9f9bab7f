//! The `crx580` command line: run, info, bench, convert, devices, and its own completions and man page.

mod bench;
mod convert;
mod demo;
mod docs;
mod flops;
mod image;
mod info;
mod input_sets;
mod json;
mod out;
mod random;
mod run;
mod serve;
mod shapes;
#[cfg(feature = "opencl")]
mod tune;

use clap::{Args, Parser, Subcommand};
use crx580::{bail, err, Device, IoInfo, LoadOptions, Model, Result, SessionOptions, Tensor};
use out::{note, outln};

use std::path::Path;

#[derive(Parser)]
#[command(name = "crx580", version, about = "A lean ONNX inference runtime", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on input files or images; with no MODEL, run the built-in digits demo.
    Run(run::RunArgs),
    /// Show a model's opsets, inputs, outputs, operators, FLOPs, parameters and devices.
    Info(info::InfoArgs),
    /// Time a model: load, the cold first run, warm percentiles, throughput, peak memory.
    Bench(bench::BenchArgs),
    /// Serve models over HTTP: the Open Inference Protocol v2 (KServe, Triton clients) and simple
    /// JSON endpoints, with metrics, an OpenAPI document and a status page.
    Serve(serve::ServeArgs),
    /// Convert a model to float16 or int8 (dynamic, or static QDQ calibrated on your data), or prune
    /// it, with a measured accuracy report.
    Convert(convert::ConvertArgs),
    /// List the devices this build can run on.
    Devices,
    /// Search the OpenCL GEMM parameters on this machine's OpenCL device for a model's Conv,
    /// MatMul and Gemm shapes (or --gemm's standard set), checking every candidate's results, and
    /// keep the fastest in the device's tune file, which OpenCL sessions then use.
    #[cfg(feature = "opencl")]
    Tune(tune::TuneArgs),
    /// Print a shell completion script, e.g. `crx580 completions bash > /etc/bash_completion.d/crx580`.
    Completions(docs::CompletionArgs),
    /// Print the man page (roff), or write one page per subcommand into a directory.
    Manpage(docs::ManpageArgs),
}

#[derive(Args)]
#[command(next_help_heading = "Device")]
pub struct DeviceArgs {
    /// Where to run: cpu, opencl or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Idle worker threads sleep at once instead of spinning for 50 us (less CPU burned when
    /// many processes share few cores; node hand-offs get slower).
    #[arg(long)]
    no_spin: bool,
    /// Store tensors on the OpenCL device as float16 (computed in f32; the CPU ignores it).
    #[arg(long)]
    fp16_storage: bool,
    /// Run float16 nodes as written, each result rounded to float16 (slow reference kernels on
    /// the CPU), instead of computing float16 regions in f32 behind Casts.
    #[arg(long)]
    f16_as_written: bool,
    /// Where the OpenCL backend caches compiled programs (default: CRX580_CACHE_DIR, else
    /// ~/.cache/crx580/opencl).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<std::path::PathBuf>,
    // max_time comes after the flattened limits so that clap lists it under their heading.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Stop a run that takes longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_time: Option<f64>,
}

impl DeviceArgs {
    pub fn session_options(&self) -> Result<SessionOptions> {
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
            spin: !self.no_spin,
            device_options: crx580::backend::DeviceOptions {
                fp16_storage: self.fp16_storage,
                f16_as_written: self.f16_as_written,
                cache_dir: self.cache_dir.clone(),
            },
        })
    }
}

#[derive(Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// The largest tensor the model may make, at load or run time (bytes, or with K, M or G).
    #[arg(long, value_name = "SIZE", default_value = "4G")]
    max_memory: String,
}

impl LimitArgs {
    pub fn max_tensor_bytes(&self) -> Result<usize> {
        parse_size(&self.max_memory)
    }

    pub fn load(&self, path: &Path) -> Result<Model> {
        Model::load_with(path, &LoadOptions { max_tensor_bytes: self.max_tensor_bytes()?, ..LoadOptions::default() })
    }
}

/// `4096`, `64K`, `512M` or `4G` (powers of 1024) as bytes.
pub fn parse_size(s: &str) -> Result<usize> {
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

fn main() {
    // A panic is a bug; say so in one line instead of a backtrace (RUST_BACKTRACE=1 still shows it).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default_hook(info);
        } else {
            note!("crx580: internal error (a bug; please report it): {}", info.to_string().replace('\n', " "));
        }
    }));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Info(a) => info::info(a),
        Command::Bench(a) => bench::bench(a),
        Command::Serve(a) => serve::serve(a),
        Command::Convert(a) => convert::convert(a),
        Command::Devices => {
            crx580::backend::list_devices().iter().for_each(|d| outln!("{d}"));
            Ok(())
        }
        #[cfg(feature = "opencl")]
        Command::Tune(a) => tune::tune(a),
        Command::Completions(a) => docs::completions(a),
        Command::Manpage(a) => docs::manpage(a),
    };
    out::flush();
    if let Err(e) = result {
        note!("crx580: error: {}", e.message.replace('\n', " "));
        std::process::exit(1);
    }
}

/// Binds `PATH` / `NAME=PATH` arguments to the model's inputs, in model input order; `load` reads
/// one file for one input (whose shape includes any `--shape` given for it).
pub fn read_inputs(
    model: &Model,
    args: &[String],
    load: impl Fn(&Path, &IoInfo) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
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
        bound[k] = Some(load(Path::new(path), &infos[k])?);
    }
    bound
        .into_iter()
        .zip(&infos)
        .map(|(t, info)| t.ok_or_else(|| err!(InvalidInput, "input '{}' is missing", info.name)))
        .collect()
}

/// A `.npy` or `.pb` tensor file, or a PNG or JPEG image made into a tensor for `input`, under the
/// `--max-memory` limit.
pub fn load_input(path: &Path, input: &IoInfo, images: &image::ImageArgs, max_bytes: usize) -> Result<Tensor> {
    crx580::ir::limits::with_max_tensor_bytes(max_bytes, || {
        if image::is_image(&path.to_string_lossy()) {
            image::image_tensor(path, input, images, max_bytes)
        } else {
            Ok(crx580::io::read_tensor_file(path)?.0)
        }
    })
}

/// `min=.. max=.. mean=..` plus the first values, for a quick look at an output.
pub fn summarize(t: &Tensor) -> String {
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
