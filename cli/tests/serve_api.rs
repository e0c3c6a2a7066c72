//! `keel serve` through its HTTP API: three processes on 127.0.0.1, writes and
//! linearizable reads through every node, the documented answers to bad input (and
//! the node keeps serving), foreign traffic on the peer port, clean shutdown on
//! SIGTERM and restart from the data directory.

mod node;

use std::io::Write;
use std::net::SocketAddr;

use node::{free_ports, http, parse_answer, raw, wait_for, Cluster, NodeProc};

fn assert_serving(c: &Cluster) {
    for n in &c.nodes {
        let a = n.get("/status").expect("node answers");
        assert_eq!(a.code, 200, "node {} stopped serving\n{}", n.id, c.logs());
    }
}

#[test]
fn writes_and_reads_through_every_node_and_bad_input_is_refused() {
    let mut c = Cluster::start(3, &["--max-value-bytes", "1024"]);
    let leader = c.wait_leader(&[1, 2, 3]);

    // Status carries exactly the documented fields.
    let st = c.node(leader).status().expect("status");
    for f in [
        "id",
        "role",
        "term",
        "leader",
        "commit_index",
        "applied_index",
        "first_index",
        "last_index",
        "snapshot_index",
        "voters",
        "learners",
    ] {
        assert!(st.get(f).is_some(), "status lacks {f}: {st}");
    }
    assert_eq!(st["role"], "leader");
    assert_eq!(st["voters"], serde_json::json!([1, 2, 3]));

    // A write through each node (followers forward to the leader) is visible through
    // every node at once: reads are linearizable.
    for writer in 1..=3u64 {
        let value = format!("v{writer}");
        let a = c.node(writer).put("shared", value.as_bytes()).expect("put");
        assert_eq!(a.code, 204, "put via {writer}: {}", a.text());
        for reader in 1..=3u64 {
            let a = c.node(reader).get("/kv/shared").expect("get");
            assert_eq!(
                (a.code, a.text()),
                (200, value.clone()),
                "read via {reader}"
            );
        }
    }
    // Percent-decoded keys, deletes, absent keys, serializable reads.
    let a = c.node(2).put("a%20key%2Fwith%25", b"x").expect("put");
    assert_eq!(a.code, 204);
    assert_eq!(
        c.node(3).get("/kv/a%20key%2Fwith%25").expect("get").text(),
        "x"
    );
    let a = http(c.node(1).client, "DELETE", "/kv/a%20key%2Fwith%25", b"").expect("delete");
    assert_eq!(a.code, 204);
    assert_eq!(
        c.node(2).get("/kv/a%20key%2Fwith%25").expect("get").code,
        404
    );
    let a = http(c.node(1).client, "DELETE", "/kv/never-there", b"").expect("delete");
    assert_eq!(a.code, 204, "deleting an absent key");
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let a = wait_for("serializable read", || {
        let a = c
            .node(follower)
            .get("/kv/shared?consistency=serializable")?;
        (a.code == 200).then_some(a)
    });
    assert_eq!(a.text(), "v3");

    // Health and metrics.
    for n in &c.nodes {
        wait_for("health", || (n.get("/health")?.code == 200).then_some(()));
    }
    let m = c.node(leader).get("/metrics").expect("metrics");
    assert_eq!(m.code, 200);
    assert!(m.text().contains("keel_"), "{}", m.text());

    // Bad input: each gets its documented answer.
    let n1 = c.node(1).client;
    let big_key = "k".repeat(4097);
    let a = c.node(1).put(&big_key, b"v").expect("answer");
    assert_eq!(a.code, 413, "oversized key");
    assert_eq!(a.json()["applied"], false);
    let a = c.node(1).put(&"k".repeat(4096), b"v").expect("answer");
    assert_eq!(a.code, 204, "a key of exactly 4096 bytes");
    assert_eq!(
        http(n1, "PUT", "/kv/", b"v").expect("answer").code,
        400,
        "empty key"
    );
    assert_eq!(
        http(n1, "PUT", "/kv/bad%zz", b"v").expect("answer").code,
        400
    );
    let a = c.node(1).put("big", &[7u8; 1025]).expect("answer");
    assert_eq!(a.code, 413, "oversized value");
    assert_eq!(a.json()["applied"], false);
    // A huge declared body is refused without being read.
    let out = raw(
        n1,
        b"PUT /kv/huge HTTP/1.1\r\nContent-Length: 100000000000\r\n\r\n",
    )
    .expect("answer");
    assert_eq!(parse_answer(&out).expect("answer").code, 413);
    assert_eq!(c.node(1).get("/nope").expect("answer").code, 404);
    assert_eq!(http(n1, "POST", "/kv/x", b"").expect("answer").code, 405);
    assert_eq!(http(n1, "PUT", "/status", b"").expect("answer").code, 405);
    assert_eq!(
        c.node(1)
            .get("/kv/x?consistency=bogus")
            .expect("answer")
            .code,
        400
    );
    let a = http(n1, "POST", "/cluster/members", b"not json").expect("answer");
    assert_eq!(a.code, 400);
    let a = http(n1, "POST", "/cluster/leader", b"{}").expect("answer");
    assert_eq!(a.code, 400);
    // Malformed HTTP: 400 and the connection closes.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /status HTTP/9.9\r\n\r\n",
        b"GET /status HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ] {
        let out = raw(n1, garbage).expect("answer");
        assert_eq!(parse_answer(&out).expect("answer").code, 400, "{garbage:?}");
    }
    // Headers without end: refused once they pass the limit.
    let mut endless = b"GET /status HTTP/1.1\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 70_000));
    let out = raw(n1, &endless).expect("answer");
    assert_eq!(parse_answer(&out).expect("answer").code, 431);
    // Random bytes (a fixed-seed generator): every answer is a well-formed HTTP
    // response or a closed connection, never a hang or a crash.
    let mut rng = keel_raft::Rng::new(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let len = 1 + (round * 37) % 600;
        let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let mut req = if round % 2 == 0 {
            b"PUT /kv/j HTTP/1.1\r\n".to_vec()
        } else {
            Vec::new()
        };
        req.extend_from_slice(&junk);
        req.extend_from_slice(b"\r\n\r\n");
        if let Ok(out) = raw(n1, &req) {
            if !out.is_empty() {
                assert!(
                    out.starts_with(b"HTTP/1.1 "),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
    // Pipelined requests on one connection are answered in order.
    let out = raw(
        n1,
        b"GET /kv/shared HTTP/1.1\r\n\r\nPUT /kv/p HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /kv/p HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .expect("answers");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 3, "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 204"), "{text}");
    assert!(text.ends_with("\r\n\r\nx"), "{text}");
    // A client that connects and says nothing does not block others.
    let idle = std::net::TcpStream::connect(n1).expect("connect");
    // Garbage on the peer port is dropped by the transport.
    let peer1 = SocketAddr::from(([127, 0, 0, 1], c.peer_ports[0]));
    let _ = raw(peer1, &[0xff; 4096]);
    let _ = raw(peer1, b"KEEL\x01\x00garbage hello");
    assert_serving(&c);
    let a = c.node(1).put("after-bad-input", b"ok").expect("put");
    assert_eq!(a.code, 204);
    drop(idle);

    // A node of another cluster (same ids, our peer addresses) is refused and never
    // disturbs this one.
    let ports = free_ports(2);
    let rogue_client = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let rogue_peers = format!(
        "1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}",
        c.peer_ports[0], c.peer_ports[1], ports[1]
    );
    let rogue_args = node::serve_args(
        &c.dir.path().join("rogue"),
        3,
        &rogue_peers,
        rogue_client,
        &["--cluster-id", "other"],
    );
    let rogue = NodeProc::start(3, rogue_client, rogue_args, &c.dir.path().join("rogue.log"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let st = rogue.status().expect("rogue status");
    assert_eq!(
        st["leader"], 0,
        "the rogue node must never find a leader: {st}"
    );
    let leader_now = c.wait_leader(&[1, 2, 3]);
    let a = c.node(leader_now).put("after-rogue", b"ok").expect("put");
    assert_eq!(a.code, 204);
    drop(rogue);

    // SIGTERM: clean exit 0; restart from the data directory keeps everything.
    let applied_before = c.node(2).status().expect("status")["applied_index"]
        .as_u64()
        .expect("applied");
    assert_eq!(
        c.node_mut(2).terminate(),
        Some(0),
        "{}",
        c.node(2).log_text()
    );
    c.node_mut(2).restart();
    let v = wait_for("restarted node serves linearizable reads", || {
        let a = c.node(2).get("/kv/after-rogue")?;
        (a.code == 200).then_some(a.text())
    });
    assert_eq!(v, "ok");
    let st = c.node(2).status().expect("status");
    assert!(st["applied_index"].as_u64().expect("applied") >= applied_before);
}

#[test]
fn a_single_node_serves_without_peers_and_explains_bad_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1)[0];
    let client = SocketAddr::from(([127, 0, 0, 1], port));
    let args: Vec<String> = [
        "serve",
        "--id",
        "1",
        "--data-dir",
        &dir.path().join("d").display().to_string(),
        "--listen-client",
        &client.to_string(),
        "--max-connections",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut n = NodeProc::start(1, client, args, &dir.path().join("log"));
    wait_for("single node leads", || {
        (n.status()?["role"] == "leader").then_some(())
    });
    assert_eq!(n.put("k", b"v").expect("put").code, 204);
    assert_eq!(n.get("/kv/k").expect("get").text(), "v");

    // A client that stalls in the middle of its body holds only its own connection.
    let mut stalled = std::net::TcpStream::connect(client).expect("connect");
    stalled
        .write_all(b"PUT /kv/slow HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        .expect("write");
    assert_eq!(n.put("k2", b"v2").expect("put").code, 204);
    // Connections are bounded: with every slot busy (each in the middle of a request;
    // idle ones would give their slot up), one more is told 503 at once.
    // The server counts a new connection as idle until its thread has seen the first
    // bytes, so a client arriving in that window may take one of these slots (closing
    // it): each answer that is not 503 is followed by one more such connection, until
    // every slot is busy.
    let partial = || {
        let mut s = std::net::TcpStream::connect(client).expect("connect");
        s.write_all(b"GET /status HTTP/1.1\r\n").expect("write");
        s
    };
    let mut idle: Vec<std::net::TcpStream> = (0..3).map(|_| partial()).collect();
    let a = wait_for("the connection limit", || {
        let a = n.get("/status")?;
        if a.code != 503 {
            idle.push(partial());
        }
        (a.code == 503).then_some(a)
    });
    assert!(a.text().contains("too many connections"), "{}", a.text());
    drop(idle);
    drop(stalled);
    wait_for("slots freed", || {
        (n.get("/status")?.code == 200).then_some(())
    });
    assert_eq!(
        n.get("/kv/slow").expect("get").code,
        404,
        "a partial body is never applied"
    );
    let a = http(client, "DELETE", "/cluster/members/1", b"").expect("answer");
    assert_eq!(a.code, 409, "removing the last voter: {}", a.text());
    assert_eq!(n.terminate(), Some(0));

    // Bad flags: a sentence and exit 2, no panic.
    let d = dir.path().join("e").display().to_string();
    let mut bad_flags = vec![
        (vec!["--peers", "2=127.0.0.1:1"], "must list this node"),
        (vec!["--peers", "1=nonsense"], "HOST:PORT"),
        (vec!["--log", "nonsense"], "use keel_wal or rocksdb"),
        (vec!["--state", "nonsense"], "use memory or rocksdb"),
        (vec!["--join"], "--join"),
    ];
    // Without the feature, asking for RocksDB is a usage error; with it, a valid
    // choice (tested by serving below).
    if cfg!(not(feature = "rocksdb")) {
        bad_flags.push((vec!["--log", "rocksdb"], "rocksdb"));
        bad_flags.push((vec!["--state", "rocksdb"], "state"));
    }
    for (bad, expect) in bad_flags {
        let mut args = vec![
            "serve",
            "--id",
            "1",
            "--data-dir",
            &d,
            "--listen-client",
            "127.0.0.1:0",
        ];
        args.extend(bad.iter().copied());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(&args)
            .output()
            .expect("run keel");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

// With the feature, RocksDB as the log and the state machine: a node serves, stops on
// SIGTERM and keeps its data across the restart.
#[cfg(feature = "rocksdb")]
#[test]
fn a_node_on_rocksdb_serves_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1)[0];
    let client = SocketAddr::from(([127, 0, 0, 1], port));
    let data = dir.path().join("d").display().to_string();
    let args: Vec<String> = [
        "serve",
        "--id",
        "1",
        "--data-dir",
        &data,
        "--listen-client",
        &client.to_string(),
        "--log",
        "rocksdb",
        "--state",
        "rocksdb",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut n = NodeProc::start(1, client, args, &dir.path().join("log"));
    wait_for("single node leads", || {
        (n.status()?["role"] == "leader").then_some(())
    });
    assert_eq!(n.put("k", b"v").expect("put").code, 204);
    assert_eq!(n.terminate(), Some(0));
    assert!(
        dir.path().join("d/rocksdb/sm").is_dir(),
        "state machine dir"
    );
    n.restart();
    wait_for("restarted node leads", || {
        (n.status()?["role"] == "leader").then_some(())
    });
    assert_eq!(n.get("/kv/k").expect("get").text(), "v");
    assert_eq!(n.terminate(), Some(0));
}
