//! Helpers shared by the `keel` command tests: running the built binary, writing WALs
//! with `keel_wal::Wal`, and damaging them byte by byte.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_fs::StdFs;
use keel_raft::{Entry, HardState};
use keel_wal::{LogBatch, LogStore, ScanEvent, SegmentName, Wal, WalOptions, WalScanner};

/// What a `keel` run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The stdout lines parsed as JSON, one object a line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

/// Runs `keel` with `args`; fails the test if it panicked or was killed.
pub fn keel(args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("run keel");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "keel {args:?} panicked: {}",
        run.stderr
    );
    assert!(
        (0..=2).contains(&run.code),
        "keel {args:?} exited {}: {}",
        run.code,
        run.all()
    );
    run
}

/// `keel` on a path.
pub fn keel_at(args: &[&str], path: &Path) -> Run {
    let p = path.to_str().expect("utf-8 path");
    let mut all = args.to_vec();
    all.push(p);
    keel(&all)
}

/// Entries written per batch by [`make_wal`].
pub const PER_BATCH: u64 = 3;

/// Writes `batches` synced batches of [`PER_BATCH`] entries (index 1 on, term 1 for
/// the first half and 2 after) with their hard states into `data_dir/wal`, in
/// 4096-byte segments. Returns the WAL directory.
pub fn make_wal(data_dir: &Path, batches: u64) -> PathBuf {
    let dir = data_dir.join("wal");
    let opts = WalOptions {
        segment_size_bytes: 4096,
        preallocate: false,
        ..WalOptions::default()
    };
    let wal = Wal::open(StdFs::shared(), &dir, opts).expect("open wal");
    for b in 0..batches {
        let term = if b < batches / 2 { 1 } else { 2 };
        let first = b * PER_BATCH + 1;
        let entries = (first..first + PER_BATCH)
            .map(|i| {
                Entry::new(
                    term,
                    i,
                    format!("put key{i}={}", "v".repeat(90)).into_bytes(),
                )
            })
            .collect();
        let batch = LogBatch {
            entries,
            hard_state: Some(HardState {
                term,
                vote: 1,
                commit: first + PER_BATCH - 1,
            }),
            snapshot: None,
        };
        wal.write(&batch, true).expect("write");
    }
    wal.close().expect("close");
    dir
}

/// The segment files of `wal_dir`, in log order.
pub fn segments(wal_dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<SegmentName> = std::fs::read_dir(wal_dir)
        .expect("read dir")
        .filter_map(|e| SegmentName::parse(e.ok()?.file_name().to_str()?))
        .collect();
    names.sort();
    names.iter().map(|n| wal_dir.join(n.to_string())).collect()
}

/// File offsets of the intact records of a segment.
pub fn record_offsets(segment: &Path) -> Vec<(u64, u64)> {
    let dir = segment.parent().expect("parent");
    let name = SegmentName::parse(segment.file_name().and_then(|n| n.to_str()).expect("name"))
        .expect("segment name");
    let scan = WalScanner::new(StdFs::shared(), dir)
        .scan(name)
        .expect("scan");
    scan.events
        .iter()
        .filter_map(|e| match e {
            ScanEvent::Record(r) => Some((r.offset, r.end_offset)),
            ScanEvent::Damage(_) => None,
        })
        .collect()
}

/// XORs one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}

/// Zeroes `[from, to)` of a file.
pub fn zero_range(path: &Path, from: u64, to: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[from as usize..to as usize].fill(0);
    std::fs::write(path, bytes).expect("write");
}

/// Appends bytes to a file.
pub fn append(path: &Path, extra: &[u8]) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes.extend_from_slice(extra);
    std::fs::write(path, bytes).expect("write");
}

/// Every file under `dir` with its bytes, to prove a command changed nothing.
pub fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(contents(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read");
            out.insert(path, bytes);
        }
    }
    out
}
