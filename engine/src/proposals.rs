//! Callers waiting for their writes, and for the applied index to reach a read index.
//!
//! A write is registered under a request id before it is proposed; the id travels in
//! the entry ([`crate::command`]) so the proposing node recognizes its entry when it is
//! applied, even when a follower forwarded it. When this node is leader the raft stage
//! also records the entry's (index, term): if a different entry is applied at that
//! index (another leader overwrote it), the caller gets an error, never a false
//! success.
//!
//! Three threads touch this (callers, raft stage, apply stage), so it is a lock rather
//! than a channel; every critical section is a few map operations.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::reply::{self, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result, StopReason, UnknownOutcome};

struct Waiter<R> {
    reply: Sender<Result<R>>,
    position: Option<(u64, u64)>,
}

struct Inner<R> {
    waiters: HashMap<u64, Waiter<R>>,
    // index -> (term, request id) for proposals this node appended as leader.
    by_index: BTreeMap<u64, (u64, u64)>,
}

// Request ids must never repeat across restarts of a node: an entry proposed by an
// earlier run can be committed and applied after a restart, and it carries (origin,
// request id). Had ids restarted at 1, such an entry would complete a new caller's
// write with the same id: a false success, acknowledged before (or without) that
// caller's own entry being applied.
//
// Without persisting anything, ids come from one process-wide counter that starts at
// the wall clock in nanoseconds when the first registry of the process is created,
// and is raised to the clock again by every later registry (a node restarted in the
// same process, as tests do). A previous run of a node issued ids below the clock
// reading of its own start plus the number of writes it registered; issuing more
// than one write per nanosecond is impossible (each takes a lock and a channel), so
// every id of the previous run is below the clock at this start. What remains is a
// wall clock stepped back across a restart by more than the previous run lived;
// entries of that run are then already applied or lost long before the clock reaches
// their ids again, so a collision needs an entry to stay uncommitted for that long.
// The process-wide counter also keeps ids distinct between nodes in one process,
// though they need not be: an entry carries its origin node.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

fn clock_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
}

/// What the raft stage and the node's shared state need of the waiting-write registry,
/// whatever the state machine's response type: the raft stage records where the writes
/// it proposed landed and fails the ones raft dropped, and a stopping node answers
/// everyone.
pub(crate) trait PendingWrites: Send + Sync {
    /// The leader appended the writes `ids`, in order, at indexes from `first_index`
    /// on, in `term`.
    fn place(&self, ids: &[u64], first_index: u64, term: u64);
    /// Fails write `id`.
    fn fail(&self, id: u64, err: Error);
    /// Answers every waiting write at shutdown: each may have been proposed, and so
    /// may still commit, so its outcome is unknown.
    fn fail_all(&self, why: &StopReason);
    /// Writes waiting.
    fn pending(&self) -> usize;
}

/// The registry of waiting writes, each answered with its command's response `R`.
pub(crate) struct Proposals<R> {
    inner: Mutex<Inner<R>>,
    max_pending: usize,
}

