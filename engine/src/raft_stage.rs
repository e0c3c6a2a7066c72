//! The raft stage: the one thread that owns the `RawNode`.
//!
//! It ticks on a timer, steps inbound messages, batches client proposals and reads,
//! and handles each `Ready` in etcd's `raftNode.start` order:
//!
//! 1. soft state → leadership, status and metrics;
//! 2. read states → the reads waiting for them;
//! 3. committed entries → membership changes applied to raft here (raft-core requires
//!    it on this thread), then everything to the apply stage;
//! 4. messages → sent now: raft-core puts a leader's messages here, as a leader may
//!    replicate before its own write is durable (Raft thesis §10.2.1), and a
//!    follower's forwarded proposals and read requests, which depend on nothing
//!    durable;
//! 5. entries, hard state, snapshot and the follower's `persisted_messages` → the
//!    persist stage (`advance_append_async`); the persist stage reports the durable
//!    Ready number back and this stage calls `on_persist_ready`, which is when a leader
//!    counts itself in the quorum. Messages of a Ready whose committed entries include a
//!    membership change are held until the apply stage applied it.
//!
//! Readies in flight to the persist stage are bounded by `max_inflight_readies`, which
//! also sizes both channels between the two stages, so neither ever blocks the other
//! into a deadlock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};
use raft_core::{
    codec, ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, RawNode,
    Ready, SnapshotMetadata, SnapshotStatus, StateRole,
};
use snapshot::LogCache;
use wal::LogStore;

use crate::apply_stage::ApplyTask;
use crate::config::MembershipObserver;
use crate::error::{Error, Fatal, FatalKind, Result, StopReason};
use crate::shared::Shared;
use crate::outbox::{Outbox, SendFailures};
use crate::persist_stage::{PersistTask, Persisted};
use crate::reply;
use crate::supervisor::Stage;

/// What callers ask of the raft stage.
pub(crate) enum Request {
    /// Propose a write registered in `Proposals` under `id`; `data` is its encoded
    /// [`Command`](crate::command::Command).
    Propose {
        id: u64,
        data: crate::budget::Charged<Vec<u8>>,
    },
    /// A linearizable read: answered with the index the read may be served at.
    Read { reply: reply::Sender<Result<u64>> },
    /// A membership change: answered with the membership once it is applied to raft.
    ConfChange {
        cc: ConfChangeV2,
        reply: reply::Sender<Result<ConfState>>,
    },
    /// Hand leadership to `target`: answered once the request was passed to raft (the
    /// caller watches the status for the outcome).
    TransferLeader {
        target: u64,
        reply: reply::Sender<Result<()>>,
    },
}

/// How a membership change refused for want of reachable voters begins; `Db` retries
/// those for a while, as a leader learns who is reachable only from their answers.
pub(crate) const QUORUM_REFUSAL: &str = "the change would lose quorum";

// Most entries a learner may lag the leader's commit index and still be promoted: a
// voter that is far behind would stall commits until it caught up.
const MAX_PROMOTION_LAG_ENTRIES: u64 = 1_000;

// Inbound messages and requests handled per loop turn before a Ready is taken, at most.
const MAX_DRAIN: usize = 1024;
// What raft-core counts for an entry besides its data (`Entry::size_bytes`).
const ENTRY_SIZE_BYTES: u64 = 24;

struct PendingRead {
    waiters: Vec<reply::Sender<Result<u64>>>,
    issued_tick: u64,
}

struct PendingConfChange {
    index: u64,
    term: u64,
    reply: reply::Sender<Result<ConfState>>,
}

