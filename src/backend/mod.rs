//! Backends and the compile pipeline. A backend answers two questions (ggml's `supports_op`): can
//! you run this node, and give me a kernel for it, prepared once per session (`prepare` sees the
//! constant inputs, so weights are packed once). [`compile`] turns an optimised graph into a
//! [`CompiledGraph`]: fusion passes, placement (each node claimed by the first backend that
//! supports it; the CPU takes the rest), kernels prepared, and control-flow bodies optimised and
//! compiled the same way.

use crate::ir::{Data, DataRef, Graph, GraphExec, Node, Tensor};
use crate::Result;
use std::sync::Arc;

pub mod buffers;
pub mod cpu;
#[cfg(feature = "opencl")]
pub mod opencl;
pub mod plan;

pub use plan::CompiledGraph;

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    OpenCl,
    /// An OpenCL GPU when one is present, else the CPU (a CPU OpenCL platform such as PoCL is
    /// never preferred over the native CPU backend).
    Auto,
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Device> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "opencl" | "gpu" => Ok(Device::OpenCl),
            "auto" => Ok(Device::Auto),
            _ => crate::bail!(InvalidInput, "unknown device '{s}' (expected cpu, opencl or auto)"),
        }
    }
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether this backend can run `node` of `graph` itself. Asked once, at placement time.
    fn supports(&self, graph: &Graph, node: &Node) -> bool;
    /// A kernel for `node`, prepared with what is known before running (facts, constant inputs).
    fn prepare(&self, graph: &Graph, node: &Node) -> Result<Box<dyn Kernel>>;
    /// Whether float16 regions are better run in f32 here (fast kernels for f32 only); when every
    /// backend of a compile says so, [`compile`] widens them (`passes::widen_f16`).
    fn widens_f16(&self) -> bool {
        false
    }
}

/// A node's prepared kernel.
pub trait Kernel: Send + Sync + std::fmt::Debug {
    /// Runs on one run's inputs (one per node input; `None` for an omitted optional one).
    fn run(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>]) -> Result<Vec<Data>>;
    /// A short name for profiles: which kernel runs the node.
    fn name(&self) -> &'static str;
    /// The input this kernel can write its first output over (a convolution adding it as a
    /// skip connection): where that input dies at this node, is read by it once and nothing
    /// else holds its buffer, the plan calls [`Kernel::run_in_place`] with it instead of `run`,
    /// which saves a pass over memory for the output's fresh lines.
    fn in_place_input(&self) -> Option<usize> {
        None
    }
    /// [`Kernel::run`] with input [`Kernel::in_place_input`] handed over as `donated` (its place
    /// in `inputs` is `None`). By default it runs as lent to `run`, then goes to the buffer pool.
    fn run_in_place(&self, ctx: &ExecCtx, inputs: &[Option<DataRef>], donated: Tensor) -> Result<Vec<Data>> {
        run_lent(self, ctx, inputs, donated)
    }
}

/// Runs `kernel` with `donated` lent back as its [`Kernel::in_place_input`], then recycles it:
/// for inputs a kernel cannot write over after all (a shape it does not take in place).
pub fn run_lent<K: Kernel + ?Sized>(
    kernel: &K,
    ctx: &ExecCtx,
    inputs: &[Option<DataRef>],
    donated: Tensor,
) -> Result<Vec<Data>> {
    let outs = {
        let mut args = inputs.to_vec();
        if let Some(slot) = kernel.in_place_input().and_then(|j| args.get_mut(j)) {
            *slot = Some(DataRef::Tensor(&donated));
        }
        kernel.run(ctx, &args)
    };
    ctx.buffers.recycle(Data::Tensor(donated));
    outs
}

/// What a running kernel may use: the session's worker threads, the plan's recycled buffers
/// (take output buffers from them), and a runner for the subgraphs of control-flow ops (compiled
/// with the graph).
pub struct ExecCtx<'a> {
    pub pool: &'a cpu::pool::ThreadPool,
    pub buffers: &'a buffers::BufferPool,
    pub graphs: &'a dyn GraphExec,
}

/// Device settings of a session beyond the device itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Tensors on an OpenCL device are stored as float16 (and computed in f32). The CPU backend
    /// keeps f32 and ignores this.
    pub fp16_storage: bool,
    /// Run float16 nodes as written, each result rounded to float16 (reference kernels on the
    /// CPU), instead of widening float16 regions to f32: for measuring a float16 model's own
    /// numerics (`crx580 convert` does) rather than running it fast.
    pub f16_as_written: bool,
    /// Where the OpenCL backend caches compiled programs; `None`: `CRX580_CACHE_DIR`, else the
    /// user's cache directory.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// The backends a session's device gives, in the order they claim nodes: the CPU always last.
pub fn backends_for(device: Device) -> Result<Vec<Arc<dyn Backend>>> {
    backends_with(device, &DeviceOptions::default())
}

/// Bytes of device (OpenCL) buffers this process holds now; `None` in a build without a device
/// backend.
pub fn device_memory_bytes() -> Option<u64> {
    #[cfg(feature = "opencl")]
    return Some(opencl::context::device_bytes());
    #[cfg(not(feature = "opencl"))]
    None
}

