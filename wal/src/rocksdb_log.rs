//! RocksDB as the Raft log (cargo feature `rocksdb`).
//!
//! Entries live in the `entries` column family keyed by their big-endian index, so
//! RocksDB's key order is log order and a suffix or prefix is one range delete. The
//! hard state, the snapshot marker and the compaction base live in `meta`. Every
//! [`LogBatch`] becomes one `WriteBatch`, so a batch is applied entirely or not at all.
//!
//! Group commit: batches are written to RocksDB (unsynced) in the order they arrive,
//! under the state lock, which keeps RocksDB's log order equal to ours. Durable writes
//! the [`SyncPolicy`] syncs then meet at a sync point: the first becomes the sync leader,
//! syncs RocksDB's WAL once for everything written so far, and wakes the others. This is
//! the same leader/follower scheme as the segmented WAL's write barrier; RocksDB's own
//! write groups cannot be used for it because they would reorder our batches.

use std::path::Path;
use std::time::Instant;

use keel_raft::{codec, Entry, HardState, SnapshotMetadata};
use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::log_index::{Durability, LogIndex};
use crate::{LogBatch, LogError, LogStore, SyncPolicy};

const CF_ENTRIES: &str = "entries";
const CF_META: &str = "meta";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_BASE: &[u8] = b"base";

/// A [`LogStore`] on RocksDB.
pub struct RocksLogStore {
    db: DB,
    sync_policy: SyncPolicy,
    state: RwLock<RocksState>,
    sync: Mutex<SyncPoint>,
    synced: Condvar,
}

struct RocksState {
    // Terms of the entries held, for `term()` without a RocksDB read.
    index: LogIndex<()>,
    hard_state: HardState,
    snapshot: Option<SnapshotMetadata>,
    durability: Durability,
    // Sequence number of the last batch written to RocksDB.
    written_seq: u64,
    // Lowest index changed since the running sync captured its target (u64::MAX: none).
    changed_since_capture: u64,
    poisoned: bool,
}

