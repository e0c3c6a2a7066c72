//! Protocol scenarios, one per test, modelled on what etcd-io/raft's interaction tests
//! cover: flow control, snapshots, CheckQuorum and PreVote, learners, membership
//! changes, leadership transfer, linearizable reads, proposal handling, the
//! persisted-ack split of `RawNode`, and malformed input.
//!
//! Most tests use the `Network` harness; where the order of individual messages
//! matters they drive it one hop at a time with the helpers below.

mod common;

use std::collections::{BTreeMap, VecDeque};

use common::*;
use keel_raft::tracker::{Progress, ProgressState};
use keel_raft::*;

const ELECTION_TICK: usize = 10;

// ---- helpers ----

/// Persists and applies everything node `id` has ready (like `drain_ready`), and
/// returns its outgoing messages and the read states it produced.
fn flush_reads(nw: &mut Network, id: u64) -> (Vec<Message>, Vec<ReadState>) {
    let node = nw.peers.get_mut(&id).expect("no such peer");
    let applied = nw.applied.entry(id).or_default();
    let mut reads = Vec::new();
    let out = drain_ready_with_reads(node, applied, &mut reads);
    (out, reads)
}

/// The messages node `id` wants sent after handling all its ready work.
fn flush(nw: &mut Network, id: u64) -> Vec<Message> {
    flush_reads(nw, id).0
}

/// Delivers `msgs` (one hop only) and returns what the receivers send in answer.
fn hop(nw: &mut Network, msgs: Vec<Message>) -> Vec<Message> {
    let mut out = Vec::new();
    for m in msgs {
        let to = m.to;
        if !nw.peers.contains_key(&to) {
            continue;
        }
        let _ = nw.peer_mut(to).step(m);
        out.extend(flush(nw, to));
    }
    out
}

/// Delivers `msgs` and everything that follows until the network is quiet, dropping
/// the messages `drop` selects. Returns the read states each node produced.
fn pump(
    nw: &mut Network,
    msgs: Vec<Message>,
    drop: impl Fn(&Message) -> bool,
) -> BTreeMap<u64, Vec<ReadState>> {
    let ids: Vec<u64> = nw.peers.keys().copied().collect();
    let mut reads: BTreeMap<u64, Vec<ReadState>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    let mut queue: VecDeque<Message> = msgs.into();
    for &id in &ids {
        let (out, r) = flush_reads(nw, id);
        queue.extend(out);
        reads.entry(id).or_default().extend(r);
    }
    let mut delivered = 0;
    while let Some(m) = queue.pop_front() {
        delivered += 1;
        assert!(delivered < MAX_DELIVERIES, "network did not quiesce");
        let to = m.to;
        if drop(&m) || !nw.peers.contains_key(&to) {
            continue;
        }
        let _ = nw.peer_mut(to).step(m);
        let (out, r) = flush_reads(nw, to);
        queue.extend(out);
        reads.entry(to).or_default().extend(r);
    }
    reads
}

fn elect(nw: &mut Network, id: u64) {
    nw.campaign(id);
    assert_eq!(
        nw.peer(id).raft.state,
        StateRole::Leader,
        "{id} should lead"
    );
}

/// Node `id` campaigns and wins, hop by hop; returns the new leader's first appends,
/// undelivered.
fn elect_by_hand(nw: &mut Network, id: u64) -> Vec<Message> {
    nw.peer_mut(id).campaign().unwrap();
    let votes = flush(nw, id);
    let answers = hop(nw, votes);
    let appends = hop(nw, answers);
    assert_eq!(
        nw.peer(id).raft.state,
        StateRole::Leader,
        "{id} should lead"
    );
    appends
}

fn progress(nw: &Network, leader: u64, id: u64) -> &Progress {
    &nw.peer(leader).raft.prs.progress[&id]
}

fn only(msgs: &[Message], to: u64, t: MessageType) -> Vec<Message> {
    msgs.iter()
        .filter(|m| m.to == to && m.msg_type == t)
        .cloned()
        .collect()
}

fn payloads(m: &Message) -> Vec<Vec<u8>> {
    m.entries.iter().map(|e| e.data.clone()).collect()
}

fn is_dropped(r: Result<()>) -> bool {
    matches!(r, Err(Error::ProposalDropped(_)))
}

fn committed(nw: &Network, id: u64) -> u64 {
    nw.peer(id).raft.raft_log.committed
}

fn last_index(nw: &Network, id: u64) -> u64 {
    nw.peer(id).raft.raft_log.last_index()
}

fn conf(nw: &Network, id: u64) -> ConfState {
    nw.peer(id).raft.prs.conf.to_conf_state()
}

fn v2(transition: ConfChangeTransition, changes: &[(ConfChangeType, u64)]) -> ConfChangeV2 {
    ConfChangeV2 {
        transition,
        changes: changes
            .iter()
            .map(|&(change_type, node_id)| ConfChangeSingle {
                change_type,
                node_id,
            })
            .collect(),
        context: Vec::new(),
    }
}

fn propose_cc_v2(nw: &mut Network, id: u64, cc: &ConfChangeV2) -> Result<()> {
    let r = nw.peer_mut(id).propose_conf_change_v2(cc);
    nw.send(Vec::new());
    r
}

/// Writes what `rd` asks to persist into the node's storage, without telling raft.
fn write(node: &mut RawNode<MemoryStorage>, rd: &Ready) {
    if !rd.snapshot().is_empty() {
        node.mut_store()
            .apply_snapshot(rd.snapshot().clone())
            .unwrap();
    }
    node.mut_store().append(rd.entries()).unwrap();
    if let Some(hs) = rd.hs() {
        node.mut_store().set_hard_state(*hs);
    }
}

/// Leader 1 of {1, 2, 3}; node 3 was cut off while five entries committed, and the
/// leader then snapshotted and compacted its log up to the last of them.
/// Returns the network (3 still isolated) and the snapshot index.
fn follower_behind_compaction(tweak: impl Fn(&mut Config)) -> (Network, u64) {
    let mut nw = Network::new_with(&[1, 2, 3], tweak);
    elect(&mut nw, 1);
    nw.isolate(3);
    for i in 0..5u8 {
        nw.propose(1, &[i]).unwrap();
    }
    let leader = nw.peer_mut(1);
    let index = leader.raft.raft_log.applied;
    assert_eq!(index, 6, "no-op plus five entries");
    let cs = leader.raft.prs.conf.to_conf_state();
    leader
        .mut_store()
        .create_snapshot(index, Some(cs), b"state".to_vec())
        .unwrap();
    leader.mut_store().compact(index).unwrap();
    assert_eq!(leader.raft.raft_log.first_index(), index + 1);
    assert_eq!(nw.peer(3).raft.raft_log.last_index(), 1);
    (nw, index)
}

// ---- replication flow control ----

