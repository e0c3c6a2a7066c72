//! A small HTTP/1.1 server: one thread per connection, a bounded number of
//! connections, a timeout on every read and write, and a body limit enforced before
//! the body is read.
//!
//! Why not a server crate: the candidates that are synchronous and small (tiny_http
//! 0.12) set no socket timeouts (a client that sends headers and then stalls its body
//! pins a worker for good), spawn a thread per connection without a bound, and stop
//! accepting for good after one `accept` error (e.g. running out of descriptors). So
//! this module owns the connections, deadlines and limits, and leaves the request-head
//! syntax to `httparse` (hyper's parser). The API needs little else of HTTP: a
//! `Content-Length` or chunked body, keep-alive and `Expect: 100-continue` (curl sends
//! it for bodies over 1 KiB).
//!
//! The connection thread runs the handler itself, so the number of requests served at
//! once is bounded by `max_connections`; with keep-alive, a benchmark's 64
//! connections are 64 requests in flight, which the engine batches into few appends.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Limits and timeouts of the server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Most bytes of the request line and headers together.
    pub max_header_bytes: usize,
    /// Most bytes of a request body; larger bodies are answered `413` unread.
    pub max_body_bytes: u64,
    /// How long a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long the request line, headers and body of one request may take to arrive.
    pub request_timeout: Duration,
    /// How long writing one response may take.
    pub write_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            max_connections: 1024,
            max_header_bytes: 64 << 10,
            max_body_bytes: (1 << 20) + 1024,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// The method, as sent (`GET`, `PUT`, ...).
    pub method: String,
    /// The path of the target, still percent-encoded.
    pub path: String,
    /// The query string after `?`, if any.
    pub query: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// One response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` (omitted for an empty body).
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response without a body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: Vec::new(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// An error in the API's shape: `{"error": ..., "applied": ...}` when `applied` is
    /// given (writes), `{"error": ...}` otherwise.
    pub fn error(status: u16, message: &str, applied: Option<serde_json::Value>) -> Response {
        let mut v = serde_json::json!({ "error": message });
        if let Some(applied) = applied {
            v["applied"] = applied;
        }
        Response::json(status, &v)
    }
}

/// What serves requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Runs on the connection's thread; may block (a write waits
    /// for its commit) but must return within the engine's request timeout.
    fn handle(&self, request: Request) -> Response;
}

/// A running server; [`HttpServer::shutdown`] stops it.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

