"""CNN classifiers as torchvision and TF exporters write them, at 224x224."""

from __future__ import annotations

import numpy as np

from nn import F, Builder, make_divisible


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


def _classifier_head(b: Builder, y: str, c: int, hidden: int | None = None, act: str | None = None) -> str:
    """GlobalAveragePool, Flatten, then Gemm (transB) layers as torch exports nn.Linear on 2-D input."""
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    if hidden is not None:
        w = b.weight(hidden, c, gain=2.0**0.5)
        y = b.op("Gemm", [y, w, b.const(b.randn(hidden, scale=0.01), "fc_b")], alpha=1.0, beta=1.0, transB=1)
        y = b.act(y, act)
        c = hidden
    w = b.weight(1000, c, gain=1.0)
    return b.op("Gemm", [y, w, b.const(b.randn(1000, scale=0.01), "fc_b")], alpha=1.0, beta=1.0, transB=1)


def resnet50():
    """torchvision resnet50 as torch.onnx exports it in eval mode at opset 9: BatchNormalization
    folded into each Conv's weight and bias, Bottleneck blocks (1x1, 3x3 with the stride, 1x1 x4) with
    a 1x1 strided projection shortcut, MaxPool, GlobalAveragePool, Flatten, Gemm. Each block's last
    conv is scaled down (as zero-init-residual training leaves it) so 16 residual Adds keep O(1)."""
    b = Builder("resnet50", opset=9, seed=50)
    x = b.input("input", F, ["N", 3, 224, 224])
    y = b.conv_act(x, 3, 64, 7, stride=2)
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
        cout = width * 4
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            h = b.conv_act(y, cin, width, 1)
            h = b.conv_act(h, width, width, 3, stride)
            h = b.conv_act(h, width, cout, 1, act=None, gain=0.3)
            short = y if block > 0 else b.conv_act(y, cin, cout, 1, stride, act=None, gain=1.0)
            y = b.op("Relu", [b.op("Add", [h, short])])
            cin = cout
    b.output(_classifier_head(b, y, 2048), F, ["N", 1000], name="logits")
    return b.build(), [{"input": _image(3)}]


def mobilenet_v2():
    """torchvision mobilenet_v2 exported at opset 11: Conv (BN folded) + ReLU6 written as Clip with
    min/max inputs, inverted residual blocks (1x1 expand, 3x3 depthwise with group = channels, linear
    1x1 projection, Add when the shape is kept), 1x1 conv to 1280, GlobalAveragePool, Gemm."""
    b = Builder("mobilenet_v2", opset=11, seed=2)
    x = b.input("input", F, ["N", 3, 224, 224])
    y = b.conv_act(x, 3, 32, 3, stride=2, act="relu6")
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            h = y if t == 1 else b.conv_act(y, cin, hidden, 1, act="relu6")
            h = b.conv_act(h, hidden, hidden, 3, stride, act="relu6", group=hidden)
            h = b.conv_act(h, hidden, c, 1, act=None, gain=1.0)
            y = b.op("Add", [y, h]) if stride == 1 and cin == c else h
            cin = c
    y = b.conv_act(y, cin, 1280, 1, act="relu6")
    b.output(_classifier_head(b, y, 1280), F, ["N", 1000], name="logits")
    return b.build(), [{"input": _image(4)}, {"input": _image(5, n=2)}]