pub(crate) struct RaftStage {
    pub(crate) raw: RawNode<LogCache<dyn LogStore>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) requests: Receiver<Request>,
    pub(crate) inbox: Receiver<crate::budget::Charged<Vec<u8>>>,
    pub(crate) stop: Receiver<()>,
    pub(crate) persist_tx: Sender<PersistTask>,
    pub(crate) persisted_rx: Receiver<Persisted>,
    pub(crate) apply_tx: Sender<ApplyTask>,
    pub(crate) applied_rx: Receiver<()>,
    pub(crate) snap_status_rx: Receiver<(u64, SnapshotStatus)>,
    pub(crate) outbox: Outbox,
    pub(crate) tick_ms: u64,
    pub(crate) read_expiry_ticks: u64,
    pub(crate) max_inflight_readies: usize,
    pub(crate) max_pending_reads: usize,
    /// Most bytes of writes proposed together (`max_size_per_msg_bytes`): a follower
    /// forwards them to the leader in one message.
    pub(crate) max_batch_bytes: u64,
    pub(crate) read_ctx_seed: u64,
    /// Number of the last Ready handed out.
    pub(crate) last_number: u64,
    /// Told about every membership change applied.
    pub(crate) observer: Option<Arc<dyn MembershipObserver>>,
}

struct Loop {
    inflight_readies: usize,
    // Readies that carried a snapshot, to hand to the apply stage once durable.
    pending_snapshots: VecDeque<(u64, SnapshotMetadata)>,
    held: VecDeque<(u64, Vec<Message>)>,
    reads: HashMap<Vec<u8>, PendingRead>,
    pending_read_count: usize,
    next_read: u64,
    conf_changes: Vec<PendingConfChange>,
    // Reads that arrived while this node leads but has not committed an entry of its
    // term yet (see `start_read`).
    deferred_reads: Vec<reply::Sender<Result<u64>>>,
    ticks: u64,
    leader: u64,
}

// What a turn of the loop ends in: go on, or stop for the reason given.
type Turn = std::result::Result<(), StopReason>;

// The fatal stop raft-core's error `e` calls for, if it is one
// ([`raft_core::Error::is_fatal`]): the node's own log or storage is broken.
fn fatal_raft(e: &raft_core::Error) -> Option<Fatal> {
    e.is_fatal()
        .then(|| Fatal::here(FatalKind::Raft, e.to_string()))
}

impl Stage for RaftStage {
    /// Runs until stopped, until raft-core reports a fatal error, or until another
    /// stage failed.
    fn run(&mut self) -> StopReason {
        let ticker = crossbeam_channel::tick(Duration::from_millis(self.tick_ms));
        let mut st = Loop {
            inflight_readies: 0,
            pending_snapshots: VecDeque::new(),
            held: VecDeque::new(),
            reads: HashMap::new(),
            pending_read_count: 0,
            next_read: self.read_ctx_seed,
            conf_changes: Vec::new(),
            deferred_reads: Vec::new(),
            ticks: 0,
            leader: 0,
        };
        let why = loop {
            let turn: Turn = select! {
                // Sent by `close` or by `Shared::fail`; either recorded why first.
                recv(self.stop) -> _ => Err(self.shared.await_stop_reason()),
                recv(ticker) -> _ => {
                    self.on_tick(&mut st);
                    Ok(())
                }
                recv(self.inbox) -> m => match m {
                    Ok(bytes) => self.on_inbound(bytes),
                    Err(_) => Err(StopReason::Fatal(Fatal::here(
                        FatalKind::Invariant,
                        "the transport closed the node's inbox",
                    ))),
                },
                recv(self.requests) -> r => match r {
                    Ok(r) => self.on_requests(&mut st, r),
                    // `Node` holds a sender until every stage is joined.
                    Err(_) => Err(StopReason::Fatal(Fatal::here(
                        FatalKind::Invariant,
                        "the request queue closed",
                    ))),
                },
                recv(self.persisted_rx) -> p => match p {
                    Ok(p) => self.on_persisted(&mut st, p),
                    Err(_) => Err(self.lost()),
                },
                recv(self.applied_rx) -> r => match r {
                    Ok(()) => {
                        self.on_applied(&mut st);
                        Ok(())
                    }
                    Err(_) => Err(self.lost()),
                },
                recv(self.snap_status_rx) -> s => match s {
                    Ok((to, status)) => {
                        self.raw.report_snapshot(to, status);
                        Ok(())
                    }
                    Err(_) => Err(self.lost()),
                },
            };
            if let Err(why) = turn.and_then(|()| self.take_queued(&mut st)) {
                break why;
            }
            // Another thread failed (it also woke this one through `stop`).
            if self.shared.is_stopped() {
                break self.shared.await_stop_reason();
            }
            if !st.deferred_reads.is_empty() && self.leader_commit_is_current() {
                if let Err(why) = self.start_read(&mut st, Vec::new()) {
                    break why;
                }
            }
            if let Err(why) = self.drain_readies(&mut st) {
                break why;
            }
            self.shared.publish(&self.raw);
        };
        // Recorded before any waiter is answered, so what they are told and what the
        // node reports agree (the first fatal cause wins).
        if let StopReason::Fatal(fatal) = &why {
            self.shared.fail(fatal.clone());
        }
        let why = self.shared.stop_reason().unwrap_or(why);
        self.answer_waiters(&mut st, &why);
        why
    }

