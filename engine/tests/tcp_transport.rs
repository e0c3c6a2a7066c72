//! The TCP peer transport on loopback: delivery both ways, batching and order,
//! reconnection, refused handshakes, hostile bytes, silent clients, full queues,
//! snapshot streams beside normal traffic, and 3-node `Db` clusters over TCP (the
//! harness's `Transport::Tcp`).
//!
//! Frames are hand-encoded here from the wire format the module documents, so these
//! tests also pin that format.

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{key, value};
use crossbeam_channel::{bounded, Receiver, Sender};
use keel_engine::testing::{
    loopback_tcp, start_tcp, wait_until, Cluster, CrashMode, Options, Storage,
};
use keel_engine::transport::{
    ChunkSource, MessageSink, TcpConfig, TcpTransport, Transport, TransportError,
};
use keel_engine::Config;
use keel_raft::{codec, Message, MessageType, Snapshot, SnapshotMetadata};
use parking_lot::Mutex;

// ---------------------------------------------------------------------------------
// A logger that keeps the last lines, so tests can check what was logged.

struct Capture(Mutex<VecDeque<String>>);

const KEPT_LINES: usize = 20_000;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let mut lines = self.0.lock();
            if lines.len() >= KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(VecDeque::new()))));
        // Another logger cannot be installed in this binary; ignore the impossible error.
        let _ = log::set_logger(c);
        log::set_max_level(log::LevelFilter::Info);
        c
    })
}

/// Waits until a line of `level` containing every one of `parts` was logged.
fn logged(level: log::Level, parts: &[&str]) -> bool {
    let prefix = level.to_string();
    wait_until(Duration::from_secs(5), || {
        capture()
            .0
            .lock()
            .iter()
            .any(|l| l.starts_with(&prefix) && parts.iter().all(|p| l.contains(p)))
            .then_some(())
    })
    .is_some()
}

/// Waits until a warning containing every one of `parts` was logged.
fn warned(parts: &[&str]) -> bool {
    logged(log::Level::Warn, parts)
}

// ---------------------------------------------------------------------------------
// A sink that records what arrives, and can stall or refuse on request.

#[derive(Clone)]
enum SnapMode {
    Accept,
    // Refuse with this text after reading this many frames.
    FailAfter(usize, String),
    // After this many frames, say so on the first channel and wait for the second.
    PauseAfter(usize, Sender<()>, Receiver<()>),
}

struct Sink {
    messages: Mutex<Vec<Message>>,
    stall: AtomicBool,
    snap_mode: Mutex<SnapMode>,
    snapshots: Mutex<Vec<(Message, Vec<Vec<u8>>)>>,
}

impl Sink {
    fn new() -> Arc<Sink> {
        Arc::new(Sink {
            messages: Mutex::new(Vec::new()),
            stall: AtomicBool::new(false),
            snap_mode: Mutex::new(SnapMode::Accept),
            snapshots: Mutex::new(Vec::new()),
        })
    }

    fn count(&self) -> usize {
        self.messages.lock().len()
    }

    /// Waits until a message with `index` from `from` arrived.
    fn wait_for(&self, from: u64, index: u64) -> bool {
        wait_until(Duration::from_secs(5), || {
            self.messages
                .lock()
                .iter()
                .any(|m| m.from == from && m.index == index)
                .then_some(())
        })
        .is_some()
    }
}

impl MessageSink for Sink {
    fn deliver(&self, bytes: Vec<u8>) {
        // A stalled node: the connection's reader stops reading (bounded, in case a
        // test fails before releasing it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stall.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let m: Message = codec::decode(&bytes).expect("the transport delivers what was sent");
        self.messages.lock().push(m);
    }

