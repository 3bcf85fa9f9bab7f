#!/usr/bin/env python3
"""Golden models for control flow (If, Loop, Scan), in the same layout and with the same checks as
gen_models.py (onnxruntime's outputs as the reference, cross-checked against onnx.reference or numpy):

    if_nested       opset 13  If inside If inside If, chosen by a scalar int64 `k`; branches capture
                              graph inputs, initializers and values of the middle levels; the
                              branches' outputs differ in shape ([2, 3] or [2, 1])
    loop_accumulate opset 16  Loop with trip count and condition, a loop-carried accumulator, two
                              scan outputs, an If inside the body, outer tensors captured
    scan_cumsum     opset 16  Scan: cumulative sums, one scan input along axis 1 read in reverse and
                              its scan output written along axis -1 in reverse, a captured initializer

Usage: python tests/models/gen_control_flow.py [--out DIR]   (default DIR: tests/models/golden)
"""

from __future__ import annotations

import sys

import numpy as np
from onnx import TensorProto, helper

import gen_models  # noqa: E402
from gen_models import F, I64, init, make_model, vi

B = TensorProto.BOOL


def const_i64(name, v):
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, I64, [], [v]))


def if_nested():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)

    # Level 3: k == 2 -> x @ W + h ; else -> x * h (h comes from level 1, W from the top).
    then3 = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "h"], ["y3t"]),
         const_i64("tag3t", 3)],
        "then3", [], [vi("y3t", F, [2, 3]), vi("tag3t", I64, [])])
    else3 = helper.make_graph(
        [helper.make_node("Mul", ["x", "h"], ["y3e"]), const_i64("tag3e", 4)],
        "else3", [], [vi("y3e", F, [2, 3]), vi("tag3e", I64, [])])
    # Level 2: k >= 2 -> level 3 ; else (k == 1) -> ReduceSum over axis 1 of h, shape [2, 1].
    then2 = helper.make_graph(
        [helper.make_node("Equal", ["k", "two"], ["c3"]),
         helper.make_node("If", ["c3"], ["y2t", "tag2t"], then_branch=then3, else_branch=else3)],
        "then2", [], [vi("y2t", F, [2, 3]), vi("tag2t", I64, [])])
    else2 = helper.make_graph(
        [helper.make_node("ReduceSum", ["h", "axis1"], ["y2e"], keepdims=1), const_i64("tag2e", 2)],
        "else2", [], [vi("y2e", F, [2, 1]), vi("tag2e", I64, [])],
        initializer=[init("axis1", np.array([1], np.int64))])
    # Level 1: k >= 1 -> h = x + b, then level 2 ; else -> -x * half (a branch-local initializer).
    then1 = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["h"]),
         helper.make_node("Greater", ["k", "one"], ["c2"]),
         helper.make_node("If", ["c2"], ["y1t", "tag1t"], then_branch=then2, else_branch=else2)],
        "then1", [], [vi("y1t", F, [2, "C"]), vi("tag1t", I64, [])])
    else1 = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["nx"]), helper.make_node("Mul", ["nx", "half"], ["y1e"]),
         helper.make_node("Identity", ["k"], ["tag1e"])],
        "else1", [], [vi("y1e", F, [2, 3]), vi("tag1e", I64, [])],
        initializer=[init("half", np.array(0.5, np.float32))])
    nodes = [
        helper.make_node("Greater", ["k", "zero"], ["c1"]),
        helper.make_node("If", ["c1"], ["y", "tag"], then_branch=then1, else_branch=else1),
    ]
    inits = [init("W", w), init("b", b), init("zero", np.array(0, np.int64)), init("one", np.array(1, np.int64)),
             init("two", np.array(2, np.int64))]
    model = make_model(nodes, "if_nested", [vi("k", I64, []), vi("x", F, [2, 3])],
                       [vi("y", F, [2, "C"]), vi("tag", I64, [])], inits, 13)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    feeds = [{"k": np.array(k, np.int64), "x": x} for k in (2, 3, 1, 0, -5)]
    return model, feeds


