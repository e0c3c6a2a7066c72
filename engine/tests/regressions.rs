//! Regression tests for engine bugs, each set up deterministically (or as close as
//! an in-process cluster allows) from the scenario that exposed it.

mod common;

use std::time::{Duration, Instant};

use keel_engine::testing::{wait_until, Cluster};

// Request ids restarted at 1 on every node start, and an entry carries (origin node,
// request id). An entry a node proposed before a restart but applied only after it
// completed the restarted node's new write that got the same id: `put` returned Ok
// before its own entry was applied (and would have even if it never was).
//
// Setup: node B's first write is forwarded to the leader, then B is cut off before the
// leader's append reaches it, so B never has the entry; the others commit it. B
// restarts (its first write of the new run got id 1 too, under the bug), learns the
// leader, and writes again; the old entry reaches B only a network round trip later
// (every message is delayed), while the new write waits.
#[test]
fn an_entry_proposed_before_a_restart_never_acknowledges_a_new_write() {
    // Elections slow enough for the long message delay below.
    let c = Cluster::with(3, |mut cfg| {
        cfg.election_ticks = 150;
        cfg.heartbeat_ticks = 5;
        cfg
    });
    let leader = c.wait_leader();
    let b = c.followers(leader)[0];
    // Generous, so a loaded machine still sends B's forward before the cut below.
    let delay_ms = 200;
    c.net().set_delay_ms(delay_ms);
    let old_write = {
        let db = c.db(b).clone();
        std::thread::spawn(move || db.put_timeout(b"old", b"1", Duration::from_millis(1_000)))
    };
    // The forward left B already (it is in the delay queue); the leader's append
    // toward B, sent once the forward arrives, meets the cut.
    std::thread::sleep(Duration::from_millis(delay_ms / 2));
    let others = c.followers(b);
    c.net().partition(&[b], &others);
    assert!(
        old_write.join().unwrap().is_err(),
        "B cannot have seen its write"
    );
    c.stop(b).expect("stop node");
    let db_leader = c.db(leader).clone();
    wait_until(Duration::from_secs(5), || {
        (db_leader.get_local(b"old").ok()? == Some(b"1".to_vec())).then_some(())
    })
    .expect("the majority committed B's forwarded write");
    c.net().heal();
    c.start(b).expect("start node");
    let db_b = c.db(b).clone();
    assert_eq!(
        db_b.get_local(b"old").unwrap(),
        None,
        "B's log had the entry"
    );
    // As soon as B knows the leader, its write is forwarded rather than refused.
    wait_until(Duration::from_secs(5), || db_b.status().leader).expect("B hears the leader");
    let started = Instant::now();
    db_b.put(b"new", b"2").unwrap();
    // Acknowledged means applied here: the new value must be visible locally.
    assert_eq!(
        db_b.get_local(b"new").unwrap(),
        Some(b"2".to_vec()),
        "put returned after {:?} before its entry was applied on B",
        started.elapsed()
    );
    assert_eq!(db_b.get_local(b"old").unwrap(), Some(b"1".to_vec()));
}
