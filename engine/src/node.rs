//! One node: opening its storage (recovery), wiring the stages together, and stopping
//! them.
//!
//! The thread and channel diagram is in the crate documentation.
//!
//! Ownership: the raft stage alone owns the `RawNode`; the persist stage alone writes
//! the log and the cache's tail; the apply stage alone writes the state machine and
//! takes snapshots. Shared, lock-protected: the waiting-proposal registry, the
//! published status, the state machine for readers, and the `LogCache` (its own lock).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use keel_log_cache::{LogCache, LogCacheOptions};
use parking_lot::{Condvar, Mutex, RwLock};
use raft_core::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, HardState, RawNode, StateRole, Storage,
};
use snapshot::{SnapshotStore, StoreOptions};
use wal::{LogBatch, LogStore, Wal, WalOptions};

use crate::apply_stage::{snapshot_file_bytes, ApplyStage};
use crate::config::{Config, LogBackend, StateMachineKind};
use crate::error::{Error, Fatal, FatalKind, Result, StopReason};
use crate::members::Members;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::persist_stage::PersistStage;
use crate::proposals::{AppliedWatch, Proposals};
use crate::raft_stage::{RaftStage, Request};
use crate::snapshot_transfer::{NodeSink, SnapshotSenderStage};
use crate::state_machine::{MemoryStateMachine, StateMachine};
use crate::supervisor::spawn_stage;
use crate::thread_policy::ThreadPolicy;
use crate::transport::MessageSink;

/// What the raft stage publishes for `status()`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RaftView {
    pub(crate) role: StateRole,
    pub(crate) term: u64,
    pub(crate) leader: u64,
    pub(crate) commit: u64,
    pub(crate) conf_state: ConfState,
}

/// State every stage and every `Db` handle of one node shares.
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) metrics: Metrics,
    pub(crate) proposals: Proposals,
    pub(crate) applied: AppliedWatch,
    view: RwLock<RaftView>,
    stopped: AtomicBool,
    // Why the node stopped; set once (a fatal cause may still replace `Closed`).
    stop: Mutex<Option<StopReason>>,
    stop_known: Condvar,
    // Wakes the raft stage (its stop channel) so a fatal error elsewhere ends it now
    // rather than at its next tick.
    wake_raft: Sender<()>,
}

// Longest a caller whose request channel closed waits for the reason to be recorded:
// the supervisor records it right after the stage's unwinding, so this is only a
// bound against a bug.
const STOP_REASON_WAIT: Duration = Duration::from_secs(1);

impl Shared {
    /// Stops the node because of `fatal`: logged at error level, kept for every later
    /// call to report (the first fatal cause wins; it replaces a clean close in
    /// progress), every waiter woken, and the raft stage told to end.
    pub(crate) fn fail(&self, fatal: Fatal) {
        let mut stop = self.stop.lock();
        match &*stop {
            // Passed on by the stage it woke: already said.
            Some(StopReason::Fatal(first)) if *first == fatal => {}
            Some(StopReason::Fatal(first)) => {
                log::error!("node {}: also, after {first}: {fatal}", self.id);
            }
            _ => {
                log::error!("node {} stopping: {fatal}", self.id);
                *stop = Some(StopReason::Fatal(fatal));
            }
        }
        self.set_stopped(stop);
        let _ = self.wake_raft.try_send(());
    }

    /// Marks the node closed (by `Db::close` or the last handle), unless it stopped
    /// already.
    pub(crate) fn close(&self) {
        let mut stop = self.stop.lock();
        if stop.is_none() {
            *stop = Some(StopReason::Closed);
        }
        self.set_stopped(stop);
    }

    fn set_stopped(&self, stop: parking_lot::MutexGuard<'_, Option<StopReason>>) {
        self.stopped.store(true, Ordering::Release);
        drop(stop);
        self.stop_known.notify_all();
        self.applied.stop();
    }

