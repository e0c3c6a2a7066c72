//! [`Wal`]: the segmented write-ahead log, implementing [`LogStore`].
//!
//! Writes go through the [`WriteBarrier`]: each caller encodes its own batch (in
//! parallel), then the group leader frames every queued batch into one buffer, writes
//! it with one `write_at` and issues at most one `fdatasync` for the group: only if the
//! group holds a durable write the [`SyncPolicy`] syncs, an explicit `sync()` or a
//! compaction, and only if the active segment holds unsynced bytes. The in-memory
//! index (index → segment, offset, length, CRC) is updated under the state lock
//! together with the write, so readers never see an index entry whose bytes are not
//! written; the sync happens after the lock is released, so reads never wait for a
//! sync.
//!
//! Lock order: barrier (leadership) → `writer` → `state`. Readers take only `state`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use keel_fs::FileSystem;
use keel_raft::{codec, Entry, HardState, SnapshotMetadata};
use parking_lot::{Mutex, RwLock};

use crate::log_index::{Durability, LogIndex};
use crate::options::{SyncPolicy, WalOptions};
use crate::prealloc::{create_allocated, Preallocator, Prepared};
use crate::record::{
    encode_entries_payload, encode_small_payload, frame_bytes, push_frame, EntrySpan, FrameAt,
    RecordType, SegmentHeader, WalRecord, FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES,
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
use crate::recovery::{recover, RecoveryReport};
use crate::segment::{EntryLoc, Segment, SegmentName};
use crate::write_barrier::WriteBarrier;
use crate::{LogBatch, LogError, LogStore};

/// Counters describing what the log has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Write groups performed (each is one `write_at` per segment touched).
    pub groups: u64,
    /// Batches (`write` calls) written.
    pub batches: u64,
    /// `fdatasync` calls on segments (including those at rotation).
    pub syncs: u64,
    /// Segments started.
    pub rotations: u64,
    /// Segments deleted by compaction.
    pub segments_purged: u64,
}

/// A batch encoded by its writer before it joins a group: everything the leader needs
/// except the frame headers, which depend on where the batch lands.
#[derive(Debug)]
struct PreparedBatch {
    snapshot: Option<SnapshotMetadata>,
    hard_state: Option<HardState>,
    /// The entries, kept for validation (indexes, terms).
    entries: Vec<Entry>,
    entries_payload: Vec<u8>,
    spans: Vec<EntrySpan>,
}

impl PreparedBatch {
    fn new(batch: &LogBatch) -> PreparedBatch {
        let mut entries_payload = Vec::new();
        let spans = if batch.entries.is_empty() {
            Vec::new()
        } else {
            encode_entries_payload(&batch.entries, &mut entries_payload)
        };
        PreparedBatch {
            snapshot: batch.snapshot.clone(),
            hard_state: batch.hard_state,
            // Only indexes and terms are needed; dropping the payloads halves the copy.
            entries: batch
                .entries
                .iter()
                .map(|e| Entry {
                    term: e.term,
                    index: e.index,
                    entry_type: e.entry_type,
                    data: Vec::new(),
                })
                .collect(),
            entries_payload,
            spans,
        }
    }

    /// An upper bound on the bytes this batch occupies once framed.
    fn framed_bytes_bound(&self) -> u64 {
        let small = 256; // hard state, snapshot marker header, commit record
        let snap = self
            .snapshot
            .as_ref()
            .map_or(0, |m| 64 + 10 * conf_len(m) as u64);
        let ents = if self.entries.is_empty() {
            0
        } else {
            frame_bytes(self.entries_payload.len() as u64)
        };
        small + snap + ents
    }
}

fn conf_len(m: &SnapshotMetadata) -> usize {
    let c = &m.conf_state;
    c.voters.len() + c.learners.len() + c.voters_outgoing.len() + c.learners_next.len()
}