#[test]
fn probe_then_replicate() {
    let mut nw = Network::new(&[1, 2, 3]);
    let appends = elect_by_hand(&mut nw, 1);
    let probe = only(&appends, 2, MessageType::Append);
    assert_eq!(probe.len(), 1);
    assert_eq!((probe[0].index, probe[0].entries.len()), (0, 1));
    let pr = progress(&nw, 1, 2);
    assert_eq!(pr.state, ProgressState::Probe);
    assert!(pr.is_paused(), "one probe at a time");

    // While the probe is unanswered, new entries are not sent.
    nw.peer_mut(1).propose(b"a".to_vec()).unwrap();
    assert!(only(&flush(&mut nw, 1), 2, MessageType::Append).is_empty());

    // The answer switches the follower to Replicate and sends what it lacks.
    let acks = hop(&mut nw, probe);
    let out = hop(&mut nw, acks);
    let pr = progress(&nw, 1, 2);
    assert_eq!((pr.state, pr.matched), (ProgressState::Replicate, 1));
    let to2 = only(&out, 2, MessageType::Append);
    assert_eq!(to2.len(), 1);
    assert_eq!(payloads(&to2[0]), vec![b"a".to_vec()]);

    // Replicate pipelines: each proposal goes out without waiting for acks.
    for d in [b"b", b"c"] {
        nw.peer_mut(1).propose(d.to_vec()).unwrap();
        let to2 = only(&flush(&mut nw, 1), 2, MessageType::Append);
        assert_eq!(to2.len(), 1);
        assert_eq!(payloads(&to2[0]), vec![d.to_vec()]);
    }
    let pr = progress(&nw, 1, 2);
    assert_eq!((pr.ins.count(), pr.next_idx), (3, 5));
}

/// Proposes `n` payloads of `size` bytes on leader 1 and returns the appends to 2.
fn propose_and_collect(nw: &mut Network, payloads: &[Vec<u8>]) -> Vec<Vec<Message>> {
    payloads
        .iter()
        .map(|p| {
            nw.peer_mut(1).propose(p.clone()).unwrap();
            only(&flush(nw, 1), 2, MessageType::Append)
        })
        .collect()
}

#[test]
fn inflight_window_by_count_pauses_and_resumes() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| c.max_inflight_msgs = 2);
    elect(&mut nw, 1);
    assert_eq!(progress(&nw, 1, 2).state, ProgressState::Replicate);

    let sent = propose_and_collect(&mut nw, &[b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    assert_eq!(sent[0].len(), 1);
    assert_eq!(sent[1].len(), 1);
    assert!(sent[2].is_empty(), "window of 2 messages is full");
    assert!(progress(&nw, 1, 2).ins.full());

    // Acknowledging the first append frees a slot: the third entry goes out.
    let acks = hop(&mut nw, sent[0].clone());
    let out = hop(&mut nw, acks);
    let to2 = only(&out, 2, MessageType::Append);
    assert_eq!(to2.len(), 1);
    assert_eq!(payloads(&to2[0]), vec![b"3".to_vec()]);
    assert_eq!(progress(&nw, 1, 2).ins.count(), 2);
}

#[test]
fn inflight_window_by_bytes_pauses_and_resumes() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| {
        c.max_size_per_msg_bytes = 100;
        c.max_inflight_bytes = 200;
    });
    elect(&mut nw, 1);

    let data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
    let sent = propose_and_collect(&mut nw, &data);
    assert_eq!(sent[0].len(), 1);
    assert_eq!(sent[1].len(), 1);
    assert!(sent[2].is_empty(), "200 bytes in flight fill the window");
    let pr = progress(&nw, 1, 2);
    assert!(pr.ins.full());
    assert_eq!((pr.ins.count(), pr.ins.bytes()), (2, 200));

    let acks = hop(&mut nw, sent[0].clone());
    let out = hop(&mut nw, acks);
    let to2 = only(&out, 2, MessageType::Append);
    assert_eq!(to2.len(), 1);
    assert_eq!(payloads(&to2[0]), vec![data[2].clone()]);
    assert_eq!(progress(&nw, 1, 2).ins.bytes(), 200);
}

#[test]
fn heartbeat_response_recovers_probing_follower() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.peer_mut(1).report_unreachable(2);
    assert_eq!(progress(&nw, 1, 2).state, ProgressState::Probe);

    // The probe carrying "a" is lost; "b" waits behind it.
    nw.peer_mut(1).propose(b"a".to_vec()).unwrap();
    assert_eq!(only(&flush(&mut nw, 1), 2, MessageType::Append).len(), 1);
    nw.peer_mut(1).propose(b"b".to_vec()).unwrap();
    assert!(only(&flush(&mut nw, 1), 2, MessageType::Append).is_empty());
    assert!(progress(&nw, 1, 2).is_paused());

    // A heartbeat round unpauses the probe: the response triggers a new append.
    nw.peer_mut(1).tick();
    let beats = only(&flush(&mut nw, 1), 2, MessageType::Heartbeat);
    let resp = hop(&mut nw, beats);
    assert_eq!(resp[0].msg_type, MessageType::HeartbeatResponse);
    let out = hop(&mut nw, resp);
    let to2 = only(&out, 2, MessageType::Append);
    assert_eq!(to2.len(), 1);
    assert_eq!(payloads(&to2[0]), vec![b"a".to_vec(), b"b".to_vec()]);

    pump(&mut nw, out, |_| false);
    assert_eq!(nw.applied_data(2), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(progress(&nw, 1, 2).state, ProgressState::Replicate);
}

#[test]
fn heartbeat_response_recovers_replicating_follower_with_lost_window() {
    // Every append filling 2's window is lost. Nothing will ever ack them, so the
    // heartbeat response must be what lets replication to 2 resume.
    let mut nw = Network::new_with(&[1, 2, 3], |c| c.max_inflight_msgs = 2);
    elect(&mut nw, 1);
    let lost_to_2 = |m: &Message| m.to == 2 && m.msg_type == MessageType::Append;
    for d in [b"a", b"b", b"c"] {
        nw.peer_mut(1).propose(d.to_vec()).unwrap();
        pump(&mut nw, Vec::new(), lost_to_2);
    }
    assert_eq!(nw.applied_data(1).len(), 3, "1 and 3 commit without 2");
    assert!(progress(&nw, 1, 2).ins.full());
    assert!(nw.applied_data(2).is_empty());

    nw.tick(1, 3);
    assert_eq!(
        nw.applied_data(2),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn lagging_commit_index_is_learned_from_heartbeat_and_next_append() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);

    // Commit "x" but lose the message telling 3 about the commit.
    let commit_x_except_to_3 = |nw: &mut Network, data: &[u8]| {
        nw.peer_mut(1).propose(data.to_vec()).unwrap();
        let appends = flush(nw, 1);
        let acks = hop(nw, appends);
        let out = hop(nw, acks);
        hop(nw, out.into_iter().filter(|m| m.to != 3).collect());
    };
    commit_x_except_to_3(&mut nw, b"x");
    let x = committed(&nw, 1);
    assert_eq!(last_index(&nw, 3), x, "3 holds the entry");
    assert_eq!(committed(&nw, 3), x - 1, "but does not know it committed");

    // The next heartbeat carries the commit index.
    nw.tick(1, 1);
    assert_eq!(committed(&nw, 3), x);
    assert_eq!(nw.applied_data(3), vec![b"x".to_vec()]);

    // Again, and this time the next append carries it.
    commit_x_except_to_3(&mut nw, b"y");
    assert_eq!(committed(&nw, 3), x);
    nw.propose(1, b"z").unwrap();
    assert_eq!(committed(&nw, 3), x + 2);
    assert_eq!(nw.applied_data(3).len(), 3);
}

