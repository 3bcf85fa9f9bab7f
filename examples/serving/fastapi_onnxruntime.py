"""The server people run today, for comparison: FastAPI + uvicorn + onnxruntime serving one model
with the endpoints of `crx580 serve` that benches/serve_load.py drives (OIP v2 JSON and binary
infer, model metadata, /predict, /health), so that both servers answer the very same requests.

    python examples/serving/fastapi_onnxruntime.py MODEL.onnx --name mlp --port 8001 [--threads 1]

Prints "serving on http://HOST:PORT" once listening (benches/serve_load.py reads it). FP32 inputs
and outputs only: it is a benchmark baseline, not a second server to maintain.
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

ORT_TYPES = {"tensor(float)": ("FP32", np.float32)}


def make_app(model_path, name, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    started = time.time()
    app = FastAPI()

    def describe(values):
        return [{"name": v.name, "datatype": ORT_TYPES[v.type][0],
                 "shape": [d if isinstance(d, int) else -1 for d in v.shape]} for v in values]

    @app.get("/health")
    def health():
        return {"status": "ok", "uptime_s": time.time() - started, "models_loaded": 1}

    @app.get(f"/v2/models/{name}")
    def metadata():
        return {"name": name, "versions": ["1"], "platform": "onnx",
                "inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}

    def run(feeds):
        for k, v in feeds.items():
            if k not in inputs:
                raise HTTPException(400, f"the model has no input named '{k}'")
        try:
            return dict(zip(outputs, session.run(None, feeds)))
        except Exception as e:  # onnxruntime's errors are the input's fault here
            raise HTTPException(400, str(e))

    # Inference runs on FastAPI's thread pool (sync handlers, run_in_threadpool), where onnxruntime
    # releases the GIL. Infer reads the raw body for the binary tensor extension.
    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request):
        raw = await request.body()
        header_length = request.headers.get("inference-header-content-length")
        header = json.loads(raw[:int(header_length)] if header_length else raw)
        binary = raw[int(header_length):] if header_length else b""
        feeds, offset = {}, 0
        for i in header["inputs"]:
            size = i.get("parameters", {}).get("binary_data_size")
            if size is not None:
                data = np.frombuffer(binary[offset:offset + size], np.float32)
                offset += size
            else:
                data = np.asarray(i["data"], np.float32)
            feeds[i["name"]] = data.reshape(i["shape"])
        results = await run_in_threadpool(run, feeds)
        wanted = {o["name"]: o.get("parameters", {}).get("binary_data", False) for o in header.get("outputs", [])}
        wanted = wanted or {n: False for n in outputs}
        answer, tail = {"model_name": name, "outputs": []}, b""
        for n, as_binary in wanted.items():
            v = results[n]
            out = {"name": n, "datatype": "FP32", "shape": list(v.shape)}
            if as_binary:
                blob = np.ascontiguousarray(v, np.float32).tobytes()
                out["parameters"] = {"binary_data_size": len(blob)}
                tail += blob
            else:
                out["data"] = v.ravel().tolist()
            answer["outputs"].append(out)
        head = json.dumps(answer).encode()
        headers = {"Inference-Header-Content-Length": str(len(head))} if tail else {}
        return Response(head + tail, media_type="application/octet-stream" if tail else "application/json",
                        headers=headers)

    @app.post("/predict")
    def predict(body: dict):
        if body.get("model") != name:
            raise HTTPException(404, f"no model '{body.get('model')}'")
        feeds = {k: np.asarray(v, np.float32) for k, v in body["inputs"].items()}
        outputs = {k: {"datatype": "FP32", "shape": list(v.shape), "data": v.tolist()} for k, v in run(feeds).items()}
        return {"model": name, "outputs": outputs}

    return app


class AnnouncingServer(uvicorn.Server):
    """Prints the address once uvicorn listens (binding itself, so that it sets TCP_NODELAY on
    connections: with a socket or fd handed in, answers took ~50 ms of Nagle and delayed ACKs)."""

    async def startup(self, sockets=None):
        await super().startup(sockets)
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        print(f"serving on http://{host}:{port}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--name", default="model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001, help="0: a free one")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()
    app = make_app(args.model, args.name, args.threads)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    AnnouncingServer(config).run()


if __name__ == "__main__":
    main()
