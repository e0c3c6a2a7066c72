//! How a node is configured: identity and peers, where its data lives, which log
//! backend it writes, and the timing and flow-control knobs handed to raft-core.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_fs::{FileSystem, StdFs};

use crate::error::{Error, Result};
use crate::transport::Transport;

/// Which durable Raft log a node writes (`DIR/wal/` for the WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogBackend {
    /// keel's segmented write-ahead log (the default).
    #[default]
    Wal,
    /// RocksDB as the Raft log, in `DIR/rocksdb/` (cargo feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

/// Which key-value store a [`Db`](crate::Db) applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateMachineKind {
    /// An in-memory hash map (with an overlay while a snapshot is written from it),
    /// rebuilt from the newest snapshot plus the log at start.
    #[default]
    Memory,
    /// A RocksDB database in `DIR/rocksdb/sm/`, kept across restarts: a restart replays
    /// only the log above its applied index (cargo feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

/// Bytes an entry's payload adds to what a command counts against
/// [`Config::max_entry_bytes`], at most: the format version, the origin node and request
/// id (varints), and the framing a command may leave out of its size
/// ([`COMMAND_FRAMING_MAX_BYTES`](crate::COMMAND_FRAMING_MAX_BYTES): for the key-value
/// store, the operation tag and two length varints).
pub const COMMAND_OVERHEAD_BYTES: u64 =
    crate::command::ENVELOPE_BYTES + crate::command::COMMAND_FRAMING_MAX_BYTES;

// Bytes the Raft codec adds to an entry's data, at most: type tag, term, index and
// data length (varints).
const ENTRY_OVERHEAD_BYTES: u64 = 1 + 10 + 10 + 10;

// Bytes of a Raft message besides its entries, at most: type, eight varints, flags
// and the context (a few dozen bytes for the messages that carry entries), with room
// to spare.
const MESSAGE_OVERHEAD_BYTES: u64 = 1024;

/// The default [`Config::max_snapshot_receive_bytes`]: 64 GiB, the snapshot store's
/// own default (see there why).
pub const DEFAULT_MAX_SNAPSHOT_RECEIVE_BYTES: u64 = keel_snapshot::DEFAULT_MAX_RECEIVE_BYTES;

