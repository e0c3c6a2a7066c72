//! The counters a TCP transport keeps, and the copy of them it hands out.

use std::sync::atomic::{AtomicU64, Ordering};

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
pub(super) struct Counters {
    pub(super) queued: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Counters {
    pub(super) fn record_batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}
