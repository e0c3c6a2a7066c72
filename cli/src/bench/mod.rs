//! `keel bench wal` and `keel bench cluster`: what they share — the benchmark
//! directory (an existing empty one, a new one, or a temporary one), the progress bar
//! on a terminal, and the human table of results.

pub mod cluster;
pub mod svg;
pub mod wal;

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::{CliError, Result};

/// One run's results; the JSON object of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct WalRow {
    /// `raw`, `wal` or `rocksdb`.
    pub backend: &'static str,
    /// Concurrent writers.
    pub writers: usize,
    /// Entries made durable.
    pub entries: u64,
    /// Bytes per entry.
    pub size: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Entries per second.
    pub ops_per_sec: f64,
    /// Entry payload bytes per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// fdatasync calls made during the run.
    pub syncs: u64,
    /// Entries per fdatasync.
    pub entries_per_sync: f64,
    /// Append latency percentiles, in microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// CPU time of this process during the run ÷ wall time, in percent (200 = two
    /// cores busy): how close the run came to being CPU-bound.
    pub cpu_percent: f64,
    /// Where the log was written.
    pub dir: String,
}

/// Where a benchmark writes: the directory and, when none was given, the temporary
/// directory that is removed when this is dropped.
pub struct BenchDir {
    /// The directory to write in.
    pub path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl BenchDir {
    /// `dir` if given: an existing empty directory, or a new one whose parent exists;
    /// otherwise a fresh temporary directory.
    pub fn prepare(dir: Option<&Path>) -> Result<BenchDir> {
        let Some(dir) = dir else {
            let temp = tempfile::Builder::new()
                .prefix("keel-")
                .tempdir()
                .map_err(|e| CliError::io(std::env::temp_dir(), e))?;
            return Ok(BenchDir {
                path: temp.path().to_path_buf(),
                _temp: Some(temp),
            });
        };
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(CliError::Usage(format!(
                    "--dir {} is a file; pass an empty directory (or a new one to create)",
                    dir.display()
                )))
            }
            Ok(_) => {
                let mut entries = fs::read_dir(dir).map_err(|e| CliError::io(dir, e))?;
                if entries.next().is_some() {
                    return Err(CliError::Usage(format!(
                        "--dir {} is not empty; pass an empty directory so no earlier data is \
                         overwritten or measured",
                        dir.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = dir
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    return Err(CliError::Usage(format!(
                        "--dir {}: its parent {} does not exist; create it first",
                        dir.display(),
                        parent.display()
                    )));
                }
                fs::create_dir(dir).map_err(|e| CliError::io(dir, e))?;
            }
            Err(e) => return Err(CliError::io(dir, e)),
        }
        Ok(BenchDir {
            path: dir.to_path_buf(),
            _temp: None,
        })
    }

    /// Whether the directory is removed at the end.
    pub fn is_temporary(&self) -> bool {
        self._temp.is_some()
    }
}

/// A progress bar on stderr, shown only when stderr is a terminal and the output is
/// not JSON; quiet otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
}

/// How often the bar is redrawn from the shared counter.
pub const PROGRESS_TICK: Duration = Duration::from_millis(100);

impl Progress {
    /// A bar of `total` steps labelled `label`.
    pub fn new(total: u64, label: &str, json: bool) -> Progress {
        Progress::with_template(
            total,
            label,
            json,
            "{prefix:>18} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        )
    }

    fn with_template(total: u64, label: &str, json: bool, template: &str) -> Progress {
        let show = !json && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        Progress { bar }
    }

    /// Shows `done` steps.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `work` on a scoped thread while the bar shows `position()`; returns its result.
pub fn with_progress<T: Send>(
    progress: &Progress,
    position: impl Fn() -> u64,
    work: impl FnOnce() -> T + Send,
) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(work);
        // Bounded by `work` itself: the loop ends when it returns.
        while !handle.is_finished() {
            progress.set(position());
            std::thread::sleep(PROGRESS_TICK);
        }
        progress.set(position());
        match handle.join() {
            Ok(v) => v,
            // A panic in the measured work is a bug; show it as the panic it was.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A bar that fills over `duration`, and its position: tenths of a second elapsed
/// since `started`.
pub fn timed_progress(duration: Duration, label: &str, json: bool) -> Progress {
    let template = format!(
        "{{prefix:>18}} [{{bar:30}}] {{elapsed}} of {:.0}s",
        duration.as_secs_f64().ceil()
    );
    Progress::with_template(
        (duration.as_secs_f64() * 10.0).ceil() as u64,
        label,
        json,
        &template,
    )
}

/// Tenths of a second since `started`, for [`timed_progress`].
pub fn tenths_since(started: std::time::Instant) -> u64 {
    (started.elapsed().as_secs_f64() * 10.0) as u64
}

/// CPU time (user + system) this process used so far, all threads together.
pub fn cpu_time() -> Duration {
    // SAFETY: `rusage` is a C struct of integers only, for which all-zero bytes are a
    // valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the struct we pass, which is ours and outlives
    // the call; RUSAGE_SELF needs no other argument.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time used since `before`, as a percentage of `wall` (200 = two cores busy).
pub fn cpu_percent(before: Duration, wall: Duration) -> f64 {
    let used = cpu_time().saturating_sub(before);
    round1(used.as_secs_f64() / wall.as_secs_f64().max(1e-9) * 100.0)
}

/// Parses a `--size` and checks it against the largest entry the log accepts.
pub fn check_size(size: usize) -> Result<()> {
    const MAX: usize = 16 << 20;
    if size == 0 || size > MAX {
        return Err(CliError::Usage(format!(
            "--size {size} is out of range; pass 1..={MAX} bytes"
        )));
    }
    Ok(())
}

/// A right-aligned text table: a header and rows, columns as wide as their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A number with no decimals for big values, one or two for small ones.
pub fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Rounds to 0.1 (for JSON: enough precision, short lines).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["backend", "ops/s"],
            &[
                vec!["wal".into(), "12345".into()],
                vec!["raw".into(), "7".into()],
            ],
        );
        assert_eq!(t, ["backend  ops/s", "wal      12345", "raw          7"]);
    }

    #[test]
    fn an_existing_non_empty_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(BenchDir::prepare(Some(d.path())).is_ok());
        fs::write(d.path().join("x"), b"x").unwrap();
        assert!(matches!(
            BenchDir::prepare(Some(d.path())),
            Err(CliError::Usage(_))
        ));
        let missing_parent = d.path().join("no/such");
        assert!(matches!(
            BenchDir::prepare(Some(&missing_parent)),
            Err(CliError::Usage(_))
        ));
        let new = d.path().join("new");
        assert_eq!(BenchDir::prepare(Some(&new)).unwrap().path, new);
        assert!(new.is_dir());
    }
}
