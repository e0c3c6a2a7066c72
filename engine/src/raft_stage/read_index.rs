//! The raft stage's read-index queue: the linearizable reads waiting for raft to
//! confirm leadership (one `ReadIndex` round serves every read that queued meanwhile),
//! the reads held back until a new leader has committed an entry of its own term, and
//! their expiry. Owns every answer a read gets from the raft stage; the caller then
//! waits for the apply stage to reach the index (`Db::get`).

use std::collections::HashMap;

use keel_raft::{RawNode, ReadState, StateRole, Storage};

use crate::error::{fatal_raft, Error, Result, StopReason};
use crate::reply;

/// Where a read's answer goes: the index it may be served at, or why not.
pub(crate) type ReadReply = reply::Sender<Result<u64>>;

struct PendingRead {
    waiters: Vec<ReadReply>,
    issued_tick: u64,
}

/// The reads of one node waiting on raft.
pub(super) struct ReadQueue {
    id: u64,
    // By the context of their ReadIndex round.
    rounds: HashMap<Vec<u8>, PendingRead>,
    // Reads in `rounds`.
    waiting: usize,
    next_ctx: u64,
    // Reads that arrived while this node leads but has not committed an entry of its
    // term yet (see `start`).
    deferred: Vec<ReadReply>,
    expiry_ticks: u64,
    max_pending: usize,
}

impl ReadQueue {
    /// The queue of node `id`: contexts count up from `ctx_seed`, a round unanswered
    /// for `expiry_ticks` ticks fails, and at most `max_pending` reads wait.
    pub(super) fn new(id: u64, ctx_seed: u64, expiry_ticks: u64, max_pending: usize) -> Self {
        ReadQueue {
            id,
            rounds: HashMap::new(),
            waiting: 0,
            next_ctx: ctx_seed,
            deferred: Vec::new(),
            expiry_ticks,
            max_pending,
        }
    }

    /// Fails the rounds issued `expiry_ticks` or more before `ticks`: a read whose
    /// ReadIndex message was lost would wait forever; its caller retries.
    pub(super) fn expire(&mut self, ticks: u64) {
        let expiry = self.expiry_ticks;
        let mut expired = 0;
        self.rounds.retain(|_, r| {
            let keep = ticks.saturating_sub(r.issued_tick) < expiry;
            if !keep {
                expired += r.waiters.len();
                for w in r.waiters.drain(..) {
                    let _ = w.try_send(Err(Error::ProposalLost("read request expired".into())));
                }
            }
            keep
        });
        self.waiting -= expired;
    }

    /// Whether deferred reads could start now.
    pub(super) fn deferred_ready<S: Storage>(&self, raw: &RawNode<S>) -> bool {
        !self.deferred.is_empty() && leader_commit_is_current(raw)
    }

    /// Starts a ReadIndex round for `reads` (and the deferred ones, once they may go),
    /// at tick `ticks`. Errs only when raft-core's error stops the node (the reads are
    /// answered with it).
    pub(super) fn start<S: Storage>(
        &mut self,
        raw: &mut RawNode<S>,
        ticks: u64,
        mut reads: Vec<ReadReply>,
    ) -> std::result::Result<(), StopReason> {
        if !self.deferred.is_empty() && leader_commit_is_current(raw) {
            reads.append(&mut self.deferred);
        }
        if reads.is_empty() {
            return Ok(());
        }
        if !leader_commit_is_current(raw) {
            if self.deferred.len() + reads.len() > self.max_pending {
                for r in reads {
                    let _ = r.try_send(Err(Error::Busy(self.deferred.len())));
                }
            } else {
                self.deferred.append(&mut reads);
            }
            return Ok(());
        }
        if self.waiting + reads.len() > self.max_pending {
            for r in reads {
                let _ = r.try_send(Err(Error::Busy(self.waiting)));
            }
            return Ok(());
        }
        // One ReadIndex round serves every read that queued meanwhile. The context
        // carries the node id so concurrent reads from different nodes never collide
        // in the leader's table.
        self.next_ctx += 1;
        let mut ctx = self.id.to_le_bytes().to_vec();
        ctx.extend_from_slice(&self.next_ctx.to_le_bytes());
        match raw.read_index(ctx.clone()) {
            Ok(()) => {
                self.waiting += reads.len();
                self.rounds.insert(
                    ctx,
                    PendingRead {
                        waiters: reads,
                        issued_tick: ticks,
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
                let leader = Some(raw.raft.leader_id).filter(|&l| l != 0);
                for r in reads {
                    let _ = r.try_send(Err(Error::NotLeader { leader }));
                }
            }
        }
        Ok(())
    }

    /// Fails every waiting read: the leader changed to `leader` (0: none), so the
    /// rounds sent to the old one will not be answered.
    pub(super) fn leader_changed(&mut self, leader: u64) {
        let leader = Some(leader).filter(|&l| l != 0);
        for (_, read) in self.rounds.drain() {
            for w in read.waiters {
                let _ = w.try_send(Err(Error::ProposalLost(format!(
                    "leader changed (now {leader:?})"
                ))));
            }
        }
        self.waiting = 0;
        for w in self.deferred.drain(..) {
            let _ = w.try_send(Err(Error::ProposalLost("leader changed".into())));
        }
    }

    /// Answers the rounds raft confirmed, each with its read index.
    pub(super) fn confirmed(&mut self, states: Vec<ReadState>) {
        for rs in states {
            if let Some(read) = self.rounds.remove(&rs.request_ctx) {
                self.waiting -= read.waiters.len();
                for w in read.waiters {
                    let _ = w.try_send(Ok(rs.index));
                }
            }
        }
    }

    /// Answers every waiting read: the node stopped for `why`.
    pub(super) fn stop(&mut self, why: &StopReason) {
        for (_, read) in self.rounds.drain() {
            for w in read.waiters {
                let _ = w.try_send(Err(Error::Stopped(why.clone())));
            }
        }
        self.waiting = 0;
        for w in self.deferred.drain(..) {
            let _ = w.try_send(Err(Error::Stopped(why.clone())));
        }
    }
}

// Whether a leader's commit index is known to be current: only once an entry of
// its own term committed (§6.4). raft-core answers a lone voter's ReadIndex with
// the commit index at once, and after a restart that index is the persisted one,
// which may lag writes that were acknowledged (the apply stage can answer a write
// before the hard state carrying its commit is written).
fn leader_commit_is_current<S: Storage>(raw: &RawNode<S>) -> bool {
    let r = &raw.raft;
    r.state != StateRole::Leader || r.raft_log.term(r.raft_log.committed).ok() == Some(r.term)
}
