//! The socket side: one thread accepts, one thread per open connection (at most
//! `max_connections`; past that a client gets 503 at once) reads requests under the wire limits
//! and hands each to the handler. Inference itself runs on the fixed worker pool
//! (`batching.rs`), so slow clients cost a parked thread, never a worker.

use super::wire::{Connection, ReadFailure, Request, Response, WireLimits};
use crate::{err, Result};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Open connections, so that stopping can close them and wait for their threads.
#[derive(Default)]
struct Open {
    streams: HashMap<u64, (TcpStream, Option<JoinHandle<()>>)>,
}

pub struct Listener {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    open: Arc<Mutex<Open>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn bind(addr: &str, max_connections: usize, limits: WireLimits, handler: Handler) -> Result<Listener> {
        let listener = TcpListener::bind(addr).map_err(|e| err!(Io, "cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Open::default()));
        let (stop, conns) = (stopping.clone(), open.clone());
        let accept_thread = std::thread::Builder::new()
            .name("crx580-accept".into())
            .spawn(move || accept_loop(listener, max_connections, limits, handler, stop, conns))
            .map_err(|e| err!(Io, "cannot start the accept thread: {e}"))?;
        Ok(Listener { addr: local, stopping, open, accept_thread: Some(accept_thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection (a request being answered finishes first) and
    /// waits for their threads.
    pub fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept call with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let threads: Vec<JoinHandle<()>> = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.streams
                .drain()
                .filter_map(|(_, (stream, thread))| {
                    // Only the reading half: a response being written still goes out.
                    let _ = stream.shutdown(Shutdown::Read);
                    thread
                })
                .collect()
        };
        threads.into_iter().for_each(|t| {
            let _ = t.join();
        });
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    limits: WireLimits,
    handler: Handler,
    stopping: Arc<AtomicBool>,
    open: Arc<Mutex<Open>>,
) {
    let next_id = AtomicU64::new(0);
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors and the like: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        let _ = stream.set_nodelay(true);
        let mut guard = open.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished connections' entries (their threads removed themselves or are ending).
        guard.streams.retain(|_, (_, t)| t.as_ref().is_none_or(|t| !t.is_finished()));
        if guard.streams.len() >= max_connections {
            drop(guard);
            refuse(stream);
            continue;
        }
        let Ok(clone) = stream.try_clone() else { continue };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (handler, limits, stopping, conns) = (handler.clone(), limits.clone(), stopping.clone(), open.clone());
        let thread = std::thread::Builder::new().name("crx580-conn".into()).spawn(move || {
            serve_connection(Connection::new(stream, peer.ip()), &limits, &*handler, &stopping);
            conns.lock().unwrap_or_else(|e| e.into_inner()).streams.remove(&id);
        });
        if let Ok(thread) = thread {
            guard.streams.insert(id, (clone, Some(thread)));
        }
    }
}

/// 503 to a connection over the cap, without reading its request.
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let r = Response::error(503, "the server has too many open connections; try again").with_header("Retry-After", "1");
    let _ = stream.write_all(&super::wire::serialize(&r, false, true));
    linger(&stream);
}

/// Closes after an early answer (413, 503) without resetting the connection: closing a socket
/// with unread bytes in it sends RST, and the client may then lose the answer. So stop writing,
/// read and drop what the client still sends (up to 1 MiB or half a second), then close.
fn linger(stream: &TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 16 << 10];
    let mut left = 1usize << 20;
    let mut reader = stream;
    while left > 0 {
        match reader.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn serve_connection(
    mut conn: Connection,
    limits: &WireLimits,
    handler: &dyn Fn(&Request) -> Response,
    stopping: &AtomicBool,
) {
    while !stopping.load(Ordering::SeqCst) {
        match conn.read_request(limits) {
            Ok(request) => {
                let head_only = request.method == "HEAD";
                // A handler bug answers 500 and the connection thread lives on.
                let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&request)))
                    .unwrap_or_else(|_| Response::error(500, "internal error while handling the request (a bug)"));
                let close = !request.keep_alive || stopping.load(Ordering::SeqCst);
                if conn.write_response(&response, head_only, close, limits).is_err() || close {
                    break;
                }
            }
            Err(ReadFailure::Closed) => break,
            Err(ReadFailure::Reject(response)) => {
                let _ = conn.write_response(&response, false, true, limits);
                linger(conn.stream());
                break;
            }
        }
    }
    let _ = conn.stream().shutdown(Shutdown::Both);
}
