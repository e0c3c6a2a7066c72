//! A minimal logger: one line a record on stderr, with a UTC timestamp, the level and
//! the thread name, filtered by `--log-level`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let thread = std::thread::current();
        let line = format!(
            "{h:02}:{m:02}:{s:02}.{:03} {:<5} [{}] {}\n",
            now.subsec_millis(),
            record.level(),
            thread.name().unwrap_or("-"),
            record.args()
        );
        // One write per line so lines from different threads do not interleave;
        // a closed stderr is not worth dying for.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger at `level` (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn init(level: &str) -> Result<(), String> {
    let level: log::LevelFilter = level.parse().map_err(|_| {
        format!("--log-level {level:?}: use error, warn, info, debug, trace or off")
    })?;
    log::set_boxed_logger(Box::new(StderrLogger { level }))
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    log::set_max_level(level);
    Ok(())
}
