//! Input shapes from the command line. `--dim SYMBOL=N` fixes a named dim wherever it appears;
//! `--shape NAME=DxDx...` gives one input's whole shape by input name (as trtexec's `--shapes`),
//! which is what a user knows without reading the exporter's dim names.

use crate::out::note;
use clap::Args;
use crx580::{bail, err, Dim, IoInfo, Model, Result};
use std::collections::HashMap;

#[derive(Args, Default)]
#[command(next_help_heading = "Input shapes")]
pub struct ShapeArgs {
    /// An input's shape by input name, e.g. --shape images=1x3x640x640 (repeatable).
    #[arg(long = "shape", value_name = "NAME=DxDx...")]
    pub shapes: Vec<String>,
    /// Fix a named (symbolic) dim in every input that has it, e.g. --dim batch=8 (repeatable).
    #[arg(long = "dim", value_name = "SYMBOL=N")]
    pub dims: Vec<String>,
}

impl ShapeArgs {
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty() && self.dims.is_empty()
    }

    /// Turns `--shape` into symbol sizes where the input's dims are named (so other inputs sharing
    /// a name agree), checks them against the declaration, and fixes the symbols with
    /// [`Model::with_dims`]; inputs with unnamed dims or no declared rank get their whole shape with
    /// [`Model::with_input_shapes`]. Either way shapes downstream become known.
    pub fn apply(&self, model: Model) -> Result<Model> {
        if self.is_empty() {
            return Ok(model);
        }
        let inputs = model.inputs();
        let mut symbols: HashMap<String, (usize, String)> = HashMap::new();
        for d in &self.dims {
            let (name, value) = d.rsplit_once('=').ok_or_else(|| err!(InvalidInput, "--dim '{d}' is not SYMBOL=N"))?;
            let value = parse_dim(value).ok_or_else(|| err!(InvalidInput, "--dim '{d}': '{value}' is not a size"))?;
            if !inputs.iter().any(|i| has_symbol(i, name)) {
                bail!(InvalidInput, "--dim '{d}': no input has a dim named '{name}' ({})", symbol_list(&inputs));
            }
            set_symbol(&mut symbols, name, value, format!("--dim {d}"))?;
        }
        let mut whole = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for s in &self.shapes {
            let (name, dims) = s
                .rsplit_once('=')
                .ok_or_else(|| err!(InvalidInput, "--shape '{s}' is not NAME=DxDx... (e.g. images=1x3x640x640)"))?;
            let info = inputs.iter().find(|i| i.name == name).ok_or_else(|| {
                let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                err!(InvalidInput, "--shape '{s}': the model has no input '{name}' (its inputs: {})", names.join(", "))
            })?;
            let dims: Vec<usize> =
                dims.split(['x', 'X', ',']).map(|d| parse_dim(d.trim())).collect::<Option<_>>().ok_or_else(|| {
                    err!(InvalidInput, "--shape '{s}': '{dims}' is not sizes joined by x, e.g. 1x3x224x224")
                })?;
            if !seen.insert(name) {
                bail!(InvalidInput, "--shape is given twice for input '{name}'");
            }
            let Some(declared) = &info.shape else {
                whole.insert(name.to_string(), dims);
                continue;
            };
            if declared.len() != dims.len() {
                bail!(
                    InvalidInput,
                    "--shape '{s}': input '{name}' has rank {} ({}), not {}",
                    declared.len(),
                    shape_string(declared),
                    dims.len()
                );
            }
            let mut unnamed = false;
            for (k, (d, &n)) in declared.iter().zip(&dims).enumerate() {
                match d {
                    Dim::Known(m) if *m != n => {
                        bail!(
                            InvalidInput,
                            "--shape '{s}': dim {k} of input '{name}' is fixed at {m} by the model, not {n}"
                        )
                    }
                    Dim::Known(_) => {}
                    Dim::Symbol(sym) => set_symbol(&mut symbols, sym, n, format!("--shape {s}"))?,
                    Dim::Unknown => unnamed = true,
                }
            }
            if unnamed {
                whole.insert(name.to_string(), dims);
            }
        }
        let sizes: HashMap<String, usize> = symbols.into_iter().map(|(k, (n, _))| (k, n)).collect();
        let model = if sizes.is_empty() { model } else { model.with_dims(&sizes)? };
        if whole.is_empty() {
            Ok(model)
        } else {
            model.with_input_shapes(&whole)
        }
    }
}