// ---- snapshots ----

#[test]
fn slow_follower_gets_snapshot_then_resumes_via_append_response() {
    let (mut nw, snap) = follower_behind_compaction(|_| {});
    nw.recover();
    nw.peer_mut(1).report_unreachable(3);

    // A heartbeat round: 3 answers, the leader finds 3's entries compacted and sends
    // the snapshot.
    nw.peer_mut(1).tick();
    let beats = flush(&mut nw, 1);
    let resps = hop(&mut nw, beats);
    let out = hop(&mut nw, resps);
    let snaps = only(&out, 3, MessageType::Snapshot);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].snapshot.as_ref().unwrap().metadata.index, snap);
    let pr = progress(&nw, 1, 3);
    assert_eq!(
        (pr.state, pr.pending_snapshot),
        (ProgressState::Snapshot, snap)
    );
    assert!(pr.is_paused());

    // 3 installs it; its append response alone moves it back to Replicate.
    let ack = hop(&mut nw, snaps);
    assert_eq!(ack.len(), 1);
    assert_eq!(
        (ack[0].msg_type, ack[0].index),
        (MessageType::AppendResponse, snap)
    );
    hop(&mut nw, ack);
    let pr = progress(&nw, 1, 3);
    assert_eq!(
        (pr.state, pr.matched, pr.next_idx),
        (ProgressState::Replicate, snap, snap + 1)
    );
    assert_eq!(nw.peer(3).raft.raft_log.first_index(), snap + 1);

    nw.propose(1, b"after").unwrap();
    assert_eq!(nw.applied_data(3), vec![b"after".to_vec()]);
}

#[test]
fn snapshot_is_sent_only_to_a_recently_active_follower() {
    let (mut nw, snap) = follower_behind_compaction(|c| c.check_quorum = true);
    // One CheckQuorum round: 2 keeps answering, 3 cannot and is marked inactive.
    nw.tick(1, ELECTION_TICK);
    assert_eq!(nw.peer(1).raft.state, StateRole::Leader);
    assert!(!progress(&nw, 1, 3).recent_active);
    nw.peer_mut(1).report_unreachable(3);

    nw.peer_mut(1).propose(b"p".to_vec()).unwrap();
    let out = flush(&mut nw, 1);
    assert!(only(&out, 3, MessageType::Snapshot).is_empty());
    assert_eq!(progress(&nw, 1, 3).state, ProgressState::Probe);

    // Once 3 is heard from again, it gets the snapshot.
    nw.recover();
    nw.peer_mut(1).tick();
    let beats = flush(&mut nw, 1);
    let resps = hop(&mut nw, beats);
    let out = hop(&mut nw, resps);
    assert_eq!(only(&out, 3, MessageType::Snapshot).len(), 1);
    let pr = progress(&nw, 1, 3);
    assert_eq!(
        (pr.state, pr.pending_snapshot),
        (ProgressState::Snapshot, snap)
    );
}

#[test]
fn report_snapshot_failure_and_finish_move_to_probe() {
    let (mut nw, snap) = follower_behind_compaction(|_| {});
    nw.recover();
    nw.ignore(MessageType::Snapshot);
    nw.peer_mut(1).report_unreachable(3);
    nw.tick(1, 1);
    assert_eq!(progress(&nw, 1, 3).state, ProgressState::Snapshot);

    // Failure: probe again from the match point, forgetting the snapshot, and wait for
    // a heartbeat response before probing.
    nw.peer_mut(1).report_snapshot(3, SnapshotStatus::Failure);
    let pr = progress(&nw, 1, 3);
    assert_eq!(pr.state, ProgressState::Probe);
    assert_eq!((pr.pending_snapshot, pr.next_idx), (0, pr.matched + 1));
    assert!(pr.is_paused());

    // The next heartbeat response retries the snapshot (lost again).
    nw.tick(1, 1);
    let pr = progress(&nw, 1, 3);
    assert_eq!(
        (pr.state, pr.pending_snapshot),
        (ProgressState::Snapshot, snap)
    );

    // Finish: probe right after the snapshot.
    nw.peer_mut(1).report_snapshot(3, SnapshotStatus::Finish);
    let pr = progress(&nw, 1, 3);
    assert_eq!((pr.state, pr.next_idx), (ProgressState::Probe, snap + 1));
    assert!(pr.is_paused());

    // 3 never got it; the probe is rejected and the snapshot goes out again, this time
    // delivered.
    nw.recover();
    nw.tick(1, 2);
    assert_eq!(committed(&nw, 3), committed(&nw, 1));
    assert_eq!(progress(&nw, 1, 3).state, ProgressState::Replicate);
    // Reporting a snapshot for a follower not in Snapshot state changes nothing.
    let before = progress(&nw, 1, 3).clone();
    nw.peer_mut(1).report_snapshot(3, SnapshotStatus::Failure);
    assert_eq!(progress(&nw, 1, 3), &before);
}

// ---- CheckQuorum and PreVote ----

#[test]
fn check_quorum_leader_that_hears_from_nobody_steps_down_after_election_timeout() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| c.check_quorum = true);
    // Partitioned right after winning: its first appends are lost.
    let _lost = elect_by_hand(&mut nw, 1);
    for _ in 0..ELECTION_TICK {
        nw.peer_mut(1).tick();
        let _ = flush(&mut nw, 1);
    }
    assert_eq!(nw.peer(1).raft.state, StateRole::Follower);
    assert_eq!(
        nw.peer(1).raft.term,
        1,
        "stepping down does not change term"
    );
}

#[test]
fn check_quorum_leader_with_quorum_stays_without_loses() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| c.check_quorum = true);
    elect(&mut nw, 1);
    nw.isolate(3);
    nw.tick(1, 5 * ELECTION_TICK);
    assert_eq!(
        nw.peer(1).raft.state,
        StateRole::Leader,
        "1 and 2 are a quorum"
    );

    nw.isolate(2);
    // 2 was heard from in the current round, so at most two rounds pass.
    nw.tick(1, 2 * ELECTION_TICK);
    assert_eq!(nw.peer(1).raft.state, StateRole::Follower);
}

