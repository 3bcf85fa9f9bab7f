//! The public API: a [`Model`] is a decoded, inferred and optimised graph; a [`Session`] is a model
//! compiled for one device, runnable from many threads at once.

use crate::backend::cpu::pool::{ThreadPool, SPIN};
use crate::backend::plan::NodeTime;
use crate::backend::{backends_with, compile, CompiledGraph, Device, DeviceOptions};
use crate::error::catch_panics;
use crate::io::mapped::FileBytes;
use crate::ir::infer::infer_facts;
use crate::ir::limits::{with_max_tensor_bytes, with_time_limit, DEFAULT_MAX_TENSOR_BYTES};
use crate::ir::tensor::checked_len;
use crate::ir::{DType, Data, DataRef, Dim, Fact, Graph, Tensor, ValueKind};
use crate::onnx::{import_model, ImportedModel};
use crate::passes::{default_passes, optimize};
use crate::{bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Name, kind, dtype and shape of a model input or output, as far as they are known before running.
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    pub name: String,
    /// A tensor, a sequence or an optional; for the latter two, `dtype` and `shape` describe the
    /// tensors they hold.
    pub kind: ValueKind,
    pub dtype: Option<DType>,
    /// `None` when the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

/// A loaded model: its graph after shape inference and optimisation, plus file metadata.
#[derive(Debug, Clone)]
pub struct Model {
    graph: Arc<Graph>,
    /// The graph as imported (before folding), for statistics.
    imported: ImportedModel,
    /// The tensor size limit it was loaded under, kept for [`Model::with_dims`].
    max_tensor_bytes: usize,
}

/// How a model is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The only directory external data files may be read from. `None` with [`Model::load`] means
    /// the model file's directory; with the `from_bytes` constructors it means the model may have
    /// no external data. Locations that leave this directory (`..`, absolute paths, symlinks out)
    /// are refused.
    pub external_data_dir: Option<PathBuf>,
    /// The largest tensor, in bytes, that loading may decode or compute while folding constants.
    pub max_tensor_bytes: usize,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { external_data_dir: None, max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES }
    }
}

