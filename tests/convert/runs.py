"""Helpers shared by the convert checks: run a model in onnxruntime or crx580, compare outputs."""

import os
import platform
import subprocess

import numpy as np
import onnx
import onnxruntime as ort


def ort_int8_exact():
    """Whether onnxruntime's uint8 x int8 products are exact on this CPU. On x86 without VNNI
    (AVX2 alone: this project's AMD EPYC Zen 3 machine) its kernels sum pairs of products with
    `vpmaddubsw`, whose int16 sums saturate (255 * 127 * 2 > 32767; onnxruntime's quantization
    docs say so and suggest reduce_range), so its int8 results there are not a reference to hold
    crx580 (exact in int32) or a converted model to. Checks of onnxruntime's own int8 results are
    then reported, not enforced; crx580's are enforced either way."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True
    return any(f" {flag}" in flags for flag in ("avx512_vnni", "avx_vnni"))


ORT_INT8_EXACT = ort_int8_exact()


def check_for(check, ort_int8):
    """The check to hold a result to: `check` itself, or, for a result that rests on onnxruntime's
    int8 products (`ort_int8`) on a CPU where they are not exact, one that only notes a miss loudly."""
    if ORT_INT8_EXACT or not ort_int8:
        return check

    def noted(ok, msg):
        if not ok:
            print(f"  NOT ENFORCED on this CPU (onnxruntime's u8 x s8 products saturate without VNNI): {msg}")

    return noted


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