    fn deliver_snapshot(
        &self,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError> {
        let m: Message = codec::decode(&message).expect("snapshot message");
        let mode = self.snap_mode.lock().clone();
        let mut frames = Vec::new();
        while let Some(f) = chunks.next_frame()? {
            frames.push(f);
            match &mode {
                SnapMode::FailAfter(n, why) if frames.len() == *n => {
                    return Err(TransportError::Snapshot(why.clone()))
                }
                SnapMode::PauseAfter(n, progress, gate) if frames.len() == *n => {
                    progress.send(()).expect("test waits");
                    gate.recv_timeout(Duration::from_secs(10))
                        .expect("test opens the gate");
                }
                _ => {}
            }
            assert!(frames.len() < 100_000, "stream without end");
        }
        self.snapshots.lock().push((m, frames));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Transports on loopback.

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn config(id: u64) -> TcpConfig {
    let mut c = loopback_tcp(id);
    c.cluster_id = "test".into();
    c
}

/// Starts a transport, retrying a port given back moments ago (`start_tcp`).
fn start_transport(c: TcpConfig) -> Arc<TcpTransport> {
    capture();
    let addr = c.listen_addr;
    start_tcp(c).unwrap_or_else(|e| panic!("start transport on {addr}: {e}"))
}

fn start(c: TcpConfig) -> (Arc<TcpTransport>, Arc<Sink>) {
    let t = start_transport(c);
    let sink = Sink::new();
    t.register(t.id(), sink.clone());
    (t, sink)
}

fn link(a: &TcpTransport, b: &TcpTransport) {
    a.add_peer(b.id(), b.local_addr().to_string()).unwrap();
    b.add_peer(a.id(), a.local_addr().to_string()).unwrap();
}

fn wait_connected(a: &TcpTransport, peer: u64) {
    wait_until(Duration::from_secs(5), || {
        a.is_connected(peer).then_some(())
    })
    .unwrap_or_else(|| panic!("node {} never connected to {peer}", a.id()));
}

fn pair() -> (Arc<TcpTransport>, Arc<Sink>, Arc<TcpTransport>, Arc<Sink>) {
    pair_with(config(1), config(2))
}

fn pair_with(
    a: TcpConfig,
    b: TcpConfig,
) -> (Arc<TcpTransport>, Arc<Sink>, Arc<TcpTransport>, Arc<Sink>) {
    let (a, sa) = start(a);
    let (b, sb) = start(b);
    link(&a, &b);
    wait_connected(&a, b.id());
    wait_connected(&b, a.id());
    (a, sa, b, sb)
}

fn msg(from: u64, to: u64, index: u64) -> Vec<u8> {
    codec::encode(&Message {
        msg_type: MessageType::Heartbeat,
        from,
        to,
        index,
        term: 1,
        ..Message::default()
    })
}

fn big_msg(from: u64, to: u64, index: u64, size: usize) -> Vec<u8> {
    codec::encode(&Message {
        msg_type: MessageType::Append,
        from,
        to,
        index,
        term: 1,
        context: vec![7u8; size],
        ..Message::default()
    })
}

/// Sends until the message arrives: right after a (re)connection the first sends may
/// race the link coming up.
fn send_until_delivered(a: &TcpTransport, to: u64, sink: &Sink, index: u64) {
    let ok = wait_until(Duration::from_secs(5), || {
        let _ = a.send(a.id(), to, msg(a.id(), to, index));
        sink.messages
            .lock()
            .iter()
            .any(|m| m.from == a.id() && m.index == index)
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "message {index} from {} never arrived",
        a.id()
    );
}

// ---------------------------------------------------------------------------------
// Hand-made frames, per the documented wire format.

fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.push(ty);
    let mut h = crc32fast::Hasher::new();
    h.update(&f[..5]);
    h.update(payload);
    f.extend_from_slice(&h.finalize().to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn hello(from: u64, to: u64, cluster: &str) -> Vec<u8> {
    let mut p = b"KEEL".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.push(1);
    p.extend_from_slice(&from.to_le_bytes());
    p.extend_from_slice(&to.to_le_bytes());
    p.push(cluster.len() as u8);
    p.extend_from_slice(cluster.as_bytes());
    frame(1, &p)
}

fn raw_connect(to: &TcpTransport) -> TcpStream {
    let s = TcpStream::connect(to.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Connects as node `from` and completes the handshake; panics if refused.
fn raw_handshake(to: &TcpTransport, from: u64) -> TcpStream {
    let mut s = raw_connect(to);
    s.write_all(&hello(from, to.id(), "test")).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).expect("ack header");
    assert_eq!(head[4], 2, "an ack");
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut ack = vec![0u8; len];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(
        ack[0],
        0,
        "accepted: {}",
        String::from_utf8_lossy(&ack[11..])
    );
    s
}

/// Whether the far end closed `s` (end of stream or reset) rather than leaving it
/// open; reads and discards anything sent first.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

// ---------------------------------------------------------------------------------

#[test]
fn messages_flow_both_ways() {
    let (a, sa, b, sb) = pair();
    for i in 1..=100 {
        a.send(1, 2, msg(1, 2, i)).unwrap();
        b.send(2, 1, msg(2, 1, i)).unwrap();
    }
    assert!(sb.wait_for(1, 100));
    assert!(sa.wait_for(2, 100));
    assert!(sb.messages.lock().iter().all(|m| m.from == 1 && m.to == 2));
    assert!(sa.messages.lock().iter().all(|m| m.from == 2 && m.to == 1));
    // Unknown destinations and foreign or malformed messages are refused locally.
    assert_eq!(
        a.send(1, 9, msg(1, 9, 1)),
        Err(TransportError::Unreachable(9))
    );
    assert!(a.send(1, 2, msg(3, 2, 1)).is_err());
    assert!(a.send(1, 2, b"not a message".to_vec()).is_err());
    assert_eq!(a.stats().messages_queued, 100);
    assert_eq!(b.stats().messages_delivered, 100);
}

#[test]
fn many_sends_arrive_in_order_in_fewer_writes() {
    let mut ca = config(1);
    ca.queue_len = 50_000;
    let (a, _sa, _b, sb) = pair_with(ca, config(2));
    let n = 20_000u64;
    for i in 1..=n {
        a.send(1, 2, msg(1, 2, i)).unwrap();
    }
    let got = wait_until(Duration::from_secs(8), || {
        (sb.count() >= n as usize).then_some(())
    });
    assert!(got.is_some(), "only {} of {n} arrived", sb.count());
    let indexes: Vec<u64> = sb.messages.lock().iter().map(|m| m.index).collect();
    assert_eq!(indexes, (1..=n).collect::<Vec<_>>(), "in order, none lost");
    let st = a.stats();
    assert_eq!(st.messages_dropped, 0);
    assert!(
        st.batches_written < n,
        "queued messages share writes: {} writes for {n} messages",
        st.batches_written
    );
}

#[test]
fn reconnects_after_the_peer_restarts_on_the_same_port() {
    let (a, _sa, b, sb) = pair();
    send_until_delivered(&a, 2, &sb, 1);
    let b_addr = b.local_addr();
    b.shutdown();
    drop(b);
    // The writer notices (a ping or write fails) and reports the peer unreachable.
    wait_until(Duration::from_secs(5), || {
        (!a.is_connected(2)).then_some(())
    })
    .expect("a notices b is gone");
    assert_eq!(
        a.send(1, 2, msg(1, 2, 2)),
        Err(TransportError::Unreachable(2))
    );

    let mut cb = config(2);
    cb.listen_addr = b_addr;
    cb.peers.insert(1, a.local_addr().to_string());
    let (b2, sb2) = start(cb);
    assert_eq!(b2.local_addr(), b_addr);
    wait_connected(&a, 2);
    wait_connected(&b2, 1);
    send_until_delivered(&a, 2, &sb2, 3);
    b2.send(2, 1, msg(2, 1, 4)).unwrap();
}

#[test]
fn wrong_cluster_is_refused_and_logged_while_others_are_served() {
    let (b, sb) = start(config(2));
    let (c, _sc) = start(config(3));
    let mut ca = config(1);
    ca.cluster_id = "intruders".into();
    let (a, _sa) = start(ca);
    link(&a, &b);
    link(&c, &b);
    wait_connected(&c, 2);
    send_until_delivered(&c, 2, &sb, 1);
    assert!(warned(&["node 2", "wrong cluster id \"intruders\""]));
    assert!(!a.is_connected(2), "a foreign cluster never gets through");
    assert!(b.stats().connections_refused >= 1);
    // b, still serving c, did not connect to a either (a refuses b's cluster).
    assert!(warned(&["node 1", "wrong cluster id \"test\""]));
    assert!(!b.is_connected(1));
    send_until_delivered(&c, 2, &sb, 2);
}

#[test]
fn unknown_sender_and_wrong_destination_are_refused() {
    let (b, sb) = start(config(2));
    let (a, _sa) = start(config(1));
    // a knows b, but b does not know a.
    a.add_peer(2, b.local_addr().to_string()).unwrap();
    assert!(warned(&["node 2", "unknown sender id 1"]));
    assert!(!a.is_connected(2));
    // a dials b's address believing node 5 lives there: b is not node 5.
    a.add_peer(5, b.local_addr().to_string()).unwrap();
    assert!(warned(&["node 2", "this is node 2, not node 5"]));
    assert!(!a.is_connected(5));
    // Once b learns a, a gets through.
    b.add_peer(1, a.local_addr().to_string()).unwrap();
    wait_connected(&a, 2);
    send_until_delivered(&a, 2, &sb, 1);
    // And once b forgets a again, a is cut off.
    b.remove_peer(1);
    wait_until(Duration::from_secs(5), || {
        (!a.is_connected(2)).then_some(())
    })
    .expect("a's connection to b is closed");
}

#[test]
fn hostile_bytes_close_the_connection_and_the_node_keeps_serving() {
    let mut cb = config(2);
    cb.peers.insert(9, "127.0.0.1:1".into());
    let (a, _sa, b, sb) = pair_with(config(1), cb);

    // Garbage: an HTTP request's first bytes read as a huge length.
    let mut s = raw_connect(&b);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_by_peer(&mut s));
    assert!(warned(&["node 2", "exceeds the limit"]));

    // A handshake frame with a bad CRC.
    let mut s = raw_connect(&b);
    let mut h = hello(9, 2, "test");
    h[6] ^= 0xff;
    s.write_all(&h).unwrap();
    assert!(closed_by_peer(&mut s));
    assert!(warned(&["node 2", "CRC mismatch"]));

    // After a good handshake: a message frame with a bad CRC.
    let mut s = raw_handshake(&b, 9);
    let mut f = frame(3, &msg(9, 2, 1));
    let last = f.len() - 1;
    f[last] ^= 1;
    s.write_all(&f).unwrap();
    assert!(closed_by_peer(&mut s));

    // After a good handshake: a length over max_frame_bytes.
    let mut s = raw_handshake(&b, 9);
    let mut huge = Vec::new();
    huge.extend_from_slice(&(u32::MAX).to_le_bytes());
    huge.extend_from_slice(&[3, 0, 0, 0, 0]);
    s.write_all(&huge).unwrap();
    assert!(closed_by_peer(&mut s));

    // After a good handshake as node 9: a message claiming to be from node 1.
    let mut s = raw_handshake(&b, 9);
    s.write_all(&frame(3, &msg(9, 2, 77))).unwrap();
    s.write_all(&frame(3, &msg(1, 2, 78))).unwrap();
    assert!(closed_by_peer(&mut s));
    assert!(warned(&[
        "node 2",
        "message from node 1 on node 9's connection"
    ]));
    assert!(sb.wait_for(9, 77), "the honest message before it arrived");
    assert!(!sb.messages.lock().iter().any(|m| m.index == 78));

    // Truncated mid-frame, then closed.
    let mut s = raw_handshake(&b, 9);
    s.write_all(&frame(3, &msg(9, 2, 5))[..12]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_peer(&mut s));

    assert!(b.stats().connections_failed >= 5);
    // The real peer's connection was never disturbed.
    assert!(a.is_connected(2));
    send_until_delivered(&a, 2, &sb, 1000);
}

#[test]
fn a_silent_client_is_dropped_after_the_read_deadline() {
    let mut cb = config(2);
    cb.read_timeout_ms = 300;
    cb.handshake_timeout_ms = 300;
    cb.max_handshaking_conns = 2;
    let (b, sb) = start(cb);
    // Two silent clients take every handshaking slot.
    let mut s1 = raw_connect(&b);
    let mut s2 = raw_connect(&b);
    let started = Instant::now();
    let (a, _sa) = start(config(1));
    link(&a, &b);
    // Both are dropped after the deadline, freeing their slots for the real peer.
    assert!(closed_by_peer(&mut s1));
    assert!(closed_by_peer(&mut s2));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(warned(&["node 2", "read deadline"]));
    wait_connected(&a, 2);
    send_until_delivered(&a, 2, &sb, 1);
    // An idle but live connection survives the deadline: the writer pings it.
    std::thread::sleep(Duration::from_millis(800));
    assert!(a.is_connected(2));
    a.send(1, 2, msg(1, 2, 2)).unwrap();
    assert!(sb.wait_for(1, 2));
}

#[test]
fn a_peer_that_accepts_but_never_answers_is_given_up_on() {
    // A "peer" that accepts connections and never says a word.
    let mute = std::net::TcpListener::bind(loopback()).unwrap();
    mute.set_nonblocking(true).unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                match mute.accept() {
                    Ok((s, _)) => held.push(s),
                    // Nothing to accept yet (non-blocking, to see `stop`).
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            held.len()
        })
    };
    let mut ca = config(1);
    ca.read_timeout_ms = 300;
    let (a, _sa) = start(ca);
    a.add_peer(2, mute_addr.to_string()).unwrap();
    assert!(logged(
        log::Level::Info,
        &["node 1: dialling node 2", "read deadline"]
    ));
    assert!(!a.is_connected(2));
    assert_eq!(
        a.send(1, 2, msg(1, 2, 1)),
        Err(TransportError::Unreachable(2))
    );
    // A snapshot to it fails within the handshake deadline too.
    let started = Instant::now();
    let mut chunks = FakeChunks {
        next: 0,
        count: 1,
        size: 1,
    };
    assert_eq!(
        a.send_snapshot(1, 2, snapshot_msg(1, 2), &mut chunks),
        Err(TransportError::Unreachable(2))
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The writer keeps retrying with backoff, and shutting down does not wait for
    // the mute peer.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    a.shutdown();
    assert!(started.elapsed() < Duration::from_secs(2));
    stop.store(true, Ordering::Release);
    let accepted = acceptor.join().unwrap();
    assert!(accepted >= 3, "redialled: {accepted} connections");
}

#[test]
fn a_full_queue_drops_instead_of_blocking() {
    let mut ca = config(1);
    ca.queue_len = 8;
    ca.write_timeout_ms = 5_000;
    let (a, _sa, _b, sb) = pair_with(ca, config(2));
    sb.stall.store(true, Ordering::Release);
    let started = Instant::now();
    let mut results = Vec::new();
    // 64 MiB offered while b reads nothing: far beyond the socket buffers.
    for i in 1..=1_000 {
        results.push(a.send(1, 2, big_msg(1, 2, i, 64 << 10)));
    }
    let took = started.elapsed();
    let dropped = a.stats().messages_dropped;
    sb.stall.store(false, Ordering::Release);
    assert!(
        took < Duration::from_secs(4),
        "1000 sends to a stalled peer took {took:?}: send blocked"
    );
    assert!(dropped > 0, "a full queue drops");
    assert!(
        results.iter().all(|r| r.is_ok()),
        "a busy connection is not an unreachable peer"
    );
    // Once b reads again, traffic flows.
    send_until_delivered(&a, 2, &sb, 5_000);
}

/// Frames of a fake snapshot stream: `count` frames of `size` bytes, each filled with
/// its own number.
struct FakeChunks {
    next: usize,
    count: usize,
    size: usize,
}

impl ChunkSource for FakeChunks {
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        if self.next == self.count {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(vec![self.next as u8; self.size]))
    }
}

fn snapshot_msg(from: u64, to: u64) -> Vec<u8> {
    codec::encode(&Message {
        msg_type: MessageType::Snapshot,
        from,
        to,
        term: 3,
        snapshot: Some(Snapshot {
            metadata: SnapshotMetadata {
                index: 42,
                term: 3,
                ..SnapshotMetadata::default()
            },
            data: Vec::new(),
        }),
        ..Message::default()
    })
}

#[test]
fn a_snapshot_streams_while_messages_keep_flowing() {
    let (a, _sa, _b, sb) = pair();
    let (progress_tx, progress_rx) = bounded(1);
    let (gate_tx, gate_rx) = bounded(1);
    *sb.snap_mode.lock() = SnapMode::PauseAfter(5, progress_tx, gate_rx);
    let sender = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || {
            let mut chunks = FakeChunks {
                next: 0,
                count: 40,
                size: 256 << 10,
            };
            a.send_snapshot(1, 2, snapshot_msg(1, 2), &mut chunks)
        })
    };
    progress_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the snapshot stream started");
    // Mid-snapshot, the receiver is busy with it: heartbeats still get through.
    for i in 1..=50 {
        a.send(1, 2, msg(1, 2, i)).unwrap();
    }
    assert!(sb.wait_for(1, 50), "messages flow beside a snapshot stream");
    assert!(
        sb.snapshots.lock().is_empty(),
        "the snapshot is still in flight"
    );
    gate_tx.send(()).unwrap();
    let result = sender.join().expect("sender thread");
    assert_eq!(result, Ok(()));
    let snaps = sb.snapshots.lock();
    let (m, frames) = &snaps[0];
    assert_eq!(m.msg_type, MessageType::Snapshot);
    assert_eq!(m.snapshot.as_ref().map(|s| s.metadata.index), Some(42));
    assert_eq!(frames.len(), 40);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.len(), 256 << 10);
        assert!(f.iter().all(|&b| b == (i + 1) as u8), "frame {i} intact");
    }
}

