//! `crx580 info`: what a model is (opsets, inputs and outputs with their kinds and shapes), what it
//! holds (operators, parameters by dtype), what a run costs (FLOPs) and where it would run.

use crate::flops::{self, OpFlops};
use crate::out::outln;
use crate::shapes::{shape_string, ShapeArgs};
use crate::{json, LimitArgs};
use clap::Args;
use crx580::backend::backends_for;
use crx580::ir::attr::Attr;
use crx580::ir::Graph;
use crx580::{DType, Device, IoInfo, Model, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// The .onnx model.
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Shapes for the FLOPs estimate and the shapes shown.
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Parameters (constants the graph uses) of one dtype.
pub struct ParamGroup {
    pub dtype: DType,
    pub count: u64,
    pub bytes: u64,
}

/// How a device would run the model: the op types it takes, and those it leaves to the CPU.
pub struct DevicePlan {
    pub device: &'static str,
    /// `Err(reason)` when this build or machine cannot use the device.
    pub available: std::result::Result<(), String>,
    pub nodes: usize,
    pub runs: Vec<String>,
    pub leaves: Vec<String>,
}

pub struct Summary {
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    pub ops: Vec<(String, usize)>,
    pub params: Vec<ParamGroup>,
    pub flops: BTreeMap<String, OpFlops>,
    pub devices: Vec<DevicePlan>,
}

pub fn summarize(model: &Model) -> Summary {
    Summary {
        inputs: model.inputs(),
        outputs: model.outputs(),
        ops: model.imported().graph.op_histogram(),
        params: parameters(&model.imported().graph),
        flops: flops::estimate(model.graph()),
        devices: [Device::Cpu, Device::OpenCl].into_iter().map(|d| device_plan(model.graph(), d)).collect(),
    }
}

/// Constants that a node or the graph output uses (initializers, as `Graph::parameter_count`
/// counts them) and the tensors of `Constant` nodes (TensorFlow exports keep weights there), by dtype.
fn parameters(g: &Graph) -> Vec<ParamGroup> {
    let used: HashSet<usize> =
        g.nodes.iter().flat_map(|n| n.inputs.iter().flatten().copied()).chain(g.outputs.iter().copied()).collect();
    let initializers = g.values.iter().enumerate().filter(|(i, _)| used.contains(i)).filter_map(|(_, v)| v.constant());
    let constant_nodes = g.nodes.iter().filter(|n| n.op_type == "Constant" && n.domain.is_empty()).filter_map(|n| {
        match n.attrs.get("value") {
            Some(Attr::Tensor(t)) => Some(t),
            _ => None,
        }
    });
    let mut by_dtype: BTreeMap<&'static str, ParamGroup> = BTreeMap::new();
    for t in initializers.chain(constant_nodes) {
        let dtype = t.dtype();
        let g = by_dtype.entry(dtype.name()).or_insert(ParamGroup { dtype, count: 0, bytes: 0 });
        g.count += t.len() as u64;
        g.bytes += bytes_of(dtype, t.len() as u64);
    }
    by_dtype.into_values().collect()
}

/// Bytes as stored in the file: sub-byte types packed, strings not counted.
fn bytes_of(dtype: DType, len: u64) -> u64 {
    (len * dtype.packed_bits() as u64).div_ceil(8)
}

fn device_plan(g: &Graph, device: Device) -> DevicePlan {
    let name = match device {
        Device::OpenCl => "opencl",
        _ => "cpu",
    };
    // The device's own backend: the first of its list (the CPU comes last, taking the rest).
    let backend = match backends_for(device) {
        Ok(mut b) => b.remove(0),
        Err(e) => {
            return DevicePlan { device: name, available: Err(e.message), nodes: 0, runs: vec![], leaves: vec![] }
        }
    };
    let (mut runs, mut leaves) = (BTreeMap::new(), BTreeMap::new());
    let mut nodes = 0;
    for n in &g.nodes {
        if backend.supports(g, n) {
            nodes += 1;
            runs.insert(flops::op_key(n), ());
        } else {
            leaves.insert(flops::op_key(n), ());
        }
    }
    DevicePlan {
        device: name,
        available: Ok(()),
        nodes,
        runs: runs.into_keys().collect(),
        leaves: leaves.into_keys().collect(),
    }
}

pub fn info(a: InfoArgs) -> Result<()> {
    let model = a.shapes.apply(a.limits.load(&a.model)?)?;
    let s = summarize(&model);
    let imp = model.imported();
    if a.json {
        outln!("{}", json::info(imp, &s));
        return Ok(());
    }
    outln!("model: {}", a.model.display());
    outln!("ir_version: {}  producer: {}", imp.ir_version, if imp.producer.is_empty() { "?" } else { &imp.producer });
    let opsets: Vec<String> =
        imp.opsets.iter().map(|(d, v)| format!("{} {v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
    outln!("opsets: {}", opsets.join(", "));
    for (title, list) in [("inputs", &s.inputs), ("outputs", &s.outputs)] {
        outln!("{title}:");
        for i in list {
            let shape = i.shape.as_deref().map_or("[unknown rank]".into(), shape_string);
            outln!("  {}: {} {} {shape}", i.name, i.kind, i.dtype.map_or("?", |d| d.name()));
        }
    }
    outln!("operators ({} nodes):", imp.graph.nodes.len());
    for (op, n) in &s.ops {
        outln!("  {op:<28} {n}");
    }
    print_flops(&s.flops);
    let (count, bytes) = s.params.iter().fold((0, 0), |(c, b), g| (c + g.count, b + g.bytes));
    outln!("parameters: {count} ({})", human_bytes(bytes));
    for g in &s.params {
        outln!("  {:<12} {:>14} {:>12}", g.dtype.name(), g.count, human_bytes(g.bytes));
    }
    outln!("devices (nodes after constant folding):");
    for d in &s.devices {
        match &d.available {
            Err(why) => outln!("  {}: not available ({why})", d.device),
            Ok(()) if d.leaves.is_empty() => {
                outln!("  {}: runs all {} nodes: {}", d.device, d.nodes, d.runs.join(", "))
            }
            Ok(()) => outln!(
                "  {}: runs {} nodes: {}; leaves {} to the cpu",
                d.device,
                d.nodes,
                d.runs.join(", "),
                d.leaves.join(", ")
            ),
        }
    }
    Ok(())
}

fn print_flops(by_op: &BTreeMap<String, OpFlops>) {
    outln!("FLOPs per run (estimate, a multiply-add is 2; after constant folding):");
    if by_op.is_empty() {
        outln!("  none of the estimated op types (Conv, ConvTranspose, MatMul, Gemm, elementwise) is in the graph");
        return;
    }
    let mut unknown = 0;
    let mut known = 0u64;
    for (op, f) in by_op {
        let value = match f.total() {
            Some(t) => flops::human(t),
            None => format!("unknown: shapes of {} of {} nodes are not known", f.unknown_nodes, f.nodes),
        };
        outln!("  {op:<28} {:>5} {}  {value}", f.nodes, if f.nodes == 1 { "node " } else { "nodes" });
        unknown += f.unknown_nodes;
        known = known.saturating_add(f.known);
    }
    let total = match (unknown, known) {
        (0, _) => flops::human(known),
        (_, 0) => "unknown".into(),
        _ => format!("unknown (at least {})", flops::human(known)),
    };
    outln!("  {:<28} {:>12}  {total}", "total", "");
    if unknown > 0 {
        outln!("  (fix the input sizes with --shape NAME=DxDx... or --dim SYMBOL=N to count them all)");
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match UNITS.iter().find(|(scale, _)| b >= *scale) {
        Some((scale, unit)) => format!("{:.1} {unit}", b as f64 / *scale as f64),
        None => format!("{b} B"),
    }
}