impl Model {
    /// Loads a `.onnx` file; external data files are read from its directory.
    ///
    /// The file is mapped while it is decoded (see [`crate::io::mapped::FileBytes`]): it must
    /// not be truncated or rewritten during the call. For a file that may change, read it
    /// yourself and use [`Model::from_bytes`].
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_with(path, &LoadOptions::default())
    }

    /// Loads a `.onnx` file with options; external data files are read from
    /// `options.external_data_dir`, or else from the file's directory.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        // Protobuf messages, and so ONNX files, are at most 2 GiB: larger weights live in
        // external data files.
        const MOST: u64 = 2 << 30;
        let bytes = FileBytes::open(path, MOST).map_err(|e| crate::err!(Io, "cannot read {}: {e}", path.display()))?;
        let dir = options.external_data_dir.as_deref().or(path.parent());
        // `Path::parent` of a bare file name is the empty path, which means the current directory.
        let dir = dir.map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
        let context = |e: crate::Error| e.context(format!("model {}", path.display()));
        // The file is let go once decoded, before the optimiser runs.
        let imported = Model::import(&bytes, dir, options.max_tensor_bytes).map_err(context)?;
        drop(bytes);
        Model::build(imported, options.max_tensor_bytes).map_err(context)
    }

    /// Loads a model from bytes. It may not have external data: nothing is read from the file
    /// system (use [`Model::from_bytes_with_dir`] for that).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Model::from_bytes_with(bytes, &LoadOptions::default())
    }

    /// Loads a model from bytes, reading its external data files from `dir` and nowhere else.
    pub fn from_bytes_with_dir(bytes: &[u8], dir: impl AsRef<Path>) -> Result<Model> {
        let options = LoadOptions { external_data_dir: Some(dir.as_ref().to_path_buf()), ..LoadOptions::default() };
        Model::from_bytes_with(bytes, &options)
    }

    /// Loads a model from bytes with options.
    pub fn from_bytes_with(bytes: &[u8], options: &LoadOptions) -> Result<Model> {
        Model::decode(bytes, options.external_data_dir.as_deref(), options.max_tensor_bytes)
    }

    fn decode(bytes: &[u8], external_data_dir: Option<&Path>, max_tensor_bytes: usize) -> Result<Model> {
        Model::build(Model::import(bytes, external_data_dir, max_tensor_bytes)?, max_tensor_bytes)
    }

    /// Decodes the file's graph and tensors, under the tensor size limit and a panic guard.
    fn import(bytes: &[u8], external_data_dir: Option<&Path>, max_tensor_bytes: usize) -> Result<ImportedModel> {
        let import = || catch_panics("decoding the model", || import_model(bytes, external_data_dir));
        with_max_tensor_bytes(max_tensor_bytes, import)
    }

    /// Infers facts and optimises, under the tensor size limit and a panic guard: constant
    /// folding runs kernels at load time.
    fn build(imported: ImportedModel, max_tensor_bytes: usize) -> Result<Model> {
        let mut graph = imported.graph.clone();
        with_max_tensor_bytes(max_tensor_bytes, || {
            catch_panics("loading the model", || {
                infer_facts(&mut graph)?;
                optimize(&mut graph, &default_passes())
            })
        })?;
        Ok(Model { graph: Arc::new(graph), imported, max_tensor_bytes })
    }

    /// A copy of this model with named symbolic dims fixed to sizes (e.g. `batch=8`), so that
    /// shapes downstream become known.
    pub fn with_dims(&self, dims: &HashMap<String, usize>) -> Result<Model> {
        let mut imported = self.imported.clone();
        for &i in &imported.graph.inputs.clone() {
            if let Some(shape) = &mut imported.graph.values[i].fact.shape {
                for d in shape.iter_mut() {
                    if let Dim::Symbol(s) = d {
                        if let Some(&n) = dims.get(s.as_str()) {
                            *d = Dim::Known(n);
                        }
                    }
                }
            }
        }
        Model::build(imported, self.max_tensor_bytes)
    }

    /// A copy of this model with whole input shapes fixed by input name (e.g. `images` ->
    /// `[1, 3, 640, 640]`), for inputs whose dims are unnamed or whose rank is unknown, which
    /// [`Model::with_dims`] cannot reach. A shape must agree with the declaration: same rank, and
    /// the same size where a dim is already known. Named dims given here are fixed in this input
    /// only; use `with_dims` to fix a symbol everywhere it appears.
    pub fn with_input_shapes(&self, shapes: &HashMap<String, Vec<usize>>) -> Result<Model> {
        let mut imported = self.imported.clone();
        let graph = &mut imported.graph;
        for (name, dims) in shapes {
            let id = graph.inputs.iter().copied().find(|&i| graph.values[i].name == *name).ok_or_else(|| {
                let names: Vec<&str> = graph.inputs.iter().map(|&i| graph.values[i].name.as_str()).collect();
                crate::err!(InvalidInput, "the model has no input '{name}' (its inputs: {})", names.join(", "))
            })?;
            let fact = &mut graph.values[id].fact;
            if let Some(declared) = &fact.shape {
                if declared.len() != dims.len() {
                    crate::bail!(InvalidInput, "input '{name}' has rank {}, not {}", declared.len(), dims.len());
                }
                for (k, (d, &n)) in declared.iter().zip(dims).enumerate() {
                    if matches!(d, Dim::Known(m) if *m != n) {
                        crate::bail!(InvalidInput, "dim {k} of input '{name}' is fixed at {d} by the model, not {n}");
                    }
                }
            }
            fact.shape = Some(dims.iter().map(|&n| Dim::Known(n)).collect());
        }
        Model::build(imported, self.max_tensor_bytes)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph as it was in the file, before optimisation.
    pub fn imported(&self) -> &ImportedModel {
        &self.imported
    }

    pub fn inputs(&self) -> Vec<IoInfo> {
        self.graph.inputs.iter().map(|&i| io_info(&self.graph, i)).collect()
    }

    pub fn outputs(&self) -> Vec<IoInfo> {
        self.graph.outputs.iter().map(|&i| io_info(&self.graph, i)).collect()
    }
}

