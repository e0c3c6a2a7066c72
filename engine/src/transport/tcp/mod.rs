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
mod config;
mod conns;
mod dial;
mod frame;
mod handshake;
mod inbound;
mod listener;
mod peer;
mod peer_writer;
mod route;
mod shared;
mod snapshot_stream;
mod stats;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use keel_raft::MessageType;
use parking_lot::{Mutex, RwLock};

pub use self::config::{TcpConfig, MAX_FRAME_BYTES, MIN_FRAME_BYTES};
pub use self::stats::TcpStats;

use self::conns::Conns;
use self::peer::{Peer, Queued};
use self::shared::Inner;
use self::stats::Counters;
use super::{ChunkSource, MessageSink, Transport, TransportError};

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
    ///
    /// Three nodes over loopback (in one process here; normally one per process, each
    /// given the others' addresses):
    ///
    /// ```
    /// use keel_engine::transport::{TcpConfig, TcpTransport};
    /// use keel_engine::{Config, Db};
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// let transports = (1..=3u64)
    ///     .map(|id| TcpTransport::start(TcpConfig::new(id, "127.0.0.1:0".parse().unwrap())))
    ///     .collect::<std::io::Result<Vec<_>>>()?;
    /// for t in &transports {
    ///     for peer in &transports {
    ///         if peer.id() != t.id() {
    ///             t.add_peer(peer.id(), peer.local_addr().to_string())?;
    ///         }
    ///     }
    /// }
    /// let nodes = transports
    ///     .iter()
    ///     .map(|t| {
    ///         let dir = dir.path().join(t.id().to_string());
    ///         let mut c = Config::cluster(t.id(), vec![1, 2, 3], dir, t.clone());
    ///         c.tick_ms = 10;
    ///         Db::open(c)
    ///     })
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// // Writes need a leader: a brand-new cluster elects one within a few ticks.
    /// while nodes.iter().any(|n| n.status().leader.is_none()) {
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    /// }
    /// nodes[0].put(b"k", b"v")?;
    /// assert_eq!(nodes[1].get(b"k")?, Some(b"v".to_vec()));
    /// for (db, t) in nodes.iter().zip(&transports) {
    ///     db.close()?;
    ///     t.shutdown();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
            transport.add_peer(id, addr)?;
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
        let inner = &self.inner;
        if id == inner.id {
            return Ok(());
        }
        if id == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "peer id 0 is not a node",
            ));
        }
        // The writer starts under the peers lock, so it cannot race shutdown.
        let mut peers = inner.peers.write();
        if inner.is_stopping() {
            return Err(io::Error::other("transport is shut down"));
        }
        match peers.get(&id) {
            Some(p) => p.set_addr(addr.into()),
            None => {
                let p = peer_writer::start(inner, id, addr.into())?;
                peers.insert(id, p);
            }
        }
        Ok(())
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
            peer::join_writer(w);
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
