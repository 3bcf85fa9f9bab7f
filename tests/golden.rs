//! Golden model tests: small real-world-shaped models in tests/models/golden, made by
//! tests/models/gen_models.py with onnxruntime's outputs as the reference. Every one must pass.

mod common;

use std::path::Path;

#[test]
fn golden_models_match_onnxruntime() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "expected the golden models in {}, found {}", dir.display(), cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| common::run_case(c, 1e-3, 1e-4).err().map(|e| format!("{}: {e}", c.display())))
        .collect();
    assert!(failures.is_empty(), "golden models failed:\n{}", failures.join("\n"));
}
