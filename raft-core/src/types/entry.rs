//! Log entries and the durable hard state.

/// What an [`Entry`]'s `data` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryType {
    /// Application data (empty data is a leader's no-op entry).
    #[default]
    Normal,
    /// An encoded [`ConfChange`](crate::ConfChange) (single-step membership change).
    ConfChange,
    /// An encoded [`ConfChangeV2`](crate::ConfChangeV2) (joint consensus).
    ConfChangeV2,
}

/// One slot of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The leader term in which the entry was created.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// How `data` is to be interpreted.
    pub entry_type: EntryType,
    /// Opaque payload.
    pub data: Vec<u8>,
}

impl Entry {
    /// A normal entry with the given payload.
    pub fn new(term: u64, index: u64, data: Vec<u8>) -> Entry {
        Entry {
            term,
            index,
            entry_type: EntryType::Normal,
            data,
        }
    }

    /// Bytes this entry counts for in size limits (payload plus a fixed header).
    pub fn size_bytes(&self) -> u64 {
        // 24 bytes approximate term, index and type; the payload dominates.
        24 + self.data.len() as u64
    }

    /// Whether this entry carries a configuration change of either version.
    pub fn is_conf_change(&self) -> bool {
        matches!(
            self.entry_type,
            EntryType::ConfChange | EntryType::ConfChangeV2
        )
    }
}

/// The state Raft must persist before it answers any message: the current term,
/// whom it voted for in that term, and the highest index known committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Candidate voted for in `term` (0 for none).
    pub vote: u64,
    /// Highest log index known to be committed.
    pub commit: u64,
}

impl HardState {
    /// Whether this is the all-zero state of a node that has never run.
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}
