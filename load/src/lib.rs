//! keel's synced-append load generator.
//!
//! Owns: the logs under test ([`Target`]s: a raw `write` + `fdatasync` loop on a
//! preallocated file, the WAL, any `LogStore`), a loop of concurrent writers that each
//! append one entry at a time and wait until it is durable ([`run`]), what it measured
//! ([`RunResult`]) and the latency histogram both use ([`new_histogram`], [`record`]).
//! `keel bench wal`, `keel bench cluster`, `keel demo` and the criterion `wal_append`
//! bench all use it, so the command line and `cargo bench` measure the same thing.
//!
//! Must not: decide where files go (every target is created in a directory the caller
//! chose and, for the raw loop, sized by the caller), print anything, or start threads
//! other than [`run`]'s writers, which end before it returns.

#![deny(missing_docs)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_fs::StdFs;
use keel_raft::Entry;
use keel_wal::{LogBatch, LogError, LogStore, Wal, WalOptions};

/// Why a load could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file-system call of the raw loop failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The log under test failed.
    #[error("{what}: {source}")]
    Log {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: LogError,
    },
    /// An append returned before its entry was durable.
    #[error("entry {index} was acknowledged but only {durable} is durable")]
    NotDurable {
        /// The entry appended.
        index: u64,
        /// The durable index the log reported.
        durable: u64,
    },
    /// A writer thread could not be started or panicked.
    #[error("writer thread: {0}")]
    Thread(String),
    /// The requested load makes no sense (0 writers, ...).
    #[error("{0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

fn log_err(what: &'static str) -> impl FnOnce(LogError) -> LoadError {
    move |source| LoadError::Log {
        what: what.to_string(),
        source,
    }
}

/// One log under test: `append` makes one entry durable and may be called from many
/// threads at once.
pub trait Target: Send + Sync {
    /// Appends `data` as the next entry and returns once it is durable.
    fn append(&self, data: &[u8]) -> Result<(), LoadError>;
    /// fdatasync calls made since the target was created, if the target counts them.
    fn syncs(&self) -> Option<u64>;
    /// Batches (appends) written since the target was created, if counted.
    fn batches(&self) -> Option<u64> {
        None
    }
}

/// A deterministic pseudo-random payload of `len` bytes (incompressible, in case a
/// backend ever compresses).
pub fn payload(len: usize) -> Vec<u8> {
    let mut rng = keel_raft::Rng::new(0x9E37_79B9_7F4A_7C15);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// `pwrite` + `fdatasync` on a file preallocated with `fallocate` (as the WAL's
/// segments are), every append serialized behind one mutex: no group commit, one sync
/// per entry. This is one log's limit on the disk.
pub struct RawFile {
    // (file, next write offset)
    file: Mutex<(File, u64)>,
    file_bytes: u64,
    syncs: AtomicU64,
}

impl RawFile {
    /// Creates `dir/raw.log`, preallocates `file_bytes` and makes the file and its
    /// directory entry durable. Appends wrap around (overwriting) past `file_bytes`.
    pub fn create(dir: &Path, file_bytes: u64) -> Result<RawFile, LoadError> {
        if file_bytes == 0 {
            return Err(LoadError::Invalid(
                "raw file size must be at least 1 byte".into(),
            ));
        }
        let path = dir.join("raw.log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(format!("create {}", path.display())))?;
        let len = i64::try_from(file_bytes)
            .map_err(|_| LoadError::Invalid(format!("raw file size {file_bytes} is too large")))?;
        // SAFETY: fallocate reads only its integer arguments on a descriptor we own.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            return Err(LoadError::Io {
                what: format!("fallocate {} bytes for {}", file_bytes, path.display()),
                source: std::io::Error::last_os_error(),
            });
        }
        file.sync_all().map_err(io("sync the raw file"))?;
        // The file's directory entry is durable too, as the WAL's are.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("sync directory {}", dir.display())))?;
        Ok(RawFile {
            file: Mutex::new((file, 0)),
            file_bytes,
            syncs: AtomicU64::new(0),
        })
    }
}

impl Target for RawFile {
    fn append(&self, data: &[u8]) -> Result<(), LoadError> {
        // A poisoned lock means another writer panicked; its file state is still valid.
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, off) = &mut *g;
        if *off + data.len() as u64 > self.file_bytes {
            *off = 0;
        }
        file.write_all_at(data, *off).map_err(io("raw write"))?;
        file.sync_data().map_err(io("raw fdatasync"))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        *off += data.len() as u64;
        Ok(())
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.syncs.load(Ordering::Relaxed))
    }

    fn batches(&self) -> Option<u64> {
        // Every append is one batch and one sync.
        Target::syncs(self)
    }
}

