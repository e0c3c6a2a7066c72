//! The settings of a TCP transport, their defaults and the checks `start` makes.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::handshake;

/// Smallest `max_frame_bytes` accepted: room for a Raft message with some entries.
pub const MIN_FRAME_BYTES: u32 = 64 << 10;
/// Largest `max_frame_bytes` accepted.
pub const MAX_FRAME_BYTES: u32 = 1 << 30;

/// Settings of a [`TcpTransport`](super::TcpTransport). Start from [`TcpConfig::new`].
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// This node's id (never 0).
    pub id: u64,
    /// The cluster's name; connections from another cluster are refused (at most 255
    /// bytes).
    pub cluster_id: String,
    /// Where to listen (port 0 picks a free port; see
    /// [`TcpTransport::local_addr`](super::TcpTransport::local_addr)).
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

    pub(super) fn validate(&self) -> io::Result<()> {
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

    pub(super) fn keepalive_interval(&self) -> Duration {
        Duration::from_millis((self.read_timeout_ms / 4).max(1))
    }
}
