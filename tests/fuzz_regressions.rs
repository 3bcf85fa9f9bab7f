//! Every input that once crashed, aborted, hung or blew up memory in a fuzz target (fuzz/regressions/
//! <target>/, minimised by `cargo fuzz tmin`, plus the window-op models that
//! tests/models/hostile/gen_bomb_scan.py found), replayed through the same code as the fuzz targets
//! (fuzz/harness.rs) on the stable toolchain: each must now return, without a panic.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_input_the_fuzzers_found_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 4] = [
        ("load_model", harness::load_model),
        ("load_and_run", harness::load_and_run),
        ("read_npy", harness::read_npy),
        ("read_pb", harness::read_pb),
    ];
    let mut replayed = 0;
    for (target, run) in targets {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("{target} panicked on {}", f.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 6, "expected the committed regression inputs in {}, found {replayed}", root.display());
}
