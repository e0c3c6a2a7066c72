//! The rows `keel wal dump` prints and their JSON schema (see [`super::dump`]).

use keel_raft::ConfState;
use serde::Serialize;

/// A record type `--type` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeFilter {
    /// Normal entries (application data, leader no-ops).
    Normal,
    /// Membership-change entries (simple and joint).
    Conf,
    /// Hard states (term, vote, commit).
    State,
    /// Snapshot markers.
    Snapshot,
    /// Suffix truncations.
    Truncate,
    /// Compaction points.
    Compact,
    /// Batch commit records.
    Commit,
}

/// One record row.
#[derive(Debug, Serialize)]
pub(super) struct RecordRow<'a> {
    pub(super) segment: &'a str,
    pub(super) offset: u64,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) term: Option<u64>,
    pub(super) index: Option<u64>,
    pub(super) len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) entry_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) vote: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) commit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) conf_state: Option<JsonConfState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) records: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) synced_through: Option<u64>,
    /// The table's data column (not in JSON).
    #[serde(skip)]
    pub(super) detail: String,
    /// The table's type column (not in JSON).
    #[serde(skip)]
    pub(super) label: &'static str,
}

impl RecordRow<'_> {
    pub(super) fn blank<'a>(
        segment: &'a str,
        offset: u64,
        kind: &'static str,
        len: u64,
    ) -> RecordRow<'a> {
        RecordRow {
            segment,
            offset,
            kind,
            term: None,
            index: None,
            len,
            entry_type: None,
            data: None,
            vote: None,
            commit: None,
            conf_state: None,
            records: None,
            synced_through: None,
            detail: String::new(),
            label: kind,
        }
    }
}

/// A damage row.
#[derive(Debug, Serialize)]
pub(super) struct DamageRow<'a> {
    pub(super) segment: &'a str,
    pub(super) offset: u64,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) term: Option<u64>,
    pub(super) index: Option<u64>,
    pub(super) len: Option<u64>,
    pub(super) reason: &'a str,
    /// Where reading went on in the same segment; `null` if nothing after the damage
    /// could be read.
    pub(super) resumed_at: Option<u64>,
}

/// A conf state in JSON.
#[derive(Debug, Clone, Serialize)]
pub(super) struct JsonConfState {
    pub(super) voters: Vec<u64>,
    pub(super) learners: Vec<u64>,
    pub(super) voters_outgoing: Vec<u64>,
    pub(super) learners_next: Vec<u64>,
    pub(super) auto_leave: bool,
}

impl From<&ConfState> for JsonConfState {
    fn from(c: &ConfState) -> Self {
        JsonConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct JsonHardState {
    pub(super) term: u64,
    pub(super) vote: u64,
    pub(super) commit: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct JsonSnapshot {
    pub(super) index: u64,
    pub(super) term: u64,
    pub(super) conf_state: JsonConfState,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct JsonDamage {
    pub(super) segment: String,
    pub(super) offset: u64,
    pub(super) reason: String,
    pub(super) resumed_at: Option<u64>,
}

/// Rows shown, by type.
#[derive(Debug, Default, Serialize)]
pub(super) struct Counts {
    pub(super) normal: u64,
    pub(super) conf: u64,
    pub(super) state: u64,
    pub(super) snapshot: u64,
    pub(super) truncate: u64,
    pub(super) compact: u64,
    pub(super) commit: u64,
    pub(super) damage: u64,
}

impl Counts {
    pub(super) fn add(&mut self, category: TypeFilter) {
        let slot = match category {
            TypeFilter::Normal => &mut self.normal,
            TypeFilter::Conf => &mut self.conf,
            TypeFilter::State => &mut self.state,
            TypeFilter::Snapshot => &mut self.snapshot,
            TypeFilter::Truncate => &mut self.truncate,
            TypeFilter::Compact => &mut self.compact,
            TypeFilter::Commit => &mut self.commit,
        };
        *slot += 1;
    }

    pub(super) fn shown(&self) -> u64 {
        self.normal
            + self.conf
            + self.state
            + self.snapshot
            + self.truncate
            + self.compact
            + self.commit
    }
}

/// The last row.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) dir: String,
    pub(super) segments: usize,
    /// Record rows shown (entries count one each).
    pub(super) records: u64,
    pub(super) counts: Counts,
    /// Lowest and highest index among the entries shown.
    pub(super) first_index: Option<u64>,
    pub(super) last_index: Option<u64>,
    /// The last hard state written (whatever the filters).
    pub(super) hard_state: Option<JsonHardState>,
    /// The snapshot marker with the highest index (whatever the filters).
    pub(super) snapshot: Option<JsonSnapshot>,
    /// Every damaged place, in log order (whatever the filters).
    pub(super) damage: Vec<JsonDamage>,
    /// Whether every byte of every segment could be read.
    pub(super) complete: bool,
}