#[test]
fn a_refused_snapshot_returns_the_receivers_error() {
    let (a, _sa, _b, sb) = pair();
    *sb.snap_mode.lock() = SnapMode::FailAfter(2, "disk full (test)".into());
    let started = Instant::now();
    // 100 MiB offered; the receiver refuses after 2 frames and the sender stops early.
    let mut chunks = FakeChunks {
        next: 0,
        count: 400,
        size: 256 << 10,
    };
    let err = a
        .send_snapshot(1, 2, snapshot_msg(1, 2), &mut chunks)
        .unwrap_err();
    assert_eq!(err, TransportError::Snapshot("disk full (test)".into()));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(chunks.next < 400, "the sender stopped streaming early");
    // Without a node to install it, the receiver says so.
    let (c, sc) = start(config(3));
    link(&a, &c);
    let other: Arc<dyn MessageSink> = Sink::new();
    c.unregister(3, &other);
    let registered: Arc<dyn MessageSink> = sc;
    c.unregister(3, &registered);
    let mut chunks = FakeChunks {
        next: 0,
        count: 3,
        size: 10,
    };
    wait_connected(&a, 3);
    let err = a
        .send_snapshot(1, 3, snapshot_msg(1, 3), &mut chunks)
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Snapshot(t) if t.contains("not running")),
        "{err}"
    );
    // A peer that is not known is unreachable; normal traffic is unaffected.
    let mut chunks = FakeChunks {
        next: 0,
        count: 1,
        size: 1,
    };
    assert_eq!(
        a.send_snapshot(1, 7, snapshot_msg(1, 7), &mut chunks),
        Err(TransportError::Unreachable(7))
    );
    send_until_delivered(&a, 2, &sb, 1);
}

