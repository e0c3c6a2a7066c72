//! The limits on what peers and callers can make a node hold: the request queue and
//! the inbox bounded in bytes as well as count, the snapshot receive limit, and the
//! largest write checked against what the transport carries in one message.
//!
//! A node's raft stage is held still by a membership observer that blocks (observers
//! run on the raft thread), so its queues fill deterministically.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::key;
use crossbeam_channel::{bounded, Receiver, Sender};
use keel_engine::testing::{fast, wait_until, Cluster};
use keel_engine::transport::{
    ChunkSource, MessageSink, TcpConfig, TcpTransport, Transport, TransportError,
};
use keel_engine::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Config, Db,
    Error, MembershipObserver, COMMAND_OVERHEAD_BYTES,
};

/// Holds the raft thread of the node it observes inside the next membership change it
/// applies after being armed, until opened.
struct Gate {
    armed: AtomicBool,
    entered: (Sender<()>, Receiver<()>),
    open: (Sender<()>, Receiver<()>),
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            armed: AtomicBool::new(false),
            entered: bounded(1),
            open: bounded(1),
        })
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn wait_entered(&self) {
        self.entered
            .1
            .recv_timeout(Duration::from_secs(10))
            .expect("the raft stage reached the gate");
    }

    fn release(&self) {
        let _ = self.open.0.try_send(());
    }
}

impl MembershipObserver for Gate {
    fn applied(&self, _change: &ConfChangeV2, _cs: &ConfState) {
        if self.armed.swap(false, Ordering::SeqCst) {
            let _ = self.entered.0.try_send(());
            // Bounded, in case a test fails before it opens the gate.
            let _ = self.open.1.recv_timeout(Duration::from_secs(20));
        }
    }
}

fn add_learner(node_id: u64) -> ConfChangeV2 {
    ConfChangeV2 {
        transition: ConfChangeTransition::Auto,
        changes: vec![ConfChangeSingle {
            change_type: ConfChangeType::AddLearnerNode,
            node_id,
        }],
        context: Vec::new(),
    }
}

