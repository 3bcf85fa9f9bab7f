"""`crx580 convert --prune` against onnx and onnxruntime (called by check_convert.py).

Each pattern on the digits demo: the pruned weights must hold the zeros the CLI reports (counted
here with onnx), the model must pass onnx.checker and run in onnxruntime and crx580 alike, and
pruning combines with int8-static. Accuracy on the held-out digits is printed, not bounded:
pruning a trained model without fine-tuning costs what it costs, and the point is to measure it.
"""

import os
import re
import subprocess

import numpy as np
import onnx
from onnx import numpy_helper

from runs import agreement, check_for, converted, crx_run, ort_run
from static_checks import ROOT, digits_split, write_batches


def pruned_weights(path):
    """The weights (input 1) of Conv/Gemm/MatMul, by name."""
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.input[1]: inits[n.input[1]] for n in m.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in inits}


def most_two_of_four(w):
    """Whether every group of 4 consecutive weights along each output row (the reduction of the
    digits model's Conv [O, C, kh, kw] and transposed Gemm [N, K]) has at most 2 non-zeros."""
    rows = w.reshape(w.shape[0], -1)
    return all(np.count_nonzero(r[k:k + 4]) <= 2 for r in rows for k in range(0, rows.shape[1], 4))


def run_all(crx, work, check):
    xtr, _, xte, yte = digits_split()
    path = os.path.join(ROOT, "examples", "digits", "digits.onnx")
    calib = os.path.join(work, "prune.calib")
    write_batches(calib, [xtr[k:k + 32] for k in range(0, 128, 32)])
    feeds = {"image": xte}
    ref = ort_run(path, feeds)[0]
    for pattern, sparsity in [("unstructured", 0.5), ("2:4", 0.5), ("channel", 0.25)]:
        for to in ["copy", "int8-static"]:
            label = f"digits prune {pattern} {sparsity} + {to}"
            out = os.path.join(work, f"digits.prune.{pattern.replace(':', 'of')}.{to}.onnx")
            args = [crx, "convert", path, out, "--to", to, "--prune", str(sparsity), "--prune-pattern", pattern]
            if to == "int8-static":
                args += ["--calibrate", calib]
            r = subprocess.run(args, capture_output=True, text=True)
            if not converted(check, label, r, out):
                continue
            if to == "copy":
                # The CLI's per-layer report against the zeros onnx finds in the written weights.
                for name, w in pruned_weights(out).items():
                    frac = float(np.mean(w == 0))
                    said = re.search(rf"\({re.escape(name)}\): ([\d.]+)% zeros", r.stdout)
                    check(said is not None and abs(float(said.group(1)) - 100 * frac) < 0.06,
                          f"{label}: {name} has {100 * frac:.1f}% zeros, the CLI said {said and said.group(1)}")
                    if pattern == "unstructured":
                        check(abs(frac - sparsity) < 0.01, f"{label}: {name} has {100 * frac:.1f}% zeros")
                    elif pattern == "2:4":
                        check(most_two_of_four(w), f"{label}: {name} has a group of 4 with over 2 non-zeros")
                    else:
                        channels = np.mean([np.all(w[c] == 0) for c in range(w.shape[0])])
                        check(abs(channels - sparsity) < 0.1, f"{label}: {name} has {100 * channels:.0f}% zero channels")
            got = ort_run(out, feeds)[0]
            crx_out = crx_run(crx, out, feeds, os.path.join(work, "run"))[0]
            _, engines_cos = agreement(got, crx_out)
            check_for(check, to == "int8-static")(engines_cos > 0.9999, f"{label}: crx580 and onnxruntime differ (cosine {engines_cos:.6f})")
            _, cos = agreement(ref, got)
            acc, acc_ref = np.mean(got.argmax(1) == yte), np.mean(ref.argmax(1) == yte)
            print(f"  {label}: size {100 * os.path.getsize(out) / os.path.getsize(path):.1f}%, cosine to float {cos:.4f}, "
                  f"top-1 agreement {100 * np.mean(got.argmax(1) == ref.argmax(1)):.1f}%, accuracy {100 * acc:.2f}% "
                  f"(float {100 * acc_ref:.2f}%)")
