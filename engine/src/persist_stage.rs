//! The persist stage: makes Readies durable.
//!
//! It takes every Ready that queued up (at most `max_inflight_readies`), writes them as
//! few `LogBatch`es as it can (split where a snapshot marker must come first, or where
//! a Ready replaces entries before the batch's first) and, if any of
//! them must be durable before it is acted on, makes the writes durable with one
//! durable write (whether that syncs is the log's sync policy, not this stage's
//! business), then mirrors the write into the [`LogCache`] (the cache's protocol: log
//! first, cache second), sends the messages that had to wait for the disk (a
//! follower's acks and votes), and reports the highest durable Ready number to the raft stage.
//!
//! A failed write or sync is fatal: the log is poisoned, nothing acknowledged may depend
//! on it, and the node stops loudly (a [`FatalKind::LogWrite`] stop).

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use keel_log_cache::LogCache;
use keel_raft::{Entry, HardState, Message, SnapshotMetadata, StorageError};
use keel_wal::{LogBatch, LogStore};

use crate::error::{Fatal, FatalKind, StopReason};
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::supervisor::Stage;

/// One Ready's share of durable work.
pub(crate) struct PersistTask {
    pub(crate) number: u64,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) snapshot: Option<SnapshotMetadata>,
    pub(crate) must_sync: bool,
    /// Messages to send once this Ready is durable.
    pub(crate) messages: Vec<Message>,
    /// If set, the messages go back to the raft stage, which sends them once the apply
    /// stage applied this index (a committed membership change).
    pub(crate) hold_until_applied: Option<u64>,
}

/// The report back to the raft stage.
pub(crate) struct Persisted {
    /// Every Ready up to and including this number is durable.
    pub(crate) number: u64,
    /// Messages the raft stage must send once the applied index reaches the key.
    pub(crate) held: Vec<(u64, Vec<Message>)>,
}

pub(crate) struct PersistStage {
    shared: Arc<Shared>,
    tasks: Receiver<PersistTask>,
    done: Sender<Persisted>,
    cache: LogCache<dyn LogStore>,
    outbox: Outbox,
    max_batch: usize,
}

impl PersistStage {
    /// The persist stage of the node `shared` describes: takes Readies from `tasks`
    /// (at most `max_batch` per write), writes them to `cache`'s log (durably where a
    /// Ready asks; the log's sync policy decides what that costs), sends their waiting
    /// messages through `outbox`, and reports to `done`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        tasks: Receiver<PersistTask>,
        done: Sender<Persisted>,
        cache: LogCache<dyn LogStore>,
        outbox: Outbox,
        max_batch: usize,
    ) -> PersistStage {
        PersistStage {
            shared,
            tasks,
            done,
            cache,
            outbox,
            max_batch,
        }
    }
}

impl Stage for PersistStage {
    /// Runs until the raft stage drops its sender (after finishing what queued) or a
    /// write fails.
    fn run(&mut self) -> StopReason {
        while let Ok(first) = self.tasks.recv() {
            let mut tasks = vec![first];
            while tasks.len() < self.max_batch {
                match self.tasks.try_recv() {
                    Ok(t) => tasks.push(t),
                    Err(_) => break,
                }
            }
            if let Err(fatal) = self.persist(&mut tasks) {
                return StopReason::Fatal(fatal);
            }
            let number = tasks.last().map_or(0, |t| t.number);
            if tasks.iter().any(|t| !t.messages.is_empty()) {
                fail::fail_point!("raftBeforeFollowerSend");
            }
            let mut held = Vec::new();
            for t in tasks {
                match t.hold_until_applied {
                    Some(index) if !t.messages.is_empty() => held.push((index, t.messages)),
                    _ => {
                        // Failures here are a follower's replies; the leader retries.
                        self.outbox.send(t.messages);
                    }
                }
            }
            if self.done.send(Persisted { number, held }).is_err() {
                break;
            }
        }
        // Both channels close only once the raft stage ended, which recorded why.
        StopReason::Closed
    }
}

