//! What the leader knows about one follower's log.

use std::fmt;

use super::Inflights;

/// How the leader is currently replicating to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressState {
    /// One append per heartbeat interval until the match point is found.
    #[default]
    Probe,
    /// Optimistic pipelining of appends, bounded by the inflight window.
    Replicate,
    /// A snapshot is being sent; appends wait until it is reported.
    Snapshot,
}

impl fmt::Display for ProgressState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProgressState::Probe => "probe",
            ProgressState::Replicate => "replicate",
            ProgressState::Snapshot => "snapshot",
        };
        f.write_str(s)
    }
}

/// The leader's view of one peer.
///
/// Invariant: `matched < next_idx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known replicated on the peer.
    pub matched: u64,
    /// Next index to send.
    pub next_idx: u64,
    /// Replication state.
    pub state: ProgressState,
    /// While in `Snapshot`, the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// Whether the peer was heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// In `Probe`: whether an append was sent and replication waits for an answer
    /// or the next heartbeat.
    pub probe_sent: bool,
    /// The append window.
    pub ins: Inflights,
    /// Whether this peer is a learner.
    pub is_learner: bool,
}

impl Progress {
    /// A fresh progress for a peer expected to need entries from `next_idx`.
    pub fn new(next_idx: u64, max_inflight_msgs: usize, max_inflight_bytes: u64) -> Progress {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            ins: Inflights::new(max_inflight_msgs, max_inflight_bytes),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.ins.reset();
    }

    /// Back to probing from just after the match point (or after a finished snapshot).
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    /// Start pipelining from just after the match point.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    /// Stop appends while snapshot `snapshot_index` is sent.
    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Records that the peer holds entries up to `n`; returns whether that is news.
    pub fn maybe_update(&mut self, n: u64) -> bool {
        let updated = self.matched < n;
        if updated {
            self.matched = n;
            self.probe_sent = false;
        }
        self.next_idx = self.next_idx.max(n + 1);
        updated
    }

    /// After sending entries up to `last` optimistically.
    pub fn update_on_entries_send(&mut self, entries: usize, bytes: u64, last: u64) {
        match self.state {
            ProgressState::Replicate => {
                if entries > 0 {
                    self.next_idx = last + 1;
                    self.ins.add(last, bytes);
                }
            }
            ProgressState::Probe => {
                // A probe is sent at most once per heartbeat interval.
                self.probe_sent = true;
            }
            ProgressState::Snapshot => {
                unreachable!("entries are never sent to a peer receiving a snapshot")
            }
        }
    }

    /// Handles a rejected append of `rejected` with the peer's hint of where a match
    /// might be (`match_hint`). Returns whether `next_idx` moved back (a stale reject
    /// changes nothing).
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            // A rejection at or below the match point is stale.
            if rejected <= self.matched {
                return false;
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        // In Probe the rejection is stale unless it answers the last probe.
        if self.next_idx == 0 || self.next_idx - 1 != rejected {
            return false;
        }
        self.next_idx = (match_hint + 1).min(rejected).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// Whether sending more appends must wait.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.ins.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_backtracks_with_hint_and_ignores_stale() {
        let mut p = Progress::new(10, 8, 0);
        p.maybe_update(2);
        p.next_idx = 10;
        // A reject for 5 does not answer the probe at 9: stale.
        assert!(!p.maybe_decr_to(5, 3));
        assert!(p.maybe_decr_to(9, 4));
        assert_eq!(p.next_idx, 5);
        // Never below matched + 1.
        p.next_idx = 5;
        assert!(p.maybe_decr_to(4, 0));
        assert_eq!(p.next_idx, 3);
    }

    #[test]
    fn replicate_resets_to_match_on_reject() {
        let mut p = Progress::new(5, 8, 0);
        p.maybe_update(4);
        p.become_replicate();
        p.update_on_entries_send(3, 30, 7);
        assert_eq!(p.next_idx, 8);
        assert!(!p.maybe_decr_to(4, 4), "stale");
        assert!(p.maybe_decr_to(6, 4));
        assert_eq!(p.next_idx, 5);
    }

    #[test]
    fn snapshot_to_probe_resumes_after_snapshot() {
        let mut p = Progress::new(5, 8, 0);
        p.maybe_update(3);
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_idx, 21);
    }
}