/// Names of this process's threads (as the kernel keeps them: 15 bytes at most).
fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
#[cfg(target_os = "linux")]
fn shutdown_joins_every_thread() {
    // Ids no other test in this binary uses, so their threads can be told apart.
    let ours = |n: &String| {
        ["keel-listen-6", "keel-listen-8", "keel-in-6", "keel-in-8"].contains(&n.as_str())
            || n == "keel-out-6-8"
            || n == "keel-out-8-6"
    };
    let (a, _sa, b, sb) = pair_with(config(6), config(8));
    a.send(6, 8, msg(6, 8, 1)).unwrap();
    assert!(sb.wait_for(6, 1));
    let mut chunks = FakeChunks {
        next: 0,
        count: 3,
        size: 100,
    };
    a.send_snapshot(6, 8, snapshot_msg(6, 8), &mut chunks)
        .unwrap();
    // A silent client's thread too.
    let _silent = raw_connect(&b);
    wait_until(Duration::from_secs(5), || {
        (thread_names().iter().filter(|n| ours(n)).count() >= 7).then_some(())
    })
    .expect("listener, writer and reader threads of both, and the silent client's");
    let started = Instant::now();
    a.shutdown();
    drop(a);
    drop(b);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown is prompt"
    );
    let left: Vec<String> = thread_names().into_iter().filter(|n| ours(n)).collect();
    assert!(left.is_empty(), "threads left behind: {left:?}");
}

