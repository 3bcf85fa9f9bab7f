"""`crx580 serve` against the protocol's public clients and validators.

- tritonclient[http] (the Open Inference Protocol's Python client): server and model metadata,
  JSON and binary inference checked against onnxruntime on the same model file, errors, the
  repository extension (index, load, unload);
- openapi-spec-validator on GET /openapi.json;
- prometheus_client's text parser on GET /metrics;
- headless Chromium (Debian `chromium`) on the status page at GET /: it renders the models and
  figures from GET /stats, and logs no console error (a page with a deliberate error shows the check
  can see one);
- schemathesis on GET /openapi.json against a live server: a bounded property-based run (every
  operation, positive and negative examples, stateful links) in which every answer must be non-5xx
  and conform to the document (status, content type, headers, body schema);
- the Grafana dashboard (examples/serving/grafana-dashboard.json): every metric it queries is in a
  live scrape, and every query is valid PromQL (`promtool check rules`, Debian `prometheus`).

Chromium and promtool are required: missing, the test fails and says what to install.

Usage: python tests/serve/test_serve.py PATH/TO/crx580   (tests/run.sh runs it)
Exits non-zero on the first failure; every check can fail.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from openapi_spec_validator import validate as validate_openapi
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "models", "golden")
MLP = os.path.join(GOLDEN, "mlp", "model.onnx")
PASSTHROUGH = os.path.join(GOLDEN, "int64_passthrough", "model.onnx")
DASHBOARD = os.path.join(ROOT, "examples", "serving", "grafana-dashboard.json")


def require(tool, package):
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"tests/serve/test_serve.py: needs {tool}: apt-get install {package} (.ci/run installs it)")
    return path


def start_server(binary, models_dir):
    proc = subprocess.Popen(
        [binary, "serve", "--port", "0", "--model", f"mlp={MLP}", "--models-dir", models_dir,
         "--max-batch", "8", "--batch-delay-ms", "2", "--threads", "1"],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.strip().rsplit("http://", 1)[1]


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def check_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "crx580" and "binary_tensor_data" in meta["extensions"], meta
    model = client.get_model_metadata("mlp")
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}], model
    assert model["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}], model
    assert client.is_model_ready("mlp") and not client.is_model_ready("nope")


def infer_mlp(client, x, binary):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probs", binary_data=binary)
    result = client.infer("mlp", [inp], outputs=[out], request_id="42")
    assert result.get_response()["id"] == "42"
    return result.as_numpy("probs")


def check_infer(client):
    reference = ort.InferenceSession(MLP, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for rows in (1, 3):
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        want = reference.run(None, {"x": x})[0]
        for binary in (False, True):
            got = infer_mlp(client, x, binary)
            assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # No outputs named: all come back, in binary (the client's default).
    inp = httpclient.InferInput("x", [2, 16], "FP32")
    x = rng.standard_normal((2, 16)).astype(np.float32)
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(client.infer("mlp", [inp]).as_numpy("probs"), reference.run(None, {"x": x})[0],
                               rtol=1e-4, atol=1e-6)
    # Errors come back as the client's exception with the server's message and a 4xx status.
    bad = httpclient.InferInput("x", [1, 15], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 15), np.float32))
    try:
        client.infer("mlp", [bad])
        raise AssertionError("a wrong shape was accepted")
    except InferenceServerException as e:
        assert e.status() == "400" and "must have shape" in e.message(), (e.status(), e.message())
    try:
        client.infer("nope", [bad])
        raise AssertionError("an unknown model was accepted")
    except InferenceServerException as e:
        assert e.status() == "404", e.status()


def check_repository(client):
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index == {"mlp": "READY", "passthrough": "UNAVAILABLE"}, index
    client.load_model("passthrough")
    assert client.is_model_ready("passthrough")
    ids = np.array([[3, -1, 7, 0, 2], [1, 1, 1, 9, 9]], dtype=np.int64)
    scores = np.array([[0.1, 0.9, 0.3, 0.9, 0.2], [5, 4, 3, 2, 1]], dtype=np.float32)
    inputs = [httpclient.InferInput("ids", [2, 5], "INT64"), httpclient.InferInput("scores", [2, 5], "FP32")]
    inputs[0].set_data_from_numpy(ids, binary_data=False)
    inputs[1].set_data_from_numpy(scores, binary_data=True)
    result = client.infer("passthrough", inputs)
    want = ort.InferenceSession(PASSTHROUGH, providers=["CPUExecutionProvider"]).run(None, {"ids": ids, "scores": scores})
    for name, w in zip(["ids_out", "argmax", "argmax_last"], want):
        got = result.as_numpy(name)
        assert got.dtype == w.dtype and np.array_equal(got, w), (name, got, w)
    client.unload_model("passthrough")
    assert not client.is_model_ready("passthrough")
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index["passthrough"] == "UNAVAILABLE", index


def check_openapi(address):
    doc = json.loads(get(f"http://{address}/openapi.json"))
    validate_openapi(doc)
    assert "/v2/models/{name}/infer" in doc["paths"]


def check_metrics(address):
    families = {f.name: f for f in text_string_to_metric_families(get(f"http://{address}/metrics").decode())}
    for name in ["crx580_requests", "crx580_request_duration_seconds", "crx580_batch_size", "crx580_in_flight_requests",
                 "crx580_queue_depth", "crx580_models_loaded", "crx580_process_resident_memory_bytes",
                 "crx580_device_memory_bytes",
                 "crx580_model_load_failures", "crx580_rate_limited"]:
        assert name in families, (name, sorted(families))
    infers = [s for s in families["crx580_requests"].samples
              if s.labels == {"endpoint": "v2_infer", "model": "mlp", "status": "200"}]
    assert infers and infers[0].value >= 5, infers
    assert families["crx580_request_duration_seconds"].type == "histogram"
    loaded = families["crx580_models_loaded"].samples[0].value
    assert loaded == 1, loaded
    assert families["crx580_process_resident_memory_bytes"].samples[0].value > 0


def headless_chromium(url):
    """The DOM after 3 s of the page's virtual time, and the console lines Chromium logged."""
    chromium = require("chromium", "chromium")
    run = subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=3000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    return run.stdout, [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def check_status_page(address):
    # The check itself first: a page with a console error and an uncaught exception is caught.
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as bad:
        bad.write("<p id=a></p><script>console.error('logged'); a.textContent = 'ran'; nosuch();</script>")
    try:
        dom, console = headless_chromium("file://" + bad.name)
    finally:
        os.unlink(bad.name)
    assert '<p id="a">ran</p>' in dom, dom
    assert any("logged" in c for c in console) and any("Uncaught ReferenceError" in c for c in console), console
    dom, console = headless_chromium(f"http://{address}/")
    assert not console, console
    assert "<tr><td>mlp</td><td>1</td><td>1</td><td>yes</td></tr>" in dom, dom
    assert re.search(r'<p id="status" class="">updated ', dom), dom
    assert re.search(r'<b id="p50">[0-9.]+ ms</b>', dom) and re.search(r'<span id="version">[0-9.]+</span>', dom), dom


def check_grafana_dashboard(address):
    dashboard = json.load(open(DASHBOARD))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 10, exprs
    scraped = {s.name for f in text_string_to_metric_families(get(f"http://{address}/metrics").decode())
               for s in f.samples}
    queried = {m for e in exprs for m in re.findall(r"\bcrx580_[a-z_]+", e)}
    missing = queried - scraped
    assert not missing, f"the dashboard queries metrics the server does not export: {sorted(missing)}"
    # Every query parses as PromQL: promtool checks them as recording rules, with Grafana's
    # variables given values.
    promtool = require("promtool", "prometheus")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    try:
        check = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    assert check.returncode == 0, check.stdout + check.stderr


def check_schemathesis(binary):
    """A server of its own (the run unloads and loads models), with both models loadable."""
    models_dir = tempfile.mkdtemp(prefix="crx580-schemathesis-")
    shutil.copy(MLP, os.path.join(models_dir, "mlp.onnx"))
    shutil.copy(PASSTHROUGH, os.path.join(models_dir, "passthrough.onnx"))
    proc, address = start_server(binary, models_dir)
    try:
        schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        run = subprocess.run(
            [schemathesis, "--no-color", "--config-file", os.path.join(ROOT, "tests", "serve", "schemathesis.toml"),
             "run", f"http://{address}/openapi.json", "--checks", "all", "--max-examples", "15", "--seed", "580",
             "--workers", "1", "--generation-database", "none", "--request-timeout", "30",
             "--report-dir", os.path.join(models_dir, "report")],
            cwd=models_dir,  # its cache (.schemathesis/) goes there, not into the work tree
            capture_output=True, text=True, timeout=240)
        assert proc.poll() is None, "the server died under schemathesis"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(models_dir, ignore_errors=True)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated", summary)
    assert cases and int(cases.group(1)) >= 200, summary
    print(f"serve: schemathesis: {cases.group(1)} generated test cases, no failure")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "crx580")
    models_dir = tempfile.mkdtemp(prefix="crx580-serve-")
    shutil.copy(PASSTHROUGH, os.path.join(models_dir, "passthrough.onnx"))
    proc, address = start_server(binary, models_dir)
    try:
        client = httpclient.InferenceServerClient(address)
        check_metadata(client)
        check_infer(client)
        check_repository(client)
        check_openapi(address)
        check_metrics(address)
        check_grafana_dashboard(address)
        check_status_page(address)
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(models_dir, ignore_errors=True)
    check_schemathesis(binary)
    print("serve: tritonclient, OpenAPI, Prometheus, Grafana, status page and schemathesis checks passed")


if __name__ == "__main__":
    main()
