"""Regenerates the decoder test data in this directory (run with the onnx venv's python).

tensors/*.pb     TensorProto files, one per dtype and encoding (raw_data or typed fields)
tensors/expected.txt  what each file holds, written from the numpy arrays: one line per file,
                 `file dtype dims|v v v`, dims comma-separated, floats as hex bit patterns of their
                 own width, strings as hex of their UTF-8 bytes
*.onnx           small models for the import tests
external/        a model whose initializers live in an external data file
"""

import os
import shutil

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
TENSORS = os.path.join(HERE, "tensors")


def arrays():
    f32 = np.array([[1.5, -2.25, 0.0], [np.inf, -np.inf, 3.0e-5]], np.float32)
    return {
        "float32": (TensorProto.FLOAT, f32),
        "float64": (TensorProto.DOUBLE, np.array([[1.0 / 3.0, -1e300], [5e-324, -0.0]], np.float64)),
        "float16": (TensorProto.FLOAT16, np.array([1.5, -2.0, 65504.0, 6.1035156e-05, np.inf, 0.0], np.float16)),
        "bfloat16": (
            TensorProto.BFLOAT16,
            np.array([1.5, -2.0, 3.3895314e38, 1.0, -np.inf, 0.0], ml_dtypes.bfloat16),
        ),
        "int8": (TensorProto.INT8, np.array([[-128, -1, 0], [1, 7, 127]], np.int8)),
        "int16": (TensorProto.INT16, np.array([-32768, -300, 0, 300, 32767], np.int16)),
        "int32": (TensorProto.INT32, np.array([-(2**31), -70000, 0, 70000, 2**31 - 1], np.int32)),
        "int64": (TensorProto.INT64, np.array([-(2**63), -(2**40), 0, 2**40, 2**63 - 1], np.int64)),
        "uint8": (TensorProto.UINT8, np.array([0, 1, 128, 255], np.uint8)),
        "uint16": (TensorProto.UINT16, np.array([0, 1, 40000, 65535], np.uint16)),
        "uint32": (TensorProto.UINT32, np.array([0, 1, 3_000_000_000, 2**32 - 1], np.uint32)),
        "uint64": (TensorProto.UINT64, np.array([0, 1, 2**63, 2**64 - 1], np.uint64)),
        "bool": (TensorProto.BOOL, np.array([[True, False], [False, True]], np.bool_)),
        "string": (TensorProto.STRING, np.array(["a", "h\u00e9llo", "", "\u6f22"], dtype=object)),
        "scalar": (TensorProto.FLOAT, np.array(2.5, np.float32)),
        "empty": (TensorProto.INT64, np.zeros((2, 0, 3), np.int64)),
    }


def expected_values(arr):
    flat = arr.reshape(-1)
    if arr.dtype == object:
        return [s.encode("utf-8").hex() for s in flat]
    if arr.dtype == np.bool_:
        return [str(int(v)) for v in flat]
    if arr.dtype.kind == "f" or arr.dtype == ml_dtypes.bfloat16:
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[arr.dtype.itemsize]
        return ["%x" % v for v in flat.view(bits)]
    return [str(int(v)) for v in flat]


def make_typed(name, code, arr):
    flat = arr.reshape(-1)
    if code == TensorProto.STRING:
        vals = [s.encode("utf-8") for s in flat]
    elif code == TensorProto.BFLOAT16:
        vals = [float(v) for v in flat.astype(np.float32)]
    else:
        vals = flat.tolist()
    return helper.make_tensor(name, code, arr.shape, vals, raw=False)


def tensors():
    os.makedirs(TENSORS, exist_ok=True)
    lines = []
    for name, (code, arr) in arrays().items():
        dims = ",".join(str(d) for d in arr.shape)
        values = " ".join(expected_values(arr))
        encodings = [("typed", make_typed(name, code, arr))]
        if code != TensorProto.STRING:
            if code == TensorProto.BFLOAT16:
                raw = helper.make_tensor(name, code, arr.shape, arr.tobytes(), raw=True)
            else:
                raw = numpy_helper.from_array(arr, name)
            assert raw.HasField("raw_data")
            encodings.append(("raw", raw))
        for enc, t in encodings:
            file = f"{name}_{enc}.pb"
            with open(os.path.join(TENSORS, file), "wb") as f:
                f.write(t.SerializeToString())
            lines.append(f"{file} {code} {dims}|{values}")
    with open(os.path.join(TENSORS, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def relu_model():
    """IR version 3 style: the initializer is listed among the inputs too; nodes out of order;
    symbolic, unknown and known dims; value_info for the intermediate value."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, None])
    w_in = helper.make_tensor_value_info("W", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3, None])
    z = helper.make_tensor_value_info("Z", TensorProto.FLOAT, [2])
    h = helper.make_tensor_value_info("H", TensorProto.FLOAT, ["N", 3, 7])
    w = numpy_helper.from_array(np.array([-1.0, 2.0], np.float32), "W")
    nodes = [
        helper.make_node("Relu", ["H"], ["Y"], name="second"),
        helper.make_node("Relu", ["X"], ["H"], name="first"),
        helper.make_node("Relu", ["W"], ["Z"], name="on_weights"),
    ]
    g = helper.make_graph(nodes, "relu_graph", [x, w_in], [y, z], [w], value_info=[h])
    m = helper.make_model(g, producer_name="crx580-tests", producer_version="1.0", opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 3
    onnx.save_model(m, os.path.join(HERE, "relu.onnx"))


def unsupported_model():
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    nodes = [
        helper.make_node("Foo", ["X"], ["a"]),
        helper.make_node("Bar", ["a"], ["b"], domain="com.microsoft"),
        helper.make_node("Foo", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["Y"]),
    ]
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])
    g = helper.make_graph(nodes, "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    onnx.save_model(m, os.path.join(HERE, "unsupported.onnx"))


def subgraph_model():
    """An If whose branches read outer values, one of them through a nested If (so the middle
    branch must capture X too, to hand it down)."""
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])
    w = numpy_helper.from_array(np.array([1.0, -1.0], np.float32), "W")
    inner_then = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["it"])], "inner_then", [], [helper.make_tensor_value_info("it", TensorProto.FLOAT, [2])]
    )
    inner_else = helper.make_graph(
        [helper.make_node("Relu", ["W"], ["ie"])], "inner_else", [], [helper.make_tensor_value_info("ie", TensorProto.FLOAT, [2])]
    )
    then_branch = helper.make_graph(
        [helper.make_node("If", ["cond"], ["t"], then_branch=inner_then, else_branch=inner_else)],
        "then_branch",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Relu", ["W"], ["e"])], "else_branch", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])]
    )
    node = helper.make_node("If", ["cond"], ["Y"], then_branch=then_branch, else_branch=else_branch)
    g = helper.make_graph([node], "main", [cond, x], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    onnx.save_model(m, os.path.join(HERE, "subgraph.onnx"))


def external_model():
    d = os.path.join(HERE, "external")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    a = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5, "A")
    b = numpy_helper.from_array(np.array([7, -8, 9], np.int64), "B")
    nodes = [helper.make_node("Relu", ["A"], ["Y"])]
    g = helper.make_graph(
        nodes, "ext", [], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3]), helper.make_tensor_value_info("B", TensorProto.INT64, [3])], [a, b]
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save_model(m, os.path.join(d, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)


if __name__ == "__main__":
    tensors()
    relu_model()
    unsupported_model()
    subgraph_model()
    external_model()
