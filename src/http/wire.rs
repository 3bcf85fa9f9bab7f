//! HTTP/1.1 framing: reading one request off a connection and writing one response, within limits.
//!
//! Our own rather than tiny_http's: tiny_http 0.12 reads header lines without a length limit (one
//! endless line grows a buffer until memory runs out), sets no read timeouts (a client that sends
//! half a request holds its thread forever, and a stalled body blocks the worker reading it) and
//! spawns a thread per connection without bound. Here every read has a deadline, the head has a
//! byte cap, the body a size cap checked before it is read, and the listener caps connections.
//! Bodies need `Content-Length` (every client we serve sends it); chunked request bodies get 411.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

/// Limits on what one connection may send and how slowly.
#[derive(Debug, Clone)]
pub struct WireLimits {
    /// Request line plus headers, in bytes.
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
    /// From the first byte of a request to the end of its headers.
    pub head_timeout: Duration,
    /// For the whole body, from the end of the headers.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for WireLimits {
    fn default() -> WireLimits {
        WireLimits {
            max_head_bytes: 16 << 10,
            max_body_bytes: 16 << 20,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string, percent-decoded.
    pub path: String,
    pub query: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: IpAddr,
    /// Whether the client asked to keep the connection open after this request.
    pub keep_alive: bool,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A request made in code, for tests and for the C ABI's in-process calls.
    pub fn new(method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: headers.iter().map(|&(n, v)| (n.into(), v.into())).collect(),
            body,
            peer: IpAddr::from([127, 0, 0, 1]),
            keep_alive: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status, content_type, headers: Vec::new(), body }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string().into_bytes())
    }

    /// A JSON error body, `{"error": message}`: the shape the Open Inference Protocol gives
    /// errors, used by every route.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Why no request came off the connection.
#[derive(Debug)]
pub enum ReadFailure {
    /// The client closed the connection, or kept it idle past the idle timeout: close quietly.
    Closed,
    /// The request was bad or too slow: answer with this, then close (the rest of the stream
    /// cannot be trusted to start at a request boundary).
    Reject(Response),
}

/// Reads requests off one connection; bytes read past the end of one request (a pipelined next
/// request) are kept for the next call.
pub struct Connection {
    stream: TcpStream,
    peer: IpAddr,
    buffer: Vec<u8>,
}

impl Connection {
    pub fn new(stream: TcpStream, peer: IpAddr) -> Connection {
        Connection { stream, peer, buffer: Vec::new() }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn read_request(&mut self, limits: &WireLimits) -> Result<Request, ReadFailure> {
        // Wait for the first byte under the idle timeout, then for the rest of the head.
        if self.buffer.is_empty() {
            let idle_deadline = Instant::now() + limits.idle_timeout;
            match self.fill(idle_deadline) {
                Ok(0) | Err(_) => return Err(ReadFailure::Closed),
                Ok(_) => {}
            }
        }
        let head_deadline = Instant::now() + limits.head_timeout;
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buffer) {
                break end;
            }
            if self.buffer.len() > limits.max_head_bytes {
                return Err(reject(431, "the request line and headers exceed the server's limit"));
            }
            match self.fill(head_deadline) {
                Ok(0) => return Err(ReadFailure::Closed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(reject(408, "the request headers did not arrive in time")),
                Err(_) => return Err(ReadFailure::Closed),
            }
        };
        if head_end > limits.max_head_bytes {
            return Err(reject(431, "the request line and headers exceed the server's limit"));
        }
        let head = self.buffer[..head_end].to_vec();
        self.buffer.drain(..head_end);
        let mut request = parse_head(&head, self.peer).map_err(|m| reject(400, &m))?;
        let length = body_length(&request).map_err(ReadFailure::Reject)?;
        if length > limits.max_body_bytes {
            return Err(reject(
                413,
                &format!("the body is {length} bytes, over the server's limit of {} bytes", limits.max_body_bytes),
            ));
        }
        let expects_continue = request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && length > self.buffer.len() {
            // curl sends Expect for bodies over 1 KiB and waits a second for this before sending.
            let _ = self.stream.set_write_timeout(Some(limits.write_timeout));
            if self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                return Err(ReadFailure::Closed);
            }
        }
        let body_deadline = Instant::now() + limits.body_timeout;
        while self.buffer.len() < length {
            match self.fill(body_deadline) {
                Ok(0) => return Err(ReadFailure::Closed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(reject(408, "the request body did not arrive in time")),
                Err(_) => return Err(ReadFailure::Closed),
            }
        }
        request.body = self.buffer.drain(..length).collect();
        Ok(request)
    }