    // Runs after `run`, also after a panic (whose unwinding dropped the loop's waiters:
    // their callers see the channel close and read the recorded reason).
    fn stopped(&mut self, why: &StopReason) {
        // Requests still queued were never proposed: they are answered `Stopped` (not
        // applied, safe to retry) first, so no caller waits for its full timeout
        // (callers check the stopped flag first, so few arrive after this). Writes
        // proposed already may still commit, on this node's restart or through
        // another leader: their callers are told the outcome is unknown.
        let requests = std::mem::replace(&mut self.requests, crossbeam_channel::never());
        while let Ok(r) = requests.try_recv() {
            self.reject(r, || Error::Stopped(why.clone()));
        }
        drop(requests);
        // Also answers a write whose request slipped in after the queue was emptied.
        self.shared.proposals.fail_all(why);
    }
}

impl RaftStage {
    // Whatever else queued while this turn ran goes into the same Ready, so a busy
    // node hands out one Ready (one persist task, one append per follower) per turn
    // rather than one per event; every stage downstream then wakes that much less.
    // Bounded: each source is drained at most MAX_DRAIN items deep.
    fn take_queued(&mut self, st: &mut Loop) -> Turn {
        for _ in 0..MAX_DRAIN {
            match self.persisted_rx.try_recv() {
                Ok(p) => self.on_persisted(st, p)?,
                Err(_) => break,
            }
        }
        if let Ok(bytes) = self.inbox.try_recv() {
            self.on_inbound(bytes)?;
        }
        if let Ok(r) = self.requests.try_recv() {
            self.on_requests(st, r)?;
        }
        if self.applied_rx.try_recv().is_ok() {
            self.on_applied(st);
        }
        Ok(())
    }

    // Why the node stopped, once another stage's channel closed: its supervisor
    // recorded that before the channel's end was dropped.
    fn lost(&self) -> StopReason {
        self.shared.await_stop_reason()
    }

    fn answer_waiters(&mut self, st: &mut Loop, why: &StopReason) {
        for (_, read) in st.reads.drain() {
            for w in read.waiters {
                let _ = w.try_send(Err(Error::Stopped(why.clone())));
            }
        }
        for w in st.deferred_reads.drain(..) {
            let _ = w.try_send(Err(Error::Stopped(why.clone())));
        }
        for cc in st.conf_changes.drain(..) {
            let _ = cc.reply.try_send(Err(Error::Stopped(why.clone())));
        }
    }

    fn reject(&self, r: Request, err: impl Fn() -> Error) {
        match r {
            Request::Propose { id, .. } => self.shared.proposals.fail(id, err()),
            Request::Read { reply } => {
                let _ = reply.try_send(Err(err()));
            }
            Request::ConfChange { reply, .. } => {
                let _ = reply.try_send(Err(err()));
            }
            Request::TransferLeader { reply, .. } => {
                let _ = reply.try_send(Err(err()));
            }
        }
    }

