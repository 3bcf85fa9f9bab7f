//! The model zoo: whole models of the families users ship, at the input sizes their apps feed,
//! against onnxruntime's outputs. tests/models/zoo/gen_zoo.py writes them (too big to commit) into
//! `$CRX580_ZOO` (default `target/model-zoo`); tests/run.sh does that for you.
//!
//! Tolerance is the one users judge a runtime by: `|got - ref| <= rtol*|ref| + atol*max(1, max|ref|)`
//! per output, with rtol 1e-3 and atol 1e-4; integer outputs must match exactly. Without the
//! generated models this program says so loudly and, if `CRX580_REQUIRE_ZOO=1` (as in CI), fails.
//!
//! `cargo test --test zoo -- NAME` runs only the models whose name contains NAME.

mod common;

use crx580::ir::Tensor;
use crx580::{Model, Session, SessionOptions};
use std::path::Path;
use std::time::Instant;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;

fn main() {
    let Some(dir) = common::generated_dir(
        "CRX580_ZOO",
        "model-zoo",
        "CRX580_REQUIRE_ZOO",
        "model zoo",
        "tests/models/zoo/gen_zoo.py",
    ) else {
        return;
    };
    let filter = common::name_filter();
    let cases = common::cases_in(&dir, filter.as_deref());
    if cases.is_empty() {
        eprintln!("no zoo models in {} match {filter:?}", dir.display());
        std::process::exit(1);
    }
    let mut failures = vec![];
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let start = Instant::now();
        let result = run_case(case);
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(worst) => println!("zoo {name:<28} ok    {secs:6.2}s  worst error / allowed = {worst:.3}"),
            Err(msg) => {
                println!("zoo {name:<28} FAIL  {secs:6.2}s  {msg}");
                failures.push(name);
            }
        }
    }
    println!("model zoo: {} of {} models match onnxruntime", cases.len() - failures.len(), cases.len());
    if !failures.is_empty() {
        eprintln!("failing zoo models: {}", failures.join(", "));
        std::process::exit(1);
    }
}

/// Runs every data set of one model; `Ok` carries the worst ratio of error to allowed error.
fn run_case(case: &Path) -> Result<f64, String> {
    let model = Model::load(case.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let session = Session::new(model, &SessionOptions::default()).map_err(|e| format!("session: {e}"))?;
    let sets = common::data_sets(case);
    if sets.is_empty() {
        return Err("no test_data_set_* folders".into());
    }
    let mut worst = 0f64;
    for set in &sets {
        let (inputs, expected) = common::read_data_set(set)?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let outputs = session.run_positional(&refs).map_err(|e| format!("run: {e}"))?;
        if outputs.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", outputs.len(), expected.len()));
        }
        for (k, (o, e)) in outputs.iter().zip(&expected).enumerate() {
            let at = || format!("{}/output {k}", set.file_name().unwrap_or_default().to_string_lossy());
            if !e.dtype().is_float() {
                common::compare(o, e, 0.0, 0.0).map_err(|m| format!("{}: {m}", at()))?;
                continue;
            }
            let scale = e.to_f64_vec().map_err(|m| m.to_string())?.iter().fold(1f64, |m, v| m.max(v.abs()));
            common::compare(o, e, RTOL, ATOL * scale).map_err(|m| format!("{}: {m}", at()))?;
            worst = worst.max(worst_ratio(o, e, ATOL * scale)?);
        }
    }
    Ok(worst)
}

/// max over elements of |got - ref| / (rtol*|ref| + atol): how close a passing output came to failing.
fn worst_ratio(got: &Tensor, want: &Tensor, atol: f64) -> Result<f64, String> {
    let (g, w) = (got.to_f64_vec().map_err(|e| e.to_string())?, want.to_f64_vec().map_err(|e| e.to_string())?);
    Ok(g.iter()
        .zip(&w)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a - b).abs() / (RTOL * b.abs() + atol))
        .fold(0.0, f64::max))
}
