#!/usr/bin/env python3
"""`crx580 convert --to fp16 --calibrate` on the zoo's DBNet, scored on held-out images: the 4
calibration and 2 held-out structured images of benches/convert_compare.py, against onnxruntime on
the float32 model, with the converted model run by onnxruntime, by crx580 as written
(--f16-as-written) and by crx580's CPU path (float16 regions widened to f32).

    .venv/bin/python benches/fp16_dbnet_heldout.py --crx580 target/release/crx580 [--zoo target/model-zoo]
        [-- extra convert arguments, e.g. --tolerance 5e-3]
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "convert"))
from runs import agreement, crx_run, ort_run  # noqa: E402
from static_checks import structured_images, write_batches  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crx580", required=True)
    ap.add_argument("--zoo", default=os.path.join(ROOT, "target", "model-zoo"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "fp16-dbnet"))
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    src = os.path.join(a.zoo, "dbnet_mv3", "model.onnx")
    imgs = structured_images(6, 256, 256, seed=3)  # as convert_compare.py makes them
    calib = os.path.join(a.out, "calib")
    os.makedirs(a.out, exist_ok=True)
    write_batches(calib, [imgs[k:k + 1] for k in range(4)])
    held = {"x": imgs[4:]}
    want = ort_run(src, held)[0]
    out = os.path.join(a.out, "dbnet.fp16auto.onnx")
    t = time.time()
    r = subprocess.run([a.crx580, "convert", src, out, "--to", "fp16", "--calibrate", calib, *a.extra],
                       capture_output=True, text=True, check=True)
    print(next(line for line in r.stdout.splitlines() if line.startswith("fp16 auto:")))
    print(f"convert {time.time() - t:.0f} s, size {100 * os.path.getsize(out) / os.path.getsize(src):.1f}%")
    run = os.path.join(a.out, "run")
    for engine, got in (("onnxruntime", ort_run(out, held)[0]),
                        ("crx580 as written", crx_run(a.crx580, out, held, run, ["--f16-as-written"])[0]),
                        ("crx580 CPU (widened)", crx_run(a.crx580, out, held, run)[0])):
        print(f"held-out, {engine}: rel %.3e cos %.6f" % agreement(want, got))


if __name__ == "__main__":
    main()
