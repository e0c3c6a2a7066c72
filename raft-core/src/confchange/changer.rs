//! Computes the configuration (and progress map) that results from a change, without
//! touching the tracker until the whole change is known to be valid.

use std::collections::BTreeMap;

use crate::errors::{Error, Result};
use crate::tracker::{Configuration, Progress, ProgressTracker};
use crate::types::{ConfChangeSingle, ConfChangeType};

/// Builds a new configuration from the tracker's current one.
pub struct Changer<'a> {
    tracker: &'a ProgressTracker,
    last_index: u64,
}

type Outcome = (Configuration, BTreeMap<u64, Progress>);

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::ConfChange(msg.into()))
}

impl<'a> Changer<'a> {
    /// A changer over `tracker`; new members start probing after `last_index`.
    pub fn new(tracker: &'a ProgressTracker, last_index: u64) -> Changer<'a> {
        Changer {
            tracker,
            last_index,
        }
    }

    /// Enters a joint configuration: the current voters become the outgoing half and
    /// `changes` apply to the incoming half.
    pub fn enter_joint(&self, auto_leave: bool, changes: &[ConfChangeSingle]) -> Result<Outcome> {
        let (mut cfg, mut prs) = self.check_and_copy()?;
        if cfg.voters.is_joint() {
            return err("configuration is already joint");
        }
        if cfg.voters.incoming.is_empty() {
            // An empty configuration cannot decide anything, joint or not.
            return err("cannot make a zero-voter configuration joint");
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, changes)?;
        cfg.auto_leave = auto_leave;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Leaves the joint configuration: the outgoing half is dropped and
    /// `learners_next` become learners.
    pub fn leave_joint(&self) -> Result<Outcome> {
        let (mut cfg, mut prs) = self.check_and_copy()?;
        if !cfg.voters.is_joint() {
            return err("can't leave a non-joint configuration");
        }
        for id in std::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(pr) = prs.get_mut(&id) {
                pr.is_learner = true;
            }
        }
        let outgoing = std::mem::take(cfg.voters.outgoing.ids_mut());
        for id in outgoing {
            if !cfg.voters.incoming.contains(id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.auto_leave = false;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// A change of at most one voter, without joint consensus.
    pub fn simple(&self, changes: &[ConfChangeSingle]) -> Result<Outcome> {
        let (mut cfg, mut prs) = self.check_and_copy()?;
        if cfg.voters.is_joint() {
            return err("can't apply a simple change in a joint configuration");
        }
        let before = cfg.voters.incoming.ids().clone();
        self.apply(&mut cfg, &mut prs, changes)?;
        let after = cfg.voters.incoming.ids();
        if before.symmetric_difference(after).count() > 1 {
            return err("more than one voter changed without entering joint config");
        }
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn check_and_copy(&self) -> Result<Outcome> {
        let cfg = self.tracker.conf.clone();
        let prs = self.tracker.progress.clone();
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn apply(
        &self,
        cfg: &mut Configuration,
        prs: &mut BTreeMap<u64, Progress>,
        changes: &[ConfChangeSingle],
    ) -> Result<()> {
        for cc in changes {
            if cc.node_id == 0 {
                // etcd ignores id 0: it appears in changes that carry only context.
                continue;
            }
            match cc.change_type {
                ConfChangeType::AddNode => self.make_voter(cfg, prs, cc.node_id),
                ConfChangeType::AddLearnerNode => self.make_learner(cfg, prs, cc.node_id),
                ConfChangeType::RemoveNode => remove(cfg, prs, cc.node_id),
            }
        }
        if cfg.voters.incoming.is_empty() {
            return err("removed all voters");
        }
        Ok(())
    }

    fn init_progress(&self, prs: &mut BTreeMap<u64, Progress>, id: u64, is_learner: bool) {
        // Probing starts at the last index (the follower likely has most of the log);
        // never at 0, which has no predecessor to match.
        let mut pr = Progress::new(
            self.last_index.max(1),
            self.tracker.max_inflight_msgs,
            self.tracker.max_inflight_bytes,
        );
        pr.is_learner = is_learner;
        // A new member counts as active so CheckQuorum does not step the leader down
        // before the member had a chance to answer.
        pr.recent_active = true;
        prs.insert(id, pr);
    }

    fn make_voter(&self, cfg: &mut Configuration, prs: &mut BTreeMap<u64, Progress>, id: u64) {
        match prs.get_mut(&id) {
            None => self.init_progress(prs, id, false),
            Some(pr) => pr.is_learner = false,
        }
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.ids_mut().insert(id);
    }

    fn make_learner(&self, cfg: &mut Configuration, prs: &mut BTreeMap<u64, Progress>, id: u64) {
        if !prs.contains_key(&id) {
            self.init_progress(prs, id, true);
            cfg.learners.insert(id);
            return;
        }
        if cfg.learners.contains(&id) {
            return;
        }
        cfg.voters.incoming.ids_mut().remove(&id);
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        // A voter of the outgoing half cannot be a learner until the joint config is
        // left: it still votes there. It becomes a learner then.
        if cfg.voters.outgoing.contains(id) {
            cfg.learners_next.insert(id);
        } else {
            if let Some(pr) = prs.get_mut(&id) {
                pr.is_learner = true;
            }
            cfg.learners.insert(id);
        }
    }
}

fn remove(cfg: &mut Configuration, prs: &mut BTreeMap<u64, Progress>, id: u64) {
    if !prs.contains_key(&id) {
        return;
    }
    cfg.voters.incoming.ids_mut().remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // An outgoing voter keeps its progress until the joint configuration is left.
    if !cfg.voters.outgoing.contains(id) {
        prs.remove(&id);
    }
}

/// The configuration invariants, checked before and after every change.
fn check_invariants(cfg: &Configuration, prs: &BTreeMap<u64, Progress>) -> Result<()> {
    for id in cfg.voters.ids() {
        if !prs.contains_key(&id) {
            return err(format!("no progress for voter {id}"));
        }
    }
    for &id in &cfg.learners {
        match prs.get(&id) {
            None => return err(format!("no progress for learner {id}")),
            Some(pr) if !pr.is_learner => {
                return err(format!("progress of learner {id} is not marked learner"))
            }
            _ => {}
        }
        if cfg.voters.outgoing.contains(id) || cfg.voters.incoming.contains(id) {
            return err(format!("{id} is both a learner and a voter"));
        }
    }
    for &id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(id) {
            return err(format!(
                "{id} is in learners_next but not an outgoing voter"
            ));
        }
        match prs.get(&id) {
            None => return err(format!("no progress for learner-next {id}")),
            Some(pr) if pr.is_learner => {
                return err(format!("learner-next {id} is already marked learner"))
            }
            _ => {}
        }
    }
    if !cfg.voters.is_joint() {
        if !cfg.learners_next.is_empty() {
            return err("learners_next must be empty outside a joint config");
        }
        if cfg.auto_leave {
            return err("auto_leave must be false outside a joint config");
        }
    }
    Ok(())
}
