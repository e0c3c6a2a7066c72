//! Why a [`Cluster`](super::Cluster) operation failed.

use crate::Status;

/// Why a [`Cluster`](super::Cluster) operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The temporary directory of [`Storage::TempDir`](super::Storage::TempDir) could not be made.
    #[error("cannot create the cluster's temporary directory")]
    TempDir(#[source] std::io::Error),
    /// The id is not one of the cluster's nodes.
    #[error("node {0} is not in the cluster")]
    UnknownNode(u64),
    /// Starting a node that runs already.
    #[error("node {0} is already running")]
    AlreadyRunning(u64),
    /// Stopping or killing a node that does not run.
    #[error("node {0} is not running")]
    NotRunning(u64),
    /// [`Db::open`](crate::Db::open) failed.
    #[error("cannot start node {id}: {source}")]
    Start {
        /// The node.
        id: u64,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// A node's TCP transport ([`Transport::Tcp`](super::Transport::Tcp)) did not
    /// start: its address could not be bound (still in use after a while of retrying)
    /// or a thread could not be started.
    #[error("cannot start node {id}'s TCP transport: {source}")]
    Transport {
        /// The node.
        id: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// [`Replica::close`](crate::Replica::close) reported an error (the node stopped anyway).
    #[error("node {id} did not close cleanly: {source}")]
    Close {
        /// The node.
        id: u64,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// [`Cluster::kill`](super::Cluster::kill) gave up waiting for borrowed handles; the node still runs.
    #[error("node {id} is still busy after {} s; not stopping it", waited_ms / 1000)]
    Busy {
        /// The node.
        id: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// Only a node on [`Storage::Simulated`](super::Storage::Simulated) can crash.
    #[error("node {0} is not on a simulated disk; it cannot crash")]
    NotSimulated(u64),
    /// No leader every running node agrees on appeared in time.
    #[error("no agreed leader within {waited_ms} ms")]
    NoLeader {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The running nodes did not reach the same applied index in time.
    #[error("the nodes did not converge within {waited_ms} ms: {statuses:#?}")]
    NotConverged {
        /// How long it waited.
        waited_ms: u64,
        /// Every running node's status at the end.
        statuses: Vec<Status>,
    },
}

/// A short alias for this module's results.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
