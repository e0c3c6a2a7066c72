//! Messages raft-core must refuse (or handle without harm) instead of panicking or
//! corrupting its state: one test per crash or corruption found by review, the
//! proptest and cargo-fuzz (`tests/hostile.rs` replays the fuzz finds byte for byte).

mod common;

use std::cell::Cell;

use common::*;
use keel_raft::tracker::ProgressState;
use keel_raft::*;

fn msg(t: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::new(t, from, 1);
    m.term = term;
    m
}

fn malformed(r: Result<()>) -> bool {
    matches!(r, Err(Error::MalformedMessage(_)))
}

/// Node 1 of {1, 2, 3}, leader in term 1 with its first entry committed.
fn leader() -> RawNode<MemoryStorage> {
    let mut nw = Network::new(&[1, 2, 3]);
    nw.campaign(1);
    assert_eq!(nw.peer(1).role(), StateRole::Leader);
    nw.peers.remove(&1).unwrap()
}

/// Node 1 of {1, 2, 3}, candidate in term 1.
fn candidate() -> RawNode<MemoryStorage> {
    let mut n = new_node(1, &[1, 2, 3]);
    n.campaign().unwrap();
    drain_ready(&mut n, &mut Vec::new());
    assert_eq!(n.role(), StateRole::Candidate);
    n
}

#[test]
fn vote_request_with_term_0_is_refused() {
    // Was: the answer carried term 0 and tripped the "vote messages carry a term" assert.
    for t in [MessageType::RequestVote, MessageType::RequestPreVote] {
        let mut n = new_node(1, &[1, 2, 3]);
        assert!(malformed(n.step(msg(t, 2, 0))), "{t:?}");
        assert_eq!(n.raft.vote, 0);
    }
}

#[test]
fn vote_response_with_term_0_does_not_elect() {
    // Was: term 0 skipped the term check and counted as a vote of the current election.
    let mut n = candidate();
    assert!(malformed(n.step(msg(
        MessageType::RequestVoteResponse,
        2,
        0
    ))));
    assert_eq!(n.role(), StateRole::Candidate);
}

#[test]
fn append_with_term_0_does_not_move_the_term_back() {
    // Was: a candidate became follower "in term 0".
    let mut n = candidate();
    let mut m = msg(MessageType::Append, 2, 0);
    m.entries = vec![];
    assert!(malformed(n.step(m)));
    assert_eq!(n.raft.term, 1);
}

#[test]
fn message_claiming_to_come_from_this_node_is_refused() {
    // Was: the leader answered itself and tripped "raft never sends to itself".
    let mut n = leader();
    let term = n.raft.term;
    for t in [
        MessageType::HeartbeatResponse,
        MessageType::AppendResponse,
        MessageType::Heartbeat,
        MessageType::RequestVote,
        MessageType::TimeoutNow,
    ] {
        assert!(malformed(n.step(msg(t, 1, term))), "{t:?}");
    }
    assert_eq!(n.role(), StateRole::Leader);
}

#[test]
fn append_after_the_end_of_the_log_is_rejected_not_appended() {
    // Was: term(index past the log) is 0, so log_term 0 "matched", the entries were
    // appended after a gap and the commit index passed the log ("was the log lost?").
    let mut n = new_node(1, &[1, 2, 3]);
    let mut m = msg(MessageType::Append, 2, 1);
    m.index = 5;
    m.log_term = 0;
    m.commit = 5;
    n.step(m).unwrap();
    assert_eq!(n.raft.raft_log.last_index(), 0);
    assert_eq!(n.raft.raft_log.committed, 0);
    let out = drain_ready(&mut n, &mut Vec::new());
    assert!(out
        .iter()
        .any(|m| m.msg_type == MessageType::AppendResponse && m.reject));
}

#[test]
fn heartbeat_commit_past_the_log_is_commit_beyond_log() {
    // etcd panics here ("was the log lost?"); raft-core returns a fatal error.
    let mut n = new_node(1, &[1, 2, 3]);
    let mut m = msg(MessageType::Heartbeat, 2, 1);
    m.commit = 3;
    let e = n.step(m).unwrap_err();
    assert_eq!(
        e,
        Error::CommitBeyondLog {
            commit: 3,
            last_index: 0
        }
    );
    assert!(e.is_fatal());
    assert_eq!(n.raft.raft_log.committed, 0);
    // A stale leader's heartbeat (older term) is only ignored: our log may have been
    // legitimately truncated since.
    n.raft.term = 5;
    let mut m = msg(MessageType::Heartbeat, 2, 4);
    m.commit = 3;
    n.step(m).unwrap();
}