    /// Reads once into the buffer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16 << 10];
        let n = self.stream.read(&mut chunk)?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Writes a response; `close` adds `Connection: close`. HEAD responses carry no body.
    pub fn write_response(
        &mut self,
        r: &Response,
        head_only: bool,
        close: bool,
        limits: &WireLimits,
    ) -> io::Result<()> {
        self.stream.set_write_timeout(Some(limits.write_timeout))?;
        self.stream.write_all(&serialize(r, head_only, close))?;
        self.stream.flush()
    }
}

fn reject(status: u16, message: &str) -> ReadFailure {
    ReadFailure::Reject(Response::error(status, message))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Where the head ends (after its blank line), if the buffer holds all of it.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(head: &[u8], peer: IpAddr) -> Result<Request, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line '{}'", printable(request_line)));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("malformed method '{}'", printable(method)));
    }
    let keep_alive_default = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(format!("unsupported HTTP version '{}'", printable(version))),
    };
    if !target.starts_with('/') {
        return Err("the request target must be a path starting with '/'".into());
    }
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(raw_path).ok_or_else(|| format!("malformed path '{}'", printable(raw_path)))?;
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line '{}'", printable(line)));
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!("malformed header name '{}'", printable(name)));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!("header '{name}' has control characters"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
        if headers.len() > 100 {
            return Err("more than 100 headers".into());
        }
    }
    let connection =
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("connection")).map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => keep_alive_default,
    };
    Ok(Request { method: method.into(), path, query: query.into(), headers, body: Vec::new(), peer, keep_alive })
}

/// The body length from `Content-Length`; none means an empty body.
fn body_length(r: &Request) -> Result<usize, Response> {
    if r.header("transfer-encoding").is_some() {
        return Err(Response::error(411, "chunked request bodies are not supported: send Content-Length"));
    }
    let mut length = None;
    for (_, v) in r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        let n: usize = v
            .parse()
            .ok()
            .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| Response::error(400, &format!("malformed Content-Length '{}'", printable(v))))?;
        if length.is_some_and(|l| l != n) {
            return Err(Response::error(400, "conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// `%XX` escapes decoded; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Text from a client, shortened and with control characters escaped, fit for an error message.
pub fn printable(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    let escaped = short.escape_debug().to_string();
    if s.chars().count() > 80 {
        format!("{escaped}...")
    } else {
        escaped
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

pub fn serialize(r: &Response, head_only: bool, close: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&r.body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Request, String> {
        parse_head(head.as_bytes(), IpAddr::from([127, 0, 0, 1]))
    }

    #[test]
    fn heads_parse_with_query_and_escapes() {
        let r = parse("GET /v2/models/a%20b/ready?x=1 HTTP/1.1\r\nHost: h\r\nX-Key:  k \r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_str()), ("GET", "/v2/models/a b/ready", "x=1"));
        assert_eq!(r.header("x-key"), Some("k"));
        assert!(r.keep_alive);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(!parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET x HTTP/1.1\r\n\r\n",
            "GET /%zz HTTP/1.1\r\n\r\n",
            "GET /%ff HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            "GET / HTTP/1.1\r\nName: a\x01b\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_lengths_are_checked() {
        let with = |h: &str| parse(&format!("POST / HTTP/1.1\r\n{h}\r\n\r\n")).unwrap();
        assert_eq!(body_length(&with("Content-Length: 12")).unwrap(), 12);
        for bad in ["Content-Length: -1", "Content-Length: 1x", "Content-Length: 99999999999999999999999"] {
            assert_eq!(body_length(&with(bad)).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(body_length(&with("Content-Length: 1\r\nContent-Length: 2")).unwrap_err().status, 400);
        assert_eq!(body_length(&with("Transfer-Encoding: chunked")).unwrap_err().status, 411);
    }
}
