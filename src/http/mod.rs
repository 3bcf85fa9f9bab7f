//! The model server (feature `http`): the Open Inference Protocol v2 over REST (what KServe and
//! Triton's clients speak), simple JSON endpoints for curl, Prometheus metrics, an OpenAPI
//! document and a status page.
//!
//! ```no_run
//! use crx580::http::{Server, ServerOptions};
//! let model = crx580::Model::load("model.onnx")?;
//! let server = Server::start(ServerOptions::default(), vec![("mlp".into(), model)])?;
//! println!("listening on {}", server.local_addr());
//! server.stop();
//! # Ok::<(), crx580::Error>(())
//! ```
//!
//! The data flows: `listener` (sockets, connection threads) -> `wire` (HTTP/1.1 framing within
//! limits) -> `routes` (the route table, keys, rate limits, deadlines, metrics) -> `v2` / `simple`
//! (the endpoints) -> `repository` (models by name) and `batching` (the fixed worker pool).

mod auth;
mod batching;
mod listener;
mod metrics;
mod repository;
mod routes;
mod simple;
mod status;
mod tensors;
mod v2;
mod wire;

pub use auth::{ApiKeys, RateLimit, Role};
pub use batching::BatchConfig;
pub use routes::ROUTES;
pub use wire::{Request, Response, WireLimits};

use crate::{LoadOptions, Model, Result, SessionOptions};
use auth::RateLimiter;
use batching::Workers;
use listener::Listener;
use metrics::Metrics;
use repository::Repository;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a server listens, runs and protects itself.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `HOST:PORT`; port 0 picks a free one (see [`Server::local_addr`]).
    pub addr: String,
    /// Inference worker threads (0: one per core).
    pub workers: usize,
    /// Open connections at most; more are answered 503.
    pub max_connections: usize,
    /// Inference requests waiting for a worker at most; more are answered 503.
    pub queue_capacity: usize,
    pub wire: WireLimits,
    /// A request's deadline when it names none (header `X-Request-Timeout-Ms`, or the protocol's
    /// `timeout` parameter in microseconds).
    pub default_deadline: Duration,
    pub batch: BatchConfig,
    /// The only folder models may be loaded from at run time; `None` refuses loading.
    pub models_dir: Option<PathBuf>,
    /// Limits for models loaded at run time (`max_tensor_bytes` is `--max-memory`).
    pub load: LoadOptions,
    pub session: SessionOptions,
    /// `None`: no keys needed (bind to loopback, or put the server behind something that checks).
    pub api_keys: Option<ApiKeys>,
    pub rate_limit_per_key: Option<RateLimit>,
    pub rate_limit_per_ip: Option<RateLimit>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            addr: "127.0.0.1:8000".into(),
            workers: 0,
            max_connections: 256,
            queue_capacity: 1024,
            wire: WireLimits::default(),
            default_deadline: Duration::from_secs(60),
            batch: BatchConfig { max_batch: 1, delay: Duration::ZERO },
            models_dir: None,
            load: LoadOptions::default(),
            session: SessionOptions::default(),
            api_keys: None,
            rate_limit_per_key: None,
            rate_limit_per_ip: None,
        }
    }
}

/// An answer other than 200, with its status and message (sent as `{"error": message}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// A failed run: the input's fault (400) unless the engine hit a bug (500) or a size limit
    /// (422: the request is well-formed but needs more than the server allows).
    pub fn from_run(e: crate::Error) -> ApiError {
        let status = match e.kind {
            _ if e.message.contains("internal error (panic)") => 500,
            crate::ErrorKind::ResourceLimit => 422,
            _ => 400,
        };
        ApiError::new(status, e.message)
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        let mut r = Response::error(e.status, &e.message);
        r.headers = e.headers;
        r
    }
}

/// What every request handler shares.
pub(crate) struct State {
    options: ServerOptions,
    repository: Repository,
    workers: Workers,
    metrics: Arc<Metrics>,
    key_limiter: Option<RateLimiter>,
    ip_limiter: Option<RateLimiter>,
}

/// A running server. Dropping it stops it, as [`Server::stop`] does.
pub struct Server {
    state: Arc<State>,
    listener: Listener,
}

impl Server {
    /// Starts serving `models` (name, model) on `options.addr`.
    pub fn start(options: ServerOptions, models: Vec<(String, Model)>) -> Result<Server> {
        let repository = Repository::new(options.models_dir.as_deref(), options.load.clone(), options.session.clone())?;
        for (name, model) in models {
            repository
                .insert(&name, model, None)
                .map_err(|e| crate::err!(InvalidInput, "model '{name}': {}", e.message))?;
        }
        let metrics = Arc::new(Metrics::default());
        let workers = match options.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let workers = Workers::start(workers, options.queue_capacity, options.batch.clone(), metrics.clone())?;
        let state = Arc::new(State {
            key_limiter: options.rate_limit_per_key.map(RateLimiter::new),
            ip_limiter: options.rate_limit_per_ip.map(RateLimiter::new),
            options,
            repository,
            workers,
            metrics,
        });
        let handler_state = state.clone();
        let handler: listener::Handler = Arc::new(move |r: &Request| routes::handle(&handler_state, r));
        let listener =
            Listener::bind(&state.options.addr, state.options.max_connections, state.options.wire.clone(), handler)?;
        Ok(Server { state, listener })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Answers one request in process, exactly as over the network (for tests and embedding).
    pub fn handle(&self, request: &Request) -> Response {
        routes::handle(&self.state, request)
    }

    /// Stops accepting, finishes the requests in progress and the queued inference, and returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.listener.stop();
        self.state.workers.stop();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}
