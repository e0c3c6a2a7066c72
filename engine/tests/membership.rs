//! Membership through `Db`: a node started in join mode is added as a learner and
//! rebuilds the membership from the leader's log (the bootstrap entries), is promoted,
//! takes over leadership by transfer, survives a restart; every change reaches the
//! membership observer with its context; refused changes are refused before anything
//! is proposed. The members' addresses survive snapshots and compaction: a follower
//! that catches up by snapshot and a node restarting from its own snapshot learn them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use keel_engine::testing::{fast, wait_until, Cluster};
use keel_engine::{
    member_address, member_context, ConfChangeSingle, ConfChangeTransition, ConfChangeType,
    ConfChangeV2, ConfState, Config, Db, Error, Members, MembershipObserver, MembershipRefusal,
    Role,
};
use parking_lot::Mutex;

#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, ConfChangeType, Vec<u8>)>>);

impl MembershipObserver for Recorder {
    fn applied(&self, change: &ConfChangeV2, _cs: &ConfState) {
        for c in &change.changes {
            self.0
                .lock()
                .push((c.node_id, c.change_type, change.context.clone()));
        }
    }
}

// A change's index and the address it carries.
type Change = (u64, Option<(u64, String)>);

/// Records what the newer methods tell: changes with their index, and restored books.
#[derive(Default)]
struct BookRecorder {
    changed: Mutex<Vec<Change>>,
    restored: Mutex<Vec<Members>>,
}

impl MembershipObserver for BookRecorder {
    fn changed(&self, index: u64, change: &ConfChangeV2, _cs: &ConfState) {
        self.changed.lock().push((index, member_address(change)));
    }
    fn restored(&self, members: &Members) {
        self.restored.lock().push(members.clone());
    }
}

fn change(change_type: ConfChangeType, node_id: u64, context: &[u8]) -> ConfChangeV2 {
    ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![ConfChangeSingle {
            change_type,
            node_id,
        }],
        context: context.to_vec(),
    }
}

fn joiner(c: &Cluster, observer: Arc<Recorder>) -> Config {
    let mut cfg = fast(Config::cluster(
        4,
        Vec::new(),
        c.node_dir(4),
        c.net().clone(),
    ));
    cfg.join = true;
    cfg.membership_observer = Some(observer);
    cfg
}

#[test]
fn a_joining_node_is_added_promoted_made_leader_and_restarts() {
    let c = Cluster::new(3);
    let leader = c.wait_leader();
    c.db(leader).put(b"k", b"v1").expect("put");

    let seen = Arc::new(Recorder::default());
    let n4 = Db::open(joiner(&c, Arc::clone(&seen))).expect("open joiner");
    // Join mode: no membership, never campaigns.
    std::thread::sleep(Duration::from_millis(800));
    let st = n4.status();
    assert!(st.voters.is_empty() && st.leader.is_none(), "{st:?}");

    let cs = c
        .db(leader)
        .change_membership(change(ConfChangeType::AddLearnerNode, 4, b"addr-of-4"))
        .expect("add learner");
    assert_eq!(cs.learners, vec![4]);
    wait_until(Duration::from_secs(10), || {
        let st = n4.status();
        (st.voters == vec![1, 2, 3] && st.learners == vec![4]).then_some(())
    })
    .expect("the learner rebuilds the membership from the log");
    assert_eq!(
        n4.get(b"k").expect("read on the learner"),
        Some(b"v1".to_vec())
    );
    // The bootstrap entries and the addition reached its observer, with the context.
    let log = seen.0.lock().clone();
    assert!(
        log.contains(&(4, ConfChangeType::AddLearnerNode, b"addr-of-4".to_vec())),
        "{log:?}"
    );
    assert!(
        log.contains(&(1, ConfChangeType::AddNode, Vec::new())),
        "{log:?}"
    );

    // Refusals, before anything is proposed.
    let l = c.db(leader);
    assert!(matches!(
        l.transfer_leadership(4),
        Err(Error::MembershipRefused(
            MembershipRefusal::LearnerCannotLead(4)
        ))
    ));
    assert!(matches!(
        l.transfer_leadership(9),
        Err(Error::UnknownNode(9))
    ));
    assert!(matches!(
        l.change_membership(change(ConfChangeType::RemoveNode, 9, b"")),
        Err(Error::UnknownNode(9))
    ));
    assert!(matches!(
        l.change_membership(change(ConfChangeType::AddNode, leader, b"")),
        Err(Error::MembershipRefused(MembershipRefusal::AlreadyVoter(id))) if id == leader
    ));
    let follower = c.followers(leader)[0];
    assert!(matches!(
        c.db(follower)
            .change_membership(change(ConfChangeType::AddNode, 4, b"")),
        Err(Error::NotLeader { leader: Some(_) })
    ));

    // Promote, then transfer leadership to it (asked through a follower).
    let cs = l
        .change_membership(change(ConfChangeType::AddNode, 4, b""))
        .expect("promote");
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    c.db(follower).transfer_leadership(4).expect("transfer");
    wait_until(Duration::from_secs(10), || {
        (n4.status().role == Role::Leader).then_some(())
    })
    .expect("node 4 leads");
    n4.put(b"k", b"v2").expect("write through the new leader");

    // Back to a follower, then a restart: membership comes from its own log.
    n4.transfer_leadership(leader).expect("transfer back");
    n4.close().expect("close");
    drop(n4);
    let n4 = Db::open(joiner(&c, Arc::new(Recorder::default()))).expect("reopen");
    wait_until(Duration::from_secs(10), || {
        let st = n4.status();
        (st.voters == vec![1, 2, 3, 4] && st.leader.is_some()).then_some(())
    })
    .expect("the restarted node knows the membership");
    assert_eq!(n4.get(b"k").expect("read"), Some(b"v2".to_vec()));

    // Remove it again; the others carry on.
    let cs = c
        .db(leader)
        .change_membership(change(ConfChangeType::RemoveNode, 4, b""))
        .expect("remove");
    assert_eq!(cs.voters, vec![1, 2, 3]);
    c.db(leader).put(b"k", b"v3").expect("write after removal");
    n4.close().expect("close");
    c.stop(1).expect("stop node");
}