#[test]
fn prevote_with_check_quorum_rejoining_node_does_not_disrupt() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    elect(&mut nw, 1);
    nw.isolate(3);
    nw.propose(1, b"a").unwrap();

    // Cut off, 3 keeps pre-campaigning but never raises its term.
    nw.tick(3, 10 * ELECTION_TICK);
    assert_eq!(nw.peer(3).raft.term, 1);
    assert_ne!(nw.peer(3).raft.state, StateRole::Leader);

    // Rejoining, its pre-votes fall inside the leader lease and are ignored.
    nw.recover();
    nw.campaign(3);
    assert_eq!(nw.leader(), Some(1));
    for id in 1..=3 {
        assert_eq!(nw.peer(id).raft.term, 1, "term of {id}");
    }
    // The next heartbeat brings it back as a follower.
    nw.tick(1, 1);
    assert_eq!(nw.peer(3).raft.state, StateRole::Follower);
    assert_eq!(nw.peer(3).raft.leader_id, 1);
    assert_eq!(nw.applied_data(3), vec![b"a".to_vec()]);
}

// ---- learners ----

#[test]
fn learner_vote_and_log_do_not_count() {
    let mut nw = Network::new_with_learners(&[1, 2, 3], &[4], |_| {});
    // A learner never campaigns.
    nw.tick(4, 5 * ELECTION_TICK);
    assert_eq!(nw.peer(4).raft.state, StateRole::Follower);
    assert_eq!(nw.peer(4).raft.term, 0);

    nw.peer_mut(1).campaign().unwrap();
    let reqs = flush(&mut nw, 1);
    assert!(reqs.iter().all(|m| m.to != 4), "learners are not asked");
    let mut from_learner = Message::new(MessageType::RequestVoteResponse, 4, 1);
    from_learner.term = 1;
    nw.peer_mut(1).step(from_learner).unwrap();
    assert_eq!(nw.peer(1).raft.state, StateRole::Candidate);
    let answers = hop(&mut nw, only(&reqs, 2, MessageType::RequestVote));
    let appends = hop(&mut nw, answers);
    assert_eq!(nw.peer(1).raft.state, StateRole::Leader);
    nw.send(appends);

    // Only the learner acks "x": it does not commit.
    nw.cut(1, 2);
    nw.cut(1, 3);
    let before = committed(&nw, 1);
    nw.propose(1, b"x").unwrap();
    assert_eq!(last_index(&nw, 4), last_index(&nw, 1));
    assert_eq!(committed(&nw, 1), before);
    nw.recover();
    nw.tick(1, 1);
    assert_eq!(committed(&nw, 1), before + 1);
    assert_eq!(nw.applied_data(4), vec![b"x".to_vec()]);
}

#[test]
fn campaign_learner_must_vote() {
    // 1 and 2 applied the promotion of 3; 3 has not, and still believes it is a
    // learner. With 1 down, 2 needs 3's vote, and 3 must give it on the merits.
    let mut peers = BTreeMap::new();
    for id in [1, 2] {
        peers.insert(
            id,
            new_node_with(new_config(id), new_storage(&[1, 2, 3], &[])),
        );
    }
    peers.insert(3, new_node_with(new_config(3), new_storage(&[1, 2], &[3])));
    let mut nw = Network::from_nodes(peers);
    assert!(nw.peer(3).raft.is_learner());
    nw.isolate(1);
    nw.campaign(2);
    assert_eq!(nw.peer(2).raft.state, StateRole::Leader);
    assert_eq!(nw.peer(3).raft.vote, 2);

    // On the merits also means rejecting a candidate whose log is behind.
    let mut req = Message::new(MessageType::RequestVote, 1, 3);
    req.term = 5;
    let learner = nw.peer_mut(3);
    learner.step(req).unwrap();
    let rd = learner.ready();
    let resp = &rd.persisted_messages()[0];
    assert_eq!(resp.msg_type, MessageType::RequestVoteResponse);
    assert!(resp.reject, "1's empty log is behind 3's");
}

#[test]
fn promoted_learner_votes_and_counts() {
    let mut nw = Network::new_with_learners(&[1, 2], &[3], |_| {});
    elect(&mut nw, 1);
    assert!(!nw.peer(3).raft.promotable());
    let cc = ConfChange {
        change_type: ConfChangeType::AddNode,
        node_id: 3,
        context: Vec::new(),
    };
    nw.peer_mut(1).propose_conf_change(&cc).unwrap();
    nw.send(Vec::new());
    for id in 1..=3 {
        let cs = conf(&nw, id);
        assert_eq!(
            (cs.voters, cs.learners),
            (vec![1, 2, 3], vec![]),
            "conf of {id}"
        );
    }
    assert!(nw.peer(3).raft.promotable());

    // 3's ack now makes a quorum with the leader.
    nw.isolate(2);
    nw.propose(1, b"x").unwrap();
    assert_eq!(nw.applied_data(1), vec![b"x".to_vec()]);
    assert_eq!(nw.applied_data(3), vec![b"x".to_vec()]);
}

// ---- membership changes ----

#[test]
fn replace_leader_through_joint_consensus_with_auto_leave() {
    let mut nw = Network::new_with_learners(&[1, 2, 3], &[4], |_| {});
    elect(&mut nw, 1);
    let cc = v2(
        ConfChangeTransition::Auto,
        &[
            (ConfChangeType::AddNode, 4),
            (ConfChangeType::RemoveNode, 1),
        ],
    );
    propose_cc_v2(&mut nw, 1, &cc).unwrap();

    // Entered joint, left it automatically, and the leader stepped down.
    for id in 1..=4 {
        let cs = conf(&nw, id);
        assert_eq!(cs.voters, vec![2, 3, 4], "conf of {id}");
        assert!(cs.voters_outgoing.is_empty() && cs.learners.is_empty());
        assert!(!cs.auto_leave);
    }
    let types: Vec<EntryType> = nw.applied[&2].iter().map(|e| e.entry_type).collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == EntryType::ConfChangeV2)
            .count(),
        2,
        "the joint entry and the leave entry"
    );
    assert_eq!(nw.peer(1).raft.state, StateRole::Follower);
    assert_eq!(nw.leader(), None);
    assert!(!nw.peer(1).raft.promotable());

    nw.campaign(4);
    assert_eq!(nw.leader(), Some(4));
    nw.propose(4, b"x").unwrap();
    for id in 2..=4 {
        assert_eq!(nw.applied_data(id), vec![b"x".to_vec()], "applied on {id}");
    }
}