#[derive(Default)]
struct SyncPoint {
    synced_seq: u64,
    syncing: bool,
    failed: bool,
    // `flush_wal(true)` calls made by writers since open (for benchmarks).
    syncs: u64,
    // When the last of them finished (`EveryMs` counts from it; from the open before).
    last_sync: Option<Instant>,
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn backend(e: rocksdb::Error) -> LogError {
    LogError::Backend(e.into_string())
}

/// Whether directory `path` holds what is left of a RocksDB database (its manifest,
/// data or WAL files), subdirectories aside. RocksDB, told to create a missing
/// database, refuses a directory without `CURRENT` only while a WAL file is left in it;
/// otherwise it starts a new database and deletes the old manifest and every data
/// file. A caller that finds files here but no `CURRENT` must refuse to open instead.
pub fn has_rocksdb_files(path: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "CURRENT"
            || name == "IDENTITY"
            || name.starts_with("MANIFEST-")
            || name.ends_with(".sst")
            || name.ends_with(".log")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl RocksLogStore {
    /// Opens (or creates) the log in directory `path`, recovering its index, with
    /// durable writes synced ([`SyncPolicy::Always`]). A directory with RocksDB files
    /// but no `CURRENT` file is refused as corrupt rather than silently replaced by an
    /// empty log.
    pub fn open(path: impl AsRef<Path>) -> Result<RocksLogStore, LogError> {
        RocksLogStore::open_with_sync_policy(path, SyncPolicy::Always)
    }

    /// [`open`](Self::open), with durable writes synced as `sync_policy` says.
    pub fn open_with_sync_policy(
        path: impl AsRef<Path>,
        sync_policy: SyncPolicy,
    ) -> Result<RocksLogStore, LogError> {
        let path = path.as_ref();
        if !path.join("CURRENT").exists() && has_rocksdb_files(path)? {
            return Err(LogError::Corrupt(format!(
                "{} holds RocksDB files but no CURRENT file",
                path.display()
            )));
        }
        // RocksDB syncs the files it creates in its directory, not the directory's own
        // entry in its parent: create it durably first.
        keel_fs::FileSystem::create_dir_all_durably(&keel_fs::StdFs, path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // fdatasync, not fsync: the WAL file's size is all the metadata that matters.
        opts.set_use_fsync(false);
        let cfs = [CF_ENTRIES, CF_META]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(backend)?;
        // What RocksDB replayed may sit only in the page cache of a crashed process's
        // machine; make it durable before `recover` reports it as such.
        db.flush_wal(true).map_err(backend)?;
        let state = recover(&db)?;
        Ok(RocksLogStore {
            db,
            sync_policy,
            state: RwLock::new(state),
            sync: Mutex::new(SyncPoint {
                last_sync: Some(Instant::now()),
                ..SyncPoint::default()
            }),
            synced: Condvar::new(),
        })
    }

    /// WAL syncs (`flush_wal(true)`, an fdatasync) made for writers since open; with
    /// group commit, fewer than the synced writes.
    pub fn syncs(&self) -> u64 {
        self.sync.lock().syncs
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, LogError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| LogError::Backend(format!("column family {name} is missing")))
    }

    /// Writes `wb` unsynced while the caller holds the state lock, poisoning the log on
    /// failure: RocksDB may have applied part of it to its WAL.
    fn write_locked(&self, st: &mut RocksState, wb: WriteBatch) -> Result<u64, LogError> {
        if st.poisoned {
            return Err(LogError::Poisoned);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        if let Err(e) = self.db.write_opt(wb, &wo) {
            st.poisoned = true;
            return Err(backend(e));
        }
        st.written_seq += 1;
        Ok(st.written_seq)
    }

    /// Whether a durable write arriving now is synced, per the store's policy.
    fn syncs_now(&self) -> bool {
        let last_sync = self.sync.lock().last_sync;
        self.sync_policy.syncs_now(last_sync)
    }

    /// Waits until batch `seq` is synced, syncing once for everyone who is waiting.
    fn sync_to(&self, seq: u64) -> Result<(), LogError> {
        let mut sp = self.sync.lock();
        // Bounded: each pass either returns, waits for a running sync, or runs one that
        // covers `seq`.
        loop {
            if sp.failed {
                return Err(LogError::Poisoned);
            }
            if sp.synced_seq >= seq {
                return Ok(());
            }
            if sp.syncing {
                self.synced.wait(&mut sp);
                continue;
            }
            sp.syncing = true;
            drop(sp);
            let (target_seq, target_last) = {
                let mut st = self.state.write();
                st.changed_since_capture = u64::MAX;
                (st.written_seq, st.index.last_index())
            };
            let result = self.db.flush_wal(true);
            {
                let mut st = self.state.write();
                match &result {
                    Ok(()) => {
                        let durable = target_last.min(st.changed_since_capture.saturating_sub(1));
                        let durable = durable.max(st.durability.get().min(durable));
                        st.durability.synced(durable);
                    }
                    // A failed sync is fatal: the data may or may not be on disk, and a
                    // retry could report success for data the kernel already dropped.
                    Err(_) => st.poisoned = true,
                }
            }
            sp = self.sync.lock();
            sp.syncing = false;
            sp.syncs += 1;
            sp.last_sync = Some(Instant::now());
            match result {
                Ok(()) => sp.synced_seq = sp.synced_seq.max(target_seq),
                Err(_) => sp.failed = true,
            }
            self.synced.notify_all();
            if let Err(e) = result {
                return Err(backend(e));
            }
        }
    }
}

fn invalidate(st: &mut RocksState, from: u64) {
    st.durability.invalidate_from(from);
    st.changed_since_capture = st.changed_since_capture.min(from);
}

/// Rebuilds the in-memory index from the column families, checking that the stored
/// entries are contiguous and decode to their own index.
fn recover(db: &DB) -> Result<RocksState, LogError> {
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| LogError::Backend("column family meta is missing".into()))?;
    let entries = db
        .cf_handle(CF_ENTRIES)
        .ok_or_else(|| LogError::Backend("column family entries is missing".into()))?;
    let get = |k: &[u8]| db.get_cf(meta, k).map_err(backend);
    let hard_state = match get(KEY_HARD_STATE)? {
        Some(v) => codec::decode::<HardState>(&v)
            .map_err(|e| LogError::Corrupt(format!("rocksdb hard state: {e}")))?,
        None => HardState::default(),
    };
    let snapshot = match get(KEY_SNAPSHOT)? {
        Some(v) => Some(
            codec::decode::<SnapshotMetadata>(&v)
                .map_err(|e| LogError::Corrupt(format!("rocksdb snapshot marker: {e}")))?,
        ),
        None => None,
    };
    let (base_index, base_term) = match get(KEY_BASE)? {
        Some(v) if v.len() == 16 => {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&v[..8]);
            b.copy_from_slice(&v[8..]);
            (u64::from_be_bytes(a), u64::from_be_bytes(b))
        }
        Some(v) => {
            return Err(LogError::Corrupt(format!(
                "rocksdb compaction base has {} bytes, expected 16",
                v.len()
            )))
        }
        None => (0, 0),
    };
    let mut index = LogIndex::default();
    index.reset_after(base_index, Some(base_term));
    let mut terms = Vec::new();
    let from = key(base_index + 1);
    let iter = db.iterator_cf(
        entries,
        IteratorMode::From(&from, rocksdb::Direction::Forward),
    );
    for (expect, item) in (base_index + 1..).zip(iter) {
        let (k, v) = item.map_err(backend)?;
        let k: [u8; 8] = k
            .as_ref()
            .try_into()
            .map_err(|_| LogError::Corrupt(format!("rocksdb entry key of {} bytes", k.len())))?;
        let at = u64::from_be_bytes(k);
        if at != expect {
            return Err(LogError::Corrupt(format!(
                "rocksdb log has a gap: expected index {expect}, found {at}"
            )));
        }
        let e = codec::decode::<Entry>(&v)
            .map_err(|err| LogError::Corrupt(format!("rocksdb entry {at}: {err}")))?;
        if e.index != at {
            return Err(LogError::Corrupt(format!(
                "rocksdb entry under key {at} says index {}",
                e.index
            )));
        }
        terms.push((e.term, ()));
    }
    index.append(base_index + 1, terms);
    let mut durability = Durability::default();
    // Whatever survived the restart is on disk.
    durability.synced(index.last_index());
    Ok(RocksState {
        index,
        hard_state,
        snapshot,
        durability,
        written_seq: 0,
        changed_since_capture: u64::MAX,
        poisoned: false,
    })
}

impl LogStore for RocksLogStore {
    fn write(&self, batch: &LogBatch, durable: bool) -> Result<u64, LogError> {
        if batch.is_empty() {
            // Nothing to write (an empty RocksDB batch would still count as one to
            // sync): a durable empty batch makes what was written before durable.
            let seq = {
                let st = self.state.read();
                if st.poisoned {
                    return Err(LogError::Poisoned);
                }
                st.written_seq
            };
            if durable && self.syncs_now() {
                self.sync_to(seq)?;
            }
            return Ok(self.durable_index());
        }
        let entries_cf = self.cf(CF_ENTRIES)?;
        let meta_cf = self.cf(CF_META)?;
        let seq = {
            let mut st = self.state.write();
            if st.poisoned {
                return Err(LogError::Poisoned);
            }
            // Validate before touching anything so a rejected batch is a no-op.
            let plan = st
                .index
                .plan_batch(batch.snapshot.as_ref(), &batch.entries)?;
            let mut wb = WriteBatch::default();
            if let Some(meta) = &batch.snapshot {
                if meta.index > st.index.base_index() {
                    let matches = st.index.term(meta.index).ok() == Some(meta.term);
                    let end = if matches {
                        meta.index + 1
                    } else {
                        st.index.last_index().max(meta.index) + 1
                    };
                    wb.delete_range_cf(entries_cf, key(st.index.first_index()), key(end));
                    let mut base = Vec::with_capacity(16);
                    base.extend_from_slice(&meta.index.to_be_bytes());
                    base.extend_from_slice(&meta.term.to_be_bytes());
                    wb.put_cf(meta_cf, KEY_BASE, base);
                }
                if st.snapshot.as_ref().is_none_or(|s| s.index <= meta.index) {
                    wb.put_cf(meta_cf, KEY_SNAPSHOT, codec::encode(meta));
                }
            }
            if let Some(plan) = plan {
                let last = st.index.last_index();
                if plan.from_index <= last {
                    wb.delete_range_cf(entries_cf, key(plan.from_index), key(last + 1));
                }
                for (expect, e) in (plan.from_index..).zip(&batch.entries[plan.skip..]) {
                    // Paired with the check in `recover` and `entries`: the key is the
                    // entry's own index.
                    assert_eq!(e.index, expect, "planned entries are contiguous");
                    wb.put_cf(entries_cf, key(e.index), codec::encode(e));
                }
            }
            if let Some(hs) = &batch.hard_state {
                wb.put_cf(meta_cf, KEY_HARD_STATE, codec::encode(hs));
            }
            let seq = self.write_locked(&mut st, wb)?;
            // RocksDB has the batch; mirror it in memory exactly as MemLogStore does.
            if let Some(meta) = &batch.snapshot {
                if st.index.apply_snapshot(meta) {
                    invalidate(&mut st, meta.index + 1);
                }
                if st.snapshot.as_ref().is_none_or(|s| s.index <= meta.index) {
                    st.snapshot = Some(meta.clone());
                }
            }
            if let Some(plan) = plan {
                invalidate(&mut st, plan.from_index);
                let items = batch.entries[plan.skip..].iter().map(|e| (e.term, ()));
                st.index.append(plan.from_index, items);
            }
            if let Some(hs) = batch.hard_state {
                st.hard_state = hs;
            }
            seq
        };
        if durable && self.syncs_now() {
            self.sync_to(seq)?;
        }
        Ok(self.durable_index())
    }

