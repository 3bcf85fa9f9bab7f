#!/usr/bin/env bash
# CI's fuzz smoke run: builds every cargo-fuzz target and runs each for a short time (FUZZ_SECONDS,
# default 45) from the seed corpus, so that the harness cannot rot. Any crash, timeout or
# out-of-memory fails the script; libFuzzer leaves the input in fuzz/artifacts/<target>/.
# Installs what it needs when missing: the pinned nightly toolchain (cargo fuzz needs nightly for
# its sanitizer flags) and the pinned cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
NIGHTLY=nightly-2026-06-01
CARGO_FUZZ_VERSION=0.13.1
seconds=${FUZZ_SECONDS:-45}

rustup toolchain list | grep -q "^$NIGHTLY" || rustup toolchain install "$NIGHTLY" --profile minimal
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
bash fuzz/seed.sh

targets=(load_model read_npy read_pb load_and_run)
cargo "+$NIGHTLY" fuzz build
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    echo "fuzz smoke: $t for ${seconds}s"
    if ! cargo "+$NIGHTLY" fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
        -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1; then
        tail -n 40 "fuzz/logs/$t.log" >&2
        echo "fuzz smoke: $t FAILED (input in fuzz/artifacts/$t, log in fuzz/logs/$t.log)" >&2
        exit 1
    fi
    grep -E "stat::number_of_executed_units|^#[0-9]+ +DONE" "fuzz/logs/$t.log" || true
done
echo "fuzz smoke: all targets ran clean"
