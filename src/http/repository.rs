//! The models being served, by name: loading (from `--models-dir` only, with the path confined to
//! it), unloading and replacing. A model in use stays alive until its last request ends (requests
//! hold an `Arc`), so unloading or reloading loses no request.

use super::batching::Queue;
use super::ApiError;
use crate::{Dim, ErrorKind, IoInfo, LoadOptions, Model, Session, SessionOptions, Tensor};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// One loaded model with its session and its queue of requests waiting for a worker.
pub struct Served {
    pub name: String,
    pub session: Session,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    /// Where it came from, relative to the models directory (`None`: given at start-up).
    pub source: Option<String>,
    /// Whether requests may be stacked along dim 0 (see [`batch_symbol`]).
    pub batchable: bool,
    pub loaded_at: SystemTime,
    pub(super) queue: Queue,
}

impl Served {
    pub fn new(name: &str, model: Model, options: &SessionOptions, source: Option<String>) -> crate::Result<Served> {
        let session = Session::new(model, options)?;
        let (inputs, outputs) = (session.model().inputs(), session.model().outputs());
        let batchable = batch_symbol(&inputs, &outputs).is_some();
        Ok(Served {
            name: name.to_string(),
            session,
            inputs,
            outputs,
            source,
            batchable,
            loaded_at: SystemTime::now(),
            queue: Queue::default(),
        })
    }

