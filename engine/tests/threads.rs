//! Every thread a node starts is joined when it stops (one test in this binary, so no
//! other test's threads are counted).
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{key, value};
use keel_engine::testing::{wait_until, Cluster};

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[test]
fn stopping_nodes_joins_all_their_threads() {
    let before = thread_count();
    {
        let c = Cluster::new(3);
        c.net().set_delay_ms(1);
        let leader = c.wait_leader();
        for i in 0..10 {
            c.db(leader).put(&key(i), &value(i)).unwrap();
        }
        let follower = c.followers(leader)[0];
        c.stop(follower).expect("stop node");
        c.start(follower).expect("start node");
        c.wait_converged();
        assert!(thread_count() > before);
    }
    let after = wait_until(Duration::from_secs(2), || {
        let n = thread_count();
        (n == before).then_some(n)
    });
    assert_eq!(after, Some(before), "threads left behind");
}
