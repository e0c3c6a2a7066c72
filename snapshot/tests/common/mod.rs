//! Shared test helpers: a file system wrapper that "crashes" (fails every mutating call)
//! after a chosen number of them, and sample state.

#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_fs::{FileSystem, FsFile, ReadView};
use keel_raft::{ConfState, SnapshotMetadata};
use keel_snapshot::memory::Map;

/// Counts mutating calls (create, write, sync, rename, remove, set_len, allocate,
/// directory sync) and fails the `limit`-th one and every later one, as if the process
/// died there. Reads keep working so the dying code path can run to its end.
#[derive(Debug)]
pub struct CrashFs {
    inner: Arc<dyn FileSystem>,
    state: Arc<Counter>,
}

#[derive(Debug)]
pub struct Counter {
    ops: AtomicU64,
    limit: u64,
}

impl Counter {
    fn step(&self) -> io::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.limit {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }
}

impl CrashFs {
    pub fn new(inner: Arc<dyn FileSystem>, limit: u64) -> Arc<CrashFs> {
        Arc::new(CrashFs {
            inner,
            state: Arc::new(Counter {
                ops: AtomicU64::new(0),
                limit,
            }),
        })
    }

    /// Mutating calls attempted so far.
    pub fn ops(&self) -> u64 {
        self.state.ops.load(Ordering::SeqCst)
    }

    fn wrap(&self, f: Arc<dyn FsFile>) -> Arc<dyn FsFile> {
        Arc::new(CrashFile {
            inner: f,
            state: Arc::clone(&self.state),
        })
    }
}

impl FileSystem for CrashFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.state.step()?;
        Ok(self.wrap(self.inner.create(path)?))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        Ok(self.wrap(self.inner.open(path)?))
    }
    fn open_readonly(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        Ok(self.wrap(self.inner.open_readonly(path)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.step()?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state.step()?;
        self.inner.remove_file(path)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.state.step()?;
        self.inner.sync_dir(dir)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Arc<dyn FsFile>,
    state: Arc<Counter>,
}

impl FsFile for CrashFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.state.step()?;
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.state.step()?;
        self.inner.sync_data()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.state.step()?;
        self.inner.set_len(len_bytes)
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        self.state.step()?;
        self.inner.allocate(len_bytes)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn map_readonly(&self) -> io::Result<Arc<dyn ReadView>> {
        self.inner.map_readonly()
    }
}

pub fn meta(term: u64, index: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
        index,
        term,
    }
}

/// A map whose contents depend on `seed`, about `records * 40` bytes.
pub fn sample_map(seed: u64, records: u64) -> Map {
    (0..records)
        .map(|i| {
            let key = format!("key-{i:06}").into_bytes();
            let value = format!("value-{seed}-{i}-{}", "x".repeat((i % 50) as usize));
            (key, value.into_bytes())
        })
        .collect()
}
