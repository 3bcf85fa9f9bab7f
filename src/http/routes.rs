//! The route table and what every request goes through: matching, API keys and roles, rate
//! limits, the deadline, metrics, and turning errors into JSON answers.

use super::auth::{ip_client, Role};
use super::wire::{Request, Response};
use super::{simple, status, v2, ApiError, State};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One route: method, path pattern (`{name}` and `{version}` match one segment), the name it
/// has in metrics, and the least role that may call it (`None`: anyone, even with keys on; for
/// the liveness and readiness probes that orchestrators call without credentials).
pub struct Route {
    pub method: &'static str,
    pub pattern: &'static str,
    pub endpoint: &'static str,
    pub role: Option<Role>,
}

const fn route(method: &'static str, pattern: &'static str, endpoint: &'static str, role: Option<Role>) -> Route {
    Route { method, pattern, endpoint, role }
}

const READ: Option<Role> = Some(Role::Readonly);
const INFER: Option<Role> = Some(Role::User);
const ADMIN: Option<Role> = Some(Role::Admin);

/// Every route the server answers (the OpenAPI document lists the same, checked by a test).
pub const ROUTES: &[Route] = &[
    route("GET", "/", "status_page", READ),
    route("GET", "/stats", "stats", READ),
    route("GET", "/health", "health", READ),
    route("GET", "/metrics", "metrics", READ),
    route("GET", "/openapi.json", "openapi", READ),
    route("GET", "/models", "models", READ),
    route("POST", "/models/load", "models_load", ADMIN),
    route("GET", "/models/{name}", "model", READ),
    route("DELETE", "/models/{name}", "model_delete", ADMIN),
    route("POST", "/predict", "predict", INFER),
    route("GET", "/v2", "v2_server_metadata", READ),
    route("GET", "/v2/health/live", "v2_live", None),
    route("GET", "/v2/health/ready", "v2_ready", None),
    route("GET", "/v2/models/{name}", "v2_model_metadata", READ),
    route("GET", "/v2/models/{name}/versions/{version}", "v2_model_metadata", READ),
    route("GET", "/v2/models/{name}/ready", "v2_model_ready", READ),
    route("GET", "/v2/models/{name}/versions/{version}/ready", "v2_model_ready", READ),
    route("POST", "/v2/models/{name}/infer", "v2_infer", INFER),
    route("POST", "/v2/models/{name}/versions/{version}/infer", "v2_infer", INFER),
    route("POST", "/v2/repository/index", "v2_repository_index", READ),
    route("POST", "/v2/repository/models/{name}/load", "v2_repository_load", ADMIN),
    route("POST", "/v2/repository/models/{name}/unload", "v2_repository_unload", ADMIN),
];

/// The `{name}` and `{version}` segments of a matched path.
#[derive(Default)]
pub struct Params {
    pub name: String,
    pub version: Option<String>,
}

fn matches(pattern: &str, path: &str) -> Option<Params> {
    let mut params = Params::default();
    let mut pat = pattern.split('/');
    let mut seg = path.split('/');
    loop {
        match (pat.next(), seg.next()) {
            (None, None) => return Some(params),
            (Some("{name}"), Some(s)) if !s.is_empty() => params.name = s.to_string(),
            (Some("{version}"), Some(s)) if !s.is_empty() => params.version = Some(s.to_string()),
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

/// What a request needs to answer it.
pub struct Call<'a> {
    pub state: &'a State,
    pub request: &'a Request,
    pub params: Params,
    pub deadline: Instant,
}

pub fn handle(state: &State, request: &Request) -> Response {
    let started = Instant::now();
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let method = if request.method == "HEAD" { "GET" } else { request.method.as_str() };
    // The path may end in '/' (`/v2/` as some clients write it).
    let path = match request.path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => request.path.as_str(),
    };
    // A route written out in full wins over a pattern that would also match (`/models/load` is not
    // the model named "load"), for routing and for the 405's Allow list alike.
    let literal = ROUTES.iter().any(|r| r.pattern == path);
    let candidates = || ROUTES.iter().filter(move |r| !literal || r.pattern == path);
    let found = candidates().find_map(|r| matches(r.pattern, path).filter(|_| r.method == method).map(|p| (r, p)));
    let (endpoint, model, response) = match found {
        Some((route, params)) => {
            let model = state.repository.get(&params.name).map(|m| m.name.clone()).unwrap_or_default();
            let response = admit(state, request, route)
                .and_then(|()| deadline(state, request))
                .and_then(|deadline| dispatch(route, Call { state, request, params, deadline }))
                .unwrap_or_else(Response::from);
            (route.endpoint, model, response)
        }
        None => {
            let allowed: Vec<&str> =
                candidates().filter(|r| matches(r.pattern, path).is_some()).map(|r| r.method).collect();
            let response = if allowed.is_empty() {
                Response::error(404, &format!("no route for {} {}", method, super::wire::printable(path)))
            } else {
                Response::error(405, &format!("{} takes {}", super::wire::printable(path), allowed.join(", ")))
                    .with_header("Allow", allowed.join(", "))
            };
            ("unknown", String::new(), response)
        }
    };
    state.metrics.observe_request(endpoint, &model, response.status, started.elapsed());
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    response
}

/// API key and role, then the rate limits (per key when one was given, and per IP).
fn admit(state: &State, request: &Request, route: &Route) -> Result<(), ApiError> {
    let presented = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| request.header("x-api-key"))
        .map(str::trim);
    if let (Some(keys), Some(needed)) = (&state.options.api_keys, route.role) {
        let Some(key) = presented else {
            return Err(ApiError::new(401, "this server needs an API key (Authorization: Bearer KEY, or X-API-Key)")
                .with_header("WWW-Authenticate", "Bearer"));
        };
        match keys.role_of(key) {
            None => return Err(ApiError::new(401, "unknown API key").with_header("WWW-Authenticate", "Bearer")),
            Some(role) if role < needed => {
                return Err(ApiError::new(
                    403,
                    format!("this needs the {} role; the key has {}", needed.name(), role.name()),
                ))
            }
            Some(_) => {}
        }
    }
    let too_many = |wait: u64| {
        ApiError::new(429, format!("rate limit reached; try again in {wait} s"))
            .with_header("Retry-After", wait.to_string())
    };
    if let (Some(limiter), Some(key)) = (&state.key_limiter, presented.filter(|_| state.options.api_keys.is_some())) {
        if let Err(wait) = limiter.check(key) {
            state.metrics.rate_limited_key.fetch_add(1, Ordering::Relaxed);
            return Err(too_many(wait));
        }
    }
    if let Some(limiter) = &state.ip_limiter {
        if let Err(wait) = limiter.check(&ip_client(request.peer)) {
            state.metrics.rate_limited_ip.fetch_add(1, Ordering::Relaxed);
            return Err(too_many(wait));
        }
    }
    Ok(())
}