/// The value of the counter `name` (without the `keel_` prefix) in `db`'s metrics.
fn counter(db: &Db, name: &str) -> u64 {
    let prefix = format!("keel_{name}");
    db.metrics_text()
        .lines()
        .find(|l| l.starts_with(&prefix) && l[prefix.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn a_write_over_the_request_queue_byte_budget_is_refused_busy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new();
    let max_entry_bytes: u64 = 64 << 10;
    let mut cfg = fast(Config::single_node(dir.path()));
    cfg.max_entry_bytes = max_entry_bytes;
    // Three of the largest writes, and plenty of room by count.
    cfg.request_queue_max_bytes = 3 * (max_entry_bytes + COMMAND_OVERHEAD_BYTES);
    cfg.membership_observer = Some(gate.clone());
    let db = Db::open(cfg).unwrap();
    db.put(b"warm", b"up").unwrap();

    // Hold the raft stage still: nothing leaves the request queue meanwhile.
    gate.arm();
    let changer = {
        let db = db.clone();
        std::thread::spawn(move || db.change_membership(add_learner(2)))
    };
    gate.wait_entered();
    let value = vec![7u8; max_entry_bytes as usize - key(0).len()];
    // Each waits in the queue; its caller gives up, the bytes stay queued.
    for i in 0..3 {
        let r = db.put_timeout(&key(i), &value, Duration::from_millis(100));
        assert!(matches!(r, Err(Error::Timeout(_))), "write {i}: {r:?}");
    }
    // A fourth would take the queue past its byte budget: refused now, not after its
    // 20 s timeout.
    let r = db.put_timeout(&key(3), &value, Duration::from_secs(20));
    assert!(matches!(r, Err(Error::Busy(_))), "{r:?}");
    assert_eq!(counter(&db, "server_request_queue_bytes_refused_total"), 1);

    // Once the raft stage drains the queue its bytes are given back.
    gate.release();
    changer.join().unwrap().expect("the membership change");
    let put = wait_until(Duration::from_secs(10), || match db.put(&key(3), &value) {
        Err(Error::Busy(_)) => None,
        other => Some(other),
    });
    put.expect("the queue drained").unwrap();
    assert_eq!(db.get(&key(3)).unwrap(), Some(value));
    db.close().unwrap();
}

/// Makes sure node 3 (observed by `gate`) is a follower, then holds its raft stage in
/// the gate, inside a membership change the leader made. Returns the leader.
fn hold_node_3(c: &Cluster, gate: &Gate) -> u64 {
    if c.wait_leader() == 3 {
        c.db(3).transfer_leadership(1).unwrap();
    }
    let leader = c.wait_leader();
    c.db(leader).put(b"warm", b"up").unwrap();
    c.wait_converged();
    gate.arm();
    c.db(leader).change_membership(add_learner(9)).unwrap();
    gate.wait_entered();
    leader
}

fn inbox_gate() -> &'static Arc<Gate> {
    static GATE: OnceLock<Arc<Gate>> = OnceLock::new();
    GATE.get_or_init(Gate::new)
}

#[test]
fn an_inbox_over_its_byte_budget_drops_and_the_node_catches_up_later() {
    let c = Cluster::with(3, |mut cfg| {
        cfg.max_entry_bytes = 4 << 10;
        cfg.max_size_per_msg_bytes = 4 << 10;
        if cfg.id == 3 {
            // The least allowed: room for one full append and a few small messages.
            cfg.inbox_queue_max_bytes = cfg.max_message_bytes();
            cfg.membership_observer = Some(Arc::clone(inbox_gate()) as _);
        }
        cfg
    });
    let leader = hold_node_3(&c, inbox_gate());
    // Node 3 is stalled; its inbox fills by bytes long before its 4096 slots.
    let value = vec![1u8; 3 << 10];
    for i in 0..40 {
        c.db(leader).put(&key(i), &value).unwrap();
    }
    wait_until(Duration::from_secs(10), || {
        (counter(&c.db(3), "server_inbox_dropped_total") > 0).then_some(())
    })
    .expect("node 3 dropped messages over its inbox's byte budget");

    // Raft retransmits what was dropped: node 3 catches up once it runs again.
    inbox_gate().release();
    c.wait_converged();
    assert_eq!(c.db(3).get_local(&key(39)).unwrap(), Some(value));
    c.stop(3).expect("stop node");
}

#[test]
fn a_snapshot_over_the_receive_limit_is_refused_until_the_limit_is_raised() {
    let c = Cluster::with(3, |mut cfg| {
        cfg.snapshot_every = 20;
        cfg.snapshot_log_percent = 0;
        cfg.snapshots_retained = 1;
        cfg.catch_up_entries = 5;
        if cfg.id == 3 {
            cfg.max_snapshot_receive_bytes = 8 << 10;
        }
        cfg
    });
    let leader = c.wait_leader();
    if leader == 3 {
        c.db(3).transfer_leadership(1).unwrap();
    }
    let leader = c.wait_leader();
    c.stop(3).expect("stop node");
    // A state of some 60 KiB, and a log compacted past what node 3 has.
    let value = vec![5u8; 1 << 10];
    for i in 0..60 {
        c.db(leader).put(&key(i), &value).unwrap();
    }
    wait_until(Duration::from_secs(10), || {
        (c.db(leader).status().first_index > 30).then_some(())
    })
    .expect("the leader compacted its log");

    c.start(3).expect("start node");
    wait_until(Duration::from_secs(10), || {
        (counter(&c.db(3), "snapshot_receive_refused_total") > 0).then_some(())
    })
    .expect("node 3 refused the snapshot over its limit");
    let st = c.db(3).status();
    assert_eq!(st.snapshot_index, 0, "nothing installed: {st:?}");
    assert_eq!(c.db(3).get_local(&key(59)).unwrap(), None);

    // With room for it, the same snapshot installs and node 3 catches up.
    c.stop(3).expect("stop node");
    let mut cfg = c.config(3);
    cfg.max_snapshot_receive_bytes = 1 << 20;
    c.start_with(3, cfg).unwrap();
    c.wait_converged();
    assert!(c.db(3).status().snapshot_index > 0);
    assert_eq!(c.db(3).get_local(&key(59)).unwrap(), Some(value));
    c.stop(3).expect("stop node");
}

#[test]
fn a_write_too_large_for_one_peer_message_is_refused_when_the_node_opens() {
    let dir = tempfile::tempdir().unwrap();
    let transport = TcpTransport::start(TcpConfig::new(1, "127.0.0.1:0".parse().unwrap())).unwrap();
    let frame_bytes = u64::from(TcpConfig::new(1, "127.0.0.1:0".parse().unwrap()).max_frame_bytes);
    let config = |max_entry_bytes: u64| {
        let mut cfg = Config::cluster(1, vec![1, 2], dir.path(), transport.clone());
        cfg.max_entry_bytes = max_entry_bytes;
        cfg
    };
    // A write as large as a whole frame leaves no room for its own encoding.
    match Db::open(config(frame_bytes)) {
        Err(Error::Config(why)) => assert!(
            why.contains("max_entry_bytes") && why.contains("max_frame_bytes"),
            "{why}"
        ),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a node accepting writes its transport cannot carry opened"),
    }
    // With room for the encoding, it opens.
    Db::open(config(frame_bytes - 4096))
        .unwrap()
        .close()
        .unwrap();
    transport.shutdown();
}

/// A transport that refuses messages over a size, as the TCP transport refuses those
/// over `max_frame_bytes`, and counts them.
struct FrameLimited {
    inner: Arc<dyn Transport>,
    max_bytes: u64,
}

static OVERSIZED_MESSAGES: AtomicU64 = AtomicU64::new(0);

impl Transport for FrameLimited {
    fn register(&self, id: u64, sink: Arc<dyn MessageSink>) {
        self.inner.register(id, sink)
    }

    fn unregister(&self, id: u64, sink: &Arc<dyn MessageSink>) {
        self.inner.unregister(id, sink)
    }

    fn send(&self, from: u64, to: u64, bytes: Vec<u8>) -> Result<(), TransportError> {
        if bytes.len() as u64 > self.max_bytes {
            OVERSIZED_MESSAGES.fetch_add(1, Ordering::SeqCst);
            return Err(TransportError::Unreachable(to));
        }
        self.inner.send(from, to, bytes)
    }

    fn max_message_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn send_snapshot(
        &self,
        from: u64,
        to: u64,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError> {
        self.inner.send_snapshot(from, to, message, chunks)
    }
}

fn forward_gate() -> &'static Arc<Gate> {
    static GATE: OnceLock<Arc<Gate>> = OnceLock::new();
    GATE.get_or_init(Gate::new)
}

#[test]
fn writes_queued_at_a_follower_are_forwarded_in_messages_the_transport_carries() {
    let c = Cluster::with(3, |mut cfg| {
        cfg.max_entry_bytes = 64 << 10;
        cfg.max_size_per_msg_bytes = 256 << 10;
        let inner = cfg
            .transport
            .take()
            .expect("a cluster node has a transport");
        // The smallest transport the configuration is valid with.
        cfg.transport = Some(Arc::new(FrameLimited {
            inner,
            max_bytes: cfg.max_message_bytes(),
        }));
        if cfg.id == 3 {
            cfg.membership_observer = Some(Arc::clone(forward_gate()) as _);
        }
        cfg
    });
    // Hold node 3's raft stage so that the writes below queue up behind it and are
    // taken in one turn: 24 writes of 60 KiB, about six times one message's worth.
    hold_node_3(&c, forward_gate());
    let value = vec![5u8; 60 << 10];
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let (db, value) = (c.db(3).clone(), value.clone());
            std::thread::spawn(move || db.put_timeout(&key(i), &value, Duration::from_secs(20)))
        })
        .collect();
    wait_until(Duration::from_secs(10), || {
        (counter(&c.db(3), "server_proposals_pending") == 24).then_some(())
    })
    .expect("the 24 writes are waiting at node 3");
    forward_gate().release();
    for (i, w) in writers.into_iter().enumerate() {
        w.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    assert_eq!(OVERSIZED_MESSAGES.load(Ordering::SeqCst), 0);
    c.wait_converged();
    assert_eq!(c.db(1).get_local(&key(23)).unwrap(), Some(value));
    c.stop(3).expect("stop node");
}

#[test]
fn the_byte_limits_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let base = || Config::single_node(dir.path());
    let refused = |cfg: Config, what: &str| match cfg.validate() {
        Err(Error::Config(why)) => assert!(why.contains(what), "{why}"),
        other => panic!("{what}: {other:?}"),
    };
    let mut c = base();
    c.request_queue_max_bytes = c.max_entry_bytes;
    refused(c, "request_queue_max_bytes");
    let mut c = base();
    c.inbox_queue_max_bytes = c.max_message_bytes() - 1;
    refused(c, "inbox_queue_max_bytes");
    let mut c = base();
    c.max_snapshot_receive_bytes = 0;
    refused(c, "max_snapshot_receive_bytes");
    let c = base();
    assert!(c.validate().is_ok());
    assert_eq!(
        c.max_snapshot_receive_bytes,
        keel_engine::DEFAULT_MAX_SNAPSHOT_RECEIVE_BYTES
    );
    assert_eq!(c.max_snapshot_receive_bytes, 64 << 30);
}
