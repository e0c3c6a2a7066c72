//! `keel serve` refuses at start what its limits cannot honour: a `--max-value-bytes`
//! whose writes could not be replicated in one peer message frame, and a zero
//! `--max-snapshot-bytes`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `keel serve` with `extra`; returns its exit code and stderr, or fails the test
/// (stopping the process) if it is still running after 10 s.
fn serve_start(extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let mut args = vec![
        "serve",
        "--id",
        "1",
        "--data-dir",
        &data_dir,
        "--listen-client",
        "127.0.0.1:0",
        "--peers",
        "1=127.0.0.1:0,2=127.0.0.1:9",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keel");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel serve {extra:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_value_limit_beyond_one_peer_frame_is_refused_at_start() {
    // 16 MiB frames: a value of 16 MiB cannot travel with its key and encoding.
    let (code, stderr) = serve_start(&["--max-value-bytes", "16777216"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--max-value-bytes 16777216") && stderr.contains("frame"),
        "{stderr}"
    );
    // The message names the largest value that works, and that one is accepted.
    let most = stderr
        .split("use at most ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no largest value in: {stderr}"));
    assert!((16_000_000..16_777_216).contains(&most), "{most}");
    let (code, stderr) = serve_start(&["--max-value-bytes", &(most + 1).to_string()]);
    assert_eq!(code, 2, "{stderr}");
    let (code, stderr) = serve_start(&["--max-value-bytes", "18446744073709551615"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_zero_snapshot_limit_is_refused_at_start() {
    let (code, stderr) = serve_start(&["--max-snapshot-bytes", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--max-snapshot-bytes must be at least 1"),
        "{stderr}"
    );
}
