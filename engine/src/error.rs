//! The engine's typed errors: what a `Db` caller can be told.

use std::time::Duration;

/// Why a `Db` call (or opening one) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node is not the leader and the request cannot be served here; `leader` is
    /// the leader this node knows of (`None` while there is no leader).
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<u64>,
    },
    /// The call did not finish within its timeout. A write that timed out may still
    /// commit later.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The node is closed or stopped (after `close`, or after a fatal error). A write
    /// that fails with this was never proposed, so it was not applied; one that was
    /// proposed before the node stopped fails with [`Error::Indeterminate`] instead.
    #[error("node stopped: {0}")]
    Stopped(String),
    /// The request is larger than the configured bound.
    #[error("request of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        /// Size of the request.
        size_bytes: u64,
        /// The configured limit.
        max_bytes: u64,
    },
    /// Too many requests are waiting already; retry later.
    #[error("too many pending requests ({0})")]
    Busy(usize),
    /// The proposal will never commit: raft dropped it, or another leader's entry
    /// replaced it at its index. It was not applied.
    #[error("proposal lost: {0}")]
    ProposalLost(String),
    /// The proposal's outcome cannot be known (e.g. a snapshot from the leader jumped
    /// over its index): it may or may not have been applied.
    #[error("proposal outcome unknown: {0}")]
    Indeterminate(String),
    /// A membership change or leadership transfer was refused before anything was
    /// proposed: another change is still pending, the node is already in the wanted
    /// role, or the change would leave the cluster without a quorum.
    #[error("refused: {0}")]
    Conflict(String),
    /// The request names a node that is not a member.
    #[error("node {0} is not a member")]
    UnknownNode(u64),
    /// Another process (or another open node in this one) holds the data directory:
    /// a node is running on it, or `keel wal repair` is.
    #[error(
        "data directory {} is in use by another process (a running keel serve or keel wal \
         repair holds its LOCK file); stop that process first or use another directory",
        dir.display()
    )]
    DataDirLocked {
        /// The data directory.
        dir: std::path::PathBuf,
    },
    /// The configuration is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// A file-system error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The Raft log failed.
    #[error("log error: {0}")]
    Log(#[from] wal::LogError),
    /// The snapshot store failed.
    #[error("snapshot error: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    /// The state machine's own storage failed (the RocksDB state machine), or holds
    /// something this build cannot use.
    #[error("state machine error: {0}")]
    StateMachine(String),
    /// raft-core refused something (e.g. an invalid membership change).
    #[error("raft error: {0}")]
    Raft(#[from] raft_core::Error),
}

/// Result alias for the engine.
pub type Result<T> = std::result::Result<T, Error>;