fn io_info(g: &Graph, id: usize) -> IoInfo {
    let v = g.value(id);
    IoInfo { name: v.name.clone(), kind: v.kind.clone(), dtype: v.fact.dtype, shape: v.fact.shape.clone() }
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// Worker threads for the CPU; 0 means one per core.
    pub threads: usize,
    /// The largest tensor or scratch buffer, in bytes, that a run may allocate; a run that would
    /// need more fails with a `ResourceLimit` error naming the node.
    pub max_tensor_bytes: usize,
    /// How long one run may take; a run past it stops at the next node (or loop iteration) with a
    /// `ResourceLimit` error. `None`: no limit.
    pub max_run_time: Option<Duration>,
    /// Whether worker threads spin while a run is in progress (and briefly, 50 us, after it)
    /// instead of sleeping between nodes: node hand-offs then take a fraction of a microsecond
    /// instead of tens, at the cost of the cores' time during a run. Turn it off when many
    /// sessions share few cores.
    pub spin: bool,
    /// The OpenCL device's storage format and program cache (the CPU ignores them), and whether
    /// float16 runs as written.
    pub device_options: DeviceOptions,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            device: Device::Auto,
            threads: 0,
            max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
            max_run_time: None,
            spin: true,
            device_options: DeviceOptions::default(),
        }
    }
}

/// A model ready to run. `Session` is `Send + Sync`: share it (e.g. in an `Arc`) and call
/// [`Session::run`] from as many threads as you like.
pub struct Session {
    model: Model,
    compiled: CompiledGraph,
    /// The worker threads of this session's CPU kernels, made once.
    pool: ThreadPool,
    max_tensor_bytes: usize,
    max_run_time: Option<Duration>,
}

