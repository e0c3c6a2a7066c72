//! Membership and leadership over the HTTP API of `keel serve`: grow 3 → 4 (a
//! `--join` node added as a learner, then promoted), leadership transfer, removing
//! the leader, shrinking back to 3, and the refusals (unknown node, pending change,
//! quorum loss, no address for a new node, requests sent to a follower); and a member
//! added at runtime staying reachable from every node after snapshots, compaction and
//! restarts.

mod node;

use std::net::SocketAddr;

use node::{free_ports, http, wait_for, Cluster, NodeProc};
use serde_json::{json, Value};

fn post(n: &NodeProc, path: &str, body: Value) -> node::Answer {
    http(n.client, "POST", path, body.to_string().as_bytes()).expect("answer")
}

fn delete(n: &NodeProc, path: &str) -> node::Answer {
    http(n.client, "DELETE", path, b"").expect("answer")
}

#[test]
fn grow_promote_transfer_remove_the_leader_and_shrink() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(&[1, 2, 3]);
    assert_eq!(c.node(leader).put("k", b"v1").expect("put").code, 204);
    let follower = (1..=3).find(|&i| i != leader).expect("follower");

    // Node 4 starts in join mode: no voters, no leader, it never campaigns.
    let (n4, peer4) = start_joining_node_4(&c, &[]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let st = n4.status().expect("status");
    assert_eq!(st["voters"], json!([]), "{st}");
    assert_eq!(st["role"], "follower");
    assert_eq!(
        n4.get("/health").expect("health").code,
        503,
        "not a member yet"
    );

    // Refusals before anything is proposed.
    let a = post(
        c.node(leader),
        "/cluster/members",
        json!({"id": 4, "learner": true}),
    );
    assert_eq!(a.code, 400, "a new node needs an address: {}", a.text());
    let a = delete(c.node(leader), "/cluster/members/9");
    assert_eq!(a.code, 404, "{}", a.text());
    assert_eq!(a.json()["applied"], false);
    let a = post(
        c.node(follower),
        "/cluster/members",
        json!({"id": 4, "addr": peer4, "learner": true}),
    );
    assert_eq!(
        a.code,
        503,
        "membership changes go to the leader: {}",
        a.text()
    );
    assert_eq!(a.json()["leader"], leader);
    let a = post(c.node(leader), "/cluster/leader", json!({"id": 9}));
    assert_eq!(a.code, 404, "{}", a.text());

    // Add as a learner: it receives the log, including the bootstrap membership.
    let a = post(
        c.node(leader),
        "/cluster/members",
        json!({"id": 4, "addr": peer4, "learner": true}),
    );
    assert_eq!(a.code, 200, "{}\n{}", a.text(), c.logs());
    assert_eq!(a.json()["learners"], json!([4]));
    wait_for("node 4 learns the membership", || {
        let st = n4.status()?;
        (st["voters"] == json!([1, 2, 3]) && st["learners"] == json!([4])).then_some(())
    });
    assert_eq!(n4.status().expect("status")["role"], "learner");
    let v = wait_for("node 4 serves reads", || {
        let a = n4.get("/kv/k")?;
        (a.code == 200).then_some(a.text())
    });
    assert_eq!(v, "v1");
    // Restarted, the joined node rebuilds its membership from its own log.
    let mut n4 = n4;
    n4.kill9();
    n4.restart();
    wait_for("node 4 recovers as a learner", || {
        let st = n4.status()?;
        (st["voters"] == json!([1, 2, 3]) && st["learners"] == json!([4]) && st["leader"] != 0)
            .then_some(())
    });
    // A learner may not lead.
    let a = post(c.node(leader), "/cluster/leader", json!({"id": 4}));
    assert_eq!(a.code, 409, "{}", a.text());
    // Adding it again as a learner is refused.
    let a = post(
        c.node(leader),
        "/cluster/members",
        json!({"id": 4, "addr": peer4, "learner": true}),
    );
    assert_eq!(a.code, 409, "{}", a.text());

    // Promote, then hand it the leadership.
    let a = post(
        c.node(leader),
        "/cluster/members",
        json!({"id": 4, "learner": false}),
    );
    assert_eq!(a.code, 200, "{}", a.text());
    assert_eq!(a.json()["voters"], json!([1, 2, 3, 4]));
    let a = post(c.node(follower), "/cluster/leader", json!({"id": 4}));
    assert_eq!(
        a.code,
        200,
        "transfer through a follower: {}\n{}",
        a.text(),
        c.logs()
    );
    wait_for("everyone follows node 4", || {
        let all = c
            .nodes
            .iter()
            .chain([&n4])
            .all(|n| n.status().is_some_and(|s| s["leader"] == 4));
        all.then_some(())
    });
    assert_eq!(n4.put("k", b"v2").expect("put").code, 204);

    // Remove the leader itself: the rest elect a new one and keep serving.
    let a = delete(&n4, "/cluster/members/4");
    assert_eq!(a.code, 200, "{}", a.text());
    assert_eq!(a.json()["voters"], json!([1, 2, 3]));
    let new = c.wait_leader(&[1, 2, 3]);
    assert_ne!(new, 4);
    assert_eq!(c.node(new).put("k", b"v3").expect("put").code, 204);
    for n in &c.nodes {
        assert_eq!(n.get("/kv/k").expect("get").text(), "v3");
        assert_eq!(n.status().expect("status")["voters"], json!([1, 2, 3]));
    }
    let a = wait_for("the removed node is unhealthy", || {
        let a = n4.get("/health")?;
        (a.code == 503).then_some(a)
    });
    assert!(a.text().contains("not a member"), "{}", a.text());
    drop(n4);

    // With one follower down, removing the other would leave the leader and a dead
    // voter: no reachable majority, so it is refused before anything is proposed.
    let victim = (1..=3).find(|&i| i != new).expect("a follower");
    let other = (1..=3)
        .find(|&i| i != new && i != victim)
        .expect("the other");
    c.node_mut(victim).kill9();
    // Past an election timeout, the leader no longer counts the dead node as active.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let a = delete(c.node(new), &format!("/cluster/members/{other}"));
    assert_eq!(a.code, 409, "{}", a.text());
    assert_eq!(a.json()["applied"], false);
    assert!(a.text().contains("quorum"), "{}", a.text());
    assert_eq!(c.node(new).put("k", b"v4").expect("put").code, 204);

    // Shrink for real: remove the dead node; two voters remain and serve.
    let a = delete(c.node(new), &format!("/cluster/members/{victim}"));
    assert_eq!(a.code, 200, "{}", a.text());
    assert_eq!(a.json()["voters"].as_array().map(Vec::len), Some(2));
    assert_eq!(c.node(other).put("k", b"v5").expect("put").code, 204);
    assert_eq!(c.node(new).get("/kv/k").expect("get").text(), "v5");
}

