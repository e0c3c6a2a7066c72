//! The state every stage and every `Db` handle of one node shares: the published
//! raft view, the waiting-write registry and applied index, the metrics, and why the
//! node stopped (the one record of a node's stop, written by `fail` and `close`).
//!
//! Imports no stage: every stage imports it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use keel_raft::{ConfState, RawNode, StateRole, Storage};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Fatal, FatalKind, StopReason};
use crate::metrics::Metrics;
use crate::proposals::{AppliedWatch, PendingWrites};

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
    /// The waiting-write registry (typed by the state machine's response; the node
    /// and the apply stage hold it as such).
    pub(crate) proposals: Arc<dyn PendingWrites>,
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
    /// The shared state of node `id`, which starts with `applied` applied and
    /// membership `conf_state`; `wake_raft` is the raft stage's stop channel.
    pub(crate) fn new(
        id: u64,
        metrics: Metrics,
        proposals: Arc<dyn PendingWrites>,
        applied: AppliedWatch,
        conf_state: ConfState,
        wake_raft: Sender<()>,
    ) -> Shared {
        Shared {
            id,
            metrics,
            proposals,
            applied,
            view: RwLock::new(RaftView {
                conf_state,
                ..RaftView::default()
            }),
            stopped: AtomicBool::new(false),
            stop: Mutex::new(None),
            stop_known: Condvar::new(),
            wake_raft,
        }
    }

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

    /// Marks the node closed (by `Replica::close` or the last handle), unless it stopped
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