    /// Why the node stopped; `None` while it runs.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stop.lock().clone()
    }

    /// The fatal error that stopped the node, if one did.
    pub(crate) fn fatal(&self) -> Option<Fatal> {
        match &*self.stop.lock() {
            Some(StopReason::Fatal(fatal)) => Some(fatal.clone()),
            _ => None,
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Why the node stopped, for a caller that saw a stage's channel close: that
    /// happens only after the reason is recorded, so the wait is a bound, not a delay.
    pub(crate) fn await_stop_reason(&self) -> StopReason {
        let deadline = Instant::now() + STOP_REASON_WAIT;
        let mut stop = self.stop.lock();
        // Bounded by the deadline.
        loop {
            if let Some(reason) = &*stop {
                return reason.clone();
            }
            if self.stop_known.wait_until(&mut stop, deadline).timed_out() {
                return stop.clone().unwrap_or_else(|| {
                    StopReason::Fatal(Fatal::here(
                        FatalKind::Invariant,
                        "a stage's channel closed but the node recorded no reason",
                    ))
                });
            }
        }
    }

    /// The error a call on a stopped node returns (the call was never proposed).
    pub(crate) fn stopped_error(&self) -> Error {
        Error::Stopped(self.await_stop_reason())
    }

    pub(crate) fn publish<S: Storage>(&self, raw: &RawNode<S>) {
        let r = &raw.raft;
        let mut v = self.view.write();
        v.role = r.state;
        v.term = r.term;
        v.leader = r.leader_id;
        v.commit = r.raft_log.committed;
    }

    pub(crate) fn set_conf_state(&self, cs: &ConfState) {
        self.view.write().conf_state = cs.clone();
    }

    pub(crate) fn view(&self) -> RaftView {
        self.view.read().clone()
    }
}

/// A running node: its shared state, the handles callers use, and its threads.
pub(crate) struct Node {
    pub(crate) shared: Arc<Shared>,
    pub(crate) requests: Sender<Request>,
    /// Bytes of the writes in `requests`, at most (`request_queue_max_bytes`).
    pub(crate) request_budget: Arc<crate::budget::ByteBudget>,
    pub(crate) sm: Arc<RwLock<dyn StateMachine>>,
    pub(crate) cache: LogCache<dyn LogStore>,
    pub(crate) config: Config,
    /// The member address book the apply stage keeps.
    pub(crate) members: Arc<RwLock<Members>>,
    stop: Sender<()>,
    sink: Arc<dyn MessageSink>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    // Given up by `shutdown`, once nothing of this node writes the directory.
    lock: Mutex<Option<crate::data_dir::DataDirLock>>,
}

fn open_log(config: &Config) -> Result<Arc<dyn LogStore>> {
    match config.log_backend {
        LogBackend::Wal => {
            let opts = WalOptions {
                segment_size_bytes: config.wal_segment_size_bytes,
                sync_policy: config.log_sync_policy(),
                ..WalOptions::default()
            };
            let wal = Wal::open(Arc::clone(&config.fs), config.wal_dir(), opts)?;
            Ok(Arc::new(wal))
        }
        #[cfg(feature = "rocksdb")]
        LogBackend::RocksDb => {
            let log = wal::RocksLogStore::open_with_sync_policy(
                config.data_dir.join("rocksdb"),
                config.log_sync_policy(),
            )?;
            Ok(Arc::new(log))
        }
    }
}

fn open_state_machine(config: &Config) -> Result<Arc<RwLock<dyn StateMachine>>> {
    Ok(match config.state_machine {
        StateMachineKind::Memory => Arc::new(RwLock::new(MemoryStateMachine::new())),
        #[cfg(feature = "rocksdb")]
        StateMachineKind::RocksDb => Arc::new(RwLock::new(
            crate::state_machine::RocksStateMachine::open(config.rocksdb_sm_dir())?,
        )),
    })
}

/// Brings the state machine up to the newest snapshot that passes every check and
/// returns that snapshot's description (metadata and member addresses). Damaged
/// snapshots are skipped (the log still reaches back to an older one, see the apply
/// stage). A persistent state machine that already holds a snapshot's index only reads
/// its checked header.
fn load_snapshot(
    id: u64,
    sm: &mut dyn StateMachine,
    store: &SnapshotStore,
) -> Result<Option<snapshot::SnapshotInfo>> {
    let held = sm.applied_index();
    for snap_id in store.list()? {
        let outcome = if snap_id.index <= held {
            store.info(snap_id).map_err(Error::from)
        } else {
            sm.restore_snapshot(store, snap_id)
        };
        match outcome {
            Ok(meta) => return Ok(Some(meta)),
            Err(Error::Snapshot(e @ snapshot::SnapshotError::Damaged { .. })) => {
                log::error!("node {id}: skipping damaged snapshot {snap_id:?}: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

// The scheduler hint of a stage thread, if hints are on.
fn stage_policy(hints: bool) -> Option<ThreadPolicy> {
    hints.then_some(ThreadPolicy::Stage)
}

impl Node {
    pub(crate) fn open(config: Config) -> Result<Node> {
        config.validate()?;
        let id = config.id;
        let hints = config.scheduler_hints;
        config.fs.create_dir_all_durably(&config.data_dir)?;
        let lock = crate::data_dir::lock(config.fs.as_ref(), &config.data_dir)?;
        let log = open_log(&config)?;
        let store = Arc::new(SnapshotStore::open(
            Arc::clone(&config.fs),
            config.snap_dir(),
            StoreOptions {
                retain_count: config.snapshots_retained,
                max_receive_bytes: config.max_snapshot_receive_bytes,
                ..StoreOptions::default()
            },
        )?);
        if is_brand_new(log.as_ref(), &store)? {
            bootstrap(&config, log.as_ref())?;
        }
        let sm = open_state_machine(&config)?;
        let loaded_info = load_snapshot(id, &mut *sm.write(), &store)?;
        let loaded = loaded_info.as_ref().map(|i| i.metadata.clone());
        let cache = LogCache::open(
            Arc::clone(&log),
            LogCacheOptions {
                max_bytes: config.log_cache_max_bytes,
            },
        )?;
        let (conf_state, bootstrapped) =
            recover_log(&config, log.as_ref(), &cache, loaded.as_ref())?;
        cache.set_conf_state(conf_state.clone());
        let held = sm.read().applied_index();
        let log_end = cache
            .last_index()?
            .max(loaded.as_ref().map_or(0, |m| m.index));
        if held > log_end {
            // Entries at or below `held` would be skipped as already applied, yet the
            // log and snapshots no longer have them: new entries there would be lost.
            return Err(Error::Config(format!(
                "the state machine has applied index {held} but the log and snapshots end \
                 at {log_end}; they were removed or lost writes (to rebuild the state \
                 machine from them, remove {})",
                config.rocksdb_sm_dir().display()
            )));
        }
        // Raft hands out everything after the snapshot again, even what a persistent
        // state machine already holds, so membership changes after the snapshot are
        // applied to raft; the apply stage skips their operations by index.
        // The bootstrap entries are membership changes already folded into `conf_state`
        // and change nothing in the state machine: raft counts them applied, so a lone
        // voter can campaign at once.
        let applied = loaded
            .as_ref()
            .map_or(bootstrapped, |m| m.index.max(bootstrapped));
        // The address book as of `applied`; the log above it replays into it.
        let members = match loaded_info {
            Some(info) => Members::from_snapshot(info),
            None => Members {
                index: applied,
                conf_state: conf_state.clone(),
                ..Members::default()
            },
        };
        if let (Some(observer), Some(_)) = (&config.membership_observer, &loaded) {
            // Before the raft thread replays the changes above the snapshot.
            observer.restored(&members);
        }
        let members = Arc::new(RwLock::new(members));
        let mut raw = RawNode::new(&config.raft_config(applied), cache.clone())?;
        if raw.raft.prs.is_singleton() && raw.raft.prs.is_voter(id) {
            // A lone voter need not wait an election timeout to lead.
            raw.campaign()?;
        }

        let (stop_tx, stop_rx) = bounded(1);
        let shared = Arc::new(Shared {
            id,
            metrics: Metrics::new(id)?,
            proposals: Proposals::new(config.max_pending_requests),
            applied: AppliedWatch::new(applied),
            view: RwLock::new(RaftView {
                conf_state: conf_state.clone(),
                ..RaftView::default()
            }),
            stopped: AtomicBool::new(false),
            stop: Mutex::new(None),
            stop_known: Condvar::new(),
            wake_raft: stop_tx.clone(),
        });
        shared.publish(&raw);

        let inflight = config.max_inflight_readies;
        let (request_tx, request_rx) = bounded(config.request_queue_len);
        let (inbox_tx, inbox_rx) = bounded(config.inbox_queue_len);
        let (persist_tx, persist_rx) = bounded(inflight);
        let (persisted_tx, persisted_rx) = bounded(inflight);
        // Each task holds at most max_committed_size_per_ready_bytes of entries.
        let (apply_tx, apply_rx) = bounded(16);
        let (wake_tx, wake_rx) = bounded(1);
        let (snap_tx, snap_rx) = bounded(4);
        let (snap_status_tx, snap_status_rx) = bounded(8);
        let outbox = Outbox::new(id, config.transport.clone(), snap_tx);

        let mut threads = Vec::new();
        let persist = PersistStage {
            shared: Arc::clone(&shared),
            tasks: persist_rx,
            done: persisted_tx,
            cache: cache.clone(),
            outbox: outbox.clone(),
            max_batch: inflight,
        };
        let policy = stage_policy(hints);
        threads.push(spawn_stage(
            Arc::clone(&shared),
            format!("keel-persist-{id}"),
            policy,
            persist,
        )?);
        let apply = ApplyStage {
            shared: Arc::clone(&shared),
            tasks: apply_rx,
            wake_raft: wake_tx,
            sm: Arc::clone(&sm),
            cache: cache.clone(),
            store: Arc::clone(&store),
            conf_state,
            conf_index: applied,
            applied_through: applied,
            snapshot_every: config.snapshot_every,
            snapshot_log_percent: config.snapshot_log_percent,
            scheduler_hints: config.scheduler_hints,
            logged_bytes_since_snapshot: 0,
            last_snapshot_bytes: loaded
                .as_ref()
                .map_or(0, |m| snapshot_file_bytes(&store, m)),
            catch_up_entries: config.catch_up_entries,
            last_snapshot_index: loaded.as_ref().map_or(0, |m| m.index),
            applied_term: loaded.as_ref().map_or(0, |m| m.term),
            max_batch: 16,
            commit_index: Arc::new(AtomicU64::new(0)),
            saving: None,
            members: Arc::clone(&members),
            observer: config.membership_observer.clone(),
        };
        threads.push(spawn_stage(
            Arc::clone(&shared),
            format!("keel-apply-{id}"),
            policy,
            apply,
        )?);
        let snap_status_rx = match &config.transport {
            Some(transport) => {
                let sender = SnapshotSenderStage {
                    shared: Arc::clone(&shared),
                    id,
                    transport: Arc::clone(transport),
                    store: Arc::clone(&store),
                    requests: snap_rx,
                    reports: snap_status_tx,
                };
                threads.push(spawn_stage(
                    Arc::clone(&shared),
                    format!("keel-snapsend-{id}"),
                    policy,
                    sender,
                )?);
                snap_status_rx
            }
            // No peers, no snapshots to send.
            None => crossbeam_channel::never(),
        };
        let raft = RaftStage {
            raw,
            shared: Arc::clone(&shared),
            requests: request_rx,
            inbox: if config.transport.is_some() {
                inbox_rx
            } else {
                crossbeam_channel::never()
            },
            stop: stop_rx,
            persist_tx,
            persisted_rx,
            apply_tx,
            applied_rx: wake_rx,
            snap_status_rx,
            outbox,
            tick_ms: config.tick_ms,
            read_expiry_ticks: 4 * config.election_ticks as u64,
            max_inflight_readies: inflight,
            max_pending_reads: config.max_pending_requests,
            max_batch_bytes: config.max_size_per_msg_bytes,
            read_ctx_seed: read_ctx_seed(),
            last_number: 0,
            observer: config.membership_observer.clone(),
        };
        threads.push(spawn_stage(
            Arc::clone(&shared),
            format!("keel-raft-{id}"),
            policy,
            raft,
        )?);
        let sink: Arc<dyn MessageSink> = Arc::new(NodeSink {
            id,
            inbox: inbox_tx,
            inbox_budget: crate::budget::ByteBudget::new(config.inbox_queue_max_bytes),
            store: Arc::clone(&store),
            metrics: shared.metrics.clone(),
        });
        if let Some(transport) = &config.transport {
            transport.register(id, Arc::clone(&sink));
        }
        // Without a transport nothing arrives; the raft stage then waits on `never()`.
        Ok(Node {
            shared,
            requests: request_tx,
            request_budget: crate::budget::ByteBudget::new(config.request_queue_max_bytes),
            sm,
            cache,
            config,
            members,
            stop: stop_tx,
            sink,
            threads: Mutex::new(threads),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Stops every stage and joins its thread. Idempotent. What was acknowledged is
    /// already durable (the persist stage syncs before anything is acknowledged); the
    /// persist stage finishes the writes that queued before it exits.
    pub(crate) fn shutdown(&self) {
        // New calls fail from now on; the raft stage ends on the stop message.
        self.shared.close();
        // Taken first, given up last: a concurrent second call finds no threads to join
        // and must not give it up while this one still joins them.
        let lock = self.lock.lock().take();
        let _ = self.stop.try_send(());
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock());
        // The raft stage is last in the list; joining it first lets the others see
        // their inputs close. Joining in reverse does exactly that.
        for t in threads.into_iter().rev() {
            let name = t.thread().name().unwrap_or("keel").to_string();
            // The supervisor catches every panic of a stage; this is a bug's net.
            if t.join().is_err() {
                self.shared.fail(Fatal {
                    kind: FatalKind::Panic,
                    thread: name,
                    detail: "the thread panicked outside its supervisor".into(),
                });
            }
        }
        // Only now: unregistering drops the inbox's sender, which the raft stage would
        // otherwise see as a failure.
        if let Some(transport) = &self.config.transport {
            transport.unregister(self.shared.id, &self.sink);
        }
        // The stages are joined; the log's own background thread is the last writer.
        self.cache.log().stop_background_work();
        drop(lock);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// Different on every start, so a restarted node's read contexts never match requests
// its previous run left in the leader's queue.
fn read_ctx_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos << 16
}

// A node that has never written anything: no log, no hard state, no snapshot.
fn is_brand_new(log: &dyn LogStore, store: &SnapshotStore) -> Result<bool> {
    Ok(log.last_index() == 0
        && log.snapshot_marker().is_none()
        && log.hard_state().is_empty()
        && store.list()?.is_empty())
}

/// Writes the initial membership as the first entries of the log, as etcd does: one
/// `AddNode` per initial voter (sorted), all at term 1 and committed. Every node of a
/// new cluster writes the same entries, so their logs agree; a node added later
/// receives them from the leader and rebuilds the membership from the log. A joining
/// node writes nothing: its log comes from the leader.
fn bootstrap(config: &Config, log: &dyn LogStore) -> Result<()> {
    if config.join || config.peers.is_empty() {
        return Ok(());
    }
    let mut voters = config.peers.clone();
    voters.sort_unstable();
    let entries: Vec<Entry> = voters
        .iter()
        .enumerate()
        .map(|(i, &node_id)| {
            let cc = ConfChangeV2 {
                transition: ConfChangeTransition::Auto,
                changes: vec![ConfChangeSingle {
                    change_type: ConfChangeType::AddNode,
                    node_id,
                }],
                context: Vec::new(),
            };
            Entry {
                term: 1,
                index: i as u64 + 1,
                entry_type: EntryType::ConfChangeV2,
                data: raft_core::codec::encode(&cc),
            }
        })
        .collect();
    let batch = LogBatch {
        hard_state: Some(HardState {
            term: 1,
            vote: 0,
            commit: entries.len() as u64,
        }),
        entries,
        snapshot: None,
    };
    // Durable (synced if the log's policy syncs): raft counts these entries committed.
    log.write(&batch, true)?;
    Ok(())
}

// Most initial voters read back from the bootstrap entries.
const MAX_BOOTSTRAP_ENTRIES: u64 = 1024;

/// The membership the bootstrap entries at the head of the log establish, and how many
/// there are (0 when the log does not start with them, e.g. a joining node's empty log).
fn bootstrap_membership(log: &dyn LogStore) -> Result<(Vec<u64>, u64)> {
    let committed = log.hard_state().commit.min(log.last_index());
    if log.first_index() != 1 || committed == 0 {
        return Ok((Vec::new(), 0));
    }
    let hi = committed.min(MAX_BOOTSTRAP_ENTRIES) + 1;
    let mut voters = Vec::new();
    for e in log.entries(1, hi, u64::MAX)? {
        let add = (e.term == 1 && e.entry_type == EntryType::ConfChangeV2)
            .then(|| raft_core::codec::decode::<ConfChangeV2>(&e.data).ok())
            .flatten()
            .filter(|cc| cc.context.is_empty())
            .and_then(|cc| match cc.changes.as_slice() {
                [c] if c.change_type == ConfChangeType::AddNode => Some(c.node_id),
                _ => None,
            });
        match add {
            Some(id) if e.index == voters.len() as u64 + 1 => voters.push(id),
            _ => break,
        }
    }
    let n = voters.len() as u64;
    Ok((voters, n))
}

/// Brings the log in line with the snapshot the state machine was loaded from, and
/// returns the membership to start with and the number of bootstrap entries it
/// already includes (to be counted as applied).
fn recover_log(
    config: &Config,
    log: &dyn LogStore,
    cache: &LogCache<dyn LogStore>,
    loaded: Option<&raft_core::SnapshotMetadata>,
) -> Result<(ConfState, u64)> {
    let marker = cache.snapshot_metadata();
    let loaded_index = loaded.map_or(0, |m| m.index);
    if marker.index > loaded_index {
        // The log restarts after a snapshot we could not load: entries between are gone.
        return Err(Error::Config(format!(
            "the log starts after snapshot {} but the newest loadable snapshot is at {loaded_index}; \
             the snapshot directory is missing or damaged",
            marker.index
        )));
    }
    let Some(meta) = loaded else {
        if log.first_index() > 1 {
            return Err(Error::Config(format!(
                "the log is compacted to {} but there is no snapshot",
                log.first_index() - 1
            )));
        }
        let (voters, bootstrapped) = bootstrap_membership(log)?;
        if bootstrapped > 0 {
            return Ok((
                ConfState {
                    voters,
                    ..ConfState::default()
                },
                bootstrapped,
            ));
        }
        // A log from before bootstrap entries, or a joining node's (empty) one.
        let voters = if config.join {
            Vec::new()
        } else {
            config.peers.clone()
        };
        return Ok((
            ConfState {
                voters,
                ..ConfState::default()
            },
            0,
        ));
    };
    let mut hs = log.hard_state();
    let in_log = meta.index <= cache.last_index().unwrap_or(0)
        && cache.term(meta.index).is_ok_and(|t| t == meta.term);
    let mut batch = LogBatch::default();
    if meta.index > marker.index && !in_log {
        // A snapshot received from the leader whose marker never reached the log: the
        // log restarts after it, as it would have.
        batch.snapshot = Some(meta.clone());
    }
    if hs.term < meta.term {
        // A term below the last entry's would confuse the next election; moving to a
        // later term (with no vote in it) is always safe.
        hs.term = meta.term;
        hs.vote = 0;
        batch.hard_state = Some(hs);
    }
    if hs.commit < meta.index {
        // Everything in a snapshot was committed; the hard state may lag because the
        // apply stage can snapshot before the persist stage writes the newer commit.
        hs.commit = meta.index;
        batch.hard_state = Some(hs);
    }
    if !batch.is_empty() {
        log.write(&batch, true)?;
    }
    if batch.snapshot.is_some() {
        cache.apply_snapshot(meta.clone())?;
    } else if meta.index > marker.index {
        cache.record_snapshot(meta.clone())?;
    }
    Ok((meta.conf_state.clone(), 0))
}