// Snapshots every 20 entries, the log compacted right behind the oldest kept one: a few
// hundred writes put every membership change out of every log.
const SNAPSHOT_OFTEN: [&str; 6] = [
    "--snapshot-every",
    "20",
    "--snapshot-log-percent",
    "0",
    "--catch-up-entries",
    "0",
];

/// Starts node 4 with `--join` (no voters, never campaigns) and `extra` flags; its
/// `--peers` names nodes 1-3 and itself. Returns it and its peer address.
fn start_joining_node_4(c: &Cluster, extra: &[&str]) -> (NodeProc, String) {
    let ports = free_ports(2);
    let client4 = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let peer4 = format!("127.0.0.1:{}", ports[1]);
    let peers: Vec<String> = (1..=3)
        .map(|i| format!("{i}=127.0.0.1:{}", c.peer_ports[i - 1]))
        .chain([format!("4={peer4}")])
        .collect();
    let mut flags = vec!["--join"];
    flags.extend(extra);
    let args = node::serve_args(c.dir.path(), 4, &peers.join(","), client4, &flags);
    let n4 = NodeProc::start(4, client4, args, &c.dir.path().join("n4.log"));
    wait_for("node 4 up", || n4.status());
    (n4, peer4)
}

fn u64_of(st: &Value, field: &str) -> u64 {
    st[field].as_u64().unwrap_or(0)
}

// Writes `n` keys through `leader`.
fn write_keys(leader: &NodeProc, prefix: &str, n: u64) {
    for i in 0..n {
        let a = leader.put(&format!("{prefix}{i}"), b"v").expect("put");
        assert_eq!(a.code, 204, "{}", a.text());
    }
}

// Waits until every node of `nodes` has applied at least `index`.
fn wait_applied(nodes: &[&NodeProc], index: u64) {
    wait_for(&format!("every node applies {index}"), || {
        nodes
            .iter()
            .all(|n| {
                n.status()
                    .is_some_and(|s| u64_of(&s, "applied_index") >= index)
            })
            .then_some(())
    });
}

