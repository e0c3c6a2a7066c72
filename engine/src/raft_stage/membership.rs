//! The raft stage's membership work: admitting a membership change (refused before
//! anything is proposed when raft would drop it or it would leave the cluster unable
//! to commit), the changes proposed and waiting to be applied, their answers, and
//! leadership transfer. Applying a committed change to raft is Ready handling
//! (`mod.rs`); keeping the member address book is the apply stage's.

use std::collections::BTreeSet;

use raft_core::{ConfChangeType, ConfChangeV2, ConfState, Raft, RawNode, StateRole, Storage};

use crate::error::{fatal_raft, Error, Result, StopReason};
use crate::reply;

/// How a membership change refused for want of reachable voters begins; `Db` retries
/// those for a while, as a leader learns who is reachable only from their answers.
pub(crate) const QUORUM_REFUSAL: &str = "the change would lose quorum";

// Most entries a learner may lag the leader's commit index and still be promoted: a
// voter that is far behind would stall commits until it caught up.
const MAX_PROMOTION_LAG_ENTRIES: u64 = 1_000;

/// Where a membership change's answer goes: the membership once it is applied to
/// raft, or why not.
pub(crate) type ConfChangeReply = reply::Sender<Result<ConfState>>;

struct PendingConfChange {
    index: u64,
    term: u64,
    reply: ConfChangeReply,
}

/// The membership changes this node proposed, waiting to commit.
#[derive(Default)]
pub(super) struct ConfChanges {
    pending: Vec<PendingConfChange>,
}

impl ConfChanges {
    /// Proposes `cc` if this node leads and the change passes [`check`]; otherwise
    /// answers `reply` at once. Errs only when raft-core's error stops the node.
    pub(super) fn propose<S: Storage>(
        &mut self,
        raw: &mut RawNode<S>,
        cc: ConfChangeV2,
        reply: ConfChangeReply,
    ) -> std::result::Result<(), StopReason> {
        if raw.role() != StateRole::Leader {
            let _ = reply.try_send(Err(Error::NotLeader {
                leader: Some(raw.raft.leader_id).filter(|&l| l != 0),
            }));
            return Ok(());
        }
        if let Err(e) = check(&raw.raft, &cc) {
            let _ = reply.try_send(Err(e));
            return Ok(());
        }
        let last_before = raw.raft.raft_log.last_index();
        let term = raw.raft.term;
        match raw.propose_conf_change_v2(&cc) {
            Ok(()) => self.pending.push(PendingConfChange {
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

    /// Answers the change proposed at `index`, now committed at `term` with
    /// `outcome` (the membership, or why raft refused it).
    pub(super) fn committed(
        &mut self,
        index: u64,
        term: u64,
        outcome: &std::result::Result<ConfState, Error>,
    ) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.index == index);
        self.pending = rest;
        for p in mine {
            let answer = match (outcome, p.term == term) {
                (Ok(cs), true) => Ok(cs.clone()),
                (Err(err), true) => Err(Error::ProposalLost(err.to_string())),
                (_, false) => Err(Error::ProposalLost("overwritten by another leader".into())),
            };
            let _ = p.reply.try_send(answer);
        }
    }

    /// Fails the changes placed at or below `last`, now committed, that were never
    /// seen: another leader's entries replaced them.
    pub(super) fn overwritten_through(&mut self, last: u64) {
        self.pending.retain(|p| {
            if p.index <= last {
                let _ = p.reply.try_send(Err(Error::ProposalLost(
                    "overwritten by another leader".into(),
                )));
                false
            } else {
                true
            }
        });
    }

    /// Answers every waiting change: the node stopped for `why`.
    pub(super) fn stop(&mut self, why: &StopReason) {
        for cc in self.pending.drain(..) {
            let _ = cc.reply.try_send(Err(Error::Stopped(why.clone())));
        }
    }
}

/// Refuses, before anything is proposed, a change raft would drop or one that would
/// leave the cluster unable to commit: another change still pending, a node that is
/// not a member, a learner that has not caught up, or fewer reachable voters than a
/// majority of the new configuration.
pub(super) fn check<S: Storage>(r: &Raft<S>, cc: &ConfChangeV2) -> Result<()> {
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

/// Asks raft to hand leadership to `target` (on a follower raft forwards the request
/// to the leader); the caller watches the status for the outcome.
pub(super) fn transfer_leader<S: Storage>(raw: &mut RawNode<S>, target: u64) -> Result<()> {
    let r = &raw.raft;
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
    raw.transfer_leader(target);
    Ok(())
}
