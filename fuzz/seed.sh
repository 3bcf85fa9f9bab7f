#!/usr/bin/env bash
# Builds the seed corpora in fuzz/corpus/<target> from what the repository has and generates:
# the ONNX node-test models and their .pb data (tests/run.sh makes them in target/onnx-node-tests),
# the golden, hostile and demo models, the model zoo's smaller models, and the .npy files.
# Seeds are copied, never committed; libFuzzer adds what it finds to the same folders.
set -euo pipefail
cd "$(dirname "$0")/.."
node=${CRX580_NODE_TESTS:-target/onnx-node-tests}
zoo=${CRX580_ZOO:-target/model-zoo}
out=fuzz/corpus
mkdir -p "$out"/{load_model,load_and_run,read_npy,read_pb}

seed() { # seed TARGET FILE: copy under a name made from the file's content hash
    cp "$2" "$out/$1/seed-$(sha1sum "$2" | cut -c1-16)"
}

models=(examples/digits/digits.onnx tests/models/golden/*/model.onnx tests/models/hostile/*.onnx)
if [ -d "$node" ]; then
    models+=("$node"/*/model.onnx)
else
    echo "fuzz/seed.sh: no node tests in $node (run tests/run.sh first); seeding from the repository only" >&2
fi
if [ -d "$zoo" ]; then
    while IFS= read -r f; do models+=("$f"); done < <(find "$zoo" -name '*.onnx' -size -1M)
fi
for m in "${models[@]}"; do
    [ -f "$m" ] || continue
    seed load_model "$m"
    seed load_and_run "$m"
done
while IFS= read -r f; do seed read_npy "$f"; done < <(find examples tests -name '*.npy')
while IFS= read -r f; do seed read_pb "$f"; done < <(find tests/models -name '*.pb' | head -400)
if [ -d "$node" ]; then
    while IFS= read -r f; do seed read_pb "$f"; done < <(find "$node" -name '*.pb' | awk 'NR % 8 == 0' | head -600)
fi
for t in load_model load_and_run read_npy read_pb; do
    echo "fuzz/seed.sh: $t: $(ls "$out/$t" | wc -l) seeds"
done
