//! A simulated, in-memory [`FileSystem`] for crash and fault tests.
//!
//! Every file keeps two images: what a crash would leave (`synced`) and what reads see
//! (`current`), plus the ordered list of writes made since the last `sync_data`. A
//! [`crash`](SimFs::crash) rebuilds each file from its synced image and a (possibly
//! empty, possibly torn, possibly garbage-tailed) prefix of those writes, and rolls the
//! namespace back to what the last `sync_dir` of each directory made durable — files
//! and subdirectories alike: a directory whose parent was not synced after it was
//! created is gone after a crash, with everything in it. Handles opened before a crash
//! fail afterwards, like those of a dead process. A path without a parent (`/`, or
//! `""` for relative paths) is the root and always exists.
//!
//! All randomness comes from one seeded generator, so a failing seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileSystem, FsFile, ReadView};

/// The error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: no space left.
    Enospc,
}

impl SimFault {
    fn to_error(self) -> io::Error {
        match self {
            SimFault::Eio => io::Error::from_raw_os_error(libc::EIO),
            SimFault::Enospc => io::Error::from_raw_os_error(libc::ENOSPC),
        }
    }
}

/// What a crash does to each file's unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write is lost.
    DropUnsynced,
    /// A random prefix (in bytes, in write order) of the unsynced writes survives; the
    /// write it ends in is torn.
    TearUnsynced,
    /// Like `TearUnsynced`, then up to 64 random bytes where the surviving prefix ends.
    TearWithGarbage,
    /// Each 512-byte sector touched by an unsynced write independently survives or
    /// not: the kernel writes back dirty pages in no particular order, so a later part
    /// of an unsynced write can persist while an earlier part is lost.
    LoseRandomSectors,
    /// One of the above, chosen per file by the seeded generator.
    Random,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Node {
    synced: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<PendingOp>,
}

#[derive(Debug, Clone, Copy)]
struct Countdown {
    remaining_ops: u64,
    fault: SimFault,
}

#[derive(Debug)]
struct State {
    rng: keel_raft::Rng,
    /// Bumped by every crash; handles from an older epoch are dead.
    epoch: u64,
    next_node_id: u64,
    nodes: BTreeMap<u64, Node>,
    /// The namespace reads and writes see.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace a crash returns to (updated per directory by `sync_dir`).
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// The directories a crash keeps: those whose parent was synced after they were
    /// created (updated per parent by `sync_dir`).
    durable_dirs: BTreeSet<PathBuf>,
    write_fault: Option<Countdown>,
    sync_fault: Option<Countdown>,
    write_count: u64,
    sync_count: u64,
}

impl State {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform value in `0..=max`.
    fn below_incl(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        self.next_u64() % (max + 1)
    }

