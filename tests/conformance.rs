//! ONNX node conformance: runs every case that tests/conformance/gen_node_tests.py wrote out and
//! enforces tests/conformance/node.txt, the list of cases that pass. A listed case that fails breaks
//! the build; a passing case missing from the list is reported so that it gets added
//! (`CRX580_UPDATE_MANIFEST=1` rewrites the list).
//!
//! The cases live in `$CRX580_NODE_TESTS` (default `target/onnx-node-tests`). Without them this
//! program says so loudly and, if `CRX580_REQUIRE_NODE_TESTS=1` (as in CI), fails.

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-5;
const MANIFEST: &str = "tests/conformance/node.txt";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(dir) = common::generated_dir(
        "CRX580_NODE_TESTS",
        "onnx-node-tests",
        "CRX580_REQUIRE_NODE_TESTS",
        "ONNX node conformance",
        "tests/conformance/gen_node_tests.py",
    ) else {
        return;
    };
    let filter = common::name_filter();
    let cases = common::cases_in(&dir, filter.as_deref());
    if cases.is_empty() {
        eprintln!("no node test cases in {} match {filter:?}", dir.display());
        eprintln!("regenerate them with: python tests/conformance/gen_node_tests.py --out {}", dir.display());
        std::process::exit(1);
    }

    let manifest_text = std::fs::read_to_string(root.join(MANIFEST)).unwrap_or_default();
    let listed: BTreeSet<String> = manifest_text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();

    let results = run_all(&cases);
    let mut passed = BTreeSet::new();
    let mut regressions = vec![];
    for (name, r) in &results {
        match r {
            Ok(()) => {
                passed.insert(name.clone());
            }
            Err(msg) => {
                if listed.contains(name) {
                    regressions.push(format!("{name}: {msg}"));
                } else if msg.starts_with("panicked") {
                    // Not enforced, but a panic is a bug to see, not a missing feature.
                    eprintln!("PANIC (case not on the list) {name}: {msg}");
                } else if std::env::var("CRX580_VERBOSE").is_ok() {
                    eprintln!("FAIL {name}: {msg}");
                }
            }
        }
    }
    let newly: Vec<&String> = passed.iter().filter(|n| !listed.contains(*n)).collect();
    println!(
        "ONNX node conformance: {} of {} cases pass ({} on the enforced list)",
        passed.len(),
        results.len(),
        listed.len()
    );
    if !newly.is_empty() {
        println!("{} passing cases are not on {MANIFEST} yet (CRX580_UPDATE_MANIFEST=1 adds them):", newly.len());
        for n in newly.iter().take(50) {
            println!("  + {n}");
        }
    }
    if filter.is_none() && std::env::var("CRX580_UPDATE_MANIFEST").is_ok_and(|v| v == "1") {
        let keep: BTreeSet<&String> =
            passed.iter().chain(listed.iter().filter(|n| !results.iter().any(|(r, _)| r == *n))).collect();
        let body: String = keep.iter().map(|n| format!("{n}\n")).collect();
        let header = "# ONNX node test cases that pass on the CPU; CI fails if any of them fails.\n";
        std::fs::write(root.join(MANIFEST), format!("{header}{body}")).expect("write the manifest");
        println!("rewrote {MANIFEST} with {} cases", keep.len());
    }
    let missing: Vec<&String> = if filter.is_none() {
        listed.iter().filter(|n| !results.iter().any(|(r, _)| r == *n)).collect()
    } else {
        vec![]
    };
    if !regressions.is_empty() || !missing.is_empty() {
        eprintln!("\n{} listed cases FAIL:", regressions.len() + missing.len());
        for r in &regressions {
            eprintln!("  - {r}");
        }
        for m in &missing {
            eprintln!("  - {m}: case not found in {}", dir.display());
        }
        if !missing.is_empty() {
            eprintln!("regenerate the cases with: python tests/conformance/gen_node_tests.py --out {}", dir.display());
        }
        std::process::exit(1);
    }
}

thread_local! {
    /// Set while this thread runs a case: the panic hook keeps the message here instead of printing it.
    static CASE_PANIC: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Runs the cases on all cores. A case that panics fails with the panic's message and place, which
/// the report prints beside the case name (the hook keeps them rather than printing them from the
/// worker thread, where they would be interleaved and nameless); panics outside a case print as usual.
fn run_all(cases: &[PathBuf]) -> Vec<(String, Result<(), String>)> {
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::with_capacity(cases.len()));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let kept = CASE_PANIC.with(|p| match &mut *p.borrow_mut() {
            Some(slot) => {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                *slot = Some(format!("{msg}{place}"));
                true
            }
            None => false,
        });
        if !kept {
            default_hook(info);
        }
    }));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(case) = cases.get(i) else { break };
                let name = case.file_name().unwrap().to_string_lossy().to_string();
                CASE_PANIC.with(|p| *p.borrow_mut() = Some(None));
                let r = std::panic::catch_unwind(|| common::run_case(case, RTOL, ATOL));
                let message = CASE_PANIC.with(|p| p.borrow_mut().take().flatten());
                let r = r
                    .unwrap_or_else(|_| Err(format!("panicked: {}", message.unwrap_or_else(|| "(no message)".into()))));
                results.lock().unwrap().push((name, r));
            });
        }
    });
    let _ = std::panic::take_hook();
    let mut r = results.into_inner().unwrap();
    r.sort_by(|a, b| a.0.cmp(&b.0));
    r
}