// Pause after an accept error (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl HttpServer {
    /// Binds `addr` and starts accepting.
    pub fn start(
        addr: &str,
        config: HttpConfig,
        handler: Arc<dyn Handler>,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept_stop = Arc::clone(&stop);
        let accept = std::thread::Builder::new()
            .name("keel-http-accept".into())
            .spawn(move || accept_loop(listener, config, handler, accept_stop))?;
        Ok(HttpServer {
            local_addr,
            stop,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections. Connections already open finish the request they
    /// are serving and then close (their threads are not joined: an idle keep-alive
    /// connection would hold shutdown up for its idle timeout).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop, which blocks in accept().
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    config: HttpConfig,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Acquire) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                std::thread::sleep(ACCEPT_ERROR_PAUSE);
                continue;
            }
        };
        if stop.load(Ordering::Acquire) {
            break;
        }
        if active.load(Ordering::Acquire) >= config.max_connections {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let resp = Response::error(503, "too many connections; retry later", None);
            let _ = write_response(&mut &stream, &resp, true);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let conn = Connection {
            config: config.clone(),
            handler: Arc::clone(&handler),
            stop: Arc::clone(&stop),
        };
        let guard = ActiveGuard(Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("keel-http".into())
            .spawn(move || {
                let _guard = guard;
                conn.serve(stream);
            });
        if let Err(e) = spawned {
            // The closure (and its guard) was dropped with the error.
            log::warn!("http: cannot start a connection thread: {e}");
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Connection {
    config: HttpConfig,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
}

/// Why reading a request ended without one.
enum ReadOutcome {
    /// A request to serve; `close` when the connection ends after it.
    Request(Request, bool),
    /// The client closed the connection or went idle: just close.
    Closed,
    /// A bad request: answer this and close.
    Reject(Response),
}

impl Connection {
    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if stream
            .set_write_timeout(Some(self.config.write_timeout))
            .is_err()
        {
            return;
        }
        let Ok(write_half) = stream.try_clone() else {
            return;
        };
        let mut writer = io::BufWriter::new(write_half);
        let mut reader = BufReader::new(stream);
        // Bounded: every turn reads a request within the idle and request timeouts or
        // ends the connection.
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            match self.read_request(&mut reader, &mut writer) {
                ReadOutcome::Request(req, close) => {
                    let close = close || self.stop.load(Ordering::Acquire);
                    let resp = self.handler.handle(req);
                    if write_response(&mut writer, &resp, close).is_err() || close {
                        break;
                    }
                }
                ReadOutcome::Closed => break,
                ReadOutcome::Reject(resp) => {
                    let _ = write_response(&mut writer, &resp, true);
                    break;
                }
            }
        }
        let _ = reader.get_ref().shutdown(Shutdown::Both);
    }

    fn read_request(
        &self,
        reader: &mut BufReader<TcpStream>,
        writer: &mut impl Write,
    ) -> ReadOutcome {
        // Idle: wait for the first byte of the next request.
        if reader
            .get_ref()
            .set_read_timeout(Some(self.config.idle_timeout))
            .is_err()
        {
            return ReadOutcome::Closed;
        }
        match reader.fill_buf() {
            Ok([]) | Err(_) => return ReadOutcome::Closed,
            Ok(_) => {}
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let head = match read_head(reader, self.config.max_header_bytes, deadline) {
            Ok(Some(h)) => h,
            Ok(None) => {
                return ReadOutcome::Reject(Response::error(
                    431,
                    "request line and headers are too large",
                    None,
                ))
            }
            Err(e) if is_timeout(&e) => {
                return ReadOutcome::Reject(Response::error(408, "request timed out", None))
            }
            Err(_) => return ReadOutcome::Closed,
        };
        let head = match parse_head(&head) {
            Ok(h) => h,
            Err(why) => return ReadOutcome::Reject(Response::error(400, why, None)),
        };
        let max = self.config.max_body_bytes;
        if head.content_length.is_some_and(|n| n > max) {
            return ReadOutcome::Reject(Response::error(
                413,
                &format!("request body is larger than {max} bytes"),
                Some(serde_json::Value::Bool(false)),
            ));
        }
        let has_body = head.chunked || head.content_length.is_some_and(|n| n > 0);
        if head.expect_continue && has_body {
            let sent = writer
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| writer.flush());
            if sent.is_err() {
                return ReadOutcome::Closed;
            }
        }
        let body = if head.chunked {
            read_chunked(reader, max, deadline)
        } else {
            read_sized(reader, head.content_length.unwrap_or(0), deadline)
        };
        let body = match body {
            Ok(Some(b)) => b,
            Ok(None) => {
                return ReadOutcome::Reject(Response::error(
                    413,
                    &format!("request body is larger than {max} bytes"),
                    Some(serde_json::Value::Bool(false)),
                ))
            }
            Err(e) if is_timeout(&e) => {
                return ReadOutcome::Reject(Response::error(408, "request timed out", None))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return ReadOutcome::Reject(Response::error(400, "malformed chunked body", None))
            }
            Err(_) => return ReadOutcome::Closed,
        };
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (head.target.clone(), None),
        };
        ReadOutcome::Request(
            Request {
                method: head.method,
                path,
                query,
                body,
            },
            head.close,
        )
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// Sets the socket's read timeout to what is left until `deadline`.
fn arm(reader: &BufReader<TcpStream>, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "request deadline"));
    }
    reader.get_ref().set_read_timeout(Some(left))
}

