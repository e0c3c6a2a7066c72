//! The contract between a node and the transport that carries its traffic: what a
//! node sends through ([`Transport`]), what a transport delivers into
//! ([`MessageSink`], [`ChunkSource`]), and why a delivery failed ([`TransportError`]).

use std::sync::Arc;

/// Why a transport could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The destination is unknown, down or cut off.
    #[error("node {0} is unreachable")]
    Unreachable(u64),
    /// The destination refused or failed the snapshot stream.
    #[error("snapshot transfer failed: {0}")]
    Snapshot(String),
}

/// A stream of encoded snapshot chunk frames, pulled by the transport.
pub trait ChunkSource {
    /// The next frame, or `None` after the trailer.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError>;
}

/// The receiving side of one node: what a transport hands inbound traffic to.
pub trait MessageSink: Send + Sync {
    /// One encoded Raft message. Must not block: a full inbox drops it (Raft
    /// retransmits).
    fn deliver(&self, bytes: Vec<u8>);
    /// An encoded `Snapshot` message and its chunk stream. Returns once the snapshot is
    /// durably installed in the node's snapshot store and the message handed to the
    /// node, or with the reason it was refused.
    fn deliver_snapshot(
        &self,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError>;
}

/// Moves bytes between nodes.
pub trait Transport: Send + Sync {
    /// Starts delivering traffic addressed to `id` to `sink` (replacing an earlier
    /// registration, as a restarted node does).
    fn register(&self, id: u64, sink: Arc<dyn MessageSink>);
    /// Stops delivering to `id` if `sink` is still the one registered (a restarted
    /// node may have registered a new one meanwhile).
    fn unregister(&self, id: u64, sink: &Arc<dyn MessageSink>);
    /// Sends one encoded Raft message. Never blocks for long; loss is allowed.
    fn send(&self, from: u64, to: u64, bytes: Vec<u8>) -> Result<(), TransportError>;
    /// The largest encoded Raft message [`send`](Transport::send) carries, in bytes;
    /// larger ones are refused. [`Config::validate`](crate::Config::validate) checks
    /// that no write a node accepts can make a larger one. Unlimited by default.
    fn max_message_bytes(&self) -> u64 {
        u64::MAX
    }
    /// Sends a snapshot: the encoded message, then every chunk of `chunks`. Blocks the
    /// calling (snapshot sender) thread until the receiver installed it or failed.
    fn send_snapshot(
        &self,
        from: u64,
        to: u64,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError>;
}
