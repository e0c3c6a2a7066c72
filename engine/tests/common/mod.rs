//! Helpers shared by the engine's integration tests: fast timing and an in-process
//! cluster that can stop and restart nodes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::transport::InProcessNetwork;
use keel::{Config, Db, Role};

/// Timing for tests: 10 ms ticks, heartbeats every 20 ms.
pub fn fast(mut c: Config) -> Config {
    c.tick_ms = 10;
    // 200-400 ms elections: short, yet a busy 2-core machine running the whole suite
    // in parallel does not make leaders flap.
    c.election_ticks = 20;
    c.heartbeat_ticks = 2;
    c.request_timeout_ms = 5_000;
    c.wal_segment_size_bytes = 1 << 20;
    c
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An in-process cluster of nodes `1..=n`, each with its own data directory.
pub struct Cluster {
    // Declared first so the nodes stop before their directories are removed.
    pub dbs: BTreeMap<u64, Db>,
    pub net: Arc<InProcessNetwork>,
    pub dir: tempfile::TempDir,
    pub ids: Vec<u64>,
    pub tweak: fn(Config) -> Config,
}

fn identity(c: Config) -> Config {
    c
}

impl Cluster {
    pub fn new(n: u64) -> Cluster {
        Cluster::with(n, identity)
    }

    pub fn with(n: u64, tweak: fn(Config) -> Config) -> Cluster {
        let mut c = Cluster {
            net: Arc::new(InProcessNetwork::new(7)),
            dir: tempfile::tempdir().expect("tempdir"),
            ids: (1..=n).collect(),
            dbs: BTreeMap::new(),
            tweak,
        };
        for id in 1..=n {
            c.start(id);
        }
        c
    }

    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn config(&self, id: u64) -> Config {
        let c = Config::cluster(id, self.ids.clone(), self.node_dir(id), self.net.clone());
        (self.tweak)(fast(c))
    }

    pub fn start(&mut self, id: u64) {
        let db = Db::open(self.config(id)).expect("open node");
        self.dbs.insert(id, db);
    }

    /// Stops node `id` (its threads are joined), keeping its data directory.
    pub fn stop(&mut self, id: u64) {
        if let Some(db) = self.dbs.remove(&id) {
            db.close().expect("close");
        }
    }

    /// Drops node `id` without a clean close (its threads are still joined), as after
    /// a crash; errors of a node that already died are ignored.
    pub fn kill(&mut self, id: u64) {
        self.dbs.remove(&id);
    }

    pub fn db(&self, id: u64) -> &Db {
        &self.dbs[&id]
    }

    /// The leader every running node agrees on, once there is one.
    pub fn wait_leader(&self) -> u64 {
        wait_until(Duration::from_secs(10), || {
            let leaders: Vec<Option<u64>> =
                self.dbs.values().map(|db| db.status().leader).collect();
            let first = leaders.first().copied().flatten()?;
            let agreed = leaders.iter().all(|l| *l == Some(first));
            let leads = self
                .dbs
                .get(&first)
                .is_some_and(|db| db.status().role == Role::Leader);
            (agreed && leads).then_some(first)
        })
        .expect("no leader elected within 10 s")
    }

    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.dbs
            .keys()
            .copied()
            .filter(|&id| id != leader)
            .collect()
    }

    /// Waits until every running node applied everything any of them knows committed.
    pub fn wait_converged(&self) {
        let target = self
            .dbs
            .values()
            .map(|db| db.status().commit_index)
            .max()
            .unwrap_or(0);
        self.wait_applied(target);
    }

    /// Waits until every running node has applied at least `index`.
    pub fn wait_applied(&self, index: u64) {
        wait_until(Duration::from_secs(10), || {
            self.dbs
                .values()
                .all(|db| db.status().applied_index >= index)
                .then_some(())
        })
        .unwrap_or_else(|| {
            let st: Vec<_> = self.dbs.values().map(|d| d.status()).collect();
            panic!("not every node applied {index}: {st:#?}")
        });
    }
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

pub fn value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

pub fn single(dir: &Path) -> Config {
    fast(Config::single_node(dir))
}

pub mod linearizable;
pub mod sim;
