#!/usr/bin/env python3
"""Build small "real model" golden tests for crx580 with onnx.helper + onnxruntime.

Each model is built with ``onnx.helper`` (random weights from a fixed per-model
seed), checked with ``onnx.checker`` (full check, incl. shape inference), run
with onnxruntime (CPU, graph optimisations disabled, 1 thread) to produce the
reference outputs, and cross-checked against ``onnx.reference.ReferenceEvaluator``
(for cnn_bn and opset9_legacy, where onnx.reference is wrong, against direct
numpy implementations: see _cnn_bn_numpy and _opset9_numpy).
Everything is written in the ONNX backend-test layout::

    DIR/<name>/model.onnx
    DIR/<name>/test_data_set_<k>/input_<i>.pb     TensorProto named after graph input i
    DIR/<name>/test_data_set_<k>/output_<i>.pb    TensorProto named after graph output i

Models (see tests/models/README.md for details):
    mlp                         opset 13  MatMul+Add+Relu x2, MatMul+Add, Softmax; batch "N"
    cnn_bn                      opset 13  Conv, BatchNormalization, Relu, MaxPool, depthwise
                                          Conv, GlobalAveragePool, Flatten, Gemm; batch "N"
    dyn_reshape                 opset 13  Shape/Gather/Unsqueeze/Concat/Reshape, Mul, Transpose
    attention_block             opset 17  LayerNormalization, 2-head self-attention, Erf-Gelu MLP
    attention_block_decomposed  opset 17  same weights, LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div
    opset9_legacy               opset 9   Unsqueeze/Squeeze/Slice/Clip with attributes,
                                          Dropout, Softmax(axis=1) on rank 3 (old semantics)
    int64_passthrough           opset 13  int64 Identity + ArgMax outputs
    digits                      opset 13  examples/digits/digits.onnx on its 32 samples
    qdq_cnn                     opset 19  QDQ CNN, per-channel int8 Conv/MatMul weights, int32 bias
    qlinear_ops                 opset 19  QuantizeLinear, QLinearConv, QLinearMatMul, DequantizeLinear
    weight_only_int8            opset 19  int8 weights via Cast+Mul; DynamicQuantizeLinear+MatMulInteger

Models with a symbolic batch get a second data set with a different batch size.

Usage:
    python tests/models/gen_models.py [--out DIR]

Default DIR is tests/models/golden (committed). DIR/<name> directories for
these models are replaced; other content of DIR is left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DIGITS_DIR = os.path.join(REPO, "examples", "digits")

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def make_model(nodes, name, inputs, outputs, inits, opset, doc=""):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model_gen_version(
        graph, opset_imports=[helper.make_opsetid("", opset)],
        producer_name="crx580-gen_models", producer_version="1", doc_string=doc)
    onnx.checker.check_model(model, full_check=True)
    return model


# ----------------------------------------------------------------------------
# models: each returns (model, [feeds for data set 0, data set 1, ...])
# ----------------------------------------------------------------------------

def mlp():
    rng = np.random.default_rng(1001)
    d_in, h1, h2, d_out = 16, 32, 24, 10
    inits = [
        init("w1", f32(rng, d_in, h1, scale=1 / np.sqrt(d_in))), init("b1", f32(rng, h1, scale=0.1)),
        init("w2", f32(rng, h1, h2, scale=1 / np.sqrt(h1))), init("b2", f32(rng, h2, scale=0.1)),
        init("w3", f32(rng, h2, d_out, scale=1 / np.sqrt(h2))), init("b3", f32(rng, d_out, scale=0.1)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["mm1"]),
        helper.make_node("Add", ["mm1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["mm2"]),
        helper.make_node("Add", ["mm2", "b2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w3"], ["mm3"]),
        helper.make_node("Add", ["mm3", "b3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    model = make_model(nodes, "mlp", [vi("x", F, ["N", d_in])], [vi("probs", F, ["N", d_out])],
                       inits, 13, "3-layer MLP, symbolic batch")
    feeds = [{"x": f32(rng, 4, d_in)}, {"x": f32(rng, 1, d_in)}]
    return model, feeds


def cnn_bn():
    rng = np.random.default_rng(1002)
    c_in, c1, n_cls = 3, 8, 5
    inits = [
        init("conv1_w", f32(rng, c1, c_in, 3, 3, scale=1 / np.sqrt(c_in * 9))),
        init("conv1_b", f32(rng, c1, scale=0.1)),
        init("bn_scale", (1 + 0.2 * rng.standard_normal(c1)).astype(np.float32)),
        init("bn_bias", f32(rng, c1, scale=0.1)),
        init("bn_mean", f32(rng, c1, scale=0.2)),
        init("bn_var", rng.uniform(0.5, 1.5, c1).astype(np.float32)),
        init("dw_w", f32(rng, c1, 1, 3, 3, scale=1 / 3)),
        init("dw_b", f32(rng, c1, scale=0.1)),
        init("fc_w", f32(rng, n_cls, c1, scale=1 / np.sqrt(c1))),
        init("fc_b", f32(rng, n_cls, scale=0.1)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1_w", "conv1_b"], ["c1"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization",
                         ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"],
                         epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        # depthwise: group == channels, stride 2
        helper.make_node("Conv", ["p1", "dw_w", "dw_b"], ["dw"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=c1),
        helper.make_node("GlobalAveragePool", ["dw"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    model = make_model(nodes, "cnn_bn", [vi("x", F, ["N", c_in, 16, 16])],
                       [vi("logits", F, ["N", n_cls])], inits, 13,
                       "Conv+BN+Relu+MaxPool, depthwise Conv, GAP, Gemm")
    feeds = [{"x": f32(rng, 2, c_in, 16, 16)}, {"x": f32(rng, 1, c_in, 16, 16)}]
    return model, feeds


def _np_conv(x, w, b, stride, pad, group):
    """Direct (slow, float64) grouped 2-D convolution, for cross-checking."""
    n, _c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + kh,
                           j * stride:j * stride + kw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + b[oc]
    return out


def _cnn_bn_numpy(model, feeds):
    """Independent numpy reference for cnn_bn. onnx.reference's BatchNormalization
    (opset 9-13) computes *training-mode* statistics whenever ``momentum`` is set,
    and it is always set by its schema default, so it cannot be used here."""
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    x = feeds["x"].astype(np.float64)
    c = lambda v: v[None, :, None, None]  # noqa: E731
    y = _np_conv(x, w["conv1_w"], w["conv1_b"], 1, 1, 1)
    y = (y - c(w["bn_mean"])) / np.sqrt(c(w["bn_var"]) + 1e-5) * c(w["bn_scale"]) + c(w["bn_bias"])
    y = np.maximum(y, 0)
    n, ch, h, wd = y.shape
    y = y.reshape(n, ch, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    y = _np_conv(y, w["dw_w"], w["dw_b"], 2, 1, ch)
    y = y.mean(axis=(2, 3)) @ w["fc_w"].T + w["fc_b"]
    return [y.astype(np.float32)]


cnn_bn.reference = _cnn_bn_numpy


def dyn_reshape():
    rng = np.random.default_rng(1003)
    inits = [
        init("idx0", np.array(0, dtype=np.int64)),        # scalar index -> scalar N
        init("idx12", np.array([1, 2], dtype=np.int64)),  # 1-D index -> [T, 6]
        init("axes0", np.array([0], dtype=np.int64)),
        init("tail", np.array([2, -1], dtype=np.int64)),
        init("scale", np.array(2.0, dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),                     # [N, T, 6]
        helper.make_node("Gather", ["shape", "idx0"], ["n"], axis=0),    # N (scalar)
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),           # [N]
        helper.make_node("Concat", ["n1", "tail"], ["target"], axis=0),  # [N, 2, -1]
        helper.make_node("Reshape", ["x", "target"], ["r"]),             # [N, 2, 3T]
        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1]),     # [N, 3T, 2]
        # second branch: flatten trailing dims via product of gathered dims
        helper.make_node("Gather", ["shape", "idx12"], ["td"], axis=0),  # [T, 6]
        helper.make_node("ReduceProd", ["td"], ["prod"], keepdims=1),    # [6T]
        helper.make_node("Concat", ["n1", "prod"], ["target2"], axis=0),  # [N, 6T]
        helper.make_node("Reshape", ["x", "target2"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["z"]),
    ]
    model = make_model(nodes, "dyn_reshape", [vi("x", F, ["N", "T", 6])],
                       [vi("y", F, ["N", None, 2]), vi("z", F, ["N", None])], inits, 13,
                       "reshape targets computed from Shape; tests shape folding")
    feeds = [{"x": f32(rng, 2, 4, 6)}, {"x": f32(rng, 3, 5, 6)}]
    return model, feeds


def _attention_weights(rng, d, d_ff):
    s = 1 / np.sqrt(d)
    return {
        "ln1_scale": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
        "ln1_bias": f32(rng, d, scale=0.1),
        "wq": f32(rng, d, d, scale=s), "wk": f32(rng, d, d, scale=s), "wv": f32(rng, d, d, scale=s),
        "wo": f32(rng, d, d, scale=s), "bo": f32(rng, d, scale=0.05),
        "ln2_scale": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
        "ln2_bias": f32(rng, d, scale=0.1),
        "w_ff1": f32(rng, d, d_ff, scale=s), "b_ff1": f32(rng, d_ff, scale=0.05),
        "w_ff2": f32(rng, d_ff, d, scale=1 / np.sqrt(d_ff)), "b_ff2": f32(rng, d, scale=0.05),
    }


def _layernorm_fused(x, prefix, out):
    return [helper.make_node("LayerNormalization", [x, f"{prefix}_scale", f"{prefix}_bias"],
                             [out], axis=-1, epsilon=1e-5)]


def _layernorm_decomposed(x, prefix, out):
    p = prefix
    return [
        helper.make_node("ReduceMean", [x], [f"{p}_mean"], axes=[-1], keepdims=1),
        helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_xc"]),
        helper.make_node("Pow", [f"{p}_xc", "two"], [f"{p}_sq"]),
        helper.make_node("ReduceMean", [f"{p}_sq"], [f"{p}_var"], axes=[-1], keepdims=1),
        helper.make_node("Add", [f"{p}_var", "ln_eps"], [f"{p}_var_eps"]),
        helper.make_node("Sqrt", [f"{p}_var_eps"], [f"{p}_std"]),
        helper.make_node("Div", [f"{p}_xc", f"{p}_std"], [f"{p}_norm"]),
        helper.make_node("Mul", [f"{p}_norm", f"{p}_scale"], [f"{p}_scaled"]),
        helper.make_node("Add", [f"{p}_scaled", f"{p}_bias"], [out]),
    ]


def _attention_block(decomposed: bool):
    rng = np.random.default_rng(1004)  # same weights and input for both variants
    seq, d, heads, d_ff = 8, 32, 2, 64
    dh = d // heads
    w = _attention_weights(rng, d, d_ff)
    x = f32(rng, 1, seq, d)
    ln = _layernorm_decomposed if decomposed else _layernorm_fused
    consts = {
        "split_heads": np.array([0, 0, heads, dh], dtype=np.int64),  # 0 = copy dim
        "merge_heads": np.array([0, 0, d], dtype=np.int64),
        "sqrt_dh": np.array(np.sqrt(dh), dtype=np.float32),
        "sqrt2": np.array(np.sqrt(2.0), dtype=np.float32),
        "one": np.array(1.0, dtype=np.float32),
        "half": np.array(0.5, dtype=np.float32),
    }
    if decomposed:
        consts["two"] = np.array(2.0, dtype=np.float32)
        consts["ln_eps"] = np.array(1e-5, dtype=np.float32)
    inits = [init(k, v) for k, v in {**w, **consts}.items()]
    nodes = ln("x", "ln1", "h")
    nodes += [
        helper.make_node("MatMul", ["h", "wq"], ["q"]),
        helper.make_node("MatMul", ["h", "wk"], ["k"]),
        helper.make_node("MatMul", ["h", "wv"], ["v"]),
        helper.make_node("Reshape", ["q", "split_heads"], ["q4"]),        # [1,8,2,16]
        helper.make_node("Reshape", ["k", "split_heads"], ["k4"]),
        helper.make_node("Reshape", ["v", "split_heads"], ["v4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),  # [1,2,8,16]
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),  # [1,2,16,8]
        helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),  # [1,2,8,16]
        helper.make_node("MatMul", ["qh", "kt"], ["scores_raw"]),          # [1,2,8,8]
        helper.make_node("Div", ["scores_raw", "sqrt_dh"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "vh"], ["ctx_h"]),             # [1,2,8,16]
        helper.make_node("Transpose", ["ctx_h"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_heads"], ["ctx"]),    # [1,8,32]
        helper.make_node("MatMul", ["ctx", "wo"], ["o_mm"]),
        helper.make_node("Add", ["o_mm", "bo"], ["o"]),
        helper.make_node("Add", ["x", "o"], ["res1"]),
    ]
    nodes += ln("res1", "ln2", "h2")
    nodes += [
        helper.make_node("MatMul", ["h2", "w_ff1"], ["ff1_mm"]),
        helper.make_node("Add", ["ff1_mm", "b_ff1"], ["ff1"]),
        # exact Gelu: 0.5 * x * (1 + erf(x / sqrt(2)))
        helper.make_node("Div", ["ff1", "sqrt2"], ["g_div"]),
        helper.make_node("Erf", ["g_div"], ["g_erf"]),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"]),
        helper.make_node("Mul", ["ff1", "g_add"], ["g_mul"]),
        helper.make_node("Mul", ["g_mul", "half"], ["gelu"]),
        helper.make_node("MatMul", ["gelu", "w_ff2"], ["ff2_mm"]),
        helper.make_node("Add", ["ff2_mm", "b_ff2"], ["ff2"]),
        helper.make_node("Add", ["res1", "ff2"], ["y"]),
    ]
    name = "attention_block_decomposed" if decomposed else "attention_block"
    model = make_model(nodes, name, [vi("x", F, [1, seq, d])], [vi("y", F, [1, seq, d])],
                       inits, 17, "pre-LN transformer block, 2 heads, Erf Gelu"
                       + (", LayerNorm decomposed" if decomposed else ""))
    return model, [{"x": x}]


def attention_block():
    return _attention_block(decomposed=False)


def attention_block_decomposed():
    return _attention_block(decomposed=True)


def opset9_legacy():
    rng = np.random.default_rng(1005)
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),                  # [1,2,3,4]
        helper.make_node("Slice", ["u"], ["s"], axes=[2, 3], starts=[1, -3],
                         ends=[1000, 4]),                                          # [1,2,2,3]
        helper.make_node("Squeeze", ["s"], ["sq"], axes=[0]),                   # [2,2,3]
        helper.make_node("Clip", ["sq"], ["c"], min=-0.5, max=0.75),
        helper.make_node("Dropout", ["c"], ["d"], ratio=0.3),                   # identity
        # opset < 13 Softmax: coerce to 2-D [2, 6] at axis 1, softmax over 6
        helper.make_node("Softmax", ["d"], ["y"], axis=1),
    ]
    model = make_model(nodes, "opset9_legacy", [vi("x", F, [2, 3, 4])],
                       [vi("y", F, [2, 2, 3]), vi("c", F, [2, 2, 3])], [], 9,
                       "opset 9 attribute forms of Unsqueeze/Squeeze/Slice/Clip; old Softmax")
    return model, [{"x": f32(rng, 2, 3, 4)}]


def _opset9_numpy(_model, feeds):
    """Independent numpy reference for opset9_legacy: onnx.reference applies the
    opset-13 Softmax semantics (softmax along one axis) to opset 9 too, whereas
    opset < 13 Softmax flattens to 2-D [prod(dims[:axis]), prod(dims[axis:])]."""
    x = feeds["x"][None]                      # Unsqueeze axes=[0]
    x = x[:, :, 1:1000, -3:4]                 # Slice axes=[2,3] starts=[1,-3] ends=[1000,4]
    x = x[0]                                  # Squeeze axes=[0]
    c = np.clip(x, -0.5, 0.75)
    flat = c.reshape(c.shape[0], -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    y = (e / e.sum(axis=1, keepdims=True)).reshape(c.shape)
    return [y.astype(np.float32), c]


opset9_legacy.reference = _opset9_numpy


def int64_passthrough():
    rng = np.random.default_rng(1006)
    nodes = [
        helper.make_node("Identity", ["ids"], ["ids_out"]),
        helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("ArgMax", ["scores"], ["argmax_last"], axis=-1, keepdims=1,
                         select_last_index=1),
    ]
    model = make_model(nodes, "int64_passthrough",
                       [vi("ids", I64, ["N", 5]), vi("scores", F, ["N", 5])],
                       [vi("ids_out", I64, ["N", 5]), vi("argmax", I64, ["N"]),
                        vi("argmax_last", I64, ["N", 1])], [], 13,
                       "int64 passthrough and ArgMax")

    def feed(n):
        ids = rng.integers(-(2 ** 40), 2 ** 40, size=(n, 5), dtype=np.int64)
        ids[0, 0] = np.iinfo(np.int64).max   # values that do not fit in 32 or 53 bits
        ids[0, 1] = np.iinfo(np.int64).min
        ids[0, 2] = 2 ** 53 + 1
        # rounded values so that ties exist (tests first vs last index)
        scores = np.round(rng.standard_normal((n, 5)), 0).astype(np.float32)
        scores[0] = [0.5, 2.0, -1.0, 2.0, 0.0]  # explicit tie: first 1, last 3
        return {"ids": ids, "scores": scores}

    return model, [feed(3), feed(1)]


def exporter_quirks():
    """What real exporters write: weights as Constant nodes (no initializers), tensor names with ':'
    and '/', a declared output shape that is wrong, and an int64 input passed straight through."""
    rng = np.random.default_rng(1007)
    w = helper.make_tensor("w", F, [6, 4], f32(rng, 6, 4).ravel().tolist())
    b = helper.make_tensor("b", F, [4], f32(rng, 4).ravel().tolist())
    nodes = [
        helper.make_node("Constant", [], ["encoder/w:0"], value=w),
        helper.make_node("Constant", [], ["encoder/b:0"], value=b),
        helper.make_node("MatMul", ["input:0", "encoder/w:0"], ["encoder/mm:0"]),
        helper.make_node("Add", ["encoder/mm:0", "encoder/b:0"], ["encoder/out:0"]),
        helper.make_node("Tanh", ["encoder/out:0"], ["output:0"]),
        helper.make_node("Identity", ["token_ids:0"], ["token_ids_out:0"]),
    ]
    graph = helper.make_graph(
        nodes, "exporter_quirks",
        [vi("input:0", F, ["batch", 6]), vi("token_ids:0", I64, ["batch", 3])],
        # Wrong on purpose: the real output is [batch, 4].
        [vi("output:0", F, [7, 7]), vi("token_ids_out:0", I64, ["batch", 3])])
    model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", 11)],
                                          producer_name="crx580-gen_models")
    onnx.checker.check_model(model)  # not full_check: the declared output shape is wrong on purpose
    feeds = [{"input:0": f32(rng, 2, 6), "token_ids:0": rng.integers(0, 30000, (2, 3), dtype=np.int64)}]
    return model, feeds


def fp16_mlp():
    """A float16 model end to end (weights, activations and outputs in float16)."""
    rng = np.random.default_rng(1008)
    h = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float16)  # noqa: E731
    inits = [init("w1", h(8, 16)), init("b1", h(16)), init("w2", h(16, 4)), init("b2", h(4)),
             init("g", h(16) + np.float16(1)), init("beta", h(16))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("LayerNormalization", ["a1", "g", "beta"], ["ln"], axis=-1),
        helper.make_node("Relu", ["ln"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    model = make_model(nodes, "fp16_mlp", [vi("x", TensorProto.FLOAT16, ["N", 8])],
                       [vi("probs", TensorProto.FLOAT16, ["N", 4])], inits, 17, "float16 MLP")
    return model, [{"x": h(3, 8)}]


def digits():
    path = os.path.join(DIGITS_DIR, "digits.onnx")
    model = onnx.load(path)
    samples = np.load(os.path.join(DIGITS_DIR, "samples.npy"))
    return model, [{"image": samples}]


# ----------------------------------------------------------------------------
# quantized models
# ----------------------------------------------------------------------------

U8 = TensorProto.UINT8


def _qparams_u8(lo, hi):
    """Asymmetric uint8 scale and zero point for the float range [lo, hi] (widened to hold 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0)
    return scale, np.uint8(np.clip(np.rint(-lo / scale), 0, 255))