#[derive(Debug)]
enum Op {
    Batch {
        batch: Box<PreparedBatch>,
        durable: bool,
    },
    /// A durable write of an empty batch: what was written before becomes durable as
    /// the sync policy says.
    Durable,
    Truncate(u64),
    Compact(u64),
    /// An explicit `sync()`: synced whatever the policy.
    Sync,
}

type OpResult = Result<u64, LogError>;

/// The writer's state: only the group leader touches it.
#[derive(Debug)]
struct Writer {
    active: Option<Arc<Segment>>,
    /// Where the next frame goes in the active segment.
    offset: u64,
    /// Where the active segment's first batch after its preamble starts; a segment is
    /// never rotated before holding at least one batch.
    data_start: u64,
    /// How far the active segment is known synced (every earlier segment is synced
    /// whole); at most `offset`.
    synced_offset: u64,
    next_seq: u64,
    buf: Vec<u8>,
    last_sync: Instant,
    prealloc: Option<Preallocator>,
    sync_created: u64,
}

impl Writer {
    fn commit(&self, records: u32) -> WalRecord {
        WalRecord::Commit {
            records,
            synced_through: self.synced_offset,
        }
    }
}

/// What readers see.
#[derive(Debug)]
struct WalState {
    log: LogIndex<EntryLoc>,
    segments: std::collections::BTreeMap<u64, Arc<Segment>>,
    hard_state: HardState,
    snapshot: Option<SnapshotMetadata>,
    durability: Durability,
}

#[derive(Debug)]
struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    opts: WalOptions,
    barrier: WriteBarrier<Op, OpResult>,
    writer: Mutex<Writer>,
    state: RwLock<WalState>,
    poisoned: AtomicBool,
    groups: AtomicU64,
    batches: AtomicU64,
    syncs: AtomicU64,
    rotations: AtomicU64,
    purged: AtomicU64,
}

/// The segmented, CRC-checked write-ahead log. See the [crate docs](crate) for the
/// format and guarantees; open it with [`Wal::open`] and use it through [`LogStore`].
///
/// # Example
///
/// ```
/// use keel_fs::StdFs;
/// use keel_raft::{Entry, HardState};
/// use keel_wal::{LogBatch, LogStore, Wal, WalOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let wal = Wal::open(StdFs::shared(), dir.path().join("wal"), WalOptions::default())?;
/// let batch = LogBatch {
///     entries: (1..=3).map(|i| Entry::new(1, i, format!("put k{i}").into_bytes())).collect(),
///     hard_state: Some(HardState { term: 1, vote: 1, commit: 3 }),
///     snapshot: None,
/// };
/// // Durable: synced before it returns (the default `SyncPolicy::Always`).
/// assert_eq!(wal.write(&batch, true)?, 3);
/// wal.close()?;
///
/// // Reopening replays the segments.
/// let wal = Wal::open(StdFs::shared(), dir.path().join("wal"), WalOptions::default())?;
/// assert_eq!(wal.last_index(), 3);
/// assert_eq!(wal.entries(2, 3, u64::MAX)?[0].data, b"put k2");
/// assert_eq!(wal.hard_state().commit, 3);
/// # Ok(())
/// # }
/// ```
pub struct Wal {
    inner: Inner,
    report: RecoveryReport,
}

/// Each writer of a failed group gets its own copy of the error; the OS error code is
/// kept so callers can tell ENOSPC from EIO.
fn io_clone(e: &std::io::Error) -> LogError {
    LogError::Io(match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    })
}

