//! The RocksDB state machine (cargo feature `rocksdb`): the map lives in a RocksDB
//! database in `DATA_DIR/rocksdb/sm/` and survives restarts, so a restart replays only
//! the log above its applied index instead of loading a whole snapshot into memory.
//!
//! Layout: column family `meta` holds the format version, the applied index and the
//! *generation*; the map lives in column family `data-{generation}`. Every batch of
//! applied entries is one `WriteBatch` carrying both the data and the new applied index,
//! so after any crash the two agree and an entry at or below the applied index is
//! never applied again.
//!
//! Durability: applies go through RocksDB's WAL but are not synced. The Raft log is the
//! durable record: an entry reaches the state machine only once it is durable there,
//! and on restart the log replays everything above the applied index RocksDB
//! recovered. RocksDB recovers a prefix of its write batches (point-in-time recovery,
//! each batch whole), and before it flushes one column family it syncs the WAL files
//! the other column families still depend on, so a flushed data file never holds
//! writes whose applied index was lost. The applied index therefore never runs ahead of
//! the data; at worst both fall back together and the log replays the difference.
//!
//! Snapshots stream in `keel_snapshot::memory`'s record layout, so they are interchangeable
//! with the memory state machine's. Saving iterates a RocksDB snapshot (a consistent
//! view) twice: once to count the records the layout announces up front, once to write
//! them. Restoring streams the records into a fresh `data-{generation + 1}` column
//! family in bounded batches, flushes it, and only then switches `meta` to the new
//! generation and applied index in one synced write; the old family is dropped after.
//! A damaged snapshot or a crash at any point before the switch leaves the old state
//! whole (the half-built family is dropped, at the latest on the next open), so a
//! restore is all or nothing.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use keel_snapshot::memory::{MapLimits, RecordReader, RecordWriter};
use keel_snapshot::{SnapshotConsumer, SnapshotProducer};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch,
    WriteOptions, DB,
};

use super::StateMachine;
use crate::command::Op;
use crate::error::{Error, Result};

const CF_META: &str = "meta";
const DATA_CF_PREFIX: &str = "data-";
const KEY_FORMAT: &[u8] = b"format";
const KEY_GENERATION: &[u8] = b"generation";
const KEY_APPLIED: &[u8] = b"applied";
/// Version of this layout; a database written by another version is refused.
const FORMAT_VERSION: u64 = 1;
/// A restore writes at most this many bytes per `WriteBatch` (plus one record), so
/// memory stays bounded whatever the snapshot's size.
pub const RESTORE_BATCH_MAX_BYTES: usize = 4 << 20;

/// The map in RocksDB. See the module documentation for the layout and why unsynced
/// applies are safe.
pub struct RocksStateMachine {
    db: DB,
    path: PathBuf,
    generation: u64,
    /// Includes entries without an operation recorded by [`StateMachine::mark_applied`],
    /// which are not written: replaying them after a restart changes nothing.
    applied_index: u64,
    limits: MapLimits,
}

impl std::fmt::Debug for RocksStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStateMachine")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .field("applied_index", &self.applied_index)
            .finish_non_exhaustive()
    }
}

fn backend(what: &str, e: rocksdb::Error) -> Error {
    Error::StateMachine(format!("rocksdb {what}: {e}"))
}

fn data_cf_name(generation: u64) -> String {
    format!("{DATA_CF_PREFIX}{generation}")
}

fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        Error::StateMachine(format!(
            "rocksdb state machine: {what} has {} bytes, expected 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // fdatasync, not fsync: as for the RocksDB log, file sizes are the only metadata
    // that matters.
    opts.set_use_fsync(false);
    // RocksDB's informational LOG files would otherwise accumulate forever.
    opts.set_keep_log_file_num(4);
    opts
}

impl RocksStateMachine {
    /// Opens (or creates) the state machine in directory `path`, dropping what an
    /// interrupted restore left behind.
    pub fn open(path: impl AsRef<Path>) -> Result<RocksStateMachine> {
        let path = path.as_ref().to_path_buf();
        // Durably: RocksDB syncs the files in its directory, not the directory's entry.
        keel_fs::FileSystem::create_dir_all_durably(&keel_fs::StdFs, &path)?;
        let opts = db_options();
        let existing = if path.join("CURRENT").exists() {
            DB::list_cf(&opts, &path).map_err(|e| backend("listing column families", e))?
        } else if keel_wal::has_rocksdb_files(&path)? {
            return Err(Error::StateMachine(format!(
                "{} holds RocksDB files but no CURRENT file: the state machine's database \
                 is damaged (remove the directory to rebuild it from the snapshots and the log)",
                path.display()
            )));
        } else {
            Vec::new()
        };
        let mut names: Vec<String> = existing;
        for required in ["default", CF_META] {
            if !names.iter().any(|n| n == required) {
                names.push(required.to_string());
            }
        }
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, &path, descriptors)
            .map_err(|e| backend(&format!("opening {}", path.display()), e))?;
        let mut sm = RocksStateMachine {
            db,
            path,
            generation: 0,
            applied_index: 0,
            limits: MapLimits::default(),
        };
        sm.recover(&names)?;
        Ok(sm)
    }

    fn meta_cf(&self) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(CF_META)
            .ok_or_else(|| Error::StateMachine("column family meta is missing".into()))
    }

    fn data_cf(&self) -> Result<&ColumnFamily> {
        let name = data_cf_name(self.generation);
        self.db
            .cf_handle(&name)
            .ok_or_else(|| Error::StateMachine(format!("column family {name} is missing")))
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<u64>> {
        let meta = self.meta_cf()?;
        match self
            .db
            .get_cf(meta, key)
            .map_err(|e| backend("reading meta", e))?
        {
            Some(v) => Ok(Some(decode_u64(&String::from_utf8_lossy(key), &v)?)),
            None => Ok(None),
        }
    }

    // Reads the generation and applied index, creating them in a new database, and
    // drops every data family but the live one.
    fn recover(&mut self, names: &[String]) -> Result<()> {
        match self.get_meta(KEY_FORMAT)? {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(Error::StateMachine(format!(
                    "{}: state machine format {v}, this build reads {FORMAT_VERSION}",
                    self.path.display()
                )))
            }
            // A new database (or one whose first open stopped before its first write).
            None => {}
        }
        match self.get_meta(KEY_GENERATION)? {
            Some(generation) => {
                self.generation = generation;
                self.applied_index = self.get_meta(KEY_APPLIED)?.ok_or_else(|| {
                    Error::StateMachine("rocksdb state machine: applied index missing".into())
                })?;
                // Present since the write that named this generation.
                self.data_cf()?;
            }
            None => {
                let name = data_cf_name(0);
                if self.db.cf_handle(&name).is_none() {
                    self.db
                        .create_cf(&name, &Options::default())
                        .map_err(|e| backend("creating the data column family", e))?;
                }
                let meta = self.meta_cf()?;
                let mut wb = WriteBatch::default();
                wb.put_cf(meta, KEY_FORMAT, FORMAT_VERSION.to_be_bytes());
                wb.put_cf(meta, KEY_GENERATION, 0u64.to_be_bytes());
                wb.put_cf(meta, KEY_APPLIED, 0u64.to_be_bytes());
                self.write(wb, true)?;
                self.generation = 0;
                self.applied_index = 0;
            }
        }
        let live = data_cf_name(self.generation);
        for name in names {
            if name.starts_with(DATA_CF_PREFIX) && *name != live {
                log::warn!(
                    "{}: dropping column family {name} left by an interrupted snapshot restore",
                    self.path.display()
                );
                self.db
                    .drop_cf(name)
                    .map_err(|e| backend("dropping a leftover column family", e))?;
            }
        }
        Ok(())
    }

    fn write(&self, wb: WriteBatch, sync: bool) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| backend("writing", e))
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // Writes the operations above the applied index and the new applied index in one
    // batch.
    fn write_ops<'a>(&mut self, ops: impl IntoIterator<Item = (u64, &'a Op)>) -> Result<()> {
        let data = self.data_cf()?;
        let meta = self.meta_cf()?;
        let mut wb = WriteBatch::default();
        let mut last = self.applied_index;
        for (index, op) in ops {
            if index <= last {
                // Replayed, or out of order (which the apply stage never does).
                debug_assert!(index <= self.applied_index, "ops in increasing order");
                continue;
            }
            match op {
                Op::Put { key, value } => wb.put_cf(data, key, value),
                Op::Delete { key } => wb.delete_cf(data, key),
            }
            last = index;
        }
        if last == self.applied_index {
            return Ok(());
        }
        wb.put_cf(meta, KEY_APPLIED, last.to_be_bytes());
        // Unsynced: see the module documentation.
        self.write(wb, false)?;
        self.applied_index = last;
        Ok(())
    }

    fn scan_options() -> ReadOptions {
        let mut ro = ReadOptions::default();
        // A full scan would otherwise evict the blocks that serve reads.
        ro.fill_cache(false);
        ro
    }
}

