//! Typed errors returned by raft-core.

use crate::codec::DecodeError;

/// Why a [`Storage`](crate::Storage) call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is below the first available index (compacted away).
    #[error("log compacted: the requested index is older than the first available index")]
    Compacted,
    /// The requested index is above the last index.
    #[error("log unavailable: the requested index is beyond the last index")]
    Unavailable,
    /// The snapshot being applied is older than the one held.
    #[error("snapshot out of date: older than the one already held")]
    SnapshotOutOfDate,
    /// A snapshot is being produced; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Any other failure of the backing store (I/O, corruption).
    #[error("storage failure: {0}")]
    Other(String),
}

/// Errors returned by [`RawNode`](crate::RawNode) and [`Raft`](crate::Raft).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] StorageError),
    /// A local-only message type arrived through `step`.
    #[error("local message type cannot be stepped from the network")]
    StepLocalMsg,
    /// A response arrived from a node that is not in the configuration.
    #[error("message from a peer that is not in the configuration")]
    StepPeerNotFound,
    /// The proposal was not appended (no leader, forwarding disabled, a transfer in
    /// progress, the uncommitted-size limit, or a pending conf change). The caller must
    /// retry or fail the request: it will never commit.
    #[error("proposal dropped: {0}")]
    ProposalDropped(&'static str),
    /// The configuration change is invalid.
    #[error("invalid configuration change: {0}")]
    ConfChange(String),
    /// The node configuration is invalid.
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    /// A received message is malformed (its fields contradict each other).
    #[error("malformed message: {0}")]
    MalformedMessage(&'static str),
    /// A stored or received value failed to decode.
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// The leader says `commit` is committed, but this node's log ends at
    /// `last_index` even though it acknowledged those entries: its log was lost or
    /// truncated behind raft's back. etcd panics here ("was the log lost?"); raft-core
    /// refuses the message and the node must stop (see [`Error::is_fatal`]).
    #[error("commit index {commit} is past the end of the log at {last_index}: was the log lost?")]
    CommitBeyondLog {
        /// The commit index the message claimed.
        commit: u64,
        /// This node's last log index.
        last_index: u64,
    },
}

impl Error {
    /// Whether this error means the node itself cannot go on (its own log or storage is
    /// broken), as opposed to a message or request that was refused and changed
    /// nothing. A caller of [`RawNode::step`](crate::RawNode::step) that gets a fatal
    /// error must stop the node: its state no longer matches what it promised peers.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::CommitBeyondLog { .. } | Error::Store(StorageError::Other(_))
        )
    }
}

/// Result alias for raft-core.
pub type Result<T> = std::result::Result<T, Error>;
