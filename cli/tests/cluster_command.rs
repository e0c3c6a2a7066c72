//! `keel cluster`: starts its nodes, prints their URLs and a ready line, survives a
//! killed node (and says how to restart it), and stops everything on Ctrl-C.

mod node;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use node::{http, wait_for, DEADLINE};

/// A base port with base+1..=base+3 and base+101..=base+103 free.
fn free_base() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(attempt.wrapping_mul(211)) % 30_000);
        let ports: Vec<u16> = (1..=3).chain(101..=103).map(|o| base + o).collect();
        let held: Vec<_> = ports
            .iter()
            .filter_map(|&p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == ports.len() {
            return base;
        }
    }
    panic!("no free port range");
}

struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn keel_cluster_serves_survives_a_kill_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "cluster",
            "--nodes",
            "3",
            "--dir",
            &dir.path().display().to_string(),
            "--base-port",
            &base.to_string(),
            "--fsync",
            "false",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keel cluster");
    let stdout = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let next_line = |what: &str, seen: &mut Vec<String>| -> String {
        loop {
            let line = lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no {what} line; got {seen:?}"));
            seen.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    };
    for i in 1..=3 {
        let url = format!("http://127.0.0.1:{}", base + i);
        let line = next_line(&url, &mut seen);
        assert!(line.contains(&format!("node {i}")), "{line}");
    }
    let ready = next_line("ready", &mut seen);
    let leader: u64 = ready
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("ready line names the leader: {ready}"));

    let client = |i: u64| SocketAddr::from(([127, 0, 0, 1], base + i as u16));
    let a = http(client(1), "PUT", "/kv/greeting", b"hello").expect("put");
    assert_eq!(a.code, 204);
    assert_eq!(
        http(client(2), "GET", "/kv/greeting", b"")
            .expect("get")
            .text(),
        "hello"
    );

    // Kill the leader's process the way a user would (kill -9 of its pid).
    let pid = wait_for("the leader's pid", || {
        let out = Command::new("pgrep")
            .args([
                "-f",
                &format!("serve --id {leader} --data-dir {}", dir.path().display()),
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i32>()
            .ok()
    });
    // SAFETY: kill(2) of a process our cluster child started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let exited = next_line(&format!("node {leader} exited"), &mut seen);
    assert!(exited.contains("exited"), "{exited}");
    let restart = next_line("serve --id", &mut seen);
    assert!(restart.contains(&format!("--id {leader}")), "{restart}");
    let survivor = (1..=3).find(|&i| i != leader).expect("survivor");
    let a = wait_for("a write after the kill", || {
        let a = http(client(survivor), "PUT", "/kv/greeting", b"again").ok()?;
        (a.code == 204).then_some(a)
    });
    assert_eq!(a.code, 204);

    // Ctrl-C: every node stops, the command exits 0.
    let mut guard = guard;
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(guard.0.id() as i32, libc::SIGINT) }, 0);
    let status = wait_for("keel cluster to exit", || guard.0.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(0));
    for i in 1..=3u64 {
        assert!(
            http(client(i), "GET", "/status", b"").is_err(),
            "node {i} still serves after Ctrl-C"
        );
    }
}
