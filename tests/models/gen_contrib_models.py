#!/usr/bin/env python3
"""Golden tests for crx580's ``com.microsoft`` contrib ops, with onnxruntime as the reference.

Each model is built with ``onnx.helper`` (opset imports ``""`` 17 and ``com.microsoft`` 1), run
with onnxruntime (CPU, graph optimisations off) for the stored outputs, and cross-checked against
a direct numpy implementation. Written in the same layout as gen_models.py.

Models:
    contrib_gelu_family      Gelu, FastGelu (with and without bias), BiasGelu, QuickGelu(alpha)
    contrib_skip_layernorm   SkipLayerNormalization with beta+bias and all four outputs, and
                             without beta/bias, with a [seq, hidden] skip
    contrib_attention_masks  packed-QKV Attention: 2-D 0/1 mask, 1-D lengths, unidirectional
    contrib_fused_conv       FusedConv with Relu, LeakyRelu, Clip, HardSigmoid, Sigmoid, Tanh
    contrib_bert_block       a MiniLM-shaped encoder layer as onnxruntime's transformer
                             optimizer emits it: Attention, MatMul, SkipLayerNormalization,
                             MatMul, FastGelu(bias), MatMul, SkipLayerNormalization
    contrib_dynamic_quantize_lstm
                             DynamicQuantizeLSTM: bidirectional with uint8 weights, B, P,
                             sequence_lens, initial states; forward with int8 per-column
                             weights, full-length sequences and only Y_h as output
    contrib_embed_layernorm  EmbedLayerNormalization with segments, mask and all three outputs;
                             without segments, with position_ids
    contrib_quant_matmul     DynamicQuantizeMatMul (int8 per-column, bias; uint8 with a zero
                             point) and MatMulIntegerToFloat (A zero point and bias; batched B)
    contrib_multi_head_attention
                             MultiHeadAttention: cross-attention with bias and a 0/1 key padding
                             mask, an attention_bias per head, packed QKV with bias and key
                             lengths, packed KV, causal packed QKV, K/V split into heads
    contrib_attention_long   packed-QKV Attention over 70 positions (two query blocks of the fused
                             kernel), odd widths, qkv_hidden_sizes with a narrower V, a per-query
                             mask and end/start positions
    contrib_skip_simplified  SkipSimplifiedLayerNormalization with bias and its outputs, and
                             without bias on an odd width

Usage:
    python tests/models/gen_contrib_models.py [--out DIR]
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_models  # noqa: E402
from gen_models import f32, init, vi  # noqa: E402

F = TensorProto.FLOAT
I32 = TensorProto.INT32
MS = "com.microsoft"


def make_model(nodes, name, inputs, outputs, inits):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
        producer_name="crx580-gen_contrib_models", producer_version="1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ms(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, domain=MS, **attrs)


# ---------------------------------------------------------------------------- numpy references

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def fast_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    inv_std = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
    return (x - mean) * inv_std * gamma + beta, mean, inv_std


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def packed_attention(x, w, b, heads, key_keep, causal=False):
    """key_keep: [batch, keys] bool."""
    batch, seq, _ = x.shape
    qkv = x @ w + b
    hidden = w.shape[1] // 3
    d = hidden // heads
    q, k, v = (qkv[..., i * hidden:(i + 1) * hidden].reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)
               for i in range(3))
    bias = np.where(key_keep[:, None, None, :], 0.0, -10000.0)
    if causal:
        bias = bias + np.triu(np.full((seq, seq), -10000.0), 1)
    p = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias)
    return (p @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)


def f32_out(*arrays):
    return [np.asarray(a, dtype=np.float32) for a in arrays]


# ---------------------------------------------------------------------------- models

def contrib_gelu_family():
    rng = np.random.default_rng(11)
    nodes = [
        ms("Gelu", ["X"], ["gelu"]),
        ms("FastGelu", ["X", "B"], ["fast_bias"]),
        ms("FastGelu", ["X"], ["fast"]),
        ms("BiasGelu", ["X", "B"], ["bias_gelu"]),
        ms("QuickGelu", ["X"], ["quick"], alpha=1.5),
    ]
    outs = [vi(n, F, [2, 3, 8]) for n in ["gelu", "fast_bias", "fast", "bias_gelu", "quick"]]
    model = make_model(nodes, "contrib_gelu_family", [vi("X", F, [2, 3, 8])], outs, [init("B", f32(rng, 8))])
    return model, [{"X": f32(rng, 2, 3, 8, scale=2.0)}]


def _gelu_family_ref(model, feeds):
    x = feeds["X"].astype(np.float64)
    b = onnx.numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    return f32_out(gelu(x), fast_gelu(x + b), fast_gelu(x), gelu(x + b), x / (1 + np.exp(-1.5 * x)))


contrib_gelu_family.reference = _gelu_family_ref


def contrib_skip_layernorm():
    rng = np.random.default_rng(12)
    h = 8
    inits = [init("gamma", f32(rng, h)), init("beta", f32(rng, h)), init("bias", f32(rng, h)),
             init("skip2", f32(rng, 3, h))]
    nodes = [
        ms("SkipLayerNormalization", ["X", "S", "gamma", "beta", "bias"], ["y", "mean", "inv_std", "sum"],
           epsilon=1e-5),
        ms("SkipLayerNormalization", ["X", "skip2", "gamma"], ["y2"]),
    ]
    inputs = [vi("X", F, [2, 3, h]), vi("S", F, [2, 3, h])]
    outs = [vi("y", F, [2, 3, h]), vi("mean", F, [2, 3, 1]), vi("inv_std", F, [2, 3, 1]), vi("sum", F, [2, 3, h]),
            vi("y2", F, [2, 3, h])]
    model = make_model(nodes, "contrib_skip_layernorm", inputs, outs, inits)
    return model, [{"X": f32(rng, 2, 3, h), "S": f32(rng, 2, 3, h)}]


def _skip_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x, s = feeds["X"].astype(np.float64), feeds["S"].astype(np.float64)
    total = x + s + p["bias"]
    y, mean, inv_std = layer_norm(total, p["gamma"], p["beta"], 1e-5)
    y2, _, _ = layer_norm(x + p["skip2"], p["gamma"], 0.0, 1e-12)
    return f32_out(y, mean, inv_std, total, y2)


contrib_skip_layernorm.reference = _skip_ref


def contrib_attention_masks():
    rng = np.random.default_rng(13)
    hidden, heads = 8, 2
    inits = [init("W", f32(rng, hidden, 3 * hidden, scale=0.5)), init("Bqkv", f32(rng, 3 * hidden, scale=0.1))]
    nodes = [
        ms("Attention", ["X", "W", "Bqkv", "mask2d"], ["y_mask2d"], num_heads=heads),
        ms("Attention", ["X", "W", "Bqkv", "lengths"], ["y_lengths"], num_heads=heads),
        ms("Attention", ["X", "W", "Bqkv"], ["y_causal"], num_heads=heads, unidirectional=1),
    ]
    inputs = [vi("X", F, [2, 4, hidden]), vi("mask2d", I32, [2, 4]), vi("lengths", I32, [2])]
    outs = [vi(n, F, [2, 4, hidden]) for n in ["y_mask2d", "y_lengths", "y_causal"]]
    model = make_model(nodes, "contrib_attention_masks", inputs, outs, inits)
    feeds = {"X": f32(rng, 2, 4, hidden), "mask2d": np.array([[1, 1, 0, 1], [1, 1, 1, 0]], np.int32),
             "lengths": np.array([3, 2], np.int32)}
    return model, [feeds]


def _attention_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = feeds["X"].astype(np.float64)
    keys = np.arange(x.shape[1])
    by_length = keys[None, :] < feeds["lengths"][:, None]
    all_keys = np.ones((x.shape[0], x.shape[1]), bool)
    return f32_out(packed_attention(x, p["W"], p["Bqkv"], 2, feeds["mask2d"] > 0),
                   packed_attention(x, p["W"], p["Bqkv"], 2, by_length),
                   packed_attention(x, p["W"], p["Bqkv"], 2, all_keys, causal=True))


contrib_attention_masks.reference = _attention_ref

FUSED_ACTIVATIONS = [("Relu", []), ("LeakyRelu", [0.2]), ("Clip", [-0.5, 0.7]), ("HardSigmoid", [0.3, 0.4]),
                     ("Sigmoid", []), ("Tanh", [])]


def contrib_fused_conv():
    rng = np.random.default_rng(14)
    inits = [init("W", f32(rng, 3, 2, 3, 3, scale=0.5)), init("B", f32(rng, 3, scale=0.2))]
    nodes = []
    for act, params in FUSED_ACTIVATIONS:
        attrs = {"activation": act, "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
        if params:
            attrs["activation_params"] = params
        nodes.append(ms("FusedConv", ["X", "W", "B"], [f"y_{act}"], **attrs))
    outs = [vi(f"y_{act}", F, [1, 3, 5, 5]) for act, _ in FUSED_ACTIVATIONS]
    model = make_model(nodes, "contrib_fused_conv", [vi("X", F, [1, 2, 5, 5])], outs, inits)
    return model, [{"X": f32(rng, 1, 2, 5, 5)}]


def _fused_conv_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = np.pad(feeds["X"].astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((1, 3, 5, 5))
    for i in range(5):
        for j in range(5):
            conv[0, :, i, j] = np.tensordot(p["W"], x[0, :, i:i + 3, j:j + 3], axes=3) + p["B"]
    acts = {
        "Relu": lambda y: np.maximum(y, 0),
        "LeakyRelu": lambda y: np.where(y < 0, 0.2 * y, y),
        "Clip": lambda y: np.clip(y, -0.5, 0.7),
        "HardSigmoid": lambda y: np.clip(0.3 * y + 0.4, 0, 1),
        "Sigmoid": lambda y: 1 / (1 + np.exp(-y)),
        "Tanh": np.tanh,
    }
    return f32_out(*[acts[a](conv) for a, _ in FUSED_ACTIVATIONS])


contrib_fused_conv.reference = _fused_conv_ref


def contrib_bert_block():
    rng = np.random.default_rng(15)
    hidden, heads, ff, seq = 16, 2, 32, 5
    inits = [
        init("qkv_w", f32(rng, hidden, 3 * hidden, scale=0.3)), init("qkv_b", f32(rng, 3 * hidden, scale=0.1)),
        init("out_w", f32(rng, hidden, hidden, scale=0.3)), init("out_b", f32(rng, hidden, scale=0.1)),
        init("ln1_g", 1 + f32(rng, hidden, scale=0.1)), init("ln1_b", f32(rng, hidden, scale=0.1)),
        init("ff1_w", f32(rng, hidden, ff, scale=0.3)), init("ff1_b", f32(rng, ff, scale=0.1)),
        init("ff2_w", f32(rng, ff, hidden, scale=0.3)), init("ff2_b", f32(rng, hidden, scale=0.1)),
        init("ln2_g", 1 + f32(rng, hidden, scale=0.1)), init("ln2_b", f32(rng, hidden, scale=0.1)),
    ]
    nodes = [
        ms("Attention", ["hidden_in", "qkv_w", "qkv_b", "attention_mask"], ["attn"], num_heads=heads),
        helper.make_node("MatMul", ["attn", "out_w"], ["attn_proj"]),
        ms("SkipLayerNormalization", ["attn_proj", "hidden_in", "ln1_g", "ln1_b", "out_b"], ["ln1"],
           epsilon=1e-12),
        helper.make_node("MatMul", ["ln1", "ff1_w"], ["ff1"]),
        ms("FastGelu", ["ff1", "ff1_b"], ["ff1_act"]),
        helper.make_node("MatMul", ["ff1_act", "ff2_w"], ["ff2"]),
        ms("SkipLayerNormalization", ["ff2", "ln1", "ln2_g", "ln2_b", "ff2_b"], ["hidden_out"], epsilon=1e-12),
    ]
    inputs = [vi("hidden_in", F, [2, seq, hidden]), vi("attention_mask", I32, [2, seq])]
    model = make_model(nodes, "contrib_bert_block", inputs, [vi("hidden_out", F, [2, seq, hidden])], inits)
    feeds = {"hidden_in": f32(rng, 2, seq, hidden),
             "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)}
    return model, [feeds]


def _bert_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = feeds["hidden_in"].astype(np.float64)
    attn = packed_attention(x, p["qkv_w"], p["qkv_b"], 2, feeds["attention_mask"] > 0)
    ln1, _, _ = layer_norm(attn @ p["out_w"] + p["out_b"] + x, p["ln1_g"], p["ln1_b"], 1e-12)
    ff = fast_gelu(ln1 @ p["ff1_w"] + p["ff1_b"]) @ p["ff2_w"] + p["ff2_b"]
    out, _, _ = layer_norm(ff + ln1, p["ln2_g"], p["ln2_b"], 1e-12)
    return f32_out(out)


contrib_bert_block.reference = _bert_ref

# ---------------------------------------------------------------------------- dynamic quantization
# numpy copies of onnxruntime's CPU arithmetic (rnn_helpers.cc ComputeGemm, uni_directional_lstm.cc,
# dynamic_quantize_matmul.cc): uint8 run-time quantization of the left operand over all its
# elements, exact integer products, f32 scaling.

def quantize_u8(x):
    x = np.asarray(x, np.float32)
    lo, hi = np.float32(min(x.min(initial=0), 0)), np.float32(max(x.max(initial=0), 0))
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zp = np.float32(np.rint(np.clip(np.float32(0) - lo / scale, 0, 255)))
    q = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.int64)
    return q, scale, int(zp)


def int_product(qa, a_zp, a_scale, w, w_zp, w_scale):
    acc = (qa - a_zp) @ (w.astype(np.int64) - w_zp)
    return acc.astype(np.float32) * (np.float32(a_scale) * np.asarray(w_scale, np.float32))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def dq_lstm(x, p, lens, direction, want_y):
    """p: W, R (int), W_scale, W_zp, R_scale, R_zp per direction, B, P, h0, c0 (float) or None."""
    seq, batch, _ = x.shape
    dirs = 2 if direction == "bidirectional" else 1
    hidden = p["R"].shape[1]
    y = np.zeros((seq, dirs, batch, hidden), np.float32)
    yh = np.zeros((dirs, batch, hidden), np.float32)
    yc = np.zeros((dirs, batch, hidden), np.float32)
    max_len = int(lens.max())
    qx, sx, zx = quantize_u8(x[:max_len].reshape(max_len * batch, -1))
    for d in range(dirs):
        rev = direction == "reverse" or d == 1
        wzp, rzp = np.ravel(p["W_zp"][d])[0], np.ravel(p["R_zp"][d])[0]
        from_x = int_product(qx, zx, sx, p["W"][d], wzp, p["W_scale"][d]).reshape(max_len, batch, 4 * hidden)
        bias = (p["B"][d, :4 * hidden] + p["B"][d, 4 * hidden:]).astype(np.float32) if p.get("B") is not None \
            else np.zeros(4 * hidden, np.float32)
        peep = p["P"][d] if p.get("P") is not None else np.zeros(3 * hidden, np.float32)
        h = p["h0"][d].astype(np.float32).copy() if p.get("h0") is not None else np.zeros((batch, hidden), np.float32)
        c = p["c0"][d].astype(np.float64).copy() if p.get("c0") is not None else np.zeros((batch, hidden))
        for k in range(max_len):
            qh, sh, zh = quantize_u8(h)
            from_h = int_product(qh, zh, sh, p["R"][d], rzp, p["R_scale"][d])
            for n in range(batch):
                if k >= lens[n]:
                    if want_y:
                        h[n] = 0
                    continue
                t = lens[n] - 1 - k if rev else k
                g = (from_x[t, n] + from_h[n]).astype(np.float64) + bias
                i_, o_, f_, c_ = np.split(g, 4)
                i = sigmoid(i_ + peep[:hidden] * c[n])
                f = sigmoid(f_ + peep[2 * hidden:] * c[n])
                c[n] = f * c[n] + i * np.tanh(c_)
                o = sigmoid(o_ + peep[hidden:2 * hidden] * c[n])
                hn = o * np.tanh(c[n])
                h[n] = hn
                y[t, d, n] = hn
                if k + 1 == lens[n]:
                    yh[d, n], yc[d, n] = hn, c[n]
    return y, yh, yc


def contrib_dynamic_quantize_lstm():
    rng = np.random.default_rng(16)
    seq, batch, inp, hidden = 5, 3, 3, 4
    g = 4 * hidden

    def u8(*shape):
        return rng.integers(0, 256, shape).astype(np.uint8)

    def i8(*shape):
        return rng.integers(-127, 128, shape).astype(np.int8)

    inits = [
        init("W", u8(2, inp, g)), init("R", u8(2, hidden, g)), init("B", f32(rng, 2, 2 * g, scale=0.1)),
        init("P", f32(rng, 2, 3 * hidden, scale=0.2)),
        init("W_scale", np.array([0.004, 0.005], np.float32)), init("W_zp", np.array([128, 120], np.uint8)),
        init("R_scale", np.array([0.006, 0.004], np.float32)), init("R_zp", np.array([131, 127], np.uint8)),
        init("W2", i8(1, inp, g)), init("R2", i8(1, hidden, g)),
        init("W2_scale", (0.003 + 0.003 * rng.random((1, g))).astype(np.float32)),
        init("W2_zp", np.zeros((1, g), np.int8)),
        init("R2_scale", (0.003 + 0.003 * rng.random((1, g))).astype(np.float32)),
        init("R2_zp", np.zeros((1, g), np.int8)),
    ]
    nodes = [
        ms("DynamicQuantizeLSTM", ["X", "W", "R", "B", "lens", "h0", "c0", "P", "W_scale", "W_zp", "R_scale", "R_zp"],
           ["y", "y_h", "y_c"], hidden_size=hidden, direction="bidirectional"),
        # Without sequence_lens: with Y left out, onnxruntime keeps finished sequences' last states
        # in the recurrent product's quantization range, which crx580 (not told which outputs are
        # used) does not.
        ms("DynamicQuantizeLSTM", ["X", "W2", "R2", "", "", "", "", "", "W2_scale", "W2_zp", "R2_scale", "R2_zp"],
           ["", "y_h_fwd"], hidden_size=hidden),
    ]
    inputs = [vi("X", F, [seq, batch, inp]), vi("lens", I32, [batch]), vi("h0", F, [2, batch, hidden]),
              vi("c0", F, [2, batch, hidden])]
    outs = [vi("y", F, [seq, 2, batch, hidden]), vi("y_h", F, [2, batch, hidden]), vi("y_c", F, [2, batch, hidden]),
            vi("y_h_fwd", F, [1, batch, hidden])]
    model = make_model(nodes, "contrib_dynamic_quantize_lstm", inputs, outs, inits)
    feeds = [{"X": f32(rng, seq, batch, inp), "lens": np.array(lens, np.int32),
              "h0": f32(rng, 2, batch, hidden, scale=0.5), "c0": f32(rng, 2, batch, hidden, scale=0.5)}
             for lens in ([5, 2, 4], [3, 5, 1])]
    return model, feeds


def _dq_lstm_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    x, lens = feeds["X"], feeds["lens"]
    bi = dict(W=p["W"], R=p["R"], W_scale=p["W_scale"], W_zp=p["W_zp"], R_scale=p["R_scale"], R_zp=p["R_zp"],
              B=p["B"], P=p["P"], h0=feeds["h0"], c0=feeds["c0"])
    fwd = dict(W=p["W2"], R=p["R2"], W_scale=p["W2_scale"], W_zp=p["W2_zp"], R_scale=p["R2_scale"], R_zp=p["R2_zp"])
    y, yh, yc = dq_lstm(x, bi, lens, "bidirectional", True)
    _, yh2, _ = dq_lstm(x, fwd, np.full_like(lens, x.shape[0]), "forward", False)
    return f32_out(y, yh, yc, yh2)


contrib_dynamic_quantize_lstm.reference = _dq_lstm_ref


def contrib_quant_matmul():
    rng = np.random.default_rng(17)
    k, n = 6, 5
    inits = [
        init("B_i8", rng.integers(-127, 128, (k, n)).astype(np.int8)),
        init("B_i8_scale", (0.01 + 0.01 * rng.random(n)).astype(np.float32)),
        init("bias", f32(rng, n, scale=0.1)),
        init("B_u8", rng.integers(0, 256, (k, n)).astype(np.uint8)),
        init("B_u8_scale", np.array(0.02, np.float32)), init("B_u8_zp", np.array(131, np.uint8)),
        init("A_scale", np.array(0.03, np.float32)), init("A_zp", np.array(120, np.uint8)),
        init("B3", rng.integers(-127, 128, (2, k, n)).astype(np.int8)),
        init("B3_scale", (0.01 + 0.01 * rng.random(n)).astype(np.float32)),
    ]
    nodes = [
        ms("DynamicQuantizeMatMul", ["X", "B_i8", "B_i8_scale", "", "bias"], ["y_dyn_i8"]),
        ms("DynamicQuantizeMatMul", ["X", "B_u8", "B_u8_scale", "B_u8_zp"], ["y_dyn_u8"]),
        ms("MatMulIntegerToFloat", ["Aq", "B_i8", "A_scale", "B_i8_scale", "A_zp", "", "bias"], ["y_int"]),
        # Batched B without bias: onnxruntime 1.32 adds a wrong bias when B is batched.
        ms("MatMulIntegerToFloat", ["Aq", "B3", "A_scale", "B3_scale", "A_zp"], ["y_int_batched"]),
    ]
    inputs = [vi("X", F, [2, 3, k]), vi("Aq", TensorProto.UINT8, [2, 3, k])]
    outs = [vi(name, F, [2, 3, n]) for name in ["y_dyn_i8", "y_dyn_u8", "y_int", "y_int_batched"]]
    model = make_model(nodes, "contrib_quant_matmul", inputs, outs, inits)
    feeds = {"X": f32(rng, 2, 3, k), "Aq": rng.integers(0, 256, (2, 3, k)).astype(np.uint8)}
    return model, [feeds]


def _quant_matmul_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    qx, sx, zx = quantize_u8(feeds["X"])
    y1 = int_product(qx, zx, sx, p["B_i8"], 0, p["B_i8_scale"]) + p["bias"]
    y2 = int_product(qx, zx, sx, p["B_u8"], int(p["B_u8_zp"]), p["B_u8_scale"])
    qa = feeds["Aq"].astype(np.int64)
    y3 = int_product(qa, int(p["A_zp"]), p["A_scale"], p["B_i8"], 0, p["B_i8_scale"]) + p["bias"]
    y4 = int_product(qa, int(p["A_zp"]), p["A_scale"], p["B3"], 0, p["B3_scale"])
    return f32_out(y1, y2, y3, y4)


contrib_quant_matmul.reference = _quant_matmul_ref

def contrib_embed_layernorm():
    rng = np.random.default_rng(18)
    vocab, positions, hidden, batch, seq = 11, 6, 8, 2, 4
    inits = [init("words", f32(rng, vocab, hidden)), init("positions", f32(rng, positions, hidden)),
             init("segments", f32(rng, 2, hidden)), init("gamma", 1 + f32(rng, hidden, scale=0.1)),
             init("beta", f32(rng, hidden, scale=0.1))]
    nodes = [
        ms("EmbedLayerNormalization", ["ids", "segment_ids", "words", "positions", "segments", "gamma", "beta", "mask"],
           ["y", "mask_index", "embedding_sum"], epsilon=1e-5),
        ms("EmbedLayerNormalization", ["ids", "", "words", "positions", "", "gamma", "beta", "", "position_ids"],
           ["y_positions", "unused_mask_index"]),
    ]
    inputs = [vi(n, I32, [batch, seq]) for n in ["ids", "segment_ids", "mask"]] + [vi("position_ids", I32, [1, seq])]
    outs = [vi("y", F, [batch, seq, hidden]), vi("mask_index", I32, [batch]),
            vi("embedding_sum", F, [batch, seq, hidden]), vi("y_positions", F, [batch, seq, hidden])]
    model = make_model(nodes, "contrib_embed_layernorm", inputs, outs, inits)
    feeds = {"ids": rng.integers(0, vocab, (batch, seq)).astype(np.int32),
             "segment_ids": np.array([[0, 0, 1, 1], [0, 1, 1, 1]], np.int32),
             "mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32),
             "position_ids": np.array([[5, 3, 1, 0]], np.int32)}
    return model, [feeds]


def _embed_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    ids, seq = feeds["ids"], feeds["ids"].shape[1]
    total = p["words"][ids] + p["positions"][np.arange(seq)][None] + p["segments"][feeds["segment_ids"]]
    y, _, _ = layer_norm(total, p["gamma"], p["beta"], 1e-5)
    y2, _, _ = layer_norm(p["words"][ids] + p["positions"][feeds["position_ids"]], p["gamma"], p["beta"], 1e-12)
    return f32_out(y) + [(feeds["mask"] == 1).sum(1).astype(np.int32)] + f32_out(total, y2)


contrib_embed_layernorm.reference = _embed_ref

def mha(q, k, v, n, key_keep=None, attention_bias=None, causal=False, filter_value=-10000.0):
    """q [b, s, n*h], k [b, kv, n*h], v [b, kv, n*hv] (biases already added); key_keep [b, kv] or
    [b, s, kv] bool; attention_bias broadcasting to [b, n, s, kv]."""
    b, s, d = q.shape
    kv = k.shape[1]
    heads = lambda x, w: x.reshape(b, x.shape[1], n, w).transpose(0, 2, 1, 3)
    qh, kh, vh = heads(q, d // n), heads(k, d // n), heads(v, v.shape[2] // n)
    scores = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d // n)
    if key_keep is not None:
        keep = key_keep[:, None, None, :] if key_keep.ndim == 2 else key_keep[:, None]
        scores = scores + np.where(keep, 0.0, filter_value)
    if attention_bias is not None:
        scores = scores + attention_bias
    if causal:
        scores = scores + np.triu(np.full((s, kv), filter_value), 1)
    return (softmax(scores) @ vh).transpose(0, 2, 1, 3).reshape(b, s, -1)


def contrib_multi_head_attention():
    rng = np.random.default_rng(19)
    b, s, kv, n, h, hv = 2, 6, 9, 3, 4, 2
    d, dv = n * h, n * hv
    inits = [init("bias", f32(rng, 2 * d + dv, scale=0.2)), init("bias_qkv", f32(rng, 3 * d, scale=0.2)),
             init("attn_bias", f32(rng, 1, n, s, kv))]
    nodes = [
        ms("MultiHeadAttention", ["Q", "K", "V", "bias", "mask"], ["y_cross"], num_heads=n),
        ms("MultiHeadAttention", ["Q", "K", "V", "", "", "attn_bias"], ["y_attn_bias"], num_heads=n),
        ms("MultiHeadAttention", ["QKV", "", "", "bias_qkv", "lengths"], ["y_packed"], num_heads=n),
        ms("MultiHeadAttention", ["Q", "KV"], ["y_packed_kv"], num_heads=n),
        ms("MultiHeadAttention", ["QKV"], ["y_causal"], num_heads=n, unidirectional=1),
        ms("MultiHeadAttention", ["Q", "Kh", "Vh"], ["y_split_kv"], num_heads=n),
    ]
    inputs = [vi("Q", F, [b, s, d]), vi("K", F, [b, kv, d]), vi("V", F, [b, kv, dv]), vi("mask", I32, [b, kv]),
              vi("QKV", F, [b, s, n, 3, h]), vi("lengths", I32, [b]), vi("KV", F, [b, kv, n, 2, h]),
              vi("Kh", F, [b, n, kv, h]), vi("Vh", F, [b, n, kv, h])]
    outs = [vi("y_cross", F, [b, s, dv]), vi("y_attn_bias", F, [b, s, dv]), vi("y_packed", F, [b, s, d]),
            vi("y_packed_kv", F, [b, s, d]), vi("y_causal", F, [b, s, d]), vi("y_split_kv", F, [b, s, d])]
    model = make_model(nodes, "contrib_multi_head_attention", inputs, outs, inits)
    # onnxruntime's CPU kernel takes neither packed form: its reference unpacks them first
    # (Split along the packing axis, Reshape to [b, seq, n*h]).
    unpack = [helper.make_node("Split", ["QKV"], ["q5", "k5", "v5"], axis=3),
              helper.make_node("Split", ["KV"], ["kk5", "kv5"], axis=3)]
    flat = init("flat", np.array([0, 0, -1], np.int64))
    unpack += [helper.make_node("Reshape", [f"{x}5", "flat"], [f"{x}_flat"]) for x in ["q", "k", "v", "kk", "kv"]]
    ort_nodes = unpack + [
        nodes[0], nodes[1],
        ms("MultiHeadAttention", ["q_flat", "k_flat", "v_flat", "bias_qkv", "lengths"], ["y_packed"], num_heads=n),
        ms("MultiHeadAttention", ["Q", "kk_flat", "kv_flat"], ["y_packed_kv"], num_heads=n),
        ms("MultiHeadAttention", ["q_flat", "k_flat", "v_flat"], ["y_causal"], num_heads=n, unidirectional=1),
        nodes[5],
    ]
    contrib_multi_head_attention.ort_model = make_model(ort_nodes, "contrib_multi_head_attention_ort", inputs, outs,
                                                        inits + [flat])
    feeds = {"Q": f32(rng, b, s, d), "K": f32(rng, b, kv, d), "V": f32(rng, b, kv, dv),
             "mask": np.array([[1] * 9, [1, 1, 0, 1, 1, 1, 0, 0, 0]], np.int32),
             "QKV": f32(rng, b, s, n, 3, h), "lengths": np.array([6, 4], np.int32), "KV": f32(rng, b, kv, n, 2, h),
             "Kh": f32(rng, b, n, kv, h), "Vh": f32(rng, b, n, kv, h)}
    return model, [feeds]


def _mha_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    f = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    b, s, d = f["Q"].shape
    n = 3
    bias, bqkv = p["bias"], p["bias_qkv"]
    q, k, v = f["Q"], f["K"], f["V"]
    cross = mha(q + bias[:d], k + bias[d:2 * d], v + bias[2 * d:], n, f["mask"] > 0)
    with_bias = mha(q, k, v, n, attention_bias=p["attn_bias"])
    flat = lambda x: x.reshape(b, x.shape[1], -1)
    qkv = f["QKV"]
    pq, pk, pv = (flat(qkv[:, :, :, i]) for i in range(3))
    lengths = np.arange(s)[None, :] < f["lengths"][:, None]
    packed = mha(pq + bqkv[:d], pk + bqkv[d:2 * d], pv + bqkv[2 * d:], n, lengths)
    packed_kv = mha(q, flat(f["KV"][:, :, :, 0]), flat(f["KV"][:, :, :, 1]), n)
    causal = mha(pq, pk, pv, n, causal=True)
    merge = lambda x: x.transpose(0, 2, 1, 3).reshape(b, x.shape[2], -1)
    split_kv = mha(q, merge(f["Kh"]), merge(f["Vh"]), n)
    return f32_out(cross, with_bias, packed, packed_kv, causal, split_kv)


contrib_multi_head_attention.reference = _mha_ref


def contrib_attention_long():
    rng = np.random.default_rng(20)
    b, s, hin, n = 2, 70, 10, 3
    qs, vs = 12, 9
    inits = [init("W", f32(rng, hin, 2 * qs + vs, scale=0.5)), init("B", f32(rng, 2 * qs + vs, scale=0.1))]
    nodes = [
        ms("Attention", ["X", "W", "B", "mask3d"], ["y_mask3d"], num_heads=n, qkv_hidden_sizes=[qs, qs, vs]),
        ms("Attention", ["X", "W", "B", "spans"], ["y_spans"], num_heads=n, qkv_hidden_sizes=[qs, qs, vs]),
    ]
    inputs = [vi("X", F, [b, s, hin]), vi("mask3d", I32, [b, s, s]), vi("spans", I32, [2 * b])]
    outs = [vi("y_mask3d", F, [b, s, vs]), vi("y_spans", F, [b, s, vs])]
    model = make_model(nodes, "contrib_attention_long", inputs, outs, inits)
    mask3d = (rng.random((b, s, s)) > 0.3).astype(np.int32)
    feeds = {"X": f32(rng, b, s, hin), "mask3d": mask3d, "spans": np.array([70, 61, 0, 5], np.int32)}
    return model, [feeds]


def _attention_long_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = feeds["X"].astype(np.float64)
    qkv = x @ p["W"] + p["B"]
    q, k, v = qkv[..., :12], qkv[..., 12:24], qkv[..., 24:]
    keys = np.arange(x.shape[1])
    ends, starts = feeds["spans"][:2], feeds["spans"][2:]
    spans = (keys[None, :] < ends[:, None]) & (keys[None, :] >= starts[:, None])
    return f32_out(mha(q, k, v, 3, feeds["mask3d"] > 0), mha(q, k, v, 3, spans))


contrib_attention_long.reference = _attention_long_ref


def contrib_skip_simplified():
    rng = np.random.default_rng(21)
    h, h2 = 8, 13
    inits = [init("gamma", 1 + f32(rng, h, scale=0.2)), init("bias", f32(rng, h, scale=0.2)),
             init("gamma2", 1 + f32(rng, h2, scale=0.2))]
    nodes = [
        ms("SkipSimplifiedLayerNormalization", ["X", "S", "gamma", "bias"], ["y", "", "inv_std", "sum"],
           epsilon=1e-5),
        ms("SkipSimplifiedLayerNormalization", ["X2", "S2", "gamma2"], ["y2"]),
    ]
    inputs = [vi("X", F, [2, 3, h]), vi("S", F, [2, 3, h]), vi("X2", F, [5, h2]), vi("S2", F, [5, h2])]
    outs = [vi("y", F, [2, 3, h]), vi("inv_std", F, [2, 3, 1]), vi("sum", F, [2, 3, h]), vi("y2", F, [5, h2])]
    model = make_model(nodes, "contrib_skip_simplified", inputs, outs, inits)
    feeds = {"X": f32(rng, 2, 3, h), "S": f32(rng, 2, 3, h), "X2": f32(rng, 5, h2), "S2": f32(rng, 5, h2)}
    return model, [feeds]


def _skip_simplified_ref(model, feeds):
    p = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    f = {k: v.astype(np.float64) for k, v in feeds.items()}
    total = f["X"] + f["S"] + p["bias"]
    inv = 1 / np.sqrt((total ** 2).mean(-1, keepdims=True) + 1e-5)
    total2 = f["X2"] + f["S2"]
    y2 = total2 / np.sqrt((total2 ** 2).mean(-1, keepdims=True) + 1e-12) * p["gamma2"]
    return f32_out(total * inv * p["gamma"], inv, total, y2)


contrib_skip_simplified.reference = _skip_simplified_ref

MODELS = [contrib_gelu_family, contrib_skip_layernorm, contrib_attention_masks, contrib_fused_conv,
          contrib_bert_block, contrib_dynamic_quantize_lstm, contrib_quant_matmul, contrib_embed_layernorm,
          contrib_multi_head_attention, contrib_attention_long, contrib_skip_simplified]


def main() -> int:
    return gen_models.generate(MODELS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
