//! The leader's bookkeeping: each peer's progress, the current configuration, and the
//! votes received in an election.

mod inflights;
mod progress;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};

use crate::quorum::{AckedIndexer, JointConfig, VoteResult};
use crate::types::ConfState;

/// The membership as the tracker holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    /// Voters (joint while `voters.outgoing` is non-empty).
    pub voters: JointConfig,
    /// Learners of the incoming configuration. Never overlaps the voters.
    pub learners: BTreeSet<u64>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<u64>,
    /// Whether the joint configuration is left automatically.
    pub auto_leave: bool,
}

impl Configuration {
    /// The configuration as a [`ConfState`].
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.ids().iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.ids().iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }
}

/// Progress of every member, the configuration, and election votes.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    /// Per-member progress, keyed by id.
    pub progress: BTreeMap<u64, Progress>,
    /// The configuration.
    pub conf: Configuration,
    votes: HashMap<u64, bool>,
    /// Window size for new progress entries.
    pub max_inflight_msgs: usize,
    /// Byte bound of the window for new progress entries.
    pub max_inflight_bytes: u64,
}

struct MatchedIndexes<'a>(&'a BTreeMap<u64, Progress>);

impl AckedIndexer for MatchedIndexes<'_> {
    fn acked_index(&self, voter: u64) -> Option<u64> {
        self.0.get(&voter).map(|p| p.matched)
    }
}

impl ProgressTracker {
    /// An empty tracker.
    pub fn new(max_inflight_msgs: usize, max_inflight_bytes: u64) -> ProgressTracker {
        ProgressTracker {
            progress: BTreeMap::new(),
            conf: Configuration::default(),
            votes: HashMap::new(),
            max_inflight_msgs,
            max_inflight_bytes,
        }
    }

    /// Whether `id` is a voter in either half of the configuration.
    pub fn is_voter(&self, id: u64) -> bool {
        self.conf.voters.contains(id)
    }

    /// Whether the configuration has exactly one voter, `id`.
    pub fn is_singleton(&self) -> bool {
        self.conf.voters.incoming.len() == 1 && self.conf.voters.outgoing.is_empty()
    }

    /// The largest index a quorum of voters holds.
    pub fn committed_index(&self) -> u64 {
        self.conf
            .voters
            .committed_index(&MatchedIndexes(&self.progress))
    }

    /// Forgets all votes.
    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s answer (only the first answer counts).
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// Counts the votes: (granted, rejected, result).
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (id, &v) in &self.votes {
            if !self.is_voter(*id) {
                continue;
            }
            if v {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
        (granted, rejected, self.conf.voters.vote_result(&self.votes))
    }

    /// Whether the voters heard from recently (plus `self_id`) form a quorum. Used
    /// by CheckQuorum.
    pub fn quorum_recently_active(&mut self, self_id: u64) -> bool {
        let mut active = HashMap::new();
        for (&id, pr) in self.progress.iter_mut() {
            if id == self_id {
                pr.recent_active = true;
            }
            if !pr.is_learner {
                active.insert(id, pr.recent_active);
            }
        }
        self.conf.voters.vote_result(&active) == VoteResult::Won
    }

    /// Applies `f` to every member's progress.
    pub fn visit(&mut self, mut f: impl FnMut(u64, &mut Progress)) {
        for (&id, pr) in self.progress.iter_mut() {
            f(id, pr);
        }
    }
}