/// keel's segmented WAL. Writers take the next index under a lock and release it once
/// their batch is queued ([`Wal::write_queued`]), so indexes are appended in order
/// while group commit merges concurrent appends into one write and one `fdatasync`.
pub struct WalTarget {
    wal: Wal,
    next: Mutex<u64>,
}

impl WalTarget {
    /// Opens (creating) a WAL in `dir` with `opts`; appends continue after its last
    /// index.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<WalTarget, LoadError> {
        let wal = Wal::open(StdFs::shared(), dir, opts).map_err(log_err("open the WAL"))?;
        let next = wal.last_index() + 1;
        Ok(WalTarget {
            wal,
            next: Mutex::new(next),
        })
    }

    /// Syncs and closes the WAL.
    pub fn close(self) -> Result<(), LoadError> {
        self.wal.close().map_err(log_err("close the WAL"))
    }
}

impl Target for WalTarget {
    fn append(&self, data: &[u8]) -> Result<(), LoadError> {
        let data = data.to_vec();
        // A poisoned lock means another writer panicked; the counter is still valid.
        let mut guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let index = *guard;
        *guard += 1;
        let batch = LogBatch {
            entries: vec![Entry::new(1, index, data)],
            ..LogBatch::default()
        };
        let durable = self
            .wal
            .write_queued(&batch, true, move || drop(guard))
            .map_err(log_err("WAL append"))?;
        if durable < index {
            return Err(LoadError::NotDurable { index, durable });
        }
        Ok(())
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.wal.stats().syncs)
    }

    fn batches(&self) -> Option<u64> {
        Some(self.wal.stats().batches)
    }
}

/// Any [`LogStore`] driven the portable way: an ordered, unsynced write under a lock,
/// then [`LogStore::sync`], which the store may share among concurrent writers (keel's
/// `RocksLogStore` does).
pub struct StoreTarget<L: LogStore> {
    log: L,
    next: Mutex<u64>,
    syncs_of: fn(&L) -> Option<u64>,
    batches: AtomicU64,
}

impl<L: LogStore> StoreTarget<L> {
    /// Drives `log`, whose fdatasync count `syncs_of` reads (if it can).
    pub fn new(log: L, syncs_of: fn(&L) -> Option<u64>) -> StoreTarget<L> {
        let next = log.last_index() + 1;
        StoreTarget {
            log,
            next: Mutex::new(next),
            syncs_of,
            batches: AtomicU64::new(0),
        }
    }
}

impl<L: LogStore> Target for StoreTarget<L> {
    fn append(&self, data: &[u8]) -> Result<(), LoadError> {
        let index = {
            // A poisoned lock means another writer panicked; the counter is still valid.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let index = *next;
            let batch = LogBatch {
                entries: vec![Entry::new(1, index, data.to_vec())],
                ..LogBatch::default()
            };
            self.log
                .write(&batch, false)
                .map_err(log_err("log write"))?;
            *next += 1;
            index
        };
        self.log.sync().map_err(log_err("log sync"))?;
        self.batches.fetch_add(1, Ordering::Relaxed);
        let durable = self.log.durable_index();
        if durable < index {
            return Err(LoadError::NotDurable { index, durable });
        }
        Ok(())
    }

    fn syncs(&self) -> Option<u64> {
        (self.syncs_of)(&self.log)
    }

    fn batches(&self) -> Option<u64> {
        Some(self.batches.load(Ordering::Relaxed))
    }
}

