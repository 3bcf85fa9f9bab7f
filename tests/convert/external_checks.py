"""`crx580 convert` with ONNX external data, end to end (called by check_convert.py).

Output: `--external-data` must write the initializers of 1 KiB and more to OUT.data (next to
OUT.onnx, at the offsets the model names) and leave OUT.onnx small; onnx.checker, onnxruntime and
crx580 (`crx580 run`, which reads the side file from the model's directory) must load the pair and
agree with the original model. Input: a model saved by onnx with its weights in a side file must
convert (its side file read in) to a one-file model, and to a new pair with `--external-data`,
with the same outputs. Cases: the digits demo (committed) and, with --zoo, MobileNetV2 in fp16.
"""

import os
import subprocess

import onnx
from onnx import numpy_helper

from runs import agreement, converted, crx_run, ort_run
from static_checks import ROOT, digits_split

MIN_EXTERNAL_BYTES = 1024  # src/convert/external.rs
COPY_MAX_REL = 1e-6  # --to copy keeps every value; engines may sum in different orders
FP16_MAX_REL = 1e-2  # the fp16 bound, as check_convert.py holds fp16 to it
FP16_MIN_COS = 0.9999


def inline_initializer_bytes(path):
    """The largest initializer stored inside the .onnx file itself, in bytes, and how many
    initializers point at external data (the file is parsed without reading any side file)."""
    m = onnx.load(path, load_external_data=False)
    inside = [len(t.raw_data) for t in m.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    external = [t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    return max(inside, default=0), len(external), {e.key: e.value for t in external for e in t.external_data}


def check_pair(crx, work, check, label, out, feeds, ref, bound):
    """The converted model in `out` with its side file: written where expected, small, and run by
    both engines within `bound` = (max rel, min cosine) of the float reference outputs `ref`."""
    side = out + ".data"
    check(os.path.exists(side), f"{label}: {side} was not written")
    if not os.path.exists(side):
        return
    largest_inside, n_external, locations = inline_initializer_bytes(out)
    check(n_external > 0, f"{label}: no initializer refers to external data")
    check(largest_inside < MIN_EXTERNAL_BYTES,
          f"{label}: an initializer of {largest_inside} bytes stayed inside {os.path.basename(out)}")
    check(locations.get("location") == os.path.basename(side),
          f"{label}: external data location is {locations.get('location')!r}, not {os.path.basename(side)!r}")
    onnx_size, side_size = os.path.getsize(out), os.path.getsize(side)
    check(onnx_size < side_size / 4, f"{label}: {os.path.basename(out)} is {onnx_size} bytes against {side_size} of data")
    try:
        onnx.checker.check_model(out)  # by path: the checker then follows the external data
    except Exception as e:  # noqa: BLE001 - any checker complaint is a failure
        check(False, f"{label}: onnx.checker: {e}")
    line = f"  {label}: {onnx_size} + {side_size} bytes"
    got_ort = ort_run(out, feeds)
    got_crx = crx_run(crx, out, feeds, os.path.join(work, "run"))
    for k, want in enumerate(ref):
        for engine, got in (("ort", got_ort[k]), ("crx580", got_crx[k])):
            rel, cos = agreement(want, got)
            line += f" | out{k} {engine}: rel {rel:.2e} cos {cos:.6f}"
            check(rel <= bound[0] and cos >= bound[1], f"{label} {engine}: output {k} rel {rel:.2e} cos {cos:.6f}")
    print(line)


def run_case(crx, work, check, name, path, feeds, target, bound):
    ref = ort_run(path, feeds)
    folder = os.path.join(work, f"{name}.external")
    os.makedirs(folder, exist_ok=True)

    # Output with external data.
    out = os.path.join(folder, f"{name}.{target}.onnx")
    r = subprocess.run([crx, "convert", path, out, "--to", target, "--external-data"], capture_output=True, text=True)
    if converted(check, f"{name} {target} --external-data", r, out):
        check("external data" in r.stdout, f"{name} {target} --external-data: the CLI did not say it wrote {out}.data")
        check_pair(crx, work, check, f"{name} {target} --external-data", out, feeds, ref, bound)

    # Input with external data, as onnx saves it: the weights in a side file with another name,
    # and the model converted from another working directory (the side file is found next to it).
    ext_dir = os.path.abspath(os.path.join(folder, "input"))
    os.makedirs(ext_dir, exist_ok=True)
    ext_in = os.path.join(ext_dir, "model.onnx")
    onnx.save_model(onnx.load(path), ext_in, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=MIN_EXTERNAL_BYTES)
    check(inline_initializer_bytes(ext_in)[1] > 0, f"{name}: onnx saved no external data (the case tests nothing)")
    label = f"{name} with external data in, {target} out"
    one_file = os.path.join(folder, f"{name}.from_external.{target}.onnx")
    r = subprocess.run([os.path.abspath(crx), "convert", ext_in, os.path.abspath(one_file), "--to", target],
                       capture_output=True, text=True, cwd=ROOT)
    if converted(check, label, r, one_file):
        check(inline_initializer_bytes(one_file)[1] == 0, f"{label}: the output still refers to external data")
        line = f"  {label}: one file of {os.path.getsize(one_file)} bytes"
        for k, (want, got) in enumerate(zip(ref, ort_run(one_file, feeds))):
            rel, cos = agreement(want, got)
            line += f" | out{k} ort: rel {rel:.2e} cos {cos:.6f}"
            check(rel <= bound[0] and cos >= bound[1], f"{label} ort: output {k} rel {rel:.2e} cos {cos:.6f}")
        for k, (want, got) in enumerate(zip(ref, crx_run(crx, one_file, feeds, os.path.join(work, "run")))):
            rel, cos = agreement(want, got)
            line += f" | out{k} crx580: rel {rel:.2e} cos {cos:.6f}"
            check(rel <= bound[0] and cos >= bound[1], f"{label} crx580: output {k} rel {rel:.2e} cos {cos:.6f}")
        print(line)
    pair = os.path.join(folder, f"{name}.external_both.{target}.onnx")
    r = subprocess.run([crx, "convert", ext_in, pair, "--to", target, "--external-data"], capture_output=True, text=True)
    if converted(check, f"{label} --external-data", r, pair):
        check_pair(crx, work, check, f"{label} --external-data", pair, feeds, ref, bound)


def run_all(crx, zoo, work, check):
    _, _, xte, _ = digits_split()
    digits = os.path.join(ROOT, "examples", "digits", "digits.onnx")
    for target, bound in (("copy", (COPY_MAX_REL, 1 - 1e-9)), ("fp16", (FP16_MAX_REL, FP16_MIN_COS))):
        run_case(crx, work, check, "digits", digits, {"image": xte[:64]}, target, bound)
    if zoo:
        path = os.path.join(zoo, "mobilenet_v2", "model.onnx")
        t = onnx.TensorProto()
        with open(os.path.join(zoo, "mobilenet_v2", "test_data_set_0", "input_0.pb"), "rb") as f:
            t.ParseFromString(f.read())
        name = onnx.load(path, load_external_data=False).graph.input[0].name
        run_case(crx, work, check, "mobilenet_v2", path, {name: numpy_helper.to_array(t)}, "fp16",
                 (FP16_MAX_REL, FP16_MIN_COS))
