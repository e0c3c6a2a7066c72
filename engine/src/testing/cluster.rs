//! [`Cluster`]: nodes of one cluster inside this process, on a real directory or each on
//! its own simulated disk, joined by the in-process network or over TCP on loopback.
//! Start, stop, drop without warning, crash and restart nodes; find or wait for the
//! leader; wait until the nodes converge; read their metrics.
//!
//! Every method takes `&self`, so clients and a nemesis on other threads can share one
//! cluster. Callers borrow a node as an `Arc<M::Node>`; [`Cluster::kill`] waits until no
//! borrow is left, so a node is never opened twice on one data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_fs::{CrashMode, SimFs};
use parking_lot::RwLock;

use super::error::{ClusterError, Result};
use super::metrics::metric_value;
use super::model::{KvClient, KvModel};
use super::options::{Options, Storage, Timing, Transport, Tweak};
use super::process_fs::ProcessFs;
use super::tcp::TcpNet;
use super::wait::{agreed_leader, wait_until, Leader, POLL};
use crate::state_machine::KvStore;
use crate::transport::{InProcessNetwork, TcpTransport};
use crate::{Config, Role, Status};

/// Where every node keeps its data on its own simulated disk.
pub const DATA_DIR: &str = "/keel";

/// How long the panicking waits ([`Cluster::wait_leader`] & co.) wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Longest [`Cluster::kill`] waits for borrowed handles on the node to be returned.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Pause between two looks of [`Cluster::try_wait_settled`]: long enough that a write
/// still in flight shows up in the second.
const SETTLE_PAUSE: Duration = Duration::from_millis(50);

enum Root {
    Temp(tempfile::TempDir),
    Dir(PathBuf),
    Simulated,
}

enum Net {
    InProcess(Arc<InProcessNetwork>),
    Tcp(TcpNet),
}

struct Running<N> {
    db: Arc<N>,
    // The run of the process on the node's simulated disk, if it has one.
    process: Option<ProcessFs>,
    // This run's transport, over TCP; shut down when the run ends.
    tcp: Option<Arc<TcpTransport>>,
}

impl<N> Running<N> {
    fn shutdown_transport(&self) {
        if let Some(t) = &self.tcp {
            t.shutdown();
        }
    }
}

/// Nodes of one cluster in this process, each running state machine `M` (keel's
/// key-value store by default, its nodes then [`Db`](crate::Db)s). Dropping it closes
/// every node (and, over TCP, shuts every transport down: no thread or socket is
/// left).
pub struct Cluster<M: KvModel = KvStore> {
    ids: Vec<u64>,
    net: Net,
    root: Root,
    disks: BTreeMap<u64, SimFs>,
    timing: Timing,
    seed: u64,
    tweak: Option<Tweak>,
    nodes: RwLock<BTreeMap<u64, Running<M::Node>>>,
}

impl<M: KvModel> std::fmt::Debug for Cluster<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("ids", &self.ids)
            .field("running", &self.running_ids())
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Builds a cluster of keel's key-value store and starts every node.
    pub fn open(options: Options) -> Result<Cluster> {
        Cluster::open_model(options)
    }

    /// Nodes `1..=n` with [`Options::new`]'s defaults.
    ///
    /// # Panics
    ///
    /// If a node does not start (for tests; see [`Cluster::open`]).
    pub fn new(n: u64) -> Cluster {
        Cluster::open(Options::new(n)).expect("start the cluster")
    }

    /// Nodes `1..=n` with [`Options::new`]'s defaults and `tweak` applied to each
    /// node's configuration.
    ///
    /// # Panics
    ///
    /// If a node does not start (for tests; see [`Cluster::open`]).
    pub fn with(n: u64, tweak: impl Fn(Config) -> Config + Send + Sync + 'static) -> Cluster {
        Cluster::open(Options::new(n).tweak(tweak)).expect("start the cluster")
    }
}

impl<M: KvModel> Cluster<M> {
    /// Builds a cluster of state machine `M` and starts every node.
    pub fn open_model(options: Options) -> Result<Cluster<M>> {
        let root = match &options.storage {
            Storage::TempDir => Root::Temp(tempfile::tempdir().map_err(ClusterError::TempDir)?),
            Storage::Dir(dir) => Root::Dir(dir.clone()),
            Storage::Simulated => Root::Simulated,
        };
        let disks = match options.storage {
            Storage::Simulated => options
                .ids
                .iter()
                .map(|&id| {
                    let seed = options.seed.wrapping_mul(1000).wrapping_add(id);
                    (id, SimFs::new(seed))
                })
                .collect(),
            Storage::TempDir | Storage::Dir(_) => BTreeMap::new(),
        };
        let net = match options.transport {
            Transport::InProcess => Net::InProcess(Arc::new(InProcessNetwork::new(options.seed))),
            Transport::Tcp => Net::Tcp(TcpNet::bind(&options.ids, options.tcp_tweak)?),
        };
        let c = Cluster {
            ids: options.ids,
            net,
            root,
            disks,
            timing: options.timing,
            seed: options.seed,
            tweak: options.tweak,
            nodes: RwLock::new(BTreeMap::new()),
        };
        for &id in &c.ids {
            c.start(id)?;
        }
        Ok(c)
    }

