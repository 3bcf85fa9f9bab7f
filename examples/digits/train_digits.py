#!/usr/bin/env python3
"""Train a small CNN on scikit-learn's bundled 8x8 digits with pure numpy; export to ONNX.

Everything (forward, backward, Adam) is written by hand in numpy; no deep
learning framework is used. The data set is ``sklearn.datasets.load_digits``,
which ships inside the scikit-learn wheel (no download).

Architecture (NCHW, float32 at inference):

    image [N,1,8,8]  (pixel / 16, so in [0,1])
    Conv 3x3, 1->16, pad 1  -> Relu -> MaxPool 2x2/2   -> [N,16,4,4]
    Conv 3x3, 16->32, pad 1 -> Relu -> MaxPool 2x2/2   -> [N,32,2,2]
    Flatten                                            -> [N,128]
    Gemm 128->10 (transB=1)                            -> logits [N,10]
    Softmax(axis=1)                                    -> probabilities [N,10]

Split: the first 1437 images (80%) train, the last 360 (20%) test; no shuffling
of the split. Training: Adam (cosine-decayed lr 3e-3, weight decay 1e-4), minibatch 32,
random +-1 pixel shift augmentation, fixed seed, softmax cross-entropy.

Outputs (to --out, default: this script's directory):
    digits.onnx   opset 13, input "image" float32 ["N",1,8,8],
                  outputs "logits" and "probabilities" float32 ["N",10]
    samples.npy   float32 [32,1,8,8], the first 32 test images
    labels.npy    int64 [32], their labels

Checks done at the end: onnxruntime reproduces the numpy float32 forward pass
(max abs diff < 1e-4) and its accuracy is printed for the whole test split and
for the 32 samples.

Usage:
    python examples/digits/train_digits.py [--out DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 580
N_SAMPLES = 32
C1, C2 = 16, 32  # conv channels


# ----------------------------------------------------------------------------
# layers (x is NCHW)
# ----------------------------------------------------------------------------

def conv3x3_forward(x, w, b):
    """3x3 conv, stride 1, pad 1. w: [O,C,3,3]. Returns out, cache."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, c, 3, 3, h, wd), dtype=x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + wd]
    cols = cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * h * wd, c * 9)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    out = out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2)
    return out, (x.shape, cols, w)


def conv3x3_backward(dout, cache):
    (n, c, h, wd), cols, w = cache
    o = w.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dcols = (d @ w.reshape(o, -1)).reshape(n, h, wd, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2, wd + 2), dtype=dout.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + wd] += dcols[:, :, i, j]
    return dxp[:, :, 1:-1, 1:-1], dw, db