#[test]
fn append_response_past_the_leaders_log_is_refused() {
    // Was: the follower's match moved past the leader's log (and `u64::MAX` overflowed
    // computing the next index).
    let mut n = leader();
    let (term, last) = (n.raft.term, n.raft.raft_log.last_index());
    for index in [last + 1, u64::MAX] {
        let mut m = msg(MessageType::AppendResponse, 2, term);
        m.index = index;
        assert!(malformed(n.step(m)), "{index}");
        assert!(n.raft.prs.progress[&2].matched <= last);
    }
}

#[test]
fn append_rejection_with_a_hint_past_the_index_is_refused() {
    // Was: `hint + 1` overflowed with a hint of u64::MAX.
    let mut n = leader();
    let term = n.raft.term;
    n.report_unreachable(2);
    let next = n.raft.prs.progress[&2].next_idx;
    let mut m = msg(MessageType::AppendResponse, 2, term);
    m.reject = true;
    m.index = next - 1;
    m.reject_hint = u64::MAX;
    assert!(malformed(n.step(m)));
    assert_eq!(n.raft.prs.progress[&2].state, ProgressState::Probe);
}

#[test]
fn term_near_u64_max_is_refused() {
    // Was: the node adopted term u64::MAX and overflowed on its next campaign.
    let mut n = new_node(1, &[1, 2, 3]);
    let mut m = msg(MessageType::RequestVote, 2, u64::MAX);
    m.index = 10;
    m.log_term = 10;
    assert!(malformed(n.step(m)));
    assert!(n.raft.term < MAX_TERM_OR_INDEX);
    n.campaign().unwrap();
}

#[test]
fn append_contradicting_entries_of_its_own_term_is_refused() {
    // A leader's log only grows during its term: an append that would replace an entry
    // of the sender's term contradicts what that leader sent before.
    let mut n = new_node(1, &[1, 2, 3]);
    let mut m = msg(MessageType::Append, 2, 2);
    m.entries = vec![
        Entry::new(1, 1, b"a".to_vec()),
        Entry::new(2, 2, b"b".to_vec()),
    ];
    n.step(m).unwrap();
    let mut m = msg(MessageType::Append, 2, 2);
    m.entries = vec![Entry::new(2, 1, b"c".to_vec())];
    assert!(malformed(n.step(m)));
    assert_eq!(n.raft.raft_log.last_index(), 2);
    assert_eq!(n.raft.raft_log.term(2).unwrap(), 2);
}

/// A `MemoryStorage` whose entry reads fail when asked to.
struct FailingStorage {
    inner: MemoryStorage,
    fail: Cell<bool>,
}

impl Storage for FailingStorage {
    fn initial_state(&self) -> Result<RaftState> {
        self.inner.initial_state()
    }
    fn entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>> {
        if self.fail.get() {
            return Err(StorageError::Other("disk on fire".into()).into());
        }
        self.inner.entries(low, high, max_size)
    }
    fn term(&self, index: u64) -> Result<u64> {
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<u64> {
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<u64> {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot> {
        self.inner.snapshot(request_index, to)
    }
}

#[test]
fn unreadable_committed_entries_stop_the_node_with_a_fatal_error() {
    // Was: panic!("committed entries [..] unavailable") inside `ready`.
    let mut inner = new_storage(&[1, 2, 3], &[]);
    inner
        .append(&[
            Entry::new(1, 1, b"a".to_vec()),
            Entry::new(1, 2, b"b".to_vec()),
        ])
        .unwrap();
    inner.set_hard_state(HardState {
        term: 1,
        vote: 0,
        commit: 2,
    });
    let store = FailingStorage {
        inner,
        fail: Cell::new(true),
    };
    let mut n = RawNode::new(&new_config(1), store).unwrap();
    let rd = n.ready();
    assert!(rd.committed_entries().is_empty());
    let e = n.fatal_error().cloned().expect("a fatal error is recorded");
    assert!(e.is_fatal());
    assert_eq!(n.step(msg(MessageType::Heartbeat, 2, 1)), Err(e));
    n.advance_append_async(rd);
    assert!(!n.has_ready(), "a stopped node must not spin on ready");
}
