//! `crx580 serve`: the HTTP model server (Open Inference Protocol v2 plus simple endpoints) on
//! the models given with `--model`, and any loaded later from `--models-dir`.

use crate::out::{note, outln};
use crate::{parse_size, DeviceArgs};
use clap::Args;
use crx580::http::{ApiKeys, BatchConfig, RateLimit, Server, ServerOptions};
use crx580::{err, LoadOptions, Result};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve, as NAME=PATH (repeatable).
    #[arg(long = "model", value_name = "NAME=PATH")]
    models: Vec<String>,
    /// The address to listen on; 0.0.0.0 listens on every interface.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: a free one, printed at start-up).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The folder models may be loaded from at run time (POST /models/load,
    /// /v2/repository/models/NAME/load); without it, loading at run time is refused.
    #[arg(long, value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// A file of API keys, one `KEY ROLE` a line (roles: readonly, user, admin); without it,
    /// no key is needed.
    #[arg(long, value_name = "FILE")]
    api_keys: Option<PathBuf>,
    #[command(flatten)]
    server: ServerLimitArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Serving")]
pub struct ServerLimitArgs {
    /// Inference worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Batch requests for one model along dim 0, up to this many rows (1: no batching).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_batch: u64,
    /// How long a batch waits for more requests, in milliseconds.
    #[arg(long, default_value_t = 0)]
    batch_delay_ms: u64,
    /// A request's deadline when it sets none (X-Request-Timeout-Ms), in seconds; past it, 504.
    #[arg(long, default_value_t = 60.0)]
    request_timeout: f64,
    /// The largest request body (bytes, or with K, M or G).
    #[arg(long, value_name = "SIZE", default_value = "16M")]
    max_body: String,
    /// Open connections at most.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Requests per second per API key, as RATE or RATE:BURST (off unless given).
    #[arg(long, value_name = "RATE[:BURST]")]
    rate_limit_key: Option<String>,
    /// Requests per second per client IP, as RATE or RATE:BURST (off unless given).
    #[arg(long, value_name = "RATE[:BURST]")]
    rate_limit_ip: Option<String>,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let max_tensor_bytes = a.device.limits.max_tensor_bytes()?;
    let mut models = Vec::new();
    for m in &a.models {
        let (name, path) = m.split_once('=').ok_or_else(|| err!(InvalidInput, "--model '{m}' is not NAME=PATH"))?;
        models.push((name.to_string(), a.device.limits.load(path.as_ref())?));
    }
    let s = &a.server;
    let request_timeout =
        Duration::try_from_secs_f64(s.request_timeout).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
            err!(InvalidInput, "--request-timeout {} is not a positive number of seconds", s.request_timeout)
        })?;
    let mut options = ServerOptions {
        addr: format!("{}:{}", a.host, a.port),
        workers: s.workers,
        max_connections: s.max_connections.max(1),
        default_deadline: request_timeout,
        batch: BatchConfig { max_batch: s.max_batch as usize, delay: Duration::from_millis(s.batch_delay_ms) },
        models_dir: a.models_dir.clone(),
        load: LoadOptions { max_tensor_bytes, ..LoadOptions::default() },
        session: a.device.session_options()?,
        api_keys: None,
        rate_limit_per_key: s.rate_limit_key.as_deref().map(RateLimit::parse).transpose()?,
        rate_limit_per_ip: s.rate_limit_ip.as_deref().map(RateLimit::parse).transpose()?,
        ..ServerOptions::default()
    };
    options.wire.max_body_bytes = parse_size(&s.max_body)?;
    if let Some(file) = &a.api_keys {
        let text = std::fs::read_to_string(file).map_err(|e| err!(Io, "cannot read {}: {e}", file.display()))?;
        options.api_keys = Some(ApiKeys::parse(&text).map_err(|e| e.context(file.display()))?);
    }
    if options.rate_limit_per_key.is_some() && options.api_keys.is_none() {
        note!("crx580: note: --rate-limit-key applies to API keys, and no --api-keys file was given");
    }
    let n = models.len();
    let server = Server::start(options, models)?;
    // Tests and scripts read the address (with the chosen port) from this line.
    outln!("crx580 serving {n} model(s) on http://{}", server.local_addr());
    crate::out::flush();
    loop {
        std::thread::park();
    }
}
