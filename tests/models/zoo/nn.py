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

    def conv1d(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None,
               gain: float = 2.0**0.5, weight: str | None = None, bias: str | None = None) -> str:
        """nn.Conv1d; `weight`/`bias` pass shared (or fixed) tensors instead of fresh random ones."""
        pad = (k - 1) // 2 if pad is None else pad
        weight = weight or self.weight(cout, cin, k, gain=gain)
        bias = bias or self.const(self.randn(cout, scale=0.1), "b")
        return self.op("Conv", [x, weight, bias], kernel_shape=[k], strides=[stride], pads=[pad, pad])

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

    # -- sequence layers ---------------------------------------------------------------------

    def uniform(self, *shape, bound: float) -> np.ndarray:
        return self.rng.uniform(-bound, bound, shape).astype(np.float32)

    def _recurrent(self, op_type: str, gates: int, x: str, din: int, hidden: int, direction: str,
                   initial_h: str | None, initial_c: str | None, **attrs) -> list[str]:
        """An ONNX LSTM/GRU node with torch's initialisation (uniform in +-1/sqrt(hidden)); returns
        [Y, Y_h] (+ Y_c for LSTM)."""
        dirs = 2 if direction == "bidirectional" else 1
        k = 1.0 / np.sqrt(hidden)
        w = self.const(self.uniform(dirs, gates * hidden, din, bound=k), "rnn_w")
        r = self.const(self.uniform(dirs, gates * hidden, hidden, bound=k), "rnn_r")
        bias = self.const(self.uniform(dirs, 2 * gates * hidden, bound=k), "rnn_b")
        ins = [x, w, r, bias, "", initial_h or ""] + ([initial_c or ""] if op_type == "LSTM" else [])
        while ins[-1] == "":
            ins.pop()
        n_out = 3 if op_type == "LSTM" else 2
        return self.op(op_type, ins, n_out=n_out, hidden_size=hidden, direction=direction, **attrs)

    def lstm(self, x: str, din: int, hidden: int, direction: str = "forward", initial_h: str | None = None,
             initial_c: str | None = None) -> list[str]:
        """ONNX LSTM on time-major x [T, N, din]: returns Y [T, dirs, N, hidden], Y_h, Y_c."""
        return self._recurrent("LSTM", 4, x, din, hidden, direction, initial_h, initial_c)

    def gru(self, x: str, din: int, hidden: int, direction: str = "forward", initial_h: str | None = None) -> list[str]:
        """ONNX GRU with linear_before_reset=1, as torch.nn.GRU exports: returns Y, Y_h."""
        return self._recurrent("GRU", 3, x, din, hidden, direction, initial_h, None, linear_before_reset=1)

    def bilstm_stack(self, x: str, din: int, hidden: int, layers: int) -> str:
        """torch.nn.LSTM(bidirectional=True, num_layers=layers) as torch.onnx writes it: one LSTM node per
        layer, each Y [T, 2, N, H] turned into the next layer's [T, N, 2H] by Transpose + Reshape."""
        for _ in range(layers):
            y = self.lstm(x, din, hidden, "bidirectional")[0]
            x = self.op("Reshape", [self.op("Transpose", [y], perm=[0, 2, 1, 3]), self.i64([0, 0, -1])])
            din = 2 * hidden
        return x

    def split_heads(self, x: str, heads: int, head_dim: int) -> str:
        """[N, S, heads*head_dim] -> [N, heads, S, head_dim] with a Reshape that copies N and S (0)."""
        return self.op("Transpose", [self.op("Reshape", [x, self.i64([0, 0, heads, head_dim])])], perm=[0, 2, 1, 3])

    def merge_heads(self, x: str, d: int) -> str:
        """[N, heads, S, head_dim] -> [N, S, d]."""
        return self.op("Reshape", [self.op("Transpose", [x], perm=[0, 2, 1, 3]), self.i64([0, 0, d])])

    def mha(self, x: str, d: int, heads: int, mask: str | None = None, split=None, merge=None) -> str:
        """Multi-head self-attention as torch exports it: Q/K/V Linear, heads split by Reshape/Transpose,
        MatMul(Q, K^T) / sqrt(head_dim) (+ additive mask), Softmax, MatMul V, merge, output Linear.
        `split(x, heads, head_dim)` / `merge(x, d)` replace the static Reshapes (e.g. by shapes
        computed with Shape/Gather/Concat as BERT exports write them)."""
        head_dim = d // heads
        split = split or self.split_heads
        merge = merge or self.merge_heads
        q, k, v = (split(self.linear(x, d, d), heads, head_dim) for _ in range(3))
        kt = self.op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = self.op("Div", [self.op("MatMul", [q, kt]), self.f32(np.sqrt(head_dim))])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        ctx = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
        return self.linear(merge(ctx, d), d, d)

    def mlp(self, x: str, d: int, hidden: int, act: str = "gelu_erf") -> str:
        return self.linear(self.act(self.linear(x, d, hidden, gain=2.0**0.5), act), hidden, d)

    # -- control flow ------------------------------------------------------------------------

    def graph(self, name: str, body, outputs, inputs=()) -> onnx.GraphProto:
        """A subgraph (If branch, Loop body): `body(*input_names)` adds nodes with this builder and
        returns the output names; `outputs` gives their element types; `inputs` is a list of
        (name, elem, shape). Constants it makes are top-level initializers the subgraph captures,
        as torch.onnx writes scripted control flow."""
        saved, self.nodes = self.nodes, []
        try:
            outs = body(*[n for n, _, _ in inputs])
        finally:
            nodes, self.nodes = self.nodes, saved
        outs = [outs] if isinstance(outs, str) else list(outs)
        produced = {o for n in nodes for o in n.output}
        for i, o in enumerate(outs):
            # A subgraph output must be computed inside it, not an outer value passed through.
            if o not in produced:
                outs[i] = self.fresh(f"{name}_out")
                nodes.append(helper.make_node("Identity", [o], [outs[i]], name=self.fresh("n_Identity")))
        return helper.make_graph(nodes, self.fresh(name), [helper.make_tensor_value_info(*i) for i in inputs],
                                 [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, outputs)])

    def loop(self, trip: str, carried, body, carried_types, scan_types, carried_shapes=None) -> list[str]:
        """Loop with trip count `trip` and no condition input; `body(i, cond, *carried)` returns the new
        carried values then the scan outputs (the condition is passed on unchanged)."""
        shapes = carried_shapes or [None] * len(carried)
        ins = [(self.fresh("iter"), I64, []), (self.fresh("cond"), BOOL, [])]
        ins += [(self.fresh("carried"), t, s) for t, s in zip(carried_types, shapes)]

        def wrapped(i, cond, *state):
            return [self.op("Identity", [cond])] + list(body(i, cond, *state))
        g = self.graph("loop_body", wrapped, [BOOL] + list(carried_types) + list(scan_types), ins)
        n_out = len(carried) + len(scan_types)
        return self.op("Loop", [trip, ""] + list(carried), n_out=n_out, out=[self.fresh("loop") for _ in range(n_out)],
                       body=g)

    def if_(self, cond: str, then_body, else_body, outputs) -> list[str]:
        """If node; the branches are callables returning output names, of element types `outputs`."""
        then_g = self.graph("then", then_body, outputs)
        else_g = self.graph("else", else_body, outputs)
        return self.op("If", [cond], n_out=len(outputs), out=[self.fresh("if") for _ in outputs],
                       then_branch=then_g, else_branch=else_g)
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