    /// Every node id, running or not.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The in-process network between the nodes.
    ///
    /// # Panics
    ///
    /// On a cluster over TCP ([`Transport::Tcp`]), which has none (for tests; see
    /// [`try_net`](Cluster::try_net) and [`tcp`](Cluster::tcp)).
    pub fn net(&self) -> &Arc<InProcessNetwork> {
        self.try_net()
            .expect("Cluster::net: this cluster runs over TCP, not the in-process network")
    }

    /// The in-process network between the nodes, unless they talk over TCP.
    pub fn try_net(&self) -> Option<&Arc<InProcessNetwork>> {
        match &self.net {
            Net::InProcess(net) => Some(net),
            Net::Tcp(_) => None,
        }
    }

    /// Node `id`'s TCP transport while it runs, over TCP ([`Transport::Tcp`]).
    pub fn tcp(&self, id: u64) -> Option<Arc<TcpTransport>> {
        self.nodes.read().get(&id)?.tcp.clone()
    }

    /// Node `id`'s TCP address, the same across its restarts, over TCP
    /// ([`Transport::Tcp`]); a node that joins later has one once it started.
    pub fn addr(&self, id: u64) -> Option<SocketAddr> {
        match &self.net {
            Net::Tcp(tcp) => tcp.addr(id),
            Net::InProcess(_) => None,
        }
    }

    /// Node `id`'s data directory (on its simulated disk, for [`Storage::Simulated`]).
    pub fn node_dir(&self, id: u64) -> PathBuf {
        match &self.root {
            Root::Temp(dir) => dir.path().join(format!("node-{id}")),
            Root::Dir(dir) => dir.join(format!("node-{id}")),
            Root::Simulated => PathBuf::from(DATA_DIR),
        }
    }

    /// Node `id`'s simulated disk, for [`Storage::Simulated`]: it outlives the node's
    /// runs, so faults set on it hit the next run too.
    pub fn sim_fs(&self, id: u64) -> Option<&SimFs> {
        self.disks.get(&id)
    }

    /// Node `id`'s configuration, as [`start`](Cluster::start) opens it: timing,
    /// seed and tweak applied; on a simulated disk, that disk as its file system. Over
    /// TCP it has no transport yet: [`start_with`](Cluster::start_with) gives it one.
    pub fn config(&self, id: u64) -> Config {
        let mut c = match &self.net {
            Net::InProcess(net) => {
                Config::cluster(id, self.ids.clone(), self.node_dir(id), net.clone())
            }
            // Config::cluster's fields, all but the transport.
            Net::Tcp(_) => Config {
                id,
                peers: self.ids.clone(),
                seed: id,
                ..Config::single_node(self.node_dir(id))
            },
        };
        if let Some(disk) = self.disks.get(&id) {
            c.fs = Arc::new(disk.clone());
            c.seed = self.seed.wrapping_mul(31).wrapping_add(id);
        }
        let c = self.timing.apply(c);
        match &self.tweak {
            Some(tweak) => tweak(c),
            None => c,
        }
    }

    /// Opens (recovering) node `id` from its data directory; returns it.
    pub fn start(&self, id: u64) -> Result<Arc<M::Node>> {
        if !self.ids.contains(&id) {
            return Err(ClusterError::UnknownNode(id));
        }
        self.start_with(id, self.config(id))
    }

    /// Opens node `id` with `config` (build it from [`config`](Cluster::config)); `id`
    /// may be a node outside [`ids`](Cluster::ids), one that joins later. On a
    /// simulated disk, a new run of the node's process on its disk replaces `config.fs`;
    /// over TCP, a new transport on the node's address replaces `config.transport` (a
    /// node that joins gets a new address, which the running nodes learn).
    pub fn start_with(&self, id: u64, mut config: Config) -> Result<Arc<M::Node>> {
        if self.nodes.read().contains_key(&id) {
            return Err(ClusterError::AlreadyRunning(id));
        }
        let process = self.disks.get(&id).map(ProcessFs::new);
        if let Some(process) = &process {
            config.fs = Arc::new(process.clone());
        }
        let tcp = match &self.net {
            Net::InProcess(_) => None,
            Net::Tcp(net) => Some(net.start(id, &self.transports())?),
        };
        if let Some(t) = &tcp {
            config.transport = Some(t.clone());
        }
        let running = match M::open_node(config) {
            Ok(db) => Running {
                db: Arc::new(db),
                process,
                tcp,
            },
            Err(source) => {
                if let Some(t) = tcp {
                    t.shutdown();
                }
                return Err(ClusterError::Start { id, source });
            }
        };
        let db = Arc::clone(&running.db);
        let mut nodes = self.nodes.write();
        if nodes.contains_key(&id) {
            // Another thread started it meanwhile; ours goes.
            drop(nodes);
            let _ = db.replica().close();
            running.shutdown_transport();
            return Err(ClusterError::AlreadyRunning(id));
        }
        nodes.insert(id, running);
        Ok(db)
    }

