//! The HTTP server over real sockets: the v2 and simple routes against onnxruntime's outputs for
//! the golden MLP, bad input of every kind (each a 4xx JSON answer, the server alive after),
//! slow clients, path confinement, keys and roles, rate limits, batching (each answer equal to
//! the unbatched one), deadlines, and reloading while clients predict.

use crx580::http::{ApiKeys, BatchConfig, RateLimit, Server, ServerOptions};
use crx580::{Model, Session, SessionOptions, Tensor};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MLP: &str = "tests/models/golden/mlp/model.onnx";

fn start(configure: impl FnOnce(&mut ServerOptions)) -> Server {
    let mut options = ServerOptions { addr: "127.0.0.1:0".into(), workers: 2, ..ServerOptions::default() };
    configure(&mut options);
    Server::start(options, vec![("mlp".into(), Model::load(MLP).unwrap())]).unwrap()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error message of a 4xx answer, checking that it is one with a JSON body.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/json"));
        self.json()["error"].as_str().unwrap().to_string()
    }
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes it.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_answer(&out)
}

fn parse_answer(out: &[u8]) -> Answer {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no answer: {out:?}")) + 4;
    let head = std::str::from_utf8(&out[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_string(), v.to_string())).collect();
    Answer { status, headers, body: out[end..].to_vec() }
}

fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, "GET", path, &[], b"")
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    call(addr, "POST", path, &[], body.to_string().as_bytes())
}

/// The golden MLP's input and onnxruntime's output for it.
fn golden(set: usize) -> (Tensor, Tensor) {
    let dir = Path::new("tests/models/golden/mlp").join(format!("test_data_set_{set}"));
    let read = |f: &str| crx580::io::read_tensor_file(&dir.join(f)).unwrap().0;
    (read("input_0.pb"), read("output_0.pb"))
}

fn floats(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            n => out.push(n.as_f64().unwrap() as f32),
        }
    }
    walk(v, &mut out);
    out
}

fn assert_close(got: &[f32], want: &Tensor) {
    let want = want.as_slice::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5 + 1e-3 * w.abs(), "{g} vs {w}");
    }
}

fn v2_json_request(x: &Tensor) -> Value {
    json!({ "id": "r1", "inputs": [{ "name": "x", "shape": x.shape(), "datatype": "FP32", "data": x.as_slice::<f32>().unwrap() }] })
}

#[test]
fn v2_metadata_and_readiness() {
    let server = start(|_| {});
    let addr = server.local_addr();
    assert_eq!(get(addr, "/v2").json()["extensions"], json!(["binary_tensor_data", "model_repository"]));
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    assert_eq!(get(addr, "/v2/health/ready").status, 200);
    let meta = get(addr, "/v2/models/mlp").json();
    assert_eq!(meta["inputs"], json!([{ "name": "x", "datatype": "FP32", "shape": [-1, 16] }]));
    assert_eq!(meta["outputs"], json!([{ "name": "probs", "datatype": "FP32", "shape": [-1, 10] }]));
    assert_eq!(get(addr, "/v2/models/mlp/versions/1").json(), meta);
    assert_eq!(get(addr, "/v2/models/mlp/ready").status, 200);
    assert_eq!(get(addr, "/v2/models/mlp/versions/1/ready").status, 200);
    assert!(get(addr, "/v2/models/nope").error(404).contains("no model named 'nope'"));
    assert!(get(addr, "/v2/models/mlp/versions/2").error(404).contains("only version 1"));
    assert_eq!(get(addr, "/v2/models/nope/ready").status, 404);
}

