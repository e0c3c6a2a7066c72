//! The background thread that creates and allocates the next segment file ahead of
//! time, so that rotating to a new segment never waits for file creation or block
//! allocation (etcd's "file pipeline").
//!
//! Files are created under a temporary `*.prealloc` name; the writer gives one its real
//! name (which includes its first index, unknown until then) when it rotates. Leftover
//! `*.prealloc` files hold no data and are deleted when the log is opened. They are
//! never directory-synced: losing one in a crash loses nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use keel_fs::{FileSystem, FsFile};

use crate::segment::PREALLOC_SUFFIX;

/// A preallocated file ready to become a segment.
pub(crate) type Prepared = (PathBuf, Arc<dyn FsFile>);

/// Owner of the preallocation thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct Preallocator {
    rx: Option<Receiver<io::Result<Prepared>>>,
    thread: Option<JoinHandle<()>>,
}

impl Preallocator {
    /// Starts a thread keeping one file of `segment_size_bytes` ready in `dir`.
    pub fn spawn(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        segment_size_bytes: u64,
    ) -> io::Result<Preallocator> {
        // A rendezvous channel: the thread prepares exactly one file, then blocks until
        // the writer takes it (or the log is dropped).
        let (tx, rx) = crossbeam_channel::bounded(0);
        let thread = std::thread::Builder::new()
            .name("keel-wal-prealloc".into())
            .spawn(move || run(fs.as_ref(), &dir, segment_size_bytes, tx))?;
        Ok(Preallocator {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// A ready file if one is waiting; `None` if the thread is still preparing it.
    pub fn take(&self) -> Option<io::Result<Prepared>> {
        self.rx.as_ref()?.try_recv().ok()
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        // Disconnecting makes the thread's pending `send` fail, which ends it.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Creates a temporary file in `dir` with `len_bytes` allocated; `tag` makes the name
/// unique among this process's files.
pub(crate) fn create_allocated(
    fs: &dyn FileSystem,
    dir: &Path,
    tag: &str,
    len_bytes: u64,
) -> io::Result<Prepared> {
    let path = dir.join(format!("{tag}{PREALLOC_SUFFIX}"));
    if fs.exists(&path)? {
        fs.remove_file(&path)?;
    }
    let file = fs.create(&path)?;
    if let Err(e) = file.allocate(len_bytes) {
        let _ = fs.remove_file(&path);
        return Err(e);
    }
    Ok((path, file))
}

fn run(fs: &dyn FileSystem, dir: &Path, len_bytes: u64, tx: Sender<io::Result<Prepared>>) {
    let mut counter: u64 = 0;
    loop {
        counter += 1;
        let prepared = create_allocated(fs, dir, &format!("bg-{counter:016x}"), len_bytes);
        let path = prepared.as_ref().ok().map(|(p, _)| p.clone());
        let failed = prepared.is_err();
        if tx.send(prepared).is_err() {
            // The log is gone; the file it never took is garbage.
            if let Some(p) = path {
                let _ = fs.remove_file(&p);
            }
            return;
        }
        if failed {
            // The writer falls back to creating files itself and will see the same
            // error if it persists; don't spin on a failing file system.
            return;
        }
    }
}