// Snapshots every 20 entries, and the log compacted right behind the oldest kept one.
fn snapshot_often(mut c: Config) -> Config {
    c.snapshot_every = 20;
    c.snapshot_log_percent = 0;
    c.catch_up_entries = 0;
    c.snapshots_retained = 1;
    c
}

const ADDR4: &str = "10.0.0.4:7004";

#[test]
fn member_addresses_survive_snapshots_compaction_and_restarts() {
    let c = Cluster::with(3, snapshot_often);
    let leader = c.wait_leader();
    // This follower misses everything below, and must catch up by snapshot.
    let behind = c.followers(leader)[0];
    c.stop(behind).expect("stop node");

    let mut cfg = snapshot_often(joiner(&c, Arc::new(Recorder::default())));
    cfg.membership_observer = None;
    let n4 = Db::open(cfg).expect("open joiner");
    c.db(leader)
        .change_membership(change(
            ConfChangeType::AddLearnerNode,
            4,
            &member_context(4, ADDR4),
        ))
        .expect("add learner");
    // Answered once raft applied it; the book follows when the apply stage does.
    let added_at = wait_until(Duration::from_secs(10), || {
        let m = c.db(leader).members();
        (m.addresses.get(&4).map(String::as_str) == Some(ADDR4)).then_some(m.index)
    })
    .expect("the leader's book has node 4");
    for i in 0..120u64 {
        c.db(leader)
            .put(format!("k{i}").as_bytes(), b"v")
            .expect("put");
    }
    // The change that carried the address is compacted away on the leader.
    wait_until(Duration::from_secs(10), || {
        (c.db(leader).status().first_index > added_at + 1).then_some(())
    })
    .expect("the leader compacts past the change");
    wait_until(Duration::from_secs(10), || {
        (n4.members().addresses.get(&4).map(String::as_str) == Some(ADDR4)).then_some(())
    })
    .expect("the joined node learns its own address");

    // The follower that was down catches up by snapshot and learns the address.
    let seen = Arc::new(BookRecorder::default());
    let mut cfg = c.config(behind);
    cfg.membership_observer = Some(Arc::clone(&seen) as Arc<dyn MembershipObserver>);
    c.start_with(behind, cfg).expect("restart");
    c.wait_converged();
    let st = c.db(behind).status();
    assert!(
        st.snapshot_index > added_at,
        "caught up by snapshot: {st:?}"
    );
    assert_eq!(c.db(behind).members().addresses[&4], ADDR4);
    let restored = seen.restored.lock().clone();
    let last = restored.last().expect("an installed snapshot is told");
    assert!(last.index > added_at, "{last:?}");
    assert_eq!(last.addresses.get(&4).map(String::as_str), Some(ADDR4));
    assert_eq!(last.conf_state.learners, vec![4]);
    assert!(
        !seen.changed.lock().iter().any(|(_, a)| a.is_some()),
        "the address came from the snapshot, not from a replayed change"
    );

    // Restarted, it tells the book from its own snapshot before anything else.
    c.stop(behind).expect("stop node");
    let seen = Arc::new(BookRecorder::default());
    let mut cfg = c.config(behind);
    cfg.membership_observer = Some(Arc::clone(&seen) as Arc<dyn MembershipObserver>);
    let db = c.start_with(behind, cfg).expect("restart again");
    assert_eq!(db.members().addresses[&4], ADDR4);
    let restored = seen.restored.lock().clone();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(
        restored[0].addresses.get(&4).map(String::as_str),
        Some(ADDR4)
    );

    // Removed, the address leaves the book and the snapshots after it.
    c.db(leader)
        .change_membership(change(ConfChangeType::RemoveNode, 4, b""))
        .expect("remove");
    for i in 0..60u64 {
        c.db(leader)
            .put(format!("r{i}").as_bytes(), b"v")
            .expect("put");
    }
    c.wait_converged();
    for id in [leader, behind] {
        assert!(c.db(id).members().addresses.is_empty(), "node {id}");
    }
    c.stop(behind).expect("stop node");
    let seen = Arc::new(BookRecorder::default());
    let mut cfg = c.config(behind);
    cfg.membership_observer = Some(Arc::clone(&seen) as Arc<dyn MembershipObserver>);
    let db = Db::open(cfg).expect("restart after the removal");
    let restored = seen.restored.lock().clone();
    assert!(restored[0].addresses.is_empty(), "{restored:?}");
    assert_eq!(restored[0].conf_state.learners, Vec::<u64>::new());
    db.close().expect("close");
    n4.close().expect("close");
}