    // The running nodes' TCP transports.
    fn transports(&self) -> Vec<Arc<TcpTransport>> {
        self.nodes
            .read()
            .values()
            .filter_map(|r| r.tcp.clone())
            .collect()
    }

    /// Stops node `id` cleanly ([`Replica::close`](crate::Replica::close)), keeping its data; over TCP, then shuts
    /// its transport down.
    pub fn stop(&self, id: u64) -> Result<()> {
        let running = self
            .nodes
            .write()
            .remove(&id)
            .ok_or(ClusterError::NotRunning(id))?;
        let closed = running.db.replica().close();
        running.shutdown_transport();
        closed.map_err(|source| ClusterError::Close { id, source })
    }

    /// Stops node `id` without warning by dropping it: its threads end (the persist
    /// stage finishing the writes already queued) and it leaves the network, with no
    /// leadership hand-over and no final sync. Not a power loss (see
    /// [`crash`](Cluster::crash)): what the page cache holds survives. Waits for
    /// handles borrowed from [`node`](Cluster::node) to be dropped first. Over TCP, its
    /// transport is shut down after it.
    pub fn kill(&self, id: u64) -> Result<()> {
        let Running {
            mut db,
            process,
            tcp,
        } = self
            .nodes
            .write()
            .remove(&id)
            .ok_or(ClusterError::NotRunning(id))?;
        let deadline = Instant::now() + KILL_WAIT;
        // Bounded by the deadline; every request on the node has a shorter timeout.
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    drop(db);
                    if let Some(t) = tcp {
                        t.shutdown();
                    }
                    return Ok(());
                }
                Err(shared) if Instant::now() < deadline => {
                    db = shared;
                    std::thread::sleep(POLL);
                }
                Err(shared) => {
                    // Put it back: reopening its directory now would run it twice.
                    let running = Running {
                        db: shared,
                        process,
                        tcp,
                    };
                    self.nodes.write().insert(id, running);
                    return Err(ClusterError::Busy {
                        id,
                        waited_ms: millis(KILL_WAIT),
                    });
                }
            }
        }
    }

    /// Power loss on node `id`: its disk keeps only what was synced (per `mode`), and
    /// its threads stop (over TCP, its transport too); handles still borrowed get
    /// `Stopped`. A node that is not running has nothing to lose: `Ok`.
    pub fn crash(&self, id: u64, mode: CrashMode) -> Result<()> {
        if !self.disks.contains_key(&id) {
            return Err(ClusterError::NotSimulated(id));
        }
        let Some(running) = self.nodes.write().remove(&id) else {
            return Ok(());
        };
        let Running { db, process, .. } = &running;
        // The disk and the process first, so nothing the node does from here on
        // reaches the disk.
        if let Some(process) = process {
            process.kill(mode);
        }
        // Stops and joins the threads; their I/O fails from now on.
        let _ = db.replica().close();
        running.shutdown_transport();
        Ok(())
    }

    /// Node `id`, if it runs.
    pub fn node(&self, id: u64) -> Option<Arc<M::Node>> {
        self.nodes.read().get(&id).map(|r| Arc::clone(&r.db))
    }

    /// Node `id`.
    ///
    /// # Panics
    ///
    /// If it does not run (for tests; see [`node`](Cluster::node)).
    pub fn db(&self, id: u64) -> Arc<M::Node> {
        self.node(id)
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Every running node, by id.
    pub fn running(&self) -> Vec<Arc<M::Node>> {
        self.nodes
            .read()
            .values()
            .map(|r| Arc::clone(&r.db))
            .collect()
    }

    /// The ids of the running nodes.
    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes.read().keys().copied().collect()
    }

    /// The ids of the nodes that do not run.
    pub fn down(&self) -> Vec<u64> {
        let up = self.running_ids();
        self.ids
            .iter()
            .copied()
            .filter(|id| !up.contains(id))
            .collect()
    }

    /// The running nodes other than `leader`.
    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.running_ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect()
    }

    /// The running node that says it leads right now (the one with the highest term if
    /// two do); no agreement needed.
    pub fn leader(&self) -> Option<Arc<M::Node>> {
        self.running()
            .into_iter()
            .map(|db| (db.replica().status(), db))
            .filter(|(st, _)| st.role == Role::Leader)
            .max_by_key(|(st, _)| st.term)
            .map(|(_, db)| db)
    }

    /// Waits up to `timeout` for a leader every running node agrees on.
    pub fn try_wait_leader(&self, timeout: Duration) -> Result<Leader> {
        wait_until(timeout, || {
            let nodes = self.running();
            agreed_leader(nodes.iter().map(|db| &**db))
        })
        .ok_or(ClusterError::NoLeader {
            waited_ms: millis(timeout),
        })
    }

    /// Waits up to `timeout` until every running node applied everything any of them
    /// knew committed when the wait began; returns that index.
    pub fn try_wait_converged(&self, timeout: Duration) -> Result<u64> {
        let target = self
            .running()
            .iter()
            .map(|db| db.replica().status().commit_index)
            .max()
            .unwrap_or(0);
        self.try_wait_applied(target, timeout)?;
        Ok(target)
    }

    /// Waits up to `timeout` until every running node applied at least `index`.
    pub fn try_wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        wait_until(timeout, || {
            self.running()
                .iter()
                .all(|db| db.replica().status().applied_index >= index)
                .then_some(())
        })
        .ok_or_else(|| self.not_converged(timeout))
    }

    /// Waits up to `timeout` until every running node applied the same index, which is
    /// the highest commit index any of them knows, in two looks in a row 50 ms apart (so
    /// a write still in flight does not slip in between); returns that index.
    pub fn try_wait_settled(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let st: Vec<Status> = self
                .running()
                .iter()
                .map(|d| d.replica().status())
                .collect();
            let commit = st.iter().map(|s| s.commit_index).max().unwrap_or(0);
            let same = st.iter().all(|s| s.applied_index == commit);
            if same && last == Some(commit) {
                return Ok(commit);
            }
            last = same.then_some(commit);
            if Instant::now() >= deadline {
                return Err(ClusterError::NotConverged {
                    waited_ms: millis(timeout),
                    statuses: st,
                });
            }
            std::thread::sleep(SETTLE_PAUSE);
        }
    }

    fn not_converged(&self, timeout: Duration) -> ClusterError {
        ClusterError::NotConverged {
            waited_ms: millis(timeout),
            statuses: self
                .running()
                .iter()
                .map(|d| d.replica().status())
                .collect(),
        }
    }

    /// The leader every running node agrees on, waiting up to [`WAIT`].
    ///
    /// # Panics
    ///
    /// If none appears (for tests; see [`try_wait_leader`](Cluster::try_wait_leader)).
    pub fn wait_leader(&self) -> u64 {
        match self.try_wait_leader(WAIT) {
            Ok(leader) => leader.id,
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits up to [`WAIT`] until every running node applied everything any of them
    /// knows committed.
    ///
    /// # Panics
    ///
    /// If they do not (for tests; see [`try_wait_converged`](Cluster::try_wait_converged)).
    pub fn wait_converged(&self) {
        if let Err(e) = self.try_wait_converged(WAIT) {
            panic!("{e}");
        }
    }

    /// Waits up to [`WAIT`] until every running node applied at least `index`.
    ///
    /// # Panics
    ///
    /// If they do not (for tests; see [`try_wait_applied`](Cluster::try_wait_applied)).
    pub fn wait_applied(&self, index: u64) {
        if let Err(e) = self.try_wait_applied(index, WAIT) {
            panic!("{e}");
        }
    }

    /// The sum over running nodes of the metric `name` (a counter, a gauge or a
    /// histogram's `_count`).
    pub fn metric_sum(&self, name: &str) -> f64 {
        self.running()
            .iter()
            .map(|db| metric_value(&db.replica().metrics_text(), name))
            .sum()
    }

    /// Closes every running node cleanly (over TCP, then shuts every transport down);
    /// the first error, after trying them all.
    pub fn close(&self) -> Result<()> {
        let nodes = std::mem::take(&mut *self.nodes.write());
        let mut first = Ok(());
        for (id, running) in nodes {
            let closed = running.db.replica().close();
            running.shutdown_transport();
            if let Err(source) = closed {
                if first.is_ok() {
                    first = Err(ClusterError::Close { id, source });
                }
            }
        }
        if let Net::Tcp(net) = &self.net {
            net.shutdown_unused();
        }
        first
    }

    /// The directory the nodes' directories are in, unless they are on simulated disks.
    pub fn dir(&self) -> Option<&Path> {
        match &self.root {
            Root::Temp(dir) => Some(dir.path()),
            Root::Dir(dir) => Some(dir),
            Root::Simulated => None,
        }
    }
}

impl<M: KvModel> Drop for Cluster<M> {
    fn drop(&mut self) {
        // Before the temporary directory goes (fields drop after this).
        let _ = self.close();
    }
}
