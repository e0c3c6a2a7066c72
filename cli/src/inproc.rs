//! A cluster of keel nodes inside this process (the engine's `InProcessNetwork`, each
//! node on the real file system with fsync on), for `keel bench cluster` and
//! `keel demo`: start, stop without warning (drop the `Db`: its threads end, nothing
//! is handed over; not a crash, see `stop_node`) and restart nodes, find the leader, and
//! read metrics.
//!
//! Callers borrow a node as an `Arc<Db>` for one request at a time; [`InProcCluster::stop_node`]
//! waits until no request holds the node any more, so a node is never opened twice on
//! one data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::transport::InProcessNetwork;
use keel::{Config, Db, Role};
use parking_lot::RwLock;

use crate::error::{CliError, Result};

/// Polling interval of every wait here.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `f` every [`POLL`] until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Nodes `1..=n` in one process.
pub struct InProcCluster {
    net: Arc<InProcessNetwork>,
    dir: PathBuf,
    ids: Vec<u64>,
    nodes: RwLock<BTreeMap<u64, Arc<Db>>>,
}

fn engine(context: String) -> impl FnOnce(keel::Error) -> CliError {
    move |source| CliError::Engine { context, source }
}

/// Longest a stop waits for requests in flight on the node to finish.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl InProcCluster {
    /// Starts nodes `1..=n` with data directories `dir/node-<id>`.
    pub fn start(dir: &Path, n: u64) -> Result<InProcCluster> {
        let c = InProcCluster {
            net: Arc::new(InProcessNetwork::new(1)),
            dir: dir.to_path_buf(),
            ids: (1..=n).collect(),
            nodes: RwLock::new(BTreeMap::new()),
        };
        for id in 1..=n {
            c.open(id)?;
        }
        Ok(c)
    }

    /// Node ids, running or not.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The data directory of node `id`.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn config(&self, id: u64) -> Config {
        let mut c = Config::cluster(id, self.ids.clone(), self.node_dir(id), self.net.clone());
        // 20 ms ticks, elections after 0.5-1 s of silence: quick failover, yet a busy
        // 2-core machine does not make leaders flap.
        c.tick_ms = 20;
        c.election_ticks = 25;
        c.heartbeat_ticks = 3;
        c.fsync = true;
        c
    }

    /// Opens (recovering) node `id`; returns it.
    pub fn open(&self, id: u64) -> Result<Arc<Db>> {
        if self.nodes.read().contains_key(&id) {
            return Err(CliError::Usage(format!("node {id} is already running")));
        }
        let db =
            Arc::new(Db::open(self.config(id)).map_err(engine(format!("cannot start node {id}")))?);
        self.nodes.write().insert(id, Arc::clone(&db));
        Ok(db)
    }

    /// Node `id`, if it runs.
    pub fn node(&self, id: u64) -> Option<Arc<Db>> {
        self.nodes.read().get(&id).cloned()
    }

    /// Every running node.
    pub fn running(&self) -> Vec<Arc<Db>> {
        self.nodes.read().values().cloned().collect()
    }

    /// The node that says it leads (the one with the highest term if two do).
    pub fn leader(&self) -> Option<Arc<Db>> {
        self.running()
            .into_iter()
            .map(|db| (db.status(), db))
            .filter(|(st, _)| st.role == Role::Leader)
            .max_by_key(|(st, _)| st.term)
            .map(|(_, db)| db)
    }

    /// The leader every running node agrees on, with its term, once there is one.
    pub fn wait_leader(&self, timeout: Duration) -> Option<(u64, u64)> {
        wait_until(timeout, || {
            let statuses: Vec<_> = self.running().iter().map(|db| db.status()).collect();
            let first = statuses.first()?.leader?;
            let agreed = statuses.iter().all(|s| s.leader == Some(first));
            let lead = statuses
                .iter()
                .find(|s| s.id == first && s.role == Role::Leader)?;
            agreed.then_some((first, lead.term))
        })
    }

    /// Stops node `id` without warning by dropping its `Db`: its threads end (the
    /// persist stage finishing the writes already queued) and it leaves the network,
    /// with no leadership hand-over. Not a crash: nothing unsynced is lost, but
    /// everything it acknowledged was synced anyway. Waits for requests in flight on it
    /// to finish first.
    pub fn stop_node(&self, id: u64) -> Result<()> {
        let Some(mut db) = self.nodes.write().remove(&id) else {
            return Err(CliError::Usage(format!("node {id} is not running")));
        };
        let deadline = Instant::now() + STOP_WAIT;
        // Bounded by the deadline; every request on the node has a shorter timeout.
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    drop(db);
                    return Ok(());
                }
                Err(shared) if Instant::now() < deadline => {
                    db = shared;
                    std::thread::sleep(POLL);
                }
                Err(shared) => {
                    // Put it back: reopening its directory now would run it twice.
                    self.nodes.write().insert(id, shared);
                    return Err(CliError::Usage(format!(
                        "node {id} is still busy after {} s; not stopping it",
                        STOP_WAIT.as_secs()
                    )));
                }
            }
        }
    }

    /// Waits until every running node applied everything any of them knows committed;
    /// returns that index.
    pub fn wait_converged(&self, timeout: Duration) -> Option<u64> {
        let target = self
            .running()
            .iter()
            .map(|db| db.status().commit_index)
            .max()
            .unwrap_or(0);
        wait_until(timeout, || {
            self.running()
                .iter()
                .all(|db| db.status().applied_index >= target)
                .then_some(target)
        })
    }

    /// The sum over running nodes of the metric `name` (a counter, gauge or a
    /// histogram's `_count`), read from their Prometheus text.
    pub fn metric_sum(&self, name: &str) -> f64 {
        self.running()
            .iter()
            .map(|db| metric_value(&db.metrics_text(), name))
            .sum()
    }

    /// Closes every node cleanly.
    pub fn close(&self) -> Result<()> {
        let nodes: Vec<(u64, Arc<Db>)> = std::mem::take(&mut *self.nodes.write())
            .into_iter()
            .collect();
        let mut first = Ok(());
        for (id, db) in nodes {
            if let Err(e) = db.close() {
                if first.is_ok() {
                    first = Err(CliError::Engine {
                        context: format!("node {id} did not close cleanly"),
                        source: e,
                    });
                }
            }
        }
        first
    }
}

/// The value of the first sample of `name` (labels ignored) in Prometheus text; 0 if
/// absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_found_by_exact_name() {
        let text = "# HELP x\nkeel_a_count{node=\"1\"} 12\nkeel_a_count_more 3\nkeel_b 4.5\n";
        assert_eq!(metric_value(text, "keel_a_count"), 12.0);
        assert_eq!(metric_value(text, "keel_b"), 4.5);
        assert_eq!(metric_value(text, "keel_c"), 0.0);
    }
}
