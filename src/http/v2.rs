//! The Open Inference Protocol v2 over REST (KServe's and Triton's `/v2` API): server and model
//! metadata and readiness, inference with JSON tensors and the binary tensor extension, and the
//! model repository extension (index, load, unload).
//!
//! Binary tensors: with the header `Inference-Header-Content-Length: N`, the body's first N bytes
//! are the JSON request and the rest are the inputs that carry a `binary_data_size` parameter,
//! back to back in input order. Outputs asked for with `"binary_data": true` (or all outputs, with
//! the request parameter `binary_data_output`) come back the same way.

use super::repository::{check_name, Served};
use super::routes::Call;
use super::tensors::{
    dtype_from_v2, tensor_from_bytes, tensor_from_json, tensor_to_bytes, tensor_to_json_flat, v2_datatype,
};
use super::wire::{printable, Response};
use super::{ApiError, State};
use crate::ir::limits::with_max_tensor_bytes;
use crate::{Dim, IoInfo, Tensor};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BINARY_HEADER: &str = "Inference-Header-Content-Length";

pub fn server_metadata() -> Response {
    Response::json(
        200,
        &json!({ "name": "crx580", "version": crate::version(), "extensions": ["binary_tensor_data", "model_repository"] }),
    )
}

pub fn server_ready(_state: &State) -> Response {
    Response::json(200, &json!({ "ready": true }))
}

/// The model named in the path, at version 1 (the only version a model has here).
pub fn find_model(call: &Call) -> Result<Arc<Served>, ApiError> {
    let name = &call.params.name;
    let model = call
        .state
        .repository
        .get(name)
        .ok_or_else(|| ApiError::new(404, format!("no model named '{}' is loaded", printable(name))))?;
    match call.params.version.as_deref() {
        None | Some("1") => Ok(model),
        Some(v) => Err(ApiError::new(404, format!("model '{name}' has only version 1, not '{}'", printable(v)))),
    }
}

/// A declared input or output as the protocol describes it: -1 for dims not fixed.
pub fn tensor_metadata(io: &IoInfo) -> Value {
    let datatype = io.dtype.map(|d| v2_datatype(d).map(str::to_string).unwrap_or_else(|| d.to_string().to_uppercase()));
    let shape: Vec<i64> = io
        .shape
        .iter()
        .flatten()
        .map(|d| match d {
            Dim::Known(n) => *n as i64,
            _ => -1,
        })
        .collect();
    json!({ "name": io.name, "datatype": datatype.unwrap_or_else(|| "UNKNOWN".into()), "shape": shape })
}

pub fn model_metadata(call: &Call) -> Result<Response, ApiError> {
    let m = find_model(call)?;
    Ok(Response::json(
        200,
        &json!({
            "name": m.name,
            "versions": ["1"],
            "platform": "onnx",
            "inputs": m.inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
            "outputs": m.outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        }),
    ))
}

pub fn model_ready(call: &Call) -> Result<Response, ApiError> {
    let m = find_model(call)?;
    Ok(Response::json(200, &json!({ "name": m.name, "ready": true })))
}

/// A JSON object body; an empty body is an empty object.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(400, "the body must be a JSON object")),
        Err(e) => Err(ApiError::new(400, format!("the body is not valid JSON: {e}"))),
    }
}

/// An inference request, parsed and checked against the model.
struct InferRequest {
    id: Option<Value>,
    inputs: Vec<(String, Tensor)>,
    /// Output names to answer, each with whether it goes back as binary.
    outputs: Vec<(String, bool)>,
    timeout: Option<Duration>,
}

pub fn infer(call: &Call) -> Result<Response, ApiError> {
    let model = find_model(call)?;
    if call.request.header("content-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity")) {
        return Err(ApiError::new(415, "compressed request bodies are not supported"));
    }
    let limit = call.state.options.session.max_tensor_bytes;
    let request = with_max_tensor_bytes(limit, || parse_infer(call, &model))?;
    let deadline = match request.timeout {
        Some(t) => call.deadline.min(Instant::now() + t),
        None => call.deadline,
    };
    let ordered = model.order_inputs(request.inputs)?;
    let outputs = call.state.workers.infer(&model, ordered, deadline)?;
    answer(&model, request.id, &request.outputs, outputs)
}

