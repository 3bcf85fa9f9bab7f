#!/usr/bin/env python3
"""How fast float16 models run on the CPU: the bench models converted with `crx580 convert --to
fp16`, timed in crx580 (float16 regions widened to f32, passes/widen_f16.rs; and, once, as written
with --f16-as-written, what crx580 did before) against the float32 model and onnxruntime on the
same files.

    .venv/bin/python benches/fp16_speed.py --crx580 target/release/crx580 [--models resnet50,...]
        [--rounds 3] [--runs 10] [--threads 1]

Each round times every (model, engine, file) once, alternating, so that load on a shared machine
hits all of them alike; the table gives each one's best median over the rounds, and the ratios.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crx_ms(crx, model, inputs, threads, runs, extra=()):
    args = [crx, "bench", model, *inputs, "--device", "cpu", "--threads", str(threads), "--runs", str(runs),
            "--warmup", "2", "--json", *extra]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]


def ort_ms(model, inputs, threads, runs):
    args = [sys.executable, os.path.join(ROOT, "benches", "ort_runner.py"), "time", model, *inputs,
            "--threads", str(threads), "--runs", str(runs)]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crx580", required=True)
    ap.add_argument("--models", default="resnet50,mobilenet_v2,minilm_l6")
    ap.add_argument("--bench-models", default=os.path.join(ROOT, "target", "bench-models"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "fp16-speed"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cases = []
    for name in a.models.split(","):
        folder = os.path.join(a.bench_models, name)
        f32 = os.path.join(folder, "model.onnx")
        f16 = os.path.join(a.out, f"{name}.fp16.onnx")
        subprocess.run([a.crx580, "convert", f32, f16, "--to", "fp16"], check=True, capture_output=True)
        meta = json.load(open(os.path.join(folder, "meta.json")))
        inputs = [os.path.join(folder, f"input_{k}.npy") for k in range(len(meta["inputs"]))]
        named = [f"{n}={p}" for n, p in zip(meta["inputs"], inputs)]
        cases.append((name, f32, f16, inputs, named))
    best = {}

    def keep(key, ms):
        best[key] = min(best.get(key, float("inf")), ms)

    for r in range(a.rounds):
        for name, f32, f16, inputs, named in cases:
            keep((name, "crx f32"), crx_ms(a.crx580, f32, named, a.threads, a.runs))
            keep((name, "crx fp16"), crx_ms(a.crx580, f16, named, a.threads, a.runs))
            keep((name, "ort f32"), ort_ms(f32, inputs, a.threads, a.runs))
            keep((name, "ort fp16"), ort_ms(f16, inputs, a.threads, a.runs))
            if r == 0:  # slow: reference kernels
                keep((name, "crx fp16 as written"),
                     crx_ms(a.crx580, f16, named, a.threads, 3, ["--f16-as-written"]))
            print(f"round {r}: {name} done", file=sys.stderr)
    print(f"| model | crx580 f32 ms | crx580 fp16 ms (widened) | crx580 fp16 as written ms | ORT f32 ms | ORT fp16 ms | "
          f"fp16/f32 crx580 | as written/widened | crx580/ORT on fp16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, *_ in cases:
        b = {k[1]: v for k, v in best.items() if k[0] == name}
        print(f"| {name} | {b['crx f32']:.1f} | {b['crx fp16']:.1f} | {b['crx fp16 as written']:.1f} | "
              f"{b['ort f32']:.1f} | {b['ort fp16']:.1f} | {b['crx fp16'] / b['crx f32']:.2f} | "
              f"{b['crx fp16 as written'] / b['crx fp16']:.1f} | {b['crx fp16'] / b['ort fp16']:.2f} |")


if __name__ == "__main__":
    main()
