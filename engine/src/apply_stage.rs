//! The apply stage: applies committed entries to the state machine in order, answers
//! the callers waiting for them, installs snapshots received from the leader, and takes
//! a snapshot every `snapshot_every` applied entries once the log written since the
//! last one reaches `snapshot_log_percent` of its size, then compacts the cache and the
//! log behind it
//! (keeping `catch_up_entries` as a margin for slow followers). It also keeps the
//! member address book ([`Members`]) from the membership changes it applies, writes it
//! into every snapshot, and restores it (and tells the membership observer) from each
//! snapshot it installs.
//!
//! The "notify" handshake etcd needs between its raft loop and its apply loop is
//! implicit here: raft-core hands out committed entries only once they are durable
//! locally, and the raft stage forwards a received snapshot only after the persist stage
//! reported it durable, so nothing this stage compacts or installs can outrun the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use keel_log_cache::LogCache;
use keel_raft::{codec, ConfChange, ConfChangeV2, ConfState, Entry, EntryType, SnapshotMetadata};
use keel_snapshot::{SavedSnapshot, SnapshotId, SnapshotInfo, SnapshotStore};
use keel_wal::LogStore;
use parking_lot::{RwLock, RwLockWriteGuard};

use crate::command::Envelope;
use crate::config::{Config, MembershipObserver};
use crate::error::{Error, Fatal, FatalKind, StopReason};
use crate::members::Members;
use crate::proposals::{Applied, Proposals};
use crate::recovery::Recovered;
use crate::shared::Shared;
use crate::state_machine::{
    restore_from_store, save_frozen_to_store, save_to_store, Command, StateMachine,
};
use crate::supervisor::{self, Stage};
use crate::thread_policy::{self, ThreadPolicy};

/// Work for the apply stage, in log order.
pub(crate) enum ApplyTask {
    /// Committed entries; `conf_states` holds the membership after each membership
    /// change among them (the raft stage already applied those to raft).
    Entries {
        entries: Vec<Entry>,
        conf_states: Vec<(u64, ConfState)>,
        commit_index: u64,
    },
    /// A durable snapshot from the leader to install.
    Snapshot(SnapshotMetadata),
}

/// A snapshot being written on a thread of its own from a frozen image.
pub(crate) struct SavingSnapshot {
    meta: SnapshotMetadata,
    started: Instant,
    done: Receiver<crate::Result<SavedSnapshot>>,
    thread: JoinHandle<()>,
}

pub(crate) struct ApplyStage<S: StateMachine> {
    shared: Arc<Shared>,
    /// The callers waiting for their commands' responses.
    proposals: Arc<Proposals<S::Response>>,
    tasks: Receiver<ApplyTask>,
    /// Wakes the raft stage after progress (capacity 1: one pending wake-up is enough).
    wake_raft: Sender<()>,
    sm: Arc<RwLock<S>>,
    cache: LogCache<dyn LogStore>,
    store: Arc<SnapshotStore>,
    /// Membership as of the entry at `conf_index`.
    conf_state: ConfState,
    conf_index: u64,
    /// The last entry handed to this stage and processed (applied, or skipped because
    /// the state already held it), or the last snapshot installed: what raft is told was
    /// applied. A persistent state machine may be further on after a restart; raft then
    /// hands out the entries in between again, so their membership changes reach raft.
    applied_through: u64,
    snapshot_every: u64,
    snapshot_log_percent: u64,
    /// Whether the snapshot thread asks for a lower priority (`Config::scheduler_hints`).
    scheduler_hints: bool,
    /// Bytes of entry payloads applied since the newest snapshot was started or
    /// installed.
    logged_bytes_since_snapshot: u64,
    /// File size of the newest snapshot taken or installed (0: none).
    last_snapshot_bytes: u64,
    catch_up_entries: u64,
    /// Index of the newest snapshot taken or installed.
    last_snapshot_index: u64,
    /// Term of the entry at `applied_through` (for the next snapshot's metadata).
    applied_term: u64,
    max_batch: usize,
    commit_index: Arc<AtomicU64>,
    /// The snapshot being written, at most one at a time.
    saving: Option<SavingSnapshot>,
    /// The member address book as of `conf_index` (shared with `Replica::members`).
    members: Arc<RwLock<Members>>,
    /// Told the book restored from each installed snapshot.
    observer: Option<Arc<dyn MembershipObserver>>,
}