    fn on_tick(&mut self, st: &mut Loop) {
        self.raw.tick();
        st.ticks += 1;
        // A read whose ReadIndex message was lost would wait forever: expire it, and
        // let the caller retry.
        let expiry = self.read_expiry_ticks;
        let ticks = st.ticks;
        let mut expired = 0;
        st.reads.retain(|_, r| {
            let keep = ticks.saturating_sub(r.issued_tick) < expiry;
            if !keep {
                expired += r.waiters.len();
                for w in r.waiters.drain(..) {
                    let _ = w.try_send(Err(Error::ProposalLost("read request expired".into())));
                }
            }
            keep
        });
        st.pending_read_count -= expired;
    }

    fn on_inbound(&mut self, first: crate::budget::Charged<Vec<u8>>) -> Turn {
        self.step_bytes(&first)?;
        for _ in 0..MAX_DRAIN {
            match self.inbox.try_recv() {
                Ok(bytes) => self.step_bytes(&bytes)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn step_bytes(&mut self, bytes: &[u8]) -> Turn {
        let m: Message = match codec::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                log::warn!(
                    "node {}: dropping an undecodable message: {e}",
                    self.shared.id
                );
                return Ok(());
            }
        };
        if m.to != self.shared.id {
            log::warn!(
                "node {}: dropping a message addressed to {}",
                self.shared.id,
                m.to
            );
            return Ok(());
        }
        if let Err(e) = self.raw.step(m) {
            if let Some(fatal) = fatal_raft(&e) {
                return Err(fatal.into());
            }
            log::debug!("node {}: step: {e}", self.shared.id);
        }
        Ok(())
    }

    fn on_requests(&mut self, st: &mut Loop, first: Request) -> Turn {
        let mut ids: Vec<u64> = Vec::new();
        let mut datas: Vec<Vec<u8>> = Vec::new();
        // Counted as raft-core counts entries against `max_size_per_msg_bytes`.
        let mut batch_bytes = 0u64;
        let mut reads: Vec<reply::Sender<Result<u64>>> = Vec::new();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(r) = next.take() {
            match r {
                Request::Propose { id, data } => {
                    let data = data.into_inner();
                    let entry_bytes = ENTRY_SIZE_BYTES + data.len() as u64;
                    // A follower forwards the whole batch to the leader as one message,
                    // which must fit what the transport carries (`Config::validate`
                    // checks one message of max_size_per_msg_bytes does): a longer batch
                    // is proposed in several.
                    if !ids.is_empty() && batch_bytes + entry_bytes > self.max_batch_bytes {
                        self.propose_writes(&ids, std::mem::take(&mut datas))?;
                        ids.clear();
                        batch_bytes = 0;
                    }
                    ids.push(id);
                    datas.push(data);
                    batch_bytes += entry_bytes;
                }
                Request::Read { reply } => reads.push(reply),
                Request::ConfChange { cc, reply } => self.propose_conf_change(st, cc, reply)?,
                Request::TransferLeader { target, reply } => {
                    let _ = reply.try_send(self.transfer_leader(target));
                }
            }
            handled += 1;
            if handled < MAX_DRAIN {
                next = self.requests.try_recv().ok();
            }
        }
        self.propose_writes(&ids, datas)?;
        self.start_read(st, reads)
    }

    fn leader_hint(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&l| l != 0)
    }

    fn propose_writes(&mut self, ids: &[u64], datas: Vec<Vec<u8>>) -> Turn {
        if ids.is_empty() {
            return Ok(());
        }
        // Only client writes pass here (tests of a node's fatal stop).
        fail::fail_point!("raftBeforePropose");
        let is_leader = self.raw.role() == StateRole::Leader;
        let last_before = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        match self.raw.propose_batch(datas) {
            Ok(()) => {
                let appended = self.raw.raft.raft_log.last_index() - last_before;
                if is_leader && appended == ids.len() as u64 {
                    self.shared.proposals.place(ids, last_before + 1, term);
                }
            }
            Err(e) => {
                if let Some(fatal) = fatal_raft(&e) {
                    // The writes stay registered: `stopped` answers them.
                    return Err(fatal.into());
                }
                let leader = self.leader_hint();
                for &request_id in ids {
                    let err = match leader {
                        None => Error::NotLeader { leader: None },
                        Some(_) => Error::ProposalLost(e.to_string()),
                    };
                    self.shared.proposals.fail(request_id, err);
                }
            }
        }
        Ok(())
    }

