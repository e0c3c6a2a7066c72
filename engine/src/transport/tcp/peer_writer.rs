//! One outbound message connection per peer, owned by its writer thread
//! (`keel-out-<id>-<peer>`, started by [`start`]). `send` only ever `try_send`s into the
//! peer's queue (see `peer`), bounded in count (`queue_len`) and in bytes
//! (`queue_max_bytes`, a [`ByteBudget`] each queued message holds its share of until
//! the writer has framed it); the writer drains whatever queued while it was busy into one buffer (up to
//! `write_batch_max_bytes`) and writes it with one call, pings when idle so the
//! receiver's read deadline holds only for dead peers, and redials with capped,
//! jittered exponential backoff when the connection breaks.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use super::backoff::{self, Backoff};
use super::dial::dial;
use super::frame::{self, FrameType};
use super::handshake::ConnKind;
use super::peer::{Link, Peer};
use super::shared::Inner;
use crate::budget::{ByteBudget, Charged};

/// Starts the writer thread for `peer` at `addr`, and returns the handle the transport
/// keeps.
pub(crate) fn start(inner: &Arc<Inner>, peer: u64, addr: String) -> std::io::Result<Peer> {
    let (tx, rx) = bounded(inner.config.queue_len);
    let link = Arc::new(Link {
        addr: Mutex::new(addr),
        connected: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        stream: Mutex::new(None),
    });
    let writer = Writer {
        inner: Arc::clone(inner),
        peer,
        link: Arc::clone(&link),
        queue: rx,
        batch: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("keel-out-{}-{peer}", inner.id))
        .spawn(move || writer.run())?;
    Ok(Peer {
        link,
        queue: tx,
        queue_budget: ByteBudget::new(inner.config.queue_max_bytes),
        thread,
    })
}

// How long a connection must have lived for its loss to restart the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

struct Writer {
    inner: Arc<Inner>,
    peer: u64,
    link: Arc<Link>,
    queue: Receiver<Charged<Vec<u8>>>,
    batch: Vec<u8>,
}

// Why a connection's pump loop ended.
enum PumpEnd {
    // The peer was removed or the transport is stopping.
    Stop,
    // The connection failed.
    Broken(std::io::Error),
}

impl Writer {
    fn run(mut self) {
        let cfg = &self.inner.config;
        let mut backoff = Backoff::new(
            cfg.backoff_initial_ms,
            cfg.backoff_max_ms,
            backoff::seed(self.inner.id, self.peer),
        );
        let mut failures: u64 = 0;
        // Ends when the queue closes (peer removed, transport stopped); each pass
        // either serves a connection or waits out one backoff delay.
        loop {
            if self.inner.is_stopping() {
                return;
            }
            let addr = self.link.addr.lock().clone();
            let dialled = dial(&self.inner, self.peer, &addr, ConnKind::Messages, |s| {
                let mut slot = self.link.stream.lock();
                *slot = s.try_clone().ok();
                // Under the lock: either `stop` sees this socket and cuts it, or it
                // set `stopped` before taking the lock and we cut it here.
                if self.link.stopped.load(Ordering::SeqCst) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            });
            match dialled {
                Ok(stream) => {
                    failures = 0;
                    let connected_at = Instant::now();
                    log::info!(
                        "node {}: connected to node {} at {addr}",
                        self.inner.id,
                        self.peer
                    );
                    self.link.connected.store(true, Ordering::Release);
                    let end = self.pump(&stream);
                    self.link.connected.store(false, Ordering::Release);
                    let _ = stream.shutdown(Shutdown::Both);
                    *self.link.stream.lock() = None;
                    // A peer that accepts and then drops us at once keeps the backoff
                    // growing; one that served us a while gets redialled promptly.
                    if connected_at.elapsed() >= STABLE_CONNECTION {
                        backoff.reset();
                    }
                    match end {
                        PumpEnd::Stop => return,
                        PumpEnd::Broken(e) => log::warn!(
                            "node {}: connection to node {} at {addr} lost: {e}",
                            self.inner.id,
                            self.peer
                        ),
                    }
                }
                Err(e) => {
                    *self.link.stream.lock() = None;
                    failures += 1;
                    // The first failure of a streak is worth a line; the rest repeat it.
                    // Being refused means a misconfiguration, not a peer still starting.
                    if failures == 1 && e.is_refusal() {
                        log::warn!("node {}: dialling node {}: {e}", self.inner.id, self.peer);
                    } else if failures == 1 {
                        log::info!("node {}: dialling node {}: {e}", self.inner.id, self.peer);
                    } else {
                        log::debug!(
                            "node {}: dialling node {} (attempt {failures}): {e}",
                            self.inner.id,
                            self.peer
                        );
                    }
                }
            }
            if !self.wait(backoff.next_delay()) {
                return;
            }
        }
    }

    // Waits `delay`, dropping messages that queued before the connection broke (Raft
    // retransmits). False once the queue is closed.
    fn wait(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        // Bounded: each pass takes one message from a bounded queue or ends the wait.
        loop {
            match self.queue.recv_deadline(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return !self.inner.is_stopping(),
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    // Writes queued messages to `stream` until the queue closes or a write fails.
    fn pump(&mut self, stream: &TcpStream) -> PumpEnd {
        let cfg = &self.inner.config;
        let keepalive = cfg.keepalive_interval();
        let max_batch = cfg.write_batch_max_bytes;
        let mut w = stream;
        // Ends with the connection or the queue.
        loop {
            let first = match self.queue.recv_timeout(keepalive) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return PumpEnd::Stop,
            };
            if self.inner.is_stopping() {
                return PumpEnd::Stop;
            }
            self.batch.clear();
            match first {
                Some(m) => frame::encode(&mut self.batch, FrameType::Message, &m),
                None => frame::encode(&mut self.batch, FrameType::Ping, &[]),
            }
            while self.batch.len() < max_batch {
                match self.queue.try_recv() {
                    Ok(m) => frame::encode(&mut self.batch, FrameType::Message, &m),
                    Err(_) => break,
                }
            }
            if let Err(e) = w.write_all(&self.batch) {
                return PumpEnd::Broken(e);
            }
            self.inner.stats.record_batch();
            // A burst can leave a large buffer behind; do not keep it for ever.
            if self.batch.capacity() > 2 * max_batch {
                self.batch = Vec::new();
            }
        }
    }
}