impl RocksStateMachine {
    /// The value of `key`, as of `applied_index()`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.data_cf()?, key)
            .map_err(|e| backend("reading", e))
    }

    /// Counts the keys by iterating them: O(keys), for tests and tools only.
    pub fn len(&self) -> u64 {
        let Ok(data) = self.data_cf() else {
            return 0;
        };
        let mut it = self.db.raw_iterator_cf_opt(data, Self::scan_options());
        it.seek_to_first();
        let mut n = 0u64;
        while it.valid() {
            n += 1;
            it.next();
        }
        if let Err(e) = it.status() {
            log::error!("{}: counting keys failed: {e}", self.path.display());
        }
        n
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // Streams the snapshot in `input` into column family `staging` and makes it
    // durable.
    fn fill(&self, input: &mut dyn Read, staging: &str) -> io::Result<()> {
        let cf = self
            .db
            .cf_handle(staging)
            .ok_or_else(|| io::Error::other(format!("column family {staging} is missing")))?;
        let consumer = Consumer {
            db: &self.db,
            cf,
            limits: self.limits,
            max_batch_bytes: RESTORE_BATCH_MAX_BYTES,
        };
        consumer.read_snapshot(input)?;
        // The restore wrote around the WAL; flushing writes its data to synced files.
        self.db
            .flush_cf(cf)
            .map_err(|e| io_error("flushing the restored data", e))
    }
}

// The state machine's own errors, as the trait reports them.
fn to_io(e: Error) -> io::Error {
    io::Error::other(e)
}

impl StateMachine for RocksStateMachine {
    type Command = Op;
    type Response = ();

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn apply(&mut self, index: u64, op: Op) -> io::Result<()> {
        self.write_ops([(index, &op)]).map_err(to_io)
    }

    fn apply_batch(&mut self, ops: Vec<(u64, Op)>) -> io::Result<Vec<()>> {
        self.write_ops(ops.iter().map(|(i, op)| (*i, op)))
            .map_err(to_io)?;
        Ok(vec![(); ops.len()])
    }