/// What the apply stage starts from besides recovery's storage: the node's shared
/// state, the state machine and the registry of callers waiting for its responses.
pub(crate) struct ApplyInputs<S: StateMachine> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sm: Arc<RwLock<S>>,
    pub(crate) proposals: Arc<Proposals<S::Response>>,
}

impl<S: StateMachine> ApplyStage<S> {
    /// The apply stage of the node `inputs.shared` describes, starting from what
    /// recovery loaded (`rec`): takes work from `tasks` and wakes the raft stage
    /// through `wake_raft` after progress.
    pub(crate) fn new(
        config: &Config,
        rec: &Recovered,
        inputs: ApplyInputs<S>,
        tasks: Receiver<ApplyTask>,
        wake_raft: Sender<()>,
    ) -> ApplyStage<S> {
        let loaded = rec.loaded.as_ref();
        let ApplyInputs {
            shared,
            sm,
            proposals,
        } = inputs;
        ApplyStage {
            shared,
            proposals,
            tasks,
            wake_raft,
            sm,
            cache: rec.cache.clone(),
            store: Arc::clone(&rec.store),
            conf_state: rec.conf_state.clone(),
            conf_index: rec.applied,
            applied_through: rec.applied,
            snapshot_every: config.snapshot_every,
            snapshot_log_percent: config.snapshot_log_percent,
            scheduler_hints: config.scheduler_hints,
            logged_bytes_since_snapshot: 0,
            last_snapshot_bytes: loaded.map_or(0, |m| snapshot_file_bytes(&rec.store, m)),
            catch_up_entries: config.catch_up_entries,
            last_snapshot_index: loaded.map_or(0, |m| m.index),
            applied_term: loaded.map_or(0, |m| m.term),
            max_batch: 16,
            commit_index: Arc::new(AtomicU64::new(0)),
            saving: None,
            members: Arc::clone(&rec.members),
            observer: config.membership_observer.clone(),
        }
    }
}

impl<S: StateMachine> Stage for ApplyStage<S> {
    /// Runs until the raft stage drops its sender, until entries cannot be applied or
    /// a snapshot cannot be installed, or until another thread of the node failed.
    fn run(&mut self) -> StopReason {
        while let Some(first) = self.next_task() {
            // Nothing more is applied on a node that failed (a clean close still
            // applies what was handed out, to answer its callers).
            if self.shared.is_stopped() {
                if let Some(fatal) = self.shared.fatal() {
                    return StopReason::Fatal(fatal);
                }
            }
            let mut tasks = vec![first];
            while tasks.len() < self.max_batch {
                match self.tasks.try_recv() {
                    Ok(t) => tasks.push(t),
                    Err(_) => break,
                }
            }
            for task in tasks {
                let outcome = match task {
                    ApplyTask::Entries {
                        entries,
                        conf_states,
                        commit_index,
                    } => {
                        self.commit_index.fetch_max(commit_index, Ordering::Relaxed);
                        self.apply_entries(&entries, conf_states)
                    }
                    ApplyTask::Snapshot(meta) => self.install(&meta),
                };
                if let Err(fatal) = outcome {
                    return StopReason::Fatal(fatal);
                }
            }
            fail::fail_point!("applyAfterBatch");
            let applied = self.applied_through;
            self.shared.applied.advance(applied);
            let commit = self.commit_index.load(Ordering::Relaxed);
            let m = &self.shared.metrics;
            m.proposals_applied.set(applied as i64);
            m.apply_lag.set(commit.saturating_sub(applied) as i64);
            m.proposals_pending
                .set(self.shared.proposals.pending() as i64);
            // Full means a wake-up is already pending; the raft stage reads the index.
            let _ = self.wake_raft.try_send(());
            self.maybe_snapshot();
        }
        // Shutting down: a snapshot being written is finished, and the log compacted
        // behind it, rather than abandoned; its thread ends with it.
        if let Some(saving) = self.saving.take() {
            let saved = saving
                .done
                .recv()
                .unwrap_or_else(|_| Err(self.saver_vanished()));
            self.finish_saving(saving, saved);
        }
        // The raft stage drops its sender only once it ended, which recorded why.
        StopReason::Closed
    }
}