def maxpool2_forward(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(n, c, h // 2, w // 2, 4)
    idx = blocks.argmax(axis=-1)
    out = np.take_along_axis(blocks, idx[..., None], axis=-1)[..., 0]
    return out, (x.shape, idx)


def maxpool2_backward(dout, cache):
    (n, c, h, w), idx = cache
    dblocks = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(dblocks, idx[..., None], dout[..., None], axis=-1)
    dblocks = dblocks.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return dblocks.reshape(n, c, h, w)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def forward(params, x, train=False):
    w1, b1, w2, b2, w3, b3 = (params[k] for k in ("w1", "b1", "w2", "b2", "w3", "b3"))
    a1, c1 = conv3x3_forward(x, w1, b1)
    r1 = np.maximum(a1, 0)
    p1, m1 = maxpool2_forward(r1)
    a2, c2 = conv3x3_forward(p1, w2, b2)
    r2 = np.maximum(a2, 0)
    p2, m2 = maxpool2_forward(r2)
    f = p2.reshape(p2.shape[0], -1)
    logits = f @ w3.T + b3
    if not train:
        return logits
    return logits, (c1, a1, m1, c2, a2, m2, p2.shape, f)


def backward(params, cache, dlogits):
    c1, a1, m1, c2, a2, m2, p2_shape, f = cache
    g = {}
    g["w3"] = dlogits.T @ f
    g["b3"] = dlogits.sum(axis=0)
    df = dlogits @ params["w3"]
    dp2 = df.reshape(p2_shape)
    dr2 = maxpool2_backward(dp2, m2)
    da2 = dr2 * (a2 > 0)
    dp1, g["w2"], g["b2"] = conv3x3_backward(da2, c2)
    dr1 = maxpool2_backward(dp1, m1)
    da1 = dr1 * (a1 > 0)
    _, g["w1"], g["b1"] = conv3x3_backward(da1, c1)
    return g


def init_params(rng):
    def he(shape, fan_in):
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    return {
        "w1": he((C1, 1, 3, 3), 9), "b1": np.zeros(C1),
        "w2": he((C2, C1, 3, 3), 9 * C1), "b2": np.zeros(C2),
        "w3": he((10, 4 * C2), 4 * C2) * 0.5, "b3": np.zeros(10),
    }


def random_shift(xb, rng):
    """Augmentation: shift each image by a random offset in {-1,0,1}^2 (zero fill)."""
    n = xb.shape[0]
    xp = np.pad(xb, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy = rng.integers(0, 3, n)
    dx = rng.integers(0, 3, n)
    out = np.empty_like(xb)
    for k in range(n):
        out[k] = xp[k, :, dy[k]:dy[k] + 8, dx[k]:dx[k] + 8]
    return out


def train(params, x, y, epochs, rng, lr=3e-3, batch=32, wd=1e-4):
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    t = 0
    n = x.shape[0]
    for epoch in range(epochs):
        perm = rng.permutation(n)
        total_loss = 0.0
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            xb, yb = random_shift(x[idx], rng), y[idx]
            logits, cache = forward(params, xb, train=True)
            p = softmax(logits)
            total_loss += -np.log(p[np.arange(len(yb)), yb] + 1e-12).sum()
            dlogits = p
            dlogits[np.arange(len(yb)), yb] -= 1.0
            dlogits /= len(yb)
            grads = backward(params, cache, dlogits)
            t += 1
            lr_t = lr * (0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay
            for k in params:
                gk = grads[k] + (wd * params[k] if k.startswith("w") else 0.0)
                m[k] = beta1 * m[k] + (1 - beta1) * gk
                v[k] = beta2 * v[k] + (1 - beta2) * gk * gk
                mh = m[k] / (1 - beta1 ** t)
                vh = v[k] / (1 - beta2 ** t)
                params[k] -= lr_t * mh / (np.sqrt(vh) + eps)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"  epoch {epoch + 1:3d}  loss {total_loss / n:.4f}")
    return params


# ----------------------------------------------------------------------------
# ONNX export
# ----------------------------------------------------------------------------

def export_onnx(params, path):
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    inits = [numpy_helper.from_array(p32[k], k) for k in ("w1", "b1", "w2", "b2", "w3", "b3")]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["conv1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "w2", "b2"], ["conv2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="fc",
                         alpha=1.0, beta=1.0, transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        initializer=inits,
    )
    model = helper.make_model_gen_version(
        graph, opset_imports=[helper.make_opsetid("", 13)],
        producer_name="crx580-train_digits", producer_version="1",
        doc_string="8x8 digit classifier trained with numpy on sklearn load_digits; "
                   "input pixel/16 in [0,1]",
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE, help="output directory (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    digits = load_digits()
    x_all = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    y_all = digits.target.astype(np.int64)
    n_train = int(0.8 * len(x_all))
    x_train, y_train = x_all[:n_train], y_all[:n_train]
    x_test, y_test = x_all[n_train:], y_all[n_train:]
    print(f"train {len(x_train)}  test {len(x_test)}")

    rng = np.random.default_rng(SEED)
    params = init_params(rng)
    t0 = time.time()
    params = train(params, x_train, y_train, args.epochs, rng)
    print(f"trained in {time.time() - t0:.1f}s")

    # numpy float32 reference forward
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    x_test32 = x_test.astype(np.float32)
    np_logits = forward(p32, x_test32)
    np_train_acc = (forward(params, x_train).argmax(1) == y_train).mean()
    np_test_acc = (np_logits.argmax(1) == y_test).mean()
    print(f"numpy: train acc {np_train_acc:.4f}  test acc {np_test_acc:.4f}")

    model_path = os.path.join(args.out, "digits.onnx")
    export_onnx(params, model_path)
    samples = np.ascontiguousarray(x_test32[:N_SAMPLES])
    labels = np.ascontiguousarray(y_test[:N_SAMPLES]).astype(np.int64)
    np.save(os.path.join(args.out, "samples.npy"), samples)
    np.save(os.path.join(args.out, "labels.npy"), labels)

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    ort_logits, ort_probs = sess.run(["logits", "probabilities"], {"image": x_test32})
    diff = float(np.abs(ort_logits - np_logits).max())
    pdiff = float(np.abs(ort_probs - softmax(np_logits.astype(np.float64))).max())
    print(f"ORT vs numpy: max abs diff logits {diff:.2e}, probabilities {pdiff:.2e}")
    if diff >= 1e-4 or pdiff >= 1e-4:
        print("ERROR: ORT does not reproduce the numpy forward pass", file=sys.stderr)
        return 1
    ort_acc = (ort_logits.argmax(1) == y_test).mean()
    s_logits, _ = sess.run(None, {"image": samples})
    s_acc = (s_logits.argmax(1) == labels).mean()
    print(f"ORT: test-split accuracy {ort_acc:.4f} ({int(round(ort_acc * len(y_test)))}/{len(y_test)}), "
          f"32-sample accuracy {s_acc:.4f} ({int(round(s_acc * N_SAMPLES))}/{N_SAMPLES})")
    print(f"wrote {model_path} ({os.path.getsize(model_path)} bytes), samples.npy, labels.npy")
    if ort_acc < 0.95:
        print("ERROR: test accuracy below 0.95", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
