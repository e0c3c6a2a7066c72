//! A cluster whose nodes each write to their own simulated file system
//! (`keel_fs::SimFs`), so a node can crash the way a machine does: its unsynced
//! writes are dropped or torn, its threads stop, and it restarts from what its disk
//! kept. Shared between threads (clients, a nemesis) through `&SimCluster`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::transport::InProcessNetwork;
use keel::{Config, Db, Role};
use keel_fs::{CrashMode, FileSystem, FsFile, SimFs};
use parking_lot::{Mutex, RwLock};

use super::{fast, wait_until};

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

/// Where every node keeps its data on its own file system.
pub const DATA_DIR: &str = "/keel";

pub struct SimCluster {
    pub net: Arc<InProcessNetwork>,
    pub ids: Vec<u64>,
    pub fs: BTreeMap<u64, SimFs>,
    nodes: Mutex<BTreeMap<u64, (Db, ProcessFs)>>,
    seed: u64,
    tweak: Tweak,
}

/// Adjusts every node's configuration (after the fast test timings are applied).
pub type Tweak = Arc<dyn Fn(Config) -> Config + Send + Sync>;

impl SimCluster {
    /// Nodes `1..=n`, all started.
    pub fn new(n: u64, seed: u64, tweak: Tweak) -> SimCluster {
        SimCluster::with_ids((1..=n).collect(), seed, tweak)
    }

    /// Nodes with these ids, all started. Ids unique in the process let a test pick
    /// out its own nodes' threads by name (`keel-persist-ID`) while others run.
    pub fn with_ids(ids: Vec<u64>, seed: u64, tweak: Tweak) -> SimCluster {
        let c = SimCluster {
            net: Arc::new(InProcessNetwork::new(seed)),
            fs: ids
                .iter()
                .map(|&id| (id, SimFs::new(seed.wrapping_mul(1000).wrapping_add(id))))
                .collect(),
            ids,
            nodes: Mutex::new(BTreeMap::new()),
            seed,
            tweak,
        };
        for &id in &c.ids {
            c.start(id).expect("start node");
        }
        c
    }

    /// Node `id`'s configuration for a run of its process on `fs`.
    pub fn config(&self, id: u64, fs: &ProcessFs) -> Config {
        let mut c = Config::cluster(id, self.ids.clone(), DATA_DIR, self.net.clone());
        c.fs = Arc::new(fs.clone());
        c.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        (self.tweak)(fast(c))
    }

    /// Opens node `id` from what its file system holds.
    pub fn start(&self, id: u64) -> keel::Result<()> {
        let fs = ProcessFs::new(&self.fs[&id]);
        let db = Db::open(self.config(id, &fs))?;
        let old = self.nodes.lock().insert(id, (db, fs));
        assert!(old.is_none(), "node {id} started twice");
        Ok(())
    }

    /// Power loss on node `id`: its disk keeps only what was synced (per `mode`), and
    /// its threads stop. Handles callers still hold get `Stopped`.
    pub fn crash(&self, id: u64, mode: CrashMode) {
        let Some((db, fs)) = self.nodes.lock().remove(&id) else {
            return;
        };
        // The disk and the process first, so nothing the node does from here on
        // reaches the disk.
        fs.kill(mode);
        // Stops and joins the threads; their I/O fails from now on.
        let _ = db.close();
    }

    /// A clean stop of node `id`.
    pub fn stop(&self, id: u64) -> keel::Result<()> {
        match self.nodes.lock().remove(&id) {
            Some((db, _)) => db.close(),
            None => Ok(()),
        }
    }

    pub fn db(&self, id: u64) -> Option<Db> {
        self.nodes.lock().get(&id).map(|(db, _)| db.clone())
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.lock().keys().copied().collect()
    }

    pub fn down(&self) -> Vec<u64> {
        let up = self.running();
        self.ids
            .iter()
            .copied()
            .filter(|id| !up.contains(id))
            .collect()
    }

    /// The leader as one running node sees it right now (no agreement needed).
    pub fn current_leader(&self) -> Option<u64> {
        let nodes: Vec<Db> = self
            .nodes
            .lock()
            .values()
            .map(|(db, _)| db.clone())
            .collect();
        nodes
            .iter()
            .find(|db| db.status().role == Role::Leader)
            .map(|db| db.id())
    }

    /// The leader every running node agrees on, once there is one.
    pub fn wait_leader(&self, timeout: Duration) -> Option<u64> {
        wait_until(timeout, || {
            let nodes: Vec<Db> = self
                .nodes
                .lock()
                .values()
                .map(|(db, _)| db.clone())
                .collect();
            let leaders: Vec<Option<u64>> = nodes.iter().map(|db| db.status().leader).collect();
            let first = leaders.first().copied().flatten()?;
            let agreed = leaders.iter().all(|l| *l == Some(first));
            let leads = nodes
                .iter()
                .any(|db| db.id() == first && db.status().role == Role::Leader);
            (agreed && leads).then_some(first)
        })
    }

    /// Waits until every running node applied the same index, which is the highest
    /// commit index any of them knows, twice in a row 50 ms apart (so a write still
    /// in flight does not slip in between).
    pub fn wait_converged(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let nodes: Vec<Db> = self
                .nodes
                .lock()
                .values()
                .map(|(db, _)| db.clone())
                .collect();
            let st: Vec<_> = nodes.iter().map(|d| d.status()).collect();
            let commit = st.iter().map(|s| s.commit_index).max().unwrap_or(0);
            let same = st.iter().all(|s| s.applied_index == commit);
            if same && last == Some(commit) {
                return Ok(commit);
            }
            last = same.then_some(commit);
            if Instant::now() >= deadline {
                return Err(format!("nodes did not converge: {st:#?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut *self.nodes.lock());
        for (_, (db, _)) in nodes {
            let _ = db.close();
        }
    }
}
