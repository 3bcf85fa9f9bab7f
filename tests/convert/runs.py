"""Helpers shared by the convert checks: run a model in onnxruntime or crx580, compare outputs."""

import os
import subprocess

import numpy as np
import onnx
import onnxruntime as ort


def agreement(ref, new):
    ref, new = np.asarray(ref, np.float64).ravel(), np.asarray(new, np.float64).ravel()
    err = np.abs(ref - new)
    scale = np.abs(ref).max() or 1.0
    denom = np.linalg.norm(ref) * np.linalg.norm(new)
    cos = float(ref @ new / denom) if denom > 0 else float(np.array_equal(ref, new))
    return float(err.max()) / scale, cos


def top1(ref, new):
    if ref.ndim == 2 and ref.shape[1] > 1:
        return float(np.mean(ref.argmax(1) == new.argmax(1)))
    return None


def ort_run(path, feeds):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def crx_run(crx, path, feeds, work, extra=()):
    """Runs `path` on `feeds` with `crx580 run` (plus `extra` arguments); returns its outputs."""
    os.makedirs(work, exist_ok=True)
    for f in os.listdir(work):
        os.remove(os.path.join(work, f))
    args = [crx, "run", path, "--output-dir", work, *extra]
    for name, value in feeds.items():
        f = os.path.join(work, f"in_{len(args)}.npy")
        np.save(f, value)
        args.append(f"{name}={f}")
    subprocess.run(args, check=True, capture_output=True)
    outs, k = [], 0
    while os.path.exists(os.path.join(work, f"output_{k}.npy")):
        outs.append(np.load(os.path.join(work, f"output_{k}.npy")))
        k += 1
    return outs


def converted(check, label, result, out):
    """Whether `crx580 convert` (its CompletedProcess `result`) wrote `out`; a failure or an
    onnx.checker complaint about the model is reported through `check`."""
    if result.returncode != 0:
        check(False, f"{label}: convert failed: {result.stderr.strip()}")
        return False
    try:
        onnx.checker.check_model(onnx.load(out))
    except Exception as e:  # noqa: BLE001 - any checker complaint is a failure
        check(False, f"{label}: onnx.checker: {e}")
    return True
