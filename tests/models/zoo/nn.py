"""A small graph builder for the zoo: writes ONNX graphs the way exporters do, with random weights
scaled so activations stay O(1) through deep networks (so that comparing against onnxruntime tests
arithmetic, not overflow or vanishing signals).

    b = Builder("resnet18", opset=13, seed=1)
    x = b.input("input", F, ["N", 3, 224, 224])
    y = b.conv(x, 3, 64, 7, stride=2, pad=3)
    ...
    b.output(y)
    model = b.build()
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT
F16 = TensorProto.FLOAT16
I64 = TensorProto.INT64
I32 = TensorProto.INT32
BOOL = TensorProto.BOOL


def make_divisible(v: float, divisor: int = 8) -> int:
    """Channel counts as MobileNet code rounds them: to a multiple of `divisor`, not down by > 10%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Builder:
    def __init__(self, name: str, opset: int = 13, seed: int = 0, constant_weights: bool = False,
                 extra_opsets: dict[str, int] | None = None):
        self.name = name
        self.opset = opset
        self.extra_opsets = dict(extra_opsets or {})
        self.rng = np.random.default_rng(seed)
        # Weights as Constant nodes instead of initializers, as some exporters write them.
        self.constant_weights = constant_weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count: dict[str, int] = {}

    # -- names -------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        k = self._count.get(prefix, 0)
        self._count[prefix] = k + 1
        return f"{prefix}_{k}"

    # -- graph interface ---------------------------------------------------------------------

    def input(self, name: str, elem: int, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, value: str, elem: int = F, shape=None, name: str | None = None) -> str:
        """Declares `value` a graph output (renamed through Identity when `name` is given)."""
        if name is not None and name != value:
            value = self.op("Identity", [value], out=name)
        self.outputs.append(helper.make_tensor_value_info(value, elem, shape))
        return value

    def const(self, arr, prefix: str = "const") -> str:
        """A constant tensor: an initializer, or a Constant node with `constant_weights`."""
        arr = np.asarray(arr)
        name = self.fresh(prefix)
        if self.constant_weights:
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def i64(self, values, prefix: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), prefix)

    def f32(self, values, prefix: str = "c") -> str:
        return self.const(np.asarray(values, dtype=np.float32), prefix)

    def op(self, op_type: str, inputs, n_out: int = 1, out=None, domain: str = "", **attrs):
        """Adds a node; returns its output name (or the list of names when n_out > 1)."""
        if out is None:
            outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh("n_" + op_type),
                                           domain=domain or None, **attrs))
        return outs[0] if n_out == 1 and not isinstance(out, list) else outs

    def build(self, check: bool = True, ir_version: int | None = None, infer_shapes: bool = True) -> onnx.ModelProto:
        """`infer_shapes=False` skips the checker's shape inference, for outputs declared wrong on purpose."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [helper.make_opsetid(d, v) for d, v in self.extra_opsets.items()]
        model = helper.make_model_gen_version(graph, opset_imports=opsets, producer_name="crx580-zoo",
                                              producer_version="1")
        if ir_version is not None:
            model.ir_version = ir_version
        if check:
            onnx.checker.check_model(model, full_check=infer_shapes and not self.extra_opsets)
        return model

    # -- random weights ----------------------------------------------------------------------

    def randn(self, *shape, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def weight(self, *shape, fan_in: int | None = None, gain: float = 2.0**0.5) -> str:
        """He-style initialisation: std = gain / sqrt(fan_in)."""
        fan_in = fan_in or int(np.prod(shape[1:]))
        return self.const(self.randn(*shape, scale=gain / np.sqrt(fan_in)), "w")

    # -- layers as exporters write them ------------------------------------------------------

    def conv(self, x: str, cin: int, cout: int, k, stride=1, pad=None, group: int = 1, dilation=1,
             bias: bool = True, gain: float = 2.0**0.5) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if pad is None:
            pad = [dh * (kh - 1) // 2, dw * (kw - 1) // 2] * 2
        elif isinstance(pad, int):
            pad = [pad] * 4
        w = self.weight(cout, cin // group, kh, kw, gain=gain)
        ins = [x, w] + ([self.const(self.randn(cout, scale=0.1), "b")] if bias else [])
        return self.op("Conv", ins, kernel_shape=[kh, kw], strides=[sh, sw], pads=list(pad), group=group,
                       dilations=[dh, dw])

    def bn(self, x: str, c: int) -> str:
        scale = self.const((1.0 + 0.1 * self.rng.standard_normal(c)).astype(np.float32), "bn_scale")
        bias = self.const(self.randn(c, scale=0.1), "bn_bias")
        mean = self.const(self.randn(c, scale=0.1), "bn_mean")
        var = self.const((0.5 + self.rng.random(c)).astype(np.float32), "bn_var")
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def act(self, x: str, kind: str | None) -> str:
        """relu, relu6, silu (Sigmoid*Mul as torch exports it), hardswish, hardsigmoid, leaky,
        gelu_erf (decomposed), or None."""
        if kind is None:
            return x
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "relu6":
            return self.op("Clip", [x, self.f32(0.0), self.f32(6.0)])
        if kind == "silu":
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if kind == "relu6_attr":
            # Clip before opset 11: bounds as attributes.
            return self.op("Clip", [x], min=0.0, max=6.0)
        if kind == "hardswish":
            return self.op("HardSwish", [x])
        if kind == "hardswish_decomposed":
            # x * HardSigmoid(x), as torch exports hardswish below opset 14.
            return self.op("Mul", [x, self.act(x, "hardsigmoid")])
        if kind == "hardsigmoid":
            return self.op("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        if kind == "leaky":
            return self.op("LeakyRelu", [x], alpha=0.1)
        if kind == "gelu_erf":
            e = self.op("Erf", [self.op("Div", [x, self.f32(2.0**0.5)])])
            return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, self.f32(1.0)])]), self.f32(0.5)])
        raise ValueError(kind)

    def conv_act(self, x: str, cin: int, cout: int, k, stride=1, act: str | None = "relu", group: int = 1,
                 pad=None, gain: float = 2.0**0.5) -> str:
        """Conv with bias + activation: Conv+BN as torch.onnx writes it in eval mode (BN folded into the
        Conv's weight and bias)."""
        return self.act(self.conv(x, cin, cout, k, stride, pad=pad, group=group, gain=gain), act)

    def conv_bn_act(self, x: str, cin: int, cout: int, k, stride=1, act: str | None = "relu", group: int = 1,
                    pad=None) -> str:
        return self.act(self.bn(self.conv(x, cin, cout, k, stride, pad=pad, group=group, bias=False), cout), act)

    def linear(self, x: str, din: int, dout: int, bias: bool = True, gain: float = 1.0) -> str:
        """MatMul (+ Add) with a [din, dout] weight, as torch exports nn.Linear on rank > 2 inputs."""
        y = self.op("MatMul", [x, self.weight(din, dout, fan_in=din, gain=gain)])
        return self.op("Add", [y, self.const(self.randn(dout, scale=0.02), "b")]) if bias else y

    def layernorm(self, x: str, d: int, decomposed: bool = False, eps: float = 1e-5) -> str:
        gamma = self.const((1.0 + 0.1 * self.rng.standard_normal(d)).astype(np.float32), "ln_g")
        beta = self.const(self.randn(d, scale=0.1), "ln_b")
        if not decomposed:
            return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)
        # ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add as torch exports it before opset 17.
        reduce = (lambda v: self.op("ReduceMean", [v, self.i64([-1])], keepdims=1)) if self.opset >= 18 else \
            (lambda v: self.op("ReduceMean", [v], axes=[-1], keepdims=1))
        centred = self.op("Sub", [x, reduce(x)])
        var = reduce(self.op("Pow", [centred, self.f32(2.0)]))
        std = self.op("Sqrt", [self.op("Add", [var, self.f32(eps)])])
        return self.op("Add", [self.op("Mul", [self.op("Div", [centred, std]), gamma]), beta])

    def split(self, x: str, sizes, axis: int) -> list[str]:
        """Split into `sizes` parts: the sizes an attribute before opset 13, an input from 13 on."""
        if self.opset >= 13:
            return self.op("Split", [x, self.i64(sizes, "split")], n_out=len(sizes), axis=axis)
        return self.op("Split", [x], n_out=len(sizes), axis=axis, split=list(sizes))

    def reduce_mean(self, x: str, axes, keepdims: int = 1) -> str:
        """ReduceMean with axes as an attribute (below opset 18) or an input."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.i64(axes, "axes")], keepdims=keepdims)
        return self.op("ReduceMean", [x], axes=list(axes), keepdims=keepdims)

    def resize(self, x: str, scales=None, sizes=None, mode: str = "nearest",
               coord: str = "asymmetric", nearest_mode: str = "floor") -> str:
        """Resize as torch.onnx writes nn.Upsample / F.interpolate: opsets 11-12 need roi and scales
        inputs even when unused (empty tensors); from opset 13 unused ones are left out (""). `sizes` is
        a list, or the name of an int64 tensor computed in the graph."""
        attrs = {"mode": mode, "coordinate_transformation_mode": coord}
        if mode == "nearest":
            attrs["nearest_mode"] = nearest_mode
        empty = (lambda: self.f32(np.zeros(0, np.float32), "empty")) if self.opset < 13 else (lambda: "")
        if scales is not None:
            return self.op("Resize", [x, empty(), self.f32(scales, "scales")], **attrs)
        sizes = sizes if isinstance(sizes, str) else self.i64(sizes, "sizes")
        return self.op("Resize", [x, empty(), empty(), sizes], **attrs)



def fold_batch_stats(model: onnx.ModelProto, feeds: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights and statistics that give every Conv with initializer weights and bias, and every
    BatchNormalization, the output a trained network has on `feeds`: mean ~ beta (small), std ~
    gamma (~1). (For a Conv that is what a folded BatchNormalization does; for a BatchNormalization
    its running mean and variance are set to those of its input.) He init alone lets deep SiLU or
    HardSwish networks with residual Adds and Concats drift by orders of magnitude. Nodes are measured
    (with onnxruntime) and adjusted one at a time in graph order, so each sees its inputs already
    normalised. Run it on a small input: the returned initializers fit the same network built at any
    size (see `set_initializers`)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    todo = [(n, n.output[0], n.input[1:3]) for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) == 3 and all(v in inits for v in n.input[1:])]
    todo += [(n, n.input[0], n.input[3:5]) for n in model.graph.node
             if n.op_type == "BatchNormalization" and all(v in inits for v in n.input[1:])]
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    todo.sort(key=lambda t: order[id(t[0])])
    params = {name: numpy_helper.to_array(inits[name]) for _, _, names in todo for name in names}
    # The adjusted tensors become inputs, so that one session measures every step.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    kept = [t for t in probe.graph.initializer if t.name not in params]
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(kept)
    probe.graph.input.extend(helper.make_tensor_value_info(k, F, v.shape) for k, v in params.items())
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=v) for v in dict.fromkeys(v for _, v, _ in todo))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for node, measured, (first, second) in todo:
        (out,) = sess.run([measured], {**feeds, **params})
        # One scale per layer, not per channel: a random network's features vary little across
        # positions of one image, and per-channel statistics fitted to that would not carry over to
        # another input.
        mean, std = float(out.mean()), max(float(out.std()), 1e-6)
        if node.op_type == "BatchNormalization":
            params[first] = np.full_like(params[first], mean)
            params[second] = np.full_like(params[second], std**2)
            continue
        c = out.shape[1]
        scale = (1.0 + 0.1 * rng.standard_normal(c)) / std
        w, b = params[first], params[second]
        params[first] = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        params[second] = ((b - mean) * scale + 0.1 * rng.standard_normal(c)).astype(np.float32)
    return params


def set_initializers(model: onnx.ModelProto, params: dict[str, np.ndarray]) -> onnx.ModelProto:
    for t in model.graph.initializer:
        if t.name in params:
            t.CopyFrom(numpy_helper.from_array(params[t.name], t.name))
    return model