impl<R: Send + 'static> Proposals<R> {
    pub(crate) fn new(max_pending: usize) -> Proposals<R> {
        // Never below an id handed out before (see NEXT_REQUEST_ID).
        NEXT_REQUEST_ID.fetch_max(clock_nanos(), Ordering::SeqCst);
        Proposals {
            inner: Mutex::new(Inner {
                waiters: HashMap::new(),
                by_index: BTreeMap::new(),
            }),
            max_pending,
        }
    }

    /// Registers a write; the receiver yields its command's response or why it failed.
    pub(crate) fn register(&self) -> Result<(u64, Receiver<Result<R>>)> {
        // Allocated before the lock: every caller comes through here.
        let (reply, rx) = reply::channel();
        let mut inner = self.inner.lock();
        if inner.waiters.len() >= self.max_pending {
            return Err(Error::Busy(inner.waiters.len()));
        }
        let id = NEXT_REQUEST_ID.fetch_add(1, Ordering::SeqCst);
        inner.waiters.insert(
            id,
            Waiter {
                reply,
                position: None,
            },
        );
        Ok((id, rx))
    }

    /// Forgets a write whose caller gave up.
    pub(crate) fn cancel(&self, id: u64) {
        let mut inner = self.inner.lock();
        if let Some(w) = inner.waiters.remove(&id) {
            if let Some((index, _)) = w.position {
                inner.by_index.remove(&index);
            }
        }
    }

    /// A run of entries was applied, in log order; each carries its command's response
    /// if the state machine applied one.
    pub(crate) fn on_applied(&self, my_id: u64, applied: Vec<Applied<R>>) {
        let mut answers = Answers::with_capacity(applied.len());
        let mut inner = self.inner.lock();
        for a in applied {
            let mine = a
                .request
                .filter(|(origin, _)| *origin == my_id)
                .map(|(_, id)| id);
            if let Some((placed_term, id)) = inner.by_index.remove(&a.index) {
                if placed_term != a.term || mine != Some(id) {
                    let lost = Error::ProposalLost(format!(
                        "index {} was taken by another leader's entry (term {})",
                        a.index, a.term
                    ));
                    finish(&mut inner, id, Err(lost), &mut answers);
                }
            }
            if let Some(id) = mine {
                let outcome = match a.response {
                    Some(Ok(response)) => Ok(response),
                    Some(Err(reason)) => Err(Error::Undecodable {
                        index: a.index,
                        reason,
                    }),
                    // Only entries a persistent state machine held before this run
                    // go unapplied, and request ids are never reused across runs.
                    None => Err(Error::Indeterminate(UnknownOutcome::SnapshotReplaced {
                        index: a.index,
                    })),
                };
                finish(&mut inner, id, outcome, &mut answers);
            }
        }
        drop(inner);
        deliver(answers);
    }

    /// A snapshot installed the state up to `index`: writes placed at or below it may
    /// or may not be in it.
    pub(crate) fn on_snapshot(&self, index: u64) {
        let mut answers = Answers::new();
        let mut inner = self.inner.lock();
        let covered: Vec<u64> = inner
            .by_index
            .range(..=index)
            .map(|(_, (_, id))| *id)
            .collect();
        for id in covered {
            let unknown = Error::Indeterminate(UnknownOutcome::SnapshotReplaced { index });
            finish(&mut inner, id, Err(unknown), &mut answers);
        }
        drop(inner);
        deliver(answers);
    }
}

impl<R: Send + 'static> PendingWrites for Proposals<R> {
    fn place(&self, ids: &[u64], first_index: u64, term: u64) {
        let mut answers = Answers::new();
        let mut inner = self.inner.lock();
        for (index, &id) in (first_index..).zip(ids) {
            let Some(w) = inner.waiters.get_mut(&id) else {
                continue;
            };
            w.position = Some((index, term));
            // A stale registration at this index belongs to an entry that can no
            // longer be applied there: this one replaced it in our own log.
            if let Some((_, old)) = inner.by_index.insert(index, (term, id)) {
                if old != id {
                    let lost =
                        Error::ProposalLost(format!("replaced at index {index} by a newer entry"));
                    finish(&mut inner, old, Err(lost), &mut answers);
                }
            }
        }
        drop(inner);
        deliver(answers);
    }

    fn fail(&self, id: u64, err: Error) {
        let mut answers = Answers::new();
        finish(&mut self.inner.lock(), id, Err(err), &mut answers);
        deliver(answers);
    }

    fn fail_all(&self, why: &StopReason) {
        let mut answers = Answers::new();
        let mut inner = self.inner.lock();
        let ids: Vec<u64> = inner.waiters.keys().copied().collect();
        for id in ids {
            let unknown = Error::Indeterminate(UnknownOutcome::Stopped(why.clone()));
            finish(&mut inner, id, Err(unknown), &mut answers);
        }
        drop(inner);
        deliver(answers);
    }

    fn pending(&self) -> usize {
        self.inner.lock().waiters.len()
    }
}

/// One applied entry, as the registry needs to know it.
#[derive(Debug)]
pub(crate) struct Applied<R> {
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// (origin node, request id) if the entry carried a write.
    pub(crate) request: Option<(u64, u64)>,
    /// The response of the command the state machine applied, or why the entry's
    /// command did not decode; `None` for an entry without a command for it.
    pub(crate) response: Option<std::result::Result<R, String>>,
}

// Outcomes decided under the registry's lock and delivered after it is released:
// waking a caller is a system call, and with hundreds of callers registering writes,
// holding the lock through every wake-up made them queue on it (a tenth of a 3-node
// benchmark's CPU time went to spinning there).
type Answers<R> = Vec<(Sender<Result<R>>, Result<R>)>;

fn deliver<R>(answers: Answers<R>) {
    for (reply, result) in answers {
        // The caller may have timed out and dropped its receiver; nothing to do then.
        let _ = reply.try_send(result);
    }
}

fn finish<R>(inner: &mut Inner<R>, id: u64, result: Result<R>, answers: &mut Answers<R>) {
    if let Some(w) = inner.waiters.remove(&id) {
        if let Some((index, _)) = w.position {
            if inner.by_index.get(&index).is_some_and(|(_, i)| *i == id) {
                inner.by_index.remove(&index);
            }
        }
        answers.push((w.reply, result));
    }
}

