//! Rebuilding a tracker configuration from a [`ConfState`] (at start-up or after a
//! snapshot) by replaying it as a sequence of valid changes.

use crate::errors::Result;
use crate::tracker::ProgressTracker;
use crate::types::{ConfChangeSingle, ConfChangeType, ConfState};

use super::Changer;

fn single(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
    ConfChangeSingle {
        change_type,
        node_id,
    }
}

/// Resets `tracker` to the configuration `cs`, with new members expected to need
/// entries after `next_idx`.
///
/// The outgoing configuration is built first with simple changes, then the joint
/// configuration is entered with the incoming voters and learners, so every step goes
/// through the same validation as a live change.
pub fn restore(tracker: &mut ProgressTracker, next_idx: u64, cs: &ConfState) -> Result<()> {
    tracker.conf = Default::default();
    tracker.progress.clear();
    let voters = |ids: &[u64]| -> Vec<ConfChangeSingle> {
        ids.iter()
            .map(|&id| single(ConfChangeType::AddNode, id))
            .collect()
    };
    let learners = |ids: &[u64]| -> Vec<ConfChangeSingle> {
        ids.iter()
            .map(|&id| single(ConfChangeType::AddLearnerNode, id))
            .collect()
    };
    let (outgoing, incoming) = if cs.voters_outgoing.is_empty() {
        // Not joint: add every voter and learner one at a time.
        let mut all = voters(&cs.voters);
        all.extend(learners(&cs.learners));
        (all, Vec::new())
    } else {
        // Joint: build the outgoing half, then enter joint with the incoming half.
        // Everyone in the incoming half is first removed so that `AddNode` on an
        // outgoing voter does not count as "more than one change".
        let mut incoming: Vec<ConfChangeSingle> = cs
            .voters_outgoing
            .iter()
            .map(|&id| single(ConfChangeType::RemoveNode, id))
            .collect();
        incoming.extend(voters(&cs.voters));
        incoming.extend(learners(&cs.learners));
        incoming.extend(learners(&cs.learners_next));
        (voters(&cs.voters_outgoing), incoming)
    };
    for cc in &outgoing {
        let (cfg, prs) = Changer::new(tracker, next_idx).simple(std::slice::from_ref(cc))?;
        tracker.conf = cfg;
        tracker.progress = prs;
    }
    if !incoming.is_empty() {
        let (cfg, prs) = Changer::new(tracker, next_idx).enter_joint(cs.auto_leave, &incoming)?;
        tracker.conf = cfg;
        tracker.progress = prs;
    }
    Ok(())
}
