#!/usr/bin/env python3
"""Generate the benchmark models of benches/compare.py: real model shapes with seeded random weights
(built by the model zoo's builders in tests/models/zoo, not copied), each with one input feed as
.npy files so that crx580 and onnxruntime run on the same inputs.

    resnet50           torchvision ResNet-50 (BN folded), 1x3x224x224
    mobilenet_v2       torchvision MobileNetV2 (ReLU6 as Clip, depthwise convs), 1x3x224x224
    yolov8n            ultralytics YOLOv8n with its DFL/anchor decode, 1x3x640x640
    dbnet_mv3          PaddleOCR DBNet text detector (MobileNetV3 backbone, unfolded BN), 1x3x640x640
    crnn_mv3           PaddleOCR CRNN recognizer (MobileNetV3-small, 2 bidirectional LSTMs), 1x3x32x320
    minilm_l6          MiniLM-L6-H384 (6 layers, hidden 384, 12 heads) as torch exported it at
                       opset 11: decomposed LayerNorm and Gelu, MatMul+Add; batch 1, sequence 128
    minilm_l6_int8     minilm_l6 through onnxruntime.quantization.quantize_dynamic (QInt8 weights)
    vad                Silero-VAD-like: nested If on the sample rate, STFT as Conv1d, two LSTMs on
                       64-wide state; 512 samples at 16 kHz (small tensors: per-node overhead)

Layout written (one folder per model):

    DIR/<name>/model.onnx
    DIR/<name>/input_<k>.npy   the feed for graph input k (model input order)
    DIR/<name>/meta.json       input names, how compare.py checks outputs, the sources hash
    DIR/VERSION                the sources hash, once every model is there

A model is regenerated only when its meta.json holds another sources hash (this folder's and the
zoo's sources, and the onnx/onnxruntime/numpy versions), so running this again is cheap.

Usage:
    python benches/models/gen_bench_models.py --out DIR [NAME ...]
    python benches/models/gen_bench_models.py --hash
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ZOO = os.path.join(HERE, "..", "..", "tests", "models", "zoo")
sys.path.insert(0, ZOO)

import audio  # noqa: E402
import classifiers  # noqa: E402
import detectors  # noqa: E402
import ocr  # noqa: E402
import transformers  # noqa: E402


@dataclass
class Bench:
    name: str
    build: Callable[[], tuple[onnx.ModelProto, dict]]
    # How compare.py checks crx580's outputs against onnxruntime's: "float" (rtol/atol, integers
    # exact) or "quantized" (within quantisation steps); the rules are in benches/output_check.py.
    check: dict = field(default_factory=lambda: {"kind": "float"})


def first_feed(fn):
    """The zoo function's model with its first data set (batch 1 at the size its apps feed)."""
    def build():
        model, feeds = fn()
        return model, feeds[0]
    return build


def minilm_int8():
    """The opset-11 MiniLM through quantize_dynamic: MatMuls become DynamicQuantizeLinear +
    MatMulInteger + Cast/Mul, the embedding Gathers read int8 tables through DequantizeLinear."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, feeds = first_feed(transformers.bert_l6_decomposed)()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        quantized = onnx.load(dst)
    ops = {n.op_type for n in quantized.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, f"quantize_dynamic wrote {sorted(ops)}"
    return quantized, feeds


BENCHES = [
    Bench("resnet50", first_feed(classifiers.resnet50)),
    Bench("mobilenet_v2", first_feed(classifiers.mobilenet_v2)),
    # output0 packs pixel coordinates (rows 0-3) beside 0-1 scores: each row is its own scale.
    Bench("yolov8n", first_feed(detectors.yolov8n), {"kind": "float", "component_axes": {"output0": 1}}),
    Bench("dbnet_mv3", first_feed(detectors.dbnet_mv3)),
    Bench("crnn_mv3", first_feed(ocr.crnn_mv3)),
    Bench("minilm_l6", first_feed(transformers.bert_l6_decomposed)),
    # onnxruntime's optimised and unoptimised sessions differ by up to 5.1 steps, 1.0 on average
    # (the pooler output): the limits leave twice that (benches/output_check.py).
    Bench("minilm_l6_int8", minilm_int8, {"kind": "quantized", "max_steps": 12, "mean_steps": 2}),
    Bench("vad", first_feed(audio.vad)),
]
NAMES = [b.name for b in BENCHES]


def sources_hash() -> str:
    """Of this folder's and the zoo's Python sources and the package versions they generate with."""
    h = hashlib.sha256(f"{onnx.__version__} {ort.__version__} {np.__version__}".encode())
    for folder in (HERE, ZOO):
        for f in sorted(os.listdir(folder)):
            if f.endswith(".py"):
                with open(os.path.join(folder, f), "rb") as fh:
                    h.update(f.encode() + fh.read())
    return h.hexdigest()[:16]


def is_current(case_dir: str, want: str) -> bool:
    try:
        with open(os.path.join(case_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    files = ["model.onnx"] + [f"input_{k}.npy" for k in range(len(meta.get("inputs", [])))]
    return meta.get("sources_hash") == want and all(os.path.exists(os.path.join(case_dir, p)) for p in files)


def write_case(out: str, bench: Bench, want: str) -> None:
    model, feeds = bench.build()
    names = [i.name for i in model.graph.input]
    initializers = {t.name for t in model.graph.initializer}
    names = [n for n in names if n not in initializers]
    missing = [n for n in names if n not in feeds]
    assert not missing, f"{bench.name}: no feed for inputs {missing}"
    case_dir = os.path.join(out, bench.name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    onnx.save(model, os.path.join(case_dir, "model.onnx"))
    for k, n in enumerate(names):
        np.save(os.path.join(case_dir, f"input_{k}.npy"), np.asarray(feeds[n]))
    meta = {
        "name": bench.name,
        "inputs": names,
        "input_shapes": [list(np.shape(feeds[n])) for n in names],
        "outputs": [o.name for o in model.graph.output],
        "check": bench.check,
        "sources_hash": want,
    }
    # Written last: a folder without it (an interrupted run) counts as missing.
    with open(os.path.join(case_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def generate(out: str, names: list[str]) -> None:
    want = sources_hash()
    os.makedirs(out, exist_ok=True)
    for bench in BENCHES:
        if bench.name not in names:
            continue
        case_dir = os.path.join(out, bench.name)
        if is_current(case_dir, want):
            print(f"{bench.name}: up to date", flush=True)
            continue
        t = time.time()
        write_case(out, bench, want)
        print(f"{bench.name}: generated in {time.time() - t:.1f}s", flush=True)
    if all(is_current(os.path.join(out, n), want) for n in NAMES):
        with open(os.path.join(out, "VERSION"), "w") as f:
            f.write(want + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--hash", action="store_true", help="print the sources hash and exit")
    ap.add_argument("names", nargs="*", help=f"only these models (default: all of {', '.join(NAMES)})")
    args = ap.parse_args()
    if args.hash:
        print(sources_hash())
        return 0
    if not args.out:
        ap.error("--out DIR is required")
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; the models are {', '.join(NAMES)}")
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__} -> {os.path.abspath(args.out)}", flush=True)
    generate(os.path.abspath(args.out), args.names or NAMES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
