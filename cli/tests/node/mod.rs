//! Helpers for the tests that run `keel serve` processes on 127.0.0.1: free ports, a
//! process guard that kills its node on drop, a tiny HTTP client, polling with
//! deadlines, and a TCP proxy that can cut and heal a link.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_engine::testing::wait_until;

/// Generous: the machine is small and shared.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `n` distinct free ports (held open together so they differ, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Polls `f` until it returns `Some` or `DEADLINE` passes (the engine harness's
/// polling, panicking on a timeout).
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_until(DEADLINE, f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes and reads the answer until the server closes (or 15 s pass).
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    s.take(8 << 20).read_to_end(&mut out)?;
    Ok(out)
}

/// One request with `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<Answer> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let out = raw(addr, &req)?;
    parse_answer(&out)
}

pub fn parse_answer(out: &[u8]) -> std::io::Result<Answer> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed answer");
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&out[..end]).map_err(|_| bad())?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok(Answer {
        code,
        body: out[end + 4..].to_vec(),
    })
}

/// One `keel serve` process; killed (SIGKILL) on drop.
pub struct NodeProc {
    pub id: u64,
    pub client: SocketAddr,
    pub args: Vec<String>,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn start(id: u64, client: SocketAddr, args: Vec<String>, log: &Path) -> NodeProc {
        let mut n = NodeProc {
            id,
            client,
            args,
            log: log.to_path_buf(),
            child: None,
        };
        n.restart();
        n
    }

    /// Starts the process again with the same arguments (after a kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node {} is running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn keel serve");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut c = self.child.take().expect("running");
        match wait_until(DEADLINE, || c.try_wait().ok().flatten()) {
            Some(st) => st.code(),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node {} did not stop on SIGTERM", self.id);
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn get(&self, path: &str) -> Option<Answer> {
        http(self.client, "GET", path, b"").ok()
    }

    pub fn put(&self, key: &str, value: &[u8]) -> Option<Answer> {
        http(self.client, "PUT", &format!("/kv/{key}"), value).ok()
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let a = self.get("/status")?;
        (a.code == 200).then(|| a.json())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process must be continued to die promptly on some kernels.
            // SAFETY: as in `signal`.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
        self.kill9();
    }
}

/// A cluster of `keel serve` processes in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub peer_ports: Vec<u16>,
}

/// Arguments of node `id` (1-based) of a cluster whose peers are `peers`.
pub fn serve_args(
    dir: &Path,
    id: u64,
    peers: &str,
    client: SocketAddr,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "serve",
        "--id",
        &id.to_string(),
        "--data-dir",
        &dir.join(format!("n{id}")).display().to_string(),
        "--peers",
        peers,
        "--listen-client",
        &client.to_string(),
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Cluster {
    /// `n` nodes that reach each other directly.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(2 * n as usize);
        let peer_ports = ports[n as usize..].to_vec();
        let peers: Vec<String> = (1..=n)
            .map(|i| format!("{i}=127.0.0.1:{}", peer_ports[i as usize - 1]))
            .collect();
        let peers = peers.join(",");
        let nodes = (1..=n)
            .map(|i| {
                let client = SocketAddr::from(([127, 0, 0, 1], ports[i as usize - 1]));
                let args = serve_args(dir.path(), i, &peers, client, extra);
                NodeProc::start(i, client, args, &dir.path().join(format!("n{i}.log")))
            })
            .collect();
        Cluster {
            dir,
            nodes,
            peer_ports,
        }
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[id as usize - 1]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        &mut self.nodes[id as usize - 1]
    }

    /// The leader that the running nodes among `among` agree on.
    pub fn wait_leader(&self, among: &[u64]) -> u64 {
        wait_for("a leader", || {
            let leaders: Vec<u64> = among
                .iter()
                .map(|&i| {
                    self.node(i)
                        .status()
                        .map(|s| s["leader"].as_u64().unwrap_or(0))
                })
                .collect::<Option<Vec<u64>>>()?;
            let l = leaders[0];
            (l != 0 && leaders.iter().all(|&x| x == l) && among.contains(&l)).then_some(l)
        })
    }

    /// Dumps every node's log (for a failing test).
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.log_text()))
            .collect()
    }
}

/// A TCP proxy from a local port (`port`, chosen by the system) to `target`; `cut`
/// drops every connection and refuses new ones until `heal`.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        // Bound to port 0 and kept: a port picked free and bound again later can be
        // taken in between (outgoing connections draw from the same range).
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c2, s2, k2) = (Arc::clone(&cut), Arc::clone(&stop), Arc::clone(&conns));
        std::thread::spawn(move || {
            while !s2.load(Ordering::Acquire) {
                let inbound = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        // Nothing to accept yet (non-blocking, to see `stop`).
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if c2.load(Ordering::Acquire) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                else {
                    continue;
                };
                let mut list = k2.lock().unwrap();
                for s in [&inbound, &outbound] {
                    if let Ok(c) = s.try_clone() {
                        list.push(c);
                    }
                }
                drop(list);
                pump(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pump(outbound, inbound);
            }
        });
        Proxy {
            port,
            cut,
            stop,
            conns,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
