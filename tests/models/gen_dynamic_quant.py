#!/usr/bin/env python3
"""A dynamically quantised CRNN as onnxruntime's ``quantize_dynamic`` writes it, with onnxruntime's
outputs, for tests/dynamic_quant.rs (the rule it enforces is in that file and in README.md,
"Matching onnxruntime").

    crnn_int8   opset 14 + com.microsoft 1. The float model: three Conv 3x3 (1->16->32->32) + Relu +
                MaxPool (2x2, 2x2, 2x1) on a text line x [N,1,32,W], Reshape/Transpose to a
                time-major sequence [W/4,N,128], two bidirectional LSTMs (hidden 32) joined by
                Transpose/Reshape, MatMul + Add to 37 per-frame CTC logits [W/4,N,37]. Fixed-seed
                random weights. ``quantize_dynamic(weight_type=QInt8)`` turns it into
                DynamicQuantizeLinear + ConvInteger / MatMulInteger + Cast + Mul + Add and
                DynamicQuantizeLSTM. Outputs: ``logits``, and ``features`` (the LSTM input, an
                extra graph output added after quantisation so that the test can check the
                conv stack on its own).

Inputs are synthetic text lines (the zoo's OCR inputs, one channel). The data sets are three
fixed (seed, N, W): in two of them crx580's LSTM output and onnxruntime's end a float ulp apart at
some step where a DynamicQuantizeLinear code then flips (see tests/dynamic_quant.rs), so that the
tolerance is exercised, not only exact agreement; they were picked from a sweep of 160 inputs.

Usage: python tests/models/gen_dynamic_quant.py [--out DIR]   (default tests/models/dynamic_quant)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "zoo"))
from gen_models import f32, init, make_model, run_ort, vi  # noqa: E402
from ocr import _text_lines  # noqa: E402

F = TensorProto.FLOAT
CLASSES = 37  # 26 letters, 10 digits and the CTC blank
HEIGHT = 32
DATA_SETS = [(150, 1, 128), (159, 2, 96), (100, 1, 128)]  # (seed, N, W)


def crnn_float():
    rng = np.random.default_rng(5800)
    inits, nodes = [], []
    x, cin, h = "x", 1, HEIGHT
    for i, (c, pool) in enumerate([(16, [2, 2]), (32, [2, 2]), (32, [2, 1])]):
        inits += [init(f"conv{i}_w", f32(rng, c, cin, 3, 3, scale=1.4 / np.sqrt(cin * 9))),
                  init(f"conv{i}_b", f32(rng, c, scale=0.1))]
        nodes += [helper.make_node("Conv", [x, f"conv{i}_w", f"conv{i}_b"], [f"conv{i}"],
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
                  helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=pool, strides=pool)]
        x, cin, h = f"pool{i}", c, h // pool[0]
    feat, hid = cin * h, 32
    inits.append(init("to_ncw", np.array([0, feat, -1], np.int64)))
    nodes += [helper.make_node("Reshape", [x, "to_ncw"], ["ncw"]),
              helper.make_node("Transpose", ["ncw"], ["features"], perm=[2, 0, 1])]  # [T, N, feat]
    seq, inp = "features", feat
    inits.append(init("join_dirs", np.array([0, 0, -1], np.int64)))
    for layer in range(2):
        inits += [init(f"lstm{layer}_W", f32(rng, 2, 4 * hid, inp, scale=1 / np.sqrt(inp))),
                  init(f"lstm{layer}_R", f32(rng, 2, 4 * hid, hid, scale=1 / np.sqrt(hid))),
                  init(f"lstm{layer}_B", f32(rng, 2, 8 * hid, scale=0.1))]
        nodes += [helper.make_node("LSTM", [seq, f"lstm{layer}_W", f"lstm{layer}_R", f"lstm{layer}_B"],
                                   [f"lstm{layer}_y"], hidden_size=hid, direction="bidirectional"),
                  helper.make_node("Transpose", [f"lstm{layer}_y"], [f"lstm{layer}_yt"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"lstm{layer}_yt", "join_dirs"], [f"seq{layer + 1}"])]
        seq, inp = f"seq{layer + 1}", 2 * hid
    inits += [init("fc_w", f32(rng, inp, CLASSES, scale=2 / np.sqrt(inp))),
              init("fc_b", f32(rng, CLASSES, scale=0.1))]
    nodes += [helper.make_node("MatMul", [seq, "fc_w"], ["fc"]),
              helper.make_node("Add", ["fc", "fc_b"], ["logits"])]
    return make_model(nodes, "crnn_float", [vi("x", F, ["N", 1, HEIGHT, "W"])],
                      [vi("logits", F, ["T", "N", CLASSES])], inits, 14,
                      "CRNN: conv stack, 2 bidirectional LSTMs, per-frame CTC logits")


def crnn_int8():
    """The float CRNN through quantize_dynamic, plus the ``features`` output."""
    float_model = crnn_float()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(float_model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        model = onnx.load(dst)
    model.graph.output.append(vi("features", F, ["T", "N", 32 * HEIGHT // 8]))
    model.doc_string = "crnn_float through onnxruntime.quantization.quantize_dynamic (QInt8 weights)"
    onnx.checker.check_model(model)
    return model, float_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "dynamic_quant"), help="output directory")
    out = os.path.abspath(ap.parse_args().out)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__} -> {out}")
    model, float_model = crnn_int8()
    ops = sorted({n.op_type for n in model.graph.node})
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM"} <= set(ops), ops
    case = os.path.join(out, "crnn_int8")
    shutil.rmtree(case, ignore_errors=True)
    os.makedirs(case)
    onnx.save(model, os.path.join(case, "model.onnx"))
    for k, (seed, n, w) in enumerate(DATA_SETS):
        feeds = {"x": np.ascontiguousarray(_text_lines(seed, n, HEIGHT, w)[:, :1])}
        outs = run_ort(model, feeds)
        # A sanity check of the quantisation, not a reference: the float model's frame decisions
        # (random weights give close logits, so int8 changes about a fifth of them).
        agree = (run_ort(float_model, feeds)["logits"].argmax(-1) == outs["logits"].argmax(-1)).mean()
        assert agree > 0.6, f"int8 and float CRNN agree on only {agree:.0%} of the frames"
        ds = os.path.join(case, f"test_data_set_{k}")
        os.makedirs(ds)
        with open(os.path.join(ds, "input_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(feeds["x"], "x").SerializeToString())
        for i, o in enumerate(model.graph.output):
            with open(os.path.join(ds, f"output_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(outs[o.name], o.name).SerializeToString())
        print(f"  crnn_int8/test_data_set_{k}: x{list(feeds['x'].shape)} -> logits{list(outs['logits'].shape)}; "
              f"frame argmax as the float model's: {agree:.0%}")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(case) for f in fs)
    print(f"ops: {', '.join(ops)}; total size {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
