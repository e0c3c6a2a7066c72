//! A small HTTP/1.1 server: one thread per connection, a bounded number of
//! connections, deadlines for a whole request and a whole response, idle connections
//! that give up their slot to new clients, and a body limit enforced before the body
//! is read (chunked bodies: as each chunk size arrives, with checked arithmetic).
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
//!
//! Limits on what a client can hold: a connection waiting for a request (new, or kept
//! alive between requests) is *idle*: it waits at most `idle_timeout`, and when a new
//! client finds all `max_connections` slots taken, the oldest idle connection is closed
//! to make room (only busy connections make the server answer 503). Once a request's
//! first byte arrives, its head and body must arrive within `request_timeout` (else
//! 408); writing its response must finish within `response_timeout` in all, however
//! the client paces its reads (else the connection is closed).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Limits and timeouts of the server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Connections open at once. A new client beyond it takes the slot of the oldest
    /// idle connection, which is closed; with none idle it is answered `503`.
    pub max_connections: usize,
    /// Most bytes of the request line and headers together.
    pub max_header_bytes: usize,
    /// Most bytes of a request body; larger bodies are answered `413` unread.
    pub max_body_bytes: u64,
    /// How long a connection may wait for the first byte of its next request (or of
    /// its first, when new) before it is closed.
    pub idle_timeout: Duration,
    /// How long the request line, headers and body of one request may take to arrive,
    /// from its first byte; slower requests are answered `408` and closed.
    pub request_timeout: Duration,
    /// How long writing one whole response may take (all of it, not each write: a
    /// client reading a byte at a time cannot stretch it); then the connection closes.
    pub response_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            max_connections: 1024,
            max_header_bytes: 64 << 10,
            max_body_bytes: (1 << 20) + 1024,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
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
    slots: Arc<Slots>,
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
        let slots = Arc::new(Slots::new(config.max_connections));
        let (accept_stop, accept_slots) = (Arc::clone(&stop), Arc::clone(&slots));
        let accept = std::thread::Builder::new()
            .name("keel-http-accept".into())
            .spawn(move || accept_loop(listener, config, handler, accept_stop, accept_slots))?;
        Ok(HttpServer {
            local_addr,
            stop,
            slots,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many connections are idle (waiting for a request).
    #[cfg(test)]
    fn idle_connections(&self) -> usize {
        self.slots.inner.lock().idle.len()
    }

    /// Stops accepting connections and closes the idle ones. Connections serving a
    /// request finish it and then close (their threads are not joined).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop, which blocks in accept().
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.slots.close_idle();
    }
}

fn accept_loop(
    listener: TcpListener,
    config: HttpConfig,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
    slots: Arc<Slots>,
) {
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
        if !slots.admit() {
            let _ = stream.set_write_timeout(Some(REFUSAL_WRITE_TIMEOUT));
            let resp = Response::error(503, "too many connections; retry later", None);
            let _ = write_response(&mut &stream, &resp, true);
            continue;
        }
        let conn = Connection {
            config: config.clone(),
            handler: Arc::clone(&handler),
            stop: Arc::clone(&stop),
        };
        let mut slot = Slot {
            slots: Arc::clone(&slots),
            idle: None,
            lost: false,
        };
        let spawned = std::thread::Builder::new()
            .name("keel-http".into())
            .spawn(move || conn.serve(stream, &mut slot));
        if let Err(e) = spawned {
            // The closure (and its slot, given back) was dropped with the error.
            log::warn!("http: cannot start a connection thread: {e}");
        }
    }
}

