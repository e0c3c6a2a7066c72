//! The TCP peer transport: one [`TcpTransport`] per node, speaking to the other nodes
//! of its cluster over plain TCP with std threads.
//!
//! # Threads and queues
//!
//! - `keel-listen-<id>` accepts connections and starts a `keel-in-<id>` thread for
//!   each, which checks the handshake and then hands every Raft message to the
//!   node's [`MessageSink::deliver`], or receives one snapshot stream into
//!   [`MessageSink::deliver_snapshot`]. Connections still handshaking and connections
//!   of known peers are counted apart (`max_handshaking_conns`, `max_inbound_conns`),
//!   so connections that never say hello cannot keep peers out: when the handshaking
//!   pool is full the oldest of them is closed to make room.
//! - `keel-out-<id>-<peer>`, one per peer, owns the one outbound message
//!   connection to that peer. [`Transport::send`] puts the message in the peer's
//!   queue, bounded in count (`queue_len`) and bytes (`queue_max_bytes`), and never
//!   blocks: a full queue drops it (Raft retransmits), a peer without a live
//!   connection is reported unreachable. The writer drains everything queued into one
//!   buffer (up to `write_batch_max_bytes`) per write, pings an idle connection, and
//!   redials with capped, jittered exponential backoff.
//! - A snapshot goes out on a connection dialled for it on the caller's thread (the
//!   node's snapshot sender), so heartbeats and appends never wait behind one.
//!
//! Every blocking call has a deadline: connecting (`connect_timeout_ms`), an
//! acceptor waiting for the hello (`handshake_timeout_ms`), writing
//! (`write_timeout_ms`), reading (`read_timeout_ms`: a connection that stays silent
//! that long is dropped, and a dialer waits that long for the acceptor's answer;
//! writers ping every quarter of it, so give every node the same value), and waiting
//! for a snapshot's result (`snapshot_timeout_ms`). [`TcpTransport::shutdown`] (also
//! run on drop) stops and joins every thread.
//!
//! # Wire format
//!
//! Every connection carries frames `len: u32 LE | type: u8 | crc32: u32 LE | payload`,
//! `len` counting the payload, the CRC-32 covering `len`, `type` and the payload, and
//! `len` at most `max_frame_bytes` (1 KiB for handshake frames). Types: 1 hello,
//! 2 hello-ack, 3 Raft message, 4 ping, 5 snapshot message, 6 snapshot chunk,
//! 7 end of chunks, 8 snapshot result (`0`, or `1` then the reason as UTF-8).
//!
//! The dialer's first frame is a hello: `"KEEL" | version: u16 LE (1) | kind: u8
//! (1 messages, 2 snapshot) | from: u64 LE | to: u64 LE | cluster_id_len: u8 |
//! cluster_id`. The acceptor answers `status: u8 (0 accept, 1 reject) | its id: u64 LE
//! | reason_len: u16 LE | reason`, and refuses a hello from another cluster, from an
//! id not among its peers, or meant for another node. Identity comes only from the
//! hello, never from an address; every message's own `from` and `to` must match the
//! hello's. A bad frame of any kind closes its connection with a warning.

mod backoff;
mod conns;
mod dial;
mod frame;
mod handshake;
mod inbound;
mod listener;
mod peer_writer;
mod route;
mod snapshot_stream;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use raft_core::MessageType;

use self::conns::Conns;
use self::peer_writer::{Peer, Queued};
use super::{ChunkSource, MessageSink, Transport, TransportError};

/// Smallest `max_frame_bytes` accepted: room for a Raft message with some entries.
pub const MIN_FRAME_BYTES: u32 = 64 << 10;
/// Largest `max_frame_bytes` accepted.
pub const MAX_FRAME_BYTES: u32 = 1 << 30;

