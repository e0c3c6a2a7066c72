//! A copy-on-write view of a directory for dry runs: reads come from the real files
//! (opened read-only), and every change (creating, writing, truncating, renaming,
//! removing) lands in memory and is forgotten when the view is dropped.
//!
//! Opening a [`keel_wal::Wal`] through it runs the WAL's own recovery, tail cut included,
//! without writing a byte or taking a lock; that is how `verify` and `stat` learn
//! exactly what opening the log (or `keel wal repair`) would do.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_fs::{FileSystem, FsFile, ReadView};

/// The copy-on-write file system; see the module docs.
#[derive(Debug)]
pub struct OverlayFs {
    real: Arc<dyn FileSystem>,
    state: Mutex<OverlayState>,
}

#[derive(Debug, Default)]
struct OverlayState {
    /// Files opened or created through the overlay, by path.
    files: HashMap<PathBuf, Arc<CowFile>>,
    /// Real files removed or renamed away in the overlay.
    hidden: HashSet<PathBuf>,
}

impl OverlayFs {
    /// An overlay over `real`.
    pub fn new(real: Arc<dyn FileSystem>) -> OverlayFs {
        OverlayFs {
            real,
            state: Mutex::new(OverlayState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, OverlayState> {
        // The state is a pair of maps updated in single steps; a panic elsewhere
        // cannot leave them half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The overlay's handle for `path`, opening the real file read-only on first use.
    fn handle(&self, st: &mut OverlayState, path: &Path) -> io::Result<Arc<CowFile>> {
        if let Some(f) = st.files.get(path) {
            return Ok(f.clone());
        }
        if st.hidden.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "removed in the overlay",
            ));
        }
        let real = self.real.open_readonly(path)?;
        let file = Arc::new(CowFile {
            content: Mutex::new(Content::Real(real)),
        });
        st.files.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }
}

impl FileSystem for OverlayFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ))
        }
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        if self.exists(path)? {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let file = Arc::new(CowFile {
            content: Mutex::new(Content::Mem(Vec::new())),
        });
        self.state().files.insert(path.to_path_buf(), file.clone());
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let mut st = self.state();
        Ok(self.handle(&mut st, path)?)
    }

    fn open_readonly(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.open(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        let file = self.handle(&mut st, from)?;
        st.files.remove(from);
        st.hidden.insert(from.to_path_buf());
        st.files.insert(to.to_path_buf(), file);
        st.hidden.insert(to.to_path_buf());
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        let known = st.files.remove(path).is_some();
        if !known && (st.hidden.contains(path) || !self.real.exists(path)?) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        }
        st.hidden.insert(path.to_path_buf());
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state();
        let mut names: BTreeSet<String> = self
            .real
            .list_dir(dir)?
            .into_iter()
            .filter(|n| !st.hidden.contains(&dir.join(n)))
            .collect();
        for path in st.files.keys() {
            if path.parent() == Some(dir) {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    names.insert(name.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.state();
        if st.files.contains_key(path) {
            return Ok(true);
        }
        if st.hidden.contains(path) {
            return Ok(false);
        }
        self.real.exists(path)
    }
}

/// A file that reads through to the real one until something changes it, then lives
/// in memory.
struct CowFile {
    content: Mutex<Content>,
}

enum Content {
    Real(Arc<dyn FsFile>),
    Mem(Vec<u8>),
}

impl fmt::Debug for CowFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CowFile")
    }
}

impl CowFile {
    fn content(&self) -> MutexGuard<'_, Content> {
        self.content.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The in-memory bytes, copying the real file in on first use.
    fn with_mem<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> io::Result<R> {
        let mut c = self.content();
        if let Content::Real(real) = &*c {
            let len = usize::try_from(real.len()?)
                .map_err(|_| io::Error::other("file too large to copy into memory"))?;
            let mut bytes = vec![0; len];
            real.read_at(&mut bytes, 0)?;
            *c = Content::Mem(bytes);
        }
        match &mut *c {
            Content::Mem(bytes) => Ok(f(bytes)),
            Content::Real(_) => Err(io::Error::other("copy-on-write failed")),
        }
    }
}

impl FsFile for CowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &*self.content() {
            Content::Real(real) => real.read_at(buf, offset),
            Content::Mem(bytes) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|start| bytes.get(start..start.checked_add(buf.len())?))
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")
                    })?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("offset too large"))?;
        self.with_mem(|bytes| {
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(buf);
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let len = usize::try_from(len_bytes).map_err(|_| io::Error::other("length too large"))?;
        self.with_mem(|bytes| bytes.resize(len, 0))
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        let len = usize::try_from(len_bytes).map_err(|_| io::Error::other("length too large"))?;
        self.with_mem(|bytes| {
            if bytes.len() < len {
                bytes.resize(len, 0);
            }
        })
    }

    fn len(&self) -> io::Result<u64> {
        match &*self.content() {
            Content::Real(real) => real.len(),
            Content::Mem(bytes) => Ok(bytes.len() as u64),
        }
    }

    fn map_readonly(&self) -> io::Result<Arc<dyn ReadView>> {
        match &*self.content() {
            Content::Real(real) => real.map_readonly(),
            Content::Mem(bytes) => Ok(Arc::new(MemView(bytes.clone().into()))),
        }
    }
}

/// A frozen copy of an in-memory file.
#[derive(Debug)]
struct MemView(Arc<[u8]>);

impl ReadView for MemView {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_fs::StdFs;

    #[test]
    fn changes_stay_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, b"hello world").expect("write");
        let fs = OverlayFs::new(StdFs::shared());
        let f = fs.open(&path).expect("open");
        f.set_len(5).expect("set_len");
        f.allocate(8).expect("allocate");
        let mut buf = [1u8; 8];
        f.read_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"hello\0\0\0");
        let copy = dir.path().join("b.tmp");
        let g = fs.create(&copy).expect("create");
        g.write_at(b"xy", 0).expect("write_at");
        fs.rename(&copy, &dir.path().join("b")).expect("rename");
        fs.remove_file(&path).expect("remove");
        assert_eq!(
            fs.list_dir(dir.path()).expect("list"),
            vec!["b".to_string()]
        );
        // Nothing reached the disk.
        assert_eq!(std::fs::read(&path).expect("read back"), b"hello world");
        assert!(!dir.path().join("b").exists());
    }
}