// ---------------------------------------------------------------------------------
// Three `Db` nodes over TCP.

fn snapshot_often(mut c: Config) -> Config {
    c.snapshot_every = 20;
    c.catch_up_entries = 5;
    c
}

/// Node `id`'s transport, which runs.
fn tcp(c: &Cluster, id: u64) -> Arc<TcpTransport> {
    c.tcp(id)
        .unwrap_or_else(|| panic!("node {id} runs over TCP"))
}

#[test]
fn a_three_node_db_cluster_over_tcp() {
    capture();
    let c = Cluster::open(
        Options::new(3)
            .transport(keel_engine::testing::Transport::Tcp)
            .tweak(snapshot_often),
    )
    .expect("start the cluster");
    assert!(c.try_net().is_none(), "no in-process network");
    let leader = c.wait_leader();
    let follower = c.followers(leader)[0];
    for i in 0..20 {
        c.db(leader).put(&key(i), &value(i)).unwrap();
    }
    // Writes forwarded by a follower, linearizable reads everywhere.
    c.db(follower).put(b"via", b"follower").unwrap();
    for id in 1..=3 {
        assert_eq!(c.db(id).get(&key(7)).unwrap(), Some(value(7)));
        assert_eq!(c.db(id).get(b"via").unwrap(), Some(b"follower".to_vec()));
    }

    // A follower goes away, its transport with it; the others compact past what it has.
    let port = c.addr(follower).expect("an address");
    c.stop(follower).unwrap();
    assert!(c.tcp(follower).is_none());
    wait_until(Duration::from_secs(5), || {
        (!tcp(&c, leader).is_connected(follower)).then_some(())
    })
    .expect("the leader notices the follower is gone");
    for i in 20..120 {
        c.db(leader).put(&key(i % 40), &value(i)).unwrap();
    }
    wait_until(Duration::from_secs(5), || {
        (c.db(leader).status().first_index > 30).then_some(())
    })
    .expect("the leader compacted its log");

    // Back on the same port with a new transport: it catches up through a snapshot
    // streamed over TCP, then through the log.
    c.start(follower).unwrap();
    assert_eq!(tcp(&c, follower).local_addr(), port);
    let target = c.db(leader).status().commit_index;
    c.wait_applied(target);
    let st = c.db(follower).status();
    assert!(st.snapshot_index >= 30, "installed a snapshot: {st:?}");
    assert!(logged(
        log::Level::Info,
        &[&format!(
            "node {follower}: installed a snapshot from node {leader}"
        )]
    ));
    for i in 80..120 {
        assert_eq!(
            c.db(follower).get_local(&key(i % 40)).unwrap(),
            Some(value(i))
        );
    }
    c.db(follower).put(b"after", b"restart").unwrap();
    assert_eq!(
        c.db(leader).get(b"after").unwrap(),
        Some(b"restart".to_vec())
    );
    c.close().unwrap();
}