    // Whether a leader's commit index is known to be current: only once an entry of
    // its own term committed (§6.4). raft-core answers a lone voter's ReadIndex with
    // the commit index at once, and after a restart that index is the persisted one,
    // which may lag writes that were acknowledged (the apply stage can answer a write
    // before the hard state carrying its commit is written).
    fn leader_commit_is_current(&self) -> bool {
        let r = &self.raw.raft;
        r.state != StateRole::Leader || r.raft_log.term(r.raft_log.committed).ok() == Some(r.term)
    }

    fn start_read(&mut self, st: &mut Loop, mut reads: Vec<reply::Sender<Result<u64>>>) -> Turn {
        if !st.deferred_reads.is_empty() && self.leader_commit_is_current() {
            reads.append(&mut st.deferred_reads);
        }
        if reads.is_empty() {
            return Ok(());
        }
        if !self.leader_commit_is_current() {
            if st.deferred_reads.len() + reads.len() > self.max_pending_reads {
                for r in reads {
                    let _ = r.try_send(Err(Error::Busy(st.deferred_reads.len())));
                }
            } else {
                st.deferred_reads.append(&mut reads);
            }
            return Ok(());
        }
        if st.pending_read_count + reads.len() > self.max_pending_reads {
            for r in reads {
                let _ = r.try_send(Err(Error::Busy(st.pending_read_count)));
            }
            return Ok(());
        }
        // One ReadIndex round serves every read that queued meanwhile. The context
        // carries the node id so concurrent reads from different nodes never collide
        // in the leader's table.
        st.next_read += 1;
        let mut ctx = self.shared.id.to_le_bytes().to_vec();
        ctx.extend_from_slice(&st.next_read.to_le_bytes());
        match self.raw.read_index(ctx.clone()) {
            Ok(()) => {
                st.pending_read_count += reads.len();
                st.reads.insert(
                    ctx,
                    PendingRead {
                        waiters: reads,
                        issued_tick: st.ticks,
                    },
                );
            }
            Err(e) => {
                if let Some(fatal) = fatal_raft(&e) {
                    let why = StopReason::Fatal(fatal);
                    for r in reads {
                        let _ = r.try_send(Err(Error::Stopped(why.clone())));
                    }
                    return Err(why);
                }
                let leader = self.leader_hint();
                for r in reads {
                    let _ = r.try_send(Err(Error::NotLeader { leader }));
                }
            }
        }
        Ok(())
    }

    fn propose_conf_change(
        &mut self,
        st: &mut Loop,
        cc: ConfChangeV2,
        reply: reply::Sender<Result<ConfState>>,
    ) -> Turn {
        if self.raw.role() != StateRole::Leader {
            let _ = reply.try_send(Err(Error::NotLeader {
                leader: self.leader_hint(),
            }));
            return Ok(());
        }
        if let Err(e) = self.check_conf_change(&cc) {
            let _ = reply.try_send(Err(e));
            return Ok(());
        }
        let last_before = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        match self.raw.propose_conf_change_v2(&cc) {
            Ok(()) => st.conf_changes.push(PendingConfChange {
                index: last_before + 1,
                term,
                reply,
            }),
            Err(e) => {
                if let Some(fatal) = fatal_raft(&e) {
                    let why = StopReason::Fatal(fatal);
                    let _ = reply.try_send(Err(Error::Stopped(why.clone())));
                    return Err(why);
                }
                let _ = reply.try_send(Err(e.into()));
            }
        }
        Ok(())
    }

