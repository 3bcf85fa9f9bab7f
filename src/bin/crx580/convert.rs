//! `crx580 convert`: rewrites a model into float16 or dynamic int8 (or re-encodes it unchanged
//! with `--to copy`), checks that crx580 loads the result, writes it, and with `--report` measures
//! what the conversion cost: size, latency, and output agreement on the given or generated inputs.

use crate::out::outln;
use crate::random::{random_tensor, Uniform};
use crate::shapes::{concrete_shapes, ShapeArgs};
use crate::LimitArgs;
use clap::{Args, ValueEnum};
use crx580::convert::accuracy::{compare, latency_ms};
use crx580::convert::dynamic::{to_int8_dynamic, DynamicOptions};
use crx580::convert::fp16::{to_fp16, Fp16Options};
use crx580::convert::{edit::refuse_external_data, value_types, Notes};
use crx580::onnx::model::decode_model;
use crx580::onnx::write::encode_model;
use crx580::{bail, err, Dim, IoInfo, Model, Result, Session, SessionOptions, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Float16 weights and compute, float32 where float16 is fragile; inputs and outputs stay float32.
    Fp16,
    /// int8 MatMul/Gemm with activations quantized at run time (onnxruntime's quantize_dynamic form).
    Int8Dynamic,
    /// No change: decode and re-encode (checks the writer).
    Copy,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The .onnx model to convert.
    input: PathBuf,
    /// Where to write the converted model.
    output: PathBuf,
    /// What to convert to.
    #[arg(long, value_enum)]
    to: Target,
    /// Node names or op types to leave in float32, e.g. --keep-float Softmax,/head/Conv.
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    keep_float: Vec<String>,
    /// int8: one weight scale per output channel instead of one per tensor.
    #[arg(long)]
    per_channel: bool,
    /// Measure the conversion: file sizes, crx580 latency of both models, and output agreement.
    #[arg(long)]
    report: bool,
    /// Inputs for --report: .npy or .pb files, or directories of them. A single-input model takes
    /// each file as one input set; a model with several inputs takes a directory per set holding
    /// NAME.npy for each input. Without these, --report makes --samples sets of random inputs.
    #[arg(long = "data", value_name = "PATH")]
    data: Vec<PathBuf>,
    /// How many random input sets --report makes when no --data is given.
    #[arg(long, default_value_t = 8)]
    samples: usize,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    let bytes = std::fs::read(&a.input).map_err(|e| err!(Io, "cannot read {}: {e}", a.input.display()))?;
    let mut model = decode_model(&bytes).map_err(|e| e.context(a.input.display()))?;
    let graph =
        model.graph.as_ref().ok_or_else(|| err!(InvalidModel, "{}: the model has no graph", a.input.display()))?;
    refuse_external_data(graph)?;
    let nodes = graph.node.len() as u64;
    let types = value_types(&bytes).map_err(|e| e.context(a.input.display()))?;
    let bar = progress_bar(nodes, "nodes");
    let mut tick = || bar.inc(1);
    let notes = match a.to {
        Target::Fp16 => to_fp16(&mut model, &types, &Fp16Options { keep_float: a.keep_float.clone() }, &mut tick)?,
        Target::Int8Dynamic => {
            let opts = DynamicOptions { per_channel: a.per_channel, keep_float: a.keep_float.clone() };
            to_int8_dynamic(&mut model, &types, &opts, &mut tick)?
        }
        Target::Copy => Notes::default(),
    };
    bar.finish_and_clear();
    let out = encode_model(&model);
    // Never write a model crx580 cannot load.
    Model::from_bytes(&out)
        .map_err(|e| err!(Runtime, "the converted model does not load (a bug; please report it): {}", e.message))?;
    std::fs::write(&a.output, &out).map_err(|e| err!(Io, "cannot write {}: {e}", a.output.display()))?;
    outln!("{}: {} nodes converted, {} -> {} bytes", a.output.display(), notes.converted, bytes.len(), out.len());
    for line in notes.summary(20) {
        outln!("  {line}");
    }
    if a.report {
        report(&a, &bytes, &out)?;
    }
    Ok(())
}

