//! Output to a reader that stops early ends quietly with status 0, for every command: no "failed
//! printing to stdout" panic, nothing on stderr.

use super::*;
use std::io::Read;
use std::process::Stdio;

/// Every command that prints, with its arguments.
fn printing_commands() -> Vec<Vec<String>> {
    let model = digits().join("digits.onnx").to_str().unwrap().to_string();
    let samples = digits().join("samples.npy").to_str().unwrap().to_string();
    let m = model.as_str();
    let lists: Vec<Vec<&str>> = vec![
        vec!["run"],
        vec!["run", m, &samples],
        vec!["info", m],
        vec!["info", m, "--json"],
        vec!["bench", m, "--runs", "2", "--warmup", "0"],
        vec!["bench", m, "--runs", "2", "--warmup", "0", "--json"],
        vec!["devices"],
        vec!["--help"],
        vec!["run", "--help"],
        vec!["--version"],
        vec!["completions", "bash"],
        vec!["manpage"],
    ];
    lists.into_iter().map(|l| l.into_iter().map(String::from).collect()).collect()
}

/// The reader is gone before the first byte is written, so every command hits a closed pipe.
#[test]
fn a_closed_stdout_ends_each_command_quietly() {
    for args in printing_commands() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crx580"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_BACKTRACE")
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        // bench notes that the symbolic batch dim N was set to 1; nothing else may appear.
        let err: Vec<&str> = err.lines().filter(|l| !l.starts_with("crx580: note: batch dim")).collect();
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err:?}");
    }
}

/// As a user types it: `crx580 ... | head -n 1` under pipefail, so crx580's own status counts.
#[test]
fn each_command_piped_into_head_exits_zero_with_empty_stderr() {
    let exe = env!("CARGO_BIN_EXE_crx580");
    for args in printing_commands() {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!("set -o pipefail; '{exe}' {} | head -n 1 >/dev/null", quoted.join(" "));
        let o = Command::new("bash").args(["-c", &script]).env_remove("RUST_BACKTRACE").output().expect("bash");
        let err = stderr(&o);
        assert!(o.status.success(), "{args:?}: status {:?}, stderr {err}", o.status);
        let err: Vec<&str> = err.lines().filter(|l| !l.starts_with("crx580: note: batch dim")).collect();
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err:?}");
    }
}

/// A full disk is an error, said in one line, not a panic.
#[test]
fn a_failing_stdout_is_a_one_line_error() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full (Linux)");
    let o = Command::new(env!("CARGO_BIN_EXE_crx580")).arg("devices").stdout(full).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim(), "crx580: error: cannot write to stdout: No space left on device (os error 28)");
}