/// Settings of a [`TcpTransport`]. Start from [`TcpConfig::new`].
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// This node's id (never 0).
    pub id: u64,
    /// The cluster's name; connections from another cluster are refused (at most 255
    /// bytes).
    pub cluster_id: String,
    /// Where to listen (port 0 picks a free port; see [`TcpTransport::local_addr`]).
    pub listen_addr: SocketAddr,
    /// The other nodes: id to the `host:port` to dial. Only these ids may connect.
    /// An entry for this node's own id is ignored.
    pub peers: HashMap<u64, String>,
    /// Most time a connect may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Most time one write may block, in milliseconds; a peer that reads nothing for
    /// that long loses its connection.
    pub write_timeout_ms: u64,
    /// Most time a connection may stay silent, in milliseconds (a dialer waits that
    /// long for the acceptor's answer to its hello). Writers ping idle connections
    /// every quarter of it.
    pub read_timeout_ms: u64,
    /// Most time an accepted connection may take to deliver its whole hello, in
    /// milliseconds; it is closed after that. A peer sends its hello as soon as it is
    /// connected, so this need only cover a round trip. Default 1,000.
    pub handshake_timeout_ms: u64,
    /// First delay before redialling a peer, in milliseconds.
    pub backoff_initial_ms: u64,
    /// Longest delay between dials of a peer, in milliseconds.
    pub backoff_max_ms: u64,
    /// Messages waiting for each peer's writer, at most; beyond it `send` drops.
    pub queue_len: usize,
    /// Bytes of messages waiting for each peer's writer, at most; a message that would
    /// take the queue past it is dropped (and counted in `messages_dropped`), as on a
    /// full queue. Must be at least `max_frame_bytes`, so that any one message that may
    /// be sent at all fits an empty queue. Default 64 MiB.
    pub queue_max_bytes: u64,
    /// Largest frame payload sent or accepted, in bytes: bounds one Raft message and
    /// one snapshot chunk frame.
    pub max_frame_bytes: u32,
    /// Bytes a writer gathers from its queue into one write, at most (one message
    /// may exceed it).
    pub write_batch_max_bytes: usize,
    /// Inbound connections of known peers (their hello accepted) served at once, at
    /// most; a hello beyond it is refused. Connections still handshaking do not count.
    pub max_inbound_conns: usize,
    /// Inbound connections still handshaking (their hello not yet in), at most. When
    /// all are taken, a new connection closes the oldest of them, if it is older than
    /// 100 ms, or is itself refused. Default 16.
    pub max_handshaking_conns: usize,
    /// Most time a snapshot sender waits for the receiver's result after the last
    /// chunk, in milliseconds (the receiver installs and fsyncs meanwhile).
    pub snapshot_timeout_ms: u64,
}

impl TcpConfig {
    /// Node `id` listening on `listen_addr`, in cluster `"keel"`, with no peers yet
    /// and defaults for a LAN.
    pub fn new(id: u64, listen_addr: SocketAddr) -> TcpConfig {
        TcpConfig {
            id,
            cluster_id: "keel".into(),
            listen_addr,
            peers: HashMap::new(),
            connect_timeout_ms: 1_000,
            write_timeout_ms: 5_000,
            read_timeout_ms: 5_000,
            handshake_timeout_ms: 1_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 2_000,
            queue_len: 4_096,
            queue_max_bytes: 64 << 20,
            max_frame_bytes: 16 << 20,
            write_batch_max_bytes: 1 << 20,
            max_inbound_conns: 64,
            max_handshaking_conns: 16,
            snapshot_timeout_ms: 30_000,
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if self.id == 0 {
            return bad("id must not be 0".into());
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > handshake::MAX_CLUSTER_ID_BYTES {
            return bad(format!(
                "cluster_id must have 1 to {} bytes",
                handshake::MAX_CLUSTER_ID_BYTES
            ));
        }
        let timeouts = [
            self.connect_timeout_ms,
            self.write_timeout_ms,
            self.read_timeout_ms,
            self.handshake_timeout_ms,
            self.snapshot_timeout_ms,
            self.backoff_initial_ms,
        ];
        if timeouts.contains(&0) {
            return bad("timeouts and backoff_initial_ms must be at least 1 ms".into());
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return bad("backoff_max_ms must be at least backoff_initial_ms".into());
        }
        let counts = [
            self.queue_len,
            self.write_batch_max_bytes,
            self.max_inbound_conns,
            self.max_handshaking_conns,
        ];
        if counts.contains(&0) {
            return bad("queue_len, write_batch_max_bytes, max_inbound_conns and \
                 max_handshaking_conns must be at least 1"
                .into());
        }
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return bad(format!(
                "max_frame_bytes must be within {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES}"
            ));
        }
        if self.queue_max_bytes < u64::from(self.max_frame_bytes) {
            return bad(format!(
                "queue_max_bytes ({}) must be at least max_frame_bytes ({}): a message \
                 that may be sent must fit an empty queue",
                self.queue_max_bytes, self.max_frame_bytes
            ));
        }
        if self.peers.contains_key(&0) {
            return bad("peer id 0 is not a node".into());
        }
        Ok(())
    }

    fn keepalive_interval(&self) -> Duration {
        Duration::from_millis((self.read_timeout_ms / 4).max(1))
    }
}

/// Counters of a transport since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Messages `send` put in a peer's queue.
    pub messages_queued: u64,
    /// Messages `send` dropped because the peer's queue was full, in count
    /// (`queue_len`) or in bytes (`queue_max_bytes`).
    pub messages_dropped: u64,
    /// Writes the peer writers made (each carries every message queued meanwhile).
    pub batches_written: u64,
    /// Messages received and handed to the node.
    pub messages_delivered: u64,
    /// Inbound connections refused: wrong cluster, unknown or wrong node, too many.
    pub connections_refused: u64,
    /// Connections still handshaking closed to make room for a newer one
    /// (`max_handshaking_conns`).
    pub handshakes_evicted: u64,
    /// Inbound connections closed on a protocol error: bad frame, CRC or handshake,
    /// a message that does not match its connection, a silent peer.
    pub connections_failed: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
    delivered: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn record_batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }
    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
    fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every thread of a transport shares.
