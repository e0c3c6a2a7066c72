//! With the `failpoints` feature: a `keel serve` node whose raft thread panics (set up
//! through the FAILPOINTS environment variable) stops as a whole: the write that hit
//! the fault is answered with the cause, `/health` answers 503 naming it while the
//! process is still up, and the process logs the cause and exits with code 3 within a
//! second, for a supervisor to restart it.

mod node;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node::{http, wait_for};

/// The exit code of a node that stopped on a fatal error.
const FATAL_EXIT: i32 = 3;

// The promise is one second; a loaded CI machine gets a little more before the test
// calls it broken.
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// Kills the process on drop, so a failing test leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_fatal_error_makes_keel_serve_answer_503_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--id", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client", "127.0.0.1:0", "--log-level", "info"])
        // Only client writes reach this point: the node starts healthy.
        .env("FAILPOINTS", "raftBeforePropose=panic(injected fault)")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn keel serve");
    let mut guard = Guard(child);
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let client: SocketAddr = wait_for("the client address in the log", || {
        let text = log_text();
        let rest = text.split("serving clients on http://").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    });
    wait_for("a healthy node", || {
        let a = http(client, "GET", "/health", b"").ok()?;
        (a.code == 200).then_some(())
    });

    // The write is proposed and the raft thread dies with it: its outcome is unknown,
    // and the answer says why (if the process is still up to give it).
    let answered = http(client, "PUT", "/kv/doomed", b"x");
    let failed_at = Instant::now();
    if let Ok(a) = &answered {
        assert_eq!(a.code, 504, "{}", a.text());
        let v = a.json();
        assert_eq!(v["applied"], "unknown", "{v}");
        assert_eq!(v["fatal"]["kind"], "panic", "{v}");
        assert_eq!(v["fatal"]["thread"], "keel-raft-1", "{v}");
    }
    // While it is still up, the node says it is unavailable, and why.
    if let Ok(a) = http(client, "GET", "/health", b"") {
        assert_eq!(a.code, 503, "{}", a.text());
        let v = a.json();
        assert_eq!(v["health"], "unavailable", "{v}");
        assert_eq!(v["fatal"]["kind"], "panic", "{v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("injected fault"),
            "{v}"
        );
    }
    if let Ok(a) = http(client, "GET", "/status", b"") {
        assert_eq!(a.code, 200, "{}", a.text());
        let v = a.json();
        assert_eq!(v["fatal"]["thread"], "keel-raft-1", "{v}");
    }
    let code = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status.code();
        }
        assert!(
            failed_at.elapsed() < EXIT_WITHIN,
            "keel serve still runs {:?} after its node failed:\n{}",
            failed_at.elapsed(),
            log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = log_text();
    assert_eq!(code, Some(FATAL_EXIT), "{text}");
    assert!(
        text.contains("fatal error")
            && text.contains("keel-raft-1")
            && text.contains("injected fault"),
        "the log names the cause:\n{text}"
    );
}