    fn node_id(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn take_fault(slot: &mut Option<Countdown>) -> Option<SimFault> {
        let c = slot.as_mut()?;
        if c.remaining_ops == 0 {
            let fault = c.fault;
            *slot = None;
            Some(fault)
        } else {
            c.remaining_ops -= 1;
            None
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn dead_handle() -> io::Error {
    io::Error::other("file handle from before a simulated crash")
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn write_into(buf: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    // Offsets in tests are small; a value beyond usize would be a test bug, and
    // saturating keeps this panic-free (the resize below then fails loudly on memory).
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(bytes.len());
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(bytes);
}

fn set_len_of(buf: &mut Vec<u8>, len: u64) {
    buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
}

/// A simulated file system; cheap to clone (clones share the same files).
///
/// # Example
///
/// A write that was not synced before a crash is gone; a synced one survives.
///
/// ```
/// use std::path::Path;
/// use keel_fs::{CrashMode, FileSystem, SimFs};
///
/// # fn main() -> std::io::Result<()> {
/// let sim = SimFs::new(42); // every random choice (torn writes, ...) replays from the seed
/// let fs = sim.shared();
/// let dir = Path::new("/node");
/// fs.create_dir_all_durably(dir)?;
/// let path = dir.join("log");
/// let file = fs.create(&path)?;
/// fs.sync_dir(dir)?; // the file's name is durable
/// file.write_at(b"synced ", 0)?;
/// file.sync_data()?;
/// file.write_at(b"lost", 7)?;
///
/// sim.crash_with(CrashMode::DropUnsynced);
/// assert_eq!(fs.read_file(&path)?, b"synced ");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("SimFs")
            .field("files", &s.names.len())
            .field("epoch", &s.epoch)
            .finish()
    }
}

impl SimFs {
    /// An empty file system whose random choices derive from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State {
                rng: keel_raft::Rng::new(seed),
                epoch: 0,
                next_node_id: 0,
                nodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                durable_dirs: BTreeSet::new(),
                write_fault: None,
                sync_fault: None,
                write_count: 0,
                sync_count: 0,
            })),
        }
    }

    /// This file system as a shareable trait object.
    pub fn shared(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.clone())
    }

    /// Simulates power loss with [`CrashMode::Random`].
    pub fn crash(&self) {
        self.crash_with(CrashMode::Random);
    }

    /// Simulates power loss: unsynced writes are dropped or torn per `mode`, directory
    /// changes not made durable by `sync_dir` are undone, and every open handle dies.
    pub fn crash_with(&self, mode: CrashMode) {
        let mut s = self.state.lock();
        s.epoch += 1;
        // A directory survives if its entry and every ancestor's are durable.
        let kept: BTreeSet<PathBuf> = s
            .dirs
            .iter()
            .filter(|d| {
                d.ancestors()
                    .all(|a| a.parent().is_none() || s.durable_dirs.contains(a))
            })
            .cloned()
            .collect();
        s.dirs = kept;
        s.durable_dirs = s.dirs.clone();
        let names: BTreeMap<PathBuf, u64> = s
            .durable_names
            .iter()
            .filter(|(p, _)| s.dirs.contains(&parent_of(p)))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_names = names.clone();
        s.names = names;
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.nodes.retain(|id, _| live.contains(id));
        let ids: Vec<u64> = s.nodes.keys().copied().collect();
        for id in ids {
            let mode = match mode {
                CrashMode::Random => match s.below_incl(3) {
                    0 => CrashMode::DropUnsynced,
                    1 => CrashMode::TearUnsynced,
                    2 => CrashMode::TearWithGarbage,
                    _ => CrashMode::LoseRandomSectors,
                },
                m => m,
            };
            let Some(node) = s.nodes.remove(&id) else {
                continue;
            };
            let node = crash_node(&mut s, node, mode);
            s.nodes.insert(id, node);
        }
        s.write_fault = None;
        s.sync_fault = None;
    }

    /// Makes the write (or allocation) after the next `after_ops` ones fail with `fault`,
    /// having written a random prefix of its bytes. One-shot.
    pub fn fail_write_after(&self, after_ops: u64, fault: SimFault) {
        self.state.lock().write_fault = Some(Countdown {
            remaining_ops: after_ops,
            fault,
        });
    }

    /// Makes the `sync_data` after the next `after_ops` ones fail with `fault` without
    /// syncing anything. One-shot.
    pub fn fail_sync_after(&self, after_ops: u64, fault: SimFault) {
        self.state.lock().sync_fault = Some(Countdown {
            remaining_ops: after_ops,
            fault,
        });
    }

    /// XORs the byte at `offset` of `path` with `mask`, in both the current and the
    /// synced image (media corruption survives a crash).
    pub fn flip_byte(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        self.mutate_file(path, |bytes| {
            if let Some(b) = usize::try_from(offset).ok().and_then(|o| bytes.get_mut(o)) {
                *b ^= mask;
            }
        })
    }

    /// Makes the file's current content durable, then applies `f` to it (both images):
    /// the hook for zeroing ranges, truncating, appending garbage.
    pub fn mutate_file(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut s = self.state.lock();
        let id = s.node_id(path)?;
        let node = s.nodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        f(&mut node.current);
        node.synced = node.current.clone();
        node.pending.clear();
        Ok(())
    }

    /// The current content of `path`, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let id = s.names.get(path)?;
        s.nodes.get(id).map(|n| n.current.clone())
    }

    /// How many `sync_data` calls succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().sync_count
    }

    /// How many `write_at` calls succeeded so far.
    pub fn write_count(&self) -> u64 {
        self.state.lock().write_count
    }

    fn handle(&self, id: u64, epoch: u64, readonly: bool) -> Arc<dyn FsFile> {
        Arc::new(SimFile {
            fs: self.clone(),
            id,
            epoch,
            readonly,
        })
    }
}

