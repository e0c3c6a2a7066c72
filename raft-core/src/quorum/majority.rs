//! A simple majority configuration.

use std::collections::{BTreeSet, HashMap};

use super::types::{AckedIndexer, VoteResult};

/// A set of voters deciding by simple majority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<u64>,
}

impl MajorityConfig {
    /// A configuration of `voters`.
    pub fn new(voters: BTreeSet<u64>) -> MajorityConfig {
        MajorityConfig { voters }
    }

    /// The voter ids.
    pub fn ids(&self) -> &BTreeSet<u64> {
        &self.voters
    }

    /// Mutable voter ids (used while applying a conf change).
    pub fn ids_mut(&mut self) -> &mut BTreeSet<u64> {
        &mut self.voters
    }

    /// Whether `id` votes here.
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    /// Whether there are no voters.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// Number of voters.
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// The largest index acknowledged by a majority. An empty configuration commits
    /// everything (`u64::MAX`) so it never restricts a joint configuration's other half.
    pub fn committed_index(&self, acked: &impl AckedIndexer) -> u64 {
        if self.voters.is_empty() {
            return u64::MAX;
        }
        let mut indexes: Vec<u64> = self
            .voters
            .iter()
            .map(|&id| acked.acked_index(id).unwrap_or(0))
            .collect();
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        // With n voters sorted descending, the (n/2)-th index is held by a majority.
        indexes[self.voters.len() / 2]
    }

    /// The result of an election given each voter's answer (absent = not yet).
    /// An empty configuration wins, for the same reason as in `committed_index`.
    pub fn vote_result(&self, votes: &HashMap<u64, bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut yes, mut missing) = (0, 0);
        for id in &self.voters {
            match votes.get(id) {
                Some(true) => yes += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.voters.len() / 2 + 1;
        if yes >= quorum {
            VoteResult::Won
        } else if yes + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ids: &[u64]) -> MajorityConfig {
        MajorityConfig::new(ids.iter().copied().collect())
    }

    #[test]
    fn committed_index_is_majority_minimum() {
        let acked: HashMap<u64, u64> = [(1, 5), (2, 3), (3, 9)].into();
        assert_eq!(cfg(&[1, 2, 3]).committed_index(&acked), 5);
        assert_eq!(cfg(&[1, 2]).committed_index(&acked), 3);
        assert_eq!(cfg(&[1, 2, 3, 4]).committed_index(&acked), 3);
        assert_eq!(cfg(&[]).committed_index(&acked), u64::MAX);
    }

    #[test]
    fn vote_results() {
        let c = cfg(&[1, 2, 3]);
        assert_eq!(c.vote_result(&[(1, true)].into()), VoteResult::Pending);
        assert_eq!(
            c.vote_result(&[(1, true), (2, true)].into()),
            VoteResult::Won
        );
        assert_eq!(
            c.vote_result(&[(1, false), (2, false)].into()),
            VoteResult::Lost
        );
    }
}