#[test]
fn a_node_on_a_simulated_disk_crashes_and_comes_back_over_tcp() {
    let c = Cluster::open(
        Options::new(3)
            .storage(Storage::Simulated)
            .transport(keel_engine::testing::Transport::Tcp)
            .seed(11),
    )
    .expect("start the cluster");
    let leader = c.wait_leader();
    for i in 0..10 {
        c.db(leader).put(&key(i), &value(i)).unwrap();
    }
    let port = c.addr(leader).expect("an address");
    c.crash(leader, CrashMode::DropUnsynced).unwrap();
    assert!(c.tcp(leader).is_none(), "its transport went with it");
    let next = c.wait_leader();
    c.db(next).put(b"after", b"crash").unwrap();
    c.start(leader).unwrap();
    assert_eq!(tcp(&c, leader).local_addr(), port);
    c.wait_converged();
    for id in 1..=3 {
        assert_eq!(c.db(id).get_local(&key(9)).unwrap(), Some(value(9)));
        assert_eq!(
            c.db(id).get_local(b"after").unwrap(),
            Some(b"crash".to_vec())
        );
    }
}

#[test]
fn a_node_that_joins_a_tcp_cluster_gets_an_address_the_others_learn() {
    let c = Cluster::open(Options::new(3).transport(keel_engine::testing::Transport::Tcp))
        .expect("start the cluster");
    let leader = c.wait_leader();
    c.db(leader).put(b"k", b"v").unwrap();
    let mut cfg = c.config(4);
    cfg.peers = Vec::new();
    cfg.join = true;
    c.start_with(4, cfg).expect("start the joiner");
    let addr = c.addr(4).expect("the joiner has an address");
    assert_eq!(tcp(&c, 4).local_addr(), addr);
    c.db(leader).add_learner(4, None).unwrap();
    wait_until(Duration::from_secs(10), || {
        (tcp(&c, leader).is_connected(4) && tcp(&c, 4).is_connected(leader)).then_some(())
    })
    .expect("the leader and the joiner reach each other");
    c.wait_converged();
    assert_eq!(c.db(4).get_local(b"k").unwrap(), Some(b"v".to_vec()));
}