def _per_channel_int8(w, axis):
    """Symmetric per-channel int8 weights, as quantize_static(per_channel=True) makes them."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=other) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _one_step_reference(step):
    """A reference check for QDQ models: onnx.reference and onnxruntime may round a value that
    lands on a quantization boundary differently, so outputs may differ by one step."""
    def check(model, feeds):
        ort_outs = run_ort(model, feeds)
        ref = ReferenceEvaluator(model).run(None, feeds)
        outs = []
        for o, r in zip(model.graph.output, ref):
            a = ort_outs[o.name]
            np.testing.assert_allclose(a, r, rtol=0, atol=step * 1.001, err_msg=o.name)
            outs.append(a)  # the check passed: write ORT's values
        return outs
    return check


def qdq_cnn():
    """QDQ format as onnxruntime's quantize_static(per_channel=True) writes it: every activation
    goes through QuantizeLinear/DequantizeLinear, weights are per-channel int8 with a DQ node,
    biases are int32 quantized with scale x_scale * w_scale."""
    rng = np.random.default_rng(1007)
    c_in, c_out, hw, classes = 3, 6, 8, 5
    w_conv = f32(rng, c_out, c_in, 3, 3, scale=0.3)
    b_conv = f32(rng, c_out, scale=0.1)
    w_fc = f32(rng, c_out * (hw // 2) ** 2, classes, scale=0.1)
    b_fc = f32(rng, classes, scale=0.1)
    x_s, x_zp = _qparams_u8(-3.0, 3.0)
    c_s, c_zp = _qparams_u8(0.0, 4.0)     # after Relu
    y_s, y_zp = _qparams_u8(-4.0, 4.0)
    wq_conv, ws_conv = _per_channel_int8(w_conv, 0)
    wq_fc, ws_fc = _per_channel_int8(w_fc, 1)
    inits = [
        init("x_s", x_s), init("x_zp", x_zp), init("c_s", c_s), init("c_zp", c_zp),
        init("y_s", y_s), init("y_zp", y_zp),
        init("wq_conv", wq_conv), init("ws_conv", ws_conv), init("wzp_conv", np.zeros(c_out, np.int8)),
        init("bq_conv", np.rint(b_conv / (x_s * ws_conv)).astype(np.int32)),
        init("bs_conv", (x_s * ws_conv).astype(np.float32)), init("bzp_conv", np.zeros(c_out, np.int32)),
        init("wq_fc", wq_fc), init("ws_fc", ws_fc), init("wzp_fc", np.zeros(classes, np.int8)),
        init("b_fc", b_fc), init("flat_shape", np.array([0, -1], np.int64)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq_conv", "ws_conv", "wzp_conv"], ["wd_conv"], axis=0),
        helper.make_node("DequantizeLinear", ["bq_conv", "bs_conv", "bzp_conv"], ["bd_conv"], axis=0),
        helper.make_node("Conv", ["xd", "wd_conv", "bd_conv"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("QuantizeLinear", ["relu", "c_s", "c_zp"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "c_s", "c_zp"], ["rd"]),
        helper.make_node("MaxPool", ["rd"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pool", "flat_shape"], ["flat"]),
        helper.make_node("DequantizeLinear", ["wq_fc", "ws_fc", "wzp_fc"], ["wd_fc"], axis=1),
        helper.make_node("MatMul", ["flat", "wd_fc"], ["mm"]),
        helper.make_node("Add", ["mm", "b_fc"], ["fc"]),
        helper.make_node("QuantizeLinear", ["fc", "y_s", "y_zp"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["logits"]),
    ]
    model = make_model(nodes, "qdq_cnn", [vi("x", F, ["N", c_in, hw, hw])],
                       [vi("logits", F, ["N", classes])], inits, 19,
                       "QDQ CNN: per-channel int8 Conv and MatMul weights, int32 bias")
    feeds = [{"x": f32(rng, 2, c_in, hw, hw)}, {"x": f32(rng, 1, c_in, hw, hw)}]
    return model, feeds


qdq_cnn.reference = _one_step_reference(float(_qparams_u8(-4.0, 4.0)[0]))


def qlinear_ops():
    """The operator-oriented quantized format: QLinearConv (per-channel int8 weights, int32 bias)
    and QLinearMatMul between QuantizeLinear and DequantizeLinear."""
    rng = np.random.default_rng(1008)
    c_in, c_out, hw, classes = 2, 4, 6, 3
    wq_conv, ws_conv = _per_channel_int8(f32(rng, c_out, c_in, 3, 3, scale=0.3), 0)
    x_s, x_zp = _qparams_u8(-2.0, 2.0)
    c_s, c_zp = _qparams_u8(-3.0, 3.0)
    b_s, b_zp = np.float32(0.01), np.uint8(128)
    y_s, y_zp = _qparams_u8(-5.0, 5.0)
    inits = [
        init("x_s", x_s), init("x_zp", x_zp), init("c_s", c_s), init("c_zp", c_zp),
        init("wq", wq_conv), init("ws", ws_conv), init("wzp", np.zeros(c_out, np.int8)),
        init("bias", rng.integers(-2000, 2000, size=c_out).astype(np.int32)),
        init("flat_shape", np.array([0, -1], np.int64)),
        init("bq", rng.integers(0, 256, size=(c_out * (hw // 2) ** 2, classes)).astype(np.uint8)),
        init("b_s", b_s), init("b_zp", b_zp), init("y_s", y_s), init("y_zp", y_zp),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "x_s", "x_zp", "wq", "ws", "wzp", "c_s", "c_zp", "bias"],
                         ["cq"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Reshape", ["cq", "flat_shape"], ["flat"]),
        helper.make_node("QLinearMatMul", ["flat", "c_s", "c_zp", "bq", "b_s", "b_zp", "y_s", "y_zp"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"]),
    ]
    model = make_model(nodes, "qlinear_ops", [vi("x", F, ["N", c_in, hw, hw])],
                       [vi("yq", U8, ["N", classes]), vi("y", F, ["N", classes])], inits, 19,
                       "QLinearConv + QLinearMatMul")
    feeds = [{"x": f32(rng, 2, c_in, hw, hw)}, {"x": f32(rng, 1, c_in, hw, hw)}]
    return model, feeds


def weight_only_int8():
    """Weight-only quantization: int8 weights turned to float by Cast + Mul (per-column scale)
    before a float MatMul; and the dynamic-quantization pattern (DynamicQuantizeLinear +
    MatMulInteger + Cast + Mul) on the same weights."""
    rng = np.random.default_rng(1009)
    d_in, d_out = 12, 5
    wq, ws = _per_channel_int8(f32(rng, d_in, d_out, scale=0.2), 1)
    wq_u8 = (wq.astype(np.int16) + 128).astype(np.uint8)  # MatMulInteger branch: uint8, zero point 128
    inits = [init("wq", wq), init("ws", ws), init("wq_u8", wq_u8), init("w_zp", np.uint8(128))]
    nodes = [
        helper.make_node("Cast", ["wq"], ["wf"], to=F),
        helper.make_node("Mul", ["wf", "ws"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "x_s", "x_zp"]),
        helper.make_node("MatMulInteger", ["xq", "wq_u8", "x_zp", "w_zp"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["acc_f"], to=F),
        helper.make_node("Mul", ["x_s", "ws"], ["out_s"]),
        helper.make_node("Mul", ["acc_f", "out_s"], ["y_dyn"]),
    ]
    model = make_model(nodes, "weight_only_int8", [vi("x", F, ["N", d_in])],
                       [vi("y", F, ["N", d_out]), vi("y_dyn", F, ["N", d_out])], inits, 19,
                       "int8 weights via Cast+Mul; DynamicQuantizeLinear + MatMulInteger")
    feeds = [{"x": f32(rng, 4, d_in)}, {"x": f32(rng, 1, d_in)}]
    return model, feeds


def yolo_upsample():
    """YOLO neck: Conv, nearest 2x Resize by scales (asymmetric/floor, empty roi), Concat with the skip."""
    rng = np.random.default_rng(1009)
    inits = [
        init("w", f32(rng, 4, 8, 1, 1, scale=0.3)), init("b", f32(rng, 4, scale=0.1)),
        init("roi", np.zeros((0,), np.float32)), init("scales", np.array([1, 1, 2, 2], np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["deep", "w", "b"], ["c"]),
        helper.make_node("Resize", ["c", "roi", "scales"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Concat", ["up", "skip"], ["y"], axis=1),
    ]
    model = make_model(nodes, "yolo_upsample",
                       [vi("deep", F, ["N", 8, "H", "W"]), vi("skip", F, ["N", 6, "H2", "W2"])],
                       [vi("y", F, ["N", 10, "H2", "W2"])], inits, 13, "YOLO-style 2x nearest upsample + Concat")
    feeds = [{"deep": f32(rng, 1, 8, 5, 7), "skip": f32(rng, 1, 6, 10, 14)},
             {"deep": f32(rng, 2, 8, 3, 4), "skip": f32(rng, 2, 6, 6, 8)}]
    return model, feeds


def dbnet_upsample():
    """DBNet/FPN: bilinear (half_pixel) Resize of the deep map to the skip's spatial size, the sizes
    computed at run time from Shape, then Add."""
    rng = np.random.default_rng(1010)
    inits = [init("nc", np.array([0], np.int64)), init("two", np.array([2], np.int64)),
             init("end", np.array([4], np.int64))]
    nodes = [
        helper.make_node("Shape", ["deep"], ["deep_shape"]),
        helper.make_node("Slice", ["deep_shape", "nc", "two"], ["batch_channels"]),
        helper.make_node("Shape", ["skip"], ["skip_shape"]),
        helper.make_node("Slice", ["skip_shape", "two", "end"], ["hw"]),
        helper.make_node("Concat", ["batch_channels", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["deep", "", "", "sizes"], ["up"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Add", ["up", "skip"], ["y"]),
    ]
    model = make_model(nodes, "dbnet_upsample",
                       [vi("deep", F, ["N", 4, "H", "W"]), vi("skip", F, ["N", 4, "H2", "W2"])],
                       [vi("y", F, ["N", 4, "H2", "W2"])], inits, 13,
                       "DBNet-style bilinear upsample to Shape-derived sizes")
    feeds = [{"deep": f32(rng, 1, 4, 5, 6), "skip": f32(rng, 1, 4, 10, 12)},
             {"deep": f32(rng, 2, 4, 4, 5), "skip": f32(rng, 2, 4, 13, 11)}]
    return model, feeds


MODELS = [mlp, cnn_bn, dyn_reshape, attention_block, attention_block_decomposed,
          opset9_legacy, int64_passthrough, exporter_quirks, fp16_mlp, digits, qdq_cnn, qlinear_ops,
          weight_only_int8, yolo_upsample, dbnet_upsample]


# ----------------------------------------------------------------------------

def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, sess.run(names, feeds)))


def write_case(out_dir, name, model, feeds_list, reference=None, ort_model=None):
    """Writes one case; onnxruntime runs ``ort_model`` when given (an equivalent graph for an
    attribute ORT refuses), else ``model``."""
    case_dir = os.path.join(out_dir, name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    onnx.save(model, os.path.join(case_dir, "model.onnx"))
    if reference is None:
        evaluator = ReferenceEvaluator(model)
        reference = lambda _m, feeds: evaluator.run(None, feeds)  # noqa: E731
    for k, feeds in enumerate(feeds_list):
        outs = run_ort(ort_model or model, feeds)
        # cross-check ORT against onnx's reference implementation (or numpy)
        ref_outs = reference(model, feeds)
        for o, r in zip(model.graph.output, ref_outs):
            a = outs[o.name]
            r = np.asarray(r)
            assert a.dtype == r.dtype and a.shape == r.shape, (name, o.name, a.dtype, r.dtype)
            if a.dtype.kind == "f":
                # float16 results differ by an ulp or two between implementations
                tol = dict(rtol=4e-3, atol=1e-3) if a.dtype == np.float16 else dict(rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(a, r, **tol, err_msg=f"{name}/{o.name}")
            else:
                np.testing.assert_array_equal(a, r, err_msg=f"{name}/{o.name}")
        ds = os.path.join(case_dir, f"test_data_set_{k}")
        os.makedirs(ds)
        for i, inp in enumerate(model.graph.input):
            with open(os.path.join(ds, f"input_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[inp.name], inp.name).SerializeToString())
        for i, out in enumerate(model.graph.output):
            with open(os.path.join(ds, f"output_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(outs[out.name], out.name).SerializeToString())
        shapes = ", ".join(f"{n}{list(v.shape)}" for n, v in outs.items())
        print(f"  {name}/test_data_set_{k}: {shapes}")


def generate(models, doc, report_size=False) -> int:
    """The command line every generator shares: ``--out DIR``, then one case per model function.
    A function may carry ``reference`` (an independent check) and ``ort_model`` attributes."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "golden"),
                    help="output directory (default: %(default)s)")
    out = os.path.abspath(ap.parse_args().out)
    os.makedirs(out, exist_ok=True)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__} -> {out}")
    for fn in models:
        model, feeds = fn()
        write_case(out, fn.__name__, model, feeds, getattr(fn, "reference", None),
                   getattr(fn, "ort_model", None))
    if report_size:
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
        print(f"total size {total / 1024:.1f} KiB")
    return 0


def main() -> int:
    return generate(MODELS, __doc__, report_size=True)


if __name__ == "__main__":
    sys.exit(main())
