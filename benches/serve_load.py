"""A bounded load test of `crx580 serve` on loopback, and the server's overhead per request.

Starts the server on the golden MLP (tests/models/golden/mlp), then runs CLIENTS threads, each on
one kept-alive connection, for SECONDS: a mixed workload of v2 JSON infer, v2 binary infer,
/predict, metadata and /health. Prints requests/s, p50/p99 latency per kind and the error count
(any non-200 is an error), and the time of a direct library run of the same input
(`crx580 bench`), so that the difference is the HTTP, JSON and queueing overhead.

With --compare-fastapi it also starts examples/serving/fastapi_onnxruntime.py (FastAPI + uvicorn +
onnxruntime, one intra-op thread) on the same model and drives both with the same requests,
alternating the two in ROUNDS rounds of SECONDS each (so that a machine shared with other work
loads both alike), and times onnxruntime's direct run of the same input as its library baseline.

With --client wrk the same mix is sent by wrk (Debian `wrk`, a C load generator: the Python
client threads share the GIL and the cores with the servers and cap the rate), cycling through the
five requests; wrk reports latency over all of them together.

Usage: python benches/serve_load.py [--bin target/release/crx580] [--clients 4] [--seconds 10]
           [--compare-fastapi --rounds 3] [--client python|wrk]
Standard library only (plus numpy; onnxruntime, FastAPI and uvicorn for the comparison), so it runs
from the test venv.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "tests", "models", "golden", "mlp", "model.onnx")


JSON = {"Content-Type": "application/json"}


def requests_for(rows):
    x = [[random.uniform(-1, 1) for _ in range(16)] for _ in range(rows)]
    flat = [v for r in x for v in r]
    v2_json = json.dumps({"inputs": [{"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": flat}]})
    header = json.dumps({"inputs": [{"name": "x", "shape": [rows, 16], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * len(flat)}}],
                         "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]})
    binary = header.encode() + struct.pack(f"<{len(flat)}f", *flat)
    predict = json.dumps({"model": "mlp", "inputs": {"x": x}})
    return [
        ("v2_json", "POST", "/v2/models/mlp/infer", v2_json.encode(), JSON),
        ("v2_binary", "POST", "/v2/models/mlp/infer", binary, {"Inference-Header-Content-Length": str(len(header))}),
        ("predict", "POST", "/predict", predict.encode(), JSON),
        ("metadata", "GET", "/v2/models/mlp", None, {}),
        ("health", "GET", "/health", None, {}),
    ]


def client(host, port, until, mix, results):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    while time.perf_counter() < until:
        kind, method, path, body, headers = random.choice(mix)
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        results.append((kind, time.perf_counter() - start, r.status))
    conn.close()


def start(command):
    """Starts a server that prints its http://HOST:PORT address on its first line."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"{command[0]} did not start: {line!r}")
    host, port = line.strip().rsplit("http://", 1)[1].rsplit(":", 1)
    return proc, (host, int(port))


