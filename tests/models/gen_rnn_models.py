#!/usr/bin/env python3
"""Golden tests for the recurrent ops (LSTM, GRU, RNN), in the layout of gen_models.py.

Random weights from a fixed seed per model; reference outputs from onnxruntime (CPU, graph
optimisations disabled, 1 thread), cross-checked against the numpy recurrences in this file.

    lstm_bidir_ocr     opset 14  bidirectional LSTM as an OCR recognizer head: X ["T","N",16],
                                 hidden 8, sequence_lens, initial_h/initial_c, peepholes; Y, Y_h, Y_c
    gru_batch_first    opset 14  GRU layout=1 (batch first), linear_before_reset=1, initial_h
    rnn_reverse        opset 14  reverse RNN with sequence_lens: [7, 4, 1] on T=7, [0, 3] on T=4
    lstm_activations   opset 14  forward LSTM with HardSigmoid/LeakyRelu/ScaledTanh, alpha/beta
                                 lists, clip and input_forget

Usage: python tests/models/gen_rnn_models.py [--out DIR]   (default tests/models/golden)
"""

from __future__ import annotations

import os
import sys

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_models  # noqa: E402
from gen_models import f32, init, make_model, vi  # noqa: E402

F = TensorProto.FLOAT
I32 = TensorProto.INT32


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _directions(direction):
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def recurrent_numpy(cell, x, w, r, b, lens, h0, c0=None, p=None, direction="forward", layout=0,
                    acts=None, clip=None, linear_before_reset=0, input_forget=0):
    """Y, Y_h (, Y_c) of an ONNX recurrent op, one sequence at a time, in float64."""
    x, w, r, b = (np.asarray(a, np.float64) for a in (x, w, r, b))
    if layout:
        x = x.transpose(1, 0, 2)
        h0 = h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    seq, batch, _ = x.shape
    dirs, rows, hidden = r.shape
    clip_ = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    y = np.zeros((seq, dirs, batch, hidden))
    yh = np.array(h0, np.float64)
    yc = np.zeros_like(yh) if c0 is None else np.array(c0, np.float64)
    per = len(acts) // dirs
    for d, rev in enumerate(_directions(direction)):
        f, g, hact = (acts[d * per:(d + 1) * per] + [None, None])[:3]
        wb, rb = b[d, :rows], b[d, rows:]
        for n in range(batch):
            h, c = yh[d, n].copy(), yc[d, n].copy()
            if lens[n] == 0:  # onnxruntime ends an empty sequence in zero states
                h, c = np.zeros_like(h), np.zeros_like(c)
            steps = range(lens[n] - 1, -1, -1) if rev else range(lens[n])
            for t in steps:
                gx = w[d] @ x[t, n] + wb
                if cell == "RNN":
                    h = f(clip_(gx + r[d] @ h + rb))
                elif cell == "GRU":
                    H = hidden
                    gh = r[d, :2 * H] @ h + rb[:2 * H]
                    z = f(clip_(gx[:H] + gh[:H]))
                    rr = f(clip_(gx[H:2 * H] + gh[H:]))
                    if linear_before_reset:
                        hh = g(clip_(gx[2 * H:] + rr * (r[d, 2 * H:] @ h + rb[2 * H:])))
                    else:
                        hh = g(clip_(gx[2 * H:] + r[d, 2 * H:] @ (rr * h) + rb[2 * H:]))
                    h = (1 - z) * hh + z * h
                else:
                    H = hidden
                    gates = gx + r[d] @ h + rb
                    pi, po, pf = np.split(p[d], 3) if p is not None else (0, 0, 0)
                    i = f(clip_(gates[:H] + pi * c))
                    ff = 1 - i if input_forget else f(clip_(gates[2 * H:3 * H] + pf * c))
                    c = ff * c + i * g(clip_(gates[3 * H:]))
                    o = f(clip_(gates[H:2 * H] + po * c))
                    h = o * hact(c)
                y[t, d, n] = h
            yh[d, n], yc[d, n] = h, c
    if layout:
        y, yh, yc = y.transpose(2, 0, 1, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)
    outs = [y, yh] + ([yc] if cell == "LSTM" else [])
    return [o.astype(np.float32) for o in outs]


def lstm_bidir_ocr():
    rng = np.random.default_rng(580)
    inp, hid = 16, 8
    w, r = f32(rng, 2, 4 * hid, inp, scale=0.3), f32(rng, 2, 4 * hid, hid, scale=0.3)
    b, p = f32(rng, 2, 8 * hid, scale=0.1), f32(rng, 2, 3 * hid, scale=0.1)
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "seq_lens", "h0", "c0", "P"], ["y", "y_h", "y_c"],
                            hidden_size=hid, direction="bidirectional")
    model = make_model(
        [node], "lstm_bidir_ocr",
        [vi("x", F, ["T", "N", inp]), vi("seq_lens", I32, ["N"]), vi("h0", F, [2, "N", hid]),
         vi("c0", F, [2, "N", hid])],
        [vi("y", F, ["T", 2, "N", hid]), vi("y_h", F, [2, "N", hid]), vi("y_c", F, [2, "N", hid])],
        [init("W", w), init("R", r), init("B", b), init("P", p)], 14)

    def feeds(t, n, lens):
        return {"x": f32(rng, t, n, inp), "seq_lens": np.array(lens, np.int32),
                "h0": f32(rng, 2, n, hid, scale=0.5), "c0": f32(rng, 2, n, hid, scale=0.5)}

    def reference(_m, fd):
        return recurrent_numpy("LSTM", fd["x"], w, r, b, fd["seq_lens"], fd["h0"], fd["c0"], p,
                               direction="bidirectional", acts=[sigmoid, np.tanh, np.tanh] * 2)

    lstm_bidir_ocr.reference = reference
    return model, [feeds(12, 2, [12, 7]), feeds(5, 3, [1, 5, 3])]