    fn sync(&self) -> Result<(), LogError> {
        // Nothing written since open needs no sync: `open` synced what it recovered.
        // (`seq.max(1)` here used to wait forever for a batch that was never written.)
        let seq = self.state.read().written_seq;
        self.sync_to(seq)
    }

    fn syncs(&self) -> u64 {
        self.sync.lock().syncs
    }

    fn durable_index(&self) -> u64 {
        self.state.read().durability.get()
    }

    fn truncate_suffix(&self, index: u64) -> Result<(), LogError> {
        let entries_cf = self.cf(CF_ENTRIES)?;
        let mut st = self.state.write();
        if !st.index.check_truncate(index)? {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(entries_cf, key(index), key(st.index.last_index() + 1));
        self.write_locked(&mut st, wb)?;
        st.index.truncate_from(index);
        invalidate(&mut st, index);
        Ok(())
    }

    fn compact(&self, index: u64) -> Result<(), LogError> {
        let entries_cf = self.cf(CF_ENTRIES)?;
        let meta_cf = self.cf(CF_META)?;
        let mut st = self.state.write();
        let Some(term) = st.index.check_compact(index)? else {
            return Ok(());
        };
        let mut wb = WriteBatch::default();
        wb.delete_range_cf(entries_cf, key(st.index.first_index()), key(index + 1));
        let mut base = Vec::with_capacity(16);
        base.extend_from_slice(&index.to_be_bytes());
        base.extend_from_slice(&term.to_be_bytes());
        wb.put_cf(meta_cf, KEY_BASE, base);
        self.write_locked(&mut st, wb)?;
        st.index.compact_to(index, Some(term));
        Ok(())
    }

    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>, LogError> {
        let entries_cf = self.cf(CF_ENTRIES)?;
        // Held for the read so a concurrent truncation cannot interleave.
        let st = self.state.read();
        st.index.check_range(lo, hi)?;
        let mut out = Vec::new();
        if lo == hi {
            return Ok(out);
        }
        let from = key(lo);
        let iter = self.db.iterator_cf(
            entries_cf,
            IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        let mut size = 0u64;
        let mut expect = lo;
        for item in iter {
            if expect >= hi {
                break;
            }
            let (k, v) = item.map_err(backend)?;
            let e = codec::decode::<Entry>(&v)
                .map_err(|err| LogError::Corrupt(format!("rocksdb entry {expect}: {err}")))?;
            // Paired with the check before the write: the key and the entry agree.
            if k.as_ref() != key(expect) || e.index != expect {
                return Err(LogError::Corrupt(format!(
                    "rocksdb entry {expect} missing or misplaced (found index {})",
                    e.index
                )));
            }
            size = size.saturating_add(e.size_bytes());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
            expect += 1;
        }
        if out.is_empty() || (expect < hi && size <= max_size) {
            return Err(LogError::Corrupt(format!(
                "rocksdb log ends at {} but the index says {}",
                expect.saturating_sub(1),
                st.index.last_index()
            )));
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, LogError> {
        self.state.read().index.term(index)
    }

    fn first_index(&self) -> u64 {
        self.state.read().index.first_index()
    }

    fn last_index(&self) -> u64 {
        self.state.read().index.last_index()
    }

    fn hard_state(&self) -> HardState {
        self.state.read().hard_state
    }

    fn snapshot_marker(&self) -> Option<SnapshotMetadata> {
        self.state.read().snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
        (lo..hi)
            .map(|i| Entry::new(term, i, vec![i as u8; 10]))
            .collect()
    }

    fn write(log: &RocksLogStore, entries: Vec<Entry>) {
        let b = LogBatch {
            entries,
            ..LogBatch::default()
        };
        log.write(&b, true).unwrap();
    }

    #[test]
    fn append_replace_compact_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = RocksLogStore::open(dir.path()).unwrap();
            write(&log, ents(1, 11, 1));
            assert_eq!((log.first_index(), log.last_index()), (1, 10));
            assert_eq!(log.durable_index(), 10);
            // Replace the suffix from 6 with term-2 entries.
            write(&log, ents(6, 9, 2));
            assert_eq!(log.last_index(), 8);
            assert_eq!(log.term(6).unwrap(), 2);
            assert_eq!(log.term(5).unwrap(), 1);
            log.compact(4).unwrap();
            assert_eq!(log.first_index(), 5);
            assert_eq!(log.term(4).unwrap(), 1);
            assert!(matches!(
                log.entries(3, 6, u64::MAX),
                Err(LogError::Compacted(3))
            ));
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 7,
            };
            log.write(
                &LogBatch {
                    hard_state: Some(hs),
                    ..LogBatch::default()
                },
                true,
            )
            .unwrap();
        }
        let log = RocksLogStore::open(dir.path()).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (5, 8));
        assert_eq!(log.hard_state().commit, 7);
        let got = log.entries(5, 9, u64::MAX).unwrap();
        assert_eq!(got.iter().map(|e| e.term).collect::<Vec<_>>(), [1, 2, 2, 2]);
        // The size bound still returns at least one entry.
        assert_eq!(log.entries(5, 9, 1).unwrap().len(), 1);
    }