impl<S: StateMachine> ApplyStage<S> {
    // What a snapshot thread that ended without an answer left: it panicked, and its
    // supervisor recorded that before the answer's channel closed.
    fn saver_vanished(&self) -> Error {
        Error::Stopped(self.shared.await_stop_reason())
    }

    // The next task. Meanwhile it finishes a snapshot whose thread is done, and starts
    // the next one if that is due already: entries applied while the thread wrote were
    // not snapshotted, and when the writes stopped meanwhile no task comes to start it,
    // so the log would stay uncompacted until the next write. Bounded: a snapshot
    // started here is as of everything applied, so the one after it is not due before
    // more entries (a task) arrive; the loop turns at most three times.
    fn next_task(&mut self) -> Option<ApplyTask> {
        loop {
            let Some(done) = self.saving.as_ref().map(|s| s.done.clone()) else {
                return self.tasks.recv().ok();
            };
            select! {
                recv(self.tasks) -> task => return task.ok(),
                recv(done) -> saved => {
                    let saved = saved.unwrap_or_else(|_| Err(self.saver_vanished()));
                    if let Some(saving) = self.saving.take() {
                        self.finish_saving(saving, saved);
                    }
                    // A stopping node starts no new work.
                    if !self.shared.is_stopped() {
                        self.maybe_snapshot();
                    }
                }
            }
        }
    }

