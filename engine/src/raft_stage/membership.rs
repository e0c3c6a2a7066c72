//! The raft stage's membership work: admitting a membership change (refused before
//! anything is proposed when raft would drop it or it would leave the cluster unable
//! to commit), the changes proposed and waiting to be applied, applying a committed
//! change to raft and their answers, and leadership transfer. When that happens in a
//! Ready is `mod.rs`'s; keeping the member address book is the apply stage's.

use std::collections::BTreeSet;

use keel_log_cache::LogCache;
use keel_raft::{
    codec, ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Raft, RawNode,
    StateRole, Storage,
};
use keel_wal::LogStore;

use crate::error::{fatal_raft, Error, Fatal, MembershipRefusal, Result, StopReason};
use crate::reply;

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

/// Decodes the committed membership change `e` and applies it to raft (raft-core
/// requires that on the raft thread) and to the log cache's membership. Returns the
/// change, if it decoded, and the membership after it or why raft refused it (every
/// replica refuses the same entry the same way, so it is skipped). Errs only on a
/// raft-core error that stops the node.
pub(super) fn apply_committed(
    raw: &mut RawNode<LogCache<dyn LogStore>>,
    e: &Entry,
) -> std::result::Result<(Option<ConfChangeV2>, Result<ConfState>), Fatal> {
    let cc = match e.entry_type {
        EntryType::ConfChange => codec::decode::<ConfChange>(&e.data).map(ConfChange::into_v2),
        _ => codec::decode::<ConfChangeV2>(&e.data),
    };
    let outcome: std::result::Result<ConfState, keel_raft::Error> = match &cc {
        Ok(cc) => raw.apply_conf_change(cc),
        Err(err) => Err(err.clone().into()),
    };
    if let Some(fatal) = outcome.as_ref().err().and_then(fatal_raft) {
        return Err(fatal);
    }
    if let Ok(cs) = &outcome {
        raw.mut_store().set_conf_state(cs.clone());
    }
    Ok((cc.ok(), outcome.map_err(Error::from)))
}

/// Refuses, before anything is proposed, a change raft would drop or one that would
/// leave the cluster unable to commit: another change still pending, a node that is
/// not a member, a learner that has not caught up, or fewer reachable voters than a
/// majority of the new configuration.
pub(super) fn check<S: Storage>(r: &Raft<S>, cc: &ConfChangeV2) -> Result<()> {
    if r.pending_conf_index > r.raft_log.applied {
        return Err(refused(MembershipRefusal::ChangePending));
    }
    if r.prs.conf.voters.is_joint() && !cc.leave_joint() {
        return Err(refused(MembershipRefusal::JointConfiguration));
    }
    let mut voters: BTreeSet<u64> = r.prs.conf.voters.ids();
    let learners = &r.prs.conf.learners;
    for c in &cc.changes {
        let id = c.node_id;
        if id == 0 {
            return Err(refused(MembershipRefusal::ReservedId));
        }
        match c.change_type {
            ConfChangeType::AddNode => {
                if voters.contains(&id) {
                    return Err(refused(MembershipRefusal::AlreadyVoter(id)));
                }
                if learners.contains(&id) {
                    let matched = r.prs.progress.get(&id).map_or(0, |p| p.matched);
                    let committed = r.raft_log.committed;
                    if matched + MAX_PROMOTION_LAG_ENTRIES < committed {
                        return Err(refused(MembershipRefusal::LearnerBehind {
                            id,
                            matched,
                            committed,
                        }));
                    }
                }
                voters.insert(id);
            }
            ConfChangeType::AddLearnerNode => {
                if learners.contains(&id) {
                    return Err(refused(MembershipRefusal::AlreadyLearner(id)));
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
        return Err(refused(MembershipRefusal::NoVoters));
    }
    // A voter counts as reachable if it answered within the last election timeout
    // or is being replicated to normally (check-quorum clears `recent_active` once
    // per election timeout). A brand-new voter counts only if it answered.
    let reachable = voters
        .iter()
        .filter(|&&id| {
            id == r.id
                || r.prs.progress.get(&id).is_some_and(|p| {
                    p.recent_active || p.state == keel_raft::tracker::ProgressState::Replicate
                })
        })
        .count();
    if reachable * 2 <= voters.len() {
        return Err(refused(MembershipRefusal::WouldLoseQuorum {
            reachable,
            voters: voters.len(),
        }));
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
        return Err(refused(MembershipRefusal::LearnerCannotLead(target)));
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

fn refused(why: MembershipRefusal) -> Error {
    Error::MembershipRefused(why)
}
