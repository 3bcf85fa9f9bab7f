#!/usr/bin/env python3
"""`crx580 convert --to fp16` on a zoo detector, scored on held-out images: synthetic-but-structured
images (tests/convert/static_checks.py; the first 4 are the calibration images of
benches/convert_compare.py, the rest held out), against onnxruntime on the float32 model, with the
converted model run by onnxruntime, by crx580 as written (--f16-as-written) and by crx580's CPU
path (float16 regions widened to f32). Each image runs alone (batch 1); "rel" is the max |error|
over the held-out set divided by the largest |float output| in it, "worst image" the largest
such ratio of one image. Integer outputs (YOLO's class ids) report the share of equal values.

    .venv/bin/python benches/fp16_heldout.py --crx580 target/release/crx580 [--zoo target/model-zoo]
        [--model dbnet_mv3|yolov8n|...] [--held-out N] [--default-rules] [-- extra convert arguments]

DBNet takes the images ImageNet-normalised at 256x256 and is converted with --calibrate on the 4
calibration images; YOLO (--model yolov8n --size 640 --unit-range --default-rules) takes them in
[0, 1] and is converted with the default rules alone.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "convert"))
from runs import crx_run, ort_run  # noqa: E402
from static_checks import structured_images, write_batches  # noqa: E402

CALIBRATION = 4
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crx580", required=True)
    ap.add_argument("--zoo", default=os.path.join(ROOT, "target", "model-zoo"))
    ap.add_argument("--model", default="dbnet_mv3")
    ap.add_argument("--size", type=int, default=256, help="image height and width")
    ap.add_argument("--unit-range", action="store_true", help="feed images in [0, 1] instead of ImageNet-normalised")
    ap.add_argument("--held-out", type=int, default=2, help="held-out images")
    ap.add_argument("--default-rules", action="store_true", help="convert without --calibrate")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "fp16-heldout"))
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    src = os.path.join(a.zoo, a.model, "model.onnx")
    imgs = structured_images(CALIBRATION + a.held_out, a.size, a.size, seed=3)  # as convert_compare.py makes them
    if a.unit_range:
        imgs = (imgs * STD[:, None, None] + MEAN[:, None, None]).astype(np.float32)
    import onnx
    name = onnx.load(src, load_external_data=False).graph.input[0].name
    os.makedirs(a.out, exist_ok=True)
    calibrate = []
    if not a.default_rules:
        calib = os.path.join(a.out, "calib")
        write_batches(calib, [imgs[k:k + 1] for k in range(CALIBRATION)])
        calibrate = ["--calibrate", calib]
    held = [{name: imgs[k:k + 1]} for k in range(CALIBRATION, len(imgs))]
    wants = [ort_run(src, feeds) for feeds in held]
    out = os.path.join(a.out, f"{a.model}.fp16.onnx")
    t = time.time()
    r = subprocess.run([a.crx580, "convert", src, out, "--to", "fp16", *calibrate, *a.extra],
                       capture_output=True, text=True, check=True)
    for line in r.stdout.splitlines():
        if line.startswith("fp16 auto:") or " nodes converted" in line:
            print(line)
    print(f"convert {time.time() - t:.0f} s, size {100 * os.path.getsize(out) / os.path.getsize(src):.1f}%")
    run = os.path.join(a.out, "run")
    engines = (("onnxruntime", lambda f: ort_run(out, f)),
               ("crx580 as written", lambda f: crx_run(a.crx580, out, f, run, ["--f16-as-written"])),
               ("crx580 CPU (widened)", lambda f: crx_run(a.crx580, out, f, run)))
    for engine, go in engines:
        gots = [go(feeds) for feeds in held]
        line = f"held-out ({a.held_out} images), {engine}:"
        for k in range(len(wants[0])):
            want = [w[k] for w in wants]
            got = [g[k] for g in gots]
            if not np.issubdtype(want[0].dtype, np.floating):
                same = np.mean(np.concatenate([(w == g).ravel() for w, g in zip(want, got)]))
                line += f" | out{k}: {100 * same:.2f}% equal"
                continue
            want, got = [w.astype(np.float64).ravel() for w in want], [g.astype(np.float64).ravel() for g in got]
            err = [np.abs(w - g).max() for w, g in zip(want, got)]
            scale = [np.abs(w).max() for w in want]
            worst = max(e / s for e, s in zip(err, scale))
            dot = sum(w @ g for w, g in zip(want, got))
            norms = (sum(w @ w for w in want) * sum(g @ g for g in got)) ** 0.5
            line += f" | out{k}: rel {max(err) / max(scale):.3e} worst image {worst:.3e} cos {dot / norms:.6f}"
        print(line)


if __name__ == "__main__":
    main()