    fn apply_entries(
        &mut self,
        entries: &[Entry],
        conf_states: Vec<(u64, ConfState)>,
    ) -> Result<(), Fatal> {
        fail::fail_point!("applyBeforeEntries");
        let my_id = self.shared.id;
        let mut conf_states = conf_states.into_iter().peekable();
        let mut sm = self.sm.write();
        let held = sm.applied_index();
        // One batch for the state machine, answers after it: nobody is told their write
        // was applied before it is.
        let mut commands = Vec::new();
        // For each command, where its entry is in `answers`.
        let mut answer_of = Vec::new();
        let mut answers: Vec<Applied<S::Response>> = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= self.applied_through {
                // Covered by a snapshot installed after it was handed out.
                continue;
            }
            while let Some((index, cs)) = conf_states.next_if(|(i, _)| *i <= e.index) {
                if index > self.conf_index {
                    if index == e.index {
                        self.record_member_change(e, &cs);
                    }
                    self.conf_state = cs;
                    self.conf_index = index;
                }
            }
            self.applied_through = e.index;
            self.applied_term = e.term;
            self.logged_bytes_since_snapshot += e.data.len() as u64;
            let mut request = None;
            let mut response = None;
            if e.entry_type == EntryType::Normal && !e.data.is_empty() {
                let decoded = Envelope::decode(&e.data)
                    .map_err(|err| err.to_string())
                    .and_then(|env| {
                        request = Some((env.origin, env.request_id));
                        S::Command::decode(env.command).map_err(|err| err.to_string())
                    });
                match decoded {
                    // At or below `held` the state already has it (a persistent state
                    // machine's restart): applying is idempotent by index.
                    Ok(command) if e.index > held => {
                        answer_of.push(answers.len());
                        commands.push((e.index, command));
                    }
                    Ok(_) => {}
                    // Every replica sees the same bytes, so every one skips it.
                    Err(err) => {
                        log::error!("node {my_id}: entry {} is undecodable: {err}", e.index);
                        response = Some(Err(err));
                    }
                }
            }
            answers.push(Applied {
                index: e.index,
                term: e.term,
                request,
                response,
            });
        }
        if let (Some((first, _)), Some((last, _))) = (commands.first(), commands.last()) {
            let (first, last, count) = (*first, *last, commands.len());
            // Local storage failed: skipping would leave this replica different from the
            // others, so the node stops instead.
            let responses = sm.apply_batch(commands).map_err(|err| {
                Fatal::here(
                    FatalKind::StateMachine,
                    format!("applying entries {first}..={last} failed: {err}"),
                )
            })?;
            if responses.len() != count {
                return Err(Fatal::here(
                    FatalKind::StateMachine,
                    format!(
                        "the state machine answered {} of the {count} commands at \
                         {first}..={last}",
                        responses.len()
                    ),
                ));
            }
            for (at, response) in answer_of.into_iter().zip(responses) {
                answers[at].response = Some(Ok(response));
            }
        }
        sm.mark_applied(self.applied_through);
        drop(sm);
        // Published before anyone is answered: a caller told its write was applied
        // finds it in this node's applied index (status, reads) as well.
        self.shared.applied.advance(self.applied_through);
        self.proposals.on_applied(my_id, answers);
        Ok(())
    }

    // Records the address book change of `e`, a membership change raft applied,
    // leaving `cs`. Raft refused none of these (those are not in `conf_states`).
    fn record_member_change(&self, e: &Entry, cs: &ConfState) {
        let cc = match e.entry_type {
            EntryType::ConfChange => codec::decode::<ConfChange>(&e.data).map(ConfChange::into_v2),
            EntryType::ConfChangeV2 => codec::decode::<ConfChangeV2>(&e.data),
            // Raft reported a membership for an entry that is none: nothing to record.
            EntryType::Normal => return,
        };
        match cc {
            Ok(cc) => self.members.write().apply(e.index, &cc, cs),
            // Raft decoded the same bytes to apply it, so this cannot happen; the book
            // only misses an address if it does.
            Err(err) => log::error!(
                "node {}: membership change at {} is undecodable: {err}",
                self.shared.id,
                e.index
            ),
        }
    }

    fn install(&mut self, meta: &SnapshotMetadata) -> Result<(), Fatal> {
        if meta.index <= self.applied_through {
            return Ok(());
        }
        let id = SnapshotId::of(meta);
        let mut sm = self.sm.write();
        let info = if meta.index <= sm.applied_index() {
            // A persistent state machine applied past it before a restart; the entries
            // after it are committed, so the state needs nothing from the snapshot,
            // only the member addresses its header carries.
            self.store.info(id)
        } else {
            restore_from_store(&mut *sm, &self.store, id)
        }
        .map_err(|e| {
            Fatal::here(
                FatalKind::Snapshot,
                format!("installing snapshot {id:?} failed: {e}"),
            )
        })?;
        drop(sm);
        let members = Members::from_snapshot(info.clone());
        *self.members.write() = members.clone();
        if let Some(observer) = &self.observer {
            observer.restored(&members);
        }
        let loaded = info.metadata;
        self.last_snapshot_bytes = snapshot_file_bytes(&self.store, &loaded);
        self.conf_state = loaded.conf_state;
        self.conf_index = loaded.index;
        self.applied_through = loaded.index;
        self.applied_term = loaded.term;
        self.last_snapshot_index = self.last_snapshot_index.max(loaded.index);
        self.logged_bytes_since_snapshot = 0;
        self.proposals.on_snapshot(loaded.index);
        self.shared.metrics.snapshots_installed.inc();
        self.commit_index.fetch_max(loaded.index, Ordering::Relaxed);
        log::info!(
            "node {}: installed snapshot at index {}",
            self.shared.id,
            loaded.index
        );
        Ok(())
    }

    fn maybe_snapshot(&mut self) {
        if self.snapshot_every == 0 || self.saving.is_some() {
            return;
        }
        // Only this thread writes the state machine, so what is read here holds until
        // the freeze below.
        let applied = self.sm.read().applied_index();
        if applied < self.last_snapshot_index.saturating_add(self.snapshot_every) {
            return;
        }
        let wanted_bytes = self
            .last_snapshot_bytes
            .saturating_mul(self.snapshot_log_percent)
            / 100;
        if self.logged_bytes_since_snapshot < wanted_bytes {
            return;
        }
        if applied != self.applied_through {
            // A persistent state machine ahead of the entries raft handed out again after
            // a restart: the term at `applied` is not known yet. Soon it is.
            return;
        }
        let info = SnapshotInfo {
            metadata: SnapshotMetadata {
                conf_state: self.conf_state.clone(),
                index: applied,
                term: self.applied_term,
            },
            // As of `applied` too: the book changes only where entries are applied.
            members: self.members.read().addresses.clone(),
        };
        let started = Instant::now();
        self.logged_bytes_since_snapshot = 0;
        let mut sm = self.sm.write();
        let Some(frozen) = sm.freeze() else {
            // Readers keep reading while the image is written; only applying waits.
            let sm = RwLockWriteGuard::downgrade(sm);
            let saved = save_to_store(&*sm, &self.store, &info).map_err(Error::from);
            drop(sm);
            self.finish_snapshot(info.metadata, started, saved);
            return;
        };
        drop(sm);
        // Capacity 1: the thread sends exactly one answer and never waits for it to be
        // taken.
        let (answer, done) = bounded(1);
        let (store, job_info) = (Arc::clone(&self.store), info.clone());
        let hints = self.scheduler_hints;
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name(format!("keel-snapsave-{}", self.shared.id))
            .spawn(move || {
                if hints {
                    thread_policy::apply_to_current_thread(ThreadPolicy::Background);
                }
                // A panic stops the node; `answer` closes only after that is recorded.
                let saved = supervisor::guarded(&shared, || {
                    fail::fail_point!("snapshotBeforeSave");
                    save_frozen_to_store(frozen.as_ref(), &store, &job_info).map_err(Error::from)
                });
                if let Some(saved) = saved {
                    let _ = answer.send(saved);
                }
            });
        match spawned {
            Ok(thread) => {
                self.saving = Some(SavingSnapshot {
                    meta: info.metadata,
                    started,
                    done,
                    thread,
                })
            }
            Err(e) => {
                let saved = Err(Error::Io(e));
                self.finish_snapshot(info.metadata, started, saved);
            }
        }
    }

    fn finish_saving(&mut self, saving: SavingSnapshot, saved: crate::Result<SavedSnapshot>) {
        // It has sent its answer (or died), so joining does not wait.
        if saving.thread.join().is_err() {
            // `guarded` catches its panics; this is a bug's net.
            self.shared.fail(Fatal::here(
                FatalKind::Panic,
                "the snapshot thread panicked outside its guard",
            ));
        }
        self.finish_snapshot(saving.meta, saving.started, saved);
    }

    // Records a snapshot that was written (or failed), applies retention and compacts
    // the log behind it.
    fn finish_snapshot(
        &mut self,
        meta: SnapshotMetadata,
        started: Instant,
        saved: crate::Result<SavedSnapshot>,
    ) {
        let applied = meta.index;
        let saved = match saved {
            Ok(saved) => saved,
            Err(e) => {
                log::error!("node {}: snapshot at {applied} failed: {e}", self.shared.id);
                // Try again after another interval rather than on every batch.
                self.last_snapshot_index = self.last_snapshot_index.max(applied);
                return;
            }
        };
        self.shared
            .metrics
            .snapshot_save_seconds
            .observe(started.elapsed().as_secs_f64());
        // An installed snapshot from the leader may be newer already.
        if applied >= self.last_snapshot_index {
            self.last_snapshot_bytes = saved.file_bytes;
        }
        self.last_snapshot_index = self.last_snapshot_index.max(applied);
        let purge_through = match self.store.retain() {
            Ok(r) => r.wal_purge_through,
            Err(e) => {
                log::warn!("node {}: snapshot retention failed: {e}", self.shared.id);
                0
            }
        };
        if let Err(e) = self.cache.record_snapshot(meta) {
            // A newer snapshot from the leader got there first; nothing to compact.
            log::debug!(
                "node {}: snapshot at {applied} not recorded: {e}",
                self.shared.id
            );
            return;
        }
        // The oldest kept snapshot bounds compaction, so a damaged newest one can still
        // fall back to an older one plus the log.
        let compact_to = applied
            .saturating_sub(self.catch_up_entries)
            .min(purge_through);
        let first = self.cache.stats().first_index;
        if compact_to < first {
            return;
        }
        // The cache first, then the log (the cache's protocol).
        if let Err(e) = self.cache.compact(compact_to) {
            log::debug!(
                "node {}: cache compaction to {compact_to}: {e}",
                self.shared.id
            );
            return;
        }
        if let Err(e) = self.cache.log().compact(compact_to) {
            // The log is poisoned now; the persist stage's next write stops the node.
            log::error!(
                "node {}: log compaction to {compact_to} failed: {e}",
                self.shared.id
            );
        }
    }
}

/// The file size of the snapshot `meta` names, or 0 if it cannot be read (the next
/// snapshot is then taken on the entry count alone).
fn snapshot_file_bytes(store: &SnapshotStore, meta: &SnapshotMetadata) -> u64 {
    store.file_bytes(SnapshotId::of(meta)).unwrap_or(0)
}