/// `(local port, remote port)` of every TCP socket this process holds open.
#[cfg(target_os = "linux")]
fn open_tcp_sockets() -> Vec<(u16, u16)> {
    let inodes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    let port = |field: &str| {
        let hex = field.rsplit(':').next().unwrap_or("");
        u16::from_str_radix(hex, 16).unwrap_or(0)
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let inode = f.get(9)?;
            inodes
                .iter()
                .any(|i| i == inode)
                .then(|| (port(f[1]), port(f[2])))
        })
        .collect()
}

#[test]
#[cfg(target_os = "linux")]
fn dropping_a_tcp_cluster_leaves_no_thread_or_socket() {
    // Ids no other test in this binary uses, so their threads can be told apart.
    let ids = [61, 62, 63];
    let ours = |n: &String| {
        n.split('-')
            .any(|part| ids.iter().any(|id| part == id.to_string()))
    };
    let c = Cluster::open(
        Options::new(3)
            .ids(ids.to_vec())
            .transport(keel_engine::testing::Transport::Tcp),
    )
    .expect("start the cluster");
    let ports: Vec<u16> = ids
        .iter()
        .map(|&id| c.addr(id).expect("an address").port())
        .collect();
    let leader = c.wait_leader();
    c.db(leader).put(b"k", b"v").unwrap();
    // A killed node's transport goes with it; the node comes back on its port.
    let follower = c.followers(leader)[0];
    c.kill(follower).unwrap();
    c.start(follower).unwrap();
    c.wait_converged();
    let held = |ports: &[u16]| {
        open_tcp_sockets()
            .into_iter()
            .filter(|(local, remote)| ports.contains(local) || ports.contains(remote))
            .count()
    };
    assert!(
        held(&ports) >= 3,
        "listeners and connections are open: {:?}",
        open_tcp_sockets()
    );
    assert!(thread_names()
        .iter()
        .any(|n| n.starts_with("keel-listen") && ours(n)));
    drop(c);
    let left: Vec<String> = thread_names().into_iter().filter(|n| ours(n)).collect();
    assert!(left.is_empty(), "threads left behind: {left:?}");
    // Every socket to or from the cluster's ports is closed (what the kernel keeps in
    // TIME_WAIT is not the process's).
    assert_eq!(
        held(&ports),
        0,
        "sockets left behind: {:?}",
        open_tcp_sockets()
    );
}

// ---------------------------------------------------------------------------------
// Limits on what the outside can make the transport hold.

#[test]
fn a_queue_full_in_bytes_drops_instead_of_growing() {
    let mut ca = config(1);
    // Room for every message by count; only the byte budget can refuse them.
    ca.queue_len = 100_000;
    ca.max_frame_bytes = 1 << 20;
    ca.queue_max_bytes = 1 << 20;
    ca.write_timeout_ms = 5_000;
    let (a, _sa, _b, sb) = pair_with(ca, config(2));
    sb.stall.store(true, Ordering::Release);
    // 64 MiB offered while b reads nothing: far beyond the socket buffers and the
    // 1 MiB budget, though well within the queue's count.
    let results: Vec<_> = (1..=1_000)
        .map(|i| a.send(1, 2, big_msg(1, 2, i, 64 << 10)))
        .collect();
    let stats = a.stats();
    sb.stall.store(false, Ordering::Release);
    assert!(
        stats.messages_dropped > 0,
        "a queue over its byte budget drops: {stats:?}"
    );
    assert!(results.iter().all(|r| r.is_ok()), "busy is not unreachable");
    // Once b reads again, traffic flows: the budget was given back.
    send_until_delivered(&a, 2, &sb, 5_000);
}

