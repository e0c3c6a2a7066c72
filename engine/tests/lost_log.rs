//! A node told by its leader that entries past the end of its own log are committed has
//! lost entries it acknowledged (its log was truncated or replaced behind raft's
//! back). etcd panics there ("was the log lost?"); keel stops the node as a whole with
//! a typed fatal error, and the rest of the cluster goes on.

mod common;

use std::time::Duration;

use common::{key, value};
use keel_engine::testing::{wait_until, Cluster};
use keel_engine::transport::Transport;
use keel_engine::{Error, FatalKind, StopReason};
use keel_raft::{codec, Message, MessageType};

#[test]
fn a_heartbeat_committing_past_the_log_stops_the_node_with_a_raft_fatal_error() {
    let c = Cluster::new(3);
    let leader = c.wait_leader();
    c.db(leader).put(&key(1), &value(1)).unwrap();
    c.wait_converged();
    let follower = c.followers(leader)[0];
    let st = c.db(follower).status();

    // What the leader would send if the follower had acknowledged 100 more entries.
    let mut m = Message::new(MessageType::Heartbeat, leader, follower);
    m.term = st.term;
    m.commit = st.last_index + 100;
    c.net()
        .send(leader, follower, codec::encode(&m))
        .expect("the network delivers");

    let fatal = wait_until(Duration::from_secs(10), || c.db(follower).status().fatal)
        .expect("the follower stopped");
    assert_eq!(fatal.kind, FatalKind::Raft, "{fatal:?}");
    assert!(fatal.thread.starts_with("keel-raft-"), "{fatal:?}");
    assert!(fatal.detail.contains("was the log lost"), "{fatal:?}");
    match c.db(follower).put(&key(2), &value(2)) {
        Err(Error::Stopped(StopReason::Fatal(f))) => assert_eq!(f, fatal),
        other => panic!("a write on the stopped node: {other:?}"),
    }

    // The other two still form a quorum.
    let leader = wait_until(Duration::from_secs(10), || {
        let l = c.wait_leader();
        (l != follower).then_some(l)
    })
    .expect("a leader among the others");
    c.db(leader).put(&key(3), &value(3)).unwrap();
}
