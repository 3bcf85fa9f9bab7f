"""Does crx580's output match onnxruntime's? The rule benches/compare.py applies before it times a
model, so that a fast wrong engine cannot post a good ratio.

- float outputs ("float" models): `|got - ref| <= rtol*|ref| + atol*scale` with rtol 1e-3, atol 1e-4
  and `scale = max(1, max|ref|)` per component, the zoo's rule (tests/zoo.rs). An output that packs
  quantities of different magnitude along an axis (a detector's box coordinates beside its scores)
  names that axis in the model's `component_axes`, and each index along it is its own component.
  NaN must meet NaN, infinities must match.
- dynamically quantised models ("quantized"): floats within `max_steps` quantisation steps of
  onnxruntime's at most and `mean_steps` on average, a step being `(max(ref, 0) - min(ref, 0)) / 255`
  (README.md, "Matching onnxruntime": one float an ulp apart in front of a DynamicQuantizeLinear
  moves a code by one, and the change travels on). Through six quantised layers these flips add
  up: onnxruntime's own optimised and unoptimised sessions differ by up to 5.1 steps (1.0 on
  average) on the MiniLM's pooler output, so this rule catches a broken engine, not a subtly
  wrong one; tests/dynamic_quant.rs and the conformance suite hold the int8 ops to exact rules.
- integer and bool outputs: exactly equal.
"""

from __future__ import annotations

import numpy as np

RTOL = 1e-3
ATOL = 1e-4


def _component_scale(ref: np.ndarray, axis: int | None) -> np.ndarray:
    """max(1, max|ref|) over the whole output, or over each index along `axis`, broadcastable."""
    mag = np.abs(np.where(np.isfinite(ref), ref, 0.0))
    if axis is None:
        return np.maximum(1.0, mag.max(initial=0.0))
    other = tuple(a for a in range(ref.ndim) if a != axis)
    return np.maximum(1.0, mag.max(axis=other, keepdims=True, initial=0.0))


def _special_values_differ(got: np.ndarray, ref: np.ndarray) -> str | None:
    if not np.array_equal(np.isnan(got), np.isnan(ref)):
        return "NaN in one output but not the other"
    inf = np.isinf(ref) | np.isinf(got)
    if not np.array_equal(got[inf], ref[inf]):
        return "infinities differ"
    return None


def compare_output(got: np.ndarray, ref: np.ndarray, check: dict, name: str) -> tuple[str | None, str]:
    """(error or None, a one-line summary of how close `got` is to `ref`)."""
    if got.shape != ref.shape:
        return f"shape {list(got.shape)}, onnxruntime's is {list(ref.shape)}", ""
    if ref.dtype.kind not in "fc":
        if got.dtype.kind in "fc":
            return f"dtype {got.dtype}, onnxruntime's is {ref.dtype}", ""
        wrong = int(np.count_nonzero(got != ref))
        if wrong:
            return f"{wrong} of {ref.size} values differ (integer output, must be exact)", ""
        return None, "exact"
    if got.dtype.kind not in "fc":
        return f"dtype {got.dtype}, onnxruntime's is {ref.dtype}", ""
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    special = _special_values_differ(got, ref)
    if special:
        return special, ""
    finite = np.isfinite(ref)
    diff = np.zeros_like(ref)
    diff[finite] = np.abs(got[finite] - ref[finite])
    if check.get("kind") == "quantized":
        step = (max(ref[finite].max(initial=0.0), 0.0) - min(ref[finite].min(initial=0.0), 0.0)) / 255.0 or 1.0 / 255
        steps = diff / step
        worst, mean = float(steps.max(initial=0.0)), float(steps.mean()) if steps.size else 0.0
        if worst > check["max_steps"] or mean > check["mean_steps"]:
            return (f"off by {worst:.2f} quantisation steps at most, {mean:.3f} on average (limits "
                    f"{check['max_steps']:g} and {check['mean_steps']:g}; a step is {step:.3g})"), ""
        return None, f"max {worst:.2f} steps, mean {mean:.3f}"
    axis = check.get("component_axes", {}).get(name)
    bound = RTOL * np.abs(ref) + ATOL * _component_scale(ref, axis)
    ratio = diff / bound
    worst = float(ratio.max(initial=0.0))
    if worst > 1.0:
        k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        bad = int(np.count_nonzero(ratio > 1.0))
        return (f"{bad} of {ref.size} values out of tolerance; worst at {list(map(int, k))}: "
                f"{got[k]:.6g} vs {ref[k]:.6g} (rtol {RTOL:g}, atol {ATOL:g} x scale)"), ""
    return None, f"max {worst:.3f} of tolerance"
