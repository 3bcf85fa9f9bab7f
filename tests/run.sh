#!/usr/bin/env bash
# The whole test suite: unit and integration tests, golden models against onnxruntime's outputs,
# the ONNX node conformance suite (enforcing tests/conformance/node.txt), the model zoo (whole
# models generated with onnxruntime references), and the model server's protocol tests.
# Sets up a Python venv (.venv, or $CRX580_VENV) with the pinned reference packages on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CRX580_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt

# Regenerate the node test cases when missing or made by other versions of onnx or of the
# packages its reference computes with (a venv older than the lock in tests/requirements.txt).
node_dir=${CRX580_NODE_TESTS:-target/onnx-node-tests}
want=$("$venv/bin/python" tests/conformance/gen_node_tests.py --version)
if [ "$(cat "$node_dir/VERSION" 2>/dev/null)" != "$want" ]; then
    rm -rf "$node_dir"
    "$venv/bin/python" tests/conformance/gen_node_tests.py --out "$node_dir"
fi

# Regenerate the model zoo (whole models, too big to commit) when its generator sources change.
zoo_dir=${CRX580_ZOO:-target/model-zoo}
want=$("$venv/bin/python" tests/models/zoo/gen_zoo.py --hash --out "$zoo_dir")
if [ "$(cat "$zoo_dir/VERSION" 2>/dev/null)" != "$want" ]; then
    rm -rf "$zoo_dir"
    "$venv/bin/python" tests/models/zoo/gen_zoo.py --out "$zoo_dir"
fi

# The bomb scan: a tiny hostile model per op with a size-like attribute at 2^40 (~2 s).
scan_dir=${CRX580_BOMB_SCAN:-target/bomb-scan}
want=$("$venv/bin/python" tests/models/hostile/gen_bomb_scan.py --hash --out "$scan_dir")
if [ "$(cat "$scan_dir/VERSION" 2>/dev/null)" != "$want" ]; then
    rm -rf "$scan_dir"
    "$venv/bin/python" tests/models/hostile/gen_bomb_scan.py --out "$scan_dir"
fi

export CRX580_BOMB_SCAN="$scan_dir" CRX580_REQUIRE_BOMB_SCAN=1
export CRX580_NODE_TESTS="$node_dir" CRX580_REQUIRE_NODE_TESTS=1
export CRX580_ZOO="$zoo_dir" CRX580_REQUIRE_ZOO=1
cargo test --all-targets
cargo test --doc
# The model server against the protocol's Python client (tritonclient), openapi-spec-validator,
# prometheus_client's parser, schemathesis, headless Chromium (the status page) and the Grafana
# dashboard's queries (~20-40 s), on the crx580 binary that `cargo test` just built.
"$venv/bin/python" tests/serve/test_serve.py target/debug/crx580
# crx580 convert against onnx and onnxruntime: re-encoding, fp16, int8-dynamic and int8-static
# interop and accuracy on golden and zoo models (int8-static also on the digits demo's held-out
# split and an opset-9 ResNet-class graph), onnxruntime's quantize_dynamic and quantize_static
# side by side (~2 min).
cargo build --release --bin crx580
"$venv/bin/python" tests/convert/check_convert.py --crx580 target/release/crx580 --zoo "$zoo_dir" --out target/convert-check