/// Holds `count` idle connections to `addr` that never send a byte, opening a new one
/// for each the far end closes, until `stop`.
fn idle_flood(
    addr: SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
            held.retain(|s| {
                s.set_nonblocking(true).ok();
                let mut b = [0u8; 1];
                // Still open while a read would block.
                matches!((&*s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            });
            while held.len() < count {
                match TcpStream::connect(addr) {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
            // Pacing: refill the flood of connections every 50 ms until told to stop.
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn idle_connections_that_never_say_hello_cannot_keep_peers_out() {
    capture();
    let c = Cluster::open(
        Options::new(3)
            .transport(keel_engine::testing::Transport::Tcp)
            // Long enough that nothing times out during the test: only the transport's
            // handling of handshaking connections can let the peers in.
            .tcp_tweak(|mut t| {
                t.read_timeout_ms = 30_000;
                t
            }),
    )
    .expect("start the cluster");
    // More idle connections than node 1 has slots (max_inbound_conns, 64), held and
    // replaced as they are closed, from here to the end.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = idle_flood(c.addr(1).expect("an address"), 100, Arc::clone(&stop));
    wait_until(Duration::from_secs(5), || {
        (tcp(&c, 1).stats().connections_refused > 0).then_some(())
    });
    // The other nodes start again, so their connections to node 1 are new ones that
    // must get in through the flood.
    for id in [2, 3] {
        c.stop(id).unwrap();
        c.start(id).unwrap();
    }
    let joined = wait_until(Duration::from_secs(10), || {
        (tcp(&c, 2).is_connected(1) && tcp(&c, 3).is_connected(1)).then_some(())
    });
    let stats = tcp(&c, 1).stats();
    assert!(
        joined.is_some(),
        "the peers never got a connection to node 1 through the idle ones: {stats:?}"
    );
    c.wait_leader();
    // Node 1 takes part: a write through it commits, and reads everywhere see it. The
    // two restarted nodes may still be settling (a vote, a redial), so a write that
    // times out is tried again: the same put twice is harmless.
    wait_until(Duration::from_secs(30), || {
        c.db(1).put(b"through", b"the flood").ok()
    })
    .expect("a write through node 1 within 30 s");
    for id in 1..=3 {
        assert_eq!(
            c.db(id).get(b"through").unwrap(),
            Some(b"the flood".to_vec())
        );
    }
    stop.store(true, Ordering::Release);
    flood.join().unwrap();
    c.close().unwrap();
}

#[test]
fn a_full_handshaking_pool_closes_its_oldest_and_known_peers_have_their_own_cap() {
    let mut cb = config(2);
    cb.max_handshaking_conns = 2;
    cb.max_inbound_conns = 1;
    // Only eviction, not the deadline, can free a handshaking slot here.
    cb.handshake_timeout_ms = 30_000;
    let (b, _sb) = start(cb);
    b.add_peer(1, "127.0.0.1:9").unwrap();
    b.add_peer(3, "127.0.0.1:9").unwrap();
    let mut idle1 = raw_connect(&b);
    let mut idle2 = raw_connect(&b);
    // Past the grace a handshaking connection has before it may be evicted.
    std::thread::sleep(Duration::from_millis(300));
    let _idle3 = raw_connect(&b);
    assert!(
        closed_by_peer(&mut idle1),
        "the oldest idle connection was closed"
    );
    // A known peer gets in through a pool full of idle connections.
    let _peer1 = raw_handshake(&b, 1);
    assert!(
        closed_by_peer(&mut idle2),
        "the next oldest made room for the peer"
    );
    assert_eq!(b.stats().handshakes_evicted, 2);
    // Handshaken connections have their own cap (max_inbound_conns, 1 here): a second
    // one is refused, with the reason.
    let mut s = raw_connect(&b);
    s.write_all(&hello(3, 2, "test")).unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).expect("ack header");
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut ack = vec![0u8; len];
    s.read_exact(&mut ack).unwrap();
    let reason = String::from_utf8_lossy(&ack[11..]).into_owned();
    assert_eq!(ack[0], 1, "refused");
    assert!(reason.contains("max_inbound_conns"), "{reason}");
}

#[test]
fn the_transport_limits_are_validated() {
    let refused = |c: TcpConfig, what: &str| match TcpTransport::start(c) {
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        Ok(_) => panic!("{what}: accepted"),
    };
    let mut c = config(1);
    c.queue_max_bytes = u64::from(c.max_frame_bytes) - 1;
    refused(c, "queue_max_bytes");
    let mut c = config(1);
    c.max_handshaking_conns = 0;
    refused(c, "max_handshaking_conns");
    let mut c = config(1);
    c.handshake_timeout_ms = 0;
    refused(c, "timeouts");
    let d = TcpConfig::new(1, loopback());
    assert_eq!(
        (
            d.queue_max_bytes,
            d.max_handshaking_conns,
            d.handshake_timeout_ms
        ),
        (64 << 20, 16, 1_000)
    );
}
