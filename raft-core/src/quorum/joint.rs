//! Joint consensus: two majority configurations that must both agree.

use std::collections::{BTreeSet, HashMap};

use super::majority::MajorityConfig;
use super::types::{AckedIndexer, VoteResult};

/// The incoming and (while joint) outgoing voter sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// Voters of the new configuration.
    pub incoming: MajorityConfig,
    /// Voters of the old configuration; empty when not joint.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// Every voter in either half.
    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming
            .ids()
            .union(self.outgoing.ids())
            .copied()
            .collect()
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Whether this is a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The largest index both halves have committed.
    pub fn committed_index(&self, acked: &impl AckedIndexer) -> u64 {
        self.incoming
            .committed_index(acked)
            .min(self.outgoing.committed_index(acked))
    }

    /// Won only if both halves won; lost if either lost.
    pub fn vote_result(&self, votes: &HashMap<u64, bool>) -> VoteResult {
        let a = self.incoming.vote_result(votes);
        let b = self.outgoing.vote_result(votes);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joint_needs_both_halves() {
        let j = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3].into()),
            outgoing: MajorityConfig::new([3, 4, 5].into()),
        };
        let acked: HashMap<u64, u64> = [(1, 9), (2, 9), (3, 4), (4, 2), (5, 1)].into();
        assert_eq!(j.committed_index(&acked), 2);
        let votes: HashMap<u64, bool> = [(1, true), (2, true)].into();
        assert_eq!(j.vote_result(&votes), VoteResult::Pending);
        let votes: HashMap<u64, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(j.vote_result(&votes), VoteResult::Lost);
    }
}
