//! One node: the wiring. Recovers its storage (`recovery.rs`), builds the shared state
//! (`shared.rs`) and each stage (each stage's own constructor), joins them with bounded
//! channels, starts their threads, and stops them. Stages never import this module.
//!
//! The thread and channel diagram is in the crate documentation.
//!
//! Ownership: the raft stage alone owns the `RawNode`, and sets the log cache's
//! membership when a change takes effect; the persist stage alone appends to the log
//! (entries, hard state, snapshot markers) and to the cache's tail; the apply stage
//! writes the state machine, takes snapshots, and compacts the cache and then the log;
//! recovery writes the log only before any stage starts. Shared, lock-protected: the
//! waiting-proposal registry, the published status and stop reason, the state machine
//! for readers, the member address book, and the `LogCache` (its own lock).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use keel_log_cache::LogCache;
use keel_wal::LogStore;
use parking_lot::{Mutex, RwLock};

use crate::apply_stage::{ApplyInputs, ApplyStage};
use crate::config::Config;
use crate::error::{Fatal, FatalKind, Result};
use crate::members::Members;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::persist_stage::PersistStage;
use crate::proposals::{AppliedWatch, Proposals};
use crate::raft_stage::{RaftLinks, RaftStage, Request};
use crate::recovery;
use crate::shared::Shared;
use crate::snapshot_transfer::{NodeSink, SnapshotSenderStage};
use crate::state_machine::StateMachine;
use crate::supervisor::spawn_stage;
use crate::thread_policy::ThreadPolicy;
use crate::transport::MessageSink;

/// A running node: its shared state, the handles callers use, and its threads.
pub(crate) struct Node<S: StateMachine> {
    pub(crate) shared: Arc<Shared>,
    /// The callers waiting for their commands' responses (also in `shared`, untyped).
    pub(crate) proposals: Arc<Proposals<S::Response>>,
    pub(crate) requests: Sender<Request>,
    /// Bytes of the writes in `requests`, at most (`request_queue_max_bytes`).
    pub(crate) request_budget: Arc<crate::budget::ByteBudget>,
    pub(crate) sm: Arc<RwLock<S>>,
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

impl<S: StateMachine> Node<S> {
    /// Recovers the node `config` describes around state machine `sm`, builds its
    /// stages and starts their threads.
    pub(crate) fn open(config: Config, sm: S) -> Result<Node<S>> {
        config.validate()?;
        let id = config.id;
        let policy = stage_policy(config.scheduler_hints);
        let (rec, sm) = recovery::recover(&config, sm)?;
        let sm = Arc::new(RwLock::new(sm));
        let proposals = Arc::new(Proposals::new(config.max_pending_requests));

        let (stop_tx, stop_rx) = bounded(1);
        let shared = Arc::new(Shared::new(
            id,
            Metrics::new(id)?,
            Arc::clone(&proposals) as Arc<dyn crate::proposals::PendingWrites>,
            AppliedWatch::new(rec.applied),
            rec.conf_state.clone(),
            stop_tx.clone(),
        ));

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

        // Every stage is built before any thread starts, so a failure here leaves
        // nothing running.
        let sender = config.transport.as_ref().map(|transport| {
            SnapshotSenderStage::new(
                Arc::clone(&shared),
                Arc::clone(transport),
                Arc::clone(&rec.store),
                snap_rx,
                snap_status_tx,
            )
        });
        let raft = RaftStage::new(
            &config,
            &rec,
            Arc::clone(&shared),
            RaftLinks {
                requests: request_rx,
                // Without a transport nothing arrives; the raft stage then waits on
                // `never()`.
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
                // No peers, no snapshots to send.
                snap_status_rx: if sender.is_some() {
                    snap_status_rx
                } else {
                    crossbeam_channel::never()
                },
            },
            outbox.clone(),
        )?;
        let persist = PersistStage::new(
            Arc::clone(&shared),
            persist_rx,
            persisted_tx,
            rec.cache.clone(),
            outbox,
            inflight,
        );
        let apply = ApplyStage::new(
            &config,
            &rec,
            ApplyInputs {
                shared: Arc::clone(&shared),
                sm: Arc::clone(&sm),
                proposals: Arc::clone(&proposals),
            },
            apply_rx,
            wake_tx,
        );

        let name = |stage: &str| format!("keel-{stage}-{id}");
        let mut threads = vec![
            spawn_stage(Arc::clone(&shared), name("persist"), policy, persist)?,
            spawn_stage(Arc::clone(&shared), name("apply"), policy, apply)?,
        ];
        if let Some(sender) = sender {
            threads.push(spawn_stage(
                Arc::clone(&shared),
                name("snapsend"),
                policy,
                sender,
            )?);
        }
        // Last: `shutdown` joins in reverse, the raft stage first.
        threads.push(spawn_stage(
            Arc::clone(&shared),
            name("raft"),
            policy,
            raft,
        )?);

        let sink: Arc<dyn MessageSink> = Arc::new(NodeSink::new(
            id,
            inbox_tx,
            config.inbox_queue_max_bytes,
            Arc::clone(&rec.store),
            shared.metrics.clone(),
        ));
        if let Some(transport) = &config.transport {
            transport.register(id, Arc::clone(&sink));
        }
        Ok(Node {
            shared,
            proposals,
            requests: request_tx,
            request_budget: crate::budget::ByteBudget::new(config.request_queue_max_bytes),
            sm,
            cache: rec.cache,
            config,
            members: rec.members,
            stop: stop_tx,
            sink,
            threads: Mutex::new(threads),
            lock: Mutex::new(Some(rec.lock)),
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

impl<S: StateMachine> Drop for Node<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
