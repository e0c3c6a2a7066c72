//! A node's process on a simulated disk: [`ProcessFs`] wraps a `keel_fs::SimFs` so a
//! crash ends the run of the process as well as the disk's unsynced writes.

use std::io;
use std::path::Path;
use std::sync::Arc;

use keel_fs::{CrashMode, FileSystem, FsFile, SimFs};
use parking_lot::RwLock;

/// One run of a node's process on its disk. A crash must also end the process: a node
/// whose disk lost power but whose threads still run would otherwise go on creating,
/// renaming and removing files on the "rebooted" disk (handles opened before the
/// crash already fail; new ones would not). [`kill`](ProcessFs::kill) crashes the
/// disk and fails every later call of this run, atomically with respect to them.
#[derive(Debug, Clone)]
pub struct ProcessFs {
    fs: SimFs,
    dead: Arc<RwLock<bool>>,
}

impl ProcessFs {
    /// A new run of a process on `fs`.
    pub fn new(fs: &SimFs) -> ProcessFs {
        ProcessFs {
            fs: fs.clone(),
            dead: Arc::new(RwLock::new(false)),
        }
    }

    /// Power loss: the disk keeps what was synced (per `mode`) and this run of the
    /// process does no more I/O.
    pub fn kill(&self, mode: CrashMode) {
        let mut dead = self.dead.write();
        *dead = true;
        self.fs.crash_with(mode);
    }

    fn live<T>(&self, op: impl FnOnce(&SimFs) -> io::Result<T>) -> io::Result<T> {
        // Held across the call, so no call straddles `kill`.
        let dead = self.dead.read();
        if *dead {
            return Err(io::Error::other("the process died in a simulated crash"));
        }
        op(&self.fs)
    }
}

impl FileSystem for ProcessFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.live(|fs| fs.create_dir_all(dir))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.live(|fs| fs.create(path))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.live(|fs| fs.open(path))
    }
    fn open_readonly(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.live(|fs| fs.open_readonly(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.live(|fs| fs.rename(from, to))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.live(|fs| fs.remove_file(path))
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.live(|fs| fs.list_dir(dir))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.live(|fs| fs.sync_dir(dir))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.live(|fs| fs.exists(path))
    }
}
