//! What both kinds of configuration share: the outcome of a vote and the view of
//! each voter's acknowledged index they compute a commit index from.

/// Outcome of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Not enough answers yet to decide.
    Pending,
    /// A quorum rejected.
    Lost,
    /// A quorum granted.
    Won,
}

/// Acknowledged index per voter, as the commit computation sees it.
pub trait AckedIndexer {
    /// The highest index `voter` is known to hold, if the voter is tracked.
    fn acked_index(&self, voter: u64) -> Option<u64>;
}

impl AckedIndexer for std::collections::HashMap<u64, u64> {
    fn acked_index(&self, voter: u64) -> Option<u64> {
        self.get(&voter).copied()
    }
}