impl Session {
    pub fn new(model: Model, options: &SessionOptions) -> Result<Session> {
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let backends = backends_with(options.device, &options.device_options)?;
        let compiled = with_max_tensor_bytes(model.max_tensor_bytes, || {
            catch_panics("compiling the model", || compile(&model.graph, &backends))
        })?;
        Ok(Session {
            model,
            compiled,
            pool: ThreadPool::with_spin(threads, if options.spin { SPIN } else { Duration::ZERO }),
            max_tensor_bytes: options.max_tensor_bytes,
            max_run_time: options.max_run_time,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs with inputs given by name; returns the outputs in graph-output order. Every input and
    /// output must be a tensor; [`Session::run_data`] takes and gives sequences and optionals too.
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        let named: Vec<(&str, DataRef)> = inputs.iter().map(|&(n, t)| (n, DataRef::Tensor(t))).collect();
        let positional = self.by_position(&named)?;
        self.run_refs(&positional).and_then(|outs| self.tensors(outs))
    }

    /// Runs with one tensor per graph input, in the model's input order.
    pub fn run_positional(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let refs: Vec<DataRef> = inputs.iter().map(|&t| DataRef::Tensor(t)).collect();
        self.run_refs(&refs).and_then(|outs| self.tensors(outs))
    }

    /// [`Session::run`] for models whose inputs or outputs may be sequences or optionals.
    pub fn run_data(&self, inputs: &[(&str, &Data)]) -> Result<Vec<Data>> {
        let named: Vec<(&str, DataRef)> = inputs.iter().map(|&(n, d)| (n, DataRef::Data(d))).collect();
        self.run_refs(&self.by_position(&named)?)
    }

    /// [`Session::run_positional`] for models whose inputs or outputs may be sequences or optionals.
    pub fn run_data_positional(&self, inputs: &[&Data]) -> Result<Vec<Data>> {
        let refs: Vec<DataRef> = inputs.iter().map(|&d| DataRef::Data(d)).collect();
        self.run_refs(&refs)
    }

    fn by_position<'a>(&self, inputs: &[(&str, DataRef<'a>)]) -> Result<Vec<DataRef<'a>>> {
        let g = &self.model.graph;
        let mut ordered: Vec<Option<DataRef>> = vec![None; g.inputs.len()];
        for &(name, d) in inputs {
            match g.inputs.iter().position(|&i| g.values[i].name == name) {
                Some(k) if ordered[k].is_some() => bail!(InvalidInput, "input '{name}' is given twice"),
                Some(k) => ordered[k] = Some(d),
                None => {
                    let names: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
                    bail!(InvalidInput, "the model has no input named '{name}' (inputs: {})", names.join(", "))
                }
            }
        }
        let mut positional = Vec::with_capacity(ordered.len());
        for (k, d) in ordered.into_iter().enumerate() {
            match d {
                Some(d) => positional.push(d),
                None => bail!(InvalidInput, "input '{}' is missing", g.values[g.inputs[k]].name),
            }
        }
        Ok(positional)
    }

    /// Runs with one tensor per graph input (model order) and times every node: the outputs,
    /// and per node its op type, kernel, backend and time, in run order.
    pub fn run_profiled(&self, inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<NodeTime>)> {
        let refs: Vec<DataRef> = inputs.iter().map(|&t| DataRef::Tensor(t)).collect();
        let mut times = Vec::new();
        let outs = self.run_with(&refs, Some(&mut times))?;
        Ok((self.tensors(outs)?, times))
    }

    /// Per node of the compiled graph (after fusion): op type, kernel name and backend.
    pub fn kernels(&self) -> Vec<(String, &'static str, &'static str)> {
        let g = self.compiled.graph();
        g.nodes.iter().zip(self.compiled.kernel_names()).map(|(n, (k, b))| (n.op_type.clone(), k, b)).collect()
    }

    /// Worker threads of this session (the calling thread included).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn run_refs(&self, inputs: &[DataRef]) -> Result<Vec<Data>> {
        self.run_with(inputs, None)
    }

    fn run_with(&self, inputs: &[DataRef], profile: Option<&mut Vec<NodeTime>>) -> Result<Vec<Data>> {
        with_max_tensor_bytes(self.max_tensor_bytes, || {
            self.check_inputs(inputs)?;
            let outputs = with_time_limit(self.max_run_time, || {
                catch_panics("running", || self.compiled.run(&self.pool, inputs, &[], profile))
            })?;
            // An output may view an input (Identity, Reshape): one in lent memory must not
            // outlive the run.
            outputs.into_iter().map(Data::detached).collect()
        })
    }

    /// The outputs of a tensor-only run; an output of another kind is an error that names it.
    fn tensors(&self, outputs: Vec<Data>) -> Result<Vec<Tensor>> {
        let g = &self.model.graph;
        outputs
            .into_iter()
            .zip(&g.outputs)
            .map(|(d, &id)| match d {
                Data::Tensor(t) => Ok(t),
                other => bail!(
                    InvalidInput,
                    "output '{}' is {}, not a tensor: use Session::run_data",
                    g.values[id].name,
                    other.describe()
                ),
            })
            .collect()
    }

    /// Checks the kind, dtype, rank and known dims of each input, and that each symbolic dim has
    /// one size.
    fn check_inputs(&self, inputs: &[DataRef]) -> Result<()> {
        let g = &self.model.graph;
        if inputs.len() != g.inputs.len() {
            bail!(InvalidInput, "the model takes {} inputs, {} were given", g.inputs.len(), inputs.len());
        }
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        for (&id, &d) in g.inputs.iter().zip(inputs) {
            let v = &g.values[id];
            match (d.tensor(), &v.kind) {
                (Some(t), ValueKind::Tensor) => check_input(&v.name, &v.fact, t, &mut symbols)?,
                (_, ValueKind::Tensor) => {
                    bail!(InvalidInput, "input '{}' must be a tensor, got {}", v.name, d.describe())
                }
                (_, kind) => match d {
                    DataRef::Data(data) => check_data_input(&v.name, kind, &v.fact, data)?,
                    DataRef::Tensor(t) => {
                        bail!(InvalidInput, "input '{}' must be {kind}, got a tensor of {}", v.name, t.dtype())
                    }
                },
            }
        }
        Ok(())
    }
}

