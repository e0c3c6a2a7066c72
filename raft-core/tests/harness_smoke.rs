//! Checks the test harness itself: a 3-node network elects, replicates and survives a
//! cut link.

mod common;

use common::Network;
use keel_raft::StateRole;

#[test]
fn three_nodes_elect_and_replicate() {
    let mut nw = Network::new(&[1, 2, 3]);
    nw.campaign(1);
    assert_eq!(nw.peer(1).raft.state, StateRole::Leader);
    nw.propose(1, b"a").unwrap();
    nw.propose(2, b"b").unwrap();
    for id in 1..=3 {
        assert_eq!(nw.applied_data(id), vec![b"a".to_vec(), b"b".to_vec()]);
    }
    nw.isolate(3);
    nw.propose(1, b"c").unwrap();
    assert_eq!(nw.applied_data(1).len(), 3);
    assert_eq!(nw.applied_data(3).len(), 2);
    nw.recover();
    nw.tick(1, 1);
    assert_eq!(nw.applied_data(3).len(), 3);
}
