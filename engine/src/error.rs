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
    /// The proposal will never commit: another leader's entry replaced it at its
    /// index, or (for a read) its round was lost to a leader change. It was not
    /// applied.
    #[error("proposal lost: {0}")]
    ProposalLost(String),
    /// raft dropped the proposal before appending it (no leader, a leadership
    /// transfer or another membership change in progress, the uncommitted-size limit):
    /// it will never commit and was not applied; retry. The reason is raft's.
    #[error("raft error: proposal dropped: {0}")]
    ProposalDropped(String),
    /// The proposal's outcome cannot be known (a snapshot from the leader jumped over its
    /// index, or the node stopped while it waited): it may or may not have been applied.
    #[error("proposal outcome unknown: {0}")]
    Indeterminate(UnknownOutcome),
    /// A membership change or leadership transfer was refused before anything was
    /// proposed; the [`MembershipRefusal`] says why (another change is still pending,
    /// the node is already in the wanted role, the change would leave the cluster
    /// without a quorum, ...).
    #[error("refused: {0}")]
    MembershipRefused(MembershipRefusal),
    /// The command was committed, but it did not decode where it was applied, so no
    /// replica applied it (each skips it alike): a bug in the command's
    /// [`decode`](crate::state_machine::Command::decode), or an entry written by a
    /// version that encodes differently. Proposing it again fails the same way.
    #[error("the command at index {index} did not decode, so no replica applied it: {reason}")]
    Undecodable {
        /// The entry's log index.
        index: u64,
        /// Why decoding failed.
        reason: String,
    },
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
    Log(#[from] keel_wal::LogError),
    /// The snapshot store failed.
    #[error("snapshot error: {0}")]
    Snapshot(#[from] keel_snapshot::SnapshotError),
    /// The state machine's own storage failed (the RocksDB state machine), or holds
    /// something this build cannot use.
    #[error("state machine error: {0}")]
    StateMachine(String),
    /// raft-core failed or refused in a way no other variant names (its storage failed,
    /// a stored value did not decode, an invalid membership change): raft-core's
    /// message. raft-core's own error type never leaves the engine.
    #[error("raft error: {0}")]
    Raft(String),
}

impl From<keel_raft::Error> for Error {
    /// raft-core's error as keel's: a dropped proposal is [`Error::ProposalDropped`],
    /// an invalid raft configuration [`Error::Config`], anything else [`Error::Raft`]
    /// with raft-core's message. (Whether it stops the node is decided before this,
    /// by `fatal_raft`.)
    fn from(e: keel_raft::Error) -> Error {
        match e {
            keel_raft::Error::ProposalDropped(why) => Error::ProposalDropped(why.to_string()),
            keel_raft::Error::ConfigInvalid(why) => Error::Config(why),
            other => Error::Raft(other.to_string()),
        }
    }
}

/// Why a membership change (or a leadership transfer) was refused before anything was
/// proposed ([`Error::MembershipRefused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipRefusal {
    /// Another membership change is proposed and not applied yet.
    #[error("another membership change is still pending; retry once it is applied")]
    ChangePending,
    /// The cluster is in a joint configuration; only the change leaving it is taken.
    #[error("the cluster is in a joint configuration; it must leave it first")]
    JointConfiguration,
    /// Node id 0 means "none" to raft.
    #[error("node id 0 is reserved")]
    ReservedId,
    /// The node to add as a voter is one already.
    #[error("node {0} is already a voter")]
    AlreadyVoter(u64),
    /// The node to add as a learner is one already.
    #[error("node {0} is already a learner")]
    AlreadyLearner(u64),
    /// The learner to promote lags the leader's commit index too far: as a voter it
    /// would stall commits until it caught up.
    #[error(
        "learner {id} has not caught up (at {matched}, commit index {committed}); promote \
         it once it has"
    )]
    LearnerBehind {
        /// The learner.
        id: u64,
        /// The last index the leader knows it holds.
        matched: u64,
        /// The leader's commit index.
        committed: u64,
    },
    /// The change would remove the last voter.
    #[error("the change would leave the cluster without voters")]
    NoVoters,
    /// Fewer than a majority of the voters the change leaves are reachable, so the
    /// cluster could commit nothing after it. `Replica::change_membership` asks again for
    /// up to two election timeouts before reporting this: a leader learns who is
    /// reachable only from their answers.
    #[error(
        "the change would lose quorum: only {reachable} of the {voters} voters it leaves \
         are reachable"
    )]
    WouldLoseQuorum {
        /// Voters of the new configuration that answered recently (this node counts).
        reachable: usize,
        /// Voters of the new configuration.
        voters: usize,
    },
    /// Leadership was to move to a learner, which cannot lead.
    #[error("node {0} is a learner and cannot lead")]
    LearnerCannotLead(u64),
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

    /// Whether the call certainly had no effect and may succeed if made again, as it
    /// is or after a short pause: no leader yet ([`Error::NotLeader`]), too many
    /// requests waiting ([`Error::Busy`]), or a proposal raft dropped or a leader
    /// change lost ([`Error::ProposalDropped`], [`Error::ProposalLost`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::Busy(_)
                | Error::ProposalDropped(_)
                | Error::ProposalLost(_)
        )
    }

    /// Whether a write's outcome is unknown: it may or may not have been applied, and
    /// may still be ([`Error::Timeout`], [`Error::Indeterminate`]). Retrying such a
    /// write may apply it twice unless the command is idempotent. (A read that times
    /// out changed nothing.)
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::Indeterminate(_))
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
/// ([`keel_raft::Error::is_fatal`]): the node's own log or storage is broken.
pub(crate) fn fatal_raft(e: &keel_raft::Error) -> Option<Fatal> {
    e.is_fatal()
        .then(|| Fatal::here(FatalKind::Raft, e.to_string()))
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// [`Replica::close`](crate::Replica::close) was called or the last handle dropped.
    #[error("closed")]
    Closed,
    /// The node could not go on and stopped as a whole.
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

/// What made a node stop on its own: a thread died or hit an error after which the
/// node's state can no longer be trusted. The first such cause is kept; every call
/// after it reports it, and [`Replica::status`](crate::Replica::status) shows it.
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
    /// ([`keel_raft::Error::is_fatal`]): its log was lost behind raft's back (a commit
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
    fn retryable_and_unknown_outcomes_do_not_overlap() {
        let stopped = StopReason::Closed;
        let all = [
            Error::NotLeader { leader: None },
            Error::Busy(1),
            Error::ProposalDropped("x".into()),
            Error::ProposalLost("x".into()),
            Error::Timeout(std::time::Duration::from_secs(1)),
            Error::Indeterminate(UnknownOutcome::Stopped(stopped.clone())),
            Error::Stopped(stopped),
            Error::Undecodable {
                index: 3,
                reason: "x".into(),
            },
        ];
        let retryable: Vec<bool> = all.iter().map(Error::is_retryable).collect();
        let unknown: Vec<bool> = all.iter().map(Error::outcome_unknown).collect();
        assert_eq!(
            retryable,
            [true, true, true, true, false, false, false, false]
        );
        assert_eq!(
            unknown,
            [false, false, false, false, true, true, false, false]
        );
    }

    #[test]
    fn raft_errors_become_keel_variants() {
        let dropped = Error::from(keel_raft::Error::ProposalDropped("no leader"));
        assert!(
            matches!(&dropped, Error::ProposalDropped(why) if why == "no leader"),
            "{dropped:?}"
        );
        // The message `keel serve` answers with, as before the mapping.
        assert_eq!(
            dropped.to_string(),
            "raft error: proposal dropped: no leader"
        );
        let config = Error::from(keel_raft::Error::ConfigInvalid("tick 0".into()));
        assert!(
            matches!(&config, Error::Config(why) if why == "tick 0"),
            "{config:?}"
        );
        let other = Error::from(keel_raft::Error::StepPeerNotFound);
        assert!(matches!(other, Error::Raft(_)), "{other:?}");
        assert_eq!(
            other.to_string(),
            format!("raft error: {}", keel_raft::Error::StepPeerNotFound)
        );
    }

    #[test]
    fn a_quorum_refusal_reads_as_before_and_carries_its_numbers() {
        let e = Error::MembershipRefused(MembershipRefusal::WouldLoseQuorum {
            reachable: 1,
            voters: 3,
        });
        assert_eq!(
            e.to_string(),
            "refused: the change would lose quorum: only 1 of the 3 voters it leaves are \
             reachable"
        );
    }

    #[test]
    fn only_fatal_raft_errors_stop_the_node() {
        let lost = keel_raft::Error::CommitBeyondLog {
            commit: 9,
            last_index: 3,
        };
        let fatal = fatal_raft(&lost).expect("a lost log stops the node");
        assert_eq!(fatal.kind, FatalKind::Raft);
        assert!(fatal.detail.contains("was the log lost"), "{fatal}");
        let broken = keel_raft::Error::Store(keel_raft::StorageError::Other("EIO".into()));
        assert_eq!(fatal_raft(&broken).map(|f| f.kind), Some(FatalKind::Raft));
        // Refusals of one message or request change nothing.
        for refused in [
            keel_raft::Error::ProposalDropped("no leader"),
            keel_raft::Error::MalformedMessage("term 0"),
            keel_raft::Error::StepPeerNotFound,
        ] {
            assert!(fatal_raft(&refused).is_none(), "{refused}");
        }
    }
}