/// A one-shot start signal.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }

    // Returns once `open` was called; `run` always calls it before joining.
    fn wait(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let _open = self
            .opened
            .wait_while(open, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// How much load [`run`] generates.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent writer threads (at least 1).
    pub writers: usize,
    /// Appends in total, split as evenly as possible across the writers.
    pub entries: u64,
    /// Stop early once this much time has passed (each writer finishes its append in
    /// flight).
    pub max_duration: Option<Duration>,
}

/// What [`run`] measured.
#[derive(Debug)]
pub struct RunResult {
    /// Appends made durable.
    pub entries: u64,
    /// From the moment every writer was ready until the last append was durable.
    pub wall: Duration,
    /// Latency of every append, in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl RunResult {
    /// Appends per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.entries as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0.0–1.0), in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A latency histogram in nanoseconds with 3 significant digits, growing as needed.
pub fn new_histogram() -> Histogram<u64> {
    // sigfig 3 is within hdrhistogram's 0..=5; construction cannot fail.
    Histogram::new(3).expect("3 significant digits are valid")
}

/// Records `elapsed` in a histogram from [`new_histogram`].
pub fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    // The histogram grows to fit (saturating_record would clamp to its initial
    // bounds instead); growing fails only past 2^63 ns, which no latency reaches.
    let _ = h.record(ns);
}

/// Appends of writer `w` when `entries` are split across `writers`.
pub fn share(entries: u64, writers: usize, w: usize) -> u64 {
    let n = writers as u64;
    entries / n + u64::from((w as u64) < entries % n)
}

/// Runs `load.writers` threads that each append `data` one entry at a time, waiting
/// until each is durable. `done` counts finished appends as they happen (for a progress
/// display). The first error stops every writer and is returned.
///
/// # Example
///
/// Four writers appending 200 entries of 256 bytes to keel's WAL:
///
/// ```
/// use std::sync::atomic::AtomicU64;
/// use keel_load::{payload, run, Load, WalTarget};
/// use keel_wal::WalOptions;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let opts = WalOptions { segment_size_bytes: 1 << 20, ..WalOptions::default() };
/// let target = WalTarget::open(dir.path(), opts)?;
/// let load = Load { writers: 4, entries: 200, max_duration: None };
/// let done = AtomicU64::new(0); // a progress bar could poll this
///
/// let result = run(&target, load, &payload(256), &done)?;
/// assert_eq!(result.entries, 200);
/// assert_eq!(result.latency_ns.len(), 200);
/// println!("{:.0} appends/s, p99 {:.0} µs", result.ops_per_sec(), result.latency_us(0.99));
/// target.close()?;
/// # Ok(())
/// # }
/// ```
pub fn run(
    target: &dyn Target,
    load: Load,
    data: &[u8],
    done: &AtomicU64,
) -> Result<RunResult, LoadError> {
    if load.writers == 0 {
        return Err(LoadError::Invalid("at least one writer is needed".into()));
    }
    // The writers start together once all are spawned; a failed spawn opens the gate
    // with `failed` set, so the ones already started end at once.
    let gate = Gate::default();
    let failed = AtomicBool::new(false);
    let deadline_after = load.max_duration;
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(load.writers);
        for w in 0..load.writers {
            let quota = share(load.entries, load.writers, w);
            let (gate, failed) = (&gate, &failed);
            let spawned = std::thread::Builder::new()
                .name(format!("keel-load-{w}"))
                .spawn_scoped(s, move || -> Result<Histogram<u64>, LoadError> {
                    let mut lat = new_histogram();
                    gate.wait();
                    let deadline = deadline_after.map(|d| Instant::now() + d);
                    for _ in 0..quota {
                        if failed.load(Ordering::Relaxed)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
                        let t = Instant::now();
                        if let Err(e) = target.append(data) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        record(&mut lat, t.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(lat)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    gate.open();
                    return Err(LoadError::Thread(e.to_string()));
                }
            }
        }
        gate.open();
        let t0 = Instant::now();
        let mut latency_ns = new_histogram();
        let mut first_error = None;
        for h in handles {
            match h.join() {
                Ok(Ok(lat)) => {
                    // Same bounds (auto-resizing), so adding cannot fail.
                    let _ = latency_ns.add(&lat);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(LoadError::Thread("a writer panicked".into()));
                }
            }
        }
        let wall = t0.elapsed();
        match first_error {
            Some(e) => Err(e),
            None => Ok(RunResult {
                entries: latency_ns.len(),
                wall,
                latency_ns,
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (entries, writers) in [(10, 3), (3, 10), (256, 256), (1000, 7)] {
            let total: u64 = (0..writers).map(|w| share(entries, writers, w)).sum();
            assert_eq!(total, entries);
        }
    }

    #[test]
    fn raw_and_wal_make_every_entry_durable() {
        let dir = tempfile::tempdir().unwrap();
        let raw = RawFile::create(dir.path(), 4096).unwrap();
        let done = AtomicU64::new(0);
        let load = Load {
            writers: 3,
            entries: 20,
            max_duration: None,
        };
        let r = run(&raw, load, &payload(300), &done).unwrap();
        assert_eq!((r.entries, done.load(Ordering::Relaxed)), (20, 20));
        assert_eq!(Target::syncs(&raw), Some(20));

        let wal = WalTarget::open(&dir.path().join("wal"), WalOptions::default()).unwrap();
        let r = run(&wal, load, &payload(64), &AtomicU64::new(0)).unwrap();
        assert_eq!(r.entries, 20);
        assert!(wal.syncs().unwrap() >= 1);
        assert_eq!(wal.wal.last_index(), 20);
    }
}

// The README's example, run as a doc-test so that the published page cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
