//! Entries and a snapshot that Raft holds but the application has not yet persisted.

use crate::types::{Entry, Snapshot};

/// The not-yet-durable tail of the log.
///
/// Invariants: `entries[i].index == offset + i`; if `snapshot` is set,
/// `offset == snapshot.index + 1`; `offset <= offset_in_progress <= offset + len`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unstable {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub offset: u64,
    /// Entries below this index were handed out in a `Ready` and are being written.
    pub offset_in_progress: u64,
    /// Whether the snapshot was handed out in a `Ready`.
    pub snapshot_in_progress: bool,
    /// Set when entries handed out in a `Ready` were replaced before they were
    /// reported durable. The writes of those Readies still land in storage (in order,
    /// before the replacing ones), so their durability reports must not count: an
    /// entry that happens to have the same index and term would be dropped from here
    /// while storage still holds the stale tail written after it.
    pub replaced_in_progress: bool,
}

impl Unstable {
    pub fn new(offset: u64) -> Unstable {
        Unstable {
            offset,
            offset_in_progress: offset,
            ..Unstable::default()
        }
    }

    /// The first index, if only a snapshot defines it.
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.metadata.index + 1)
    }

    /// The last index held, if any entry or snapshot is held.
    pub fn maybe_last_index(&self) -> Option<u64> {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => Some(e.index),
            (None, Some(s)) => Some(s.metadata.index),
            (None, None) => None,
        }
    }

    /// The term of `index`, if it is held here.
    pub fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let s = self.snapshot.as_ref()?;
            return (s.metadata.index == index).then_some(s.metadata.term);
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|e| e.term)
    }

    /// Entries not yet handed out for persistence.
    pub fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress - self.offset) as usize;
        &self.entries[start..]
    }

    /// The snapshot, if not yet handed out.
    pub fn next_snapshot(&self) -> Option<&Snapshot> {
        match &self.snapshot {
            Some(s) if !self.snapshot_in_progress => Some(s),
            _ => None,
        }
    }

    /// Marks everything held as handed out.
    pub fn accept_in_progress(&mut self) {
        if let Some(e) = self.entries.last() {
            self.offset_in_progress = e.index + 1;
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// Entries up to `index` (of `term`) are now durable: drop them, unless they were
    /// since replaced by entries of another term.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        let Some(t) = self.maybe_term(index) else {
            return;
        };
        if index < self.offset {
            // The index is the snapshot's; `stable_snap_to` handles it.
            return;
        }
        if t == term {
            let n = (index + 1 - self.offset) as usize;
            self.entries.drain(..n);
            self.offset = index + 1;
            self.offset_in_progress = self.offset_in_progress.max(self.offset);
            if self.entries.capacity() > 1024 && self.entries.len() * 4 < self.entries.capacity() {
                self.entries.shrink_to_fit();
            }
        }
    }

    /// The snapshot at `index` is now durable.
    pub fn stable_snap_to(&mut self, index: u64) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.metadata.index == index)
        {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    /// Replaces everything with `snapshot`.
    pub fn restore(&mut self, snapshot: Snapshot) {
        if self.offset_in_progress > self.offset {
            // Entries being written are replaced by the snapshot.
            self.replaced_in_progress = true;
        }
        self.offset = snapshot.metadata.index + 1;
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// Appends `ents`, replacing any entries they conflict with.
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first().map(|e| e.index) else {
            return;
        };
        let end = self.offset + self.entries.len() as u64;
        if first == end {
            // The common case: the new entries follow directly.
        } else if first <= self.offset {
            // Everything held is replaced; the new entries start a fresh unstable log.
            if self.offset_in_progress > first {
                self.replaced_in_progress = true;
            }
            self.offset = first;
            self.offset_in_progress = first;
            self.entries.clear();
        } else {
            // Keep the prefix before `first`. Entries being written that get replaced
            // must be handed out again.
            self.entries.truncate((first - self.offset) as usize);
            if self.offset_in_progress > first {
                self.replaced_in_progress = true;
            }
            self.offset_in_progress = self.offset_in_progress.min(first);
        }
        self.entries.extend_from_slice(ents);
        debug_assert!(self
            .entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == self.offset + i as u64));
    }

    /// Entries in `[lo, hi)`, which must lie within the held range.
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        assert!(
            self.offset <= lo && lo <= hi && hi <= self.offset + self.entries.len() as u64,
            "unstable slice [{lo}, {hi}) out of range [{}, {}]",
            self.offset,
            self.offset + self.entries.len() as u64
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }
}