def loop_accumulate():
    rng = np.random.default_rng(12)
    # Body: (i, cond_in, acc_in) -> (cond_out, acc_out, acc_out_scan, step_scan)
    #   step = If(i % 2 == 0) then x * f(i) else -x   (x captured through the Loop and the If)
    #   acc_out = acc_in + step; cond_out = ReduceSum(acc_out) < limit (limit: an outer input)
    then_b = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Mul", ["x", "fi"], ["st"])],
        "even", [], [vi("st", F, [3])])
    else_b = helper.make_graph([helper.make_node("Neg", ["x"], ["se"])], "odd", [], [vi("se", F, [3])])
    body = helper.make_graph(
        [helper.make_node("Mod", ["i", "two"], ["r"]),
         helper.make_node("Equal", ["r", "zero"], ["even"]),
         helper.make_node("If", ["even"], ["step"], then_branch=then_b, else_branch=else_b),
         helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
         helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit"], ["cond_out"]),
         helper.make_node("Identity", ["acc_out"], ["acc_scan"]),
         helper.make_node("Cast", ["i"], ["i_scan"], to=F)],
        "body",
        [vi("i", I64, []), vi("cond_in", B, []), vi("acc_in", F, [3])],
        [vi("cond_out", B, []), vi("acc_out", F, [3]), vi("acc_scan", F, [3]), vi("i_scan", F, [])])
    nodes = [helper.make_node("Loop", ["n", "go", "acc0"], ["acc", "accs", "iters"], body=body)]
    inits = [init("two", np.array(2, np.int64)), init("zero", np.array(0, np.int64)),
             init("go", np.array(True))]
    model = make_model(
        nodes, "loop_accumulate",
        [vi("n", I64, []), vi("x", F, [3]), vi("acc0", F, [3]), vi("limit", F, [])],
        [vi("acc", F, [3]), vi("accs", F, ["T", 3]), vi("iters", F, ["T"])], inits, 16)
    x = np.abs(rng.standard_normal(3)).astype(np.float32)
    acc0 = rng.standard_normal(3).astype(np.float32)
    feeds = [
        {"n": np.array(6, np.int64), "x": x, "acc0": acc0, "limit": np.array(1e6, np.float32)},  # trip count ends it
        {"n": np.array(100, np.int64), "x": x, "acc0": acc0, "limit": np.array(20.0, np.float32)},  # cond ends it
        {"n": np.array(1, np.int64), "x": x, "acc0": acc0, "limit": np.array(1e6, np.float32)},
    ]
    return model, feeds


def _loop_accumulate_numpy(_model, feeds):
    """onnx.reference stacks scalar scan outputs to [T, 1] (np.vstack); ONNX says [T]."""
    x, acc, accs, iters = feeds["x"], feeds["acc0"], [], []
    i, cond = 0, True
    while cond and i < feeds["n"]:
        acc = acc + (x * np.float32(i) if i % 2 == 0 else -x)
        cond = acc.sum() < feeds["limit"]
        accs.append(acc)
        iters.append(np.float32(i))
        i += 1
    return [acc, np.stack(accs), np.array(iters, np.float32)]


loop_accumulate.reference = _loop_accumulate_numpy


def scan_cumsum():
    rng = np.random.default_rng(13)
    # State s1 sums xs (axis 0, forward) scaled by a captured initializer; state s2 sums ys read
    # along axis 1 from the end, and its per-step values are written along axis -1 in reverse.
    body = helper.make_graph(
        [helper.make_node("Mul", ["x_t", "scale"], ["xs_t"]),
         helper.make_node("Add", ["s1_in", "xs_t"], ["s1_out"]),
         helper.make_node("Add", ["s2_in", "y_t"], ["s2_out"]),
         helper.make_node("Identity", ["s1_out"], ["cum1"]),
         helper.make_node("Identity", ["s2_out"], ["cum2"])],
        "body",
        [vi("s1_in", F, [2]), vi("s2_in", F, [4]), vi("x_t", F, [2]), vi("y_t", F, [4])],
        [vi("s1_out", F, [2]), vi("s2_out", F, [4]), vi("cum1", F, [2]), vi("cum2", F, [4])])
    nodes = [helper.make_node(
        "Scan", ["s1", "s2", "xs", "ys"], ["s1_final", "s2_final", "cums1", "cums2"], body=body,
        num_scan_inputs=2, scan_input_axes=[0, 1], scan_input_directions=[0, 1],
        scan_output_axes=[0, -1], scan_output_directions=[0, 1])]
    scale = np.array([1.0, -2.0], np.float32)
    model = make_model(
        nodes, "scan_cumsum",
        [vi("s1", F, [2]), vi("s2", F, [4]), vi("xs", F, [5, 2]), vi("ys", F, [4, 5])],
        [vi("s1_final", F, [2]), vi("s2_final", F, [4]), vi("cums1", F, [5, 2]), vi("cums2", F, [4, 5])],
        [init("scale", scale)], 16)
    feeds = [{"s1": rng.standard_normal(2).astype(np.float32), "s2": rng.standard_normal(4).astype(np.float32),
              "xs": rng.standard_normal((5, 2)).astype(np.float32),
              "ys": rng.standard_normal((4, 5)).astype(np.float32)}]
    return model, feeds


def _scan_cumsum_numpy(_model, feeds):
    """onnx.reference's Scan supports neither reverse directions nor axes other than 0."""
    s1 = feeds["s1"] + np.cumsum(feeds["xs"] * np.array([1.0, -2.0], np.float32), axis=0)
    ys_rev = feeds["ys"][:, ::-1]
    s2_steps = feeds["s2"][:, None] + np.cumsum(ys_rev, axis=1)  # [4, 5], step t in column t
    cums2 = s2_steps[:, ::-1]  # written in reverse along the last axis
    return [s1[-1], s2_steps[:, -1], s1, cums2.astype(np.float32)]


scan_cumsum.reference = _scan_cumsum_numpy

MODELS = [if_nested, loop_accumulate, scan_cumsum]


def main() -> int:
    return gen_models.generate(MODELS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
