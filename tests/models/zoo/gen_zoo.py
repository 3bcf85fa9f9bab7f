#!/usr/bin/env python3
"""Generate the model zoo: whole models of the families users ship (CNN classifiers, detectors, OCR
recognizers, transformers, audio models with control flow), at the input sizes their apps feed,
with onnxruntime's outputs as the reference. They are too big to commit, so tests/run.sh makes them
in target/model-zoo (again whenever this folder's sources change) and tests/zoo.rs runs them.

Each family module in this folder (listed in FAMILIES) has ``MODELS``: functions that return
``(model, [feeds, ...])``; the function's name is the case name. The layout written is the ONNX
backend-test layout, as for tests/models/golden.

Usage:
    python tests/models/zoo/gen_zoo.py --out DIR [NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

FAMILIES = ["classifiers", "detectors", "ocr", "transformers", "audio"]


def sources_hash() -> str:
    """A hash of every generator source: run.sh regenerates the zoo when it changes."""
    h = hashlib.sha256(f"{onnx.__version__} {ort.__version__} {np.__version__}".encode())
    for f in sorted(os.listdir(HERE)):
        if f.endswith(".py"):
            with open(os.path.join(HERE, f), "rb") as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()[:16]


def run_ort(model, feeds):
    so = ort.SessionOptions()
    # Unoptimised, so that the reference is the graph as written (fusions change float rounding).
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return sess.run(names, feeds)


def write_case(out_dir, name, model, feeds_list):
    case_dir = os.path.join(out_dir, name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    onnx.save(model, os.path.join(case_dir, "model.onnx"))
    for k, feeds in enumerate(feeds_list):
        outs = run_ort(model, feeds)
        for o, v in zip(model.graph.output, outs):
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise AssertionError(f"{name}/{o.name}: onnxruntime output is not finite; rescale the weights")
        ds = os.path.join(case_dir, f"test_data_set_{k}")
        os.makedirs(ds)
        for i, inp in enumerate(model.graph.input):
            with open(os.path.join(ds, f"input_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(np.asarray(feeds[inp.name]), inp.name).SerializeToString())
        for i, (out, v) in enumerate(zip(model.graph.output, outs)):
            with open(os.path.join(ds, f"output_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(np.asarray(v), out.name).SerializeToString())
        shapes = ", ".join(f"{o.name}{list(np.shape(v))}" for o, v in zip(model.graph.output, outs))
        print(f"  {name}/test_data_set_{k}: {shapes}", flush=True)


def all_models():
    for fam in FAMILIES:
        for fn in importlib.import_module(fam).MODELS:
            yield fam, fn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--hash", action="store_true", help="print the sources hash and exit")
    ap.add_argument("names", nargs="*", help="only these models (default: all)")
    args = ap.parse_args()
    if args.hash:
        print(sources_hash())
        return 0
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__} -> {out}", flush=True)
    for fam, fn in all_models():
        if args.names and fn.__name__ not in args.names:
            continue
        t = time.time()
        model, feeds = fn()
        write_case(out, fn.__name__, model, feeds)
        print(f"{fam}/{fn.__name__}: {time.time() - t:.1f}s", flush=True)
    if not args.names:
        with open(os.path.join(out, "VERSION"), "w") as f:
            f.write(sources_hash() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