    fn mark_applied(&mut self, index: u64) {
        // Not written: an entry without an operation changes nothing, so replaying it
        // after a restart is harmless; the next applied batch records the index.
        self.applied_index = self.applied_index.max(index);
    }

    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let producer = Producer {
            snapshot: self.db.snapshot(),
            data: self.data_cf().map_err(to_io)?,
        };
        producer.write_snapshot(out)
    }

    fn restore_snapshot(&mut self, index: u64, input: &mut dyn Read) -> io::Result<()> {
        let next = self.generation + 1;
        let staging = data_cf_name(next);
        if self.db.cf_handle(&staging).is_some() {
            // Left by a restore that failed here and could not drop it.
            self.db
                .drop_cf(&staging)
                .map_err(|e| io_error("dropping a leftover column family", e))?;
        }
        self.db
            .create_cf(&staging, &Options::default())
            .map_err(|e| io_error("creating a column family", e))?;
        if let Err(e) = self.fill(input, &staging) {
            if let Err(drop_err) = self.db.drop_cf(&staging) {
                // Dropped on the next open (or the next restore) instead.
                log::warn!(
                    "{}: dropping {staging} after a failed restore: {drop_err}",
                    self.path.display()
                );
            }
            return Err(e);
        }
        // The switch: synced, and only after the new family's data is durable (flushed
        // above), so meta never names a generation whose data a crash could lose; and
        // before the old family is dropped, so meta never names a dropped one.
        let meta = self.meta_cf().map_err(to_io)?;
        let mut wb = WriteBatch::default();
        wb.put_cf(meta, KEY_GENERATION, next.to_be_bytes());
        wb.put_cf(meta, KEY_APPLIED, index.to_be_bytes());
        self.write(wb, true).map_err(to_io)?;
        let old = data_cf_name(self.generation);
        self.generation = next;
        self.applied_index = index;
        if let Err(e) = self.db.drop_cf(&old) {
            log::warn!(
                "{}: dropping the replaced {old}: {e} (retried on the next open)",
                self.path.display()
            );
        }
        Ok(())
    }
}

/// Writes the records of a RocksDB snapshot in the memory state machine's layout.
struct Producer<'a> {
    snapshot: SnapshotWithThreadMode<'a, DB>,
    data: &'a ColumnFamily,
}

fn io_error(what: &str, e: rocksdb::Error) -> io::Error {
    // Not `InvalidData`: that kind means the snapshot stream itself is damaged.
    io::Error::other(format!("rocksdb {what}: {e}"))
}

impl SnapshotProducer for Producer<'_> {
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        // Both passes read the same RocksDB snapshot, so they see the same records.
        let mut it = self
            .snapshot
            .raw_iterator_cf_opt(self.data, RocksStateMachine::scan_options());
        it.seek_to_first();
        let mut count = 0u64;
        while it.valid() {
            count += 1;
            it.next();
        }
        it.status().map_err(|e| io_error("counting records", e))?;
        let mut writer = RecordWriter::new(out, count)?;
        it.seek_to_first();
        while let Some((key, value)) = it.item() {
            writer.push(key, value)?;
            it.next();
        }
        it.status().map_err(|e| io_error("reading records", e))?;
        writer.finish()
    }
}

/// Streams records into a column family in batches of about `max_batch_bytes`.
struct Consumer<'a> {
    db: &'a DB,
    cf: &'a ColumnFamily,
    limits: MapLimits,
    max_batch_bytes: usize,
}

impl Consumer<'_> {
    fn write(&self, wb: WriteBatch) -> io::Result<()> {
        let mut wo = WriteOptions::default();
        // The family is flushed before anything refers to it, and dropped if the
        // restore does not finish, so the WAL would only be written twice.
        wo.disable_wal(true);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| io_error("writing restored records", e))
    }
}

impl SnapshotConsumer for Consumer<'_> {
    /// Records written.
    type Image = u64;

    fn read_snapshot(&self, input: &mut dyn Read) -> io::Result<u64> {
        let mut records = RecordReader::new(input, self.limits)?;
        let mut wb = WriteBatch::default();
        let mut written = 0u64;
        while let Some((key, value)) = records.next_record()? {
            wb.put_cf(self.cf, &key, &value);
            written += 1;
            if wb.size_in_bytes() >= self.max_batch_bytes {
                self.write(std::mem::take(&mut wb))?;
            }
        }
        if !wb.is_empty() {
            self.write(wb)?;
        }
        Ok(written)
    }
}
