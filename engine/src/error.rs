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
    /// The node is closed or stopped (after `close`, or after a fatal error, which the
    /// [`StopReason`] names). A write that fails with this was never proposed, so it was
    /// not applied; one that was proposed before the node stopped fails with
    /// [`Error::Indeterminate`] instead.
    #[error("node stopped: {0}")]
    Stopped(StopReason),
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
    /// The proposal's outcome cannot be known (a snapshot from the leader jumped over its
    /// index, or the node stopped while it waited): it may or may not have been applied.
    #[error("proposal outcome unknown: {0}")]
    Indeterminate(UnknownOutcome),
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

impl Error {
    /// Why the node stopped, if this error says it did ([`Error::Stopped`], or
    /// [`Error::Indeterminate`] because the node stopped while the call waited).
    pub fn stop_reason(&self) -> Option<&StopReason> {
        match self {
            Error::Stopped(reason) | Error::Indeterminate(UnknownOutcome::Stopped(reason)) => {
                Some(reason)
            }
            _ => None,
        }
    }

    /// The fatal error that stopped the node, if this error reports one.
    pub fn fatal(&self) -> Option<&Fatal> {
        match self.stop_reason() {
            Some(StopReason::Fatal(fatal)) => Some(fatal),
            _ => None,
        }
    }
}

/// The fatal stop raft-core's error `e` calls for, if it is one
/// ([`raft_core::Error::is_fatal`]): the node's own log or storage is broken.
pub(crate) fn fatal_raft(e: &raft_core::Error) -> Option<Fatal> {
    e.is_fatal()
        .then(|| Fatal::here(FatalKind::Raft, e.to_string()))
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// [`Db::close`](crate::Db::close) was called or the last handle dropped.
    #[error("closed")]
    Closed,
    /// The node could not go on and stopped as a whole.
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

/// What made a node stop on its own: a thread died or hit an error after which the
/// node's state can no longer be trusted. The first such cause is kept; every call
/// after it reports it, and [`Db::status`](crate::Db::status) shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} in thread {thread}: {detail}")]
pub struct Fatal {
    /// What kind of failure.
    pub kind: FatalKind,
    /// The name of the thread it happened on (`keel-raft-ID`, `keel-persist-ID`,
    /// `keel-apply-ID`, `keel-snapsave-ID`, `keel-snapsend-ID`).
    pub thread: String,
    /// What happened, for people (the panic message, the I/O error).
    pub detail: String,
}

impl Fatal {
    /// A fatal error of `kind` on the calling thread.
    pub(crate) fn here(kind: FatalKind, detail: impl Into<String>) -> Fatal {
        Fatal {
            kind,
            thread: std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string(),
            detail: detail.into(),
        }
    }
}

/// The kinds of [`Fatal`] errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FatalKind {
    /// A thread of the node panicked: a bug, or a broken invariant (`assert!`).
    Panic,
    /// Writing or syncing the Raft log failed (a failed fsync among them): what is on
    /// disk is unknown, so nothing may be acknowledged on it.
    LogWrite,
    /// raft-core returned an error after which the node cannot go on
    /// ([`raft_core::Error::is_fatal`]): its log was lost behind raft's back (a commit
    /// index past the log), or raft's storage failed to read.
    Raft,
    /// Applying committed entries to the state machine failed; skipping them would
    /// leave this replica different from the others.
    StateMachine,
    /// Installing a snapshot received from the leader failed.
    Snapshot,
    /// An invariant of the pipeline broke: a stage ended while the node was running,
    /// or the log cache refused what the log accepted.
    Invariant,
}

impl FatalKind {
    /// A stable name: `panic`, `log_write`, `raft`, `state_machine`, `snapshot`,
    /// `invariant` (the `kind` field of `/status` and `/health` in `keel serve`).
    pub fn as_str(self) -> &'static str {
        match self {
            FatalKind::Panic => "panic",
            FatalKind::LogWrite => "log_write",
            FatalKind::Raft => "raft",
            FatalKind::StateMachine => "state_machine",
            FatalKind::Snapshot => "snapshot",
            FatalKind::Invariant => "invariant",
        }
    }
}

impl std::fmt::Display for FatalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a proposal's outcome is unknown ([`Error::Indeterminate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownOutcome {
    /// A snapshot from the leader replaced the log up to `index`, over the write's
    /// entry: the write may or may not be in it.
    #[error("a snapshot up to index {index} replaced the log")]
    SnapshotReplaced {
        /// The snapshot's index.
        index: u64,
    },
    /// The node stopped after the write was handed to raft, before its outcome was
    /// known; it may still commit (on this node's restart, or through another leader).
    #[error("the node stopped ({0}) before the write's outcome was known")]
    Stopped(StopReason),
}

/// Result alias for the engine.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fatal_raft_errors_stop_the_node() {
        let lost = raft_core::Error::CommitBeyondLog {
            commit: 9,
            last_index: 3,
        };
        let fatal = fatal_raft(&lost).expect("a lost log stops the node");
        assert_eq!(fatal.kind, FatalKind::Raft);
        assert!(fatal.detail.contains("was the log lost"), "{fatal}");
        let broken = raft_core::Error::Store(raft_core::StorageError::Other("EIO".into()));
        assert_eq!(fatal_raft(&broken).map(|f| f.kind), Some(FatalKind::Raft));
        // Refusals of one message or request change nothing.
        for refused in [
            raft_core::Error::ProposalDropped("no leader"),
            raft_core::Error::MalformedMessage("term 0"),
            raft_core::Error::StepPeerNotFound,
        ] {
            assert!(fatal_raft(&refused).is_none(), "{refused}");
        }
    }
}