struct Inner {
    id: u64,
    // `peers` is moved out into the live table below.
    config: TcpConfig,
    stopping: AtomicBool,
    sink: RwLock<Option<Arc<dyn MessageSink>>>,
    peers: RwLock<HashMap<u64, Peer>>,
    conns: Arc<Conns>,
    stats: Counters,
}

impl Inner {
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn sink(&self) -> Option<Arc<dyn MessageSink>> {
        self.sink.read().clone()
    }

    fn peer_addr(&self, id: u64) -> Option<String> {
        self.peers
            .read()
            .get(&id)
            .map(|p| p.link.addr.lock().clone())
    }

    // Hands one message to the node, if one is registered (a restarting node is not).
    fn deliver(&self, bytes: Vec<u8>) {
        if let Some(sink) = self.sink() {
            sink.deliver(bytes);
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    // Starts a writer for `id` under the peers lock, so it cannot race shutdown.
    fn add_peer(self: &Arc<Self>, id: u64, addr: String) -> io::Result<()> {
        if id == self.id {
            return Ok(());
        }
        if id == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "peer id 0 is not a node",
            ));
        }
        let mut peers = self.peers.write();
        if self.is_stopping() {
            return Err(io::Error::other("transport is shut down"));
        }
        match peers.get(&id) {
            Some(p) => p.set_addr(addr),
            None => {
                let p = Peer::start(self, id, addr)?;
                peers.insert(id, p);
            }
        }
        Ok(())
    }
}

