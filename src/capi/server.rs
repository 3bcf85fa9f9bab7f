//! The model server from C: `crx_server_start` serves a set of loaded models over HTTP (the same
//! server as `crx580 serve`: the Open Inference Protocol v2, the simple endpoints, metrics) on
//! threads of its own, `crx_server_port` says where, `crx_server_stop` stops and frees it.
//!
//! The functions exist in every build so that the ABI does not depend on cargo features; a library
//! built without the `http` feature answers `CRX_ERR_UNSUPPORTED`.

use super::boundary::{write_struct, CallError, CallResult};
use super::crx_status;
use super::handles::{lookup, release};
use super::model::{crx_model, utf8};
use super::session::crx_session_options;
use std::ffi::c_char;

/// A running HTTP server. Made by `crx_server_start`, stopped and freed by `crx_server_stop`.
/// The handle may be shared across threads.
pub struct crx_server {
    _opaque: [u8; 0],
}

/// How a server listens and runs. Fill it with `crx_server_options_default`, then change fields.
/// Append-only, like every options struct.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct crx_server_options {
    /// `sizeof(crx_server_options)` as the caller was compiled; set by
    /// `crx_server_options_default`.
    pub struct_size: usize,
    /// The IPv4 or IPv6 address to listen on (UTF-8, read during the call; not a host name, so
    /// that starting never waits on a resolver); NULL (the default) means "127.0.0.1", loopback
    /// only. "0.0.0.0" listens on every interface.
    pub host: *const c_char,
    /// The TCP port; 0 (the default) lets the system pick a free one (see `crx_server_port`).
    pub port: u16,
    /// Inference worker threads; 0 (the default) means one per core.
    pub workers: u32,
    /// Requests for one model are stacked along dim 0 up to this many rows when the model allows
    /// it; 0 or 1 (the default) means no batching.
    pub max_batch: u32,
    /// How long a batch waits for more requests, in milliseconds. Default 0.
    pub batch_delay_ms: u32,
    /// A request's deadline when it names none, in milliseconds; 0 means the default (60 s).
    pub request_timeout_ms: u64,
    /// The largest request body in bytes; 0 means the default (16 MiB).
    pub max_body_bytes: u64,
    /// The only folder models may be loaded from over HTTP (UTF-8, copied during the call); NULL
    /// (the default) refuses loading at run time.
    pub models_dir: *const c_char,
    /// A file of API keys, one `KEY ROLE` a line (README, "Serving over HTTP"), read during the
    /// call; NULL (the default) means no key is needed.
    pub api_keys_file: *const c_char,
    /// How the server's sessions are made (device, threads, limits); NULL (the default) means
    /// `crx_session_options_default`'s. Read during the call.
    pub session: *const crx_session_options,
}

fn default_server_options() -> crx_server_options {
    crx_server_options {
        struct_size: std::mem::size_of::<crx_server_options>(),
        host: std::ptr::null(),
        port: 0,
        workers: 0,
        max_batch: 1,
        batch_delay_ms: 0,
        request_timeout_ms: 0,
        max_body_bytes: 0,
        models_dir: std::ptr::null(),
        api_keys_file: std::ptr::null(),
        session: std::ptr::null(),
    }
}

/// The first (and so far only) version of the struct.
const SERVER_OPTIONS_V1_SIZE: usize = std::mem::size_of::<crx_server_options>();

/// Fills `*options` with the defaults. `struct_size` is `sizeof(crx_server_options)` as the caller
/// was compiled (it is stored in `options->struct_size`).
///
/// # Safety
/// `options` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn crx_server_options_default(
    options: *mut crx_server_options,
    struct_size: usize,
) -> crx_status {
    ffi_boundary!("crx_server_options_default", non_null: [options], {
        let defaults = crx_server_options { struct_size, ..default_server_options() };
        write_struct(options, &defaults, struct_size, SERVER_OPTIONS_V1_SIZE)
    })
}

#[cfg(feature = "http")]
pub(crate) struct ServerEntry {
    server: crate::http::Server,
}

