"""A bounded load test of `crx580 serve` on loopback, and the server's overhead per request.

Starts the server on the golden MLP (tests/models/golden/mlp), then runs CLIENTS threads, each on
one kept-alive connection, for SECONDS: a mixed workload of v2 JSON infer, v2 binary infer,
/predict, metadata and /health. Prints requests/s, p50/p99 latency per kind and the error count
(any non-200 is an error), and the time of a direct library run of the same input
(`crx580 bench`), so that the difference is the HTTP, JSON and queueing overhead.

Usage: python benches/serve_load.py [--bin target/release/crx580] [--clients 4] [--seconds 10]
Standard library only (plus numpy), so it runs from the test venv.
"""

import argparse
import http.client
import json
import os
import random
import struct
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = os.path.join(ROOT, "tests", "models", "golden", "mlp", "model.onnx")


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
        ("v2_json", "POST", "/v2/models/mlp/infer", v2_json.encode(), {}),
        ("v2_binary", "POST", "/v2/models/mlp/infer", binary, {"Inference-Header-Content-Length": str(len(header))}),
        ("predict", "POST", "/predict", predict.encode(), {}),
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


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "crx580"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    proc = subprocess.Popen([args.bin, "serve", "--port", "0", "--model", f"mlp={MLP}", "--threads", "1",
                             "--workers", str(args.workers)], stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip().rsplit("http://", 1)[1]
        host, port = address.rsplit(":", 1)
        mix = requests_for(args.rows)
        results = []
        until = time.perf_counter() + args.seconds
        threads = [threading.Thread(target=client, args=(host, int(port), until, mix, results))
                   for _ in range(args.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    errors = sum(1 for _, _, s in results if s != 200)
    print(f"{len(results)} requests in {elapsed:.1f} s with {args.clients} clients: "
          f"{len(results) / elapsed:.0f} requests/s, errors {errors}")
    print("| kind | requests | p50 ms | p99 ms |\n|---|---|---|---|")
    for kind in ["v2_json", "v2_binary", "predict", "metadata", "health"]:
        lat = [d * 1e3 for k, d, _ in results if k == kind]
        if lat:
            print(f"| {kind} | {len(lat)} | {percentile(lat, 50):.3f} | {percentile(lat, 99):.3f} |")
    bench = subprocess.run([args.bin, "bench", MLP, "--shape", f"x={args.rows}x16", "--runs", "2000",
                            "--threads", "1", "--json"], capture_output=True, text=True, check=True)
    direct = json.loads(bench.stdout)
    print(f"direct library run (crx580 bench, same shape): p50 {direct['p50_ms']:.4f} ms")
    if errors:
        raise SystemExit(f"{errors} requests failed")


if __name__ == "__main__":
    main()
