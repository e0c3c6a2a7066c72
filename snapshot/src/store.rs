//! The durable snapshot store: one directory of `{term:016x}-{index:016x}.snap` files.
//!
//! Each file is a chunk stream (see [`crate::chunk`]): metadata and member addresses
//! ([`SnapshotInfo`]), state-machine bytes, per-chunk CRCs and a whole-snapshot
//! checksum. A snapshot is written under a `.tmp`
//! name, synced, renamed into place and the directory synced, so after a crash at any
//! point the directory holds the old snapshots and possibly the complete new one,
//! never a partial file under a real name. Leftover `.tmp` files are removed on open;
//! `.partial` files of resumable transfers are kept until [`SnapshotStore::retain`]
//! finds them stale.
//!
//! [`SnapshotStore::load_newest`] tries the newest snapshot first; one that fails any
//! check is renamed `.broken` (kept for inspection), logged, and the next older one is
//! tried. (A node's start walks [`SnapshotStore::list`] itself and skips a damaged
//! snapshot without renaming it.)

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use keel_fs::{FileSystem, FsFile};
use keel_raft::SnapshotMetadata;
use parking_lot::Mutex;

use crate::chunk::DEFAULT_CHUNK_SIZE_BYTES;
use crate::chunk::{ChunkWriter, SnapshotReader, StreamHeader, StreamTrailer};
use crate::error::{Result, SnapshotError};
use crate::file_io::{FileReader, FileWriter};
use crate::info::{MemberAddresses, SnapshotInfo};
use crate::state_machine::{SnapshotConsumer, SnapshotProducer};

const SNAP_EXT: &str = ".snap";
pub(crate) const TMP_EXT: &str = ".tmp";
const BROKEN_EXT: &str = ".broken";
pub(crate) const PARTIAL_EXT: &str = ".partial";
// Read-ahead for stored snapshots: large enough that frame heads cost no extra calls.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// The default [`StoreOptions::max_receive_bytes`]: 64 GiB. keel's in-memory state
/// machine holds its whole state in RAM and installing a snapshot reads the whole
/// image into a new map (with tens of bytes of bookkeeping per record on top of the
/// file's), so it can never install a snapshot much larger than the node's memory;
/// 64 GiB is above the memory of the machines such a node is meant for, yet stops a
/// runaway or hostile stream long before it fills a disk. A larger state (a RocksDB
/// state machine) needs a larger limit, set by whoever opens the store.
pub const DEFAULT_MAX_RECEIVE_BYTES: u64 = 64 << 30;

/// How the store behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many of the newest snapshots [`SnapshotStore::retain`] keeps (at least 1).
    pub retain_count: usize,
    /// State-machine bytes per chunk in newly written snapshots.
    pub chunk_size_bytes: u32,
    /// Largest snapshot (in file bytes) a receiver accepts before aborting, so a
    /// runaway sender cannot fill the disk. Default [`DEFAULT_MAX_RECEIVE_BYTES`].
    pub max_receive_bytes: u64,
    /// How many `.broken` files are kept for inspection; older ones are deleted by
    /// [`SnapshotStore::retain`].
    pub max_broken_files: usize,
    /// A resumable receiver ([`SnapshotStore::receiver_for`]) syncs its partial file
    /// each time this many more bytes have arrived, bounding what a crash can make it
    /// fetch again.
    pub receive_sync_every_bytes: u64,
    /// [`SnapshotStore::save`] syncs the file each time this many more bytes were
    /// written (0: only at the end). A snapshot is written while the log goes on
    /// syncing on the same disk; flushed in one piece at the end, a large one makes
    /// the log's syncs wait behind all of it (RocksDB's `bytes_per_sync` answers the
    /// same problem).
    pub save_sync_every_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retain_count: 3,
            chunk_size_bytes: DEFAULT_CHUNK_SIZE_BYTES,
            max_receive_bytes: DEFAULT_MAX_RECEIVE_BYTES,
            max_broken_files: 3,
            receive_sync_every_bytes: 64 << 20,
            save_sync_every_bytes: 1 << 20,
        }
    }
}

/// A snapshot's name: the term and index of the last entry it covers.
///
/// Ordered by index, then term: within one log both only grow, and the index is what
/// says how much of the log a snapshot replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId {
    /// Index of the last entry covered.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
}

