//! The public API: a [`Model`] is a decoded, inferred and optimised graph; a [`Session`] is a model
//! compiled for one device, runnable from many threads at once.

use crate::backend::{backend_for, Device, Plan};
use crate::ir::infer::infer_facts;
use crate::ir::{DType, Dim, Fact, Graph, Tensor};
use crate::onnx::{import_model, ImportedModel};
use crate::passes::{default_passes, optimize};
use crate::{bail, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Name, dtype and shape of a model input or output, as far as they are known before running.
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    pub name: String,
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
}

impl Model {
    /// Loads a `.onnx` file; external data files are looked up next to it.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| crate::err!(Io, "cannot read {}: {e}", path.display()))?;
        import_model(&bytes, path.parent())
            .and_then(Model::build)
            .map_err(|e| e.context(format!("model {}", path.display())))
    }

    /// Loads a model from bytes. External data files, if any, are looked up in the current directory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Model::build(import_model(bytes, None)?)
    }

    fn build(imported: ImportedModel) -> Result<Model> {
        let mut graph = imported.graph.clone();
        infer_facts(&mut graph)?;
        optimize(&mut graph, &default_passes())?;
        Ok(Model { graph: Arc::new(graph), imported })
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
        Model::build(imported)
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
    IoInfo { name: v.name.clone(), dtype: v.fact.dtype, shape: v.fact.shape.clone() }
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// Worker threads for the CPU; 0 means one per core.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions { device: Device::Auto, threads: 0 }
    }
}

/// A model ready to run. `Session` is `Send + Sync`: share it (e.g. in an `Arc`) and call
/// [`Session::run`] from as many threads as you like.
pub struct Session {
    model: Model,
    plan: Box<dyn Plan>,
}

impl Session {
    pub fn new(model: Model, options: &SessionOptions) -> Result<Session> {
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let backend = backend_for(options.device, threads)?;
        let plan = backend.compile(model.graph.clone())?;
        Ok(Session { model, plan })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs with inputs given by name; returns the outputs in graph-output order.
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        let g = &self.model.graph;
        let mut ordered: Vec<Option<&Tensor>> = vec![None; g.inputs.len()];
        for &(name, t) in inputs {
            match g.inputs.iter().position(|&i| g.values[i].name == name) {
                Some(k) if ordered[k].is_some() => bail!(InvalidInput, "input '{name}' is given twice"),
                Some(k) => ordered[k] = Some(t),
                None => {
                    let names: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
                    bail!(InvalidInput, "the model has no input named '{name}' (inputs: {})", names.join(", "))
                }
            }
        }
        let mut positional = Vec::with_capacity(ordered.len());
        for (k, t) in ordered.into_iter().enumerate() {
            match t {
                Some(t) => positional.push(t),
                None => bail!(InvalidInput, "input '{}' is missing", g.values[g.inputs[k]].name),
            }
        }
        self.run_positional(&positional)
    }

    /// Runs with one tensor per graph input, in the model's input order.
    pub fn run_positional(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.check_inputs(inputs)?;
        self.plan.run(inputs)
    }

    /// Checks dtype, rank and known dims of each input, and that each symbolic dim has one size.
    fn check_inputs(&self, inputs: &[&Tensor]) -> Result<()> {
        let g = &self.model.graph;
        if inputs.len() != g.inputs.len() {
            bail!(InvalidInput, "the model takes {} inputs, {} were given", g.inputs.len(), inputs.len());
        }
        let mut symbols: HashMap<&str, usize> = HashMap::new();
        for (&id, t) in g.inputs.iter().zip(inputs) {
            let v = &g.values[id];
            check_input(&v.name, &v.fact, t, &mut symbols)?;
        }
        Ok(())
    }
}

fn check_input<'a>(name: &str, fact: &'a Fact, t: &Tensor, symbols: &mut HashMap<&'a str, usize>) -> Result<()> {
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