#[cfg(not(feature = "http"))]
pub(crate) struct ServerEntry {
    _never: std::convert::Infallible,
}

/// The caller's models under their names, each model's handle checked.
///
/// # Safety
/// `models` and `names` must point to `count` readable pointers.
unsafe fn named_models(
    models: *const *const crx_model,
    names: *const *const c_char,
    count: usize,
) -> CallResult<Vec<(String, crate::Model)>> {
    let (models, names) = (std::slice::from_raw_parts(models, count), std::slice::from_raw_parts(names, count));
    let mut named = Vec::with_capacity(count);
    for (i, (&model, &name)) in models.iter().zip(names).enumerate() {
        if name.is_null() {
            return Err(CallError::null(&format!("names[{i}]")));
        }
        let name = utf8(name, &format!("names[{i}]"))?.to_string();
        if named.iter().any(|(n, _)| *n == name) {
            return Err(CallError::invalid_argument(format!("names[{i}]: '{name}' is given twice")));
        }
        named.push((name, lookup(model, &format!("models[{i}]"))?.model.clone()));
    }
    Ok(named)
}

/// The Rust server's options from the caller's struct (NULL for the defaults).
#[cfg(feature = "http")]
unsafe fn server_options(options: *const crx_server_options) -> CallResult<crate::http::ServerOptions> {
    use crate::http::{ApiKeys, BatchConfig, ServerOptions};
    use std::time::Duration;
    let o = if options.is_null() {
        default_server_options()
    } else {
        super::boundary::read_options(options, default_server_options(), SERVER_OPTIONS_V1_SIZE)?
    };
    let host = if o.host.is_null() { "127.0.0.1" } else { utf8(o.host, "options->host")? };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| CallError::invalid_argument(format!("options->host '{host}' is not an IP address")))?;
    let addr = std::net::SocketAddr::new(ip, o.port).to_string();
    let mut server = ServerOptions {
        addr,
        workers: o.workers as usize,
        batch: BatchConfig {
            max_batch: o.max_batch.max(1) as usize,
            delay: Duration::from_millis(o.batch_delay_ms.into()),
        },
        session: super::session::session_options(o.session)?,
        ..ServerOptions::default()
    };
    if o.request_timeout_ms != 0 {
        server.default_deadline = Duration::from_millis(o.request_timeout_ms);
    }
    if o.max_body_bytes != 0 {
        server.wire.max_body_bytes = usize::try_from(o.max_body_bytes).unwrap_or(usize::MAX);
    }
    if !o.models_dir.is_null() {
        server.models_dir = Some(utf8(o.models_dir, "options->models_dir")?.into());
    }
    if !o.api_keys_file.is_null() {
        let file = utf8(o.api_keys_file, "options->api_keys_file")?;
        let text =
            std::fs::read_to_string(file).map_err(|e| crate::err!(Io, "options->api_keys_file '{file}': {e}"))?;
        server.api_keys = Some(ApiKeys::parse(&text).map_err(|e| e.context(file))?);
    }
    // Models loaded over HTTP get the same tensor limit as the server's sessions.
    server.load.max_tensor_bytes = server.session.max_tensor_bytes;
    Ok(server)
}

/// Starts an HTTP server on `count` loaded models, served under `names[i]` (UTF-8, distinct,
/// copied during the call); `options` may be NULL for the defaults (127.0.0.1, a free port). The
/// server makes its own sessions from the models, so the caller may free the model handles once
/// this returns. It runs on threads of its own until `crx_server_stop`. On success `*server` is a
/// new handle; on error (a bad name, an address in use, a model that cannot be compiled, or a
/// build without the `http` feature: `CRX_ERR_UNSUPPORTED`) it is untouched.
///
/// # Safety
/// `models` and `names` must point to `count` readable pointers (they may be NULL when `count` is
/// 0); `options` NULL or filled by `crx_server_options_default`; `server` must point to writable
/// memory.
#[no_mangle]
pub unsafe extern "C" fn crx_server_start(
    models: *const *const crx_model,
    names: *const *const c_char,
    count: usize,
    options: *const crx_server_options,
    server: *mut *mut crx_server,
) -> crx_status {
    ffi_boundary!("crx_server_start", non_null: [server], {
        if count > 0 && models.is_null() {
            return Err(CallError::null("models"));
        }
        if count > 0 && names.is_null() {
            return Err(CallError::null("names"));
        }
        let named = if count == 0 { Vec::new() } else { named_models(models, names, count)? };
        start(named, options, server)
    })
}

