"""Text recognizers as PaddleOCR/torch exports write them: a CRNN (MobileNetV3-small backbone,
2-layer bidirectional LSTM, CTC head with greedy ArgMax) and an SVTR-tiny (patch-embedding convs,
conv and attention mixing blocks, CTC head)."""

from __future__ import annotations

import numpy as np

from nn import F, I64, Builder

CLASSES = 97  # 95 printable ASCII characters, space and the CTC blank


def _text_lines(seed: int, n: int, h: int, w: int = 320) -> np.ndarray:
    """Normalised images of a line of glyphs (a few dark bars per character cell, cells of random
    width, some blank) on light paper, as the recognizers' preprocessing feeds."""
    rng = np.random.default_rng(seed)
    img = np.full((n, 3, h, w), 0.8, np.float32)
    for k in range(n):
        x0 = int(rng.integers(2, h // 2))
        while x0 < w - h // 2:
            cell = int(rng.integers(h // 3, h // 2 + 4))
            for _ in range(rng.integers(0, 5)):
                if rng.random() < 0.5:  # vertical bar
                    x, y = x0 + rng.integers(0, cell - 2), rng.integers(h // 6, h // 2)
                    img[k, :, y:y + rng.integers(h // 4, h // 2), x:x + rng.integers(1, 4)] = -0.6
                else:
                    x, y = x0 + rng.integers(0, cell // 2), rng.integers(h // 6, h - h // 4)
                    img[k, :, y:y + rng.integers(1, 4), x:x + rng.integers(cell // 3, cell)] = -0.6
            x0 += cell + int(rng.integers(1, 4))
    return img + rng.normal(0, 0.05, img.shape).astype(np.float32)


def _hardswish_legacy(b: Builder, x: str) -> str:
    """x * HardSigmoid(x), as paddle2onnx writes hardswish below opset 14."""
    return b.op("Mul", [x, b.op("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)])


def _mv3_block(b: Builder, x: str, cin: int, exp: int, cout: int, k: int, se: bool, act: str, stride) -> str:
    """A MobileNetV3 inverted residual as PaddleOCR's rec backbone has it (stride (2, 1) halves height
    only; SE with Paddle's hardsigmoid slope 0.2)."""
    actf = (lambda v: b.op("Relu", [v])) if act == "relu" else (lambda v: _hardswish_legacy(b, v))
    y = actf(b.bn(b.conv(x, cin, exp, 1, bias=False), exp))
    y = actf(b.bn(b.conv(y, exp, exp, k, stride, group=exp, bias=False), exp))
    if se:
        s = b.op("GlobalAveragePool", [y])
        s = b.op("Relu", [b.conv(s, exp, exp // 4, 1)])
        s = b.op("HardSigmoid", [b.conv(s, exp // 4, exp, 1, gain=1.0)], alpha=0.2, beta=0.5)
        y = b.op("Mul", [y, s])
    y = b.bn(b.conv(y, exp, cout, 1, bias=False, gain=1.0), cout)
    return b.op("Add", [x, y]) if cin == cout and stride == 1 else y


def crnn_mv3():
    """PP-OCR mobile v2 recognizer layout (MobileNetV3-small x0.5, small_stride [1,2,2,2]) at
    [N,3,32,320], opset 11: features [N,288,1,80], Squeeze/Transpose to time-major [80,N,288], two
    bidirectional LSTM layers (hidden 48) joined by Transpose/Reshape, Linear to 97 classes, Softmax,
    and the greedy CTC decode's ArgMax (int64)."""
    b = Builder("crnn_mv3", opset=11, seed=31)
    x = b.input("x", F, ["N", 3, 32, 320])
    y = _hardswish_legacy(b, b.bn(b.conv(x, 3, 8, 3, stride=2, bias=False), 8))
    cfg = [  # k, expand, out, se, act, stride (at scale 0.5, channels made divisible by 8)
        (3, 8, 8, True, "relu", (1, 1)),
        (3, 40, 16, False, "relu", (2, 1)),
        (3, 48, 16, False, "relu", 1),
        (5, 48, 24, True, "hardswish", (2, 1)),
        (5, 120, 24, True, "hardswish", 1),
        (5, 120, 24, True, "hardswish", 1),
        (5, 64, 24, True, "hardswish", 1),
        (5, 72, 24, True, "hardswish", 1),
        (5, 144, 48, True, "hardswish", (2, 1)),
        (5, 288, 48, True, "hardswish", 1),
        (5, 288, 48, True, "hardswish", 1),
    ]
    cin = 8
    for k, exp, cout, se, act, stride in cfg:
        y = _mv3_block(b, y, cin, exp, cout, k, se, act, stride)
        cin = cout
    y = _hardswish_legacy(b, b.bn(b.conv(y, cin, 288, 1, bias=False), 288))
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    seq = b.op("Transpose", [b.op("Squeeze", [y], axes=[2])], perm=[2, 0, 1])
    seq = b.bilstm_stack(seq, 288, 48, layers=2)
    logits = b.linear(seq, 96, CLASSES, gain=32.0)
    probs = b.op("Transpose", [b.op("Softmax", [logits], axis=2)], perm=[1, 0, 2])
    b.output(probs, F, ["N", 80, CLASSES], name="probs")
    b.output(b.op("ArgMax", [probs], axis=2, keepdims=0), I64, ["N", 80], name="ctc_greedy")
    return b.build(), [{"x": _text_lines(1, 1, 32)}, {"x": _text_lines(2, 2, 32)}]


def _torch_bilstm(b: Builder, x: str, din: int, hidden: int, nout: int, gain: float = 2.0) -> str:
    """crnn.pytorch's BidirectionalLSTM as torch.onnx writes it: zero initial states built from the
    batch size (Shape/Gather/Concat/ConstantOfShape), LSTM, Transpose/Reshape to [T, N, 2H], then
    `view(T*b, h)` -> Gemm -> `view(T, b, -1)` with sizes computed from Shape."""
    def dim(v: str, i: int) -> str:
        size = b.op("Gather", [b.op("Shape", [v]), b.i64(i, "idx")], axis=0)
        return b.op("Unsqueeze", [size, b.i64([0], "axes")])

    state_shape = b.op("Concat", [b.i64([2]), dim(x, 1), b.i64([hidden])], axis=0)
    zeros = b.op("ConstantOfShape", [state_shape])
    y = b.lstm(x, din, hidden, "bidirectional", initial_h=zeros, initial_c=zeros)[0]
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.i64([0, 0, -1])])
    t, n = dim(y, 0), dim(y, 1)
    flat = b.op("Reshape", [y, b.op("Concat", [b.op("Mul", [t, n]), b.i64([2 * hidden])], axis=0)])
    out = b.op("Gemm", [flat, b.weight(nout, 2 * hidden, gain=gain), b.const(b.randn(nout, scale=0.02), "b")], transB=1)
    return b.op("Reshape", [out, b.op("Concat", [t, n, b.i64([-1])], axis=0)])


def crnn_vgg():
    """crnn.pytorch (Shi et al.) at [N,3,32,320] (channels halved), opset 14: seven 3x3 convs (BN on
    some) with MaxPools, the (2,1)-stride pools padded (0,1) in width, a final 2x2 valid conv to
    height 1 (T = 81), Squeeze/Permute to time-major, two BidirectionalLSTM modules (each LSTM +
    Linear through view), LogSoftmax and ArgMax."""
    b = Builder("crnn_vgg", opset=14, seed=33)
    x = b.input("image", F, ["N", 3, 32, 320])
    chans = [32, 64, 128, 128, 256, 256, 256]
    cin = 3
    for i, cout in enumerate(chans):
        k, pad = (2, 0) if i == 6 else (3, 1)
        y = b.conv(x if i == 0 else y, cin, cout, k, pad=pad, bias=i not in (2, 4, 6))
        if i in (2, 4, 6):
            y = b.bn(y, cout)
        y = b.op("Relu", [y])
        if i in (0, 1):
            y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        elif i in (3, 5):
            y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 1], pads=[0, 1, 0, 1])
        cin = cout
    seq = b.op("Transpose", [b.op("Squeeze", [y, b.i64([2], "axes")])], perm=[2, 0, 1])
    seq = _torch_bilstm(b, seq, 256, 128, 128)
    logits = _torch_bilstm(b, seq, 128, 128, CLASSES, gain=8.0)
    logp = b.op("LogSoftmax", [logits], axis=2)
    b.output(logp, F, [81, "N", CLASSES], name="log_probs")
    b.output(b.op("ArgMax", [logp], axis=2, keepdims=0), I64, [81, "N"], name="ctc_greedy")
    return b.build(), [{"image": _text_lines(4, 1, 32)}, {"image": _text_lines(5, 2, 32)}]


def _tokens_to_map(b: Builder, x: str, c: int, h: int, w: int) -> str:
    """[N, h*w, c] -> [N, c, h, w] as SVTR writes it: Transpose then Reshape with 0 = copy batch."""
    return b.op("Reshape", [b.op("Transpose", [x], perm=[0, 2, 1]), b.i64([0, c, h, w])])


def _map_to_tokens(b: Builder, x: str) -> str:
    """[N, c, h, w] -> [N, h*w, c]: flatten(2) as a Reshape [0, 0, -1], then Transpose."""
    return b.op("Transpose", [b.op("Reshape", [x, b.i64([0, 0, -1])])], perm=[0, 2, 1])


def _local_mask(h: int, w: int, hk: int = 7, wk: int = 11) -> np.ndarray:
    """SVTR's local-mixer mask [1, 1, h*w, h*w]: 0 within a hk x wk window around each token, -inf
    elsewhere (PaddleOCR builds it with paddle.full('-inf'), so the exported constant holds -inf)."""
    ys, xs = np.divmod(np.arange(h * w), w)
    near = (np.abs(ys[:, None] - ys[None]) <= hk // 2) & (np.abs(xs[:, None] - xs[None]) <= wk // 2)
    return np.where(near, 0.0, -np.inf).astype(np.float32)[None, None]


def _svtr_attention(b: Builder, x: str, d: int, heads: int, mask: str | None = None) -> str:
    """SVTR's attention mixer: one fused qkv Linear, Reshape [0,-1,3,heads,hd], Transpose (2,0,3,1,4),
    q/k/v picked by Gather, q scaled by Mul, Softmax(QK^T (+ local mask)) V, Transpose/Reshape back,
    proj."""
    hd = d // heads
    qkv = b.op("Transpose", [b.op("Reshape", [b.linear(x, d, 3 * d), b.i64([0, -1, 3, heads, hd])])],
               perm=[2, 0, 3, 1, 4])
    q, k, v = (b.op("Gather", [qkv, b.i64(i, "idx")], axis=0) for i in range(3))
    q = b.op("Mul", [q, b.f32(hd**-0.5)])
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    attn = b.op("Softmax", [b.op("Add", [scores, mask]) if mask else scores], axis=-1)
    ctx = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [attn, v])], perm=[0, 2, 1, 3]), b.i64([0, -1, d])])
    return b.linear(ctx, d, d)


def _svtr_block(b: Builder, x: str, d: int, heads: int, mixer: str, hw) -> str:
    """Post-norm block (PaddleOCR's `prenorm=True`): x = LN(x + mixer(x)); x = LN(x + MLP(x))."""
    if mixer == "conv":
        m = _map_to_tokens(b, b.conv(_tokens_to_map(b, x, d, *hw), d, d, 3, group=heads, gain=1.0))
    else:
        mask = b.const(_local_mask(*hw), "local_mask") if mixer == "local" else None
        m = _svtr_attention(b, x, d, heads, mask)
    x = b.layernorm(b.op("Add", [x, m]), d, eps=1e-6)
    return b.layernorm(b.op("Add", [x, b.mlp(x, d, 4 * d)]), d, eps=1e-6)


def svtr_tiny():
    """SVTR-T at [N,3,48,320], opset 17: two stride-2 Conv+BN+Gelu patch embeddings to 960 tokens of
    64, position embedding, stages of dims 64/128/256 with heads 2/4/8 (3 conv mixers, 3 local
    attention mixers whose window mask holds -inf, 6 global attention mixers), stride-(2,1) conv subsampling with LayerNorm between stages, AveragePool to [1,40],
    1x1 conv + HardSwish, Squeeze/Transpose, CTC Linear + Softmax, ArgMax."""
    b = Builder("svtr_tiny", opset=17, seed=32)
    x = b.input("x", F, ["N", 3, 48, 320])
    y = b.act(b.bn(b.conv(x, 3, 32, 3, stride=2, bias=False), 32), "gelu_erf")
    y = b.act(b.bn(b.conv(y, 32, 64, 3, stride=2, bias=False), 64), "gelu_erf")
    tokens = b.op("Add", [_map_to_tokens(b, y), b.const(b.randn(1, 960, 64, scale=0.02), "pos_embed")])
    dims, heads, depths = [64, 128, 256], [2, 4, 8], [3, 6, 3]
    mixers = ["conv"] * 3 + ["local"] * 3 + ["global"] * 6
    h, w, block = 12, 80, 0
    for stage, (d, nh, depth) in enumerate(zip(dims, heads, depths)):
        if stage > 0:
            m = b.conv(_tokens_to_map(b, tokens, dims[stage - 1], h, w), dims[stage - 1], d, 3, stride=(2, 1), gain=1.0)
            h //= 2
            tokens = b.layernorm(_map_to_tokens(b, m), d, eps=1e-6)
        for _ in range(depth):
            tokens = _svtr_block(b, tokens, d, nh, mixers[block], (h, w))
            block += 1
    y = b.op("AveragePool", [_tokens_to_map(b, tokens, 256, h, w)], kernel_shape=[3, 2], strides=[3, 2])
    y = b.op("HardSwish", [b.conv(y, 256, 192, 1, bias=False)])
    seq = b.op("Transpose", [b.op("Squeeze", [y, b.i64([2], "axes")])], perm=[0, 2, 1])
    probs = b.op("Softmax", [b.linear(seq, 192, CLASSES, gain=4.0)], axis=-1)
    b.output(probs, F, ["N", 40, CLASSES], name="probs")
    b.output(b.op("ArgMax", [probs], axis=-1, keepdims=0), I64, ["N", 40], name="ctc_greedy")
    return b.build(), [{"x": _text_lines(3, 1, 48)}, {"x": _text_lines(6, 2, 48)}]


MODELS = [crnn_mv3, crnn_vgg, svtr_tiny]