fn parse_dim(s: &str) -> Option<usize> {
    s.parse::<usize>().ok()
}

fn set_symbol(symbols: &mut HashMap<String, (usize, String)>, name: &str, n: usize, from: String) -> Result<()> {
    match symbols.get(name) {
        Some((m, earlier)) if *m != n => {
            bail!(InvalidInput, "dim '{name}' is {m} by {earlier} but {n} by {from}")
        }
        Some(_) => Ok(()),
        None => {
            symbols.insert(name.to_string(), (n, from));
            Ok(())
        }
    }
}

fn has_symbol(info: &IoInfo, name: &str) -> bool {
    info.shape.iter().flatten().any(|d| matches!(d, Dim::Symbol(s) if s == name))
}

fn symbol_list(inputs: &[IoInfo]) -> String {
    let mut names: Vec<&str> = inputs
        .iter()
        .flat_map(|i| i.shape.iter().flatten())
        .filter_map(|d| match d {
            Dim::Symbol(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        "its inputs have no named dims".into()
    } else {
        format!("named dims: {}", names.join(", "))
    }
}

pub fn shape_string(shape: &[Dim]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// Concrete shapes for made-up inputs. A leading dim of a rank >= 2 input (the batch) that is still
/// unknown is 1, with a note; any other unknown dim is an error that names every such input and says
/// how to set it, since a made-up size (say a 1x1 image) would time something meaningless.
pub fn concrete_shapes(model: &Model) -> Result<Vec<Vec<usize>>> {
    let mut shapes = vec![];
    let mut missing = vec![];
    let mut batch_notes = vec![];
    for info in model.inputs() {
        let Some(declared) = info.shape.clone() else {
            missing.push(format!("input '{}' has an unknown rank", info.name));
            shapes.push(vec![]);
            continue;
        };
        let mut unknown = vec![];
        let mut shape = vec![];
        for (k, d) in declared.iter().enumerate() {
            match d {
                Dim::Known(n) => shape.push(*n),
                _ if k == 0 && declared.len() >= 2 => {
                    batch_notes.push(format!("'{}' of input '{}'", d, info.name));
                    shape.push(1);
                }
                _ => {
                    unknown.push(d.to_string());
                    shape.push(1);
                }
            }
        }
        if !unknown.is_empty() {
            let example: Vec<String> = declared
                .iter()
                .enumerate()
                .map(|(k, d)| match d {
                    Dim::Known(n) => n.to_string(),
                    _ if k == 0 && declared.len() >= 2 => "1".into(),
                    Dim::Symbol(s) => format!("<{s}>"),
                    Dim::Unknown => format!("<dim{k}>"),
                })
                .collect();
            missing.push(format!(
                "input '{}' {} has unknown dims {} (set them with --shape {}={})",
                info.name,
                shape_string(&declared),
                unknown.join(", "),
                info.name,
                example.join("x")
            ));
        }
        shapes.push(shape);
    }
    if !missing.is_empty() {
        bail!(
            InvalidInput,
            "cannot make up inputs without knowing their sizes: {}; or fix a named dim everywhere with --dim SYMBOL=N, or pass input files",
            missing.join("; ")
        );
    }
    if !batch_notes.is_empty() {
        note!("crx580: note: batch dim {} set to 1 (change with --shape or --dim)", batch_notes.join(", "));
    }
    Ok(shapes)
}