/// A sequence or optional input: the declared kind, and the declared element dtype of the
/// tensors it holds.
fn check_data_input(name: &str, kind: &ValueKind, fact: &Fact, d: &Data) -> Result<()> {
    if !d.matches(kind) {
        bail!(InvalidInput, "input '{name}' must be {kind}, got {}", d.describe());
    }
    if let (Some(want), Some(got)) = (fact.dtype, d.elem_dtype()) {
        if want != got {
            bail!(InvalidInput, "input '{name}' must hold {want} tensors, got {}", d.describe());
        }
    }
    Ok(())
}

fn check_input<'a>(name: &str, fact: &'a Fact, t: &Tensor, symbols: &mut HashMap<&'a str, usize>) -> Result<()> {
    // The caller made the tensor under the default limit; this session's limit may be lower.
    checked_len(t.shape(), t.dtype()).map_err(|e| e.context(format!("input '{name}'")))?;
    if let Some(dt) = fact.dtype {
        if dt != t.dtype() {
            bail!(InvalidInput, "input '{name}' must be {dt}, got {}", t.dtype());
        }
    }
    let Some(shape) = &fact.shape else { return Ok(()) };
    if shape.len() != t.rank() {
        bail!(InvalidInput, "input '{name}' must have rank {} ({fact}), got shape {:?}", shape.len(), t.shape());
    }
    for (axis, (d, &n)) in shape.iter().zip(t.shape()).enumerate() {
        match d {
            Dim::Known(k) if *k != n => {
                bail!(InvalidInput, "input '{name}' must have shape {fact}, got {:?} (axis {axis})", t.shape())
            }
            Dim::Symbol(s) => match symbols.insert(s, n) {
                Some(prev) if prev != n => {
                    bail!(InvalidInput, "dim '{s}' is {prev} in one input and {n} in input '{name}' (axis {axis})")
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Sequence;
    use crate::onnx::wire::enc::Enc;
    use crate::ErrorKind;

    fn tensor_type(elem: i64) -> Enc {
        Enc::new().msg(1, Enc::new().int(1, elem))
    }

    fn seq_type(elem: i64) -> Enc {
        Enc::new().msg(4, Enc::new().msg(1, tensor_type(elem)))
    }

    fn value(name: &str, ty: Enc) -> Enc {
        Enc::new().str(1, name).msg(2, ty)
    }

    /// s: seq(float), x: float -> (SequenceInsert(s, x), its length); x -> SplitToSequence(x).
    fn session() -> Session {
        let node = |op: &str, inputs: &[&str], output: &str| {
            inputs.iter().fold(Enc::new().str(4, op), |n, i| n.str(1, i)).str(2, output)
        };
        let g = Enc::new()
            .msg(1, node("SequenceInsert", &["s", "x"], "s2"))
            .msg(1, node("SequenceLength", &["s2"], "n"))
            .msg(1, node("SplitToSequence", &["x"], "pieces"))
            .msg(11, value("s", seq_type(1)))
            .msg(11, value("x", tensor_type(1)))
            .msg(12, value("s2", seq_type(1)))
            .msg(12, value("n", tensor_type(7)))
            .msg(12, value("pieces", seq_type(1)));
        let bytes = Enc::new().int(1, 8).msg(7, g).msg(8, Enc::new().int(2, 18)).finish();
        Session::new(
            Model::from_bytes(&bytes).unwrap(),
            &SessionOptions { device: Device::Cpu, threads: 1, ..SessionOptions::default() },
        )
        .unwrap()
    }

    #[test]
    fn sequences_go_in_and_come_out() {
        let s = session();
        let kinds: Vec<ValueKind> = s.model().inputs().into_iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [ValueKind::Sequence, ValueKind::Tensor]);
        assert_eq!(s.model().outputs()[1].kind, ValueKind::Tensor);
        assert_eq!(s.model().outputs()[0].dtype, Some(DType::F32));

        let seq = Data::Sequence(Sequence::new(DType::F32, vec![Tensor::vector(vec![1f32])]).unwrap());
        let x = Data::Tensor(Tensor::vector(vec![2f32, 3.]));
        let out = s.run_data(&[("x", &x), ("s", &seq)]).unwrap();
        let items = out[0].as_sequence().unwrap().items();
        assert_eq!((items.len(), &items[1]), (2, x.as_tensor().unwrap()));
        assert_eq!(out[1], Data::Tensor(Tensor::scalar(2i64)));
        assert_eq!(out[2].as_sequence().unwrap().len(), 2);
    }

    #[test]
    fn inputs_and_outputs_of_the_wrong_kind_are_errors() {
        let s = session();
        let seq = Data::Sequence(Sequence::new(DType::F32, vec![]).unwrap());
        let x = Tensor::vector(vec![2f32]);
        let e = s.run(&[("s", &x), ("x", &x)]).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidInput, "input 's' must be sequence, got a tensor of float32")
        );
        let e = s.run_data_positional(&[&seq, &seq]).unwrap_err();
        assert_eq!(e.message, "input 'x' must be a tensor, got a sequence of float32");
        let ints = Data::Sequence(Sequence::new(DType::I64, vec![]).unwrap());
        let e = s.run_data_positional(&[&ints, &Data::Tensor(x.clone())]).unwrap_err();
        assert_eq!(e.message, "input 's' must hold float32 tensors, got a sequence of int64");
        let e = s.run_data_positional(&[&Data::Optional(None), &Data::Tensor(x)]).unwrap_err();
        assert_eq!(e.message, "input 's' must be sequence, got an empty optional");
    }

    /// A tensor over lent memory is read in place, and an output that is that input itself comes
    /// back in memory of its own.
    #[test]
    fn lent_inputs_are_read_in_place_and_outputs_never_point_into_them() {
        let g = Enc::new()
            .msg(1, Enc::new().str(4, "Identity").str(1, "x").str(2, "same"))
            .msg(1, Enc::new().str(4, "Neg").str(1, "x").str(2, "neg"))
            .msg(11, value("x", tensor_type(1)))
            .msg(12, value("same", tensor_type(1)))
            .msg(12, value("neg", tensor_type(1)));
        let bytes = Enc::new().int(1, 8).msg(7, g).msg(8, Enc::new().int(2, 18)).finish();
        let s = Session::new(Model::from_bytes(&bytes).unwrap(), &SessionOptions::default()).unwrap();
        let mut buffer = vec![1f32, 2., 3.];
        let ptr = std::ptr::NonNull::new(buffer.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buffer` outlives `x` and is not changed while `x` exists.
        let x = unsafe { Tensor::borrowed(DType::F32, vec![3], ptr).unwrap() };
        assert_eq!(x.as_slice::<f32>().unwrap().as_ptr(), buffer.as_ptr(), "read in place");
        let out = s.run(&[("x", &x)]).unwrap();
        drop(x);
        assert_ne!(out[0].as_slice::<f32>().unwrap().as_ptr(), buffer.as_ptr());
        buffer.iter_mut().for_each(|v| *v = 0.0);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1., 2., 3.]);
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[-1., -2., -3.]);
        let bools = [1u8];
        let p = std::ptr::NonNull::new(bools.as_ptr().cast_mut()).unwrap();
        // SAFETY: refused before anything reads it.
        assert!(unsafe { Tensor::borrowed(DType::Bool, vec![1], p) }.is_err());
    }

    #[test]
    fn tensor_runs_name_outputs_that_are_not_tensors() {
        // A model whose inputs are tensors but whose output is a sequence.
        let g = Enc::new()
            .msg(1, Enc::new().str(4, "SplitToSequence").str(1, "x").str(2, "pieces"))
            .msg(11, value("x", tensor_type(1)))
            .msg(12, value("pieces", seq_type(1)));
        let bytes = Enc::new().int(1, 8).msg(7, g).msg(8, Enc::new().int(2, 18)).finish();
        let s = Session::new(Model::from_bytes(&bytes).unwrap(), &SessionOptions::default()).unwrap();
        let e = s.run_positional(&[&Tensor::vector(vec![1f32, 2.])]).unwrap_err();
        assert_eq!(e.message, "output 'pieces' is a sequence of float32, not a tensor: use Session::run_data");
    }
}