#[cfg(feature = "http")]
unsafe fn start(
    named: Vec<(String, crate::Model)>,
    options: *const crx_server_options,
    server: *mut *mut crx_server,
) -> CallResult {
    let started = crate::http::Server::start(server_options(options)?, named)?;
    *server = super::handles::register(ServerEntry { server: started });
    Ok(())
}

#[cfg(not(feature = "http"))]
unsafe fn start(
    _named: Vec<(String, crate::Model)>,
    _options: *const crx_server_options,
    _server: *mut *mut crx_server,
) -> CallResult {
    Err(CallError::new(
        super::boundary::CRX_ERR_UNSUPPORTED,
        "this build of crx580 has no HTTP server (cargo feature 'http')",
    ))
}

/// Writes the TCP port the server listens on to `*port` (the one the system chose when
/// `options->port` was 0).
///
/// # Safety
/// `port` must be NULL or point to writable memory.
#[no_mangle]
pub unsafe extern "C" fn crx_server_port(server: *const crx_server, port: *mut u16) -> crx_status {
    ffi_boundary!("crx_server_port", non_null: [port], {
        let entry = lookup(server, "server")?;
        #[cfg(feature = "http")]
        {
            *port = entry.server.local_addr().port();
        }
        #[cfg(not(feature = "http"))]
        let _ = entry;
        Ok(())
    })
}

/// Stops a server and frees it: no new connection is accepted, the requests in progress are
/// answered, then the call returns. NULL is a no-op; so is a handle already stopped.
///
/// # Safety
/// `server` must be NULL or a handle from this library.
#[no_mangle]
pub unsafe extern "C" fn crx_server_stop(server: *mut crx_server) {
    ffi_boundary!("crx_server_stop", non_null: [], { release(server, "server") });
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;
    use crate::capi::{crx_model_free, crx_model_load, crx_status_name, CRX_ERR_INVALID_HANDLE, CRX_OK};
    use std::ffi::{CStr, CString};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::ptr::{null, null_mut};

    fn status(s: crx_status) -> &'static str {
        unsafe { CStr::from_ptr(crx_status_name(s)) }.to_str().unwrap()
    }

    #[test]
    fn a_server_on_a_loaded_model_answers_then_stops() {
        let path = CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/golden/mlp/model.onnx")).unwrap();
        let mut model = null_mut();
        assert_eq!(status(unsafe { crx_model_load(path.as_ptr(), null(), &mut model) }), "CRX_OK");
        let name = CString::new("mlp").unwrap();
        let (models, names) = ([model.cast_const()], [name.as_ptr()]);
        let mut options = default_server_options();
        options.struct_size = 8;
        let mut server = null_mut();
        let s = unsafe { crx_server_start(models.as_ptr(), names.as_ptr(), 1, &options, &mut server) };
        assert_eq!((status(s), server.is_null()), ("CRX_ERR_INVALID_ARGUMENT", true));
        let s = unsafe { crx_server_start(models.as_ptr(), names.as_ptr(), 1, null(), &mut server) };
        assert_eq!(s, CRX_OK);
        unsafe { crx_model_free(model) }; // the server has its own session
        let mut port = 0u16;
        assert_eq!(unsafe { crx_server_port(server, &mut port) }, CRX_OK);

        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"GET /v2/models/mlp HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"probs\""), "{answer}");

        unsafe { crx_server_stop(server) };
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still listening after crx_server_stop");
        assert_eq!(unsafe { crx_server_port(server, &mut port) }, CRX_ERR_INVALID_HANDLE);
        unsafe { crx_server_stop(server) };
    }
}