    // Refuses, before anything is proposed, a change raft would drop or one that would
    // leave the cluster unable to commit: another change still pending, a node that is
    // not a member, a learner that has not caught up, or fewer reachable voters than a
    // majority of the new configuration.
    fn check_conf_change(&self, cc: &ConfChangeV2) -> Result<()> {
        let r = &self.raw.raft;
        if r.pending_conf_index > r.raft_log.applied {
            return Err(Error::Conflict(
                "another membership change is still pending; retry once it is applied".into(),
            ));
        }
        if r.prs.conf.voters.is_joint() && !cc.leave_joint() {
            return Err(Error::Conflict(
                "the cluster is in a joint configuration; it must leave it first".into(),
            ));
        }
        let mut voters: BTreeSet<u64> = r.prs.conf.voters.ids();
        let learners = &r.prs.conf.learners;
        for c in &cc.changes {
            let id = c.node_id;
            if id == 0 {
                return Err(Error::Conflict("node id 0 is reserved".into()));
            }
            match c.change_type {
                ConfChangeType::AddNode => {
                    if voters.contains(&id) {
                        return Err(Error::Conflict(format!("node {id} is already a voter")));
                    }
                    if learners.contains(&id) {
                        let matched = r.prs.progress.get(&id).map_or(0, |p| p.matched);
                        let committed = r.raft_log.committed;
                        if matched + MAX_PROMOTION_LAG_ENTRIES < committed {
                            return Err(Error::Conflict(format!(
                                "learner {id} has not caught up (at {matched}, commit index \
                                 {committed}); promote it once it has"
                            )));
                        }
                    }
                    voters.insert(id);
                }
                ConfChangeType::AddLearnerNode => {
                    if learners.contains(&id) {
                        return Err(Error::Conflict(format!("node {id} is already a learner")));
                    }
                    voters.remove(&id);
                }
                ConfChangeType::RemoveNode => {
                    if !voters.contains(&id) && !learners.contains(&id) {
                        return Err(Error::UnknownNode(id));
                    }
                    voters.remove(&id);
                }
            }
        }
        if voters.is_empty() {
            return Err(Error::Conflict(
                "the change would leave the cluster without voters".into(),
            ));
        }
        // A voter counts as reachable if it answered within the last election timeout
        // or is being replicated to normally (check-quorum clears `recent_active` once
        // per election timeout). A brand-new voter counts only if it answered.
        let reachable = voters
            .iter()
            .filter(|&&id| {
                id == r.id
                    || r.prs.progress.get(&id).is_some_and(|p| {
                        p.recent_active || p.state == raft_core::tracker::ProgressState::Replicate
                    })
            })
            .count();
        if reachable * 2 <= voters.len() {
            return Err(Error::Conflict(format!(
                "{QUORUM_REFUSAL}: only {reachable} of the {} voters it leaves are reachable",
                voters.len()
            )));
        }
        Ok(())
    }

    fn transfer_leader(&mut self, target: u64) -> Result<()> {
        let r = &self.raw.raft;
        if r.leader_id == 0 {
            return Err(Error::NotLeader { leader: None });
        }
        let cs = r.prs.conf.to_conf_state();
        if cs.learners.contains(&target) {
            return Err(Error::Conflict(format!(
                "node {target} is a learner and cannot lead"
            )));
        }
        if !r.prs.conf.voters.contains(target) {
            return Err(Error::UnknownNode(target));
        }
        if r.leader_id == target {
            return Ok(());
        }
        // On a follower raft forwards the request to the leader.
        self.raw.transfer_leader(target);
        Ok(())
    }

    fn on_persisted(&mut self, st: &mut Loop, p: Persisted) -> Turn {
        // Snapshots first: the apply stage must install one before the entries raft
        // hands out after it (raft-core holds those back until `on_persist_ready`).
        while let Some((number, meta)) = st.pending_snapshots.front() {
            if *number > p.number {
                break;
            }
            let task = ApplyTask::Snapshot(meta.clone());
            st.pending_snapshots.pop_front();
            self.apply_tx.send(task).map_err(|_| self.lost())?;
        }
        self.raw.on_persist_ready(p.number);
        st.inflight_readies = self.readies_after(p.number);
        st.held.extend(p.held);
        self.release_held(st);
        Ok(())
    }

    // Readies handed out after `number` (those still with the persist stage).
    fn readies_after(&self, number: u64) -> usize {
        self.last_number.saturating_sub(number) as usize
    }