impl SnapshotId {
    /// The id of the snapshot with this metadata.
    pub fn of(metadata: &SnapshotMetadata) -> SnapshotId {
        SnapshotId {
            index: metadata.index,
            term: metadata.term,
        }
    }

    /// The file name: `{term:016x}-{index:016x}.snap`.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}{SNAP_EXT}", self.term, self.index)
    }

    /// Parses a file name made by [`file_name`](Self::file_name).
    pub fn parse(name: &str) -> Option<SnapshotId> {
        let stem = name.strip_suffix(SNAP_EXT)?;
        let (term, index) = stem.split_once('-')?;
        let id = SnapshotId {
            term: u64::from_str_radix(term, 16).ok()?,
            index: u64::from_str_radix(index, 16).ok()?,
        };
        // Only the canonical spelling: another one ("+1", upper case) would name a
        // file that `path_of` cannot find again.
        (id.file_name() == name).then_some(id)
    }
}

/// What [`SnapshotStore::save`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSnapshot {
    /// The snapshot's id.
    pub id: SnapshotId,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Its trailer (data size, chunk count, checksum).
    pub trailer: StreamTrailer,
}

/// A snapshot loaded by [`SnapshotStore::load_newest`].
#[derive(Debug)]
pub struct Loaded<T> {
    /// Which snapshot.
    pub id: SnapshotId,
    /// Its metadata.
    pub metadata: SnapshotMetadata,
    /// The members' addresses it carries (none in a version 1 file).
    pub members: MemberAddresses,
    /// What the consumer built from it.
    pub image: T,
    /// Newer snapshots that were damaged, renamed `.broken` and skipped, newest first
    /// (each a [`SnapshotError::Damaged`] naming the file).
    pub skipped: Vec<SnapshotError>,
}

/// What [`SnapshotStore::retain`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    /// Snapshots kept, newest first.
    pub kept: Vec<SnapshotId>,
    /// Snapshots deleted.
    pub deleted: Vec<SnapshotId>,
    /// The WAL may purge entries up to and including this index: the oldest kept
    /// snapshot's index (0 when none is kept). The oldest rather than the newest, so
    /// that if the newest turns out damaged the log still reaches back to the fallback.
    pub wal_purge_through: u64,
}

