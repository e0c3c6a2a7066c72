//! The rules of the Raft paper, §5.1–§5.4, one test per rule.
//!
//! Most tests drive a single `Raft` by hand: they step crafted messages into it and
//! check exactly what it sends back and how its state changes. Followers and leaders
//! queue messages in different places (`msgs` vs `msgs_after_persist`);
//! `read_messages` takes both. A leader counts its own log toward commit only after
//! the engine reports it durable, which `persist` below does.

mod common;

use std::collections::BTreeSet;

use common::{new_config, new_node_with, new_storage, read_messages, Network};
use keel_raft::*;

// ---- helpers ----

/// A node `id` over `storage` (which holds the membership).
fn new_raft(
    id: u64,
    election: usize,
    heartbeat: usize,
    storage: MemoryStorage,
) -> Raft<MemoryStorage> {
    let mut c = new_config(id);
    c.election_tick = election;
    c.heartbeat_tick = heartbeat;
    Raft::new(&c, storage).expect("valid config")
}

/// A node `id` of `peers` with fresh storage and the default test timeouts.
fn fresh_raft(id: u64, peers: &[u64]) -> Raft<MemoryStorage> {
    new_raft(id, 10, 1, new_storage(peers, &[]))
}

/// Voters 1..=n.
fn ids(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// Entries at indexes 1.. with the given terms and no data.
fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| Entry::new(t, i as u64 + 1, Vec::new()))
        .collect()
}