/// The request's deadline: `X-Request-Timeout-Ms` if given (at most the server's default), else
/// the default. The protocol's `timeout` parameter can shorten it further (see `v2`).
fn deadline(state: &State, request: &Request) -> Result<Instant, ApiError> {
    let default = state.options.default_deadline;
    let timeout = match request.header("x-request-timeout-ms") {
        None => default,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms).min(default),
            _ => {
                return Err(ApiError::new(
                    400,
                    format!(
                        "X-Request-Timeout-Ms '{}' is not a positive number of milliseconds",
                        super::wire::printable(v)
                    ),
                ))
            }
        },
    };
    Ok(Instant::now() + timeout)
}

fn dispatch(route: &Route, call: Call) -> Result<Response, ApiError> {
    match route.endpoint {
        "status_page" => Ok(status::page()),
        "stats" => Ok(status::stats(call.state)),
        "health" => Ok(simple::health(call.state)),
        "metrics" => Ok(Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            call.state.metrics.render(call.state.repository.len()).into_bytes(),
        )),
        "openapi" => Ok(Response::new(200, "application/json", OPENAPI.as_bytes().to_vec())),
        "models" => Ok(simple::models(call.state)),
        "models_load" => simple::load(&call),
        "model" => simple::model(&call),
        "model_delete" => simple::unload(&call),
        "predict" => simple::predict(&call),
        "v2_server_metadata" => Ok(v2::server_metadata()),
        "v2_live" => Ok(Response::json(200, &serde_json::json!({ "live": true }))),
        "v2_ready" => Ok(v2::server_ready(call.state)),
        "v2_model_metadata" => v2::model_metadata(&call),
        "v2_model_ready" => v2::model_ready(&call),
        "v2_infer" => v2::infer(&call),
        "v2_repository_index" => v2::repository_index(&call),
        "v2_repository_load" => v2::repository_load(&call),
        "v2_repository_unload" => v2::repository_unload(&call),
        other => Err(ApiError::new(500, format!("route '{other}' has no handler (a bug)"))),
    }
}

/// The OpenAPI 3 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        let p = matches("/v2/models/{name}/versions/{version}/ready", "/v2/models/m/versions/1/ready").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_deref()), ("m", Some("1")));
        assert!(matches("/v2/models/{name}", "/v2/models/").is_none());
        assert!(matches("/v2/models/{name}", "/v2/models/a/b").is_none());
        assert!(matches("/models", "/models/x").is_none());
    }

    #[test]
    fn every_route_has_a_handler_and_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        for r in ROUTES {
            let op = &doc["paths"][r.pattern][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is missing from openapi.json", r.method, r.pattern);
        }
        let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        let params_only = doc["paths"].as_object().unwrap().values().filter(|p| p.get("parameters").is_some()).count();
        assert_eq!(documented - params_only, ROUTES.len(), "openapi.json documents routes the server lacks");
    }
}
