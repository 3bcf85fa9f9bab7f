"""`crx580 convert` side by side with the Python tools people use today, on the same models and data.

For each model, the float32 original and every conversion get one row: file size against the
original, latency in crx580 (`crx580 bench`, 1 thread, CPU) and in onnxruntime (1 thread), and
agreement with the float32 model as onnxruntime runs it, on held-out inputs, through both engines:
cosine over the first float output and its largest error relative to the reference's largest value,
plus top-1 agreement for classifiers and accuracy for the digits demo (which has labels). The
conversions:

- fp16: `crx580 convert --to fp16` (default rules), the same with `--calibrate` (float32 islands
  chosen on the calibration batches), onnxconverter-common's `float16.convert_float_to_float16`
  (keep_io_types=True, so that both take float32 inputs) and, where it finishes in reasonable time,
  its `auto_mixed_precision.auto_convert_mixed_precision` on the same batches (rtol 1e-2);
  the conversion time of the automatic ones is shown too.
- int8-dynamic: `crx580 convert --to int8-dynamic` against onnxruntime's `quantize_dynamic` with its
  defaults (QInt8 weights; it also rewrites Conv into ConvInteger and LSTM into com.microsoft
  DynamicQuantizeLSTM, which crx580 runs too).
- int8-static: `crx580 convert --to int8-static` (MinMax, per tensor and per channel) against
  onnxruntime's `quantize_static` with the same settings and batches.

Models: the digits demo (scikit-learn's held-out split), the zoo's MobileNetV2 classifier and DBNet
text detector on synthetic-but-structured images (tests/convert/static_checks.py), the CRNN
recogniser (two LSTMs) and MiniLM (MatMul-heavy). A conversion that fails or writes a model
onnxruntime rejects gets a row saying so.

Usage: .venv/bin/python benches/convert_compare.py --crx580 target/release/crx580 [--zoo DIR]
       [--models digits,mobilenet_v2,...] [--out DIR]
The venv needs onnxconverter-common (tests/requirements.txt). Prints a markdown table per model.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "convert"))
from runs import agreement, crx_run, ort_run, top1  # noqa: E402 - the convert tests' helpers
from static_checks import digits_split, ort_latency_ms, ort_quantize, structured_images, write_batches  # noqa: E402

# onnxconverter-common's auto mode converts, runs and checks once per step of its search; past this
# many nodes it takes minutes on this machine, and the row says it was skipped.
OCC_AUTO_MAX_NODES = 120
OCC_AUTO_MAX_SECONDS = 600


def tokens(n, seq, seed):
    """MiniLM inputs: token ids, an all-ones attention mask, zero token types."""
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(100, 5000, (n, seq), dtype=np.int64),
            "attention_mask": np.ones((n, seq), np.int64), "token_type_ids": np.zeros((n, seq), np.int64)}


def cases(zoo):
    """(name, model path, calibration feeds, evaluation feeds, labels or None, is classifier)."""
    xtr, _, xte, yte = digits_split()
    yield ("digits", os.path.join(ROOT, "examples", "digits", "digits.onnx"),
           [{"image": xtr[k:k + 32]} for k in range(0, 256, 32)], [{"image": xte}], yte, True)
    if not zoo:
        return
    imgs = structured_images(12, 224, 224, seed=2)
    yield ("mobilenet_v2", os.path.join(zoo, "mobilenet_v2", "model.onnx"),
           [{"input": imgs[k:k + 2]} for k in range(0, 8, 2)], [{"input": imgs[8:]}], None, True)
    imgs = structured_images(6, 256, 256, seed=3)
    yield ("dbnet_mv3", os.path.join(zoo, "dbnet_mv3", "model.onnx"),
           [{"x": imgs[k:k + 1]} for k in range(4)], [{"x": imgs[4:]}], None, False)
    imgs = structured_images(12, 32, 320, seed=4)
    yield ("crnn_mv3", os.path.join(zoo, "crnn_mv3", "model.onnx"),
           [{"x": imgs[k:k + 2]} for k in range(0, 8, 2)], [{"x": imgs[8:]}], None, False)
    yield ("minilm_l6", os.path.join(zoo, "minilm_l6", "model.onnx"),
           [tokens(2, 32, s) for s in range(4)], [tokens(4, 32, 9)], None, False)


def write_feeds(folder, feeds):
    """Calibration batches as crx580 reads them: a file per batch, or a directory per batch."""
    if len(feeds[0]) == 1:
        write_batches(folder, [next(iter(f.values())) for f in feeds])
        return
    for k, f in enumerate(feeds):
        os.makedirs(os.path.join(folder, f"batch_{k:03}"), exist_ok=True)
        for name, x in f.items():
            np.save(os.path.join(folder, f"batch_{k:03}", f"{name}.npy"), x)


def crx_latency_ms(crx, path, feed, work):
    args = [crx, "bench", path, "--threads", "1", "--device", "cpu", "--runs", "20", "--warmup", "2", "--json"]
    for name, x in feed.items():
        f = os.path.join(work, f"bench_{name}.npy")
        np.save(f, x)
        args.append(f"{name}={f}")
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]


def first_float(outputs):
    return next(k for k, o in enumerate(outputs) if np.issubdtype(o.dtype, np.floating))


def measure(crx, work, original, path, evals, labels, classifier):
    """The row's numbers for model `path`: size, latencies, agreement through both engines."""
    row = {"size": 100 * os.path.getsize(path) / os.path.getsize(original)}
    refs = [ort_run(original, f) for f in evals]
    k = first_float(refs[0])
    want = np.concatenate([r[k].reshape(len(r[k]), -1) for r in refs])
    runs = {}
    # Latency on one sample (batch 1), as an application serving requests would run it.
    one = {name: x[:1] for name, x in evals[0].items()}
    try:
        runs["ort"] = [ort_run(path, f)[k] for f in evals]
        row["ort_ms"] = ort_latency_ms(path, one, runs=20)
    except Exception as e:  # noqa: BLE001 - their model may not run: the row says so
        row["ort_error"] = str(e).splitlines()[0][:100]
    try:
        runs["crx580"] = [crx_run(crx, path, f, os.path.join(work, "run"))[k] for f in evals]
        row["crx_ms"] = crx_latency_ms(crx, path, one, work)
    except subprocess.CalledProcessError as e:
        row["crx580_error"] = (e.stderr or b"").decode().strip().splitlines()[-1][:100]
    for engine, outs in runs.items():
        have = np.concatenate([o.reshape(len(o), -1) for o in outs]).astype(np.float64)
        rel, cos = agreement(want, have)
        row[f"{engine}_cos"], row[f"{engine}_rel"] = cos, rel
        if classifier:
            row[f"{engine}_top1"] = top1(want, have)
        if labels is not None:
            row[f"{engine}_acc"] = float(np.mean(have.argmax(1) == labels))
    if labels is not None:
        row["float_acc"] = float(np.mean(want.argmax(1) == labels))
    return row