/// Bytes per simulated sector for [`CrashMode::LoseRandomSectors`].
const SECTOR_BYTES: u64 = 512;

fn crash_node(s: &mut State, mut node: Node, mode: CrashMode) -> Node {
    let mut image = std::mem::take(&mut node.synced);
    let pending = std::mem::take(&mut node.pending);
    if mode == CrashMode::LoseRandomSectors {
        for op in pending {
            match op {
                PendingOp::SetLen(len) => set_len_of(&mut image, len),
                PendingOp::Write { offset, bytes } => {
                    let end = offset + bytes.len() as u64;
                    let mut at = offset;
                    while at < end {
                        let sector_end = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
                        let chunk_end = sector_end.min(end);
                        if s.below_incl(1) == 0 {
                            let lo = (at - offset) as usize;
                            let hi = (chunk_end - offset) as usize;
                            write_into(&mut image, at, &bytes[lo..hi]);
                        } else if (image.len() as u64) < chunk_end {
                            // A lost sector past the old end of file reads as zeros.
                            set_len_of(&mut image, chunk_end);
                        }
                        at = chunk_end;
                    }
                }
            }
        }
        return Node {
            current: image.clone(),
            synced: image,
            pending: Vec::new(),
        };
    }
    let total: u64 = pending
        .iter()
        .map(|op| match op {
            PendingOp::Write { bytes, .. } => bytes.len() as u64,
            PendingOp::SetLen(_) => 0,
        })
        .sum();
    let mut budget = match mode {
        CrashMode::DropUnsynced => 0,
        _ if pending.is_empty() => 0,
        _ => s.below_incl(total),
    };
    let garbage = mode == CrashMode::TearWithGarbage && !pending.is_empty();
    let mut ended_at: Option<u64> = None;
    if mode != CrashMode::DropUnsynced {
        for op in pending {
            match op {
                PendingOp::SetLen(len) => {
                    if budget > 0 {
                        set_len_of(&mut image, len);
                    }
                }
                PendingOp::Write { offset, bytes } => {
                    let keep = usize::try_from(budget.min(bytes.len() as u64)).unwrap_or(0);
                    write_into(&mut image, offset, &bytes[..keep]);
                    budget -= keep as u64;
                    if keep < bytes.len() {
                        ended_at = Some(offset + keep as u64);
                        break;
                    }
                }
            }
        }
    }
    if garbage {
        if let Some(at) = ended_at {
            let n = 1 + s.below_incl(63);
            let junk: Vec<u8> = (0..n).map(|_| s.next_u64() as u8).collect();
            write_into(&mut image, at, &junk);
        }
    }
    Node {
        current: image.clone(),
        synced: image,
        pending: Vec::new(),
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let mut p = Some(dir);
        while let Some(d) = p {
            s.dirs.insert(d.to_path_buf());
            p = d.parent();
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.state.lock();
        if !s.dirs.contains(&parent_of(path)) {
            return Err(not_found(&parent_of(path)));
        }
        if s.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists", path.display()),
            ));
        }
        let id = s.next_node_id;
        s.next_node_id += 1;
        s.nodes.insert(id, Node::default());
        s.names.insert(path.to_path_buf(), id);
        let epoch = s.epoch;
        drop(s);
        Ok(self.handle(id, epoch, false))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let s = self.state.lock();
        let id = s.node_id(path)?;
        let epoch = s.epoch;
        drop(s);
        Ok(self.handle(id, epoch, false))
    }

    fn open_readonly(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let s = self.state.lock();
        let id = s.node_id(path)?;
        let epoch = s.epoch;
        drop(s);
        Ok(self.handle(id, epoch, true))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        // BTreeMap iteration is sorted by path, so names within one directory are too.
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable_names.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_names.extend(now);
        let subdirs: Vec<PathBuf> = s.dirs.iter().filter(|d| in_dir(d)).cloned().collect();
        s.durable_dirs.extend(subdirs);
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state.lock().names.contains_key(path))
    }
}