/// Configuration of one node. Start from [`Config::single_node`] or [`Config::cluster`]
/// and change what you need.
#[derive(Clone)]
pub struct Config {
    /// This node's id (never 0).
    pub id: u64,
    /// The voters a brand-new cluster starts with (including `id`). A brand-new node
    /// writes them to its log as its first entries (one membership change each, term
    /// 1, identical on every node), so a node that joins later rebuilds the membership
    /// from the log. Ignored once the node has data: membership then comes from its
    /// log and snapshots.
    pub peers: Vec<u64>,
    /// The data directory: `wal/` and `snap/` live under it, and `rocksdb/` for the
    /// RocksDB log (`rocksdb/` itself) and state machine (`rocksdb/sm/`); `LOCK` keeps
    /// a second process out (see [`data_dir`](crate::data_dir)).
    pub data_dir: PathBuf,
    /// How messages reach the other nodes; `None` for a single node.
    pub transport: Option<Arc<dyn Transport>>,
    /// The file system all durable I/O goes through (the real one by default; the
    /// simulated one in crash tests). The RocksDB log and state machine bypass it:
    /// RocksDB does its own file I/O.
    pub fs: Arc<dyn FileSystem>,
    /// The Raft log backend.
    pub log_backend: LogBackend,
    /// Which key-value store [`Db::open`](crate::Db::open) runs. Not used by
    /// [`Replica::open`](crate::Replica::open), which is handed its state machine.
    pub state_machine: StateMachineKind,
    /// Whether log writes are fsynced before they are acknowledged. Off is only for
    /// benchmarks and throwaway data: a crash may then lose acknowledged writes. The
    /// log is opened with the matching [`keel_wal::SyncPolicy`] (`Always` or `Never`), and
    /// only the log acts on it: the node just marks the writes that must be durable.
    pub fsync: bool,
    /// Bytes of a WAL segment file.
    pub wal_segment_size_bytes: u64,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Take a snapshot after this many entries were applied since the last one
    /// (0 disables snapshots). The default, 100,000, is etcd's `--snapshot-count`:
    /// every snapshot writes the whole state, so taking them often costs a large map
    /// more CPU and disk than replaying that many entries at a restart would.
    pub snapshot_every: u64,
    /// A snapshot also waits until the log entries applied since the previous one add
    /// up to at least this percentage of that snapshot's file size (0: count only).
    /// Each snapshot rewrites the whole state, so with a large state and a fixed entry
    /// count the bytes snapshots write would grow with the state, not with the writes;
    /// this bounds them to about 100 ÷ percent times the bytes logged (the rule of
    /// Redis's `auto-aof-rewrite-percentage`). The log kept on disk grows to about the
    /// same fraction of the state. Default 100.
    pub snapshot_log_percent: u64,
    /// Entries kept in the log behind a snapshot so slightly slow followers catch up
    /// from the log instead of needing the snapshot.
    pub catch_up_entries: u64,
    /// Snapshots kept in `snap/`.
    pub snapshots_retained: usize,
    /// Largest command accepted in one proposal, as
    /// [`Command::size_bytes`](crate::state_machine::Command::size_bytes) counts it: its
    /// encoded length, or for the key-value store its key plus value.
    pub max_entry_bytes: u64,
    /// Most bytes of entries in one append message.
    pub max_size_per_msg_bytes: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most bytes of entries in flight to one follower (0 = bounded by count only).
    pub max_inflight_bytes: u64,
    /// Most bytes of appended but uncommitted entries on a leader (0 = unbounded).
    pub max_uncommitted_size_bytes: u64,
    /// Most bytes of committed entries handed to the apply stage at once.
    pub max_committed_size_per_ready_bytes: u64,
    /// Bytes of recent entries the log cache keeps in memory.
    pub log_cache_max_bytes: u64,
    /// Capacity of the queue from callers to the raft stage.
    pub request_queue_len: usize,
    /// Bytes of writes (encoded key, value and a few dozen bytes of header each)
    /// waiting in the queue from callers to the raft stage, at most. A write that
    /// would take the queue past it fails at once with [`Error::Busy`] (never
    /// proposed; retry later) rather than wait. Must be at least
    /// `max_entry_bytes` plus [`COMMAND_OVERHEAD_BYTES`], so one write of any size
    /// accepted fits an empty queue. Default 64 MiB.
    pub request_queue_max_bytes: u64,
    /// Most requests (writes and reads) waiting for an answer at once.
    pub max_pending_requests: usize,
    /// Capacity of the queue of inbound messages from the transport.
    pub inbox_queue_len: usize,
    /// Bytes of encoded messages waiting in the queue of inbound messages from the
    /// transport, at most. A message that would take the queue past it is dropped
    /// (Raft retransmits), as one arriving at a full queue is, and counted in the
    /// `keel_server_inbox_dropped_total` metric. Must be at least
    /// [`max_message_bytes`](Config::max_message_bytes), so the largest message a
    /// peer configured alike sends fits an empty queue. Default 64 MiB.
    pub inbox_queue_max_bytes: u64,
    /// Largest snapshot accepted from a leader, in bytes of snapshot file (the state
    /// machine's image plus about 0.01% of chunk framing); a larger stream is aborted
    /// and its partial file removed, so a runaway or hostile sender cannot fill the
    /// disk. A node whose state outgrew it can then only catch up from the log: raise
    /// it above the size of the leader's newest file in `snap/`. Default 64 GiB
    /// ([`DEFAULT_MAX_SNAPSHOT_RECEIVE_BYTES`]).
    pub max_snapshot_receive_bytes: u64,
    /// Readies handed to the persist stage and not yet reported durable, at most.
    pub max_inflight_readies: usize,
    /// Default timeout of every blocking `Db` call, in milliseconds.
    pub request_timeout_ms: u64,
    /// Seed of raft-core's randomness (election timeouts).
    pub seed: u64,
    /// Ask the OS to run the stage threads as `SCHED_BATCH` (a woken stage does not
    /// preempt the stage that woke it) and snapshot writing at a lower priority
    /// (Linux only; see `thread_policy`). Default on.
    pub scheduler_hints: bool,
    /// Join an existing cluster: the node starts with no membership at all (`peers`
    /// must be empty), never campaigns on its own, and waits for the leader to send it
    /// the log or a snapshot after it was added as a member. Ignored once the node has
    /// data: membership then comes from its log and snapshots.
    pub join: bool,
    /// Told about every membership change this node applies (also while replaying the
    /// log at start) and about the member addresses restored from snapshots, e.g. to
    /// teach the transport where each member is.
    pub membership_observer: Option<Arc<dyn MembershipObserver>>,
}