fn clone_err(e: &LogError) -> LogError {
    match e {
        LogError::Io(io) => io_clone(io),
        LogError::Corrupt(s) => LogError::Corrupt(s.clone()),
        LogError::Compacted(i) => LogError::Compacted(*i),
        LogError::Unavailable(i) => LogError::Unavailable(*i),
        LogError::InvalidWrite(s) => LogError::InvalidWrite(s.clone()),
        LogError::Poisoned => LogError::Poisoned,
        LogError::Backend(s) => LogError::Backend(s.clone()),
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the index can hold millions of entries.
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("poisoned", &self.is_poisoned())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Wal {
    /// Opens (recovering) or creates the log in `dir`.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<Wal, LogError> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_size_bytes < 4096 {
            return Err(LogError::InvalidWrite(format!(
                "segment_size_bytes {} is below the 4096-byte minimum",
                opts.segment_size_bytes
            )));
        }
        // The log directory's own entry (and any parent it needed) must survive a
        // crash too, or the segments synced into it are lost with it.
        fs.create_dir_all_durably(&dir)?;
        let rec = recover(fs.as_ref(), &dir, opts.recovery_mode)?;
        let mut segments = std::collections::BTreeMap::new();
        for (name, file) in rec.segments {
            segments.insert(name.seq, Arc::new(Segment::open(name, file)?));
        }
        let active = segments.values().next_back().cloned();
        let next_seq = active.as_ref().map_or(1, |s| s.name.seq + 1);
        if let Some(seg) = &active {
            // What was recovered may sit only in the page cache of a crashed process's
            // machine; make it durable before reporting it as such.
            seg.file.sync_data()?;
        }
        let mut durability = Durability::default();
        durability.synced(rec.log.last_index());
        let prealloc = if opts.preallocate {
            Some(Preallocator::spawn(
                fs.clone(),
                dir.clone(),
                opts.segment_size_bytes,
            )?)
        } else {
            None
        };
        let wal = Wal {
            inner: Inner {
                fs,
                dir,
                barrier: WriteBarrier::default(),
                writer: Mutex::new(Writer {
                    active,
                    offset: rec.append_offset,
                    // Everything recovered is synced below; a reopened segment counts as
                    // holding data, so a large first batch rotates rather than overflows.
                    data_start: SEGMENT_HEADER_BYTES,
                    synced_offset: rec.append_offset,
                    next_seq,
                    buf: Vec::new(),
                    last_sync: Instant::now(),
                    prealloc,
                    sync_created: 0,
                }),
                state: RwLock::new(WalState {
                    log: rec.log,
                    segments,
                    hard_state: rec.hard_state,
                    snapshot: rec.snapshot,
                    durability,
                }),
                opts,
                poisoned: AtomicBool::new(false),
                groups: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                syncs: AtomicU64::new(0),
                rotations: AtomicU64::new(0),
                purged: AtomicU64::new(0),
            },
            report: rec.report,
        };
        {
            let mut w = wal.inner.writer.lock();
            if w.active.is_none() {
                let mut st = wal.inner.state.write();
                wal.inner.rotate(&mut w, &mut st)?;
            }
        }
        Ok(wal)
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        let i = &self.inner;
        WalStats {
            groups: i.groups.load(Ordering::Relaxed),
            batches: i.batches.load(Ordering::Relaxed),
            syncs: i.syncs.load(Ordering::Relaxed),
            rotations: i.rotations.load(Ordering::Relaxed),
            segments_purged: i.purged.load(Ordering::Relaxed),
        }
    }

    /// The names of the live segment files, oldest first.
    pub fn segment_names(&self) -> Vec<SegmentName> {
        self.inner
            .state
            .read()
            .segments
            .values()
            .map(|s| s.name)
            .collect()
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether an earlier failed write or sync has closed the log to writes.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Syncs (if anything written is unsynced) and closes the log.
    pub fn close(self) -> Result<(), LogError> {
        self.sync()
    }

    /// [`LogStore::write`] for concurrent appenders that assign indexes themselves:
    /// `queued` is called once the batch has its place in the write queue, before the
    /// call waits for the batch to be written (and, if durable, synced). Batches are
    /// staged in queue order, so a caller that picks its batch's indexes under a lock
    /// and releases that lock in `queued` (e.g. `move || drop(guard)`) has its batches
    /// applied in index order while still sharing writes and syncs with the other
    /// appenders. `queued` is called exactly once, also when the write is refused.
    pub fn write_queued(
        &self,
        batch: &LogBatch,
        durable: bool,
        queued: impl FnOnce(),
    ) -> Result<u64, LogError> {
        if self.is_poisoned() {
            queued();
            return Err(LogError::Poisoned);
        }
        if batch.is_empty() {
            queued();
            return self.write(batch, durable);
        }
        let op = Op::Batch {
            batch: Box::new(PreparedBatch::new(batch)),
            durable,
        };
        self.inner
            .barrier
            .submit_queued(op, queued, |ops| self.inner.perform_group(ops))
    }

    fn submit(&self, op: Op) -> OpResult {
        self.inner
            .barrier
            .submit(op, |ops| self.inner.perform_group(ops))
    }
}

impl Inner {
    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    fn count_sync(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Performs one group: stage (validate, frame, index) every op, write once, sync
    /// once if an op needs it (a durable write the policy syncs, an explicit sync, a
    /// compaction), then purge segments if a compaction asked for it.
    fn perform_group(&self, ops: Vec<Op>) -> Vec<OpResult> {
        let n = ops.len();
        if self.poisoned.load(Ordering::Acquire) {
            return (0..n).map(|_| Err(LogError::Poisoned)).collect();
        }
        self.groups.fetch_add(1, Ordering::Relaxed);
        let mut w = self.writer.lock();
        let mut results: Vec<Option<LogError>> = (0..n).map(|_| None).collect();
        let mut force_sync = false;
        let mut wants_sync = false;
        let mut purge = false;
        let staged = {
            let mut st = self.state.write();
            w.buf.clear();
            let mut failure = None;
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Op::Batch { durable, .. } => wants_sync |= *durable,
                    Op::Durable => wants_sync = true,
                    Op::Sync => force_sync = true,
                    Op::Compact(_) | Op::Truncate(_) => {}
                }
                match self.stage(&mut w, &mut st, op) {
                    Ok(compacted) => {
                        if compacted {
                            force_sync = true;
                            purge = true;
                        }
                    }
                    Err(LogError::Io(e)) => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => results[i] = Some(e),
                }
            }
            match failure {
                Some(e) => Err(e),
                None => self.flush(&mut w),
            }
        };
        if let Err(e) = staged {
            // The log's in-memory state may now describe bytes that never reached the
            // file; nothing more may be written or reported durable.
            self.poison();
            return (0..n).map(|_| Err(io_clone(&e))).collect();
        }
        self.batches.fetch_add(
            ops.iter().filter(|o| matches!(o, Op::Batch { .. })).count() as u64,
            Ordering::Relaxed,
        );

        let policy_sync = wants_sync && self.opts.sync_policy.syncs_now(Some(w.last_sync));
        if force_sync || policy_sync {
            if let Err(e) = self.sync_active(&mut w) {
                return (0..n).map(|_| Err(io_clone(&e))).collect();
            }
            let mut st = self.state.write();
            let last = st.log.last_index();
            st.durability.synced(last);
        }
        if purge {
            if let Err(e) = self.purge(&w) {
                self.poison();
                return (0..n).map(|_| Err(clone_err(&e))).collect();
            }
        }
        drop(w);
        let durable = self.state.read().durability.get();
        results
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => Ok(durable),
            })
            .collect()
    }

    /// fdatasync of the active segment, unless everything written to it is synced
    /// already (a second sync of the same bytes is only a cost); a failure poisons the
    /// log (never retried: after a failed fsync the kernel may have dropped the dirty
    /// pages, so a retry that succeeds would claim durability for data that is gone).
    fn sync_active(&self, w: &mut Writer) -> std::io::Result<()> {
        debug_assert!(
            w.synced_offset <= w.offset,
            "synced past the write position"
        );
        if w.synced_offset == w.offset {
            return Ok(());
        }
        if let Some(seg) = &w.active {
            if let Err(e) = seg.file.sync_data() {
                self.poison();
                return Err(e);
            }
            self.count_sync();
        }
        w.synced_offset = w.offset;
        w.last_sync = Instant::now();
        Ok(())
    }

    /// Validates `op` against the log, frames its records into the group buffer
    /// (rotating first if they would not fit) and applies it to the in-memory log.
    /// Returns whether it was a compaction that changed something.
    fn stage(&self, w: &mut Writer, st: &mut WalState, op: &Op) -> Result<bool, LogError> {
        match op {
            Op::Sync | Op::Durable => Ok(false),
            Op::Truncate(index) => {
                if !st.log.check_truncate(*index)? {
                    return Ok(false);
                }
                self.make_room(w, st, 64)?;
                let (seq, base) = self.position(w)?;
                push_small(
                    &mut w.buf,
                    seq,
                    base,
                    &WalRecord::Truncate { from_index: *index },
                );
                let commit = w.commit(1);
                push_small(&mut w.buf, seq, base, &commit);
                st.log.truncate_from(*index);
                st.durability.invalidate_from(*index);
                Ok(false)
            }
            Op::Compact(index) => {
                let Some(term) = st.log.check_compact(*index)? else {
                    return Ok(false);
                };
                self.make_room(w, st, 64)?;
                let (seq, base) = self.position(w)?;
                let rec = WalRecord::Compact {
                    index: *index,
                    term,
                };
                push_small(&mut w.buf, seq, base, &rec);
                let commit = w.commit(1);
                push_small(&mut w.buf, seq, base, &commit);
                st.log.compact_to(*index, Some(term));
                Ok(true)
            }
            Op::Batch { batch, .. } => {
                if batch.entries_payload.len() as u64 > MAX_PAYLOAD_BYTES {
                    // Recovery treats longer records as damage, so never write one.
                    return Err(LogError::InvalidWrite(format!(
                        "batch encodes to {} bytes, over the {MAX_PAYLOAD_BYTES}-byte record limit",
                        batch.entries_payload.len()
                    )));
                }
                let plan = st.log.plan_batch(batch.snapshot.as_ref(), &batch.entries)?;
                self.make_room(w, st, batch.framed_bytes_bound())?;
                let (seq, base) = self.position(w)?;
                let mut records = 0;
                if let Some(meta) = &batch.snapshot {
                    let (base_index, last) = (st.log.base_index(), st.log.last_index());
                    let discards =
                        meta.index > base_index && st.log.term(meta.index).ok() != Some(meta.term);
                    if discards && last > base_index {
                        // Say explicitly that the log is discarded: replay after older
                        // segments are purged may not know the term at `meta.index`.
                        let rec = WalRecord::Truncate {
                            from_index: base_index + 1,
                        };
                        push_small(&mut w.buf, seq, base, &rec);
                        records += 1;
                    }
                    push_small(
                        &mut w.buf,
                        seq,
                        base,
                        &WalRecord::SnapshotMarker(meta.clone()),
                    );
                    records += 1;
                }
                let mut entries_frame = None;
                if !batch.entries.is_empty() {
                    let at = push_frame(&mut w.buf, seq, base, RecordType::Entries, |out| {
                        out.extend_from_slice(&batch.entries_payload)
                    });
                    entries_frame = Some(at);
                    records += 1;
                }
                if let Some(hs) = &batch.hard_state {
                    push_small(&mut w.buf, seq, base, &WalRecord::HardState(*hs));
                    records += 1;
                }
                let commit = w.commit(records);
                push_small(&mut w.buf, seq, base, &commit);

                if let Some(meta) = &batch.snapshot {
                    if st.log.apply_snapshot(meta) {
                        st.durability.invalidate_from(meta.index + 1);
                    }
                    if !matches!(&st.snapshot, Some(s) if s.index > meta.index) {
                        st.snapshot = Some(meta.clone());
                    }
                }
                if let (Some(plan), Some(frame_at)) = (plan, entries_frame) {
                    st.durability.invalidate_from(plan.from_index);
                    let locs = batch.spans[plan.skip..]
                        .iter()
                        .zip(&batch.entries[plan.skip..])
                        .map(|(span, e)| {
                            (
                                e.term,
                                EntryLoc {
                                    seq,
                                    offset: frame_at
                                        + FRAME_HEADER_BYTES
                                        + u64::from(span.payload_offset),
                                    len: span.len,
                                    crc: span.crc,
                                },
                            )
                        });
                    st.log.append(plan.from_index, locs);
                }
                if let Some(hs) = batch.hard_state {
                    st.hard_state = hs;
                }
                Ok(false)
            }
        }
    }

    /// The active segment's seq and the file offset the group buffer starts at.
    fn position(&self, w: &Writer) -> Result<(u64, u64), LogError> {
        let seg = w
            .active
            .as_ref()
            .ok_or_else(|| LogError::Backend("no active segment".into()))?;
        Ok((seg.name.seq, w.offset))
    }

    /// Rotates if `bytes` more would overflow the segment and the segment already
    /// holds a batch (an oversized batch gets a segment of its own).
    fn make_room(&self, w: &mut Writer, st: &mut WalState, bytes: u64) -> Result<(), LogError> {
        let end = w.offset + w.buf.len() as u64;
        let holds_data = end > w.data_start;
        if w.active.is_some() && (!holds_data || end + bytes <= self.opts.segment_size_bytes) {
            return Ok(());
        }
        self.flush(w)?;
        self.rotate(w, st)
    }

    /// Writes the group buffer at the write position, after checking every frame in
    /// it parses back (the write-side half of the pair assertion).
    fn flush(&self, w: &mut Writer) -> std::io::Result<()> {
        if w.buf.is_empty() {
            return Ok(());
        }
        let Some(seg) = w.active.clone() else {
            return Err(std::io::Error::other("no active segment"));
        };
        validate_frames(&w.buf, seg.name.seq, w.offset)?;
        seg.file.write_at(&w.buf, w.offset)?;
        w.offset += w.buf.len() as u64;
        w.buf.clear();
        seg.ensure_mapped(w.offset)?;
        Ok(())
    }

    /// Starts a new segment: syncs the current one (so a later segment never holds
    /// data while an earlier one may still lose some, which makes any damage outside
    /// the last segment real damage), names a preallocated file after the next index,
    /// writes its header and a preamble restating the log's state (so older segments
    /// can be deleted), syncs it, renames it into place and syncs the directory.
    fn rotate(&self, w: &mut Writer, st: &mut WalState) -> Result<(), LogError> {
        if w.active.is_some() {
            self.sync_active(w)?;
        }
        let seq = w.next_seq;
        let first_index = st.log.last_index() + 1;
        let (tmp_path, file) = self.next_file(w)?;
        let name = SegmentName { seq, first_index };
        let header = SegmentHeader {
            version: SEGMENT_FORMAT_VERSION,
            seq,
            first_index,
        };
        let mut buf = header.encode().to_vec();
        let base = 0;
        let mut records = 0;
        if let Some(meta) = &st.snapshot {
            push_small(
                &mut buf,
                seq,
                base,
                &WalRecord::SnapshotMarker(meta.clone()),
            );
            records += 1;
        }
        if let (index @ 1.., Some(term)) = (st.log.base_index(), st.log.base_term()) {
            push_small(&mut buf, seq, base, &WalRecord::Compact { index, term });
            records += 1;
        }
        push_small(&mut buf, seq, base, &WalRecord::HardState(st.hard_state));
        records += 1;
        let preamble_end = (buf.len() + frame_bytes(12) as usize) as u64;
        let commit = WalRecord::Commit {
            records,
            // The preamble is synced together with the header, before use.
            synced_through: preamble_end,
        };
        push_small(&mut buf, seq, base, &commit);
        validate_frames(
            &buf[SEGMENT_HEADER_BYTES as usize..],
            seq,
            SEGMENT_HEADER_BYTES,
        )?;
        let path = self.dir.join(name.to_string());
        let step = (|| -> std::io::Result<Arc<Segment>> {
            file.write_at(&buf, 0)?;
            file.sync_data()?;
            self.count_sync();
            self.fs.rename(&tmp_path, &path)?;
            self.fs.sync_dir(&self.dir)?;
            Ok(Arc::new(Segment::open(name, file)?))
        })();
        let seg = match step {
            Ok(seg) => seg,
            Err(e) => {
                self.poison();
                return Err(e.into());
            }
        };
        st.segments.insert(seq, seg.clone());
        w.active = Some(seg);
        w.offset = buf.len() as u64;
        w.data_start = w.offset;
        w.synced_offset = w.offset;
        w.next_seq = seq + 1;
        self.rotations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn next_file(&self, w: &mut Writer) -> Result<Prepared, LogError> {
        if let Some(p) = &w.prealloc {
            if let Some(Ok(prepared)) = p.take() {
                return Ok(prepared);
            }
        }
        // No file ready (first segment, the thread is behind, or preallocation is off):
        // make one here.
        w.sync_created += 1;
        let tag = format!("fg-{:016x}", w.sync_created);
        create_allocated(
            self.fs.as_ref(),
            &self.dir,
            &tag,
            self.opts.segment_size_bytes,
        )
        .map_err(|e| {
            self.poison();
            e.into()
        })
    }

    /// Deletes whole segments that hold no live entry (always keeping the active one).
    /// Runs only after the compaction record is synced: a segment may be deleted only
    /// once the log can prove, without it, that its entries were compacted.
    fn purge(&self, w: &Writer) -> Result<(), LogError> {
        let Some(active) = &w.active else {
            return Ok(());
        };
        let doomed: Vec<Arc<Segment>> = {
            let mut st = self.state.write();
            let first = st.log.first_index();
            // Live entries sit in non-decreasing segment order (a replaced suffix is
            // always rewritten in the newest segment), so everything before the
            // segment of the first live entry is dead.
            let keep_from = match st.log.get(first) {
                Ok((_, loc)) => loc.seq.min(active.name.seq),
                Err(_) => active.name.seq,
            };
            let seqs: Vec<u64> = st.segments.range(..keep_from).map(|(s, _)| *s).collect();
            seqs.iter().filter_map(|s| st.segments.remove(s)).collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        // Oldest first, so a crash part-way leaves a contiguous run of segments.
        for seg in &doomed {
            self.fs.remove_file(&self.dir.join(seg.name.to_string()))?;
            self.purged.fetch_add(1, Ordering::Relaxed);
        }
        self.fs.sync_dir(&self.dir)?;
        Ok(())
    }
}

fn push_small(buf: &mut Vec<u8>, seq: u64, base: u64, rec: &WalRecord) {
    push_frame(buf, seq, base, rec.record_type(), |out| {
        encode_small_payload(rec, out)
    });
}

/// Checks that `buf` (to be written at `base` of segment `seq`) is a run of valid frames.
fn validate_frames(buf: &[u8], seq: u64, base: u64) -> std::io::Result<()> {
    // parse_frame works on file offsets; present `buf` as if it started at `base` by
    // parsing a copy-free window through an offset shift.
    let mut pos = 0u64;
    while pos < buf.len() as u64 {
        match parse_frame_shifted(buf, seq, base, pos) {
            Some(next) => pos = next,
            None => {
                return Err(std::io::Error::other(format!(
                    "internal error: frame at offset {} of segment {seq} fails validation \
                     before write",
                    base + pos
                )))
            }
        }
    }
    Ok(())
}

fn parse_frame_shifted(buf: &[u8], seq: u64, base: u64, pos: u64) -> Option<u64> {
    match crate::record::parse_frame_in(buf, base, seq, base + pos) {
        FrameAt::Frame { next, .. } => Some(next - base),
        _ => None,
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Stop the preallocation thread. Nothing is synced here: a dropped log is
        // treated like a crashed one; call `close` for a clean shutdown.
        self.inner.writer.lock().prealloc = None;
    }
}

impl LogStore for Wal {
    fn stop_background_work(&self) {
        // Dropping the preallocator joins its thread, which removes the file it had
        // ready; the writer then creates segments itself.
        self.inner.writer.lock().prealloc = None;
    }

    fn write(&self, batch: &LogBatch, durable: bool) -> Result<u64, LogError> {
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        if batch.is_empty() {
            // Nothing to write: only a policy that may sync has a group to form.
            if durable && self.inner.opts.sync_policy != SyncPolicy::Never {
                return self.submit(Op::Durable);
            }
            return Ok(self.durable_index());
        }
        let prepared = Box::new(PreparedBatch::new(batch));
        self.submit(Op::Batch {
            batch: prepared,
            durable,
        })
    }

    fn sync(&self) -> Result<(), LogError> {
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        self.submit(Op::Sync).map(|_| ())
    }

    fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::Relaxed)
    }

    fn durable_index(&self) -> u64 {
        self.inner.state.read().durability.get()
    }

    fn truncate_suffix(&self, index: u64) -> Result<(), LogError> {
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        self.submit(Op::Truncate(index)).map(|_| ())
    }

    fn compact(&self, index: u64) -> Result<(), LogError> {
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        self.submit(Op::Compact(index)).map(|_| ())
    }

    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>, LogError> {
        let st = self.inner.state.read();
        st.log.check_range(lo, hi)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut scratch = Vec::new();
        for (index, (term, loc)) in st.log.iter_from(lo) {
            if index >= hi {
                break;
            }
            let entry = read_entry(&st, index, *term, loc, &mut scratch)?;
            size = size.saturating_add(entry.size_bytes());
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, LogError> {
        self.inner.state.read().log.term(index)
    }

    fn first_index(&self) -> u64 {
        self.inner.state.read().log.first_index()
    }

    fn last_index(&self) -> u64 {
        self.inner.state.read().log.last_index()
    }

    fn hard_state(&self) -> HardState {
        self.inner.state.read().hard_state
    }

    fn snapshot_marker(&self) -> Option<SnapshotMetadata> {
        self.inner.state.read().snapshot.clone()
    }
}

/// Reads entry `index` back and checks it (the read-side half of the pair assertion):
/// its CRC, and that it decodes to the index and term the index says.
fn read_entry(
    st: &WalState,
    index: u64,
    term: u64,
    loc: &EntryLoc,
    scratch: &mut Vec<u8>,
) -> Result<Entry, LogError> {
    let seg = st.segments.get(&loc.seq).ok_or_else(|| {
        LogError::Corrupt(format!("entry {index}: segment seq {} is gone", loc.seq))
    })?;
    let at = |what: String| {
        LogError::Corrupt(format!(
            "{} at byte offset {}: entry {index}: {what}",
            seg.name, loc.offset
        ))
    };
    let decoded = seg.with_bytes(loc.offset, loc.len as usize, scratch, |bytes| {
        if crc32fast::hash(bytes) != loc.crc {
            return Err("CRC mismatch on read".to_string());
        }
        codec::decode::<Entry>(bytes).map_err(|e| e.to_string())
    })?;
    let entry = decoded.map_err(at)?;
    if entry.index != index || entry.term != term {
        return Err(at(format!(
            "read back index {} term {}, expected index {index} term {term}",
            entry.index, entry.term
        )));
    }
    Ok(entry)
}