def crx_convert(crx, src, dst, *args):
    t = time.perf_counter()
    r = subprocess.run([crx, "convert", src, dst, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    return time.perf_counter() - t


def conversions(crx, name, path, calib, calib_dir, work):
    """(method, tool, function writing the converted model to `out` and returning its seconds)."""
    from onnxconverter_common import auto_mixed_precision, float16

    def occ_fp16(out):
        t = time.perf_counter()
        onnx.save(float16.convert_float_to_float16(onnx.load(path), keep_io_types=True), out)
        return time.perf_counter() - t

    def occ_auto(out):
        model = onnx.load(path)
        if len(model.graph.node) > OCC_AUTO_MAX_NODES:
            raise RuntimeError(f"skipped: {len(model.graph.node)} nodes (takes minutes per model)")
        def give_up(*_):
            raise TimeoutError(f"gave up after {OCC_AUTO_MAX_SECONDS} s")

        t = time.perf_counter()
        signal.signal(signal.SIGALRM, give_up)
        signal.alarm(OCC_AUTO_MAX_SECONDS)
        try:
            fp16 = auto_mixed_precision.auto_convert_mixed_precision(model, calib[0], rtol=1e-2, atol=1e-3,
                                                                     keep_io_types=True)
        finally:
            signal.alarm(0)
        onnx.save(fp16, out)
        return time.perf_counter() - t

    def ort_dynamic(out):
        t = time.perf_counter()
        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        return time.perf_counter() - t

    def ort_static(per_channel):
        def run(out):
            if len(calib[0]) != 1:
                raise RuntimeError("not run: several inputs")
            t = time.perf_counter()
            got, why = ort_quantize(path, out, next(iter(calib[0])), [next(iter(f.values())) for f in calib],
                                    per_channel, "minmax")
            if got is None:
                raise RuntimeError(why)
            return time.perf_counter() - t
        return run

    yield "fp16", "crx580", lambda out: crx_convert(crx, path, out, "--to", "fp16")
    yield "fp16 auto", "crx580", lambda out: crx_convert(crx, path, out, "--to", "fp16", "--calibrate", calib_dir)
    yield "fp16", "onnxconverter-common", occ_fp16
    yield "fp16 auto", "onnxconverter-common", occ_auto
    yield "int8-dynamic", "crx580", lambda out: crx_convert(crx, path, out, "--to", "int8-dynamic")
    yield "int8-dynamic", "ort quantize_dynamic", ort_dynamic
    if name != "minilm_l6":
        for pc in (False, True):
            extra = ["--per-channel"] if pc else []
            method = "int8-static" + (" per-channel" if pc else "")
            yield method, "crx580", lambda out, e=extra: crx_convert(crx, path, out, "--to", "int8-static",
                                                                     "--calibrate", calib_dir, *e)
            yield method, "ort quantize_static", ort_static(pc)


def fmt_row(method, tool, secs, row):
    def num(key, f):
        return f.format(row[key]) if row.get(key) is not None else "-"

    def agree(engine):
        if f"{engine}_error" in row:
            return f"fails: {row[f'{engine}_error']}"
        if f"{engine}_cos" not in row:
            return "-"
        s = f"cos {row[f'{engine}_cos']:.5f}, rel {row[f'{engine}_rel']:.1e}"
        if row.get(f"{engine}_top1") is not None:
            s += f", top-1 {100 * row[f'{engine}_top1']:.1f}%"
        if row.get(f"{engine}_acc") is not None:
            s += f", acc {100 * row[f'{engine}_acc']:.1f}%"
        return s

    secs = f"{secs:.1f}" if secs is not None else "-"
    return (f"| {method} | {tool} | {secs} | {num('size', '{:.1f}%')} | {num('crx_ms', '{:.2f}')} | "
            f"{num('ort_ms', '{:.2f}')} | {agree('crx580')} | {agree('ort')} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crx580", required=True)
    ap.add_argument("--zoo", help="the generated model zoo (tests/run.sh makes it)")
    ap.add_argument("--models", help="comma-separated subset of digits,mobilenet_v2,dbnet_mv3,crnn_mv3,minilm_l6")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "convert-compare"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    wanted = set(args.models.split(",")) if args.models else None
    for name, path, calib, evals, labels, classifier in cases(args.zoo):
        if wanted and name not in wanted:
            continue
        work = os.path.join(args.out, name)
        os.makedirs(os.path.join(work, "run"), exist_ok=True)
        calib_dir = os.path.join(work, "calib")
        write_feeds(calib_dir, calib)
        print(f"\n### {name} ({len(onnx.load(path).graph.node)} nodes, {os.path.getsize(path) / 1e6:.2f} MB)\n")
        print("| conversion | tool | convert s | size | crx580 ms | ORT ms | agreement, crx580 runs it | "
              "agreement, ORT runs it |")
        print("|---|---|---|---|---|---|---|---|")
        base = measure(args.crx580, work, path, path, evals, labels, classifier)
        print(fmt_row("float32", "original", None, base), flush=True)
        for method, tool, convert in conversions(args.crx580, name, path, calib, calib_dir, work):
            out = os.path.join(work, f"{method.replace(' ', '_')}.{tool.split()[0]}.onnx")
            try:
                secs = convert(out)
                onnx.checker.check_model(onnx.load(out))
            except Exception as e:  # noqa: BLE001 - a tool's failure is a row, not the end
                print(f"| {method} | {tool} | - | no model: {str(e).splitlines()[0][:120]} | | | | |", flush=True)
                continue
            print(fmt_row(method, tool, secs, measure(args.crx580, work, path, out, evals, labels, classifier)),
                  flush=True)


if __name__ == "__main__":
    main()
