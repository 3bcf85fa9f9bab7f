"""CNN classifiers as torchvision and TF exporters write them, at 224x224."""

from __future__ import annotations

import numpy as np

from nn import F, Builder


def _image(seed: int, n: int = 1, size: int = 224) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def resnet18():
    """torchvision resnet18 as exported at opset 13: Conv+BN+Relu, MaxPool, BasicBlocks with 1x1
    stride-2 downsampling, GlobalAveragePool, Flatten, Gemm; batch symbolic."""
    b = Builder("resnet18", opset=13, seed=18)
    x = b.input("input", F, ["N", 3, 224, 224])
    y = b.conv_bn_act(x, 3, 64, 7, stride=2)
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate([64, 128, 256, 512]):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            h = b.conv_bn_act(y, cin, cout, 3, stride)
            h = b.bn(b.conv(h, cout, cout, 3, 1, bias=False), cout)
            short = y if stride == 1 and cin == cout else b.bn(b.conv(y, cin, cout, 1, stride, bias=False), cout)
            y = b.op("Relu", [b.op("Add", [h, short])])
            cin = cout
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    w = b.weight(1000, 512, gain=1.0)
    y = b.op("Gemm", [y, w, b.const(b.randn(1000, scale=0.01), "fc_b")], alpha=1.0, beta=1.0, transB=1)
    b.output(y, F, ["N", 1000], name="logits")
    return b.build(), [{"input": _image(1)}, {"input": _image(2, n=2)}]


MODELS = [resnet18]