def gru_batch_first():
    rng = np.random.default_rng(581)
    inp, hid = 6, 5
    w, r, b = f32(rng, 1, 3 * hid, inp, scale=0.4), f32(rng, 1, 3 * hid, hid, scale=0.4), f32(rng, 1, 6 * hid)
    node = helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["y", "y_h"], hidden_size=hid,
                            layout=1, linear_before_reset=1)
    model = make_model(
        [node], "gru_batch_first", [vi("x", F, ["N", "T", inp]), vi("h0", F, ["N", 1, hid])],
        [vi("y", F, ["N", "T", 1, hid]), vi("y_h", F, ["N", 1, hid])],
        [init("W", w), init("R", r), init("B", b)], 14)

    def feeds(n, t):
        return {"x": f32(rng, n, t, inp), "h0": f32(rng, n, 1, hid, scale=0.5)}

    def reference(_m, fd):
        n, t = fd["x"].shape[:2]
        return recurrent_numpy("GRU", fd["x"], w, r, b, [t] * n, fd["h0"], layout=1,
                               acts=[sigmoid, np.tanh], linear_before_reset=1)

    # onnxruntime refuses layout=1, so its reference comes from the same GRU at layout 0 between
    # Transposes.
    seq_major = helper.make_node("GRU", ["x_t", "W", "R", "B", "", "h0_t"], ["y_t", "y_h_t"],
                                 hidden_size=hid, linear_before_reset=1)
    gru_batch_first.ort_model = make_model(
        [helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2]),
         helper.make_node("Transpose", ["h0"], ["h0_t"], perm=[1, 0, 2]), seq_major,
         helper.make_node("Transpose", ["y_t"], ["y"], perm=[2, 0, 1, 3]),
         helper.make_node("Transpose", ["y_h_t"], ["y_h"], perm=[1, 0, 2])],
        "gru_batch_first_ort", [vi("x", F, ["N", "T", inp]), vi("h0", F, ["N", 1, hid])],
        [vi("y", F, ["N", "T", 1, hid]), vi("y_h", F, ["N", 1, hid])],
        [init("W", w), init("R", r), init("B", b)], 14)
    gru_batch_first.reference = reference
    return model, [feeds(3, 4), feeds(1, 6)]


def rnn_reverse():
    rng = np.random.default_rng(582)
    inp, hid = 4, 6
    w, r, b = f32(rng, 1, hid, inp, scale=0.5), f32(rng, 1, hid, hid, scale=0.5), f32(rng, 1, 2 * hid)
    node = helper.make_node("RNN", ["x", "W", "R", "B", "seq_lens"], ["y", "y_h"], hidden_size=hid,
                            direction="reverse")
    model = make_model(
        [node], "rnn_reverse", [vi("x", F, ["T", "N", inp]), vi("seq_lens", I32, ["N"])],
        [vi("y", F, ["T", 1, "N", hid]), vi("y_h", F, [1, "N", hid])],
        [init("W", w), init("R", r), init("B", b)], 14)

    def reference(_m, fd):
        n = fd["x"].shape[1]
        return recurrent_numpy("RNN", fd["x"], w, r, b, fd["seq_lens"], np.zeros((1, n, hid)),
                               direction="reverse", acts=[np.tanh])

    rnn_reverse.reference = reference
    return model, [{"x": f32(rng, 7, 3, inp), "seq_lens": np.array([7, 4, 1], np.int32)},
                   {"x": f32(rng, 4, 2, inp), "seq_lens": np.array([0, 3], np.int32)}]


def lstm_activations():
    rng = np.random.default_rng(583)
    inp, hid = 3, 4
    w, r, b = f32(rng, 1, 4 * hid, inp), f32(rng, 1, 4 * hid, hid), f32(rng, 1, 8 * hid)
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h", "y_c"], hidden_size=hid,
                            activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"],
                            activation_alpha=[0.3, 0.05, 1.5], activation_beta=[0.4, 0.7],
                            clip=1.5, input_forget=1)
    model = make_model(
        [node], "lstm_activations", [vi("x", F, [5, 2, inp])],
        [vi("y", F, [5, 1, 2, hid]), vi("y_h", F, [1, 2, hid]), vi("y_c", F, [1, 2, hid])],
        [init("W", w), init("R", r), init("B", b)], 14)

    def reference(_m, fd):
        acts = [lambda v: np.clip(0.3 * v + 0.4, 0, 1), lambda v: np.where(v < 0, 0.05 * v, v),
                lambda v: 1.5 * np.tanh(0.7 * v)]
        return recurrent_numpy("LSTM", fd["x"], w, r, b, [5, 5], np.zeros((1, 2, hid)), acts=acts,
                               clip=1.5, input_forget=1)

    lstm_activations.reference = reference
    return model, [{"x": f32(rng, 5, 2, inp, scale=2.0)}]


MODELS = [lstm_bidir_ocr, gru_batch_first, rnn_reverse, lstm_activations]


def main() -> int:
    return gen_models.generate(MODELS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
