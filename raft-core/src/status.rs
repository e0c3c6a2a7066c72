//! A copy of a node's Raft state for an application to observe ([`RawNode::status`](crate::RawNode::status)).
//! (keel's engine publishes a view of its own for `Db::status` and `/status`.)

use std::collections::BTreeMap;

use crate::raft::{Raft, SoftState};
use crate::storage::Storage;
use crate::tracker::Progress;
use crate::types::HardState;

/// What a node is doing, including (on the leader) every peer's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The node's id.
    pub id: u64,
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// Role and known leader.
    pub soft_state: SoftState,
    /// Highest index applied.
    pub applied: u64,
    /// Highest index durable locally.
    pub persisted: u64,
    /// First and last index of the log.
    pub first_index: u64,
    /// Last index of the log.
    pub last_index: u64,
    /// Each member's progress; only a leader tracks it.
    pub progress: Option<BTreeMap<u64, Progress>>,
    /// The node a leadership transfer is heading to.
    pub lead_transferee: Option<u64>,
}

impl Status {
    /// Reads the status of `raft`.
    pub fn new<S: Storage>(raft: &Raft<S>) -> Status {
        let is_leader = raft.state == crate::raft::StateRole::Leader;
        Status {
            id: raft.id,
            hard_state: raft.hard_state(),
            soft_state: raft.soft_state(),
            applied: raft.raft_log.applied,
            persisted: raft.raft_log.persisted,
            first_index: raft.raft_log.first_index(),
            last_index: raft.raft_log.last_index(),
            progress: is_leader.then(|| raft.prs.progress.clone()),
            lead_transferee: raft.lead_transferee,
        }
    }
}