impl PersistStage {
    // Takes the tasks' entries (they move into the log cache); the rest stays.
    fn persist(&self, tasks: &mut [PersistTask]) -> Result<(), Fatal> {
        let batches = merge(tasks);
        let durable = tasks.iter().any(|t| t.must_sync);
        let log = self.cache.log();
        let started = Instant::now();
        fail::fail_point!("raftBeforeSave");
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            if batch.snapshot.is_some() {
                fail::fail_point!("raftBeforeSaveSnap");
            }
            log.write(batch, false)
                .map_err(|e| Fatal::here(FatalKind::LogWrite, format!("log write failed: {e}")))?;
            if batch.snapshot.is_some() {
                fail::fail_point!("raftAfterSaveSnap");
            }
        }
        if durable {
            fail::fail_point!("walBeforeSync");
            let syncs_before = log.syncs();
            // An empty durable write: what the batches above wrote becomes durable, as
            // the log's sync policy says.
            log.write(&LogBatch::default(), true)
                .map_err(|e| Fatal::here(FatalKind::LogWrite, format!("log sync failed: {e}")))?;
            fail::fail_point!("walAfterSync");
            if log.syncs() > syncs_before {
                // Only a write that really synced is timed as one.
                self.shared
                    .metrics
                    .wal_fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        fail::fail_point!("raftAfterSave");
        // Now durable: show the same to raft through the cache, in Ready order (the
        // batches keep it: a snapshot starts a batch, before that batch's entries).
        for batch in batches {
            if let Some(meta) = batch.snapshot {
                let index = meta.index;
                match self.cache.apply_snapshot(meta) {
                    Ok(()) => {}
                    Err(keel_raft::Error::Store(StorageError::SnapshotOutOfDate)) => {
                        log::warn!(
                            "node {}: snapshot at {index} is older than the cache's",
                            self.shared.id,
                        );
                    }
                    Err(e) => {
                        return Err(Fatal::here(
                            FatalKind::Invariant,
                            format!("log cache refused a snapshot: {e}"),
                        ))
                    }
                }
                fail::fail_point!("raftAfterApplySnap");
            }
            self.cache.append_owned(batch.entries).map_err(|e| {
                Fatal::here(
                    FatalKind::Invariant,
                    format!("log cache refused entries: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

/// Merges the Readies' writes into as few `LogBatch`es as the log's batch layout allows:
/// a new batch starts only where a snapshot marker follows entries (a batch writes its
/// marker before its entries). Later entries replace an overlapping suffix, as they
/// would in the log.
fn merge(tasks: &mut [PersistTask]) -> Vec<LogBatch> {
    let mut batches = vec![LogBatch::default()];
    for t in tasks {
        if let Some(meta) = &t.snapshot {
            let cur_is_empty = batches.last().is_none_or(|b| b.is_empty());
            if !cur_is_empty {
                batches.push(LogBatch::default());
            }
            if let Some(cur) = batches.last_mut() {
                cur.snapshot = Some(meta.clone());
            }
        }
        let Some(cur) = batches.last_mut() else {
            continue;
        };
        let mut entries = std::mem::take(&mut t.entries);
        if let Some(first) = entries.first().map(|e| e.index) {
            let contiguous = cur
                .entries
                .first()
                .is_none_or(|e0| first >= e0.index && first <= e0.index + cur.entries.len() as u64);
            if contiguous {
                let keep = cur.entries.iter().take_while(|e| e.index < first).count();
                cur.entries.truncate(keep);
                cur.entries.append(&mut entries);
            } else {
                // Replacing entries before this batch's first: let the log do it.
                batches.push(LogBatch {
                    entries,
                    ..LogBatch::default()
                });
            }
        }
        if let Some(hs) = t.hard_state {
            if let Some(cur) = batches.last_mut() {
                cur.hard_state = Some(hs);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(number: u64, from: u64, to: u64, term: u64) -> PersistTask {
        PersistTask {
            number,
            entries: (from..=to).map(|i| Entry::new(term, i, vec![])).collect(),
            hard_state: None,
            snapshot: None,
            must_sync: true,
            messages: Vec::new(),
            hold_until_applied: None,
        }
    }

    #[test]
    fn merge_replaces_overlapping_suffix() {
        let batches = merge(&mut [task(1, 1, 5, 1), task(2, 4, 6, 2)]);
        assert_eq!(batches.len(), 1);
        let got: Vec<(u64, u64)> = batches[0]
            .entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]);
    }

    #[test]
    fn merge_starts_a_batch_at_a_snapshot() {
        let mut snap = task(2, 11, 12, 2);
        snap.snapshot = Some(SnapshotMetadata {
            index: 10,
            term: 2,
            ..SnapshotMetadata::default()
        });
        let batches = merge(&mut [task(1, 1, 3, 1), snap]);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].snapshot.as_ref().map(|s| s.index), Some(10));
        assert_eq!(batches[1].entries.len(), 2);
    }
}