/// Whether an OpenCL GPU is present (what [`Device::Auto`] picks when it is). Asked once per
/// process: sessions are made often (and from many threads), a GPU rarely comes and goes.
pub fn gpu_present() -> bool {
    static PRESENT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRESENT.get_or_init(|| {
        #[cfg(feature = "opencl")]
        if let Ok(devices) = opencl::devices() {
            return devices.iter().any(|d| d.is_gpu);
        }
        false
    })
}

/// [`backends_for`] with the device settings of `options`.
#[cfg_attr(not(feature = "opencl"), allow(unused_variables))]
pub fn backends_with(device: Device, options: &DeviceOptions) -> Result<Vec<Arc<dyn Backend>>> {
    let device = match device {
        Device::Auto if gpu_present() => Device::OpenCl,
        Device::Auto => Device::Cpu,
        d => d,
    };
    if options.f16_as_written {
        let widening = backends_with(device, &DeviceOptions { f16_as_written: false, ..options.clone() })?;
        return Ok(widening.into_iter().map(|b| Arc::new(F16AsWritten(b)) as Arc<dyn Backend>).collect());
    }
    match device {
        Device::Cpu | Device::Auto => Ok(vec![Arc::new(cpu::CpuBackend)]),
        #[cfg(feature = "opencl")]
        Device::OpenCl => {
            let cl = opencl::OpenClOptions { half_storage: options.fp16_storage, cache_dir: options.cache_dir.clone() };
            Ok(vec![Arc::new(opencl::OpenClBackend::new(&cl)?), Arc::new(cpu::CpuBackend)])
        }
        #[cfg(not(feature = "opencl"))]
        Device::OpenCl => {
            crate::bail!(Unsupported, "this build has no OpenCL backend (the 'opencl' feature); use --device cpu")
        }
    }
}

/// A backend that runs float16 as written: `inner` in all but [`Backend::widens_f16`].
struct F16AsWritten(Arc<dyn Backend>);

impl Backend for F16AsWritten {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn supports(&self, graph: &Graph, node: &Node) -> bool {
        self.0.supports(graph, node)
    }
    fn prepare(&self, graph: &Graph, node: &Node) -> Result<Box<dyn Kernel>> {
        self.0.prepare(graph, node)
    }
}

/// For each node of `graph`, the index in `backends` of the first backend that supports it; the
/// last backend (the CPU) takes whatever no other claims.
pub fn place(graph: &Graph, backends: &[Arc<dyn Backend>]) -> Vec<usize> {
    graph
        .nodes
        .iter()
        .map(|n| backends.iter().position(|b| b.supports(graph, n)).unwrap_or(backends.len() - 1))
        .collect()
}

/// Compiles an optimised graph for `backends`: float16 regions widened to f32 where every backend
/// prefers that, fusion passes, placement, prepared kernels, and every control-flow body optimised
/// and compiled likewise.
pub fn compile(graph: &Graph, backends: &[Arc<dyn Backend>]) -> Result<CompiledGraph> {
    let mut graph = graph.clone();
    // Before the fusions, which then see the widened regions as the f32 graphs they match.
    if backends.iter().all(|b| b.widens_f16()) {
        use crate::passes::Pass;
        crate::passes::widen_f16::WidenF16.run(&mut graph)?;
    }
    crate::passes::optimize(&mut graph, &crate::passes::fusion_passes())?;
    let placement = place(&graph, backends);
    let mut counts = vec![0usize; backends.len()];
    placement.iter().for_each(|&b| counts[b] += 1);
    let summary: Vec<String> = backends.iter().zip(&counts).map(|(b, n)| format!("{}: {n}", b.name())).collect();
    log::debug!("placed {} nodes ({})", graph.nodes.len(), summary.join(", "));
    CompiledGraph::new(Arc::new(graph), backends, &placement)
}

/// A body of a control-flow op, optimised on its own (its captured constants fold like local
/// ones) and compiled. A body that cannot be optimised (a branch never taken may contradict the
/// facts of what it captures) is compiled as it is.
pub fn compile_subgraph(body: &Graph, backends: &[Arc<dyn Backend>]) -> Result<CompiledGraph> {
    let mut g = body.clone();
    if let Err(e) = crate::passes::optimize(&mut g, &crate::passes::default_passes()) {
        log::debug!("a subgraph stays unoptimised: {e}");
        g = body.clone();
    }
    compile(&g, backends)
}

/// Human-readable names of the devices this build can run on (`crx580 devices`).
/// OpenCL devices come after the CPU when an OpenCL platform can be loaded (none otherwise).
pub fn list_devices() -> Vec<String> {
    #[cfg_attr(not(feature = "opencl"), allow(unused_mut))]
    let mut out = vec![cpu::describe_cpu()];
    #[cfg(feature = "opencl")]
    match opencl::devices() {
        Ok(devices) => out.extend(devices.iter().map(|d| d.describe())),
        Err(e) => log::debug!("no OpenCL devices: {e}"),
    }
    out
}
