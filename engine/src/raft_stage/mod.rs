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
//!
//! This file owns the loop and the Ready handling; the reads waiting on raft are
//! `read_index.rs`'s, membership admission and leadership transfer `membership.rs`'s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};
use keel_log_cache::LogCache;
use keel_raft::{
    codec, Entry, Message, RawNode, Ready, SnapshotMetadata, SnapshotStatus, StateRole,
};
use keel_wal::LogStore;

use crate::apply_stage::ApplyTask;
use crate::config::{Config, MembershipObserver};
use crate::error::{fatal_raft, Error, Fatal, FatalKind, Result, StopReason};
use crate::outbox::{Outbox, SendFailures};
use crate::persist_stage::{PersistTask, Persisted};
use crate::recovery::Recovered;
use crate::shared::Shared;
use crate::supervisor::Stage;

mod membership;
mod read_index;
mod request;

use membership::ConfChanges;
use read_index::{ReadQueue, ReadReply};
pub(crate) use request::Request;

// Inbound messages and requests handled per loop turn before a Ready is taken, at most.
const MAX_DRAIN: usize = 1024;
// What raft-core counts for an entry besides its data (`Entry::size_bytes`).
const ENTRY_SIZE_BYTES: u64 = 24;

pub(crate) struct RaftStage {
    raw: RawNode<LogCache<dyn LogStore>>,
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    inbox: Receiver<crate::budget::Charged<Vec<u8>>>,
    stop: Receiver<()>,
    persist_tx: Sender<PersistTask>,
    persisted_rx: Receiver<Persisted>,
    apply_tx: Sender<ApplyTask>,
    applied_rx: Receiver<()>,
    snap_status_rx: Receiver<(u64, SnapshotStatus)>,
    outbox: Outbox,
    tick_ms: u64,
    read_expiry_ticks: u64,
    max_inflight_readies: usize,
    max_pending_reads: usize,
    /// Most bytes of writes proposed together (`max_size_per_msg_bytes`): a follower
    /// forwards them to the leader in one message.
    max_batch_bytes: u64,
    read_ctx_seed: u64,
    /// Number of the last Ready handed out.
    last_number: u64,
    /// Told about every membership change applied.
    observer: Option<Arc<dyn MembershipObserver>>,
}

/// The channels the raft stage works with, built by the wiring.
pub(crate) struct RaftLinks {
    pub(crate) requests: Receiver<Request>,
    pub(crate) inbox: Receiver<crate::budget::Charged<Vec<u8>>>,
    pub(crate) stop: Receiver<()>,
    pub(crate) persist_tx: Sender<PersistTask>,
    pub(crate) persisted_rx: Receiver<Persisted>,
    pub(crate) apply_tx: Sender<ApplyTask>,
    pub(crate) applied_rx: Receiver<()>,
    pub(crate) snap_status_rx: Receiver<(u64, SnapshotStatus)>,
}

impl RaftStage {
    /// The raft stage of the node `shared` describes: its `RawNode` over `rec`'s log
    /// cache, starting at `rec.applied` (a lone voter campaigns at once), and the
    /// status published.
    pub(crate) fn new(
        config: &Config,
        rec: &Recovered,
        shared: Arc<Shared>,
        links: RaftLinks,
        outbox: Outbox,
    ) -> Result<RaftStage> {
        let mut raw = RawNode::new(&config.raft_config(rec.applied), rec.cache.clone())?;
        if raw.raft.prs.is_singleton() && raw.raft.prs.is_voter(shared.id) {
            // A lone voter need not wait an election timeout to lead.
            raw.campaign()?;
        }
        shared.publish(&raw);
        Ok(RaftStage {
            raw,
            shared,
            requests: links.requests,
            inbox: links.inbox,
            stop: links.stop,
            persist_tx: links.persist_tx,
            persisted_rx: links.persisted_rx,
            apply_tx: links.apply_tx,
            applied_rx: links.applied_rx,
            snap_status_rx: links.snap_status_rx,
            outbox,
            tick_ms: config.tick_ms,
            read_expiry_ticks: 4 * config.election_ticks as u64,
            max_inflight_readies: config.max_inflight_readies,
            max_pending_reads: config.max_pending_requests,
            max_batch_bytes: config.max_size_per_msg_bytes,
            read_ctx_seed: read_ctx_seed(),
            last_number: 0,
            observer: config.membership_observer.clone(),
        })
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

struct Loop {
    inflight_readies: usize,
    // Readies that carried a snapshot, to hand to the apply stage once durable.
    pending_snapshots: VecDeque<(u64, SnapshotMetadata)>,
    held: VecDeque<(u64, Vec<Message>)>,
    reads: ReadQueue,
    conf_changes: ConfChanges,
    ticks: u64,
    leader: u64,
}

// What a turn of the loop ends in: go on, or stop for the reason given.
type Turn = std::result::Result<(), StopReason>;

impl Stage for RaftStage {
    /// Runs until stopped, until raft-core reports a fatal error, or until another
    /// stage failed.
    fn run(&mut self) -> StopReason {
        let ticker = crossbeam_channel::tick(Duration::from_millis(self.tick_ms));
        let mut st = Loop {
            inflight_readies: 0,
            pending_snapshots: VecDeque::new(),
            held: VecDeque::new(),
            reads: ReadQueue::new(
                self.shared.id,
                self.read_ctx_seed,
                self.read_expiry_ticks,
                self.max_pending_reads,
            ),
            conf_changes: ConfChanges::default(),
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
            if st.reads.deferred_ready(&self.raw) {
                if let Err(why) = st.reads.start(&mut self.raw, st.ticks, Vec::new()) {
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
        st.reads.stop(&why);
        st.conf_changes.stop(&why);
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
            r.reject(self.shared.proposals.as_ref(), || {
                Error::Stopped(why.clone())
            });
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

    fn on_tick(&mut self, st: &mut Loop) {
        self.raw.tick();
        st.ticks += 1;
        st.reads.expire(st.ticks);
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
        let mut reads: Vec<ReadReply> = Vec::new();
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
                Request::ConfChange { cc, reply } => {
                    st.conf_changes.propose(&mut self.raw, cc, reply)?
                }
                Request::TransferLeader { target, reply } => {
                    let _ = reply.try_send(membership::transfer_leader(&mut self.raw, target));
                }
            }
            handled += 1;
            if handled < MAX_DRAIN {
                next = self.requests.try_recv().ok();
            }
        }
        self.propose_writes(&ids, datas)?;
        st.reads.start(&mut self.raw, st.ticks, reads)
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
                st.reads.leader_changed(ss.leader_id);
                st.leader = ss.leader_id;
            }
            m.has_leader.set(i64::from(ss.leader_id != 0));
            m.is_leader
                .set(i64::from(ss.raft_state == StateRole::Leader));
        }
        // 2. Read states.
        st.reads.confirmed(rd.take_read_states());
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
            let (cc, outcome) = membership::apply_committed(&mut self.raw, e)?;
            match &outcome {
                Ok(cs) => {
                    conf_states.push((e.index, cs.clone()));
                    self.shared.set_conf_state(cs);
                    if let (Some(observer), Some(cc)) = (&self.observer, &cc) {
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
            st.conf_changes.committed(e.index, e.term, &outcome);
        }
        let last = committed.last().map_or(0, |e| e.index);
        // Proposals placed below what is committed now and never seen are gone.
        st.conf_changes.overwritten_through(last);
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