/// Watches membership changes as they take effect on a node, and learns the members'
/// peer addresses (e.g. to teach the transport where each member is).
///
/// Addresses are replicated state (see [`Members`](crate::Members)): a change that
/// adds a node carries its address ([`member_context`](crate::member_context)), and
/// snapshots carry every member's, so the log below them can be compacted. Every
/// method has a default, so an observer implements only what it needs.
pub trait MembershipObserver: Send + Sync {
    /// `change` was applied, leaving the membership `conf_state`. The default does
    /// nothing; [`changed`](Self::changed) calls it.
    fn applied(&self, change: &keel_raft::ConfChangeV2, conf_state: &keel_raft::ConfState) {
        let _ = (change, conf_state);
    }

    /// `change`, the log entry at `index`, was applied, leaving the membership
    /// `conf_state`; the address it carries, if any, is
    /// [`member_address(change)`](crate::member_address). Called on the raft thread
    /// before any message to a newly added peer is sent, so it must not block; a
    /// change may be reported again when the log is replayed after a restart. The
    /// default calls [`applied`](Self::applied).
    fn changed(
        &self,
        index: u64,
        change: &keel_raft::ConfChangeV2,
        conf_state: &keel_raft::ConfState,
    ) {
        let _ = index;
        self.applied(change, conf_state);
    }