#[test]
fn joint_consensus_with_explicit_leave() {
    let mut nw = Network::new_with_learners(&[1, 2, 3], &[4], |_| {});
    elect(&mut nw, 1);
    let cc = v2(
        ConfChangeTransition::JointExplicit,
        &[(ConfChangeType::AddNode, 4)],
    );
    propose_cc_v2(&mut nw, 1, &cc).unwrap();
    nw.tick(1, 3);
    for id in 1..=4 {
        let cs = conf(&nw, id);
        assert_eq!(cs.voters, vec![1, 2, 3, 4], "conf of {id}");
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3], "still joint on {id}");
    }
    // Nothing but the leave is accepted while joint.
    let other = v2(
        ConfChangeTransition::Auto,
        &[(ConfChangeType::AddLearnerNode, 5)],
    );
    assert!(is_dropped(propose_cc_v2(&mut nw, 1, &other)));

    propose_cc_v2(&mut nw, 1, &ConfChangeV2::default()).unwrap();
    for id in 1..=4 {
        let cs = conf(&nw, id);
        assert_eq!(cs.voters, vec![1, 2, 3, 4], "conf of {id}");
        assert!(cs.voters_outgoing.is_empty(), "left joint on {id}");
    }
    assert_eq!(nw.leader(), Some(1));
}

#[test]
fn removed_leader_steps_down_and_the_rest_elect() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    let cc = ConfChange {
        change_type: ConfChangeType::RemoveNode,
        node_id: 1,
        context: Vec::new(),
    };
    nw.peer_mut(1).propose_conf_change(&cc).unwrap();
    nw.send(Vec::new());
    assert_eq!(nw.peer(1).raft.state, StateRole::Follower);
    assert_eq!(nw.leader(), None);
    for id in 2..=3 {
        assert_eq!(conf(&nw, id).voters, vec![2, 3], "conf of {id}");
    }
    // The removed node never campaigns.
    nw.tick(1, 5 * ELECTION_TICK);
    assert_eq!(nw.peer(1).raft.state, StateRole::Follower);

    nw.campaign(2);
    assert_eq!(nw.leader(), Some(2));
    nw.propose(2, b"x").unwrap();
    assert_eq!(nw.applied_data(3), vec![b"x".to_vec()]);
}

#[test]
fn demoted_leader_steps_down_and_cannot_campaign() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    let cc = ConfChange {
        change_type: ConfChangeType::AddLearnerNode,
        node_id: 1,
        context: Vec::new(),
    };
    nw.peer_mut(1).propose_conf_change(&cc).unwrap();
    nw.send(Vec::new());
    assert_eq!(nw.peer(1).raft.state, StateRole::Follower);
    assert!(nw.peer(1).raft.is_learner());
    nw.tick(1, 5 * ELECTION_TICK);
    assert_ne!(nw.peer(1).raft.state, StateRole::Leader);
    nw.campaign(3);
    assert_eq!(nw.leader(), Some(3));
    nw.propose(3, b"x").unwrap();
    assert_eq!(
        nw.applied_data(1),
        vec![b"x".to_vec()],
        "the learner follows"
    );
}

#[test]
fn new_leader_in_a_joint_config_leaves_it_automatically() {
    let mut nw = Network::new_with_learners(&[1, 2, 3], &[4], |_| {});
    elect(&mut nw, 1);
    let cc = v2(
        ConfChangeTransition::JointImplicit,
        &[(ConfChangeType::AddNode, 4)],
    );
    // Everyone commits and applies the joint entry, but the leave 1 then proposes
    // never leaves it: 1 is cut off first.
    nw.peer_mut(1).propose_conf_change_v2(&cc).unwrap();
    let carries_leave = |m: &Message| {
        m.entries.iter().any(|e| {
            e.entry_type == EntryType::ConfChangeV2
                && e.data == codec::encode(&ConfChangeV2::default())
        })
    };
    pump(&mut nw, Vec::new(), carries_leave);
    // A heartbeat round spreads the commit index.
    nw.peer_mut(1).tick();
    pump(&mut nw, Vec::new(), carries_leave);
    for id in 1..=4 {
        let cs = conf(&nw, id);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3], "joint on {id}");
        assert!(cs.auto_leave);
    }
    nw.isolate(1);

    // 2 needs a majority of both halves; once it applies what it inherited, it
    // proposes the leave itself.
    nw.campaign(2);
    assert_eq!(nw.peer(2).raft.state, StateRole::Leader);
    for id in 2..=4 {
        let cs = conf(&nw, id);
        assert_eq!(cs.voters, vec![1, 2, 3, 4], "conf of {id}");
        assert!(cs.voters_outgoing.is_empty(), "left joint on {id}");
    }
}

#[test]
fn at_most_one_pending_conf_change() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.cut(1, 2);
    nw.cut(1, 3);
    let learner = |id| {
        v2(
            ConfChangeTransition::Auto,
            &[(ConfChangeType::AddLearnerNode, id)],
        )
    };
    propose_cc_v2(&mut nw, 1, &learner(4)).unwrap();
    assert_eq!(nw.peer(1).raft.pending_conf_index, last_index(&nw, 1));
    assert!(is_dropped(propose_cc_v2(&mut nw, 1, &learner(5))));
    // Normal proposals are unaffected.
    nw.propose(1, b"x").unwrap();

    nw.recover();
    nw.tick(1, 1);
    assert_eq!(conf(&nw, 1).learners, vec![4]);
    propose_cc_v2(&mut nw, 1, &learner(5)).unwrap();
    assert_eq!(conf(&nw, 2).learners, vec![4, 5]);
}

// ---- leadership transfer ----

#[test]
fn transfer_leadership_to_up_to_date_follower() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();
    nw.peer_mut(1).transfer_leader(2);
    assert_eq!(
        only(&nw.peer(1).raft.msgs, 2, MessageType::TimeoutNow).len(),
        1,
        "2 is caught up: it is told to campaign at once"
    );
    nw.send(Vec::new());
    assert_eq!(nw.leader(), Some(2));
    assert_eq!(nw.peer(2).raft.term, 2);
    assert_eq!(nw.peer(1).raft.leader_id, 2);
    assert_eq!(nw.peer(1).raft.lead_transferee, None);
}

#[test]
fn transfer_leadership_to_lagging_follower_catches_it_up_first() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.isolate(3);
    nw.propose(1, b"x").unwrap();
    nw.propose(1, b"y").unwrap();
    nw.recover();

    nw.peer_mut(1).transfer_leader(3);
    assert_eq!(nw.peer(1).raft.lead_transferee, Some(3));
    let queued = &nw.peer(1).raft.msgs;
    assert!(only(queued, 3, MessageType::TimeoutNow).is_empty());
    assert_eq!(only(queued, 3, MessageType::Append).len(), 1);

    nw.send(Vec::new());
    assert_eq!(nw.leader(), Some(3));
    assert_eq!(nw.applied_data(3), vec![b"x".to_vec(), b"y".to_vec()]);
}