/// A directory of snapshots on a [`FileSystem`]. Methods take `&self`; directory
/// changes (install, rename, delete) are serialized by an internal lock.
///
/// # Example
///
/// Save snapshots as the state machine advances, keep the newest two, and load the
/// newest after a restart:
///
/// ```
/// use keel_fs::StdFs;
/// use keel_raft::SnapshotMetadata;
/// use keel_snapshot::memory::{Map, MapConsumer};
/// use keel_snapshot::{SnapshotStore, StoreOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let opts = StoreOptions { retain_count: 2, ..StoreOptions::default() };
/// let store = SnapshotStore::open(StdFs::shared(), dir.path().join("snap"), opts)?;
///
/// let mut state = Map::new();
/// for index in [10, 20, 30] {
///     state.insert(format!("key{index}").into_bytes(), b"value".to_vec());
///     let meta = SnapshotMetadata { index, term: 1, ..SnapshotMetadata::default() };
///     store.save(&meta, &state)?;
/// }
/// let retention = store.retain()?;
/// assert_eq!(retention.deleted.len(), 1); // the snapshot at 10
/// assert_eq!(retention.wal_purge_through, 20); // the oldest one kept
///
/// let reopened = SnapshotStore::open(StdFs::shared(), dir.path().join("snap"), opts)?;
/// let newest = reopened.load_newest(&MapConsumer::default())?.expect("a snapshot");
/// assert_eq!(newest.metadata.index, 30);
/// assert_eq!(newest.image, state);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SnapshotStore {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) dir: PathBuf,
    options: StoreOptions,
    dir_lock: Mutex<()>,
    pub(crate) next_receive_id: AtomicU64,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory `dir`, removing temporary
    /// files left by an interrupted save or transfer.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: impl Into<PathBuf>,
        options: StoreOptions,
    ) -> Result<SnapshotStore> {
        let dir = dir.into();
        if options.retain_count == 0 {
            return Err(SnapshotError::InvalidArgument(
                "retain_count must be at least 1".into(),
            ));
        }
        if options.chunk_size_bytes == 0
            || options.chunk_size_bytes > crate::chunk::MAX_CHUNK_SIZE_BYTES
        {
            return Err(SnapshotError::InvalidArgument(format!(
                "chunk_size_bytes {} outside 1..={}",
                options.chunk_size_bytes,
                crate::chunk::MAX_CHUNK_SIZE_BYTES
            )));
        }
        // Durably: a snapshot synced into a directory whose own entry a crash loses
        // is lost with it.
        fs.create_dir_all_durably(&dir)
            .map_err(|e| SnapshotError::io(&dir, e))?;
        let store = SnapshotStore {
            fs,
            dir,
            options,
            dir_lock: Mutex::new(()),
            next_receive_id: AtomicU64::new(0),
        };
        let mut removed = false;
        for name in store.names()? {
            if name.ends_with(TMP_EXT) {
                let path = store.dir.join(&name);
                log::info!("removing leftover temporary snapshot {}", path.display());
                store
                    .fs
                    .remove_file(&path)
                    .map_err(|e| SnapshotError::io(&path, e))?;
                removed = true;
            }
        }
        if removed {
            store.sync_dir()?;
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The path of snapshot `id`.
    pub fn path_of(&self, id: SnapshotId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    /// The snapshots present (by name; not yet checked), newest first.
    pub fn list(&self) -> Result<Vec<SnapshotId>> {
        list_snapshots(self.fs.as_ref(), &self.dir)
    }

    /// Names of files renamed `.broken`, sorted.
    pub fn broken_files(&self) -> Result<Vec<String>> {
        Ok(self
            .names()?
            .into_iter()
            .filter(|n| n.ends_with(BROKEN_EXT))
            .collect())
    }

    /// Writes a snapshot of `producer`'s state at `metadata`, without member
    /// addresses; see [`save_info`](Self::save_info).
    pub fn save(
        &self,
        metadata: &SnapshotMetadata,
        producer: &dyn SnapshotProducer,
    ) -> Result<SavedSnapshot> {
        self.save_info(&SnapshotInfo::from(metadata.clone()), producer)
    }

    /// Writes a snapshot of `producer`'s state as `info` describes it durably:
    /// temporary file, sync, rename, directory sync. Holds one chunk in memory at a
    /// time. Does not delete older snapshots; call [`retain`](Self::retain)
    /// afterwards. Saving the same snapshot id from two threads at once is not
    /// supported (they share a temporary name); different ids may be saved
    /// concurrently.
    pub fn save_info(
        &self,
        info: &SnapshotInfo,
        producer: &dyn SnapshotProducer,
    ) -> Result<SavedSnapshot> {
        let metadata = &info.metadata;
        if metadata.index == 0 {
            // Index 0 is raft-core's "no snapshot" placeholder.
            return Err(SnapshotError::InvalidArgument(
                "a snapshot at index 0 means no snapshot".into(),
            ));
        }
        let id = SnapshotId::of(metadata);
        let path = self.path_of(id);
        let tmp = self.dir.join(format!("{}{TMP_EXT}", id.file_name()));
        let file = self.create_fresh(&tmp)?;
        let writer = FileWriter::syncing_every(file, self.options.save_sync_every_bytes);
        let result = self.write_stream(writer, info, producer, &tmp);
        let (file_bytes, trailer) = match result {
            Ok(done) => done,
            Err(e) => {
                // Best effort: a leftover temporary file is also removed on next open.
                if let Err(rm) = self.fs.remove_file(&tmp) {
                    log::warn!("could not remove {}: {rm}", tmp.display());
                }
                return Err(e);
            }
        };
        // Only the rename and directory sync need excluding retention and installs;
        // writing the data (seconds for a large state) does not.
        let _guard = self.dir_lock.lock();
        self.fs
            .rename(&tmp, &path)
            .map_err(|e| SnapshotError::io(&tmp, e))?;
        self.sync_dir()?;
        Ok(SavedSnapshot {
            id,
            path,
            file_bytes,
            trailer,
        })
    }

    // Writes and syncs the stream; returns the file size and trailer.
    fn write_stream(
        &self,
        writer: FileWriter,
        info: &SnapshotInfo,
        producer: &dyn SnapshotProducer,
        tmp: &Path,
    ) -> Result<(u64, StreamTrailer)> {
        let mut chunks = ChunkWriter::with_info(writer, info, self.options.chunk_size_bytes)
            .map_err(|e| file_error(e, tmp))?;
        if let Err(e) = producer.write_snapshot(&mut chunks) {
            // The producer sees our write errors too; blame the file only if it failed.
            return Err(if chunks_failed(&chunks) {
                SnapshotError::io(tmp, e)
            } else {
                SnapshotError::StateMachine(e)
            });
        }
        let (writer, trailer) = chunks.finish().map_err(|e| file_error(e, tmp))?;
        writer
            .file()
            .sync_data()
            .map_err(|e| SnapshotError::io(tmp, e))?;
        Ok((writer.offset(), trailer))
    }

    /// Loads the newest snapshot that passes every check into `consumer`. Damaged ones
    /// are renamed `.broken`, logged at error level and reported in
    /// [`Loaded::skipped`]; `None` if no valid snapshot remains. I/O errors and the
    /// consumer's own errors are returned, not treated as damage.
    pub fn load_newest<C: SnapshotConsumer + ?Sized>(
        &self,
        consumer: &C,
    ) -> Result<Option<Loaded<C::Image>>> {
        let mut skipped = Vec::new();
        for id in self.list()? {
            match self.load_info(id, consumer) {
                Ok((info, image)) => {
                    return Ok(Some(Loaded {
                        id,
                        metadata: info.metadata,
                        members: info.members,
                        image,
                        skipped,
                    }))
                }
                Err(e @ SnapshotError::Damaged { .. }) => {
                    log::error!("{e}; renaming it {BROKEN_EXT} and trying an older snapshot");
                    self.quarantine(id)?;
                    skipped.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Reads snapshot `id` into `consumer`, checking everything; its metadata and
    /// what the consumer built. See [`load_info`](Self::load_info).
    pub fn load<C: SnapshotConsumer + ?Sized>(
        &self,
        id: SnapshotId,
        consumer: &C,
    ) -> Result<(SnapshotMetadata, C::Image)> {
        let (info, image) = self.load_info(id, consumer)?;
        Ok((info.metadata, image))
    }

    /// Reads snapshot `id` into `consumer`, checking everything; its description
    /// (metadata and member addresses) and what the consumer built. Damage is
    /// reported as [`SnapshotError::Damaged`] naming the file (and the file is left as
    /// it is).
    pub fn load_info<C: SnapshotConsumer + ?Sized>(
        &self,
        id: SnapshotId,
        consumer: &C,
    ) -> Result<(SnapshotInfo, C::Image)> {
        let (path, mut reader) = self.open_checked(id)?;
        let header = reader.header();
        let info = SnapshotInfo {
            metadata: header.metadata.clone(),
            members: header.members.clone(),
        };
        let damaged = |reason| damage_in(reason, &path);
        let image = match consumer.read_snapshot(&mut reader) {
            Ok(image) => image,
            Err(e) => {
                return Err(match reader.take_failure() {
                    Some(stream) => damaged(stream),
                    None => SnapshotError::StateMachine(e),
                })
            }
        };
        reader.finish().map_err(damaged)?;
        Ok((info, image))
    }

    /// The metadata of snapshot `id`, from its checked header alone, for a state
    /// machine that already holds the state it covers (a persistent one after a
    /// restart) and needs only its membership and term. Damage to the header is
    /// reported as [`SnapshotError::Damaged`]; the rest of the file is not read.
    pub fn metadata(&self, id: SnapshotId) -> Result<SnapshotMetadata> {
        Ok(self.info(id)?.metadata)
    }

    /// The description (metadata and member addresses) of snapshot `id`, from its
    /// checked header alone, as [`metadata`](Self::metadata) reads it.
    pub fn info(&self, id: SnapshotId) -> Result<SnapshotInfo> {
        let (_, reader) = self.open_checked(id)?;
        let header = reader.header();
        Ok(SnapshotInfo {
            metadata: header.metadata.clone(),
            members: header.members.clone(),
        })
    }

    /// The size of snapshot `id`'s file.
    pub fn file_bytes(&self, id: SnapshotId) -> Result<u64> {
        let path = self.path_of(id);
        let file = self
            .fs
            .open_readonly(&path)
            .map_err(|e| SnapshotError::io(&path, e))?;
        file.len().map_err(|e| SnapshotError::io(&path, e))
    }

    // Opens snapshot `id` and checks its header, and that the header names the same
    // term and index as the file name; damage is reported as `Damaged`.
    fn open_checked(
        &self,
        id: SnapshotId,
    ) -> Result<(PathBuf, SnapshotReader<BufReader<FileReader>>)> {
        let path = self.path_of(id);
        let reader = self.open_reader(&path).map_err(|e| damage_in(e, &path))?;
        let metadata = &reader.header().metadata;
        if SnapshotId::of(metadata) != id {
            let reason = SnapshotError::Malformed {
                seq: 0,
                reason: format!(
                    "header says term {} index {} but the name says term {} index {}",
                    metadata.term, metadata.index, id.term, id.index
                ),
            };
            return Err(damage_in(reason, &path));
        }
        Ok((path, reader))
    }

    /// Reads snapshot `id` through, checking every chunk and the final checksum
    /// without keeping anything (for `keel snapshot verify`).
    pub fn verify(&self, id: SnapshotId) -> Result<(StreamHeader, StreamTrailer)> {
        verify_file(self.fs.as_ref(), &self.path_of(id))
    }

    /// Keeps the newest [`StoreOptions::retain_count`] snapshots and deletes older
    /// ones (and `.broken` files beyond [`StoreOptions::max_broken_files`], and partial
    /// transfers of snapshots no newer than the newest held), then reports how far the
    /// WAL may be purged.
    pub fn retain(&self) -> Result<Retention> {
        let _guard = self.dir_lock.lock();
        let ids = self.list()?;
        let keep = self.options.retain_count.min(ids.len());
        let (kept, old) = ids.split_at(keep);
        let mut changed = false;
        for id in old {
            let path = self.path_of(*id);
            self.fs
                .remove_file(&path)
                .map_err(|e| SnapshotError::io(&path, e))?;
            changed = true;
        }
        // A partial transfer of a snapshot no newer than the newest one held can never
        // be useful again.
        let newest_index = ids.first().map_or(0, |id| id.index);
        changed |= self.remove_partials_below(newest_index.saturating_add(1))?;
        let broken = self.broken_files()?;
        let excess = broken.len().saturating_sub(self.options.max_broken_files);
        // Names start with the zero-padded term and index, so sorting puts the oldest
        // first.
        for name in &broken[..excess] {
            let path = self.dir.join(name);
            self.fs
                .remove_file(&path)
                .map_err(|e| SnapshotError::io(&path, e))?;
            changed = true;
        }
        if changed {
            self.sync_dir()?;
        }
        Ok(Retention {
            kept: kept.to_vec(),
            deleted: old.to_vec(),
            wal_purge_through: kept.last().map_or(0, |id| id.index),
        })
    }

    // Moves a received, synced temporary file into place as snapshot `id`.
    pub(crate) fn install(&self, tmp: &Path, id: SnapshotId) -> Result<PathBuf> {
        let path = self.path_of(id);
        let _guard = self.dir_lock.lock();
        self.fs
            .rename(tmp, &path)
            .map_err(|e| SnapshotError::io(tmp, e))?;
        self.sync_dir()?;
        Ok(path)
    }

    pub(crate) fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }

    fn open_reader(&self, path: &Path) -> Result<SnapshotReader<BufReader<FileReader>>> {
        open_reader(self.fs.as_ref(), path)
    }

    // Removes partial transfers of snapshots below `index` (each superseded by a newer
    // snapshot), so at most the transfers still worth resuming stay on disk. Returns
    // whether anything was removed; the caller syncs the directory.
    pub(crate) fn remove_partials_below(&self, index: u64) -> Result<bool> {
        let mut removed = false;
        for name in self.names()? {
            let stale = name
                .strip_suffix(PARTIAL_EXT)
                .and_then(SnapshotId::parse)
                .is_some_and(|id| id.index < index);
            if stale {
                let path = self.dir.join(&name);
                self.fs
                    .remove_file(&path)
                    .map_err(|e| SnapshotError::io(&path, e))?;
                removed = true;
            }
        }
        Ok(removed)
    }

    fn quarantine(&self, id: SnapshotId) -> Result<()> {
        let path = self.path_of(id);
        let broken = self.dir.join(format!("{}{BROKEN_EXT}", id.file_name()));
        let _guard = self.dir_lock.lock();
        self.fs
            .rename(&path, &broken)
            .map_err(|e| SnapshotError::io(&path, e))?;
        self.sync_dir()
    }

    fn names(&self) -> Result<Vec<String>> {
        self.fs
            .list_dir(&self.dir)
            .map_err(|e| SnapshotError::io(&self.dir, e))
    }

    // Creates the temporary file `tmp`, empty: one left by an earlier run (a crash
    // mid-save or mid-receive) is removed first.
    pub(crate) fn create_fresh(&self, tmp: &Path) -> Result<Arc<dyn FsFile>> {
        if self.fs.exists(tmp).map_err(|e| SnapshotError::io(tmp, e))? {
            self.fs
                .remove_file(tmp)
                .map_err(|e| SnapshotError::io(tmp, e))?;
        }
        self.fs.create(tmp).map_err(|e| SnapshotError::io(tmp, e))
    }

    pub(crate) fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| SnapshotError::io(&self.dir, e))
    }
}

fn chunks_failed(chunks: &ChunkWriter<FileWriter>) -> bool {
    chunks.inner().failed()
}

// Gives a stream I/O error the path of the file it happened on.
// Damage found while reading the snapshot at `path` names the file; other errors are
// the file system's.
fn damage_in(reason: SnapshotError, path: &Path) -> SnapshotError {
    if reason.is_corruption() {
        SnapshotError::Damaged {
            path: path.to_path_buf(),
            reason: Box::new(reason),
        }
    } else {
        file_error(reason, path)
    }
}

fn file_error(e: SnapshotError, path: &Path) -> SnapshotError {
    match e {
        SnapshotError::Stream(source) => SnapshotError::io(path, source),
        other => other,
    }
}

fn open_reader(fs: &dyn FileSystem, path: &Path) -> Result<SnapshotReader<BufReader<FileReader>>> {
    let file = fs
        .open_readonly(path)
        .map_err(|e| SnapshotError::io(path, e))?;
    let reader = FileReader::new(file).map_err(|e| SnapshotError::io(path, e))?;
    SnapshotReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, reader))
}

/// The snapshots in `dir` (by name; not yet checked), newest first, without changing
/// anything (for `keel snapshot ls`; [`SnapshotStore::open`] removes temporary files).
pub fn list_snapshots(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<SnapshotId>> {
    let mut ids: Vec<SnapshotId> = fs
        .list_dir(dir)
        .map_err(|e| SnapshotError::io(dir, e))?
        .iter()
        .filter_map(|n| SnapshotId::parse(n))
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// Checks a snapshot file end to end (every chunk CRC, the trailer's totals and
/// checksum, nothing after the trailer) without keeping its data. Damage comes back as
/// [`SnapshotError::Damaged`] naming the file.
pub fn verify_file(fs: &dyn FileSystem, path: &Path) -> Result<(StreamHeader, StreamTrailer)> {
    let damaged = |reason| damage_in(reason, path);
    let reader = open_reader(fs, path).map_err(damaged)?;
    let header = reader.header().clone();
    let trailer = reader.finish().map_err(damaged)?;
    Ok((header, trailer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_their_canonical_names() {
        let id = SnapshotId {
            term: 0xab,
            index: 0x1234,
        };
        assert_eq!(id.file_name(), "00000000000000ab-0000000000001234.snap");
        assert_eq!(SnapshotId::parse(&id.file_name()), Some(id));
        for bad in [
            "00000000000000AB-0000000000001234.snap",
            "ab-1234.snap",
            "+0000000000000ab-0000000000001234.snap",
            "00000000000000ab-0000000000001234.snap.broken",
            "00000000000000ab-0000000000001234.snap.tmp",
            "00000000000000ab0000000000001234.snap",
            "",
        ] {
            assert_eq!(SnapshotId::parse(bad), None, "{bad}");
        }
        assert!(SnapshotId { index: 2, term: 1 } > SnapshotId { index: 1, term: 5 });
    }
}
