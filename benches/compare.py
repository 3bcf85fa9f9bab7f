#!/usr/bin/env python3
"""crx580 against onnxruntime, side by side, on the benchmark models (benches/models).

For each model and thread count it first checks that crx580's outputs match onnxruntime's on the
bench input (`crx580 run --output-dir`; rule in benches/output_check.py) and stops with a non-zero
exit if they do not. Then it times both engines in alternating rounds (crx580, ort, ort, crx580, ...;
each measurement a fresh process: `crx580 bench --json`, or benches/ort_runner.py), takes the median
of each engine's round medians, and prints latency, the ratio crx580/onnxruntime, peak RSS and load
time, with the geometric mean of the ratio per thread count and the worst model.

    .venv/bin/python benches/compare.py                          # all models, threads 1 and 2
    python benches/compare.py --quick --models vad,crnn_mv3      # a smoke (CI)
    python benches/compare.py --markdown --json target/bench.json

It builds target/release/crx580 (`cargo build --release`) unless --binary is given, and generates the
models into target/bench-models (once; again when the generator sources change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BENCHES = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHES)
sys.path.insert(0, BENCHES)
sys.path.insert(0, os.path.join(BENCHES, "models"))

from output_check import compare_output  # noqa: E402

ENGINES = ("crx580", "onnxruntime")


class BenchError(Exception):
    """A failure that ends the comparison with a message and a non-zero exit."""


def run_cmd(cmd: list[str], timeout: float) -> str:
    """Runs `cmd`; its stdout, or BenchError naming the command and its stderr."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
        raise BenchError(f"exit {p.returncode}: {shlex.join(cmd)}\n  " + "\n  ".join(tail))
    return p.stdout


