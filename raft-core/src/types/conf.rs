//! Cluster membership: the configuration state and the changes to it.

/// The membership recorded in a snapshot or produced by applying a conf change.
///
/// Outside a joint configuration `voters_outgoing` is empty. Inside one, `voters` is
/// the incoming majority and `voters_outgoing` the outgoing majority; both must agree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Voters of the (incoming) configuration.
    pub voters: Vec<u64>,
    /// Non-voting members that receive the log.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration while joint.
    pub voters_outgoing: Vec<u64>,
    /// Outgoing voters that become learners once the joint configuration is left.
    pub learners_next: Vec<u64>,
    /// Whether the joint configuration is left automatically once committed.
    pub auto_leave: bool,
}

/// What a single-step change does to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeType {
    /// Add (or promote) a voter.
    #[default]
    AddNode,
    /// Remove the node entirely.
    RemoveNode,
    /// Add a learner, or demote a voter to a learner.
    AddLearnerNode,
}

/// A single-step membership change (the original, "V1", form).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfChange {
    /// The change.
    pub change_type: ConfChangeType,
    /// The node it applies to.
    pub node_id: u64,
    /// Application context carried with the change (e.g. the node's address).
    pub context: Vec<u8>,
}

/// One node's change within a [`ConfChangeV2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfChangeSingle {
    /// The change.
    pub change_type: ConfChangeType,
    /// The node it applies to.
    pub node_id: u64,
}

/// How a [`ConfChangeV2`] moves through joint consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeTransition {
    /// A single change uses the simple protocol; several use joint consensus that is
    /// left automatically.
    #[default]
    Auto,
    /// Always use joint consensus and leave it automatically.
    JointImplicit,
    /// Always use joint consensus; the application leaves it with an empty change.
    JointExplicit,
}

/// A membership change of any number of nodes, possibly through joint consensus.
/// An empty `changes` list leaves a joint configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfChangeV2 {
    /// How to transition.
    pub transition: ConfChangeTransition,
    /// The individual changes.
    pub changes: Vec<ConfChangeSingle>,
    /// Application context carried with the change.
    pub context: Vec<u8>,
}

impl ConfChange {
    /// The same change in V2 form.
    pub fn into_v2(self) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type: self.change_type,
                node_id: self.node_id,
            }],
            context: self.context,
        }
    }
}

impl ConfChangeV2 {
    /// Whether this change leaves a joint configuration (no changes listed).
    pub fn leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this change enters a joint configuration, and if so whether
    /// it is left automatically.
    pub fn enter_joint(&self) -> Option<bool> {
        if self.changes.len() > 1 || self.transition != ConfChangeTransition::Auto {
            let auto_leave = self.transition != ConfChangeTransition::JointExplicit;
            Some(auto_leave)
        } else {
            None
        }
    }
}
