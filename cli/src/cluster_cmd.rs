//! `keel cluster`: a local cluster in one command. Starts N `keel serve` child
//! processes of this same executable on 127.0.0.1, waits until a leader is elected and
//! a test write went through, prints each node's client URL and a ready line, and on
//! Ctrl-C (or SIGTERM) stops every child cleanly.
//!
//! Ports: node `i` (1-based) serves clients on `base_port + i` and peers on
//! `base_port + 100 + i`. Data and logs: `DIR/node-i/` and `DIR/node-i.log`. The
//! children are separate processes so a node can be killed (`kill -9`) and restarted
//! with the command this prints, as a real deployment would.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::{CliError, Status};

/// Arguments of `keel cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Number of nodes (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Where the nodes keep their data and logs; reused if it exists (the nodes then
    /// recover from it), created otherwise.
    #[arg(long, value_name = "DIR", default_value = "keel-cluster-data")]
    pub dir: PathBuf,
    /// Node i serves clients on BASE+i and peers on BASE+100+i.
    #[arg(long, value_name = "BASE", default_value_t = 7000)]
    pub base_port: u16,
    /// fsync the log before acknowledging (`false` only for throwaway data).
    #[arg(long, value_name = "true|false", default_value = "true", action = clap::ArgAction::Set)]
    pub fsync: bool,
}

fn fail(msg: impl Into<String>) -> CliError {
    CliError::Node(msg.into())
}

// How long the cluster may take to elect a leader and commit the test write.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

struct Node {
    id: u16,
    client: SocketAddr,
    command: Vec<String>,
    child: Option<Child>,
}

/// The children, stopped on drop (also when `run` returns early with an error).
struct Children(Vec<Node>);

impl Drop for Children {
    fn drop(&mut self) {
        for n in &mut self.0 {
            if let Some(c) = &n.child {
                // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for n in &mut self.0 {
            let Some(c) = n.child.as_mut() else { continue };
            // Bounded by the deadline.
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("node {} did not stop in time; killing it", n.id);
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(POLL),
                }
            }
            n.child = None;
        }
    }
}

/// Runs `keel cluster` until Ctrl-C.
pub fn run(args: ClusterArgs) -> Result<Status, CliError> {
    if !(1..=9).contains(&args.nodes) {
        return Err(fail("--nodes must be between 1 and 9"));
    }
    if u32::from(args.base_port) + 100 + u32::from(args.nodes) > u32::from(u16::MAX) {
        return Err(fail("--base-port is too high for that many nodes"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| fail(format!("cannot install a signal handler: {e}")))?;
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", args.dir.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("cannot find the keel executable: {e}")))?;
    let peers: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}=127.0.0.1:{}", args.base_port + 100 + i))
        .collect();
    let peers = peers.join(",");
    let mut children = Children(Vec::new());
    for i in 1..=args.nodes {
        let client: SocketAddr = SocketAddr::from(([127, 0, 0, 1], args.base_port + i));
        let data = args.dir.join(format!("node-{i}"));
        let command = vec![
            "serve".to_string(),
            "--id".into(),
            i.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--peers".into(),
            peers.clone(),
            "--listen-client".into(),
            client.to_string(),
            "--fsync".into(),
            args.fsync.to_string(),
        ];
        let log_path = args.dir.join(format!("node-{i}.log"));
        let child = spawn(&exe, &command, &log_path)?;
        children.0.push(Node {
            id: i,
            client,
            command,
            child: Some(child),
        });
    }
    println!(
        "keel cluster: {} nodes, data and logs in {}",
        args.nodes,
        args.dir.display()
    );
    for n in &children.0 {
        println!(
            "  node {}: http://{}  (peer port {}, log {})",
            n.id,
            n.client,
            args.base_port + 100 + n.id,
            args.dir.join(format!("node-{}.log", n.id)).display()
        );
    }
    let leader = wait_ready(&mut children, &args.dir, &stop)?;
    println!(
        "ready: node {leader} leads; try curl -X PUT --data-binary hello http://{}/kv/greeting",
        children.0[0].client
    );
    println!("Ctrl-C stops the cluster");
    let _ = std::io::stdout().flush();
    // Bounded by the signal: each turn sleeps one poll interval.
    while !stop.load(Ordering::Acquire) {
        for n in &mut children.0 {
            let Some(c) = n.child.as_mut() else { continue };
            if let Ok(Some(status)) = c.try_wait() {
                n.child = None;
                println!(
                    "node {} exited ({status}); restart it with:\n  {} {}",
                    n.id,
                    exe.display(),
                    shell_words(&n.command)
                );
                let _ = std::io::stdout().flush();
            }
        }
        std::thread::sleep(POLL);
    }
    println!("stopping the cluster");
    drop(children);
    println!("stopped");
    Ok(Status::Ok)
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn(exe: &Path, command: &[String], log_path: &Path) -> Result<Child, CliError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| fail(format!("cannot open {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.args(command)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // If `keel cluster` itself dies without cleaning up (kill -9), its nodes get
    // SIGTERM instead of running on unattended.
    // SAFETY: prctl(2) is async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))
}

// Waits until some node reports a leader and a test write through node 1 commits.
fn wait_ready(children: &mut Children, dir: &Path, stop: &AtomicBool) -> Result<u64, CliError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    // Bounded by the deadline.
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(fail("interrupted before the cluster was ready"));
        }
        for n in &mut children.0 {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    n.child = None;
                    return Err(fail(format!(
                        "node {} exited early ({status}); see {}",
                        n.id,
                        dir.join(format!("node-{}.log", n.id)).display()
                    )));
                }
            }
        }
        let leader = children.0.iter().find_map(|n| {
            let (code, body) = request(n.client, "GET", "/status", b"").ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            (code == 200)
                .then(|| v["leader"].as_u64())
                .flatten()
                .filter(|&l| l != 0)
        });
        if let Some(leader) = leader {
            let probe = "/kv/keel-cluster-ready-check";
            let client = children.0[0].client;
            if request(client, "PUT", probe, b"ok").is_ok_and(|(c, _)| c == 204)
                && request(client, "DELETE", probe, b"").is_ok_and(|(c, _)| c == 204)
            {
                return Ok(leader);
            }
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "no leader was elected within {READY_TIMEOUT:?}; see the node logs in {}",
                dir.display()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// One HTTP/1.1 request with `Connection: close`; the status code and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.take(16 << 20).read_to_end(&mut out)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status_line = std::str::from_utf8(&out[..end]).map_err(|_| bad())?;
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, out[end + 4..].to_vec()))
}