#[test]
fn transfer_aborts_after_election_timeout_and_drops_proposals_meanwhile() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.isolate(3);
    nw.peer_mut(1).transfer_leader(3);
    nw.send(Vec::new());
    assert_eq!(nw.peer(1).raft.lead_transferee, Some(3));
    assert!(is_dropped(nw.propose(1, b"during")));

    nw.tick(1, ELECTION_TICK - 1);
    assert_eq!(nw.peer(1).raft.lead_transferee, Some(3));
    nw.tick(1, 1);
    assert_eq!(nw.peer(1).raft.lead_transferee, None);
    assert_eq!(nw.leader(), Some(1));
    nw.propose(1, b"after").unwrap();
    assert_eq!(nw.applied_data(2), vec![b"after".to_vec()]);
}

#[test]
fn transfer_to_learner_non_member_or_self_is_ignored() {
    let mut nw = Network::new_with_learners(&[1, 2, 3], &[4], |_| {});
    elect(&mut nw, 1);
    for target in [4, 9, 1] {
        nw.peer_mut(1).transfer_leader(target);
        nw.send(Vec::new());
        assert_eq!(
            nw.peer(1).raft.lead_transferee,
            None,
            "transfer to {target}"
        );
        assert_eq!(nw.leader(), Some(1));
    }
    nw.propose(1, b"x").unwrap();
}

// ---- reads ----

#[test]
fn read_index_on_leader_and_follower() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();
    let commit = committed(&nw, 1);

    // The leader must confirm its leadership with a heartbeat round first.
    nw.peer_mut(1).read_index(b"r1".to_vec()).unwrap();
    let reads = pump(&mut nw, Vec::new(), |m| {
        m.msg_type == MessageType::Heartbeat
    });
    assert!(reads.values().all(Vec::is_empty));
    assert_eq!(nw.peer(1).raft.pending_read_count(), 1);
    nw.peer_mut(1).tick();
    let reads = pump(&mut nw, Vec::new(), |_| false);
    let want = |ctx: &[u8]| ReadState {
        index: commit,
        request_ctx: ctx.to_vec(),
    };
    assert_eq!(reads[&1], vec![want(b"r1")]);

    // A follower's read is answered through the leader.
    nw.peer_mut(2).read_index(b"r2".to_vec()).unwrap();
    let reads = pump(&mut nw, Vec::new(), |_| false);
    assert_eq!(reads[&2], vec![want(b"r2")]);
    assert!(reads[&1].is_empty());
}

#[test]
fn lease_based_read_needs_no_heartbeat_round() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| {
        c.check_quorum = true;
        c.read_only_option = ReadOnlyOption::LeaseBased;
    });
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();
    let commit = committed(&nw, 1);
    let no_heartbeats = |m: &Message| m.msg_type == MessageType::Heartbeat;

    nw.peer_mut(1).read_index(b"l1".to_vec()).unwrap();
    let reads = pump(&mut nw, Vec::new(), no_heartbeats);
    assert_eq!(
        reads[&1],
        vec![ReadState {
            index: commit,
            request_ctx: b"l1".to_vec()
        }]
    );
    nw.peer_mut(3).read_index(b"l3".to_vec()).unwrap();
    let reads = pump(&mut nw, Vec::new(), no_heartbeats);
    assert_eq!(
        reads[&3],
        vec![ReadState {
            index: commit,
            request_ctx: b"l3".to_vec()
        }]
    );
}

#[test]
fn read_index_waits_for_an_entry_of_the_leaders_term_to_commit() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();
    let old_commit = committed(&nw, 1);

    // 2 takes over. 1 learns of it, but its ack is held: the no-op stays uncommitted.
    let appends = elect_by_hand(&mut nw, 2);
    let (to1, rest): (Vec<Message>, Vec<Message>) = appends.into_iter().partition(|m| m.to == 1);
    let mut held = hop(&mut nw, to1);
    assert_eq!(committed(&nw, 2), old_commit);
    nw.peer_mut(2).read_index(b"early".to_vec()).unwrap();
    nw.peer_mut(1).read_index(b"fwd".to_vec()).unwrap();
    let out = flush(&mut nw, 1);
    assert_eq!(only(&out, 2, MessageType::ReadIndex).len(), 1, "forwarded");
    let reads = pump(&mut nw, out, |m| m.msg_type != MessageType::ReadIndex);
    assert!(reads.values().all(Vec::is_empty), "held: {reads:?}");
    assert_eq!(committed(&nw, 2), old_commit);

    // Once the no-op commits, both reads are confirmed at its index.
    held.extend(rest);
    let reads = pump(&mut nw, held, |_| false);
    let noop = old_commit + 1;
    assert_eq!(committed(&nw, 2), noop);
    assert_eq!(
        reads[&2],
        vec![ReadState {
            index: noop,
            request_ctx: b"early".to_vec()
        }]
    );
    assert_eq!(
        reads[&1],
        vec![ReadState {
            index: noop,
            request_ctx: b"fwd".to_vec()
        }]
    );
}

// ---- proposals ----

#[test]
fn proposals_without_a_leader_are_dropped() {
    let mut nw = Network::new(&[1, 2, 3]);
    assert!(is_dropped(nw.propose(1, b"x")));
    nw.isolate(1);
    nw.campaign(1);
    assert_eq!(nw.peer(1).raft.state, StateRole::Candidate);
    assert!(is_dropped(nw.propose(1, b"x")));
    assert!(matches!(
        nw.peer_mut(1).read_index(b"r".to_vec()),
        Err(Error::ProposalDropped(_))
    ));
    assert_eq!(last_index(&nw, 1), 0);
}

#[test]
fn follower_forwards_proposals_to_the_leader() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(2, b"fwd").unwrap();
    for id in 1..=3 {
        assert_eq!(
            nw.applied_data(id),
            vec![b"fwd".to_vec()],
            "applied on {id}"
        );
    }
}

#[test]
fn disabled_forwarding_drops_follower_proposals() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| c.disable_proposal_forwarding = true);
    elect(&mut nw, 1);
    let before = last_index(&nw, 1);
    assert!(is_dropped(nw.propose(2, b"x")));
    assert_eq!(last_index(&nw, 1), before);
    nw.propose(1, b"y").unwrap();
    assert_eq!(nw.applied_data(2), vec![b"y".to_vec()]);
}