    /// Puts named inputs in model order and checks their dtypes and fixed dims, so that requests
    /// that reach a worker (and may share a batch) are well-formed.
    pub fn order_inputs(&self, mut named: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, ApiError> {
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for info in &self.inputs {
            let k = named
                .iter()
                .position(|(n, _)| *n == info.name)
                .ok_or_else(|| ApiError::new(400, format!("input '{}' is missing", info.name)))?;
            let (_, t) = named.swap_remove(k);
            if let Some(dt) = info.dtype {
                if dt != t.dtype() {
                    return Err(ApiError::new(400, format!("input '{}' must be {dt}, got {}", info.name, t.dtype())));
                }
            }
            if let Some(shape) = &info.shape {
                let fits = shape.len() == t.rank()
                    && shape.iter().zip(t.shape()).all(|(d, &n)| !matches!(d, Dim::Known(k) if *k != n));
                if !fits {
                    return Err(ApiError::new(
                        400,
                        format!("input '{}' must have shape {}, got {:?}", info.name, shape_text(shape), t.shape()),
                    ));
                }
            }
            ordered.push(t);
        }
        if let Some((extra, _)) = named.first() {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(ApiError::new(
                400,
                format!("the model has no input named '{extra}' (inputs: {})", names.join(", ")),
            ));
        }
        Ok(ordered)
    }
}

/// `[N, 3, 224, 224]`-style text of a declared shape (`?` for unknown dims).
pub fn shape_text(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Symbol(s) => s.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// The symbol that names dim 0 of every input and every output, if there is one and every
/// dtype has a fixed byte width: then requests can be stacked along dim 0 and the outputs cut
/// back apart. This assumes rows do not affect each other, as for any model exported with a
/// dynamic batch dim (Triton makes the same assumption with `max_batch_size`); batching is off
/// unless `--max-batch` asks for it.
pub fn batch_symbol(inputs: &[IoInfo], outputs: &[IoInfo]) -> Option<String> {
    let first = inputs.first()?;
    let Some(Dim::Symbol(symbol)) = first.shape.as_ref()?.first() else { return None };
    let stackable = |io: &IoInfo| {
        let fixed_width = io.dtype.is_some_and(|d| d != crate::DType::String && d.packed_bits() % 8 == 0);
        io.kind == crate::ValueKind::Tensor
            && fixed_width
            && matches!(io.shape.as_ref().and_then(|s| s.first()), Some(Dim::Symbol(s)) if s == symbol)
    };
    (inputs.iter().all(stackable) && outputs.iter().all(stackable)).then(|| symbol.clone())
}

pub struct Repository {
    models: RwLock<BTreeMap<String, Arc<Served>>>,
    /// Canonical; `None` when the server was started without one (loading is then refused).
    models_dir: Option<PathBuf>,
    load: LoadOptions,
    session: SessionOptions,
    /// One load at a time, so that a burst of loads cannot hold many models' memory at once.
    loading: Mutex<()>,
}

/// What a model in the repository index is doing.
pub struct IndexEntry {
    pub name: String,
    pub ready: bool,
}

impl Repository {
    pub fn new(models_dir: Option<&Path>, load: LoadOptions, session: SessionOptions) -> crate::Result<Repository> {
        let models_dir = match models_dir {
            None => None,
            Some(d) => Some(
                d.canonicalize().map_err(|e| crate::err!(Io, "--models-dir {}: {e}", d.display())).and_then(|c| {
                    if c.is_dir() {
                        Ok(c)
                    } else {
                        Err(crate::err!(Io, "--models-dir {} is not a directory", d.display()))
                    }
                })?,
            ),
        };
        Ok(Repository { models: RwLock::new(BTreeMap::new()), models_dir, load, session, loading: Mutex::new(()) })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Served>> {
        self.models.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Served>> {
        self.models.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.models.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Serves `model` under `name`, replacing any model of that name (its requests in flight
    /// finish on the old one).
    pub fn insert(&self, name: &str, model: Model, source: Option<String>) -> Result<Arc<Served>, ApiError> {
        check_name(name)?;
        let served = Arc::new(Served::new(name, model, &self.session, source).map_err(load_error)?);
        self.models.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), served.clone());
        Ok(served)
    }

    pub fn unload(&self, name: &str) -> Result<(), ApiError> {
        match self.models.write().unwrap_or_else(|e| e.into_inner()).remove(name) {
            Some(_) => Ok(()),
            None => Err(ApiError::new(404, format!("no model named '{}' is loaded", super::wire::printable(name)))),
        }
    }

    /// Loads the model file at `relative` (inside the models directory) as `name`.
    pub fn load_path(&self, name: &str, relative: &str) -> Result<Arc<Served>, ApiError> {
        check_name(name)?;
        let path = self.confine(relative)?;
        let _one_at_a_time = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // External data may come from the model's own folder only, which is inside the models dir.
        let options = LoadOptions { external_data_dir: path.parent().map(Path::to_path_buf), ..self.load.clone() };
        let model = Model::load_with(&path, &options).map_err(load_error)?;
        self.insert(name, model, Some(relative.to_string()))
    }

    /// Loads `name` from the models directory: `NAME.onnx`, `NAME/model.onnx`, or Triton's layout
    /// `NAME/1/model.onnx`, the first that exists.
    pub fn load_named(&self, name: &str) -> Result<Arc<Served>, ApiError> {
        check_name(name)?;
        let found = self.candidates(name).into_iter().find(|rel| self.confine(rel).is_ok());
        match found {
            Some(rel) => self.load_path(name, &rel),
            None => Err(ApiError::new(
                404,
                format!(
                    "no model file for '{name}' in the models directory (looked for {})",
                    self.candidates(name).join(", ")
                ),
            )),
        }
    }

    fn candidates(&self, name: &str) -> Vec<String> {
        vec![format!("{name}.onnx"), format!("{name}/model.onnx"), format!("{name}/1/model.onnx")]
    }

    /// The canonical path of `relative` if it names a file inside the models directory: no
    /// absolute paths, no `..`, and no symlink that leads out.
    pub fn confine(&self, relative: &str) -> Result<PathBuf, ApiError> {
        let Some(dir) = &self.models_dir else {
            return Err(ApiError::new(403, "this server loads no models at run time (start it with --models-dir)"));
        };
        let shown = super::wire::printable(relative);
        let rel = Path::new(relative);
        if relative.is_empty() || rel.is_absolute() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ApiError::new(
                400,
                format!("path '{shown}' must be relative to the models directory, without '..' or '.'"),
            ));
        }
        let full = dir
            .join(rel)
            .canonicalize()
            .map_err(|_| ApiError::new(404, format!("no file '{shown}' in the models directory")))?;
        if !full.starts_with(dir) {
            return Err(ApiError::new(403, format!("path '{shown}' leads out of the models directory")));
        }
        if !full.is_file() {
            return Err(ApiError::new(400, format!("path '{shown}' is not a file")));
        }
        Ok(full)
    }

    /// The models in the models directory (at most 10,000 entries are looked at) and the loaded
    /// ones, by name.
    pub fn index(&self) -> Vec<IndexEntry> {
        let mut names: BTreeMap<String, bool> = self.list().iter().map(|m| (m.name.clone(), true)).collect();
        if let Some(dir) = &self.models_dir {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten().take(10_000) {
                let file = entry.file_name().to_string_lossy().to_string();
                let name = file.strip_suffix(".onnx").unwrap_or(&file).to_string();
                if check_name(&name).is_ok() && self.candidates(&name).iter().any(|rel| self.confine(rel).is_ok()) {
                    names.entry(name).or_insert(false);
                }
            }
        }
        names.into_iter().map(|(name, ready)| IndexEntry { name, ready }).collect()
    }
}

/// Model names: 1 to 128 of `A-Z a-z 0-9 _ . -`, not starting with a dot.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            400,
            format!(
                "model name '{}' must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.'",
                super::wire::printable(name)
            ),
        ))
    }
}

/// A load failure as an answer: a missing file is 404, anything wrong with the model 422.
fn load_error(e: crate::Error) -> ApiError {
    let status = if e.kind == ErrorKind::Io { 404 } else { 422 };
    ApiError::new(status, format!("cannot load the model: {}", e.message))
}
