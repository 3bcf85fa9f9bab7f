//! The model zoo: whole models of the families users ship, at the input sizes their apps feed,
//! against onnxruntime's outputs. tests/models/zoo/gen_zoo.py writes them (too big to commit) into
//! `$CRX580_ZOO` (default `target/model-zoo`); tests/run.sh does that for you.
//!
//! Tolerance is the one users judge a runtime by: `|got - ref| <= rtol*|ref| + atol*scale`, rtol 1e-3
//! and atol 1e-4, where `scale` is `max(1, max|ref|)` over the element's component
//! ([`common::compare_zoo`]). An output holds one kind of quantity (logits, probabilities, hidden
//! states) and is one component, unless [`COMPONENT_AXES`] names the axis along which it packs
//! different kinds: a detector's `[1, boxes, 4+1+classes]` (YOLOv5) or `[1, 4+classes, anchors]`
//! (YOLOv8) has pixel coordinates near 640 beside 0-1 scores, and each index on that axis is its own
//! component, so the coordinates widen their own column's tolerance, never the scores'. A model
//! whose output mixes magnitudes that way must be listed there. Integer outputs must match exactly.
//! Without the generated models this program says so loudly and, if `CRX580_REQUIRE_ZOO=1` (as in
//! CI), fails.
//!
//! `cargo test --test zoo -- NAME` runs only the models whose name contains NAME.

mod common;

use crx580::ir::Tensor;
use crx580::{Model, Session, SessionOptions};
use std::path::Path;
use std::time::Instant;

/// Outputs that pack quantities of different magnitudes along an axis: (model, output name, axis).
const COMPONENT_AXES: &[(&str, &str, usize)] = &[
    // [1, 25200, 85]: per box, x, y, w, h in pixels, then objectness and 80 class scores.
    ("yolov5s", "output0", 2),
    // [1, 84, 8400]: 4 box coordinates in pixels, then 80 class scores, each a row over the anchors.
    ("yolov8n", "output0", 1),
];

thread_local! {
    /// The [`COMPONENT_AXES`] entries used so far: a full run fails on one that matched nothing.
    static USED_AXES: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The component axis of output `output` of zoo model `model`; `None`: the output is one component.
fn component_axis(model: &str, output: &str) -> Option<usize> {
    let k = COMPONENT_AXES.iter().position(|(m, o, _)| *m == model && *o == output)?;
    USED_AXES.with(|u| u.borrow_mut().push(k));
    Some(COMPONENT_AXES[k].2)
}

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
    // Every model the generator makes (and the filter selects) must be there.
    let zoo_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/zoo");
    let missing: Vec<String> = common::python_list(&zoo_src.join("gen_zoo.py"), "FAMILIES")
        .iter()
        .flat_map(|family| common::generator_models(&zoo_src.join(format!("{family}.py"))))
        .filter(|name| filter.as_deref().is_none_or(|f| name.contains(f)))
        .filter(|name| !dir.join(name).join("model.onnx").exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("zoo models missing from {}: {}", dir.display(), missing.join(", "));
        eprintln!("generate them with: python tests/models/zoo/gen_zoo.py --out {}", dir.display());
        std::process::exit(1);
    }
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
    if filter.is_none() {
        for (k, (m, o, _)) in COMPONENT_AXES.iter().enumerate() {
            if !USED_AXES.with(|u| u.borrow().contains(&k)) {
                failures.push(format!("COMPONENT_AXES names {m}/{o}, which no zoo model has"));
            }
        }
    }
    if !failures.is_empty() {
        eprintln!("failing zoo models: {}", failures.join(", "));
        std::process::exit(1);
    }
}

/// Runs every data set of one model; `Ok` carries the worst ratio of error to allowed error.
fn run_case(case: &Path) -> Result<f64, String> {
    let name = case.file_name().unwrap_or_default().to_string_lossy().to_string();
    let model = Model::load(case.join("model.onnx")).map_err(|e| format!("load: {e}"))?;
    let session = Session::new(model, &SessionOptions::default()).map_err(|e| format!("session: {e}"))?;
    let output_names: Vec<String> = session.model().outputs().iter().map(|o| o.name.clone()).collect();
    let sets = common::data_sets(case);
    if sets.is_empty() {
        return Err("no test_data_set_* folders".into());
    }
    let mut worst = 0f64;
    for set in &sets {
        let (inputs, expected) = common::read_data_set(set)?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let outputs = session.run_positional(&refs).map_err(|e| format!("run: {e}"))?;
        if outputs.len() != expected.len() || outputs.len() != output_names.len() {
            return Err(format!("{} outputs, expected {}", outputs.len(), expected.len()));
        }
        for (k, (o, e)) in outputs.iter().zip(&expected).enumerate() {
            let axis = component_axis(&name, &output_names[k]);
            let ratio = common::compare_zoo(o, e, axis).map_err(|m| {
                format!(
                    "{}/output {k} ({}): {m}",
                    set.file_name().unwrap_or_default().to_string_lossy(),
                    output_names[k]
                )
            })?;
            worst = worst.max(ratio);
        }
    }
    Ok(worst)
}
