"""`crx580 convert --to fp16 --calibrate` and `--fp16-io` against onnx and onnxruntime (called by
check_convert.py).

A model where the default float16 rules break: `h = x @ W1` reaches ~1.6e5, beyond float16's
65504, though every weight fits float16; then `y = h * 1e-3 + 16384 - 16384` loses what is below
float16's spacing of 16 at 16384; `z = Relu(x @ W2)` is harmless. The default conversion must give
a broken y where float16 is computed as written (crx580 --f16-as-written; that is what the model is for); with --calibrate the converted model must
pass onnx.checker, and both engines must keep y and z within the issue's 1e-2 relative of the float
model while z's branch still computes in float16. A golden model must keep its default conversion
when its error is already within the tolerance (no islands added). --report must show the choice.

--fp16-io: golden models converted with float16 inputs and outputs must pass onnx.checker, declare
float16 for every float32 input and output (names kept), and run in both engines on float16 inputs
within the fp16 bounds of the float model.
"""

import os
import subprocess

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runs import agreement, converted, crx_run, ort_run
from static_checks import write_batches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_REL = 1e-2


def fragile_model():
    rng = np.random.default_rng(17)
    inits = [numpy_helper.from_array((20000 * rng.uniform(0.9, 1.1, (8, 8))).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, (8, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "milli"),
             numpy_helper.from_array(np.array(16384, np.float32), "c")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="big"),
             helper.make_node("Mul", ["h", "milli"], ["h2"], name="scale"),
             helper.make_node("Add", ["h2", "c"], ["h3"], name="offset"),
             helper.make_node("Sub", ["h3", "c"], ["y"], name="unoffset"),
             helper.make_node("MatMul", ["x", "w2"], ["z0"], name="small"),
             helper.make_node("Relu", ["z0"], ["z"], name="relu")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 8]) for n in ("x", "y", "z")]
    graph = helper.make_graph(nodes, "fp16_fragile", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="crx580-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_all(crx, work, check):
    check_fp16_io(crx, work, check)
    path = os.path.join(work, "fp16_fragile.onnx")
    onnx.save(fragile_model(), path)
    rng = np.random.default_rng(5)
    calib_dir = os.path.join(work, "fp16_fragile.calib")
    write_batches(calib_dir, [rng.uniform(0.5, 1, (4, 8)).astype(np.float32) for _ in range(3)])
    feeds = {"x": rng.uniform(0.5, 1, (16, 8)).astype(np.float32)}
    ref = ort_run(path, feeds)

    naive = os.path.join(work, "fp16_fragile.fp16.onnx")
    r = subprocess.run([crx, "convert", path, naive, "--to", "fp16"], capture_output=True, text=True)
    if converted(check, "fp16_fragile fp16", r, naive):
        # Computed as written (every float16 result rounded: GPUs, fp16-capable CPUs, crx580 with
        # --f16-as-written) the overflow breaks y. crx580's CPU backend widens float16 regions to
        # float32 (passes/widen_f16.rs), and onnxruntime's x86 CPU provider runs float16
        # MatMul/Add/Mul in float32 behind casts it inserts; both hide the overflow.
        rel, _ = agreement(ref[0], crx_run(crx, naive, feeds, os.path.join(work, "run"), ["--f16-as-written"])[0])
        wide_rel, _ = agreement(ref[0], crx_run(crx, naive, feeds, os.path.join(work, "run"))[0])
        ort_rel, _ = agreement(ref[0], ort_run(naive, feeds)[0])
        check(not rel <= MAX_REL, f"fp16_fragile: the default rules were expected to break y as written, rel {rel:.2e}")
        check(wide_rel <= MAX_REL, f"fp16_fragile: crx580's CPU widening should keep y, rel {wide_rel:.2e}")
        print(f"fp16_fragile fp16 (default rules): y rel {rel:.2e} as written, {wide_rel:.2e} in crx580 (widened), "
              f"{ort_rel:.2e} in onnxruntime")

    auto = os.path.join(work, "fp16_fragile.fp16auto.onnx")
    r = subprocess.run([crx, "convert", path, auto, "--to", "fp16", "--calibrate", calib_dir, "--report"],
                       capture_output=True, text=True)
    if converted(check, "fp16_fragile fp16 auto", r, auto):
        check("fp16 auto: 4 float32 islands" in r.stdout, f"fp16_fragile: the islands chosen: {r.stdout!r}")
        check("65504" in r.stdout and "tolerance" in r.stdout, f"fp16_fragile: the report's reasons: {r.stdout!r}")
        nodes = {n.name: n for n in onnx.load(auto).graph.node}
        check(any(i.endswith("_fp16") for i in nodes["small"].input), f"fp16_fragile: 'small' is not float16: {nodes['small']}")
        check(not any(i.endswith("_fp16") for i in nodes["offset"].input), f"fp16_fragile: 'offset' is float16: {nodes['offset']}")
        line = "fp16_fragile fp16 auto:"
        for engine, got in (("ort", ort_run(auto, feeds)), ("crx580", crx_run(crx, auto, feeds, os.path.join(work, "run")))):
            for k, name in enumerate(("y", "z")):
                rel, cos = agreement(ref[k], got[k])
                line += f" | {engine} {name}: rel {rel:.2e} cos {cos:.6f}"
                check(rel <= MAX_REL, f"fp16_fragile fp16 auto {engine}: {name} rel {rel:.2e}")
        print(line)

    # A model the default rules already convert within the tolerance keeps that conversion.
    mlp = os.path.join(ROOT, "tests", "models", "golden", "mlp", "model.onnx")
    t = onnx.TensorProto()
    with open(os.path.join(os.path.dirname(mlp), "test_data_set_0", "input_0.pb"), "rb") as f:
        t.ParseFromString(f.read())
    mlp_calib = os.path.join(work, "mlp.fp16.calib")
    write_batches(mlp_calib, [numpy_helper.to_array(t)])
    plain, with_calib = os.path.join(work, "mlp.fp16.onnx"), os.path.join(work, "mlp.fp16auto.onnx")
    subprocess.run([crx, "convert", mlp, plain, "--to", "fp16"], check=True, capture_output=True)
    r = subprocess.run([crx, "convert", mlp, with_calib, "--to", "fp16", "--calibrate", mlp_calib],
                       capture_output=True, text=True)
    if converted(check, "mlp fp16 auto", r, with_calib):
        check("fp16 auto: 0 float32 islands" in r.stdout, f"mlp fp16 auto: {r.stdout!r}")
        check(onnx.load(plain) == onnx.load(with_calib), "mlp fp16 auto: differs from the default conversion")
        print("mlp fp16 auto: no islands needed, same model as the default rules")


def check_fp16_io(crx, work, check):
    for name in ("cnn_bn", "mlp", "attention_block"):
        path = os.path.join(ROOT, "tests", "models", "golden", name, "model.onnx")
        out = os.path.join(work, f"{name}.fp16io.onnx")
        r = subprocess.run([crx, "convert", path, out, "--to", "fp16", "--fp16-io", "--report"],
                           capture_output=True, text=True)
        label = f"{name} fp16 --fp16-io"
        if not converted(check, label, r, out):
            continue
        before, after = onnx.load(path).graph, onnx.load(out).graph
        for old, new in zip(list(before.input) + list(before.output), list(after.input) + list(after.output)):
            want = TensorProto.FLOAT16 if old.type.tensor_type.elem_type == TensorProto.FLOAT else old.type.tensor_type.elem_type
            check(old.name == new.name and new.type.tensor_type.elem_type == want,
                  f"{label}: '{old.name}' became '{new.name}' of type {new.type.tensor_type.elem_type}")
        feeds = {}
        for k, inp in enumerate(before.input):
            t = onnx.TensorProto()
            with open(os.path.join(os.path.dirname(path), "test_data_set_0", f"input_{k}.pb"), "rb") as f:
                t.ParseFromString(f.read())
            feeds[inp.name] = numpy_helper.to_array(t)
        half = {n: (x.astype(np.float16) if x.dtype == np.float32 else x) for n, x in feeds.items()}
        ref = ort_run(path, feeds)
        line = f"{label}:"
        for engine, got in (("ort", ort_run(out, half)), ("crx580", crx_run(crx, out, half, os.path.join(work, "run")))):
            for k, (want, have) in enumerate(zip(ref, got)):
                if want.dtype != np.float32:
                    continue
                check(have.dtype == np.float16, f"{label} {engine}: output {k} is {have.dtype}")
                rel, cos = agreement(want, have)
                line += f" | {engine} out{k}: rel {rel:.2e} cos {cos:.6f}"
                check(rel <= MAX_REL, f"{label} {engine}: output {k} rel {rel:.2e}")
        print(line)