#[test]
fn max_uncommitted_size_drops_then_admits_after_commit() {
    let mut nw = Network::new_with(&[1, 2, 3], |c| c.max_uncommitted_size_bytes = 25);
    elect(&mut nw, 1);
    nw.cut(1, 2);
    nw.cut(1, 3);
    nw.propose(1, &[0; 10]).unwrap();
    nw.propose(1, &[1; 10]).unwrap();
    assert_eq!(nw.peer(1).raft.uncommitted_size, 20);
    assert!(is_dropped(nw.propose(1, &[2; 10])));
    assert_eq!(nw.peer(1).raft.uncommitted_size, 20);

    nw.recover();
    nw.tick(1, 1);
    assert_eq!(nw.applied_data(1).len(), 2);
    assert_eq!(nw.peer(1).raft.uncommitted_size, 0);
    nw.propose(1, &[2; 10]).unwrap();
    // With nothing outstanding, even an entry above the bound is admitted.
    nw.propose(1, &[3; 100]).unwrap();
    assert_eq!(nw.applied_data(3).len(), 4);
}

// ---- the persisted-ack split ----

#[test]
fn leader_sends_appends_before_persisting_and_commits_on_follower_quorum() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    let idx = last_index(&nw, 1) + 1;
    let leader = nw.peer_mut(1);
    leader.propose(b"x".to_vec()).unwrap();
    let mut rd = leader.ready();
    assert_eq!(rd.entries().len(), 1);
    assert_eq!(rd.entries()[0].index, idx);
    let appends = rd.take_messages();
    assert_eq!(
        appends.len(),
        2,
        "appends go out with the write, not after it"
    );
    assert!(appends
        .iter()
        .all(|m| m.msg_type == MessageType::Append && m.entries[0].index == idx));
    assert!(rd.persisted_messages().is_empty());
    let entries = rd.take_entries();
    leader.advance_append_async(rd);

    // Both followers persist and ack: a quorum without the leader commits.
    let acks = hop(&mut nw, appends);
    for ack in acks {
        nw.peer_mut(1).step(ack).unwrap();
    }
    let leader = nw.peer_mut(1);
    assert_eq!(leader.raft.raft_log.committed, idx);
    assert!(leader.raft.raft_log.persisted < idx);
    // ... but the leader applies only what it holds durably.
    let rd = leader.ready();
    assert!(rd.committed_entries().is_empty());
    let n = rd.number();
    leader.advance_append_async(rd);
    leader.mut_store().append(&entries).unwrap();
    leader.on_persist_ready(n);
    let mut rd = leader.ready();
    let applied = rd.take_committed_entries();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].data, b"x".to_vec());
    write(leader, &rd);
    leader.advance(rd);
    leader.advance_apply();
}

#[test]
fn leader_commits_with_one_follower_only_after_its_own_persist() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    let idx = last_index(&nw, 1) + 1;
    let leader = nw.peer_mut(1);
    leader.propose(b"x".to_vec()).unwrap();
    let mut rd = leader.ready();
    let to2 = only(&rd.take_messages(), 2, MessageType::Append);
    let n = rd.number();
    let entries = rd.take_entries();
    leader.advance_append_async(rd);

    let acks = hop(&mut nw, to2);
    nw.peer_mut(1).step(acks[0].clone()).unwrap();
    let leader = nw.peer_mut(1);
    assert_eq!(
        leader.raft.raft_log.committed,
        idx - 1,
        "2 alone is no quorum"
    );

    leader.mut_store().append(&entries).unwrap();
    leader.on_persist_ready(n);
    assert_eq!(leader.raft.raft_log.committed, idx, "2 and the leader are");
}

#[test]
fn single_node_leader_commits_only_once_its_persist_is_reported() {
    let mut node = new_node(1, &[1]);
    node.campaign().unwrap();
    assert_eq!(node.raft.state, StateRole::Leader);

    let rd = node.ready();
    assert_eq!(rd.entries().len(), 1, "the no-op");
    write(&mut node, &rd);
    let n = rd.number();
    node.advance_append_async(rd);
    assert_eq!(node.raft.raft_log.committed, 0);
    node.on_persist_ready(n);
    assert_eq!(node.raft.raft_log.committed, 1);

    node.propose(b"x".to_vec()).unwrap();
    let mut rd = node.ready();
    assert_eq!(rd.entries()[0].index, 2);
    assert_eq!(rd.take_committed_entries().len(), 1, "the no-op applies");
    write(&mut node, &rd);
    let n = rd.number();
    node.advance_append_async(rd);
    node.advance_apply();
    assert_eq!(node.raft.raft_log.committed, 1);
    node.on_persist_ready(n);
    assert_eq!(node.raft.raft_log.committed, 2);

    let mut rd = node.ready();
    let ents = rd.take_committed_entries();
    assert_eq!(ents.len(), 1);
    assert_eq!(ents[0].data, b"x".to_vec());
    write(&mut node, &rd);
    node.advance(rd);
    node.advance_apply();
    assert_eq!(node.raft.raft_log.applied, 2);
}

#[test]
fn follower_and_candidate_messages_wait_for_persistence() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.peer_mut(1).propose(b"x".to_vec()).unwrap();
    let idx = last_index(&nw, 1);
    let out = flush(&mut nw, 1);
    let app = only(&out, 2, MessageType::Append).remove(0);

    let follower = nw.peer_mut(2);
    follower.step(app).unwrap();
    let rd = follower.ready();
    assert!(rd.messages().is_empty());
    assert_eq!(rd.persisted_messages().len(), 1);
    let ack = &rd.persisted_messages()[0];
    assert_eq!(
        (ack.msg_type, ack.index),
        (MessageType::AppendResponse, idx)
    );
    write(follower, &rd);
    follower.advance(rd);

    // A candidate's vote requests also wait until its vote for itself is durable.
    let node = nw.peer_mut(3);
    node.campaign().unwrap();
    let rd = node.ready();
    assert!(rd.must_sync());
    assert!(rd.messages().is_empty());
    assert_eq!(rd.persisted_messages().len(), 2);
    assert!(rd
        .persisted_messages()
        .iter()
        .all(|m| m.msg_type == MessageType::RequestVote));
}

#[test]
fn forwarded_proposals_and_reads_leave_without_waiting_for_persistence() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    let follower = nw.peer_mut(2);
    follower.propose(b"fwd".to_vec()).unwrap();
    follower.read_index(b"ctx".to_vec()).unwrap();
    let rd = follower.ready();
    // Nothing durable is involved: they go out with the Ready's immediate messages.
    let kinds: Vec<_> = rd.messages().iter().map(|m| (m.msg_type, m.to)).collect();
    assert_eq!(
        kinds,
        vec![(MessageType::Propose, 1), (MessageType::ReadIndex, 1)]
    );
    assert!(rd.persisted_messages().is_empty());
}

// ---- malformed input ----

