#!/usr/bin/env bash
# CI's fuzz smoke run: builds every cargo-fuzz target and runs each from the seed corpus for a fixed
# number of inputs with a fixed random seed (about 30-60 s each here, FUZZ_SECONDS at most), so
# that the harness cannot rot and a green run is repeatable: finding new bugs is the job of the
# long runs (fuzz/README.md), not of CI. Any crash, timeout or out-of-memory fails the script;
# libFuzzer leaves the input in fuzz/artifacts/<target>/.
# Installs what it needs when missing: the pinned nightly toolchain (cargo fuzz needs nightly for
# its sanitizer flags) and the pinned cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
NIGHTLY=nightly-2026-06-01
CARGO_FUZZ_VERSION=0.13.1
seconds=${FUZZ_SECONDS:-120}

rustup toolchain list | grep -q "^$NIGHTLY" || rustup toolchain install "$NIGHTLY" --profile minimal
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
bash fuzz/seed.sh

targets=(load_model read_npy read_pb load_and_run)
# Inputs per target: each target's speed on a 2-core machine times about 40 s.
declare -A runs=([load_model]=100000 [read_npy]=1000000 [read_pb]=300000 [load_and_run]=30000)
cargo "+$NIGHTLY" fuzz build
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    echo "fuzz smoke: $t, ${runs[$t]} inputs (at most ${seconds}s)"
    if ! cargo "+$NIGHTLY" fuzz run "$t" "fuzz/corpus/$t" -- \
        -seed=1 -runs="${runs[$t]}" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1; then
        tail -n 40 "fuzz/logs/$t.log" >&2
        echo "fuzz smoke: $t FAILED (input in fuzz/artifacts/$t, log in fuzz/logs/$t.log)" >&2
        exit 1
    fi
    grep -E "stat::number_of_executed_units|^#[0-9]+ +DONE" "fuzz/logs/$t.log" || true
done
echo "fuzz smoke: all targets ran clean"
