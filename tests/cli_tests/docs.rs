//! Completions and man pages come from the clap definitions, so they know every option; the bench
//! progress bar shows on a terminal and nowhere else.

use super::*;

#[test]
fn completions_know_the_subcommands_and_options() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef crx580"), ("fish", "complete -c crx580")] {
        let o = crx580(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["bench", "manpage", "preprocess", "shape"] {
            assert!(script.contains(word), "{shell} completions miss {word}");
        }
    }
    // bash parses the script it would source.
    let o = crx580(&["completions", "bash"]);
    let check = Command::new("bash").args(["-n", "-c", &stdout(&o)]).output().expect("bash");
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn man_pages_cover_each_subcommand() {
    let o = crx580(&["manpage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH crx580 1"), "{page}");
    assert!(page.contains("crx580\\-bench"), "{page}");
    let dir = temp_dir("man");
    let o = crx580(&["manpage", "--out-dir", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for sub in ["crx580.1", "crx580-run.1", "crx580-info.1", "crx580-bench.1", "crx580-devices.1"] {
        assert!(dir.join(sub).is_file(), "{sub} missing");
    }
    let bench = std::fs::read_to_string(dir.join("crx580-bench.1")).unwrap();
    assert!(bench.contains("\\-\\-shape") && bench.contains("\\-\\-warmup"), "{bench}");
}

fn digits_bench(runs: &str) -> Vec<String> {
    let model = digits().join("digits.onnx");
    ["bench", model.to_str().unwrap(), "--shape", "image=32x1x8x8", "--warmup", "0", "--runs", runs]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn bench_progress_stays_off_a_pipe() {
    let o = Command::new(env!("CARGO_BIN_EXE_crx580")).args(digits_bench("300")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "piped stderr gets no progress bar");
}

/// util-linux's `script` gives the command a terminal; the bar then draws on it (and is cleared).
#[test]
fn bench_progress_shows_on_a_terminal() {
    let exe = env!("CARGO_BIN_EXE_crx580");
    let args: Vec<String> = digits_bench("200").iter().map(|a| format!("'{a}'")).collect();
    let command = format!("'{exe}' {} >/dev/null", args.join(" "));
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("`script` (util-linux, in Debian's bsdutils) runs commands on a terminal");
    assert!(o.status.success(), "{}", stderr(&o));
    let screen = stdout(&o);
    // 201: the cold run, then the 200 timed ones.
    assert!(screen.contains("/201 runs"), "no progress bar on the terminal: {screen:?}");
}
