//! The Raft log as the algorithm sees it: stable storage behind the [`Storage`] trait,
//! plus the unstable tail, plus the commit, persist and apply cursors.

use crate::errors::{Error, Result, StorageError};
use crate::log_unstable::Unstable;
use crate::storage::Storage;
use crate::types::{Entry, Snapshot};
use crate::util::limit_size;

/// The log and its cursors.
///
/// Invariant: `applied <= applying <= min(committed, persisted)` for entries handed
/// out, and `committed <= last_index()`.
pub struct RaftLog<S: Storage> {
    /// Stable storage.
    pub store: S,
    pub(crate) unstable: Unstable,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index known durable in local storage.
    pub persisted: u64,
    /// Highest index handed to the application for applying.
    pub applying: u64,
    /// Highest index the application reported applied.
    pub applied: u64,
    /// Upper bound on the bytes of committed entries handed out in one `Ready`.
    pub max_apply_bytes: u64,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `store`.
    pub fn new(store: S, max_apply_bytes: u64) -> Result<RaftLog<S>> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        Ok(RaftLog {
            store,
            unstable: Unstable::new(last + 1),
            committed: first - 1,
            persisted: last,
            applying: first - 1,
            applied: first - 1,
            max_apply_bytes,
        })
    }

    /// The first index still available.
    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            // Storage errors here mean the backing store failed; raft cannot make
            // progress without its log, so this is an invariant of the embedding.
            None => self
                .store
                .first_index()
                .expect("storage first_index failed"),
        }
    }

    /// The last index held.
    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.store.last_index().expect("storage last_index failed"),
        }
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .expect("the last entry's term is always available")
    }

    /// The term of entry `index`: `Err(Compacted)` below the first index - 1 (whose
    /// term is still known), `Ok(0)` past the last index.
    pub fn term(&self, index: u64) -> Result<u64> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(StorageError::Compacted.into());
        }
        if index > self.last_index() {
            return Ok(0);
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        match self.store.term(index) {
            Ok(t) => Ok(t),
            Err(Error::Store(StorageError::Compacted | StorageError::Unavailable)) => {
                Err(StorageError::Compacted.into())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether entry `index` has term `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        // Past the end nothing matches, not even term 0: an append claiming to follow
        // an entry we do not hold must be rejected, not appended after a gap.
        index <= self.last_index() && self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `term`) is at least as up to date as ours
    /// (§5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        term > self.last_term() || (term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of `ents` that conflicts with (or extends) the log, or 0.
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    /// For fast backtracking: the largest index `<= index` whose term is `<= term`,
    /// with that term. Entries above it cannot match a leader whose entry at that
    /// position has `term`.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Appends `ents` (from a leader) after checking they follow entry
    /// (`index`, `log_term`). Returns the last new index, or `None` if the check fails.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with the committed prefix (committed {})",
                self.committed
            );
            let start = (conflict - (index + 1)) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    /// Appends entries unconditionally (replacing a conflicting suffix) and returns the
    /// new last index. Never truncates committed entries.
    pub fn append(&mut self, ents: &[Entry]) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        let after = first.index - 1;
        assert!(
            after >= self.committed,
            "appending after {after} would truncate committed entries (committed {})",
            self.committed
        );
        self.unstable.truncate_and_append(ents);
        // Entries past `after` changed; whatever was durable there no longer counts.
        self.persisted = self.persisted.min(after);
        self.last_index()
    }

    /// Raises the commit index. Panics if it would pass the last index: that means
    /// the log was corrupted or lost.
    pub fn commit_to(&mut self, index: u64) {
        if self.committed < index {
            assert!(
                index <= self.last_index(),
                "commit index {index} is out of range [last index {}]; was the log lost?",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Commits `max_index` if it is of term `term` (only current-term entries are
    /// committed by counting replicas, §5.4.2).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term(max_index).is_ok_and(|t| t == term) {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    /// Records that the application applied up to `index`.
    pub fn applied_to(&mut self, index: u64) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "applied index {index} out of range [applied {}, committed {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
        self.applying = self.applying.max(index);
    }

    /// Entries `[lo, hi)` from storage and the unstable tail, at most `max_size` bytes
    /// (but at least one).
    pub fn slice(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>> {
        if lo == hi {
            return Ok(Vec::new());
        }
        let first = self.first_index();
        if lo < first {
            return Err(StorageError::Compacted.into());
        }
        assert!(
            lo <= hi && hi <= self.last_index() + 1,
            "slice [{lo}, {hi}) out of bounds [{first}, {}]",
            self.last_index()
        );
        let mut out = Vec::new();
        let unstable_from = self.unstable.offset;
        if lo < unstable_from {
            let stored = self.store.entries(lo, hi.min(unstable_from), max_size)?;
            // Storage stopped early (size limit): do not add unstable entries after a gap.
            if (stored.len() as u64) < hi.min(unstable_from) - lo {
                return Ok(stored);
            }
            out = stored;
        }
        if hi > unstable_from {
            out.extend_from_slice(self.unstable.slice(lo.max(unstable_from), hi));
        }
        limit_size(&mut out, max_size);
        Ok(out)
    }

    /// Entries from `index` to the end, at most `max_size` bytes.
    pub fn entries(&self, index: u64, max_size: u64) -> Result<Vec<Entry>> {
        if index > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(index, self.last_index() + 1, max_size)
    }

    /// Unstable entries not yet handed out for persistence.
    pub fn next_unstable_entries(&self) -> &[Entry] {
        self.unstable.next_entries()
    }

    /// Whether committed, durable entries are waiting to be handed to the application.
    pub fn has_next_committed_entries(&self) -> bool {
        let lo = self.applying.max(self.first_index() - 1) + 1;
        let hi = self.committed.min(self.persisted);
        // A pending unstable snapshot is applied first.
        self.unstable.snapshot.is_none() && lo <= hi
    }

    /// Committed, durable entries not yet handed to the application. An error means
    /// the storage could not produce them (entries between applied and committed are
    /// never compacted, so this is a storage failure): the node cannot go on.
    pub fn next_committed_entries(&self) -> Result<Vec<Entry>> {
        if !self.has_next_committed_entries() {
            return Ok(Vec::new());
        }
        let lo = self.applying.max(self.first_index() - 1) + 1;
        let hi = self.committed.min(self.persisted) + 1;
        self.slice(lo, hi, self.max_apply_bytes).map_err(|e| {
            Error::Store(StorageError::Other(format!(
                "committed entries [{lo}, {hi}) unavailable: {e}"
            )))
        })
    }

    /// The snapshot to hand out, if one was received and not yet handed out.
    pub fn next_unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.next_snapshot()
    }

    /// The latest snapshot: a pending one, or the storage's.
    pub fn snapshot(&self, request_index: u64, to: u64) -> Result<Snapshot> {
        if let Some(s) = &self.unstable.snapshot {
            return Ok(s.clone());
        }
        self.store.snapshot(request_index, to)
    }

    /// Entries up to (`index`, `term`) are durable.
    pub fn stable_to(&mut self, index: u64, term: u64) -> bool {
        self.unstable.stable_to(index, term);
        if index > self.persisted && self.match_term(index, term) {
            self.persisted = index;
            return true;
        }
        false
    }

    /// The snapshot at `index` is durable.
    pub fn stable_snap_to(&mut self, index: u64) {
        self.unstable.stable_snap_to(index);
        self.persisted = self.persisted.max(index);
    }

    /// Replaces the log with `snapshot`.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        assert!(
            index >= self.committed,
            "restoring a snapshot at {index} behind the commit index {}",
            self.committed
        );
        self.committed = index;
        self.persisted = self.persisted.min(index);
        self.unstable.restore(snapshot);
    }
}
