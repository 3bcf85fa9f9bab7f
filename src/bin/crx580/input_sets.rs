//! Input sets for `crx580 convert` (calibration batches and --report data): read from .npy/.pb
//! files and directories, each checked against the model's inputs, or generated at random.
//!
//! The layout: for a model with one input, every .npy/.pb file given (or found in a directory
//! given, sorted by name) is one set; a file holding several samples for an input of fixed batch
//! 1 gives one set per sample. For a model with several inputs, each set is a directory holding
//! NAME.npy for every input NAME; a directory given whose own files are not that is taken as a
//! parent of such set directories (its subdirectories, sorted by name).

use crate::random::{random_tensor, Uniform};
use crx580::{bail, err, Dim, IoInfo, Result, Tensor};
use std::path::{Path, PathBuf};

/// One tensor per model input, by name.
pub type InputSet = Vec<(String, Tensor)>;

/// `count` sets of random inputs: floats uniform in [0, 1), other types zero, each set from its own
/// seed so that the sets differ.
pub fn generated_sets(infos: &[IoInfo], shapes: &[Vec<usize>], count: usize) -> Result<Vec<InputSet>> {
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
pub fn file_sets(infos: &[IoInfo], paths: &[PathBuf]) -> Result<Vec<InputSet>> {
    let mut sets = vec![];
    if let [info] = infos {
        for file in tensor_files(paths)? {
            let t = crx580::io::read_tensor_file(&file)?.0;
            for t in split_batch(t, info) {
                sets.push(vec![(info.name.clone(), fits(t, info, &file)?)]);
            }
        }
    } else {
        for dir in set_dirs(infos, paths)? {
            let dir = &dir;
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

/// The set directories for a model with several inputs: each directory given that holds the
/// first input's NAME.npy, or else the subdirectories of one that does not.
fn set_dirs(infos: &[IoInfo], paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let first = infos.first().map(|i| format!("{}.npy", i.name)).unwrap_or_default();
    let mut dirs = vec![];
    for p in paths {
        if !p.is_dir() || p.join(&first).exists() {
            dirs.push(p.clone());
            continue;
        }
        let entries = std::fs::read_dir(p).map_err(|e| err!(Io, "cannot read {}: {e}", p.display()))?;
        let mut subs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|d| d.is_dir()).collect();
        subs.sort();
        if subs.is_empty() {
            dirs.push(p.clone()); // reported as missing NAME.npy below
        }
        dirs.extend(subs);
    }
    Ok(dirs)
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
