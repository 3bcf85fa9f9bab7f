//! Shared by the test programs: running a test case laid out as ONNX's backend tests are
//! (`model.onnx` + `test_data_set_*/input_*.pb, output_*.pb`) and comparing outputs.

#![allow(dead_code)]

use crx580::ir::{DType, Tensor};
use crx580::{Model, Session, SessionOptions};
use std::path::{Path, PathBuf};

/// Closeness test: `|actual - expected| <= atol + rtol * |expected|`, NaN matches NaN; integers,
/// bools and strings must be equal.
pub fn compare(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!("dtype {} != expected {}", actual.dtype(), expected.dtype()));
    }
    if actual.shape() != expected.shape() {
        return Err(format!("shape {:?} != expected {:?}", actual.shape(), expected.shape()));
    }
    if actual.dtype() == DType::String {
        return if actual == expected { Ok(()) } else { Err("strings differ".into()) };
    }
    let (a, e) = (actual.to_f64_vec().map_err(|e| e.to_string())?, expected.to_f64_vec().map_err(|e| e.to_string())?);
    // float8/float4 results are compared exactly too (NaN matching NaN): they come from a single rounding.
    let exact = !actual.dtype().is_float() && !actual.dtype().is_narrow_float();
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = if exact {
            x == y || (x.is_nan() && y.is_nan())
        } else {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * y.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {x}, expected {y}"));
        }
    }
    Ok(())
}

/// The `test_data_set_*` folders of a case, sorted.
pub fn data_sets(case: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    sets.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")));
    sets.sort();
    sets
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..).map(|k| dir.join(format!("{prefix}_{k}.pb"))).take_while(|p| p.exists()).collect()
}

/// The inputs and expected outputs of one `test_data_set_*` folder.
pub fn read_data_set(set: &Path) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    let read = |p: &PathBuf| crx580::io::read_tensor_file(p).map(|(t, _)| t).map_err(|e| format!("data: {e}"));
    let inputs: Vec<Tensor> = numbered(set, "input").iter().map(read).collect::<Result<_, _>>()?;
    let expected: Vec<Tensor> = numbered(set, "output").iter().map(read).collect::<Result<_, _>>()?;
    Ok((inputs, expected))
}

/// Loads and runs one case on every data set; `Err` says what failed.
pub fn run_case(case: &Path, rtol: f64, atol: f64) -> Result<(), String> {
    let model = Model::load(case.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let session = Session::new(model, &SessionOptions::default()).map_err(|e| format!("session: {e}"))?;
    let sets = data_sets(case);
    if sets.is_empty() {
        return Err("no test_data_set_* folders".into());
    }
    for set in sets {
        let (inputs, expected) = read_data_set(&set)?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let outputs = session.run_positional(&refs).map_err(|e| format!("run: {e}"))?;
        if outputs.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", outputs.len(), expected.len()));
        }
        for (k, (o, e)) in outputs.iter().zip(&expected).enumerate() {
            compare(o, e, rtol, atol).map_err(|m| format!("output {k}: {m}"))?;
        }
    }
    Ok(())
}
