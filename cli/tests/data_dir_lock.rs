//! One process per data directory: a second `keel serve` on a live node's directory,
//! or `keel wal repair` on it, refuses with exit 2 and names the directory; the
//! read-only tools still work beside the node.

mod common;
mod node;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::keel_at;
use node::{free_ports, wait_for, NodeProc};

/// A one-member cluster (so the peer transport runs too: a second process must be
/// refused for the directory, not fail on the peer port the first holds).
fn serve_args(data_dir: &str, client: SocketAddr, peer_port: u16) -> Vec<String> {
    [
        "serve",
        "--id",
        "1",
        "--data-dir",
        data_dir,
        "--peers",
        &format!("1=127.0.0.1:{peer_port}"),
        "--listen-client",
        &client.to_string(),
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `keel args`; its exit code (`None`: still running at the deadline, then
/// killed) and output.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel");
    let deadline = Instant::now() + node::DEADLINE;
    let code = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status.code(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, text)
}

#[test]
fn a_live_data_directory_is_refused_to_a_second_writer_and_open_to_readers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("n1");
    let data_s = data.display().to_string();
    let ports = free_ports(3);
    let client = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let mut node = NodeProc::start(
        1,
        client,
        serve_args(&data_s, client, ports[2]),
        &tmp.path().join("n1.log"),
    );
    wait_for("the node to take writes", || {
        node.put("k", b"v").filter(|a| a.code == 204)
    });

    // A second node on the same directory (same peer port, another client port)
    // refuses to start.
    let other = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let (code, out) = run_to_exit(&serve_args(&data_s, other, ports[2]));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("in use by another process") && out.contains(&data_s),
        "{out}"
    );
    assert!(node.is_running(), "the refused start disturbed the node");

    // Repair refuses, whether given the data directory or its wal/.
    for target in [data.clone(), data.join("wal")] {
        let run = keel_at(&["wal", "repair"], &target);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(
            run.stderr.contains("in use by another process") && run.stderr.contains(&data_s),
            "{}",
            run.stderr
        );
    }

    // The read-only tools work beside it.
    for args in [
        &["wal", "verify"][..],
        &["wal", "dump"],
        &["wal", "stat"],
        &["snapshot", "ls"],
        &["snapshot", "verify"],
    ] {
        let run = keel_at(args, &data);
        assert_eq!(run.code, 0, "keel {args:?}: {}", run.all());
    }
    assert_eq!(node.get("/kv/k").map(|a| a.code), Some(200));

    // Once the node stops, the directory is free again.
    assert_eq!(node.terminate(), Some(0), "{}", node.log_text());
    let run = keel_at(&["wal", "repair"], &data);
    assert_eq!(run.code, 0, "{}", run.all());
    node.restart();
    wait_for("the restarted node", || {
        node.get("/kv/k").filter(|a| a.code == 200)
    });
}