/// A handle to a simulated file.
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    id: u64,
    epoch: u64,
    readonly: bool,
}

impl SimFile {
    fn with_node<R>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.fs.state.lock();
        if s.epoch != self.epoch || !s.nodes.contains_key(&self.id) {
            return Err(dead_handle());
        }
        f(&mut s, self.id)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.readonly {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        Ok(())
    }

    fn write_op(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        self.with_node(|s, id| {
            let fault = State::take_fault(&mut s.write_fault);
            let keep = match fault {
                Some(_) => usize::try_from(s.below_incl(bytes.len() as u64)).unwrap_or(0),
                None => bytes.len(),
            };
            if keep > 0 || fault.is_none() {
                let node = s.nodes.get_mut(&id).ok_or_else(dead_handle)?;
                write_into(&mut node.current, offset, &bytes[..keep]);
                node.pending.push(PendingOp::Write {
                    offset,
                    bytes: bytes[..keep].to_vec(),
                });
            }
            match fault {
                Some(f) => Err(f.to_error()),
                None => {
                    s.write_count += 1;
                    Ok(())
                }
            }
        })
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with_node(|s, id| {
            let node = s.nodes.get(&id).ok_or_else(dead_handle)?;
            read_from(&node.current, buf, offset)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_op(offset, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_node(|s, id| {
            if let Some(f) = State::take_fault(&mut s.sync_fault) {
                return Err(f.to_error());
            }
            let node = s.nodes.get_mut(&id).ok_or_else(dead_handle)?;
            node.synced = node.current.clone();
            node.pending.clear();
            s.sync_count += 1;
            Ok(())
        })
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_node(|s, id| {
            let node = s.nodes.get_mut(&id).ok_or_else(dead_handle)?;
            set_len_of(&mut node.current, len_bytes);
            node.pending.push(PendingOp::SetLen(len_bytes));
            Ok(())
        })
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_node(|s, id| {
            if let Some(f) = State::take_fault(&mut s.write_fault) {
                return Err(f.to_error());
            }
            let node = s.nodes.get_mut(&id).ok_or_else(dead_handle)?;
            if (node.current.len() as u64) < len_bytes {
                set_len_of(&mut node.current, len_bytes);
                node.pending.push(PendingOp::SetLen(len_bytes));
            }
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_node(|s, id| {
            let node = s.nodes.get(&id).ok_or_else(dead_handle)?;
            Ok(node.current.len() as u64)
        })
    }

    fn map_readonly(&self) -> io::Result<Arc<dyn ReadView>> {
        let len = self.len()?;
        Ok(Arc::new(SimView {
            file: SimFile {
                fs: self.fs.clone(),
                id: self.id,
                epoch: self.epoch,
                readonly: true,
            },
            len,
        }))
    }
}

fn read_from(src: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let start = usize::try_from(offset).map_err(|_| super::eof())?;
    let end = start.checked_add(buf.len()).ok_or_else(super::eof)?;
    let bytes = src.get(start..end).ok_or_else(super::eof)?;
    buf.copy_from_slice(bytes);
    Ok(())
}

/// A view that reads the simulated file under its lock (no zero-copy slice).
#[derive(Debug)]
struct SimView {
    file: SimFile,
    len: u64,
}

impl ReadView for SimView {
    fn len(&self) -> u64 {
        self.len
    }

    fn as_slice(&self) -> Option<&[u8]> {
        None
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(super::eof)?;
        if end > self.len {
            return Err(super::eof());
        }
        self.file.read_at(buf, offset)
    }
}
