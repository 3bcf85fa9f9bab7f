"""Detectors as their exporters write them: YOLOv5s and YOLOv8n (ultralytics, torch.onnx) at 640x640 and
a DBNet text detector (PaddleOCR, paddle2onnx) with a MobileNetV3 backbone. Batch 1, one data set each:
they are the zoo's most expensive models."""

from __future__ import annotations

import numpy as np
import onnx

from nn import F, I64, Builder, fold_batch_stats, make_divisible, set_initializers

# He gain for SiLU (E[silu(x)^2] is about 0.36 for x ~ N(0, 1)); fold_batch_stats then sets the scale.
SILU_GAIN = 1.65


def _image(seed: int, h: int = 640, w: int = 640) -> np.ndarray:
    # Letterboxed RGB scaled to [0, 1], as the YOLO apps feed it.
    return np.random.default_rng(seed).random((1, 3, h, w)).astype(np.float32)


# -- YOLOv5s (v6.x architecture, width 0.5, depth 0.33) --------------------------------------------


def _silu_conv(b: Builder, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, pad=None) -> str:
    """ultralytics Conv: Conv2d + BatchNorm2d (folded by the export) + SiLU written as x * Sigmoid(x)."""
    return b.conv_act(x, cin, cout, k, stride, act="silu", pad=pad, gain=SILU_GAIN)


def _bottleneck(b: Builder, x: str, c: int, shortcut: bool) -> str:
    h = _silu_conv(b, _silu_conv(b, x, c, c, 1), c, c, 3)
    return b.op("Add", [x, h]) if shortcut else h


def _c3(b: Builder, x: str, cin: int, cout: int, n: int, shortcut: bool = True) -> str:
    c = cout // 2
    m = _silu_conv(b, x, cin, c, 1)
    for _ in range(n):
        m = _bottleneck(b, m, c, shortcut)
    return _silu_conv(b, b.op("Concat", [m, _silu_conv(b, x, cin, c, 1)], axis=1), 2 * c, cout, 1)