/// A node's TCP transport. Give it to [`Config::cluster`](crate::Config::cluster) as
/// the node's transport; see the [module docs](self) for threads and wire format.
pub struct TcpTransport {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.inner.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Binds `config.listen_addr` and starts the listener and one writer per peer.
    pub fn start(mut config: TcpConfig) -> io::Result<Arc<TcpTransport>> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen_addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let peers = std::mem::take(&mut config.peers);
        let inner = Arc::new(Inner {
            id: config.id,
            config,
            stopping: AtomicBool::new(false),
            sink: RwLock::new(None),
            peers: RwLock::new(HashMap::new()),
            conns: Arc::new(Conns::default()),
            stats: Counters::default(),
        });
        let transport = TcpTransport {
            inner: Arc::clone(&inner),
            local_addr,
            listener: Mutex::new(None),
        };
        // On an error below, dropping `transport` stops what did start.
        for (id, addr) in peers {
            inner.add_peer(id, addr)?;
        }
        let worker = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name(format!("keel-listen-{}", inner.id))
            .spawn(move || listener::run(worker, listener))?;
        *transport.listener.lock() = Some(handle);
        log::info!(
            "node {}: peer transport listening on {local_addr}",
            inner.id
        );
        Ok(Arc::new(transport))
    }

    /// The address actually bound (the real port when `listen_addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Adds peer `id` at `addr` (`host:port`), or points an existing peer at a new
    /// address (its connection is redialled). From now on `id` may also connect to
    /// us. Fails only after shutdown or when no thread can be started.
    pub fn add_peer(&self, id: u64, addr: impl Into<String>) -> io::Result<()> {
        self.inner.add_peer(id, addr.into())
    }

    /// Forgets peer `id`: stops its writer (dropping what is queued) and closes its
    /// connections to us. Returns once the writer thread has stopped (at most about
    /// `connect_timeout_ms`).
    pub fn remove_peer(&self, id: u64) {
        let removed = self.inner.peers.write().remove(&id);
        self.inner.conns.close_peer(id);
        if let Some(p) = removed {
            p.stop();
        }
    }

    /// Whether the outbound message connection to `id` is up.
    pub fn is_connected(&self, id: u64) -> bool {
        self.inner
            .peers
            .read()
            .get(&id)
            .is_some_and(|p| p.link.is_connected())
    }

    /// The counters since start.
    pub fn stats(&self) -> TcpStats {
        let c = &self.inner.stats;
        TcpStats {
            messages_queued: c.queued.load(Ordering::Relaxed),
            messages_dropped: c.dropped.load(Ordering::Relaxed),
            batches_written: c.batches.load(Ordering::Relaxed),
            messages_delivered: c.delivered.load(Ordering::Relaxed),
            connections_refused: c.refused.load(Ordering::Relaxed),
            handshakes_evicted: c.evicted.load(Ordering::Relaxed),
            connections_failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops listening, closes every connection and joins every thread. Idempotent;
    /// also run on drop. Takes at most about `connect_timeout_ms` (a connect cannot be
    /// interrupted) plus the time a node's `deliver_snapshot` takes to return after
    /// its stream is cut.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        let first = !inner.stopping.swap(true, Ordering::AcqRel);
        let peers: Vec<Peer> = inner.peers.write().drain().map(|(_, p)| p).collect();
        let writers: Vec<JoinHandle<()>> = peers.into_iter().map(Peer::begin_stop).collect();
        for w in writers {
            peer_writer::join_writer(w);
        }
        if let Some(h) = self.listener.lock().take() {
            if h.join().is_err() {
                log::error!("node {}: TCP listener thread panicked", inner.id);
            }
        }
        inner.conns.close_all_and_join();
        *inner.sink.write() = None;
        if first {
            log::info!("node {}: peer transport stopped", inner.id);
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for TcpTransport {
    fn register(&self, id: u64, sink: Arc<dyn MessageSink>) {
        if id != self.inner.id {
            log::error!(
                "node {}: a TCP transport serves one node; not registering node {id}",
                self.inner.id
            );
            return;
        }
        if self.inner.is_stopping() {
            return;
        }
        *self.inner.sink.write() = Some(sink);
    }

    fn unregister(&self, id: u64, sink: &Arc<dyn MessageSink>) {
        let mut current = self.inner.sink.write();
        if id == self.inner.id && current.as_ref().is_some_and(|s| Arc::ptr_eq(s, sink)) {
            *current = None;
        }
    }

    fn send(&self, from: u64, to: u64, bytes: Vec<u8>) -> Result<(), TransportError> {
        let inner = &self.inner;
        // What the receiver would refuse (closing the whole connection) is refused
        // here instead.
        let ok_route = route::route_of(&bytes).is_some_and(|r| {
            (r.from == from || r.msg_type.is_relayable())
                && r.to == to
                && r.msg_type != MessageType::Snapshot
        });
        if from != inner.id || !ok_route || bytes.len() > inner.config.max_frame_bytes as usize {
            log::warn!(
                "node {}: not sending a {}-byte message from {from} to {to}: not a message \
                 of this node's, or larger than max_frame_bytes",
                inner.id,
                bytes.len()
            );
            return Err(TransportError::Unreachable(to));
        }
        let peers = inner.peers.read();
        let Some(peer) = peers.get(&to) else {
            return Err(TransportError::Unreachable(to));
        };
        match peer.try_send(bytes) {
            Queued::Yes => {
                inner.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Not unreachable: the connection is up, only busy. Raft retransmits.
            Queued::Full => {
                inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::debug!("node {}: queue to node {to} full, dropping", inner.id);
                Ok(())
            }
            Queued::NotConnected => Err(TransportError::Unreachable(to)),
        }
    }

    fn send_snapshot(
        &self,
        from: u64,
        to: u64,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError> {
        if from != self.inner.id {
            return Err(TransportError::Snapshot(format!(
                "node {} cannot send a snapshot as node {from}",
                self.inner.id
            )));
        }
        snapshot_stream::send(&self.inner, to, message, chunks)
    }

    fn max_message_bytes(&self) -> u64 {
        u64::from(self.inner.config.max_frame_bytes)
    }
}