def last_json_line(out: str, cmd_name: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchError(f"{cmd_name} printed no JSON line:\n{out}")


# -- setup ------------------------------------------------------------------------------------------


def ensure_binary(args) -> str:
    if args.binary:
        if not os.access(args.binary, os.X_OK):
            raise BenchError(f"--binary {args.binary} is not an executable file")
        return os.path.abspath(args.binary)
    print("building crx580 (cargo build --release) ...", flush=True)
    p = subprocess.run(["cargo", "build", "--release", "--bin", "crx580"], cwd=ROOT)
    if p.returncode != 0:
        raise BenchError("cargo build --release failed")
    return os.path.join(ROOT, "target", "release", "crx580")


def ensure_models(models_dir: str, names: list[str]) -> dict[str, dict]:
    """Generates what is missing or stale (cheap when current); returns each model's meta.json."""
    gen = os.path.join(BENCHES, "models", "gen_bench_models.py")
    p = subprocess.run([sys.executable, gen, "--out", models_dir, *names])
    if p.returncode != 0:
        raise BenchError("generating the benchmark models failed (benches/models/gen_bench_models.py)")
    metas = {}
    for n in names:
        with open(os.path.join(models_dir, n, "meta.json")) as f:
            metas[n] = json.load(f)
    return metas


def machine_info(binary: str) -> dict:
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        lscpu = dict(line.split(":", 1) for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
        lscpu = {k.strip(): v.strip() for k, v in lscpu.items()}
        flags = set(lscpu.get("Flags", "").split())
        simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                            "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "sve") if f in flags]
        info.update(cpu=lscpu.get("Model name", "?"), cpus=lscpu.get("CPU(s)", "?"),
                    threads_per_core=lscpu.get("Thread(s) per core", "?"), l2=lscpu.get("L2 cache", "?"),
                    l3=lscpu.get("L3 cache", "?"), hypervisor=lscpu.get("Hypervisor vendor", "none"),
                    simd=" ".join(simd))
    except OSError:
        info["cpu"] = platform.processor() or "?"
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError as e:
        raise BenchError(f"onnxruntime is not importable by {sys.executable}: {e}") from None
    info["crx580"] = run_cmd([binary, "--version"], 30).strip()
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True)
    info["crx580_commit"] = git.stdout.strip() or "?"
    info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


# -- measurements -----------------------------------------------------------------------------------


def model_files(models_dir: str, meta: dict) -> tuple[str, list[str]]:
    d = os.path.join(models_dir, meta["name"])
    return os.path.join(d, "model.onnx"), [os.path.join(d, f"input_{k}.npy") for k in range(len(meta["inputs"]))]


# Below this, a `crx580 run` command is mostly process start and load: time a few runs instead.
PROBE_BELOW_MS = 500


def check_outputs(binary: str, models_dir: str, meta: dict, threads: int, timeout: float) -> tuple[list[str], dict]:
    """crx580's outputs against onnxruntime's; (errors, one-run time estimates in ms per engine:
    for crx580 the whole `run` command, load included, or a short `bench` where that is quick)."""
    model, inputs = model_files(models_dir, meta)
    with tempfile.TemporaryDirectory() as tmp:
        crx_dir, ort_dir = os.path.join(tmp, "crx580"), os.path.join(tmp, "ort")
        t = time.perf_counter()
        run_cmd([binary, "run", model, *inputs, "--threads", str(threads), "--output-dir", crx_dir], timeout)
        crx_ms = (time.perf_counter() - t) * 1e3
        out = run_cmd([sys.executable, os.path.join(BENCHES, "ort_runner.py"), "outputs", model, *inputs,
                       "--threads", str(threads), "--out", ort_dir], timeout)
        ort_ms = last_json_line(out, "ort_runner.py outputs")["run_ms"]
        errors, notes = [], []
        for k, name in enumerate(meta["outputs"]):
            ref_path, got_path = os.path.join(ort_dir, f"output_{k}.npy"), os.path.join(crx_dir, f"output_{k}.npy")
            if not os.path.exists(got_path):
                errors.append(f"output {k} '{name}': crx580 wrote no {os.path.basename(got_path)}")
                continue
            err, note = compare_output(np.load(got_path), np.load(ref_path), meta["check"], name)
            if err:
                errors.append(f"output {k} '{name}': {err}")
            else:
                notes.append(f"{name} {note}")
    print(f"  check {meta['name']} threads={threads}: " + ("WRONG" if errors else "ok (" + "; ".join(notes) + ")"),
          flush=True)
    if crx_ms < PROBE_BELOW_MS and not errors:
        crx_ms = measure("crx580", binary, models_dir, meta, threads, 3, 1, timeout)["median_ms"]
    return errors, {"crx580": crx_ms, "onnxruntime": ort_ms}


def runs_for(estimate_ms: float, args) -> tuple[int, int]:
    """(runs, warmup): as many runs as fit the time budget, between --min-runs and --runs."""
    runs = int(args.budget * 1e3 / max(estimate_ms, 1e-3))
    runs = max(args.min_runs, min(args.runs, runs))
    return runs, min(args.warmup, runs)


def measure(engine: str, binary: str, models_dir: str, meta: dict, threads: int, runs: int, warmup: int,
            timeout: float) -> dict:
    model, inputs = model_files(models_dir, meta)
    if engine == "crx580":
        # The CPU backend against onnxruntime's CPU provider: `--device cpu`, so that the load time
        # does not include `auto`'s once-per-process probe for an OpenCL GPU (PoCL: ~25 ms).
        cmd = [binary, "bench", model, *inputs, "--device", "cpu", "--threads", str(threads), "--runs", str(runs),
               "--warmup", str(warmup), "--json"]
    else:
        cmd = [sys.executable, os.path.join(BENCHES, "ort_runner.py"), "time", model, *inputs,
               "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    result = last_json_line(run_cmd(cmd, timeout), engine)
    missing = [k for k in ("median_ms", "min_ms", "load_ms", "peak_rss_mb") if not isinstance(result.get(k), (int, float))]
    if missing:
        raise BenchError(f"{engine}'s JSON lacks {', '.join(missing)}: {result}\n  from {shlex.join(cmd)}")
    return result


def compare_one(binary: str, models_dir: str, meta: dict, threads: int, estimates: dict, args) -> dict:
    """Alternating rounds (ABBA order, so neither engine always runs first); medians of the rounds."""
    plan = {e: runs_for(estimates[e], args) for e in ENGINES}
    rounds = {e: [] for e in ENGINES}
    for r in range(args.rounds):
        for engine in (ENGINES if r % 2 == 0 else ENGINES[::-1]):
            runs, warmup = plan[engine]
            rounds[engine].append(measure(engine, binary, models_dir, meta, threads, runs, warmup, args.timeout))
    row = {"model": meta["name"], "threads": threads}
    for e in ENGINES:
        rs = rounds[e]
        row[e] = {
            "median_ms": statistics.median(m["median_ms"] for m in rs),
            "min_ms": min(m["min_ms"] for m in rs),
            "peak_rss_mb": statistics.median(m["peak_rss_mb"] for m in rs),
            "load_ms": statistics.median(m["load_ms"] for m in rs),
            "runs_per_round": plan[e][0], "warmup": plan[e][1], "rounds": rs,
        }
    row["ratio"] = row["crx580"]["median_ms"] / row["onnxruntime"]["median_ms"]
    c, o = row["crx580"], row["onnxruntime"]
    print(f"  {meta['name']} threads={threads}: crx580 {c['median_ms']:.2f} ms, onnxruntime {o['median_ms']:.2f} ms,"
          f" ratio {row['ratio']:.2f}", flush=True)
    return row


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for threads in sorted({r["threads"] for r in rows}):
        sel = [r for r in rows if r["threads"] == threads]
        geo = math.exp(sum(math.log(r["ratio"]) for r in sel) / len(sel))
        worst = max(sel, key=lambda r: r["ratio"])
        # Issue 13 also asks for peak RSS and load time no higher than onnxruntime's on every model.
        above = {k: [r["model"] for r in sel if r["crx580"][k] > r["onnxruntime"][k]] for k in ("peak_rss_mb", "load_ms")}
        out.append({"threads": threads, "geomean_ratio": geo, "worst_model": worst["model"],
                    "worst_ratio": worst["ratio"], "models": len(sel), "rss_above_ort": above["peak_rss_mb"],
                    "load_above_ort": above["load_ms"]})
    return out


# -- output -----------------------------------------------------------------------------------------

HEADER = ["model", "threads", "crx580 ms", "onnxruntime ms", "ratio", "crx580 RSS MB", "ort RSS MB",
          "crx580 load ms", "ort load ms"]


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [[r["model"], str(r["threads"]), f"{r['crx580']['median_ms']:.2f}", f"{r['onnxruntime']['median_ms']:.2f}",
             f"{r['ratio']:.2f}", f"{r['crx580']['peak_rss_mb']:.0f}", f"{r['onnxruntime']['peak_rss_mb']:.0f}",
             f"{r['crx580']['load_ms']:.0f}", f"{r['onnxruntime']['load_ms']:.0f}"] for r in rows]


def summary_lines(summary: list[dict]) -> list[str]:
    def models(names):
        return ", ".join(names) if names else "none"

    return [f"threads {s['threads']}: geometric mean ratio {s['geomean_ratio']:.2f} over {s['models']} models; "
            f"worst {s['worst_model']} at {s['worst_ratio']:.2f}; crx580's peak RSS above onnxruntime's: "
            f"{models(s['rss_above_ort'])}; load time above: {models(s['load_above_ort'])}" for s in summary]


def print_text(rows, summary) -> None:
    body = table_rows(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(HEADER)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print()
    print(line(HEADER))
    for b in body:
        print(line(b))
    print()
    print("\n".join(summary_lines(summary)))


def markdown(rows, summary, info, args) -> str:
    md = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    md += ["| " + " | ".join(b) + " |" for b in table_rows(rows)]
    md += [""] + [f"- {s}" for s in summary_lines(summary)]
    md += ["", f"Machine: {info.get('cpu')}, {info.get('cpus')} CPUs ({info.get('simd')}), "
               f"L2 {info.get('l2')}, L3 {info.get('l3')}, hypervisor {info.get('hypervisor')}; "
               f"load average at start {info.get('load_average')}.",
           f"Versions: {info.get('crx580')} ({info.get('crx580_commit')}), onnxruntime {info.get('onnxruntime')}, "
           f"Python {info.get('python')}. Date: {info.get('date')}.",
           f"Command: `{args.command_line}` ({args.elapsed_s:.0f} s)."]
    return "\n".join(md)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", help="comma-separated model names (default: all)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--rounds", type=int, help="alternating rounds per engine (default 3; --quick 1)")
    ap.add_argument("--runs", type=int, help="most timed runs per measurement (default 1000; --quick 20)")
    ap.add_argument("--min-runs", type=int, help="fewest timed runs per measurement (default 3; --quick 1)")
    ap.add_argument("--warmup", type=int, help="untimed runs before each measurement (default 2; --quick 1)")
    ap.add_argument("--budget", type=float,
                    help="seconds of timed runs to aim for per measurement, within --min-runs..--runs "
                         "(default 2; --quick 0.25)")
    ap.add_argument("--quick", action="store_true",
                    help="one round, a quarter second of runs (one for slow models): a smoke, not a measurement")
    ap.add_argument("--binary", help="the crx580 binary (default: build target/release/crx580)")
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "target", "bench-models"),
                    help="where the benchmark models are (generated when missing or stale)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one measurement may take (default 900)")
    ap.add_argument("--json", metavar="OUT", help="write every measurement, the summary and the machine to OUT")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    ap.add_argument("--report", metavar="JSON", help="print the table of an earlier --json OUT again; run nothing")
    args = ap.parse_args(argv)
    quick = args.quick
    for name, full, smoke in [("rounds", 3, 1), ("runs", 1000, 20), ("min_runs", 3, 1), ("warmup", 2, 1),
                              ("budget", 2.0, 0.25)]:
        if getattr(args, name) is None:
            setattr(args, name, smoke if quick else full)
    if min(args.rounds, args.runs, args.min_runs) < 1 or args.warmup < 0 or args.min_runs > args.runs \
            or not args.budget > 0:
        ap.error("--rounds, --runs and --min-runs must be at least 1, --warmup at least 0, --min-runs <= --runs, "
                 "--budget above 0")
    try:
        args.thread_list = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads {args.threads!r} is not a comma-separated list of numbers")
    if any(t < 1 for t in args.thread_list):
        ap.error("--threads: each count must be at least 1")
    from gen_bench_models import NAMES
    args.names = args.models.split(",") if args.models else list(NAMES)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; the models are {', '.join(NAMES)}")
    args.command_line = shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    return args


def report(args) -> int:
    with open(args.report) as f:
        saved = json.load(f)
    rows, info = saved["rows"], saved["machine"]
    summary = summarise(rows)
    args.command_line, args.elapsed_s = saved["command"], saved["elapsed_s"]
    print_text(rows, summary)
    if args.markdown:
        print("\n" + markdown(rows, summary, info, args))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(args)
    start = time.time()
    try:
        binary = ensure_binary(args)
        metas = ensure_models(os.path.abspath(args.models_dir), args.names)
        models_dir = os.path.abspath(args.models_dir)
        info = machine_info(binary)
        print(f"{info['crx580']} ({info['crx580_commit']}) vs onnxruntime {info['onnxruntime']} on {info.get('cpu')}, "
              f"load average {info['load_average']}", flush=True)
        # Correctness first: nothing is timed until every model's outputs match.
        estimates, failures = {}, []
        for name in args.names:
            for threads in args.thread_list:
                errors, estimates[name, threads] = check_outputs(binary, models_dir, metas[name], threads, args.timeout)
                failures += [f"{name} (threads {threads}): {e}" for e in errors]
        if failures:
            raise BenchError("crx580's outputs do not match onnxruntime's, so nothing was timed:\n  "
                             + "\n  ".join(failures))
        rows = [compare_one(binary, models_dir, metas[name], threads, estimates[name, threads], args)
                for name in args.names for threads in args.thread_list]
    except BenchError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 1
    summary = summarise(rows)
    args.elapsed_s = time.time() - start
    print_text(rows, summary)
    print(f"\n{len(rows)} comparisons in {args.elapsed_s:.0f} s")
    if args.markdown:
        print("\n" + markdown(rows, summary, info, args))
    if args.json:
        settings = {k: getattr(args, k) for k in ("rounds", "runs", "min_runs", "warmup", "budget", "quick")}
        with open(args.json, "w") as f:
            json.dump({"machine": info, "settings": settings, "command": args.command_line,
                       "elapsed_s": args.elapsed_s, "rows": rows, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
