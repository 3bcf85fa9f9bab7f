#!/usr/bin/env bash
# The CPU backend on aarch64: cross-builds the library's tests and runs the kernel tests (the NEON
# GEMM micro-kernel against the triple loop, the fast kernels against the reference interpreter,
# the thread pool) under qemu-user. Needs the aarch64 Rust target, gcc-aarch64-linux-gnu and
# qemu-user (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
out=$(cargo test --target "$target" --lib --no-default-features -- backend::cpu 2>&1) || {
    echo "$out" >&2
    exit 1
}
echo "$out" | grep -E "^test |^test result"
# The ISA the kernels ran with must be NEON: a build that silently fell back to the portable
# kernels would pass the parity tests without testing what aarch64 users run.
echo "$out" | grep -q "products_match_the_triple_loop_on_every_isa ... ok" || {
    echo "tests/aarch64.sh: the GEMM test across ISAs did not run" >&2
    exit 1
}
