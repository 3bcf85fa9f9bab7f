#!/usr/bin/env python3
"""onnxruntime's side of benches/compare.py, run in a subprocess of its own per measurement so that
its peak RSS is its own.

    ort_runner.py time MODEL INPUT.npy... --threads N --runs R --warmup W
        prints one JSON line: median_ms, p90_ms, min_ms, runs, load_ms (session creation),
        peak_rss_mb (VmHWM at the end), base_rss_mb (after imports and inputs, before the
        session: the Python interpreter's share of the peak)
    ort_runner.py outputs MODEL INPUT.npy... --threads N --out DIR
        writes output k (graph order) as DIR/output_<k>.npy and prints {"run_ms": ...}, the time
        of a second run (compare.py sizes its measurements by it)

The session is what a latency-minded user makes: all graph optimisations, intra_op_num_threads N,
inter_op 1, sequential execution. Runs go through an IOBinding with the inputs bound once, so that
Python's per-call overhead stays out of the timings as it does for crx580's Rust loop.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import onnxruntime as ort


def rss_mb() -> float:
    """The peak resident set of this process: VmHWM, as crx580's bench reports it. Not ru_maxrss:
    Linux carries that across exec, so it would include compare.py's own footprint at the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB; no /proc: best effort


def make_session(model: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def feeds_for(sess: ort.InferenceSession, inputs: list[np.ndarray]) -> dict:
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(inputs):
        sys.exit(f"ort_runner: the model takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
    return dict(zip(names, inputs))


def time_runs(args, inputs) -> dict:
    base = rss_mb()
    t0 = time.perf_counter()
    sess = make_session(args.model, args.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    binding = sess.io_binding()
    for name, value in feeds_for(sess, inputs).items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
    for o in sess.get_outputs():
        binding.bind_output(o.name)
    for _ in range(args.warmup):
        sess.run_with_iobinding(binding)
    times = []
    for _ in range(max(args.runs, 1)):
        t = time.perf_counter()
        sess.run_with_iobinding(binding)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()

    def pct(p: float) -> float:
        return times[round((len(times) - 1) * p)]

    return {"median_ms": pct(0.5), "p90_ms": pct(0.9), "min_ms": times[0], "runs": len(times),
            "load_ms": load_ms, "peak_rss_mb": rss_mb(), "base_rss_mb": base}


def write_outputs(args, inputs) -> None:
    sess = make_session(args.model, args.threads)
    feeds = feeds_for(sess, inputs)
    outs = sess.run(None, feeds)
    # The second run's time: the first one also sets up onnxruntime's buffers.
    t = time.perf_counter()
    sess.run(None, feeds)
    run_ms = (time.perf_counter() - t) * 1e3
    os.makedirs(args.out, exist_ok=True)
    for k, v in enumerate(outs):
        np.save(os.path.join(args.out, f"output_{k}.npy"), np.asarray(v))
    print(json.dumps({"run_ms": run_ms}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["time", "outputs"])
    ap.add_argument("model")
    ap.add_argument("inputs", nargs="*", help=".npy files, one per graph input in order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", help="outputs: the directory for output_<k>.npy")
    args = ap.parse_args()
    inputs = [np.load(p) for p in args.inputs]
    if args.mode == "time":
        print(json.dumps(time_runs(args, inputs)))
    else:
        if not args.out:
            ap.error("outputs needs --out DIR")
        write_outputs(args, inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