fn parse_infer(call: &Call, model: &Served) -> Result<InferRequest, ApiError> {
    let body = &call.request.body;
    let (json_part, mut binary) = match call.request.header(BINARY_HEADER) {
        None => (&body[..], &[][..]),
        Some(v) => {
            let n = v.parse::<usize>().ok().filter(|&n| n <= body.len()).ok_or_else(|| {
                ApiError::new(400, format!("{BINARY_HEADER} '{}' is not a length within the body", printable(v)))
            })?;
            body.split_at(n)
        }
    };
    let object = json_object(json_part)?;
    let parameters = object.get("parameters").and_then(Value::as_object);
    let binary_all = parameters.and_then(|p| p.get("binary_data_output")).and_then(Value::as_bool).unwrap_or(false);
    let timeout = match parameters.and_then(|p| p.get("timeout")) {
        None => None,
        Some(v) => Some(Duration::from_micros(
            v.as_u64()
                .filter(|&us| us > 0)
                .ok_or_else(|| ApiError::new(400, "parameter 'timeout' must be a positive number of microseconds"))?,
        )),
    };
    let Some(Value::Array(inputs)) = object.get("inputs") else {
        return Err(ApiError::new(400, "the request needs an 'inputs' list"));
    };
    let mut named = Vec::with_capacity(inputs.len());
    for (k, input) in inputs.iter().enumerate() {
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::new(400, format!("input {k} has no 'name'")))?;
        let info = model.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = model.inputs.iter().map(|i| i.name.as_str()).collect();
            ApiError::new(
                400,
                format!("the model has no input named '{}' (inputs: {})", printable(name), names.join(", ")),
            )
        })?;
        if named.iter().any(|(n, _)| n == name) {
            return Err(ApiError::new(400, format!("input '{name}' is given twice")));
        }
        let shape = input
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|dims| {
                dims.iter().map(|d| d.as_u64().and_then(|n| usize::try_from(n).ok())).collect::<Option<Vec<usize>>>()
            })
            .ok_or_else(|| ApiError::new(400, format!("input '{name}' needs a 'shape' of non-negative integers")))?;
        let datatype = input.get("datatype").and_then(Value::as_str).unwrap_or_default();
        let dtype = dtype_from_v2(datatype)
            .ok_or_else(|| ApiError::new(400, format!("input '{name}': unknown datatype '{}'", printable(datatype))))?;
        if let Some(want) = info.dtype.filter(|&d| d != dtype) {
            let want = v2_datatype(want).map(str::to_string).unwrap_or_else(|| want.to_string());
            return Err(ApiError::new(400, format!("input '{name}' must be {want}, got {datatype}")));
        }
        let binary_size = input.get("parameters").and_then(|p| p.get("binary_data_size"));
        let tensor = match (binary_size, input.get("data")) {
            (Some(size), _) => {
                let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
                    ApiError::new(400, format!("input '{name}': binary_data_size must be a byte count"))
                })?;
                if size > binary.len() {
                    return Err(ApiError::new(
                        400,
                        format!("input '{name}' says {size} binary bytes, only {} are left in the body", binary.len()),
                    ));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                tensor_from_bytes(name, dtype, shape, mine)
            }
            (None, Some(data)) => tensor_from_json(name, dtype, shape, data),
            (None, None) => {
                return Err(ApiError::new(400, format!("input '{name}' has neither 'data' nor binary data")))
            }
        }
        .map_err(|m| ApiError::new(400, m))?;
        named.push((name.to_string(), tensor));
    }
    if !binary.is_empty() {
        return Err(ApiError::new(400, format!("{} bytes of binary data belong to no input", binary.len())));
    }
    let outputs = match object.get("outputs") {
        None => model.outputs.iter().map(|o| (o.name.clone(), binary_all)).collect(),
        Some(Value::Array(wanted)) => {
            let mut outputs = Vec::new();
            for o in wanted {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::new(400, "a requested output has no 'name'"))?;
                if !model.outputs.iter().any(|i| i.name == name) {
                    return Err(ApiError::new(400, format!("the model has no output named '{}'", printable(name))));
                }
                let binary = o
                    .get("parameters")
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Value::as_bool)
                    .unwrap_or(binary_all);
                outputs.push((name.to_string(), binary));
            }
            outputs
        }
        Some(_) => return Err(ApiError::new(400, "'outputs' must be a list")),
    };
    Ok(InferRequest { id: object.get("id").cloned(), inputs: named, outputs, timeout })
}

