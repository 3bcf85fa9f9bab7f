//! `crx580 convert`: rewrites a model into float16 (with float32 islands chosen on the user's data
//! when given), dynamic int8 or static (QDQ) int8 calibrated on the user's data (or re-encodes it unchanged with `--to copy`), checks that crx580 loads the
//! result, writes it, and with `--report` measures what the conversion cost: size, latency, and
//! output agreement on the given, calibration or generated inputs.

use crate::input_sets::{file_sets, generated_sets, InputSet};
use crate::out::outln;
use crate::shapes::{concrete_shapes, ShapeArgs};
use crate::LimitArgs;
use clap::{Args, ValueEnum};
use crx580::convert::accuracy::{compare, latency_ms};
use crx580::convert::calibrate::{calibrate, Method};
use crx580::convert::dynamic::{to_int8_dynamic, DynamicOptions};
use crx580::convert::external::{inline_external_data, move_to_external, MIN_EXTERNAL_BYTES, PROTOBUF_LIMIT};
use crx580::convert::fp16::{to_fp16, Fp16Options};
use crx580::convert::fp16_auto::{choose_float_islands, AutoOptions};
use crx580::convert::prune::{prune, Pattern};
use crx580::convert::qdq::{tensors_to_calibrate, to_int8_static, ActivationType, StaticOptions};
use crx580::convert::{value_types, Notes};
use crx580::onnx::model::decode_model;
use crx580::onnx::write::encode_model;
use crx580::{bail, err, Model, Result, Session, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Float16 weights and compute, float32 where float16 is fragile; inputs and outputs stay float32.
    Fp16,
    /// int8 MatMul/Gemm with activations quantized at run time (onnxruntime's quantize_dynamic form).
    Int8Dynamic,
    /// int8 QDQ (QuantizeLinear/DequantizeLinear around Conv, MatMul, Gemm, Add, pools and
    /// activations) with ranges calibrated on --calibrate data (onnxruntime's quantize_static form).
    Int8Static,
    /// No change: decode and re-encode (checks the writer).
    Copy,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CalibrationMethod {
    /// The smallest and largest value seen.
    Minmax,
    /// Cut (100 - --percentile)/2 percent of the values off each end.
    Percentile,
    /// The symmetric range of least KL divergence (TensorRT's method).
    Entropy,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrunePattern {
    /// The smallest weights of each layer, wherever they are.
    Unstructured,
    /// 2 of every 4 consecutive weights along the input dimension (always 50%).
    #[value(name = "2:4")]
    TwoOfFour,
    /// Whole output channels, those of smallest L2 norm.
    Channel,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActType {
    Int8,
    Uint8,
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
    /// Node names or op types to leave in float32 (and unpruned), e.g. --keep-float Softmax,/head/Conv.
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    keep_float: Vec<String>,
    /// int8: one weight scale per output channel instead of one per tensor (int8-static moves the
    /// model to opset 13 for this where that is safe, and says so where not).
    #[arg(long)]
    per_channel: bool,
    /// Calibration batches: .npy/.pb files or directories of them, laid out as --data is (one file
    /// per batch for a one-input model; a directory per batch holding NAME.npy per input for
    /// several inputs, or a directory of such directories). int8-static takes its ranges from
    /// them; fp16 chooses its float32 islands on them (nodes whose values leave float16's range,
    /// and nodes whose float16 conversion takes the outputs past --tolerance).
    #[arg(long, value_name = "DIR_OR_NPY", num_args = 1..)]
    calibrate: Vec<PathBuf>,
    /// fp16: graph inputs and outputs of type float32 become float16 too (callers then feed and
    /// read float16; onnxconverter-common's default). Without it they keep their types.
    #[arg(long)]
    fp16_io: bool,
    /// fp16 with --calibrate: the largest output error accepted, as max |error| over the float
    /// model's largest |output|, per output, with float16 computed as written and widened; the
    /// search aims at 3/4 of it on the calibration batches, as unseen inputs err more.
    #[arg(long, default_value_t = 1e-2)]
    tolerance: f64,
    /// int8-static: how a tensor's range is chosen from its calibration values.
    #[arg(long, value_enum, default_value = "minmax")]
    method: CalibrationMethod,
    /// int8-static with --method percentile: the percentage of values kept inside the range.
    #[arg(long, default_value_t = 99.999)]
    percentile: f64,
    /// int8-static: the type of quantized activations (int8 is onnxruntime's default).
    #[arg(long, value_enum, default_value = "int8")]
    activation_type: ActType,
    /// Prune Conv/ConvTranspose/Gemm/MatMul weights by magnitude to this sparsity (0..1) before
    /// converting, printing each layer's sparsity. The model stays dense (zeros stored); crx580's
    /// CPU backend has no sparse kernels, so this alone does not make it faster.
    #[arg(long, value_name = "SPARSITY")]
    prune: Option<f64>,
    /// How --prune chooses the weights to zero.
    #[arg(long, value_enum, default_value = "unstructured")]
    prune_pattern: PrunePattern,
    /// Write initializers of at least 1 KiB to OUTPUT.data next to the model (ONNX external data);
    /// automatic when the model would pass protobuf's 2 GB limit. An input model's own external
    /// data is read from beside it.
    #[arg(long)]
    external_data: bool,
    /// Measure the conversion: file sizes, crx580 latency of both models, and output agreement.
    #[arg(long)]
    report: bool,
    /// Inputs for --report: .npy or .pb files, or directories of them. A single-input model takes
    /// each file as one input set; a model with several inputs takes a directory per set holding
    /// NAME.npy for each input. Without these, --report uses the --calibrate batches, or makes
    /// --samples sets of random inputs.
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

/// The directory a model file's external data is relative to.
fn model_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    let file_bytes = std::fs::read(&a.input).map_err(|e| err!(Io, "cannot read {}: {e}", a.input.display()))?;
    let mut model = decode_model(&file_bytes).map_err(|e| e.context(a.input.display()))?;
    // External initializers are read in first: calibration and accuracy runs load from bytes.
    let inlined = inline_external_data(&mut model, model_dir(&a.input)).map_err(|e| e.context(a.input.display()))?;
    let inlined_bytes = (inlined > 0).then(|| encode_model(&model));
    let bytes: &[u8] = inlined_bytes.as_deref().unwrap_or(&file_bytes);
    let graph =
        model.graph.as_ref().ok_or_else(|| err!(InvalidModel, "{}: the model has no graph", a.input.display()))?;
    let nodes = graph.node.len() as u64;
    let types = value_types(bytes).map_err(|e| e.context(a.input.display()))?;
    // Pruning comes first, so that calibration sees the pruned weights.
    let pruned_bytes = match a.prune {
        Some(sparsity) => {
            let pattern = match a.prune_pattern {
                PrunePattern::Unstructured => Pattern::Unstructured,
                PrunePattern::TwoOfFour => Pattern::TwoOfFour,
                PrunePattern::Channel => Pattern::Channel,
            };
            let layers = prune(&mut model, sparsity, pattern, &a.keep_float)?;
            let (mut zeros, mut total) = (0, 0);
            for l in &layers {
                outln!(
                    "pruned {} ({}): {:.1}% zeros ({:.1}% before), {} weights",
                    l.node,
                    l.weight,
                    100.0 * l.zeros_after as f64 / l.elements as f64,
                    100.0 * l.zeros_before as f64 / l.elements as f64,
                    l.elements
                );
                (zeros, total) = (zeros + l.zeros_after, total + l.elements);
            }
            outln!(
                "pruned {} layers: {:.1}% of their {total} weights are zero",
                layers.len(),
                100.0 * zeros as f64 / total.max(1) as f64
            );
            Some(encode_model(&model))
        }
        None => None,
    };
    let model_bytes = pruned_bytes.as_deref().unwrap_or(bytes);
    if !matches!(a.to, Target::Int8Static | Target::Fp16) && !a.calibrate.is_empty() {
        bail!(InvalidInput, "--calibrate is for --to int8-static and --to fp16");
    }
    let calibration = match a.to {
        Target::Int8Static => calibration_sets(&a)?,
        Target::Fp16 if !a.calibrate.is_empty() => calibration_sets(&a)?,
        _ => vec![],
    };
    let session_options =
        SessionOptions { max_tensor_bytes: a.limits.max_tensor_bytes()?, ..SessionOptions::default() };
    let static_opts = StaticOptions {
        per_channel: a.per_channel,
        activation_type: match a.activation_type {
            ActType::Int8 => ActivationType::Int8,
            ActType::Uint8 => ActivationType::Uint8,
        },
        keep_float: a.keep_float.clone(),
    };
    let ranges = if a.to == Target::Int8Static {
        let tensors = tensors_to_calibrate(&model, &types, &static_opts)?;
        let method = match a.method {
            CalibrationMethod::Minmax => Method::MinMax,
            CalibrationMethod::Percentile if a.percentile > 0.0 && a.percentile <= 100.0 => {
                Method::Percentile(a.percentile)
            }
            CalibrationMethod::Percentile => bail!(InvalidInput, "--percentile {} is not in (0, 100]", a.percentile),
            CalibrationMethod::Entropy => Method::Entropy,
        };
        let runs = calibration.len() * if method == Method::MinMax { 1 } else { 2 };
        let bar = progress_bar(runs as u64, "calibration runs");
        let r = calibrate(model_bytes, &tensors, &calibration, method, &session_options, &mut || bar.inc(1))?;
        bar.finish_and_clear();
        r
    } else {
        Default::default()
    };
    if a.fp16_io && a.to != Target::Fp16 {
        bail!(InvalidInput, "--fp16-io is for --to fp16");
    }
    let mut fp16_options = Fp16Options { keep_float: a.keep_float.clone(), ..Fp16Options::default() };
    if a.to == Target::Fp16 && !calibration.is_empty() {
        let auto = AutoOptions { tolerance: a.tolerance, ..AutoOptions::default() };
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {pos} runs (calibration batches, then converted models over them), {elapsed}",
        ) {
            bar.set_style(style);
        }
        let choice = choose_float_islands(
            model_bytes,
            &types,
            &fp16_options,
            &calibration,
            &auto,
            &session_options,
            &mut || bar.inc(1),
        )?;
        bar.finish_and_clear();
        outln!(
            "fp16 auto: {} float32 islands from the {} calibration batches ({} by value range, {} by measurement, {} \
             converted models run{}); relative output error {:.3e} with the default rules alone, {:.3e} with the \
             islands (float16 as written {:.3e}, widened {:.3e}; tolerance {:.0e}, searched for {:.2e})",
            choice.by_range + choice.by_measurement,
            calibration.len(),
            choice.by_range,
            choice.by_measurement,
            choice.evaluations,
            if choice.budget_ran_out { ", budget ran out" } else { "" },
            choice.error_default,
            choice.error,
            choice.scored.as_written,
            choice.scored.widened,
            a.tolerance,
            a.tolerance * auto.headroom
        );
        if choice.diffuse {
            outln!(
                "fp16 auto: the tolerance is not met: {} islands in a row did not halve the error, which is \
                 float16 rounding spread over the graph; kept the islands that helped (raise --tolerance, or keep \
                 the model float32)",
                crx580::convert::fp16_auto::STALL_ISLANDS
            );
        }
        fp16_options.float_nodes = choice.float_nodes;
    }
    // After the islands are chosen: the choice compares runs on the caller's float32 inputs.
    fp16_options.half_io = a.fp16_io;
    let bar = progress_bar(nodes, "nodes");
    let mut tick = || bar.inc(1);
    let notes = match a.to {
        Target::Fp16 => to_fp16(&mut model, &types, &fp16_options, &mut tick)?,
        Target::Int8Dynamic => {
            let opts = DynamicOptions { per_channel: a.per_channel, keep_float: a.keep_float.clone() };
            to_int8_dynamic(&mut model, &types, &opts, &mut tick)?
        }
        Target::Int8Static => to_int8_static(&mut model, &types, &ranges, &static_opts, &mut tick)?,
        Target::Copy => Notes::default(),
    };
    bar.finish_and_clear();
    // `whole`: the model with every initializer inside, which --report loads from memory.
    let whole = encode_model(&model);
    let mut out = None;
    if a.external_data || whole.len() > PROTOBUF_LIMIT {
        let name = a.output.file_name().map(|n| format!("{}.data", n.to_string_lossy())).unwrap_or("model.data".into());
        let side = move_to_external(&mut model, &name, MIN_EXTERNAL_BYTES)?;
        if side.is_empty() {
            outln!("no initializer of {MIN_EXTERNAL_BYTES} bytes or more: the model stays one file");
        } else {
            out = Some(encode_model(&model));
            let side_path = model_dir(&a.output).join(&name);
            std::fs::write(&side_path, &side).map_err(|e| err!(Io, "cannot write {}: {e}", side_path.display()))?;
            outln!("{}: {} bytes of initializers (external data)", side_path.display(), side.len());
        }
    }
    let out = out.as_deref().unwrap_or(&whole);
    // Never write a model crx580 cannot load.
    Model::from_bytes_with_dir(out, model_dir(&a.output))
        .map_err(|e| err!(Runtime, "the converted model does not load (a bug; please report it): {}", e.message))?;
    std::fs::write(&a.output, out).map_err(|e| err!(Io, "cannot write {}: {e}", a.output.display()))?;
    outln!("{}: {} nodes converted, {} -> {} bytes", a.output.display(), notes.converted, bytes.len(), out.len());
    for line in notes.summary(20) {
        outln!("  {line}");
    }
    if a.report {
        report(&a, bytes, &whole, calibration)?;
    }
    Ok(())
}

/// The --calibrate batches, checked against the model's inputs (with --shape applied).
fn calibration_sets(a: &ConvertArgs) -> Result<Vec<InputSet>> {
    if a.calibrate.is_empty() {
        bail!(
            InvalidInput,
            "--to int8-static needs calibration data: --calibrate DIR_OR_NPY... (.npy batches of real inputs; \
             see `crx580 convert --help`)"
        );
    }
    let model = a.shapes.apply(a.limits.load(&a.input)?)?;
    file_sets(&model.inputs(), &a.calibrate)
}

fn report(a: &ConvertArgs, original: &[u8], converted: &[u8], calibration: Vec<InputSet>) -> Result<()> {
    let options = SessionOptions { max_tensor_bytes: a.limits.max_tensor_bytes()?, ..SessionOptions::default() };
    let model = a.shapes.apply(a.limits.load(&a.input)?)?;
    let (sets, source) = if !a.data.is_empty() {
        (file_sets(&model.inputs(), &a.data)?, "--data")
    } else if !calibration.is_empty() {
        (calibration, "the calibration batches; --data gives held-out ones")
    } else {
        (generated_sets(&model.inputs(), &concrete_shapes(&model)?, a.samples)?, "random inputs")
    };
    let reference = Session::new(model, &options)?;
    let candidate = Session::new(Model::from_bytes(converted)?, &options)?;
    // The converted model's inputs may be float16 (--fp16-io): each set cast to its types.
    let candidate_sets = sets
        .iter()
        .map(|set| {
            set.iter()
                .zip(candidate.model().inputs())
                .map(|((name, t), info)| match info.dtype {
                    Some(d) if d != t.dtype() => Ok((name.clone(), t.cast_numeric(d)?)),
                    _ => Ok((name.clone(), t.clone())),
                })
                .collect::<Result<InputSet>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let bar = progress_bar(sets.len() as u64, "input sets");
    let agreements = compare(&reference, &candidate, &sets, &candidate_sets, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    let (before, after) = (latency_ms(&reference, &sets[0], 5)?, latency_ms(&candidate, &candidate_sets[0], 5)?);
    outln!(
        "size      {:>12} -> {:>12} bytes ({:.1}%)",
        original.len(),
        converted.len(),
        100.0 * converted.len() as f64 / original.len() as f64
    );
    outln!("latency   {before:>12.3} -> {after:>12.3} ms (crx580, median of 5, first input set)");
    outln!("agreement over {} input sets ({source}):", sets.len());
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