    fn on_applied(&mut self, st: &mut Loop) {
        let applied = self.shared.applied.get();
        let log = &self.raw.raft.raft_log;
        if applied > log.applied && applied <= log.committed {
            self.raw.advance_apply_to(applied);
        }
        self.release_held(st);
    }

    fn release_held(&mut self, st: &mut Loop) {
        let applied = self.shared.applied.get();
        while st.held.front().is_some_and(|(index, _)| *index <= applied) {
            if let Some((_, msgs)) = st.held.pop_front() {
                fail::fail_point!("raftBeforeFollowerSend");
                let failures = self.outbox.send(msgs);
                self.report_failures(failures);
            }
        }
    }

    fn report_failures(&mut self, failures: SendFailures) {
        for id in failures.unreachable {
            self.raw.report_unreachable(id);
        }
        for id in failures.snapshot_failed {
            self.raw.report_snapshot(id, SnapshotStatus::Failure);
        }
    }

    fn drain_readies(&mut self, st: &mut Loop) -> Turn {
        // Bounded by the in-flight limit: each turn hands out at most that many.
        while st.inflight_readies < self.max_inflight_readies && self.raw.has_ready() {
            let rd = self.raw.ready();
            // `ready` cannot return an error: one it hit (committed entries the log
            // cannot read back) is kept by raft-core, which hands out nothing more.
            if let Some(e) = self.raw.fatal_error() {
                return Err(Fatal::here(FatalKind::Raft, e.to_string()).into());
            }
            self.handle_ready(st, rd)?;
        }
        Ok(())
    }