fn answer(
    model: &Served,
    id: Option<Value>,
    wanted: &[(String, bool)],
    outputs: Vec<Tensor>,
) -> Result<Response, ApiError> {
    let mut described = Vec::new();
    let mut binary = Vec::new();
    for (name, as_binary) in wanted {
        let k = model.outputs.iter().position(|o| o.name == *name).unwrap_or_default();
        let t = &outputs[k];
        let datatype = v2_datatype(t.dtype()).ok_or_else(|| {
            ApiError::new(400, format!("output '{name}' is {}, which the protocol has no datatype for", t.dtype()))
        })?;
        let mut o = json!({ "name": name, "datatype": datatype, "shape": t.shape() });
        if *as_binary {
            let bytes = tensor_to_bytes(t).map_err(|m| ApiError::new(500, m))?;
            o["parameters"] = json!({ "binary_data_size": bytes.len() });
            binary.extend(bytes);
        } else {
            o["data"] = tensor_to_json_flat(t);
        }
        described.push(o);
    }
    let mut body = json!({ "model_name": model.name, "model_version": "1", "outputs": described });
    if let Some(id) = id {
        body["id"] = id;
    }
    if !wanted.iter().any(|(_, b)| *b) {
        return Ok(Response::json(200, &body));
    }
    let mut bytes = body.to_string().into_bytes();
    let header_len = bytes.len();
    bytes.extend(binary);
    Ok(Response::new(200, "application/octet-stream", bytes).with_header(BINARY_HEADER, header_len.to_string()))
}

pub fn repository_index(call: &Call) -> Result<Response, ApiError> {
    let body = json_object(&call.request.body)?;
    let only_ready = match body.get("ready") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| ApiError::new(400, "'ready' must be true or false"))?,
    };
    let entries: Vec<Value> = call
        .state
        .repository
        .index()
        .into_iter()
        .filter(|e| e.ready || !only_ready)
        .map(|e| json!({ "name": e.name, "version": "1", "state": if e.ready { "READY" } else { "UNAVAILABLE" }, "reason": "" }))
        .collect();
    Ok(Response::json(200, &Value::Array(entries)))
}

pub fn repository_load(call: &Call) -> Result<Response, ApiError> {
    let body = json_object(&call.request.body)?;
    if let Some(p) = body.get("parameters").and_then(Value::as_object) {
        if p.keys().any(|k| k == "config" || k.starts_with("file:")) {
            return Err(ApiError::new(
                400,
                "crx580 loads models from its --models-dir only; model configs and uploaded files are not supported",
            ));
        }
    }
    check_name(&call.params.name)?;
    let loaded = call.state.repository.load_named(&call.params.name).inspect_err(|_| {
        call.state.metrics.load_failures.fetch_add(1, Ordering::Relaxed);
    })?;
    Ok(Response::json(200, &json!({ "name": loaded.name, "state": "READY" })))
}

pub fn repository_unload(call: &Call) -> Result<Response, ApiError> {
    json_object(&call.request.body)?;
    call.state.repository.unload(&call.params.name)?;
    Ok(Response::json(200, &json!({ "name": call.params.name, "state": "UNAVAILABLE" })))
}