# torchvision's MobileNetV3 configurations: kernel, expanded, out, squeeze-excite, activation, stride.
_V3_LARGE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
             (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
             (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
             (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
             (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]
_V3_SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
             (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
             (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
             (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


def _mobilenet_v3(name: str, opset: int, config, last: int, hidden: int, hswish: str, se_pool: str, seed: int):
    b = Builder(name, opset=opset, seed=seed)
    x = b.input("input", F, ["N", 3, 224, 224])
    y = b.conv_act(x, 3, 16, 3, stride=2, act=hswish)
    cin = 16
    for k, exp, cout, se, act, stride in config:
        act = "relu" if act == "RE" else hswish
        # HardSwish passes less than ReLU near 0 (E[hardswish(x)^2] = 1/3 for x ~ N(0, 1)), as much far out.
        gain = 2.0**0.5 if act == "relu" else 1.6
        h = y if exp == cin else b.conv_act(y, cin, exp, 1, act=act, gain=gain)
        h = b.conv_act(h, exp, exp, k, stride, act=act, group=exp, gain=gain)
        if se:
            # SqueezeExcitation: pool, 1x1 conv, ReLU, 1x1 conv, HardSigmoid, scale the channels.
            sq = make_divisible(exp // 4)
            s = b.op("GlobalAveragePool", [h]) if se_pool == "gap" else b.reduce_mean(h, [2, 3])
            s = b.conv_act(s, exp, sq, 1, act="relu")
            s = b.conv_act(s, sq, exp, 1, act="hardsigmoid", gain=1.0)
            h = b.op("Mul", [s, h])
        # The SE gate about halves the signal (HardSigmoid near 0 is 0.5): the projection makes up for it.
        h = b.conv_act(h, exp, cout, 1, act=None, gain=1.4 if se else 1.0)
        y = b.op("Add", [h, y]) if stride == 1 and cin == cout else h
        cin = cout
    y = b.conv_act(y, cin, last, 1, act=hswish)
    b.output(_classifier_head(b, y, last, hidden, hswish), F, ["N", 1000], name="logits")
    return b.build()


def mobilenet_v3_large():
    """torchvision mobilenet_v3_large at opset 14: the HardSwish op, SE blocks with GlobalAveragePool,
    1x1 convs, Relu, HardSigmoid(alpha=1/6) and Mul; 5x5 depthwise convs; a 960->1280->1000 head."""
    return _mobilenet_v3("mobilenet_v3_large", 14, _V3_LARGE, 960, 1280, "hardswish", "gap", 31), \
        [{"input": _image(6)}]


def mobilenet_v3_small():
    """torchvision mobilenet_v3_small at opset 13, where torch writes hardswish as x * HardSigmoid(x)
    and (as timm-style models do) the SE pooling as ReduceMean over axes [2, 3] with keepdims."""
    return _mobilenet_v3("mobilenet_v3_small", 13, _V3_SMALL, 576, 1024, "hardswish_decomposed", "mean", 32), \
        [{"input": _image(7)}, {"input": _image(8, n=2)}]


def tf_mobilenet_nhwc():
    """Keras MobileNet (v1) as tf2onnx writes it at opset 13: an NHWC input named `input_1:0` with a
    tf2onnx symbolic batch, Transpose to NCHW, every weight a Constant node, tensor names with '/' and
    ':', BatchNormalization folded into the convs, SAME padding made explicit (asymmetric [0,0,1,1] at
    stride 2), ZeroPadding2D as a Pad node before the strided depthwise convs (group = channels),
    ReLU6 as Clip with min/max inputs, Transpose back to NHWC, ReduceMean over H and W, the 1x1 conv
    classifier, Reshape to [-1, 1000] and Softmax."""
    b = Builder("tf_mobilenet_nhwc", opset=13, seed=13, constant_weights=True)
    x = b.input("input_1:0", F, ["unk__618", 224, 224, 3])
    y = b.op("Transpose", [x], perm=[0, 3, 1, 2], out="model/conv1/Conv2D__6:0")

    def conv_relu6(y, layer, cin, cout, k, stride, pads, group=1):
        w = b.weight(cout, cin // group, k, k)
        y = b.op("Conv", [y, w, b.const(b.randn(cout, scale=0.1), f"model/{layer}/BiasAdd/ReadVariableOp:0")],
                 kernel_shape=[k, k], strides=[stride, stride], pads=pads, group=group, dilations=[1, 1],
                 out=f"model/{layer}/BiasAdd:0")
        bounds = [b.f32(0.0, "relu6/min:0"), b.f32(6.0, "relu6/max:0")]
        return b.op("Clip", [y, *bounds], out=f"model/{layer}_relu/Relu6:0")

    y = conv_relu6(y, "conv1", 3, 32, 3, 2, [0, 0, 1, 1])
    cin = 32
    for i, (cout, stride) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                                        (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)], start=1):
        if stride == 2:
            y = b.op("Pad", [y, b.i64([0, 0, 0, 0, 0, 0, 1, 1], "pads:0")], mode="constant",
                     out=f"model/conv_pad_{i}/Pad:0")
        pads = [1, 1, 1, 1] if stride == 1 else [0, 0, 0, 0]
        y = conv_relu6(y, f"conv_dw_{i}", cin, cin, 3, stride, pads, group=cin)
        y = conv_relu6(y, f"conv_pw_{i}", cin, cout, 1, 1, [0, 0, 0, 0])
        cin = cout
    y = b.op("Transpose", [y], perm=[0, 2, 3, 1], out="model/conv_pw_13_relu/Relu6__44:0")
    y = b.op("ReduceMean", [y], axes=[1, 2], keepdims=1, out="model/global_average_pooling2d/Mean:0")
    y = b.op("Transpose", [y], perm=[0, 3, 1, 2], out="model/conv_preds/Conv2D__50:0")
    w = b.weight(1000, cin, 1, 1, gain=5.0)  # logits of std ~3, so that Softmax is not flat
    y = b.op("Conv", [y, w, b.const(b.randn(1000, scale=0.01), "model/conv_preds/BiasAdd/ReadVariableOp:0")],
             kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], out="model/conv_preds/BiasAdd:0")
    y = b.op("Transpose", [y], perm=[0, 2, 3, 1], out="model/conv_preds/BiasAdd__52:0")
    y = b.op("Reshape", [y, b.i64([-1, 1000], "const_fold_opt__60")], out="model/reshape_2/Reshape:0")
    b.output(b.op("Softmax", [y], axis=-1, out="predictions"), F, ["unk__619", 1000])
    nhwc = [np.ascontiguousarray(_image(s).transpose(0, 2, 3, 1)) for s in (9, 10)]
    return b.build(), [{"input_1:0": v} for v in nhwc]


MODELS = [resnet18, resnet50, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, tf_mobilenet_nhwc]