#[test]
fn v2_infer_json_and_binary_match_onnxruntime() {
    let server = start(|_| {});
    let addr = server.local_addr();
    for set in 0..2 {
        let (x, want) = golden(set);
        let a = post(addr, "/v2/models/mlp/infer", &v2_json_request(&x));
        assert_eq!(a.status, 200);
        let body = a.json();
        assert_eq!((body["id"].clone(), body["model_name"].clone()), (json!("r1"), json!("mlp")));
        assert_eq!(body["outputs"][0]["shape"], json!(want.shape()));
        assert_close(&floats(&body["outputs"][0]["data"]), &want);

        // The binary tensor extension both ways.
        let bytes: Vec<u8> = x.as_slice::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({
            "inputs": [{ "name": "x", "shape": x.shape(), "datatype": "FP32", "parameters": { "binary_data_size": bytes.len() } }],
            "outputs": [{ "name": "probs", "parameters": { "binary_data": true } }],
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(&bytes);
        let len = header.len().to_string();
        let a =
            call(addr, "POST", "/v2/models/mlp/versions/1/infer", &[("Inference-Header-Content-Length", &len)], &body);
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let n: usize = a.header("Inference-Header-Content-Length").unwrap().parse().unwrap();
        let meta: Value = serde_json::from_slice(&a.body[..n]).unwrap();
        assert_eq!(meta["outputs"][0]["parameters"]["binary_data_size"], json!(a.body.len() - n));
        let got: Vec<f32> = a.body[n..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_close(&got, &want);
    }
}

#[test]
fn simple_endpoints_answer() {
    let server = start(|_| {});
    let addr = server.local_addr();
    let (x, want) = golden(0);
    let rows: Vec<Vec<f32>> = x.as_slice::<f32>().unwrap().chunks(16).map(|r| r.to_vec()).collect();
    let a = post(addr, "/predict", &json!({ "model": "mlp", "inputs": { "x": rows } }));
    let out = &a.json()["outputs"]["probs"];
    assert_eq!(out["shape"], json!(want.shape()));
    assert_close(&floats(&out["data"]), &want);
    let health = get(addr, "/health").json();
    assert_eq!((health["status"].clone(), health["models_loaded"].clone()), (json!("ok"), json!(1)));
    assert_eq!(get(addr, "/models").json()["models"][0]["name"], "mlp");
    assert_eq!(get(addr, "/models/mlp").json()["batchable"], true);
    let doc = get(addr, "/openapi.json").json();
    assert_eq!(doc["openapi"], "3.0.3");
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert!(metrics.contains("crx580_requests_total{endpoint=\"predict\",model=\"\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("crx580_models_loaded 1"));
    let page = get(addr, "/");
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8(page.body).unwrap().contains("fetch(\"/stats\""));
    assert_eq!(get(addr, "/stats").json()["models"][0]["name"], "mlp");
    assert!(get(addr, "/nowhere").error(404).contains("no route"));
    let a = call(addr, "PUT", "/health", &[], b"");
    assert_eq!((a.status, a.header("allow")), (405, Some("GET")));
    // A route written out in full wins over /models/{name}: /models/load is not a model's name.
    let a = call(addr, "GET", "/models/load", &[], b"");
    assert_eq!((a.status, a.header("allow")), (405, Some("POST")));
    assert_eq!(call(addr, "DELETE", "/models/load", &[], b"").status, 405);
    // The repository index's 'ready' is a boolean or absent.
    assert_eq!(post(addr, "/v2/repository/index", &json!({ "ready": true })).json()[0]["name"], "mlp");
    assert!(post(addr, "/v2/repository/index", &json!({ "ready": {} })).error(400).contains("'ready'"));
}

#[test]
fn bad_requests_get_4xx_json_and_the_server_lives_on() {
    let server = start(|o| o.wire.max_body_bytes = 1 << 20);
    let addr = server.local_addr();
    let infer = |body: &str| call(addr, "POST", "/v2/models/mlp/infer", &[], body.as_bytes());
    let x16: Vec<f32> = vec![0.5; 16];
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "not valid JSON"),
        ("[]".into(), "must be a JSON object"),
        ("{}".into(), "needs an 'inputs' list"),
        (json!({"inputs": [{"name": "y", "shape": [1, 16], "datatype": "FP32", "data": x16}]}).to_string(), "no input named 'y'"),
        (json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "INT64", "data": vec![1; 16]}]}).to_string(), "must be FP32, got INT64"),
        (json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FLOAT", "data": x16}]}).to_string(), "unknown datatype"),
        (json!({"inputs": [{"name": "x", "shape": [1, 15], "datatype": "FP32", "data": &x16[..15]}]}).to_string(), "must have shape"),
        (json!({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": x16}]}).to_string(), "needs 32 elements"),
        (json!({"inputs": [{"name": "x", "shape": [1, -16], "datatype": "FP32", "data": x16}]}).to_string(), "non-negative"),
        (json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec!["a"; 16]}]}).to_string(), "not a FP32"),
        (json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32"}]}).to_string(), "neither 'data'"),
        (json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": 64}}]}).to_string(), "only 0 are left"),
        (json!({"inputs": [{"name": "x", "shape": [1u64 << 40, 1u64 << 30], "datatype": "FP32", "data": []}]}).to_string(), "overflows"),
        (json!({"inputs": [{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32", "data": []}]}).to_string(), "limit"),
        (json!({"inputs": []}).to_string(), "input 'x' is missing"),
        (json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": x16}], "outputs": [{"name": "nope"}]}).to_string(), "no output named 'nope'"),
        ("[".repeat(100_000), "not valid JSON"),
    ];
    for (body, want) in &cases {
        let msg = infer(body).error(400);
        assert!(msg.contains(want), "{want}: {msg}");
    }
    // Binary framing.
    let a = call(addr, "POST", "/v2/models/mlp/infer", &[("Inference-Header-Content-Length", "999")], b"{}");
    assert!(a.error(400).contains("not a length within the body"));
    let body = json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": x16}]}).to_string();
    let len = body.len().to_string();
    let mut with_extra = body.clone().into_bytes();
    with_extra.extend([0u8; 8]);
    let a = call(addr, "POST", "/v2/models/mlp/infer", &[("Inference-Header-Content-Length", &len)], &with_extra);
    assert!(a.error(400).contains("belong to no input"));
    let a = call(addr, "POST", "/v2/models/mlp/infer", &[("Content-Encoding", "gzip")], body.as_bytes());
    assert_eq!(a.status, 415);
    // Predict.
    let msg = post(addr, "/predict", &json!({"model": "mlp", "inputs": {"x": [[1, 2], [3]]}})).error(400);
    assert!(msg.contains("not rectangular"), "{msg}");
    assert_eq!(post(addr, "/predict", &json!({"model": "nope", "inputs": {}})).status, 404);
    assert!(post(addr, "/predict", &json!({"model": "mlp"})).error(400).contains("'inputs'"));
    // Framing and limits.
    let big = vec![b' '; 2 << 20];
    assert!(call(addr, "POST", "/predict", &[], &big).error(413).contains("over the server's limit"));
    assert_eq!(raw(addr, b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").status, 411);
    assert_eq!(raw(addr, b"HELLO\r\n\r\n").status, 400);
    assert_eq!(raw(addr, b"GET /health HTTP/1.1\r\nContent-Length: x\r\n\r\n").status, 400);
    let long_header = format!("GET /health HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(64 << 10));
    assert_eq!(raw(addr, long_header.as_bytes()).status, 431);
    let deadline_header = call(addr, "GET", "/health", &[("X-Request-Timeout-Ms", "soon")], b"");
    assert!(deadline_header.error(400).contains("X-Request-Timeout-Ms"));
    // Still serving, with the same workers.
    let (x, want) = golden(1);
    let a = post(addr, "/v2/models/mlp/infer", &v2_json_request(&x));
    assert_close(&floats(&a.json()["outputs"][0]["data"]), &want);
}

#[test]
fn slow_clients_time_out_and_keep_alive_works() {
    let server = start(|o| {
        o.wire.head_timeout = Duration::from_millis(300);
        o.wire.body_timeout = Duration::from_millis(300);
        o.wire.idle_timeout = Duration::from_millis(300);
    });
    let addr = server.local_addr();
    // Half a head, then silence: 408 and a closed connection, well before a test timeout.
    let started = Instant::now();
    let a = raw(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(a.status, 408);
    // A body shorter than its Content-Length.
    let a = raw(addr, b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"model\"");
    assert_eq!(a.status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Two requests on one kept-alive connection, then the idle timeout closes it.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v2/health/live HTTP/1.1\r\n\r\nGET /v2/health/ready HTTP/1.1\r\n\r\n").unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains("\"ready\":true"));
}

/// A fresh folder under the system's temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crx580-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn models_load_only_from_inside_the_models_dir() {
    let root = temp_dir("confine");
    let models = root.join("models");
    std::fs::create_dir_all(models.join("nested/1")).unwrap();
    std::fs::copy(MLP, models.join("a.onnx")).unwrap();
    std::fs::copy(MLP, models.join("nested/1/model.onnx")).unwrap();
    std::fs::copy(MLP, root.join("outside.onnx")).unwrap();
    std::fs::write(models.join("broken.onnx"), b"not a model").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("outside.onnx"), models.join("escape.onnx")).unwrap();
    let dir = models.clone();
    let server = start(move |o| o.models_dir = Some(dir));
    let addr = server.local_addr();
    let load = |name: &str, path: &str| post(addr, "/models/load", &json!({ "name": name, "path": path }));
    assert_eq!(load("a", "a.onnx").json()["name"], "a");
    assert!(load("b", "../outside.onnx").error(400).contains("without '..'"));
    assert!(load("b", root.join("outside.onnx").to_str().unwrap()).error(400).contains("relative"));
    assert!(load("b", "./a.onnx").error(400).contains("without"));
    #[cfg(unix)]
    assert!(load("b", "escape.onnx").error(403).contains("leads out"));
    assert!(load("b", "missing.onnx").error(404).contains("no file"));
    assert!(load("b", "nested").error(400).contains("not a file"));
    assert!(load("b", "broken.onnx").error(422).contains("cannot load the model"));
    assert!(load("../x", "a.onnx").error(400).contains("model name"));
    // The repository extension finds NAME.onnx and NAME/1/model.onnx; symlinks out are not listed.
    assert_eq!(post(addr, "/v2/repository/models/nested/load", &json!({})).status, 200);
    let index = post(addr, "/v2/repository/index", &json!({})).json();
    let names: Vec<(&str, &str)> =
        index.as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap())).collect();
    assert_eq!(names, [("a", "READY"), ("broken", "UNAVAILABLE"), ("mlp", "READY"), ("nested", "READY")]);
    assert_eq!(post(addr, "/v2/repository/models/escape/load", &json!({})).status, 404);
    let upload = json!({ "parameters": { "file:1/model.onnx": "AAAA" } });
    assert!(post(addr, "/v2/repository/models/x/load", &upload).error(400).contains("--models-dir only"));
    // Unload, then it is gone.
    assert_eq!(call(addr, "DELETE", "/models/a", &[], b"").status, 200);
    assert_eq!(post(addr, "/v2/repository/models/nested/unload", &json!({})).status, 200);
    assert_eq!(get(addr, "/v2/models/nested/ready").status, 404);
    assert_eq!(call(addr, "DELETE", "/models/a", &[], b"").status, 404);
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    assert!(metrics.contains("crx580_model_load_failures_total 9"), "{metrics}");
    // Without --models-dir nothing loads.
    let plain = start(|_| {});
    assert!(post(plain.local_addr(), "/models/load", &json!({"name": "a", "path": "a.onnx"}))
        .error(403)
        .contains("--models-dir"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn keys_and_roles_gate_the_routes() {
    let keys = "reader-0123456789abcdef readonly\nuser-0123456789abcdef user\nadmin-0123456789abcdef admin\n";
    let server = start(|o| o.api_keys = Some(ApiKeys::parse(keys).unwrap()));
    let addr = server.local_addr();
    let (x, _) = golden(0);
    let body = v2_json_request(&x).to_string();
    let infer = |auth: &[(&str, &str)]| call(addr, "POST", "/v2/models/mlp/infer", auth, body.as_bytes());
    assert!(infer(&[]).error(401).contains("needs an API key"));
    assert!(infer(&[("Authorization", "Bearer wrong-0123456789abcdef")]).error(401).contains("unknown API key"));
    assert!(infer(&[("Authorization", "Bearer reader-0123456789abcdef")]).error(403).contains("user role"));
    assert_eq!(infer(&[("Authorization", "Bearer user-0123456789abcdef")]).status, 200);
    assert_eq!(infer(&[("X-API-Key", "admin-0123456789abcdef")]).status, 200);
    assert_eq!(call(addr, "GET", "/metrics", &[("X-API-Key", "reader-0123456789abcdef")], b"").status, 200);
    assert_eq!(get(addr, "/metrics").status, 401);
    assert_eq!(call(addr, "DELETE", "/models/mlp", &[("X-API-Key", "user-0123456789abcdef")], b"").status, 403);
    // Probes need no key.
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    assert_eq!(get(addr, "/v2/health/ready").status, 200);
    assert_eq!(call(addr, "DELETE", "/models/mlp", &[("X-API-Key", "admin-0123456789abcdef")], b"").status, 200);
}

#[test]
fn rate_limits_answer_429_with_retry_after() {
    let server = start(|o| o.rate_limit_per_ip = Some(RateLimit::parse("0.5:2").unwrap()));
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(get(addr, "/health").status, 200);
    let a = get(addr, "/health");
    assert!(a.error(429).contains("rate limit"));
    assert_eq!(a.header("retry-after"), Some("2"));
    let metrics = start(|_| {});
    // Off unless configured: a burst is never refused.
    for _ in 0..20 {
        assert_eq!(get(metrics.local_addr(), "/v2/health/live").status, 200);
    }
}

#[test]
fn batched_answers_equal_unbatched_ones() {
    let server = start(|o| {
        o.workers = 1;
        o.batch = BatchConfig { max_batch: 16, delay: Duration::from_millis(100) };
    });
    let addr = server.local_addr();
    let session = Session::new(Model::load(MLP).unwrap(), &SessionOptions::default()).unwrap();
    // Requests of 1, 2, ... 5 rows, sent together.
    let inputs: Vec<Tensor> = (1..=5usize)
        .map(|rows| {
            let data: Vec<f32> = (0..rows * 16).map(|k| ((k * 7 + rows * 13) % 23) as f32 / 7.0 - 1.5).collect();
            Tensor::new(vec![rows, 16], data).unwrap()
        })
        .collect();
    let answers: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|x| {
                s.spawn(move || {
                    floats(&post(addr, "/v2/models/mlp/infer", &v2_json_request(x)).json()["outputs"][0]["data"])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (x, got) in inputs.iter().zip(&answers) {
        let want = session.run(&[("x", x)]).unwrap().remove(0);
        // Bit for bit: a row's result does not depend on the rows beside it.
        assert_eq!(got.as_slice(), want.as_slice::<f32>().unwrap());
    }
    let metrics = String::from_utf8(get(addr, "/metrics").body).unwrap();
    let count: f64 = metrics.lines().find_map(|l| l.strip_prefix("crx580_batch_size_count ")).unwrap().parse().unwrap();
    assert!(count < 5.0, "5 requests went out in {count} runs: no batching happened\n{metrics}");
}

#[test]
fn deadlines_answer_504_and_the_worker_lives_on() {
    // One worker that waits 300 ms for a batch: a request with a 50 ms deadline expires in the queue.
    let server = start(|o| {
        o.workers = 1;
        o.batch = BatchConfig { max_batch: 64, delay: Duration::from_millis(300) };
    });
    let addr = server.local_addr();
    let (x, want) = golden(0);
    let body = v2_json_request(&x).to_string();
    let a = call(addr, "POST", "/v2/models/mlp/infer", &[("X-Request-Timeout-Ms", "50")], body.as_bytes());
    assert!(a.error(504).contains("deadline"));
    let mut timed = v2_json_request(&x);
    timed["parameters"] = json!({ "timeout": 50_000 });
    assert_eq!(post(addr, "/v2/models/mlp/infer", &timed).status, 504);
    let a = post(addr, "/v2/models/mlp/infer", &v2_json_request(&x));
    assert_close(&floats(&a.json()["outputs"][0]["data"]), &want);
}

#[test]
fn reloading_while_clients_predict_loses_no_request() {
    let root = temp_dir("reload");
    std::fs::copy(MLP, root.join("mlp.onnx")).unwrap();
    let dir = root.clone();
    let server = start(move |o| o.models_dir = Some(dir));
    let addr = server.local_addr();
    let (x, want) = golden(0);
    let body = v2_json_request(&x);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<Vec<u16>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut statuses = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let a = post(addr, "/v2/models/mlp/infer", &body);
                        if a.status == 200 {
                            assert_close(&floats(&a.json()["outputs"][0]["data"]), &want);
                        }
                        statuses.push(a.status);
                    }
                    statuses
                })
            })
            .collect();
        for _ in 0..5 {
            assert_eq!(post(addr, "/v2/repository/models/mlp/load", &json!({})).status, 200);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<u16> = results.concat();
    assert!(!all.is_empty() && all.iter().all(|&s| s == 200), "{all:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn stopping_closes_idle_connections_promptly() {
    let server = start(|_| {});
    let addr = server.local_addr();
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /v2/health/live HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() || get_fails(addr));
}

/// After stop the port may still accept briefly at the OS level, but nothing answers.
fn get_fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return true };
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 16];
    !matches!(s.read(&mut buf), Ok(n) if n > 0)
}