    fn handle_ready(&mut self, st: &mut Loop, mut rd: Ready) -> Turn {
        // 1. Soft state.
        if let Some(ss) = rd.ss() {
            let m = &self.shared.metrics;
            if ss.leader_id != st.leader {
                if ss.leader_id != 0 {
                    m.leader_changes.inc();
                }
                // Reads sent to the old leader will not be answered.
                let leader = Some(ss.leader_id).filter(|&l| l != 0);
                for (_, read) in st.reads.drain() {
                    for w in read.waiters {
                        let _ = w.try_send(Err(Error::ProposalLost(format!(
                            "leader changed (now {leader:?})"
                        ))));
                    }
                }
                st.pending_read_count = 0;
                for w in st.deferred_reads.drain(..) {
                    let _ = w.try_send(Err(Error::ProposalLost("leader changed".into())));
                }
                st.leader = ss.leader_id;
            }
            m.has_leader.set(i64::from(ss.leader_id != 0));
            m.is_leader
                .set(i64::from(ss.raft_state == StateRole::Leader));
        }
        // 2. Read states.
        for rs in rd.take_read_states() {
            if let Some(read) = st.reads.remove(&rs.request_ctx) {
                st.pending_read_count -= read.waiters.len();
                for w in read.waiters {
                    let _ = w.try_send(Ok(rs.index));
                }
            }
        }
        // 3. Committed entries: membership changes take effect in raft now, then the
        // apply stage gets everything.
        let committed = rd.take_committed_entries();
        let hold_until_applied = self.handle_committed(st, committed)?;
        // 4. Messages that may leave before the write is durable (a leader's, and
        // forwarded requests).
        let msgs = rd.take_messages();
        if !msgs.is_empty() {
            if self.raw.raft.state == StateRole::Leader {
                fail::fail_point!("raftBeforeLeaderSend");
            }
            let failures = self.outbox.send(msgs);
            self.report_failures(failures);
        }
        // 5. Durable work, and the messages that must wait for it.
        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().metadata.clone());
        if let Some(meta) = &snapshot {
            st.pending_snapshots.push_back((rd.number(), meta.clone()));
        }
        let task = PersistTask {
            number: rd.number(),
            entries: rd.take_entries(),
            hard_state: rd.hs().copied(),
            snapshot,
            must_sync: rd.must_sync(),
            messages: rd.take_persisted_messages(),
            hold_until_applied,
        };
        self.last_number = rd.number();
        self.raw.advance_append_async(rd);
        st.inflight_readies += 1;
        // Never blocks: at most max_inflight_readies tasks are outstanding and the
        // channel holds that many.
        self.persist_tx.send(task).map_err(|_| self.lost())?;
        Ok(())
    }

    // Applies membership changes among `committed` to raft, forwards the entries to
    // the apply stage, and returns the index the Ready's persisted messages must wait
    // for (the last membership change, if any).
    fn handle_committed(
        &mut self,
        st: &mut Loop,
        committed: Vec<Entry>,
    ) -> std::result::Result<Option<u64>, StopReason> {
        if committed.is_empty() {
            return Ok(None);
        }
        let mut conf_states = Vec::new();
        for e in committed.iter().filter(|e| e.is_conf_change()) {
            let cc = match e.entry_type {
                EntryType::ConfChange => {
                    codec::decode::<ConfChange>(&e.data).map(ConfChange::into_v2)
                }
                _ => codec::decode::<ConfChangeV2>(&e.data),
            };
            let outcome = match &cc {
                Ok(cc) => self.raw.apply_conf_change(cc).map_err(Error::from),
                Err(err) => Err(Error::Raft(err.clone().into())),
            };
            if let Some(fatal) = outcome.as_ref().err().and_then(|e| match e {
                Error::Raft(e) => fatal_raft(e),
                _ => None,
            }) {
                return Err(fatal.into());
            }
            match &outcome {
                Ok(cs) => {
                    self.raw.mut_store().set_conf_state(cs.clone());
                    conf_states.push((e.index, cs.clone()));
                    self.shared.set_conf_state(cs);
                    if let (Some(observer), Ok(cc)) = (&self.observer, &cc) {
                        observer.changed(e.index, cc, cs);
                    }
                }
                // Every replica refuses the same entry the same way; skip it.
                Err(err) => log::error!(
                    "node {}: membership change at {} refused: {err}",
                    self.shared.id,
                    e.index
                ),
            }
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut st.conf_changes)
                .into_iter()
                .partition(|p| p.index == e.index);
            st.conf_changes = rest;
            for p in mine {
                let answer = match (&outcome, p.term == e.term) {
                    (Ok(cs), true) => Ok(cs.clone()),
                    (Err(err), true) => Err(Error::ProposalLost(err.to_string())),
                    (_, false) => Err(Error::ProposalLost("overwritten by another leader".into())),
                };
                let _ = p.reply.try_send(answer);
            }
        }
        let last = committed.last().map_or(0, |e| e.index);
        // Proposals placed below what is committed now and never seen are gone.
        st.conf_changes.retain(|p| {
            if p.index <= last {
                let _ = p.reply.try_send(Err(Error::ProposalLost(
                    "overwritten by another leader".into(),
                )));
                false
            } else {
                true
            }
        });
        let hold = conf_states.last().map(|(i, _)| *i);
        self.shared
            .metrics
            .proposals_committed
            .set(self.raw.raft.raft_log.committed as i64);
        self.apply_tx
            .send(ApplyTask::Entries {
                entries: committed,
                conf_states,
                commit_index: self.raw.raft.raft_log.committed,
            })
            .map_err(|_| self.lost())?;
        Ok(hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fatal_raft_errors_stop_the_node() {
        let lost = raft_core::Error::CommitBeyondLog {
            commit: 9,
            last_index: 3,
        };
        let fatal = fatal_raft(&lost).expect("a lost log stops the node");
        assert_eq!(fatal.kind, FatalKind::Raft);
        assert!(fatal.detail.contains("was the log lost"), "{fatal}");
        let broken = raft_core::Error::Store(raft_core::StorageError::Other("EIO".into()));
        assert_eq!(fatal_raft(&broken).map(|f| f.kind), Some(FatalKind::Raft));
        // Refusals of one message or request change nothing.
        for refused in [
            raft_core::Error::ProposalDropped("no leader"),
            raft_core::Error::MalformedMessage("term 0"),
            raft_core::Error::StepPeerNotFound,
        ] {
            assert!(fatal_raft(&refused).is_none(), "{refused}");
        }
    }
}