/// The applied index, for readers waiting until their read index is applied.
pub(crate) struct AppliedWatch {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl AppliedWatch {
    pub(crate) fn new(applied: u64) -> AppliedWatch {
        AppliedWatch {
            state: Mutex::new((applied, false)),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.state.lock().0
    }

    pub(crate) fn advance(&self, applied: u64) {
        let mut st = self.state.lock();
        if applied > st.0 {
            st.0 = applied;
            self.changed.notify_all();
        }
    }

    /// Wakes every waiter for good (the node stopped).
    pub(crate) fn stop(&self) {
        self.state.lock().1 = true;
        self.changed.notify_all();
    }

    /// Waits until the applied index reaches `index`, the deadline passes or the node
    /// stops.
    pub(crate) fn wait_for(&self, index: u64, deadline: Instant) -> Waited {
        let mut st = self.state.lock();
        loop {
            if st.0 >= index {
                return Waited::Reached;
            }
            if st.1 {
                return Waited::Stopped;
            }
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return if st.0 >= index {
                    Waited::Reached
                } else {
                    Waited::TimedOut
                };
            }
        }
    }
}

/// How [`AppliedWatch::wait_for`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Reached,
    TimedOut,
    /// The node stopped first (its `Shared` knows why).
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    // An applied entry; a write's response is its index.
    fn applied(index: u64, term: u64, request: Option<(u64, u64)>) -> Vec<Applied<u64>> {
        vec![Applied {
            index,
            term,
            request,
            response: request.map(|_| Ok(index)),
        }]
    }

    #[test]
    fn an_overwritten_proposal_fails_and_a_matching_one_succeeds() {
        let p = Proposals::<u64>::new(10);
        let (a, rx_a) = p.register().unwrap();
        let (b, rx_b) = p.register().unwrap();
        p.place(&[a, b], 5, 2);
        // Another leader's entry (term 3) landed at index 5.
        p.on_applied(1, applied(5, 3, Some((2, 99))));
        assert!(matches!(rx_a.try_recv(), Ok(Err(Error::ProposalLost(_)))));
        // Ours at index 6 was kept.
        p.on_applied(1, applied(6, 2, Some((1, b))));
        assert!(matches!(rx_b.try_recv(), Ok(Ok(6))));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_forwarded_proposal_is_matched_by_request_id() {
        let p = Proposals::<u64>::new(10);
        let (a, rx) = p.register().unwrap();
        // Never placed (a follower forwarded it); applied at whatever index.
        p.on_applied(3, applied(42, 7, Some((3, a))));
        assert!(matches!(rx.try_recv(), Ok(Ok(42))));
    }

    #[test]
    fn a_replayed_entry_of_an_earlier_run_answers_nobody() {
        // An earlier run's ids were small; this run's start at the clock.
        let p = Proposals::<u64>::new(10);
        let (a, rx) = p.register().unwrap();
        assert!(a > 1 << 24, "{a}");
        p.on_applied(1, applied(7, 1, Some((1, 1))));
        assert!(rx.try_recv().is_err(), "answered by another run's entry");
    }

    #[test]
    fn registry_is_bounded_and_snapshots_make_outcomes_unknown() {
        let p = Proposals::<u64>::new(1);
        let (a, rx) = p.register().unwrap();
        assert!(matches!(p.register(), Err(Error::Busy(1))));
        p.place(&[a], 3, 1);
        p.on_snapshot(10);
        assert!(matches!(rx.try_recv(), Ok(Err(Error::Indeterminate(_)))));
    }

    // Regression: ids restarted at 1 on every node start, so an entry proposed before
    // a restart and applied after it completed a new caller's write (a false success).
    #[test]
    fn an_entry_from_before_a_restart_never_completes_a_new_write() {
        let before = Proposals::<u64>::new(10);
        let (old, _old_rx) = before.register().unwrap();
        drop(before);
        // The restarted node, its first write pending.
        let after = Proposals::<u64>::new(10);
        let (new, rx) = after.register().unwrap();
        assert_ne!(old, new);
        // The old run's entry (origin this node, its old id) is applied now.
        after.on_applied(1, applied(7, 2, Some((1, old))));
        assert!(
            rx.try_recv().is_err(),
            "a new write completed by an old entry"
        );
        assert_eq!(after.pending(), 1);
        after.on_applied(1, applied(8, 2, Some((1, new))));
        assert!(matches!(rx.try_recv(), Ok(Ok(8))));
    }
}
