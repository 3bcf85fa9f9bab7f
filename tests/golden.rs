//! Golden model tests: small real-world-shaped models in tests/models/golden, made by the
//! generators in tests/models (gen_models.py and the gen_*.py beside it) with onnxruntime's outputs as
//! the reference, and committed. Every case a generator lists in its `MODELS` must be there, and
//! every one must pass.

mod common;

use std::path::Path;

/// The generators that write tests/models/golden.
const GENERATORS: &[&str] = &["gen_models.py", "gen_rnn_models.py", "gen_contrib_models.py", "gen_control_flow.py"];

#[test]
fn golden_models_match_onnxruntime() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    let dir = models.join("golden");
    let mut missing = vec![];
    for generator in GENERATORS {
        for name in common::generator_models(&models.join(generator)) {
            if !dir.join(&name).join("model.onnx").exists() {
                missing.push(format!("{name} (regenerate with: python tests/models/{generator})"));
            }
        }
    }
    assert!(missing.is_empty(), "golden cases missing from {}:\n{}", dir.display(), missing.join("\n"));
    let cases = common::cases_in(&dir, None);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| common::run_case(c, 1e-3, 1e-4).err().map(|e| format!("{}: {e}", c.display())))
        .collect();
    assert!(failures.is_empty(), "golden models failed:\n{}", failures.join("\n"));
    println!("{} golden models match onnxruntime", cases.len());
}

/// `int64_passthrough` claims to check int64 values a double cannot hold: its expected outputs must
/// have them, and a result one off in the last bit must fail.
#[test]
fn the_int64_golden_holds_values_beyond_a_double() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden/int64_passthrough");
    let sets = common::data_sets(&dir);
    assert!(!sets.is_empty(), "no data sets in {} (python tests/models/gen_models.py)", dir.display());
    for set in sets {
        let (_, expected) = common::read_data_set(&set).unwrap();
        let ids = &expected[0];
        let values = ids.as_slice::<i64>().unwrap();
        let inexact: Vec<i64> = values.iter().copied().filter(|&v| v as f64 as i128 != v as i128).collect();
        assert!(inexact.contains(&((1 << 53) + 1)) && inexact.contains(&i64::MAX), "{}: {values:?}", set.display());
        for (k, _) in values.iter().enumerate().filter(|(_, v)| inexact.contains(v)) {
            let mut off = values.to_vec();
            off[k] ^= 1;
            let off = crx580::ir::Tensor::new(ids.shape().to_vec(), off).unwrap();
            assert!(common::compare(&off, ids, 1e-3, 1e-4).is_err(), "{}: element {k} one off passed", set.display());
        }
    }
}