// How long the accept thread may spend writing a 503 to a client it refuses (the
// answer fits a socket buffer, so this is only reached by a broken peer).
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection slots: how many are taken, and which connections are idle (waiting
/// for a request), so that a new client can take the slot of the oldest idle one.
struct Slots {
    max_connections: usize,
    inner: Mutex<SlotsInner>,
}

struct SlotsInner {
    /// Slots taken, idle connections included.
    taken: usize,
    /// The idle connections by the order they went idle (oldest first), with a handle
    /// to close them by.
    idle: BTreeMap<u64, Arc<TcpStream>>,
    next_ticket: u64,
}

impl Slots {
    fn new(max_connections: usize) -> Slots {
        Slots {
            max_connections,
            inner: Mutex::new(SlotsInner {
                taken: 0,
                idle: BTreeMap::new(),
                next_ticket: 0,
            }),
        }
    }

    /// Takes a slot for a new connection, closing the oldest idle connection if that
    /// is the only way; false when every slot is busy serving a request.
    fn admit(&self) -> bool {
        let mut s = self.inner.lock();
        if s.taken >= self.max_connections {
            let Some((_, oldest)) = s.idle.pop_first() else {
                return false;
            };
            // Its thread wakes from waiting with an error and finds its ticket gone:
            // the slot is handed over here and now, not when that thread gets to run.
            let _ = oldest.shutdown(Shutdown::Both);
            s.taken -= 1;
        }
        s.taken += 1;
        debug_assert!(s.taken <= self.max_connections);
        true
    }

    /// Marks a connection idle, with a handle to close it by.
    fn go_idle(&self, stream: &Arc<TcpStream>) -> u64 {
        let mut s = self.inner.lock();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.idle.insert(ticket, Arc::clone(stream));
        ticket
    }

    /// Marks an idle connection busy again; false if it was closed to free its slot
    /// (which is then no longer its own).
    fn wake(&self, ticket: u64) -> bool {
        self.inner.lock().idle.remove(&ticket).is_some()
    }

    fn release(&self) {
        let mut s = self.inner.lock();
        debug_assert!(s.taken > 0);
        s.taken = s.taken.saturating_sub(1);
    }

    /// Closes every idle connection (at shutdown).
    fn close_idle(&self) {
        let mut s = self.inner.lock();
        let idle = std::mem::take(&mut s.idle);
        s.taken = s.taken.saturating_sub(idle.len());
        for stream in idle.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A connection's slot; given back when dropped, unless it was taken from the
/// connection while idle.
struct Slot {
    slots: Arc<Slots>,
    /// The ticket while idle.
    idle: Option<u64>,
    /// The slot went to a new client while this connection was idle.
    lost: bool,
}

impl Slot {
    fn go_idle(&mut self, stream: &Arc<TcpStream>) {
        self.idle = Some(self.slots.go_idle(stream));
    }

    /// Back from idle; false if the slot was lost meanwhile.
    fn wake(&mut self) -> bool {
        if let Some(ticket) = self.idle.take() {
            self.lost = !self.slots.wake(ticket);
        }
        !self.lost
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.wake() {
            self.slots.release();
        }
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
    fn serve(&self, stream: TcpStream, slot: &mut Slot) {
        let _ = stream.set_nodelay(true);
        let Ok(write_half) = stream.try_clone() else {
            return;
        };
        let mut writer = io::BufWriter::new(DeadlineWriter {
            stream: Arc::new(write_half),
            deadline: Instant::now() + self.config.response_timeout,
        });
        let mut reader = BufReader::new(stream);
        // Bounded: every turn reads a request within the idle and request timeouts or
        // ends the connection.
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            match self.read_request(&mut reader, &mut writer, slot) {
                ReadOutcome::Request(req, close) => {
                    let close = close || self.stop.load(Ordering::Acquire);
                    let resp = self.handler.handle(req);
                    self.start_response(&mut writer);
                    if write_response(&mut writer, &resp, close).is_err() || close {
                        break;
                    }
                }
                ReadOutcome::Closed => break,
                ReadOutcome::Reject(resp) => {
                    self.start_response(&mut writer);
                    let _ = write_response(&mut writer, &resp, true);
                    break;
                }
            }
        }
        let _ = reader.get_ref().shutdown(Shutdown::Both);
    }

    fn start_response(&self, writer: &mut io::BufWriter<DeadlineWriter>) {
        writer.get_mut().deadline = Instant::now() + self.config.response_timeout;
    }

    fn read_request(
        &self,
        reader: &mut BufReader<TcpStream>,
        writer: &mut io::BufWriter<DeadlineWriter>,
        slot: &mut Slot,
    ) -> ReadOutcome {
        // Idle: wait for the first byte of the next request, giving up the slot to a
        // new client if all are taken meanwhile.
        if reader
            .get_ref()
            .set_read_timeout(Some(self.config.idle_timeout))
            .is_err()
        {
            return ReadOutcome::Closed;
        }
        if reader.buffer().is_empty() && !has_pending_bytes(reader.get_ref()) {
            // The write half: closing it closes the connection.
            slot.go_idle(&writer.get_ref().stream);
        }
        let first = reader.fill_buf().map(|b| b.is_empty());
        if !slot.wake() {
            return ReadOutcome::Closed;
        }
        match first {
            Ok(true) | Err(_) => return ReadOutcome::Closed,
            Ok(false) => {}
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
            self.start_response(writer);
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

/// Whether bytes (or the end of the stream, or an error) wait on the socket: then a
/// request is already arriving and the connection is not idle.
fn has_pending_bytes(stream: &TcpStream) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv writes at most 1 byte, into `byte`, which outlives the call; the
    // descriptor belongs to `stream`. MSG_PEEK leaves the byte for the next read, and
    // MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
}

/// The write half of a connection, under a deadline for the whole response: each
/// write may block only until the deadline, so a client that reads slowly (a byte at
/// a time, each within any per-write timeout) cannot hold the connection past it.
struct DeadlineWriter {
    stream: Arc<TcpStream>,
    deadline: Instant,
}

impl Write for DeadlineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "response deadline"));
        }
        self.stream.set_write_timeout(Some(left))?;
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.stream).flush()
    }
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