#[test]
fn a_node_starts_from_a_snapshot_written_before_member_addresses() {
    // Written by keel at commit 2841cb9 (snapshot stream version 1): index 10, term
    // 2, voters 1-3, learner 4, keys a b c; nothing else in the data directory.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../snapshot/tests/data/v1/0000000000000002-000000000000000a.snap");
    let c = Cluster::new(0);
    let snap = c.node_dir(1).join("snap");
    std::fs::create_dir_all(&snap).expect("snap dir");
    std::fs::copy(
        &fixture,
        snap.join("0000000000000002-000000000000000a.snap"),
    )
    .expect("copy the fixture");
    let seen = Arc::new(BookRecorder::default());
    let mut cfg = fast(Config::cluster(
        1,
        vec![1, 2, 3],
        c.node_dir(1),
        c.net().clone(),
    ));
    cfg.membership_observer = Some(Arc::clone(&seen) as Arc<dyn MembershipObserver>);
    let db = Db::open(cfg).expect("open on a version 1 snapshot");
    let members = db.members();
    assert_eq!(members.index, 10);
    assert_eq!(members.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(members.conf_state.learners, vec![4]);
    assert!(members.addresses.is_empty());
    assert_eq!(seen.restored.lock().clone(), vec![members]);
    assert_eq!(db.get_local(b"b").expect("read"), Some(b"2".to_vec()));
    assert_eq!(db.status().snapshot_index, 10);
    db.close().expect("close");
}

// `change`'s outcome once no earlier change is pending any more (a change is answered
// when raft applied it, a moment before the apply stage lets raft take the next).
fn settled<T>(change: impl Fn() -> keel_engine::Result<T>) -> keel_engine::Result<T> {
    wait_until(Duration::from_secs(10), || match change() {
        Err(Error::MembershipRefused(MembershipRefusal::ChangePending)) => None,
        outcome => Some(outcome),
    })
    .expect("the earlier change is applied")
}

#[test]
fn members_are_added_promoted_and_removed_by_the_db_methods() {
    let c = Cluster::new(3);
    let leader = c.wait_leader();
    let l = c.db(leader);
    let n4 = Db::open(joiner(&c, Arc::new(Recorder::default()))).expect("open joiner");

    let cs = l.add_learner(4, Some(ADDR4)).expect("add learner");
    assert_eq!(
        (cs.voters.as_slice(), cs.learners.as_slice()),
        (&[1, 2, 3][..], &[4][..])
    );
    wait_until(Duration::from_secs(10), || {
        (l.members().addresses.get(&4).map(String::as_str) == Some(ADDR4)).then_some(())
    })
    .expect("the change carried the address");
    assert!(matches!(
        settled(|| l.add_learner(4, None)),
        Err(Error::MembershipRefused(MembershipRefusal::AlreadyLearner(
            4
        )))
    ));

    let cs = settled(|| l.promote_learner(4)).expect("promote");
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    assert!(cs.learners.is_empty(), "{cs:?}");
    assert!(matches!(
        settled(|| l.add_member(4, Some(ADDR4))),
        Err(Error::MembershipRefused(MembershipRefusal::AlreadyVoter(4)))
    ));
    assert!(matches!(
        settled(|| l.add_member(0, None)),
        Err(Error::MembershipRefused(MembershipRefusal::ReservedId))
    ));

    let cs = settled(|| l.remove_member(4)).expect("remove");
    assert_eq!(cs.voters, vec![1, 2, 3]);
    assert!(matches!(
        settled(|| l.remove_member(4)),
        Err(Error::UnknownNode(4))
    ));
    l.put(b"k", b"v").expect("write after the removal");
    n4.close().expect("close");
    c.stop(1).expect("stop node 1");
}

#[test]
fn a_change_that_would_lose_quorum_is_refused_with_its_numbers() {
    let c = Cluster::new(1);
    let leader = c.wait_leader();
    // Node 2 never starts: as a second voter it could not answer, and one of two
    // voters is no majority. Refused (after the retries for voters that have not
    // answered yet), and nothing was proposed.
    let refused = c.db(leader).add_member(2, Some("10.0.0.2:7002"));
    assert!(
        matches!(
            refused,
            Err(Error::MembershipRefused(
                MembershipRefusal::WouldLoseQuorum {
                    reachable: 1,
                    voters: 2
                }
            ))
        ),
        "{refused:?}"
    );
    let err = refused.unwrap_err();
    assert!(err.to_string().contains("would lose quorum"), "{err}");
    assert_eq!(c.db(leader).status().voters, vec![1]);
    c.db(leader).put(b"k", b"v").expect("still serves");
}