#[test]
fn malformed_messages_are_errors_not_panics() {
    let mut node = new_node(1, &[1, 2, 3]);
    let malformed = |r: Result<()>| matches!(r, Err(Error::MalformedMessage(_)));

    let mut gap = Message::new(MessageType::Append, 2, 1);
    gap.term = 1;
    gap.entries = vec![Entry::new(1, 1, Vec::new()), Entry::new(1, 3, Vec::new())];
    assert!(malformed(node.step(gap)));

    let mut detached = Message::new(MessageType::Append, 2, 1);
    detached.term = 1;
    detached.index = 4;
    detached.entries = vec![Entry::new(1, 7, Vec::new())];
    assert!(malformed(node.step(detached)));

    let mut future_term = Message::new(MessageType::Append, 2, 1);
    future_term.term = 1;
    future_term.entries = vec![Entry::new(2, 1, Vec::new())];
    assert!(malformed(node.step(future_term)));

    let mut no_snapshot = Message::new(MessageType::Snapshot, 2, 1);
    no_snapshot.term = 1;
    assert!(malformed(node.step(no_snapshot.clone())));
    no_snapshot.snapshot = Some(Snapshot::default());
    assert!(malformed(node.step(no_snapshot)));

    for t in [
        MessageType::Heartbeat,
        MessageType::Append,
        MessageType::AppendResponse,
        MessageType::RequestVote,
    ] {
        let mut anonymous = Message::new(t, 0, 1);
        anonymous.term = 1;
        assert!(malformed(node.step(anonymous)), "{t:?} from 0");
    }
    assert_eq!(
        node.step(Message::new(MessageType::Hup, 1, 1)),
        Err(Error::StepLocalMsg)
    );
    let mut stranger = Message::new(MessageType::AppendResponse, 9, 1);
    stranger.term = 1;
    assert_eq!(node.step(stranger), Err(Error::StepPeerNotFound));

    // None of it changed the node, which still accepts a well-formed append.
    assert_eq!((node.raft.term, node.raft.raft_log.last_index()), (0, 0));
    let mut ok = Message::new(MessageType::Append, 2, 1);
    ok.term = 1;
    ok.entries = vec![Entry::new(1, 1, Vec::new())];
    node.step(ok).unwrap();
    assert_eq!(node.raft.raft_log.last_index(), 1);
}

#[test]
fn snapshot_with_an_invalid_membership_is_refused_not_a_panic() {
    let mut n = common::new_node(2, &[1, 2]);
    // Node 2 is listed as both voter and learner: no valid configuration.
    let snap = Snapshot {
        metadata: SnapshotMetadata {
            conf_state: ConfState {
                voters: vec![1, 2],
                learners: vec![2],
                ..ConfState::default()
            },
            index: 10,
            term: 1,
        },
        data: Vec::new(),
    };
    let m = Message {
        msg_type: MessageType::Snapshot,
        from: 1,
        to: 2,
        term: 1,
        snapshot: Some(snap),
        ..Message::default()
    };
    n.step(m).unwrap();
    assert_eq!(
        n.raft.raft_log.committed, 0,
        "the snapshot was not installed"
    );
    assert_eq!(n.raft.raft_log.last_index(), 0);
    let acks = common::read_messages(&mut n.raft);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].index, 0, "the ack reports only what the node holds");
}

#[test]
fn single_voter_holds_read_index_until_its_term_commits() {
    let mut n = common::new_node(1, &[1]);
    n.campaign().unwrap();
    assert_eq!(n.raft.state, StateRole::Leader);
    // The empty entry of the new term is not yet persisted, so not committed.
    n.read_index(b"r".to_vec()).unwrap();
    assert!(
        n.raft.read_states.is_empty(),
        "read answered before the term committed"
    );
    // Persist the Ready holding the empty entry; the commit then answers the read.
    let rd = n.ready();
    assert!(rd.read_states().is_empty());
    n.mut_store().append(rd.entries()).unwrap();
    let _light = n.advance(rd);
    assert_eq!(n.raft.raft_log.committed, 1);
    let rd = n.ready();
    assert_eq!(rd.read_states().len(), 1);
    assert_eq!(rd.read_states()[0].index, 1);
    assert_eq!(rd.read_states()[0].request_ctx, b"r".to_vec());
}

// ---- forwarded requests keep their sender ----

#[test]
fn read_index_forwarded_twice_is_answered_to_the_node_that_asked() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();

    // 3 asks; its request is on its way to 1 when leadership moves to 2.
    nw.peer_mut(3).read_index(b"r3".to_vec()).unwrap();
    let to_old_leader = only(&flush(&mut nw, 3), 1, MessageType::ReadIndex);
    assert_eq!(to_old_leader.len(), 1);
    nw.campaign(2);
    assert_eq!(nw.leader(), Some(2));
    assert_eq!(nw.peer(1).raft.leader_id, 2);

    // 1 relays it to 2; 2 answers the node that asked, not the relay.
    let reads = pump(&mut nw, to_old_leader, |_| false);
    assert_eq!(
        reads[&3],
        vec![ReadState {
            index: committed(&nw, 2),
            request_ctx: b"r3".to_vec(),
        }]
    );
    assert!(
        reads[&1].is_empty(),
        "the relay got the answer: {:?}",
        reads[&1]
    );
}

#[test]
fn transfer_requested_at_a_follower_moves_leadership_to_the_requested_node() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();
    // Asked at follower 2, which relays the request to leader 1.
    nw.peer_mut(2).transfer_leader(3);
    nw.send(Vec::new());
    assert_eq!(nw.leader(), Some(3), "leadership went to the relay instead");
}

#[test]
fn ack_at_the_match_point_of_a_probing_follower_resumes_replication() {
    let mut nw = Network::new(&[1, 2, 3]);
    elect(&mut nw, 1);
    nw.propose(1, b"x").unwrap();
    let last = last_index(&nw, 1);
    assert_eq!(progress(&nw, 1, 2).matched, last);

    // 2 goes back to probing although it holds everything.
    nw.peer_mut(1).report_unreachable(2);
    assert_eq!(progress(&nw, 1, 2).state, ProgressState::Probe);
    // A heartbeat response makes the leader probe with an empty append at `last`,
    // which 2 acknowledges with index == matched.
    nw.peer_mut(1).tick();
    let beats = only(&flush(&mut nw, 1), 2, MessageType::Heartbeat);
    let resp = hop(&mut nw, beats);
    let probe = only(&hop(&mut nw, resp), 2, MessageType::Append);
    assert_eq!(probe.len(), 1);
    assert!(probe[0].entries.is_empty());
    let ack = hop(&mut nw, probe);
    assert_eq!(ack[0].index, last);
    hop(&mut nw, ack);

    // As in etcd, the ack answers the probe: replication resumes at once.
    assert_eq!(progress(&nw, 1, 2).state, ProgressState::Replicate);
    nw.peer_mut(1).propose(b"y".to_vec()).unwrap();
    assert_eq!(only(&flush(&mut nw, 1), 2, MessageType::Append).len(), 1);
}
