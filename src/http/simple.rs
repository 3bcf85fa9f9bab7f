//! The endpoints for people with curl: health, the model list, loading and unloading by path, and
//! `/predict` with nested JSON lists.

use super::metrics::resident_bytes;
use super::repository::Served;
use super::routes::Call;
use super::tensors::{nested_shape, tensor_from_json, tensor_to_json_nested, v2_datatype};
use super::v2::{find_model, json_object, tensor_metadata};
use super::wire::{printable, Response};
use super::{ApiError, State};
use crate::ir::limits::with_max_tensor_bytes;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub fn health(state: &State) -> Response {
    Response::json(
        200,
        &json!({
            "status": "ok",
            "version": crate::version(),
            "uptime_s": state.metrics.uptime().as_secs_f64(),
            "models_loaded": state.repository.len(),
            "memory": { "resident_bytes": resident_bytes() },
        }),
    )
}

fn describe(m: &Served) -> Value {
    let loaded = m.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    json!({
        "name": m.name,
        "source": m.source,
        "inputs": m.inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "outputs": m.outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "batchable": m.batchable,
        "loaded_at_unix_s": loaded,
    })
}

pub fn models(state: &State) -> Response {
    let list: Vec<Value> = state.repository.list().iter().map(|m| describe(m)).collect();
    Response::json(200, &json!({ "models": list }))
}

pub fn model(call: &Call) -> Result<Response, ApiError> {
    Ok(Response::json(200, &describe(&*find_model(call)?)))
}

/// `{"name": NAME, "path": PATH}`: loads PATH (relative to `--models-dir`) as NAME.
pub fn load(call: &Call) -> Result<Response, ApiError> {
    let body = json_object(&call.request.body)?;
    let text = |key: &str| {
        body.get(key).and_then(Value::as_str).ok_or_else(|| {
            ApiError::new(400, format!("the body needs a string '{key}' ({{\"name\": ..., \"path\": ...}})"))
        })
    };
    let (name, path) = (text("name")?, text("path")?);
    let loaded = call.state.repository.load_path(name, path).inspect_err(|_| {
        call.state.metrics.load_failures.fetch_add(1, Ordering::Relaxed);
    })?;
    Ok(Response::json(200, &describe(&loaded)))
}

pub fn unload(call: &Call) -> Result<Response, ApiError> {
    call.state.repository.unload(&call.params.name)?;
    Ok(Response::json(200, &json!({ "unloaded": call.params.name })))
}

/// `{"model": NAME, "inputs": {INPUT: nested lists}}` -> `{"model": NAME, "outputs": {OUTPUT:
/// {"datatype", "shape", "data"}}}`; each input takes the model's dtype for it.
pub fn predict(call: &Call) -> Result<Response, ApiError> {
    let body = json_object(&call.request.body)?;
    let name = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(400, "the body needs a string 'model' and an object 'inputs'"))?;
    let model = call
        .state
        .repository
        .get(name)
        .ok_or_else(|| ApiError::new(404, format!("no model named '{}' is loaded", printable(name))))?;
    let Some(Value::Object(given)) = body.get("inputs") else {
        return Err(ApiError::new(400, "the body needs an object 'inputs' ({\"INPUT\": nested lists, ...})"));
    };
    let limit = call.state.options.session.max_tensor_bytes;
    let mut named = Vec::with_capacity(given.len());
    for (input, data) in given {
        let info = model.inputs.iter().find(|i| i.name == *input).ok_or_else(|| {
            let names: Vec<&str> = model.inputs.iter().map(|i| i.name.as_str()).collect();
            ApiError::new(
                400,
                format!("the model has no input named '{}' (inputs: {})", printable(input), names.join(", ")),
            )
        })?;
        let dtype = info.dtype.ok_or_else(|| {
            ApiError::new(400, format!("input '{input}' has no declared dtype; use /v2 and name its datatype"))
        })?;
        let tensor = with_max_tensor_bytes(limit, || {
            nested_shape(input, data).and_then(|shape| tensor_from_json(input, dtype, shape, data))
        })
        .map_err(|m| ApiError::new(400, m))?;
        named.push((input.clone(), tensor));
    }
    let ordered = model.order_inputs(named)?;
    let outputs = call.state.workers.infer(&model, ordered, call.deadline)?;
    let mut out = serde_json::Map::new();
    for (info, t) in model.outputs.iter().zip(&outputs) {
        let datatype = v2_datatype(t.dtype()).map(str::to_string).unwrap_or_else(|| t.dtype().to_string());
        out.insert(
            info.name.clone(),
            json!({ "datatype": datatype, "shape": t.shape(), "data": tensor_to_json_nested(t) }),
        );
    }
    Ok(Response::json(200, &json!({ "model": model.name, "outputs": out })))
}