fn report(a: &ConvertArgs, original: &[u8], converted: &[u8]) -> Result<()> {
    let options = SessionOptions { max_tensor_bytes: a.limits.max_tensor_bytes()?, ..SessionOptions::default() };
    let model = a.shapes.apply(a.limits.load(&a.input)?)?;
    let sets = if a.data.is_empty() {
        generated_sets(&model.inputs(), &concrete_shapes(&model)?, a.samples)?
    } else {
        file_sets(&model.inputs(), &a.data)?
    };
    let reference = Session::new(model, &options)?;
    let candidate = Session::new(Model::from_bytes(converted)?, &options)?;
    let bar = progress_bar(sets.len() as u64, "input sets");
    let agreements = compare(&reference, &candidate, &sets, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    let (before, after) = (latency_ms(&reference, &sets[0], 5)?, latency_ms(&candidate, &sets[0], 5)?);
    outln!(
        "size      {:>12} -> {:>12} bytes ({:.1}%)",
        original.len(),
        converted.len(),
        100.0 * converted.len() as f64 / original.len() as f64
    );
    outln!("latency   {before:>12.3} -> {after:>12.3} ms (crx580, median of 5, first input set)");
    outln!("agreement over {} input sets:", sets.len());
    for g in agreements {
        let top1 =
            g.top1.map(|(k, n)| format!(" top-1 {k}/{n} ({:.2}%)", 100.0 * k as f64 / n as f64)).unwrap_or_default();
        outln!(
            "  {}: max abs {:.3e}, mean abs {:.3e}, max rel {:.3e}, cosine {:.6}{top1}",
            g.output,
            g.max_abs,
            g.mean_abs,
            g.max_rel,
            g.cosine
        );
    }
    Ok(())
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}, {{elapsed}}")) {
        bar.set_style(style);
    }
    bar
}

/// `count` sets of random inputs: floats uniform in [0, 1), other types zero, each set from its own
/// seed so that the sets differ.
fn generated_sets(infos: &[IoInfo], shapes: &[Vec<usize>], count: usize) -> Result<Vec<Vec<(String, Tensor)>>> {
    let mut rng = Uniform::new(0x9e37_79b9_7f4a_7c15);
    (0..count.max(1))
        .map(|_| {
            infos
                .iter()
                .zip(shapes)
                .map(|(info, shape)| {
                    let dtype =
                        info.dtype.ok_or_else(|| err!(InvalidInput, "input '{}' has no declared dtype", info.name))?;
                    Ok((info.name.clone(), random_tensor(dtype, shape, &mut rng)?))
                })
                .collect()
        })
        .collect()
}

/// Input sets from files (see `--data`), each checked against the model's declared inputs.
fn file_sets(infos: &[IoInfo], paths: &[PathBuf]) -> Result<Vec<Vec<(String, Tensor)>>> {
    let mut sets = vec![];
    if let [info] = infos {
        for file in tensor_files(paths)? {
            let t = crx580::io::read_tensor_file(&file)?.0;
            for t in split_batch(t, info) {
                sets.push(vec![(info.name.clone(), fits(t, info, &file)?)]);
            }
        }
    } else {
        for dir in paths {
            let mut set = vec![];
            for info in infos {
                let file = dir.join(format!("{}.npy", info.name));
                if !file.exists() {
                    bail!(
                        InvalidInput,
                        "{}: no {}.npy for input '{}' (a model with several inputs takes a directory per input set)",
                        dir.display(),
                        info.name,
                        info.name
                    );
                }
                set.push((info.name.clone(), fits(crx580::io::read_tensor_file(&file)?.0, info, &file)?));
            }
            sets.push(set);
        }
    }
    if sets.is_empty() {
        bail!(
            InvalidInput,
            "no .npy or .pb files in {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(sets)
}

/// Files given, and the .npy/.pb files of directories given, sorted by name.
fn tensor_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| err!(Io, "cannot read {}: {e}", p.display()))?;
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "npy" || x == "pb"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// A file holding several samples for an input of fixed batch 1 gives one set per sample.
fn split_batch(t: Tensor, info: &IoInfo) -> Vec<Tensor> {
    let Some(shape) = &info.shape else { return vec![t] };
    let n = t.shape().first().copied().unwrap_or(1);
    if shape.first() != Some(&Dim::Known(1)) || t.rank() != shape.len() || n <= 1 {
        return vec![t];
    }
    let Ok(values) = t.to_f64_vec() else { return vec![t] };
    let row = values.len() / n;
    let mut one = t.shape().to_vec();
    one[0] = 1;
    (0..n)
        .filter_map(|i| {
            let v: Vec<f32> = values[i * row..(i + 1) * row].iter().map(|&x| x as f32).collect();
            Tensor::new(one.clone(), v).and_then(|x| x.cast_numeric(t.dtype())).ok()
        })
        .collect()
}

/// Checks a tensor's dtype and shape against the input it is for.
fn fits(t: Tensor, info: &IoInfo, file: &Path) -> Result<Tensor> {
    if let Some(d) = info.dtype {
        if t.dtype() != d {
            bail!(
                InvalidInput,
                "{}: {:?} data for input '{}', which takes {:?}",
                file.display(),
                t.dtype(),
                info.name,
                d
            );
        }
    }
    if let Some(shape) = &info.shape {
        let ok = shape.len() == t.rank()
            && shape.iter().zip(t.shape()).all(|(d, &n)| !matches!(d, Dim::Known(k) if *k != n));
        if !ok {
            let want: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            bail!(
                InvalidInput,
                "{}: shape {:?} does not fit input '{}' of shape [{}]",
                file.display(),
                t.shape(),
                info.name,
                want.join(", ")
            );
        }
    }
    Ok(t)
}
