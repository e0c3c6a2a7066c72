//! One node: opening its storage (recovery), wiring the stages together, and stopping
//! them.
//!
//! The thread and channel diagram is in the crate documentation.
//!
//! Ownership: the raft stage alone owns the `RawNode`; the persist stage alone writes
//! the log and the cache's tail; the apply stage alone writes the state machine and
//! takes snapshots. Shared, lock-protected: the waiting-proposal registry, the
//! published status, the state machine for readers, and the `LogCache` (its own lock).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use parking_lot::{Mutex, RwLock};
use raft_core::{RawNode, Storage};
use snapshot::{LogCache, LogCacheOptions, SnapshotStore, StoreOptions};
use wal::LogStore;

use crate::apply_stage::{snapshot_file_bytes, ApplyStage};
use crate::config::Config;
use crate::error::{Error, Fatal, FatalKind, Result};
use crate::members::Members;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::persist_stage::PersistStage;
use crate::proposals::{AppliedWatch, Proposals};
use crate::raft_stage::{RaftStage, Request};
use crate::recovery::{
    bootstrap, is_brand_new, load_snapshot, open_log, open_state_machine, recover_log,
};
use crate::shared::Shared;
use crate::snapshot_transfer::{NodeSink, SnapshotSenderStage};
use crate::state_machine::StateMachine;
use crate::supervisor::spawn_stage;
use crate::thread_policy::ThreadPolicy;
use crate::transport::MessageSink;

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
        let shared = Arc::new(Shared::new(
            id,
            Metrics::new(id)?,
            Proposals::new(config.max_pending_requests),
            AppliedWatch::new(applied),
            conf_state.clone(),
            stop_tx.clone(),
        ));
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
            fsync: config.fsync,
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