    #[test]
    fn installed_snapshot_restarts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = RocksLogStore::open(dir.path()).unwrap();
        write(&log, ents(1, 6, 1));
        let meta = SnapshotMetadata {
            index: 20,
            term: 3,
            ..SnapshotMetadata::default()
        };
        log.write(
            &LogBatch {
                snapshot: Some(meta.clone()),
                entries: ents(21, 23, 3),
                ..LogBatch::default()
            },
            true,
        )
        .unwrap();
        assert_eq!((log.first_index(), log.last_index()), (21, 22));
        assert_eq!(log.term(20).unwrap(), 3);
        assert_eq!(log.snapshot_marker(), Some(meta));
        drop(log);
        let log = RocksLogStore::open(dir.path()).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (21, 22));
    }

    #[test]
    fn concurrent_writers_share_syncs() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(RocksLogStore::open(dir.path()).unwrap());
        let next = Arc::new(Mutex::new(1u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (log, next) = (Arc::clone(&log), Arc::clone(&next));
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        // Indexes are assigned and written in one order, as the engine's
                        // single persist stage would.
                        let seq = {
                            let mut n = next.lock();
                            let e = Entry::new(1, *n, vec![0; 64]);
                            *n += 1;
                            let b = LogBatch {
                                entries: vec![e],
                                ..LogBatch::default()
                            };
                            log.write(&b, false).unwrap();
                            log.state.read().written_seq
                        };
                        log.sync_to(seq).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.last_index(), 400);
        assert_eq!(log.durable_index(), 400);
    }
}