// Makes `target` the leader of `nodes` (asking whoever leads, again if a transfer
// times out), writes through it and waits until every node applied the write.
fn lead_and_write(nodes: &[&NodeProc], target: u64, key: &str) {
    let by_id = |id: u64| nodes.iter().find(|n| n.id == id).expect("a node");
    let deadline = std::time::Instant::now() + node::DEADLINE;
    'transfer: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "node {target} never became the leader"
        );
        let leader = by_id(target).status().map_or(0, |s| u64_of(&s, "leader"));
        if leader != 0 && leader != target {
            let _ = post(by_id(leader), "/cluster/leader", json!({"id": target}));
        }
        // A transfer ends within an election timeout, one way or the other.
        for _ in 0..60 {
            let all = nodes
                .iter()
                .all(|n| n.status().is_some_and(|s| u64_of(&s, "leader") == target));
            if all {
                break 'transfer;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let a = by_id(target).put(key, b"v").expect("put");
    assert_eq!(a.code, 204, "write through node {target}: {}", a.text());
    let commit = u64_of(&by_id(target).status().expect("status"), "commit_index");
    wait_applied(nodes, commit);
}

// Bytes of each node's log so far, to look only at what is written after.
fn log_offsets(nodes: &[&NodeProc]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| std::fs::metadata(&n.log).map_or(0, |m| m.len()))
        .collect()
}

fn logged_since(n: &NodeProc, offset: u64) -> String {
    let text = n.log_text();
    text.get(offset as usize..).unwrap_or("").to_string()
}

#[test]
fn a_member_added_at_runtime_survives_snapshots_and_restarts_of_every_original_node() {
    let mut c = Cluster::start(3, &SNAPSHOT_OFTEN);
    let leader = c.wait_leader(&[1, 2, 3]);

    // Node 4 joins; only it and the API call know its address (the others' --peers
    // name nodes 1-3 only).
    let (n4, peer4) = start_joining_node_4(&c, &SNAPSHOT_OFTEN);
    let a = post(
        c.node(leader),
        "/cluster/members",
        json!({"id": 4, "addr": peer4, "learner": true}),
    );
    assert_eq!(a.code, 200, "{}\n{}", a.text(), c.logs());
    wait_for("node 4 catches up as a learner", || {
        let st = n4.status()?;
        (st["learners"] == json!([4])).then_some(())
    });
    let a = post(
        c.node(leader),
        "/cluster/members",
        json!({"id": 4, "learner": false}),
    );
    assert_eq!(a.code, 200, "{}", a.text());
    let added_at = u64_of(&c.node(leader).status().expect("status"), "commit_index");

    // Past several snapshots, until no node's log holds the changes any more.
    write_keys(c.node(leader), "a", 150);
    let everyone: Vec<&NodeProc> = c.nodes.iter().chain([&n4]).collect();
    wait_for("every log compacted past node 4's addition", || {
        everyone
            .iter()
            .all(|n| {
                n.status()
                    .is_some_and(|s| u64_of(&s, "first_index") > added_at + 1)
            })
            .then_some(())
    });

    // Restart each original node in turn. While it is down the others write on and
    // compact, so it comes back from its own snapshot and then catches up by the
    // leader's.
    for id in 1..=3u64 {
        c.node_mut(id).kill9();
        let up: Vec<&NodeProc> = c.nodes.iter().filter(|n| n.id != id).chain([&n4]).collect();
        let leader = wait_for("a leader among the others", || {
            let l = u64_of(&up[0].status()?, "leader");
            (l != 0 && l != id).then_some(l)
        });
        let leader_node = up.iter().find(|n| n.id == leader).expect("leader");
        write_keys(leader_node, &format!("down{id}-"), 60);
        let commit = u64_of(&leader_node.status().expect("status"), "commit_index");
        c.node_mut(id).restart();
        let everyone: Vec<&NodeProc> = c.nodes.iter().chain([&n4]).collect();
        wait_applied(&everyone, commit);
    }

    // Every pair of nodes talks: leadership goes round all six pairs (each transfer
    // needs both directions of its pair), and every node applies each write.
    let everyone: Vec<&NodeProc> = c.nodes.iter().chain([&n4]).collect();
    let offsets = log_offsets(&everyone);
    let first = wait_for("a leader all four agree on", || {
        let leaders: Vec<u64> = everyone
            .iter()
            .map(|n| n.status().map(|s| u64_of(&s, "leader")))
            .collect::<Option<_>>()?;
        (leaders[0] != 0 && leaders.iter().all(|&l| l == leaders[0])).then_some(leaders[0])
    });
    let mut others = (1..=4u64).filter(|&i| i != first);
    let (x, y, z) = (
        others.next().expect("x"),
        others.next().expect("y"),
        others.next().expect("z"),
    );
    for (step, target) in [x, y, z, first, y, x, z].into_iter().enumerate() {
        lead_and_write(&everyone, target, &format!("tour{step}"));
    }
    for (n, offset) in everyone.iter().zip(offsets) {
        let tail = logged_since(n, offset);
        assert!(
            !tail.contains("unknown sender"),
            "node {} refused a member:\n{tail}",
            n.id
        );
    }
}