/// Reads up to and including the blank line after the headers. `Ok(None)` when they
/// exceed `max_bytes`.
fn read_head(
    reader: &mut BufReader<TcpStream>,
    max_bytes: usize,
    deadline: Instant,
) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    // Bounded by max_bytes: every turn adds at least one byte or returns.
    loop {
        arm(reader, deadline)?;
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let before = head.len();
        let take = buf.len().min(max_bytes + 1 - before.min(max_bytes));
        head.extend_from_slice(&buf[..take]);
        // Look for the end in what is new (plus 3 bytes of overlap).
        let from = before.saturating_sub(3);
        if let Some(pos) = find(&head[from..], b"\r\n\r\n") {
            let end = from + pos + 4;
            reader.consume(end - before);
            head.truncate(end);
            return Ok(Some(head));
        }
        reader.consume(take);
        if head.len() > max_bytes {
            return Ok(None);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Head {
    method: String,
    target: String,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    expect_continue: bool,
}

// Most header lines in one request; curl and wrk send fewer than ten.
const MAX_HEADERS: usize = 64;

// The request line and header syntax are httparse's (hyper's parser); this function
// only applies the API's rules to what it found.
fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header lines"),
        Err(httparse::Error::Version) => {
            return Err("unsupported HTTP version (HTTP/1.0 and 1.1 are)")
        }
        Err(_) => return Err("malformed request head"),
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err("malformed request line");
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method");
    }
    if !target.starts_with('/') {
        return Err("the request target must be a path");
    }
    let http10 = minor_version == 0;
    let mut h = Head {
        method: method.to_string(),
        target: target.to_string(),
        content_length: None,
        chunked: false,
        close: http10,
        expect_continue: false,
    };
    for header in req.headers.iter() {
        let name = header.name;
        let value =
            std::str::from_utf8(header.value).map_err(|_| "a header value is not valid UTF-8")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("malformed Content-Length")?;
            if h.content_length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length headers");
            }
            h.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err("unsupported Transfer-Encoding (only chunked is)");
            }
            h.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                h.close = true;
            } else if v.contains("keep-alive") {
                h.close = false;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err("unsupported Expect header");
            }
            h.expect_continue = true;
        }
    }
    if h.chunked && h.content_length.is_some() {
        return Err("both Content-Length and chunked encoding");
    }
    Ok(h)
}

fn read_sized(
    reader: &mut BufReader<TcpStream>,
    len: u64,
    deadline: Instant,
) -> io::Result<Option<Vec<u8>>> {
    // len was checked against the body limit, so it fits in memory.
    let mut body = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < body.len() {
        arm(reader, deadline)?;
        let n = reader.read(&mut body[filled..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(Some(body))
}

// Most bytes of a chunk-size line (hex digits and extensions).
const MAX_CHUNK_LINE_BYTES: usize = 1024;

fn read_line(
    reader: &mut BufReader<TcpStream>,
    deadline: Instant,
    max_bytes: usize,
) -> io::Result<String> {
    let mut line = Vec::new();
    // Bounded by max_bytes.
    loop {
        arm(reader, deadline)?;
        let mut byte = [0u8; 1];
        if reader.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return String::from_utf8(line).map_err(|_| io::ErrorKind::InvalidData.into());
        }
        line.push(byte[0]);
        if line.len() > max_bytes {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

fn read_chunked(
    reader: &mut BufReader<TcpStream>,
    max_bytes: u64,
    deadline: Instant,
) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    // Bounded by max_bytes: each chunk adds its size or ends the body.
    loop {
        let line = read_line(reader, deadline, MAX_CHUNK_LINE_BYTES)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| io::ErrorKind::InvalidData)?;
        if size == 0 {
            // Trailers, up to the blank line.
            for _ in 0..64 {
                if read_line(reader, deadline, MAX_CHUNK_LINE_BYTES)?.is_empty() {
                    return Ok(Some(body));
                }
            }
            return Err(io::ErrorKind::InvalidData.into());
        }
        if body.len() as u64 + size > max_bytes {
            return Ok(None);
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        let mut filled = start;
        while filled < body.len() {
            arm(reader, deadline)?;
            let n = reader.read(&mut body[filled..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
        }
        if !read_line(reader, deadline, 2)?.is_empty() {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

fn write_response(w: &mut impl Write, resp: &Response, close: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if resp.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        if !resp.body.is_empty() {
            head.push_str(&format!("Content-Type: {}\r\n", resp.content_type));
        }
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if resp.status != 204 {
        w.write_all(&resp.body)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_head() {
        let h = parse_head(b"PUT /kv/a%20b?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.method, "PUT");
        assert_eq!(h.target, "/kv/a%20b?x=1");
        assert_eq!(h.content_length, Some(3));
        assert!(!h.close);
    }

    #[test]
    fn refuses_malformed_heads() {
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
