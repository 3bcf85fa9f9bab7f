"""Tiny hostile models: each asks, from a few bytes, for memory or time no machine has.

tests/hostile.rs loads and runs every one and expects a clear error (or a correct, cheap result),
never an abort, a hang or a big resident set. Run with the test venv:
    .venv/bin/python tests/models/hostile/gen_hostile.py
The .onnx files are committed; each case's comment says which class of bomb it is.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, nodes, inputs, outputs, initializers=(), opset=18, domains=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domains]
    model = helper.make_model(graph, opset_imports=imports, producer_name="crx580-hostile")
    model.ir_version = 8
    with open(os.path.join(HERE, name + ".onnx"), "wb") as f:
        f.write(model.SerializeToString())


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def out(name, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, None)


# Folding at load: a constant 2^28-float (1 GiB) ConstantOfShape must not be materialised.
save(
    "constant_of_shape_1gib",
    [helper.make_node("ConstantOfShape", ["shape"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
    [],
    [out("y")],
    [ints("shape", [1 << 28])],
)

# Attribute sizes: n-gram buffers and skip loops sized by attributes, not by the data.
for name, max_gram, max_skip in [
    ("tfidf_gram_2_40", 1 << 40, 1),
    ("tfidf_gram_2_61", 1 << 61, 1),
    ("tfidf_skip_2_62", 2, 1 << 62),
]:
    save(
        name,
        [
            helper.make_node(
                "TfIdfVectorizer",
                ["x"],
                ["y"],
                mode="TF",
                min_gram_length=1,
                max_gram_length=max_gram,
                max_skip_count=max_skip,
                ngram_counts=[0, 4],
                ngram_indexes=[0, 1, 2, 3, 4, 5, 6],
                pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7],
            )
        ],
        [helper.make_tensor_value_info("x", TensorProto.INT64, [12])],
        [out("y")],
        opset=9,
    )

# Dims of an empty tensor: a [0, 2^40] tensor made at run time, then Resize with antialias.
save(
    "resize_antialias_empty_2_40",
    [
        helper.make_node("ConstantOfShape", ["shape"], ["x"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", antialias=1),
    ],
    [],
    [out("y")],
    [ints("shape", [0, 1 << 40]), ints("sizes", [0, 1])],
)

# The same empty tensor as an initializer: refused while decoding.
empty = helper.make_tensor("x", TensorProto.FLOAT, [0, 1 << 40], vals=[], raw=False)
save(
    "empty_initializer_2_40",
    [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", antialias=1)],
    [],
    [out("y")],
    [empty, ints("sizes", [0, 1])],
)

# Attribute-sized output: 2^40 mel bins.
save(
    "mel_weight_matrix_2_40",
    [helper.make_node("MelWeightMatrix", ["bins", "dft", "rate", "lo", "hi"], ["y"])],
    [],
    [out("y")],
    [
        ints("bins", 1 << 40),
        ints("dft", 16),
        ints("rate", 16000),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"),
        numpy_helper.from_array(np.array(8000.0, dtype=np.float32), "hi"),
    ],
    opset=17,
)

# Pieces of an empty tensor: SplitToSequence of [2^27, 0] makes 2^27 tensors of nothing.
save(
    "split_to_sequence_empty_2_27",
    [
        helper.make_node("ConstantOfShape", ["shape"], ["x"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("SplitToSequence", ["x"], ["s"], axis=0),
        helper.make_node("SequenceLength", ["s"], ["n"]),
    ],
    [],
    [out("n", TensorProto.INT64)],
    [ints("shape", [1 << 27, 0])],
)

# Window attributes: pads, dilations and strides of 2^40 on a 4x4 image make output positions (and
# per-position tables) that no machine holds; found by a scan of window ops (MaxPool aborted,
# Conv and ConvTranspose overflowed).
image = numpy_helper.from_array(np.ones((1, 1, 4, 4), dtype=np.float32), "x")
kernel = numpy_helper.from_array(np.ones((1, 1, 2, 2), dtype=np.float32), "w")
H = 1 << 40
save(
    "maxpool_pads_2_40",
    [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[H, H], pads=[H, H, H, H])],
    [],
    [out("y")],
    [image],
    opset=12,
)
save(
    "conv_dilations_2_40",
    [helper.make_node("Conv", ["x", "w"], ["y"], dilations=[H, H], pads=[H, H, H, H])],
    [],
    [out("y")],
    [image, kernel],
    opset=11,
)
save(
    "conv_transpose_strides_2_40",
    [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[H, H])],
    [],
    [out("y")],
    [image, kernel],
    opset=11,
)

# Time: a Loop whose trip count is 2^62 and whose condition stays true; only a time limit (or the
# 2^24-iteration cap, minutes later) stops it.
body = helper.make_graph(
    [
        helper.make_node("Identity", ["cond"], ["cond_out"]),
        helper.make_node("Add", ["v", "one"], ["v_out"]),
    ],
    "count",
    [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v", TensorProto.INT64, []),
    ],
    [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_out", TensorProto.INT64, []),
    ],
    initializer=[ints("one", 1)],
)
save(
    "loop_2_62",
    [helper.make_node("Loop", ["trips", "go", "v0"], ["v"], body=body)],
    [],
    [out("v", TensorProto.INT64)],
    [ints("trips", 1 << 62), numpy_helper.from_array(np.array(True), "go"), ints("v0", 0)],
    opset=13,
)

# paddle2onnx's dynamic dims: -1 in the declared input and output shapes.
save(
    "paddle_negative_dims",
    [helper.make_node("Relu", ["x"], ["y"])],
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, -1])],
)

# What the TfIdfVectorizer cases must give: onnx.reference on the same model with the sizes a
# 12-token row can use (max_gram_length 2, the pool's levels; max_skip_count at most 12).
from onnx.reference import ReferenceEvaluator  # noqa: E402

ROW = np.array([1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8], dtype=np.int64)
for name in ["tfidf_gram_2_40", "tfidf_gram_2_61", "tfidf_skip_2_62"]:
    model = onnx.load(os.path.join(HERE, name + ".onnx"))
    node = model.graph.node[0]
    for a in node.attribute:
        if a.name == "max_gram_length":
            a.i = min(a.i, 2)
        if a.name == "max_skip_count":
            a.i = min(a.i, len(ROW))
    (y,) = ReferenceEvaluator(model).run(None, {"x": ROW})
    np.save(os.path.join(HERE, name + ".expected.npy"), y.astype(np.float32))