def _sppf(b: Builder, x: str, cin: int, cout: int) -> str:
    c = cin // 2
    ys = [_silu_conv(b, x, cin, c, 1)]
    for _ in range(3):
        ys.append(b.op("MaxPool", [ys[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    return _silu_conv(b, b.op("Concat", ys, axis=1), 4 * c, cout, 1)


_V5_ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]


def _calibrated(build, seed: int) -> tuple:
    """The network built at 640x640 with weights normalised (fold_batch_stats) on a 320x320 build."""
    params = fold_batch_stats(build(320), {"images": _image(100 + seed, 320, 320)}, seed=seed)
    feeds = {"images": _image(seed)}
    return set_initializers(build(640), params), [feeds]


def yolov5s():
    return _calibrated(_yolov5s, 1)


def _yolov5s(size: int):
    """ultralytics/yolov5 v6.x yolov5s exported at opset 12: a 6x6 stride-2 stem, C3 blocks (two 1x1
    branches, Bottlenecks, Concat), SPPF (three chained MaxPool 5x5), PANet neck with nearest
    Resize(scales [1,1,2,2], empty roi) and Concat, and the Detect head: Conv 1x1 to 3x85, Reshape to
    [1,3,85,ny,nx], Transpose, Sigmoid, Split [2,2,81] on the last axis, xy*2 + grid, (wh*2)^2 * anchors
    (grids as constants), Concat, Reshape to [1,-1,85], Concat over the three levels. The output is
    declared [1, 19200, 85] (the P3 level alone); crx580 must trust the computed [1, 25200, 85]."""
    b = Builder("yolov5s", opset=12, seed=5)
    x = b.input("images", F, [1, 3, size, size])
    y = _silu_conv(b, x, 3, 32, 6, 2, pad=2)
    y = _silu_conv(b, y, 32, 64, 3, 2)
    y = _c3(b, y, 64, 64, 1)
    y = _silu_conv(b, y, 64, 128, 3, 2)
    p3 = _c3(b, y, 128, 128, 2)
    y = _silu_conv(b, p3, 128, 256, 3, 2)
    p4 = _c3(b, y, 256, 256, 3)
    y = _silu_conv(b, p4, 256, 512, 3, 2)
    y = _sppf(b, _c3(b, y, 512, 512, 1), 512, 512)
    h10 = _silu_conv(b, y, 512, 256, 1)
    y = _c3(b, b.op("Concat", [b.resize(h10, scales=[1, 1, 2, 2]), p4], axis=1), 512, 256, 1, False)
    h14 = _silu_conv(b, y, 256, 128, 1)
    out3 = _c3(b, b.op("Concat", [b.resize(h14, scales=[1, 1, 2, 2]), p3], axis=1), 256, 128, 1, False)
    y = b.op("Concat", [_silu_conv(b, out3, 128, 128, 3, 2), h14], axis=1)
    out4 = _c3(b, y, 256, 256, 1, False)
    y = b.op("Concat", [_silu_conv(b, out4, 256, 256, 3, 2), h10], axis=1)
    out5 = _c3(b, y, 512, 512, 1, False)

    levels = []
    for (feat, c, stride), anchors in zip([(out3, 128, 8), (out4, 256, 16), (out5, 512, 32)], _V5_ANCHORS):
        ny = nx = size // stride
        p = b.conv(feat, c, 3 * 85, 1, gain=1.0)
        p = b.op("Reshape", [p, b.i64([1, 3, 85, ny, nx])])
        p = b.op("Sigmoid", [b.op("Transpose", [p], perm=[0, 1, 3, 4, 2])])
        xy, wh, conf = b.split(p, [2, 2, 81], axis=4)
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.broadcast_to(np.stack((xv, yv), 2)[None, None] - 0.5, (1, 3, ny, nx, 2)).astype(np.float32)
        anchor_grid = np.broadcast_to(np.array(anchors, np.float32).reshape(1, 3, 1, 1, 2),
                                      (1, 3, ny, nx, 2)).astype(np.float32)
        xy = b.op("Mul", [b.op("Add", [b.op("Mul", [xy, b.f32(2.0)]), b.f32(grid, "grid")]), b.f32(float(stride))])
        wh = b.op("Pow", [b.op("Mul", [wh, b.f32(2.0)]), b.f32(2.0)])
        wh = b.op("Mul", [wh, b.f32(anchor_grid, "anchor_grid")])
        y = b.op("Concat", [xy, wh, conf], axis=4)
        levels.append(b.op("Reshape", [y, b.i64([1, 3 * ny * nx, 85])]))
    wrong = 3 * (size // 8) ** 2  # 19200 at 640: the P3 level alone
    b.output(b.op("Concat", levels, axis=1, out="output0"), F, [1, wrong, 85])
    return b.build(infer_shapes=False)


# -- YOLOv8n (width 0.25, depth 0.33) ---------------------------------------------------------------


def _c2f(b: Builder, x: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
    """C2f: 1x1 conv, Split in two halves, n Bottlenecks (two 3x3 convs) chained on the second half,
    Concat of every piece, 1x1 conv."""
    c = cout // 2
    ys = list(b.split(_silu_conv(b, x, cin, 2 * c, 1), [c, c], axis=1))
    for _ in range(n):
        h = _silu_conv(b, _silu_conv(b, ys[-1], c, c, 3), c, c, 3)
        ys.append(b.op("Add", [ys[-1], h]) if shortcut else h)
    return _silu_conv(b, b.op("Concat", ys, axis=1), (2 + n) * c, cout, 1)


def yolov8n():
    model, _ = _calibrated(_yolov8n, 2)
    # The first image whose class ArgMax no float rounding can flip.
    for seed in range(2, 50):
        feeds = {"images": _image(seed)}
        if _argmax_margin(model, feeds) >= 3e-5:
            return model, [feeds]
    raise AssertionError("yolov8n: no image with a safe ArgMax margin")


def _yolov8n(size: int):
    """ultralytics yolov8n exported at opset 17: C2f blocks with Split, SPPF, nearest Resize (scales,
    roi left out) and Concat in the neck, the decoupled Detect head (two 3x3 convs then a 1x1 for
    4x16 box bins and for 80 classes), Reshape of each level to [1,144,-1] and Concat, Split into box
    and class parts, DFL (Reshape [1,4,16,8400], Transpose, Softmax over the 16 bins, a fixed 1x1 Conv
    with weights 0..15), anchor decode (Slice lt/rb, Sub/Add with the anchor points, Div by 2, Sub,
    Concat, Mul by the strides), Sigmoid class scores, output [1,84,8400]. NMS-less apps take the
    class id per anchor in the graph: ArgMax over the 80 scores gives an int64 output [1,8400]."""
    b = Builder("yolov8n", opset=17, seed=8)
    x = b.input("images", F, [1, 3, size, size])
    y = _silu_conv(b, x, 3, 16, 3, 2)
    y = _silu_conv(b, y, 16, 32, 3, 2)
    y = _c2f(b, y, 32, 32, 1, True)
    y = _silu_conv(b, y, 32, 64, 3, 2)
    p3 = _c2f(b, y, 64, 64, 2, True)
    y = _silu_conv(b, p3, 64, 128, 3, 2)
    p4 = _c2f(b, y, 128, 128, 2, True)
    y = _silu_conv(b, p4, 128, 256, 3, 2)
    p5 = _sppf(b, _c2f(b, y, 256, 256, 1, True), 256, 256)
    h12 = _c2f(b, b.op("Concat", [b.resize(p5, scales=[1, 1, 2, 2]), p4], axis=1), 384, 128, 1, False)
    out3 = _c2f(b, b.op("Concat", [b.resize(h12, scales=[1, 1, 2, 2]), p3], axis=1), 192, 64, 1, False)
    y = b.op("Concat", [_silu_conv(b, out3, 64, 64, 3, 2), h12], axis=1)
    out4 = _c2f(b, y, 192, 128, 1, False)
    y = b.op("Concat", [_silu_conv(b, out4, 128, 128, 3, 2), p5], axis=1)
    out5 = _c2f(b, y, 384, 256, 1, False)

    nc, reg_max, c2, c3 = 80, 16, 64, 80
    levels, anchor_points, strides = [], [], []
    for feat, c, stride in [(out3, 64, 8), (out4, 128, 16), (out5, 256, 32)]:
        box = _silu_conv(b, _silu_conv(b, feat, c, c2, 3), c2, c2, 3)
        box = b.conv(box, c2, 4 * reg_max, 1, gain=1.0)
        cls = _silu_conv(b, _silu_conv(b, feat, c, c3, 3), c3, c3, 3)
        cls = b.conv(cls, c3, nc, 1, gain=1.0)
        y = b.op("Concat", [box, cls], axis=1)
        levels.append(b.op("Reshape", [y, b.i64([1, 4 * reg_max + nc, -1])]))
        n = size // stride
        sy, sx = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
        anchor_points.append(np.stack((sx.ravel(), sy.ravel()), 0))
        strides.append(np.full((1, n * n), stride))
    y = b.op("Concat", levels, axis=2)
    box, cls = b.split(y, [4 * reg_max, nc], axis=1)

    # DFL: the expected bin under a softmax over 16 bins, as a 1x1 Conv with weights 0..15.
    a = 21 * (size // 32) ** 2  # 8400 anchors at 640
    box = b.op("Transpose", [b.op("Reshape", [box, b.i64([1, 4, reg_max, a])])], perm=[0, 2, 1, 3])
    box = b.op("Softmax", [box], axis=1)
    bins = b.f32(np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1), "dfl_w")
    dist = b.op("Reshape", [b.op("Conv", [box, bins], kernel_shape=[1, 1]), b.i64([1, 4, a])])

    # dist2bbox(xywh=True) then * strides.
    anchors = b.f32(np.concatenate(anchor_points, 1)[None].astype(np.float32), "anchors")
    lt = b.op("Slice", [dist, b.i64([0]), b.i64([2]), b.i64([1])])
    rb = b.op("Slice", [dist, b.i64([2]), b.i64([4]), b.i64([1])])
    x1y1 = b.op("Sub", [anchors, lt])
    x2y2 = b.op("Add", [anchors, rb])
    c_xy = b.op("Div", [b.op("Add", [x1y1, x2y2]), b.f32(2.0)])
    wh = b.op("Sub", [x2y2, x1y1])
    dbox = b.op("Mul", [b.op("Concat", [c_xy, wh], axis=1), b.f32(np.concatenate(strides, 1).astype(np.float32),
                                                                    "strides")])
    scores = b.op("Sigmoid", [cls])
    b.output(b.op("Concat", [dbox, scores], axis=1, out="output0"), F, [1, 84, a])
    # On the logits: the sigmoid rounds scores near 1 to equal floats, which would make ties.
    b.output(b.op("ArgMax", [cls], axis=1, keepdims=0, out="class_ids"), I64, [1, a])
    return b.build()


def _argmax_margin(model, feeds) -> float:
    """The smallest gap, over anchors, between the best two class logits: ArgMax must come out the
    same in any runtime, so the gap must be well above what float rounding could move a logit."""
    from gen_zoo import run_ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    argmax = next(n for n in probe.graph.node if n.op_type == "ArgMax")
    probe.graph.output.append(onnx.ValueInfoProto(name=argmax.input[0]))
    logits = run_ort(probe, feeds)[-1][0]
    top2 = np.sort(logits, axis=0)[-2:]
    return float((top2[1] - top2[0]).min())


# PaddleOCR's MobileNetV3 (large, scale 0.5) for detection: kernel, expanded, out, SE, activation, stride.
_MV3_DET = [(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
            (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
            (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
            (3, 184, 80, False, "hswish", 1), (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
            (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1), (5, 960, 160, True, "hswish", 1)]


def _paddle_act(b: Builder, x: str, kind: str | None) -> str:
    """paddle2onnx (opset 11) writes hardswish as x * Clip(x + 3, 0, 6) / 6."""
    if kind != "hswish":
        return b.act(x, kind)
    clipped = b.op("Clip", [b.op("Add", [x, b.f32(3.0)]), b.f32(0.0), b.f32(6.0)])
    return b.op("Div", [b.op("Mul", [x, clipped]), b.f32(6.0)])


def _paddle_conv_bn(b: Builder, x: str, cin: int, cout: int, k: int, stride: int = 1, act=None, group: int = 1):
    """Paddle does not fold BatchNormalization into the conv before export."""
    gain = 2.0**0.5 if act == "relu" else 1.6 if act == "hswish" else 1.0
    return _paddle_act(b, b.bn(b.conv(x, cin, cout, k, stride, group=group, bias=False, gain=gain), cout), act)


def dbnet_mv3():
    """PaddleOCR DBNet text detector (PP-OCRv2 mobile shape: MobileNetV3 large x0.5 backbone, DBFPN
    with 96 channels, DBHead) as paddle2onnx writes it at opset 11, on H x W symbolic: Conv +
    BatchNormalization pairs (not folded), hardswish as Add/Clip/Mul/Div, SE blocks with
    GlobalAveragePool, 1x1 convs with bias, HardSigmoid(alpha=0.2), Mul; the FPN's top-down path
    with nearest Resize to sizes computed in the graph (Shape, Slice, Concat) and Add; 3x3 convs,
    Resize by scales 8/4/2, Concat; the head: 3x3 conv, BN, Relu, ConvTranspose 2x2 stride 2, BN,
    Relu, ConvTranspose 2x2 stride 2 to one channel, Sigmoid: a probability map at input size."""
    b = Builder("dbnet_mv3", opset=11, seed=3)
    x = b.input("x", F, ["N", 3, "H", "W"])
    y = _paddle_conv_bn(b, x, 3, make_divisible(8), 3, 2, act="hswish")
    cin, feats = make_divisible(8), []
    for i, (k, exp, cout, se, act, stride) in enumerate(_MV3_DET):
        exp, cout = make_divisible(exp * 0.5), make_divisible(cout * 0.5)
        if stride == 2 and i > 1:
            feats.append((y, cin))
        h = _paddle_conv_bn(b, y, cin, exp, 1, act=act)
        h = _paddle_conv_bn(b, h, exp, exp, k, stride, act=act, group=exp)
        if se:
            s = b.conv_act(b.op("GlobalAveragePool", [h]), exp, exp // 4, 1, act="relu")
            s = b.conv(s, exp // 4, exp, 1, gain=1.0)
            h = b.op("Mul", [h, b.op("HardSigmoid", [s], alpha=0.2, beta=0.5)])
        h = _paddle_conv_bn(b, h, exp, cout, 1)
        y = b.op("Add", [y, h]) if stride == 1 and cin == cout else h
        cin = cout
    feats.append((_paddle_conv_bn(b, y, cin, make_divisible(960 * 0.5), 1, act="hswish"), make_divisible(960 * 0.5)))

    # DBFPN: lateral 1x1 convs, top-down nearest upsampling to each lateral's own size, Add.
    ch = 96
    in2, in3, in4, in5 = [b.conv(f, c, ch, 1, bias=False, gain=1.0) for f, c in feats]

    def up_to(v: str, like: str) -> str:
        shape_v, shape_like = b.op("Shape", [v]), b.op("Shape", [like])
        nc = b.op("Slice", [shape_v, b.i64([0]), b.i64([2])])
        hw = b.op("Slice", [shape_like, b.i64([2]), b.i64([4])])
        return b.resize(v, sizes=b.op("Concat", [nc, hw], axis=0))

    out4 = b.op("Add", [in4, up_to(in5, in4)])
    out3 = b.op("Add", [in3, up_to(out4, in3)])
    out2 = b.op("Add", [in2, up_to(out3, in2)])
    ps = [b.conv(v, ch, ch // 4, 3, bias=False, gain=1.0) for v in (in5, out4, out3, out2)]
    ps = [b.resize(p, scales=[1, 1, s, s]) for p, s in zip(ps[:3], (8, 4, 2))] + ps[3:]
    fuse = b.op("Concat", ps, axis=1)

    # DBHead's probability branch.
    h = b.op("Relu", [b.bn(b.conv(fuse, ch, ch // 4, 3, bias=False), ch // 4)])
    h = b.op("ConvTranspose", [h, b.weight(ch // 4, ch // 4, 2, 2, fan_in=ch // 4),
                               b.const(b.randn(ch // 4, scale=0.1), "b")], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Relu", [b.bn(h, ch // 4)])
    h = b.op("ConvTranspose", [h, b.weight(ch // 4, 1, 2, 2, fan_in=ch // 4, gain=1.0),
                               b.const(b.randn(1, scale=0.1), "b")], kernel_shape=[2, 2], strides=[2, 2])
    b.output(b.op("Sigmoid", [h], out="sigmoid_0.tmp_0"), F, ["N", 1, "H", "W"])
    model = b.build()
    rng = np.random.default_rng(33)
    # Normalised RGB as PaddleOCR feeds it ((x / 255 - mean) / std): a square and a wide page.
    page = lambda h, w: {"x": rng.standard_normal((1, 3, h, w)).astype(np.float32)}  # noqa: E731
    set_initializers(model, fold_batch_stats(model, page(256, 256), seed=3))
    return model, [page(640, 640), page(416, 736)]


MODELS = [yolov5s, yolov8n, dbnet_mv3]