    /// The whole membership with the members' addresses, as of the snapshot at
    /// `members.index`: told at start when the node loads a snapshot of its own
    /// (before the log above it is replayed through [`changed`](Self::changed)), and
    /// each time it installs a snapshot from the leader. The latter runs on the apply
    /// thread, and [`changed`](Self::changed) may already have reported entries above
    /// the snapshot by then: what they said is newer than `members`. Must not block.
    /// The default does nothing.
    fn restored(&self, members: &crate::Members) {
        let _ = members;
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("peers", &self.peers)
            .field("data_dir", &self.data_dir)
            .field("has_transport", &self.transport.is_some())
            .field("log_backend", &self.log_backend)
            .field("fsync", &self.fsync)
            .field("tick_ms", &self.tick_ms)
            .field("election_ticks", &self.election_ticks)
            .field("heartbeat_ticks", &self.heartbeat_ticks)
            .field("snapshot_every", &self.snapshot_every)
            .field("snapshot_log_percent", &self.snapshot_log_percent)
            .field("catch_up_entries", &self.catch_up_entries)
            .field("join", &self.join)
            .field("scheduler_hints", &self.scheduler_hints)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A one-node cluster storing its data under `data_dir`, with every other setting
    /// at its default; change the fields you need before opening the node.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut config = keel_engine::Config::single_node(dir.path());
    /// config.tick_ms = 10; // elect itself within ~100 ms
    /// let db = keel_engine::Db::open(config)?;
    /// db.put(b"k", b"v")?;
    /// db.close()?;
    /// # Ok::<(), keel_engine::Error>(())
    /// ```
    pub fn single_node(data_dir: impl AsRef<Path>) -> Config {
        Config {
            id: 1,
            peers: vec![1],
            data_dir: data_dir.as_ref().to_path_buf(),
            transport: None,
            fs: StdFs::shared(),
            log_backend: LogBackend::Wal,
            state_machine: StateMachineKind::Memory,
            fsync: true,
            wal_segment_size_bytes: 64 << 20,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_every: 100_000,
            snapshot_log_percent: 100,
            catch_up_entries: 5_000,
            snapshots_retained: 3,
            max_entry_bytes: 1 << 20,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            max_uncommitted_size_bytes: 64 << 20,
            max_committed_size_per_ready_bytes: 16 << 20,
            log_cache_max_bytes: 16 << 20,
            request_queue_len: 4096,
            request_queue_max_bytes: 64 << 20,
            max_pending_requests: 65_536,
            inbox_queue_len: 4096,
            inbox_queue_max_bytes: 64 << 20,
            max_snapshot_receive_bytes: DEFAULT_MAX_SNAPSHOT_RECEIVE_BYTES,
            max_inflight_readies: 64,
            request_timeout_ms: 5_000,
            scheduler_hints: true,
            seed: 0,
            join: false,
            membership_observer: None,
        }
    }

    /// Node `id` of a cluster whose initial voters are `peers`, reaching the others
    /// through `transport` (a [`TcpTransport`](crate::transport::TcpTransport) between
    /// processes, an [`InProcessNetwork`](crate::transport::InProcessNetwork) within one).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keel_engine::transport::InProcessNetwork;
    /// use keel_engine::{Config, Db};
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// let net = Arc::new(InProcessNetwork::new(7));
    /// let nodes: Vec<Db> = (1..=3)
    ///     .map(|id| {
    ///         let mut c = Config::cluster(id, vec![1, 2, 3], dir.path().join(id.to_string()), net.clone());
    ///         c.tick_ms = 10;
    ///         Db::open(c)
    ///     })
    ///     .collect::<Result<_, _>>()?;
    /// // Writes need a leader: a brand-new cluster elects one within a few ticks.
    /// while nodes.iter().any(|n| n.status().leader.is_none()) {
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    /// }
    /// // Any node takes writes (a follower passes them to the leader) and reads them back.
    /// nodes[2].put(b"k", b"v")?;
    /// assert_eq!(nodes[0].get(b"k")?, Some(b"v".to_vec()));
    /// for db in &nodes {
    ///     db.close()?;
    /// }
    /// # Ok::<(), keel_engine::Error>(())
    /// ```
    pub fn cluster(
        id: u64,
        peers: Vec<u64>,
        data_dir: impl AsRef<Path>,
        transport: Arc<dyn Transport>,
    ) -> Config {
        Config {
            id,
            peers,
            transport: Some(transport),
            seed: id,
            ..Config::single_node(data_dir)
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::Config(why.to_string()));
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.join {
            if !self.peers.is_empty() {
                return bad("a joining node starts without voters: peers must be empty");
            }
            if self.transport.is_none() {
                return bad("a joining node needs a transport");
            }
        } else if !self.peers.contains(&self.id) {
            return bad("peers must include this node's id");
        }
        if self.peers.len() > 1 && self.transport.is_none() {
            return bad("a cluster of several nodes needs a transport");
        }
        let mut unique = self.peers.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != self.peers.len() || unique.contains(&0) {
            return bad("peers must be distinct non-zero ids");
        }
        if self.tick_ms == 0 {
            return bad("tick_ms must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be at least 1");
        }
        let queues = [
            self.request_queue_len,
            self.inbox_queue_len,
            self.max_inflight_readies,
            self.max_pending_requests,
        ];
        if queues.contains(&0) {
            return bad("queue lengths and max_inflight_readies must be at least 1");
        }
        if self.max_entry_bytes == 0 {
            return bad("max_entry_bytes must be at least 1");
        }
        let max_command_bytes = self.max_entry_bytes.saturating_add(COMMAND_OVERHEAD_BYTES);
        if self.request_queue_max_bytes < max_command_bytes {
            return Err(Error::Config(format!(
                "request_queue_max_bytes ({}) must be at least max_entry_bytes plus \
                 {COMMAND_OVERHEAD_BYTES} ({max_command_bytes}): the largest write accepted \
                 must fit an empty queue",
                self.request_queue_max_bytes
            )));
        }
        let max_message_bytes = self.max_message_bytes();
        if self.inbox_queue_max_bytes < max_message_bytes {
            return Err(Error::Config(format!(
                "inbox_queue_max_bytes ({}) must be at least {max_message_bytes}, the \
                 largest Raft message max_entry_bytes and max_size_per_msg_bytes allow",
                self.inbox_queue_max_bytes
            )));
        }
        if let Some(transport) = &self.transport {
            let frame_bytes = transport.max_message_bytes();
            if max_message_bytes > frame_bytes {
                return Err(Error::Config(format!(
                    "max_entry_bytes ({}) and max_size_per_msg_bytes ({}) allow Raft \
                     messages of up to {max_message_bytes} bytes, more than the transport \
                     carries in one message ({frame_bytes} bytes): such a write could never \
                     be replicated; lower them or raise the transport's max_frame_bytes",
                    self.max_entry_bytes, self.max_size_per_msg_bytes
                )));
            }
        }
        if self.max_snapshot_receive_bytes == 0 {
            return bad("max_snapshot_receive_bytes must be at least 1");
        }
        if self.snapshots_retained == 0 {
            return bad("snapshots_retained must be at least 1");
        }
        // The timing and flow-control knobs raft-core checks itself.
        self.raft_config(0)
            .validate()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// The largest encoded Raft message carrying entries this node may send, in bytes:
    /// an append of one write of `max_entry_bytes`, or one filled with smaller entries
    /// up to `max_size_per_msg_bytes` (which raft-core counts as 24 bytes plus the
    /// data per entry, while the codec needs at most 31), plus the message's own
    /// fields. A transport must carry messages this large, or a write accepted from a
    /// client could never be replicated; [`validate`](Config::validate) checks it.
    pub fn max_message_bytes(&self) -> u64 {
        let one_write = self
            .max_entry_bytes
            .saturating_add(COMMAND_OVERHEAD_BYTES)
            .saturating_add(ENTRY_OVERHEAD_BYTES);
        let filled = (self.max_size_per_msg_bytes / 24).saturating_mul(31);
        one_write
            .max(filled.saturating_add(ENTRY_OVERHEAD_BYTES))
            .saturating_add(MESSAGE_OVERHEAD_BYTES)
    }

    /// The raft-core configuration these settings imply.
    pub(crate) fn raft_config(&self, applied: u64) -> keel_raft::Config {
        keel_raft::Config {
            id: self.id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            applied,
            max_size_per_msg_bytes: self.max_size_per_msg_bytes,
            max_inflight_msgs: self.max_inflight_msgs,
            max_inflight_bytes: self.max_inflight_bytes,
            max_uncommitted_size_bytes: self.max_uncommitted_size_bytes,
            max_committed_size_per_ready_bytes: self.max_committed_size_per_ready_bytes,
            // Both keep a partitioned node from disrupting a healthy leader when it
            // comes back, and let a leader that lost its quorum step down.
            check_quorum: true,
            pre_vote: true,
            seed: self.seed,
            ..keel_raft::Config::new(self.id)
        }
    }

    /// The sync policy the log is opened with: the one place the engine acts on `fsync`.
    pub(crate) fn log_sync_policy(&self) -> keel_wal::SyncPolicy {
        if self.fsync {
            keel_wal::SyncPolicy::Always
        } else {
            keel_wal::SyncPolicy::Never
        }
    }

    /// Where the WAL lives.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// Where snapshots live.
    pub fn snap_dir(&self) -> PathBuf {
        self.data_dir.join("snap")
    }

    /// Where the RocksDB state machine lives: a subdirectory of the RocksDB log's
    /// directory, which RocksDB leaves alone (it only touches files it named).
    pub fn rocksdb_sm_dir(&self) -> PathBuf {
        self.data_dir.join("rocksdb").join("sm")
    }
}