def load(address, seconds, clients, mix):
    """Runs the clients against one server; returns [(kind, seconds, status)] and the elapsed time."""
    results = []
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(*address, until, mix, results)) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def lua_string(data):
    """A Lua string literal of any bytes."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'\\"' else f"\\{b:03d}" for b in data) + '"'


def wrk_load(address, seconds, clients, mix, script_dir):
    """Runs wrk against one server; returns its requests, errors, requests/s and p50/p99 in ms."""
    # Formatted in init, once wrk knows the Host header (at load time requests would lack it).
    lines = ["local requests", "init = function(args)", "requests = {"]
    for _, method, path, body, headers in mix:
        header_table = ", ".join(f"[{lua_string(k.encode())}] = {lua_string(v.encode())}" for k, v in headers.items())
        lines.append(f"  wrk.format({lua_string(method.encode())}, {lua_string(path.encode())}, {{{header_table}}}, "
                     f"{lua_string(body) if body else 'nil'}),")
    lines += ["}", "end", "local i = 0", "request = function() i = i % #requests + 1; return requests[i] end"]
    script = os.path.join(script_dir, "mix.lua")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds}s", "--latency", "-s", script,
                          f"http://{address[0]}:{address[1]}/"], capture_output=True, text=True, check=True).stdout

    def ms(text):
        value, unit = re.match(r"([0-9.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"requests": requests, "errors": errors, "rate": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
            "p50": ms(re.search(r"\s50%\s+(\S+)", out).group(1)), "p99": ms(re.search(r"\s99%\s+(\S+)", out).group(1))}


def same_answers(addresses, rows):
    """Both servers give the same probabilities for one /predict (they serve the same model)."""
    x = [[random.uniform(-1, 1) for _ in range(16)] for _ in range(rows)]
    answers = []
    for host, port in addresses:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("POST", "/predict", body=json.dumps({"model": "mlp", "inputs": {"x": x}}), headers=JSON)
        r = conn.getresponse()
        assert r.status == 200, (host, port, r.status)
        answers.append(json.loads(r.read())["outputs"]["probs"]["data"])
    flat = [[v for row in a for v in row] for a in answers]
    worst = max(abs(a - b) for a, b in zip(*flat))
    assert worst < 1e-5, f"crx580 and onnxruntime differ by {worst}"


def onnxruntime_direct_p50(rows, runs=2000):
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(MLP, options, providers=["CPUExecutionProvider"])
    x = {"x": np.random.default_rng(0).standard_normal((rows, 16)).astype(np.float32)}
    times = []
    for _ in range(runs):
        start_ = time.perf_counter()
        session.run(None, x)
        times.append(time.perf_counter() - start_)
    return statistics.median(times) * 1e3


def report(name, results, elapsed, clients):
    errors = sum(1 for _, _, s in results if s != 200)
    print(f"\n{name}: {len(results)} requests in {elapsed:.1f} s with {clients} clients: "
          f"{len(results) / elapsed:.0f} requests/s, errors {errors}")
    print("| kind | requests | p50 ms | p99 ms |\n|---|---|---|---|")
    for kind in ["v2_json", "v2_binary", "predict", "metadata", "health"]:
        lat = [d * 1e3 for k, d, _ in results if k == kind]
        if lat:
            print(f"| {kind} | {len(lat)} | {percentile(lat, 50):.3f} | {percentile(lat, 99):.3f} |")
    return errors


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "crx580"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10, help="per server and round")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare-fastapi", action="store_true")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--client", choices=["python", "wrk"], default="python")
    args = ap.parse_args()
    servers = {"crx580": start([args.bin, "serve", "--port", "0", "--model", f"mlp={MLP}", "--threads", "1",
                                "--workers", str(args.workers)])}
    script_dir = tempfile.mkdtemp(prefix="crx580-load-")
    try:
        if args.compare_fastapi:
            servers["fastapi+onnxruntime"] = start(
                [sys.executable, os.path.join(ROOT, "examples", "serving", "fastapi_onnxruntime.py"), MLP,
                 "--name", "mlp", "--port", "0", "--threads", "1"])
            same_answers([address for _, address in servers.values()], args.rows)
        mix = requests_for(args.rows)
        results = {name: [] for name in servers}
        names = list(servers)
        for r in range(args.rounds):
            # Alternate which server goes first, so that neither always follows the same one.
            for name in (names if r % 2 == 0 else names[::-1]):
                if args.client == "wrk":
                    results[name].append(wrk_load(servers[name][1], int(args.seconds), args.clients, mix, script_dir))
                else:
                    results[name].append(load(servers[name][1], args.seconds, args.clients, mix))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(script_dir, ignore_errors=True)
    errors = 0
    for name, rounds in results.items():
        if args.client == "wrk":
            errors += sum(r["errors"] for r in rounds)
            print(f"\n{name} (wrk, {args.clients} connections), per round: requests/s "
                  + ", ".join(f"{r['rate']:.0f}" for r in rounds) + "; p50 ms "
                  + ", ".join(f"{r['p50']:.3f}" for r in rounds) + "; p99 ms "
                  + ", ".join(f"{r['p99']:.3f}" for r in rounds)
                  + f"; errors {sum(r['errors'] for r in rounds)} of {sum(r['requests'] for r in rounds)}")
        else:
            got = [x for r, _ in rounds for x in r]
            errors += report(name, got, sum(e for _, e in rounds), args.clients)
    bench = subprocess.run([args.bin, "bench", MLP, "--shape", f"x={args.rows}x16", "--runs", "2000",
                            "--threads", "1", "--json"], capture_output=True, text=True, check=True)
    direct = json.loads(bench.stdout)
    print(f"\ndirect library run, same shape: crx580 (crx580 bench, 1 thread) p50 {direct['p50_ms']:.4f} ms")
    if args.compare_fastapi:
        print(f"direct library run, same shape: onnxruntime (1 thread) p50 {onnxruntime_direct_p50(args.rows):.4f} ms")
    if errors:
        raise SystemExit(f"{errors} requests failed")


if __name__ == "__main__":
    main()