// Most bytes of a chunk-size line (hex digits and extensions), and of a trailer line.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
// Most trailer lines after the last chunk, and most bytes of them together (line ends
// included). keel reads no trailer; they are bounded and skipped.
const MAX_TRAILER_LINES: usize = 64;
const MAX_TRAILER_BYTES: usize = 8 << 10;

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
        let size = parse_chunk_size(&line).ok_or(io::ErrorKind::InvalidData)?;
        if size == 0 {
            return read_trailers(reader, deadline).map(|()| Some(body));
        }
        // Checked: a size near u64::MAX must not wrap past the limit.
        let total = (body.len() as u64)
            .checked_add(size)
            .filter(|&t| t <= max_bytes)
            .and_then(|t| usize::try_from(t).ok());
        let Some(total) = total else {
            return Ok(None);
        };
        let start = body.len();
        body.resize(total, 0);
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

/// The size of a chunk-size line (`hex[;extensions]`): `None` unless it is one or
/// more hex digits whose value fits in a u64 (no sign, no spaces inside).
fn parse_chunk_size(line: &str) -> Option<u64> {
    let hex = line.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Leading zeros are allowed and cannot overflow; other digits beyond 16 do.
    u64::from_str_radix(hex, 16).ok()
}

/// Skips the trailer lines after the last chunk, up to the blank line, within
/// MAX_TRAILER_LINES and MAX_TRAILER_BYTES.
fn read_trailers(reader: &mut BufReader<TcpStream>, deadline: Instant) -> io::Result<()> {
    let mut bytes = 0usize;
    for _ in 0..=MAX_TRAILER_LINES {
        let line = read_line(reader, deadline, MAX_CHUNK_LINE_BYTES)?;
        if line.is_empty() {
            return Ok(());
        }
        bytes = bytes.saturating_add(line.len() + 2);
        if bytes > MAX_TRAILER_BYTES {
            break;
        }
    }
    Err(io::ErrorKind::InvalidData.into())
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

    /// Test server: `/big` answers `BIG_BYTES` bytes, `/block` says it started and
    /// waits until released, anything else answers the body's length.
    struct TestHandler {
        release: crossbeam_channel::Receiver<()>,
        started: crossbeam_channel::Sender<()>,
    }

    struct TestServer {
        server: HttpServer,
        release: crossbeam_channel::Sender<()>,
        started: crossbeam_channel::Receiver<()>,
    }

    const BIG_BYTES: usize = 16 << 20;

    impl Handler for TestHandler {
        fn handle(&self, request: Request) -> Response {
            match request.path.as_str() {
                "/big" => Response {
                    status: 200,
                    content_type: "application/octet-stream",
                    body: vec![b'x'; BIG_BYTES],
                },
                "/block" => {
                    let _ = self.started.send(());
                    let _ = self.release.recv();
                    Response::empty(204)
                }
                _ => Response::json(200, &serde_json::json!({ "len": request.body.len() })),
            }
        }
    }

    fn server(config: HttpConfig) -> TestServer {
        let (release, release_rx) = crossbeam_channel::unbounded();
        let (started_tx, started) = crossbeam_channel::unbounded();
        let handler = Arc::new(TestHandler {
            release: release_rx,
            started: started_tx,
        });
        let server = HttpServer::start("127.0.0.1:0", config, handler).expect("start");
        TestServer {
            server,
            release,
            started,
        }
    }

    fn connect(server: &HttpServer) -> TcpStream {
        let s = TcpStream::connect(server.local_addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s
    }

    /// Reads one response (head and Content-Length body) without waiting for close.
    fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).expect("read head");
            assert_eq!(n, 1, "closed mid-head: {:?}", String::from_utf8_lossy(&buf));
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let status = head[9..12].parse().expect("status");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().expect("length"));
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("body");
        (status, body)
    }

    /// Sends `bytes` and reads the one response the server then closes with.
    fn exchange(server: &HttpServer, bytes: &[u8]) -> Option<u16> {
        let mut s = connect(server);
        s.write_all(bytes).expect("send");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        text.get(9..12).and_then(|c| c.parse().ok())
    }

    fn is_closed(s: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(s.read(&mut byte), Ok(0) | Err(_))
    }

    #[test]
    fn a_slow_reader_cannot_hold_a_response_past_its_deadline() {
        let TestServer { server, .. } = server(HttpConfig {
            response_timeout: Duration::from_millis(300),
            ..HttpConfig::default()
        });
        let mut s = connect(&server);
        s.write_all(b"GET /big HTTP/1.1\r\n\r\n").expect("send");
        // Reads 16 KiB every 10 ms: each of the server's writes makes progress, so no
        // per-write timeout fires, but the whole 16 MiB would take ten seconds.
        let mut got = 0usize;
        let mut buf = [0u8; 16 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            got < BIG_BYTES,
            "the whole response ({got} bytes) was sent to a client reading too slowly"
        );
        server.shutdown();
    }

    #[test]
    fn idle_connections_give_their_slot_to_a_new_client() {
        let TestServer {
            server,
            release,
            started,
        } = server(HttpConfig {
            max_connections: 2,
            ..HttpConfig::default()
        });
        // Two kept-alive connections, each idle after one request.
        let mut idle: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut s = connect(&server);
                s.write_all(b"GET /a HTTP/1.1\r\n\r\n").expect("send");
                assert_eq!(read_response(&mut s).0, 200);
                s
            })
            .collect();
        // The client has its answer a moment before the server's thread waits again.
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.idle_connections() < 2 {
            assert!(Instant::now() < deadline, "the connections never went idle");
            std::thread::yield_now();
        }
        // A new client is served: the oldest idle connection made room.
        let mut fresh = connect(&server);
        fresh.write_all(b"GET /b HTTP/1.1\r\n\r\n").expect("send");
        assert_eq!(read_response(&mut fresh).0, 200);
        assert!(
            is_closed(&mut idle[0]),
            "the oldest idle connection was closed"
        );
        // The other idle connection still works.
        idle[1].write_all(b"GET /c HTTP/1.1\r\n\r\n").expect("send");
        assert_eq!(read_response(&mut idle[1]).0, 200);

        // Busy connections keep their slots: with both serving a request, a third
        // client is refused.
        for s in [&mut idle[1], &mut fresh] {
            s.write_all(b"GET /block HTTP/1.1\r\n\r\n").expect("send");
        }
        for _ in 0..2 {
            started.recv().expect("a /block request started");
        }
        // (Nothing sent: the refusal comes at accept, and unread bytes would make the
        // server's close a reset that could discard it.)
        let answer = exchange(&server, b"");
        assert_eq!(
            answer,
            Some(503),
            "a client beyond max_connections was served"
        );
        release.send(()).expect("release");
        release.send(()).expect("release");
        server.shutdown();
    }

    #[test]
    fn chunked_bodies_are_checked_without_overflow() {
        let TestServer { server, .. } = server(HttpConfig {
            max_body_bytes: 1024,
            ..HttpConfig::default()
        });
        let req = |chunks: &str| {
            let mut r =
                b"PUT /kv HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            r.extend_from_slice(chunks.as_bytes());
            exchange(&server, &r)
        };
        assert_eq!(req("3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"), Some(200));
        // A size that would wrap the running total past the limit.
        assert_eq!(req("1\r\na\r\nffffffffffffffff\r\n"), Some(413));
        assert_eq!(req("1\r\na\r\nfffffffffffffff0\r\n"), Some(413));
        // More hex digits than fit in a u64; a sign; nothing.
        assert_eq!(req("1\r\na\r\n10000000000000000\r\n"), Some(400));
        assert_eq!(req("+1\r\na\r\n0\r\n\r\n"), Some(400));
        assert_eq!(req("\r\n"), Some(400));
        // Leading zeros are still a size.
        assert_eq!(req("00000000000000000001\r\na\r\n0\r\n\r\n"), Some(200));
        // Over the limit across chunks.
        let big = format!("200\r\n{}\r\n", "x".repeat(0x200));
        assert_eq!(req(&format!("{big}{big}{big}0\r\n\r\n")), Some(413));
        // Trailers: skipped within MAX_TRAILER_LINES and MAX_TRAILER_BYTES.
        assert_eq!(req("1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"), Some(200));
        let many = "X: 1\r\n".repeat(MAX_TRAILER_LINES + 1);
        assert_eq!(req(&format!("1\r\na\r\n0\r\n{many}\r\n")), Some(400));
        let long = format!("X: {}\r\n", "y".repeat(1000)).repeat(9);
        assert_eq!(req(&format!("1\r\na\r\n0\r\n{long}\r\n")), Some(400));
        server.shutdown();
    }
}