/// A storage for `peers` preloaded with `ents` and hard state `hs`.
fn storage_with(peers: &[u64], ents: &[Entry], hs: HardState) -> MemoryStorage {
    let mut s = new_storage(peers, &[]);
    s.append(ents).expect("contiguous entries");
    s.set_hard_state(hs);
    s
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

/// Writes the unstable entries to storage and reports them durable, as an engine
/// does after each `Ready`.
fn persist(r: &mut Raft<MemoryStorage>) {
    let ents = r.raft_log.next_unstable_entries().to_vec();
    if let Some(last) = ents.last() {
        let (index, term) = (last.index, last.term);
        r.raft_log.store.append(&ents).expect("append to storage");
        r.on_persist_entries(index, term);
    }
}

/// Every message `r` queued, ordered by recipient (stable for equal recipients).
fn take_msgs(r: &mut Raft<MemoryStorage>) -> Vec<Message> {
    let mut msgs = read_messages(r);
    msgs.sort_by_key(|m| m.to);
    msgs
}

/// The whole log, first to last index.
fn all_entries(r: &Raft<MemoryStorage>) -> Vec<Entry> {
    let log = &r.raft_log;
    log.slice(log.first_index(), log.last_index() + 1, u64::MAX)
        .expect("log readable")
}

/// The follower's positive answer to the append `m`.
fn accept(m: &Message) -> Message {
    assert_eq!(m.msg_type, MessageType::Append, "only appends are accepted");
    Message {
        msg_type: MessageType::AppendResponse,
        from: m.to,
        to: m.from,
        term: m.term,
        index: m.index + m.entries.len() as u64,
        ..Message::default()
    }
}

fn append_msg(from: u64, to: u64, term: u64, index: u64, log_term: u64) -> Message {
    Message {
        msg_type: MessageType::Append,
        from,
        to,
        term,
        index,
        log_term,
        ..Message::default()
    }
}

fn vote_request(from: u64, to: u64, term: u64, index: u64, log_term: u64) -> Message {
    Message {
        msg_type: MessageType::RequestVote,
        from,
        to,
        term,
        index,
        log_term,
        ..Message::default()
    }
}

fn propose(r: &mut Raft<MemoryStorage>, data: &[u8]) {
    let mut m = Message::new(MessageType::Propose, r.id, r.id);
    m.entries = vec![Entry::new(0, 0, data.to_vec())];
    r.step(m).expect("the leader accepts the proposal");
}

/// Makes `r` (a fresh node) leader of its term by fiat.
fn make_leader(r: &mut Raft<MemoryStorage>) {
    r.become_candidate();
    r.become_leader();
}

/// Replicates and commits the leader's empty entry on every follower, then marks it
/// applied, leaving no messages queued.
fn commit_noop(r: &mut Raft<MemoryStorage>) {
    assert_eq!(r.state, StateRole::Leader);
    persist(r);
    r.bcast_append();
    for m in take_msgs(r) {
        r.step(accept(&m)).unwrap();
    }
    assert_eq!(r.raft_log.committed, r.raft_log.last_index());
    let committed = r.raft_log.committed;
    r.raft_log.applied_to(committed);
    read_messages(r);
}

/// Puts a fresh `r` in `state` at term 1 (leaders by fiat, without an election).
fn enter_state(r: &mut Raft<MemoryStorage>, state: StateRole) {
    match state {
        StateRole::Follower => r.become_follower(1, 2),
        StateRole::Candidate => r.become_candidate(),
        StateRole::Leader => make_leader(r),
        StateRole::PreCandidate => unreachable!("pre-vote is not part of §5"),
    }
    assert_eq!(r.term, 1);
    read_messages(r);
}

// ---- §5.1: terms ----

/// §5.1: "If one server's current term is smaller than the other's, then it updates
/// its current term to the larger value. If a candidate or leader discovers that its
/// term is out of date, it immediately reverts to follower state."
fn check_update_term_from_message(state: StateRole) {
    let cases = [
        (MessageType::Append, 2),
        (MessageType::Heartbeat, 2),
        (MessageType::RequestVote, 0),
        (MessageType::AppendResponse, 0),
        (MessageType::RequestVoteResponse, 0),
    ];
    for (msg_type, want_leader) in cases {
        let mut r = fresh_raft(1, &ids(3));
        enter_state(&mut r, state);
        let mut m = Message::new(msg_type, 2, 1);
        m.term = 2;
        r.step(m).unwrap();
        assert_eq!(r.term, 2, "{state:?} stepping {msg_type:?}");
        assert_eq!(
            r.state,
            StateRole::Follower,
            "{state:?} stepping {msg_type:?}"
        );
        assert_eq!(r.leader_id, want_leader, "{state:?} stepping {msg_type:?}");
    }
}

#[test]
fn follower_updates_term_from_message() {
    check_update_term_from_message(StateRole::Follower);
}

#[test]
fn candidate_updates_term_from_message() {
    check_update_term_from_message(StateRole::Candidate);
}

#[test]
fn leader_updates_term_from_message() {
    check_update_term_from_message(StateRole::Leader);
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the
/// request." Without PreVote/CheckQuorum the request is simply dropped: no answer and
/// no change of state.
#[test]
fn stale_term_messages_are_ignored() {
    let types = [
        MessageType::Append,
        MessageType::Heartbeat,
        MessageType::RequestVote,
        MessageType::Snapshot,
        MessageType::AppendResponse,
        MessageType::HeartbeatResponse,
        MessageType::RequestVoteResponse,
    ];
    let build = || {
        let ents = log_of(&[1, 2]);
        let s = storage_with(&ids(3), &ents, hard_state(2, 0, 0));
        new_raft(1, 10, 1, s)
    };
    for state in [StateRole::Follower, StateRole::Leader] {
        for msg_type in types {
            let mut r = build();
            if state == StateRole::Leader {
                make_leader(&mut r);
                persist(&mut r);
            }
            read_messages(&mut r);
            let term = r.term;
            let before = (r.term, r.vote, r.state, r.leader_id, all_entries(&r));
            let matched: Vec<u64> = r.prs.progress.values().map(|p| p.matched).collect();
            let mut m = Message::new(msg_type, 2, 1);
            m.term = term - 1;
            m.index = 5;
            m.log_term = term - 1;
            m.commit = 2;
            m.entries = vec![Entry::new(term - 1, 6, b"stale".to_vec())];
            if msg_type == MessageType::Snapshot {
                m.entries.clear();
                m.snapshot = Some(Snapshot {
                    metadata: SnapshotMetadata {
                        conf_state: ConfState {
                            voters: ids(3),
                            ..ConfState::default()
                        },
                        index: 11,
                        term: term - 1,
                    },
                    data: Vec::new(),
                });
            }
            r.step(m).unwrap();
            let after = (r.term, r.vote, r.state, r.leader_id, all_entries(&r));
            assert_eq!(after, before, "{state:?} stepping a stale {msg_type:?}");
            let matched_after: Vec<u64> = r.prs.progress.values().map(|p| p.matched).collect();
            assert_eq!(
                matched_after, matched,
                "{state:?} stepping a stale {msg_type:?}"
            );
            assert_eq!(r.raft_log.committed, 0);
            assert_eq!(
                read_messages(&mut r),
                vec![],
                "{state:?} answered a stale {msg_type:?}"
            );
        }
    }
}

// ---- §5.2: leader election ----

/// §5.2: "When servers start up, they begin as followers."
#[test]
fn nodes_start_as_followers() {
    let r = fresh_raft(1, &ids(3));
    assert_eq!(r.state, StateRole::Follower);
    assert_eq!((r.term, r.vote, r.leader_id), (0, 0, 0));

    // Also when restarting with a persisted term and vote.
    let s = storage_with(&ids(3), &log_of(&[1, 2]), hard_state(2, 1, 1));
    let r = new_raft(1, 10, 1, s);
    assert_eq!(r.state, StateRole::Follower);
    assert_eq!((r.term, r.vote, r.leader_id), (2, 1, 0));
}

/// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
/// entries) to all followers in order to maintain their authority."
#[test]
fn leader_broadcasts_heartbeat_after_heartbeat_timeout() {
    let heartbeat = 3;
    let mut r = new_raft(1, 10, heartbeat, new_storage(&ids(3), &[]));
    make_leader(&mut r);
    for i in 0..10 {
        let mut e = [Entry::new(0, 0, vec![i])];
        assert!(r.append_entry(&mut e));
    }
    read_messages(&mut r);
    for _ in 0..heartbeat - 1 {
        r.tick();
        assert_eq!(
            read_messages(&mut r),
            vec![],
            "heartbeat before its timeout"
        );
    }
    r.tick();
    let heartbeat_to = |to| Message {
        msg_type: MessageType::Heartbeat,
        from: 1,
        to,
        term: 1,
        ..Message::default()
    };
    assert_eq!(take_msgs(&mut r), vec![heartbeat_to(2), heartbeat_to(3)]);
    // And again one heartbeat timeout later.
    for _ in 0..heartbeat {
        r.tick();
    }
    assert_eq!(take_msgs(&mut r), vec![heartbeat_to(2), heartbeat_to(3)]);
}

/// §5.2: "If a follower receives no communication over a period of time called the
/// election timeout, then it ... begins an election": it increments its term, votes
/// for itself and sends RequestVote to every other server.
fn check_nonleader_starts_election(state: StateRole) {
    let et = 10;
    let mut r = new_raft(1, et, 1, new_storage(&ids(3), &[]));
    enter_state(&mut r, state);
    // The randomized timeout lies in [et, 2et): 2et - 1 ticks fire exactly once.
    for _ in 1..2 * et {
        r.tick();
    }
    assert_eq!(r.term, 2);
    assert_eq!(r.state, StateRole::Candidate);
    assert_eq!(r.vote, 1, "a candidate votes for itself");
    let want: Vec<Message> = [2, 3]
        .into_iter()
        .map(|to| vote_request(1, to, 2, 0, 0))
        .collect();
    assert_eq!(take_msgs(&mut r), want);
}

#[test]
fn follower_starts_election_on_timeout() {
    check_nonleader_starts_election(StateRole::Follower);
}

#[test]
fn candidate_starts_new_election_on_timeout() {
    check_nonleader_starts_election(StateRole::Candidate);
}

/// §5.2: a candidate "wins an election if it receives votes from a majority of the
/// servers in the full cluster for the same term"; it loses (returns to follower) once
/// a majority rejected it, and otherwise keeps waiting.
#[test]
fn election_is_won_lost_or_pending_after_one_round() {
    use StateRole::*;
    // (cluster size, (voter, granted) answers in order, resulting role)
    type Case = (u64, &'static [(u64, bool)], StateRole);
    let cases: &[Case] = &[
        (1, &[], Leader),
        (3, &[(2, true), (3, true)], Leader),
        (3, &[(2, true)], Leader),
        (5, &[(2, true), (3, true), (4, true), (5, true)], Leader),
        (5, &[(2, true), (3, true), (4, true)], Leader),
        (5, &[(2, true), (3, true)], Leader),
        (5, &[(2, false), (3, true), (4, false), (5, true)], Leader),
        (3, &[(2, false), (3, false)], Follower),
        (
            5,
            &[(2, false), (3, false), (4, false), (5, false)],
            Follower,
        ),
        (
            5,
            &[(2, true), (3, false), (4, false), (5, false)],
            Follower,
        ),
        (5, &[(2, false), (3, false), (4, false)], Follower),
        (3, &[], Candidate),
        (3, &[(2, false)], Candidate),
        (5, &[(2, true)], Candidate),
        (5, &[(2, false), (3, false)], Candidate),
        (5, &[(2, true), (3, false), (4, false)], Candidate),
        (5, &[], Candidate),
    ];
    for (i, &(size, votes, want)) in cases.iter().enumerate() {
        let mut r = fresh_raft(1, &ids(size));
        r.step(Message::new(MessageType::Hup, 1, 1)).unwrap();
        for &(from, granted) in votes {
            let mut m = Message::new(MessageType::RequestVoteResponse, from, 1);
            m.term = 1;
            m.reject = !granted;
            r.step(m).unwrap();
        }
        assert_eq!(r.state, want, "case {i}: size {size}, votes {votes:?}");
        assert_eq!(r.term, 1, "case {i}");
        if want == Leader {
            assert_eq!(r.leader_id, 1, "case {i}");
        }
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis."
#[test]
fn follower_votes_once_per_term_first_come_first_served() {
    // (vote already cast, requester, rejected)
    let cases = [
        (0, 2, false),
        (0, 3, false),
        (2, 2, false),
        (3, 3, false),
        (2, 3, true),
        (3, 2, true),
    ];
    for (i, (voted, from, reject)) in cases.into_iter().enumerate() {
        let s = storage_with(&ids(3), &[], hard_state(1, voted, 0));
        let mut r = new_raft(1, 10, 1, s);
        r.step(vote_request(from, 1, 1, 0, 0)).unwrap();
        let want = Message {
            msg_type: MessageType::RequestVoteResponse,
            from: 1,
            to: from,
            term: 1,
            reject,
            ..Message::default()
        };
        assert_eq!(read_messages(&mut r), vec![want], "case {i}");
        let want_vote = if voted == 0 { from } else { voted };
        assert_eq!(
            r.vote, want_vote,
            "case {i}: the vote never changes in a term"
        );
    }

    // Sequentially: the first of two candidates of the same term gets the vote.
    let mut r = fresh_raft(1, &ids(3));
    r.step(vote_request(2, 1, 1, 0, 0)).unwrap();
    r.step(vote_request(3, 1, 1, 0, 0)).unwrap();
    r.step(vote_request(2, 1, 1, 0, 0)).unwrap();
    let rejects: Vec<(u64, bool)> = read_messages(&mut r)
        .iter()
        .map(|m| (m.to, m.reject))
        .collect();
    assert_eq!(rejects, vec![(2, false), (3, true), (2, false)]);
    assert_eq!(r.vote, 2);
}

/// §5.2: "If the leader's term ... is at least as large as the candidate's current
/// term, then the candidate recognizes the leader as legitimate and returns to
/// follower state."
#[test]
fn candidate_falls_back_to_follower_on_append_from_leader() {
    for term in [1, 2] {
        let mut r = fresh_raft(1, &ids(3));
        r.step(Message::new(MessageType::Hup, 1, 1)).unwrap();
        assert_eq!((r.state, r.term), (StateRole::Candidate, 1));
        read_messages(&mut r);
        r.step(append_msg(2, 1, term, 0, 0)).unwrap();
        assert_eq!(r.state, StateRole::Follower, "append of term {term}");
        assert_eq!(r.term, term);
        assert_eq!(r.leader_id, 2);
        // And it answers the append as a follower would.
        let want = Message {
            msg_type: MessageType::AppendResponse,
            from: 1,
            to: 2,
            term,
            ..Message::default()
        };
        assert_eq!(read_messages(&mut r), vec![want]);
    }
}

/// §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed
/// interval (e.g., 150–300ms)": here every value of [et, 2et) shows up, and the ticks
/// a node waits match the timeout it drew.
fn check_election_timeout_randomized(state: StateRole) {
    let et = 10;
    let mut r = new_raft(1, et, 1, new_storage(&ids(3), &[]));
    let mut seen = BTreeSet::new();
    for round in 0..50 * et {
        match state {
            StateRole::Follower => {
                let term = r.term + 1;
                r.become_follower(term, 2);
            }
            StateRole::Candidate => r.become_candidate(),
            _ => unreachable!(),
        }
        read_messages(&mut r);
        let drawn = r.randomized_election_timeout();
        let mut ticks = 0;
        while read_messages(&mut r).is_empty() {
            r.tick();
            ticks += 1;
            assert!(
                ticks < 2 * et,
                "round {round}: no election after {ticks} ticks"
            );
        }
        assert_eq!(ticks, drawn, "round {round}");
        seen.insert(ticks);
    }
    let all: BTreeSet<usize> = (et..2 * et).collect();
    assert_eq!(seen, all, "every timeout in [et, 2et) occurs");
}

#[test]
fn follower_election_timeout_is_randomized() {
    check_election_timeout_randomized(StateRole::Follower);
}

#[test]
fn candidate_election_timeout_is_randomized() {
    check_election_timeout_randomized(StateRole::Candidate);
}

/// §5.2: randomized timeouts ensure that "in most cases only a single server will time
/// out". Five nodes reset together; count the rounds in which more than one fires
/// first. With independent draws from 10 values that happens in about 23% of rounds.
fn check_election_timeouts_nonconflict(state: StateRole) {
    let et = 10;
    let peers = ids(5);
    let mut rs: Vec<Raft<MemoryStorage>> = peers
        .iter()
        .map(|&id| new_raft(id, et, 1, new_storage(&peers, &[])))
        .collect();
    let rounds = 1000;
    let mut conflicts = 0;
    for _ in 0..rounds {
        for r in rs.iter_mut() {
            match state {
                StateRole::Follower => {
                    let term = r.term + 1;
                    r.become_follower(term, 0);
                }
                StateRole::Candidate => r.become_candidate(),
                _ => unreachable!(),
            }
            read_messages(r);
        }
        let mut fired = 0;
        while fired == 0 {
            for r in rs.iter_mut() {
                r.tick();
                if !read_messages(r).is_empty() {
                    fired += 1;
                }
            }
        }
        if fired > 1 {
            conflicts += 1;
        }
    }
    let rate = conflicts as f64 / rounds as f64;
    assert!(
        rate <= 0.3,
        "{state:?}: {conflicts}/{rounds} rounds had ties"
    );
}

#[test]
fn followers_election_timeouts_rarely_conflict() {
    check_election_timeouts_nonconflict(StateRole::Follower);
}

#[test]
fn candidates_election_timeouts_rarely_conflict() {
    check_election_timeouts_nonconflict(StateRole::Candidate);
}

/// §5.2: the timeouts must be random per server, not merely per draw: two servers
/// sharing a seed whose histories differ by a few elections (each redraws on every
/// role change) must still draw unrelated timeouts, or they would tie every time.
#[test]
fn peers_draw_unrelated_election_timeouts() {
    let rounds = 200;
    for (x, y) in [(1, 2), (2, 3), (1, 3)] {
        for extra in 0..4 {
            let mut a = fresh_raft(x, &ids(3));
            let mut b = fresh_raft(y, &ids(3));
            // `a` went through `extra` more elections than `b`.
            for _ in 0..extra {
                a.become_candidate();
            }
            let mut ties = 0;
            for _ in 0..rounds {
                let (ta, tb) = (a.term + 1, b.term + 1);
                a.become_follower(ta, 0);
                b.become_follower(tb, 0);
                if a.randomized_election_timeout() == b.randomized_election_timeout() {
                    ties += 1;
                }
            }
            // Independent draws from 10 values tie about 10% of the time.
            assert!(
                ties < rounds / 4,
                "nodes {x} and {y} ({extra} extra draws) tied in {ties}/{rounds} rounds"
            );
        }
    }
}

// ---- §5.3: log replication ----

/// §5.3: the leader "appends the command to its log as a new entry, then issues
/// AppendEntries RPCs in parallel to each of the other servers to replicate the
/// entry."
#[test]
fn leader_starts_replication() {
    let mut r = fresh_raft(1, &ids(3));
    make_leader(&mut r);
    commit_noop(&mut r);
    let li = r.raft_log.last_index();

    propose(&mut r, b"some data");
    assert_eq!(r.raft_log.last_index(), li + 1);
    assert_eq!(r.raft_log.committed, li);
    let ent = Entry::new(1, li + 1, b"some data".to_vec());
    let want: Vec<Message> = [2, 3]
        .into_iter()
        .map(|to| Message {
            entries: vec![ent.clone()],
            commit: li,
            ..append_msg(1, to, 1, li, 1)
        })
        .collect();
    assert_eq!(take_msgs(&mut r), want);
    assert_eq!(r.raft_log.next_unstable_entries(), &[ent][..]);
}

/// §5.3: "A log entry is committed once the leader that created the entry has
/// replicated it on a majority of the servers", and the leader then tells the
/// followers the new commit index.
#[test]
fn leader_commits_entry_replicated_on_majority() {
    let mut r = fresh_raft(1, &ids(3));
    make_leader(&mut r);
    commit_noop(&mut r);
    let li = r.raft_log.last_index();

    propose(&mut r, b"some data");
    persist(&mut r);
    for m in take_msgs(&mut r) {
        r.step(accept(&m)).unwrap();
    }
    assert_eq!(r.raft_log.committed, li + 1);
    assert_eq!(
        r.raft_log.next_committed_entries().unwrap(),
        vec![Entry::new(1, li + 1, b"some data".to_vec())]
    );
    let want: Vec<Message> = [2, 3]
        .into_iter()
        .map(|to| Message {
            commit: li + 1,
            ..append_msg(1, to, 1, li + 1, 1)
        })
        .collect();
    assert_eq!(take_msgs(&mut r), want);
}

/// §5.3: the leader commits an entry as soon as a majority (counting itself, once its
/// own copy is durable) holds it, and not before.
#[test]
fn leader_acknowledges_commit_only_with_majority() {
    let cases: &[(u64, &[u64], bool)] = &[
        (1, &[], true),
        (3, &[], false),
        (3, &[2], true),
        (3, &[2, 3], true),
        (5, &[], false),
        (5, &[2], false),
        (5, &[2, 3], true),
        (5, &[2, 3, 4], true),
        (5, &[2, 3, 4, 5], true),
    ];
    for (i, &(size, acceptors, want)) in cases.iter().enumerate() {
        let mut r = fresh_raft(1, &ids(size));
        make_leader(&mut r);
        commit_noop(&mut r);
        let li = r.raft_log.last_index();
        propose(&mut r, b"some data");
        persist(&mut r);
        for m in take_msgs(&mut r) {
            if acceptors.contains(&m.to) {
                r.step(accept(&m)).unwrap();
            }
        }
        assert_eq!(
            r.raft_log.committed > li,
            want,
            "case {i}: size {size}, acceptors {acceptors:?}"
        );
    }
}

/// The leader's own copy counts only once durable: with one of two followers acking,
/// a 3-node leader commits only after it persisted the entry itself.
#[test]
fn leader_counts_itself_only_after_persisting() {
    let mut r = fresh_raft(1, &ids(3));
    make_leader(&mut r);
    commit_noop(&mut r);
    let li = r.raft_log.last_index();
    propose(&mut r, b"some data");
    for m in take_msgs(&mut r) {
        if m.to == 2 {
            r.step(accept(&m)).unwrap();
        }
    }
    assert_eq!(
        r.raft_log.committed, li,
        "the leader's copy is not durable yet"
    );
    persist(&mut r);
    assert_eq!(r.raft_log.committed, li + 1);
}

/// §5.3: "This also commits all preceding entries in the leader's log, including
/// entries created by previous leaders."
#[test]
fn leader_commits_preceding_entries() {
    let logs: [&[u64]; 4] = [&[], &[2], &[1, 2], &[1]];
    for terms in logs {
        let prior = log_of(terms);
        let s = storage_with(&ids(3), &prior, hard_state(2, 0, 0));
        let mut r = new_raft(1, 10, 1, s);
        make_leader(&mut r);
        assert_eq!(r.term, 3);
        propose(&mut r, b"some data");
        persist(&mut r);
        for m in take_msgs(&mut r) {
            r.step(accept(&m)).unwrap();
        }
        let li = prior.len() as u64;
        let mut want = prior.clone();
        want.push(Entry::new(3, li + 1, Vec::new()));
        want.push(Entry::new(3, li + 2, b"some data".to_vec()));
        assert_eq!(r.raft_log.committed, li + 2, "prior log {terms:?}");
        assert_eq!(
            r.raft_log.next_committed_entries().unwrap(),
            want,
            "prior log {terms:?}"
        );
    }
}

/// §5.3: "Once a follower learns that a log entry is committed, it applies the entry
/// to its local state machine": the follower commits up to the leader's commit index.
#[test]
fn follower_commits_per_leader_commit() {
    let a = || Entry::new(1, 1, b"some data".to_vec());
    let cases = [
        (vec![a()], 1),
        (vec![a(), Entry::new(1, 2, b"some data2".to_vec())], 2),
        (
            vec![
                Entry::new(1, 1, b"some data2".to_vec()),
                Entry::new(1, 2, b"some data".to_vec()),
            ],
            2,
        ),
        (vec![a(), Entry::new(1, 2, b"some data2".to_vec())], 1),
    ];
    for (i, (ents, commit)) in cases.into_iter().enumerate() {
        let mut r = fresh_raft(1, &ids(3));
        r.become_follower(1, 2);
        let m = Message {
            entries: ents.clone(),
            commit,
            ..append_msg(2, 1, 1, 0, 0)
        };
        r.step(m).unwrap();
        assert_eq!(r.raft_log.committed, commit, "case {i}");
        persist(&mut r);
        assert_eq!(
            r.raft_log.next_committed_entries().unwrap(),
            ents[..commit as usize].to_vec(),
            "case {i}"
        );
    }
}

/// §5.3: "When sending an AppendEntries RPC, the leader includes the index and term of
/// the entry in its log that immediately precedes the new entries. If the follower
/// does not find an entry in its log with the same index and term, then it refuses
/// the new entries." A refusal carries a hint for the leader to back up faster.
#[test]
fn follower_checks_append_consistency() {
    let ents = log_of(&[1, 2]);
    // (log_term, index, response index, reject, reject hint, hint term)
    let cases = [
        // Matches a committed entry (the empty prefix): acks the commit index.
        (0, 0, 1, false, 0, 0),
        // Matches a committed entry.
        (1, 1, 1, false, 0, 0),
        // Matches an uncommitted entry.
        (2, 2, 2, false, 0, 0),
        // Index 2 exists with another term: reject, hint (1, 1).
        (1, 2, 2, true, 1, 1),
        // Index 3 does not exist: reject, hint at the last entry (2, 2).
        (3, 3, 3, true, 2, 2),
    ];
    for (i, (log_term, index, windex, reject, hint, hint_term)) in cases.into_iter().enumerate() {
        let s = storage_with(&ids(3), &ents, hard_state(2, 0, 1));
        let mut r = new_raft(1, 10, 1, s);
        r.become_follower(2, 2);
        r.step(append_msg(2, 1, 2, index, log_term)).unwrap();
        let want = Message {
            msg_type: MessageType::AppendResponse,
            from: 1,
            to: 2,
            term: 2,
            index: windex,
            reject,
            reject_hint: hint,
            log_term: hint_term,
            ..Message::default()
        };
        assert_eq!(read_messages(&mut r), vec![want], "case {i}");
        assert_eq!(
            all_entries(&r),
            ents,
            "case {i}: a check never changes the log"
        );
    }
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different
/// terms), delete the existing entry and all that follow it" (Figure 2), then append
/// the new entries not already in the log.
#[test]
fn follower_appends_and_truncates_conflicts() {
    let e = |term, index| Entry::new(term, index, Vec::new());
    // (index, log_term, entries, whole log after, unstable after)
    let cases = [
        (
            2,
            2,
            vec![e(3, 3)],
            vec![e(1, 1), e(2, 2), e(3, 3)],
            vec![e(3, 3)],
        ),
        (
            1,
            1,
            vec![e(3, 2), e(4, 3)],
            vec![e(1, 1), e(3, 2), e(4, 3)],
            vec![e(3, 2), e(4, 3)],
        ),
        (0, 0, vec![e(1, 1)], vec![e(1, 1), e(2, 2)], vec![]),
        (0, 0, vec![e(3, 1)], vec![e(3, 1)], vec![e(3, 1)]),
    ];
    for (i, (index, log_term, ents, want_log, want_unstable)) in cases.into_iter().enumerate() {
        let s = storage_with(&ids(3), &log_of(&[1, 2]), hard_state(2, 0, 0));
        let mut r = new_raft(1, 10, 1, s);
        r.become_follower(2, 2);
        let last = index + ents.len() as u64;
        let m = Message {
            entries: ents,
            ..append_msg(2, 1, 4, index, log_term)
        };
        r.step(m).unwrap();
        assert_eq!(all_entries(&r), want_log, "case {i}");
        assert_eq!(
            r.raft_log.next_unstable_entries(),
            &want_unstable[..],
            "case {i}"
        );
        let resp = read_messages(&mut r);
        assert_eq!(resp.len(), 1, "case {i}");
        assert_eq!(
            (resp[0].msg_type, resp[0].reject, resp[0].index),
            (MessageType::AppendResponse, false, last),
            "case {i}"
        );
    }
}

/// §5.3, Figure 7: whatever a follower's log looks like — missing entries, extra
/// uncommitted entries, or both — the leader forces it to duplicate its own log.
#[test]
fn leader_syncs_divergent_follower_logs() {
    let leader_terms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let term = 8;
    let followers: [(&str, &[u64]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    let peers = ids(3);
    for (name, follower_terms) in followers {
        let lead_log = log_of(&leader_terms);
        let lead_store = storage_with(&peers, &lead_log, hard_state(term, 0, 10));
        let follower_store =
            storage_with(&peers, &log_of(follower_terms), hard_state(term - 1, 0, 0));
        // Node 3 exists in the configuration but not on the network: it only casts
        // the vote injected below.
        let nodes = [
            (1, new_node_with(new_config(1), lead_store)),
            (2, new_node_with(new_config(2), follower_store)),
        ];
        let mut nw = Network::from_nodes(nodes.into_iter().collect());
        nw.campaign(1);
        nw.send(vec![Message {
            msg_type: MessageType::RequestVoteResponse,
            from: 3,
            to: 1,
            term: term + 1,
            ..Message::default()
        }]);
        assert_eq!(nw.peer(1).raft.state, StateRole::Leader, "case {name}");
        nw.propose(1, b"").unwrap();

        let lead = &nw.peer(1).raft;
        let follower = &nw.peer(2).raft;
        assert_eq!(all_entries(follower), all_entries(lead), "case {name}");
        assert_eq!(lead.raft_log.last_index(), 12, "case {name}");
        assert_eq!(follower.raft_log.committed, 12, "case {name}");
        assert_eq!(lead.raft_log.committed, 12, "case {name}");
        assert_eq!(follower.term, term + 1, "case {name}");
    }
}

// ---- §5.4: safety ----

/// §5.4.1: the RequestVote RPC "includes information about the candidate's log": the
/// index and term of its last entry.
#[test]
fn vote_request_carries_last_log_position() {
    let e = |term, index| Entry::new(term, index, Vec::new());
    let cases = [(vec![e(1, 1)], 2), (vec![e(1, 1), e(2, 2)], 3)];
    for (ents, want_term) in cases {
        let et = 10;
        let mut r = new_raft(1, et, 1, new_storage(&ids(3), &[]));
        let last = ents.last().cloned().unwrap();
        let m = Message {
            entries: ents,
            ..append_msg(2, 1, want_term - 1, 0, 0)
        };
        r.step(m).unwrap();
        read_messages(&mut r);
        for _ in 1..2 * et {
            r.tick();
        }
        let want: Vec<Message> = [2, 3]
            .into_iter()
            .map(|to| vote_request(1, to, want_term, last.index, last.term))
            .collect();
        assert_eq!(take_msgs(&mut r), want);
    }
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of
/// the candidate": a later last term wins; with equal last terms the longer log does.
#[test]
fn voter_rejects_candidate_with_older_log() {
    let e = |term, index| Entry::new(term, index, Vec::new());
    // (voter's log, candidate's last term, candidate's last index, rejected)
    let cases = [
        // Same last term.
        (vec![e(1, 1)], 1, 1, false),
        (vec![e(1, 1)], 1, 2, false),
        (vec![e(1, 1), e(1, 2)], 1, 1, true),
        // The candidate's last term is higher.
        (vec![e(1, 1)], 2, 1, false),
        (vec![e(1, 1)], 2, 2, false),
        (vec![e(1, 1), e(1, 2)], 2, 1, false),
        // The voter's last term is higher.
        (vec![e(2, 1)], 1, 1, true),
        (vec![e(2, 1)], 1, 2, true),
        (vec![e(2, 1), e(1, 2)], 1, 1, true),
    ];
    for (i, (ents, log_term, index, reject)) in cases.into_iter().enumerate() {
        let s = storage_with(&[1, 2], &ents, HardState::default());
        let mut r = new_raft(1, 10, 1, s);
        r.step(vote_request(2, 1, 3, index, log_term)).unwrap();
        let want = Message {
            msg_type: MessageType::RequestVoteResponse,
            from: 1,
            to: 2,
            term: 3,
            reject,
            ..Message::default()
        };
        assert_eq!(read_messages(&mut r), vec![want], "case {i}");
        assert_eq!(r.vote, if reject { 0 } else { 2 }, "case {i}");
    }
}

/// §5.4.2: "Raft never commits log entries from previous terms by counting replicas.
/// Only log entries from the leader's current term are committed by counting
/// replicas."
#[test]
fn leader_only_commits_current_term_entries_by_counting() {
    let ents = log_of(&[1, 2]);
    // (index the follower acks, commit index after)
    let cases = [(1, 0), (2, 0), (3, 3)];
    for (index, want) in cases {
        let s = storage_with(&[1, 2], &ents, hard_state(2, 0, 0));
        let mut r = new_raft(1, 10, 1, s);
        make_leader(&mut r);
        read_messages(&mut r);
        propose(&mut r, b"");
        persist(&mut r);
        let mut ack = Message::new(MessageType::AppendResponse, 2, 1);
        ack.term = r.term;
        ack.index = index;
        r.step(ack).unwrap();
        assert_eq!(r.raft_log.committed, want, "follower acked {index}");
    }
}

/// §5.4.2, Figure 8 (c)–(e): S1 leads in term 4 with the term-2 entry at index 2 on a
/// majority (S1, S2, S3). That entry must not count as committed: it becomes committed
/// only with the first term-4 entry above it.
#[test]
fn figure8_old_term_entry_on_majority_is_not_committed() {
    let peers = ids(5);
    let s = storage_with(&peers, &log_of(&[1, 2]), hard_state(3, 0, 0));
    let mut r = new_raft(1, 10, 1, s);
    make_leader(&mut r);
    assert_eq!(r.term, 4);
    persist(&mut r);
    read_messages(&mut r);
    let ack = |from, index| Message {
        msg_type: MessageType::AppendResponse,
        from,
        to: 1,
        term: 4,
        index,
        ..Message::default()
    };
    r.step(ack(2, 2)).unwrap();
    r.step(ack(3, 2)).unwrap();
    assert_eq!(
        r.raft_log.committed, 0,
        "index 2 (term 2) is on S1, S2, S3 but must not commit by counting"
    );
    // The term-4 entry on only two servers: not yet.
    r.step(ack(2, 3)).unwrap();
    assert_eq!(r.raft_log.committed, 0);
    // On three: it commits, and with it the term-1 and term-2 entries below.
    r.step(ack(3, 3)).unwrap();
    assert_eq!(r.raft_log.committed, 3);
}

/// §5.4.2, Figure 8 (d): why the rule above matters. An entry of an old term stored on
/// a majority can still be overwritten: S5, whose last entry has the later term 3, is
/// elected by S2, S3, S4 and replaces the term-2 entry everywhere.
#[test]
fn figure8_old_term_entry_on_majority_can_be_overwritten() {
    let peers = ids(5);
    let logs: [(u64, &[u64]); 4] = [(2, &[1, 2]), (3, &[1, 2]), (4, &[1]), (5, &[1, 3])];
    let nodes = logs.into_iter().map(|(id, terms)| {
        let s = storage_with(&peers, &log_of(terms), hard_state(4, 0, 1));
        (id, new_node_with(new_config(id), s))
    });
    // S1 has crashed.
    let mut nw = Network::from_nodes(nodes.collect());
    nw.campaign(5);
    assert_eq!(nw.peer(5).raft.state, StateRole::Leader);
    assert_eq!(nw.peer(5).raft.term, 5);
    for id in [2, 3, 4, 5] {
        let log = &nw.peer(id).raft.raft_log;
        assert_eq!(log.term(2).unwrap(), 3, "S{id} holds S5's entry at index 2");
        assert_eq!(
            log.committed, 3,
            "S{id} committed through S5's term-5 entry"
        );
    }
}
