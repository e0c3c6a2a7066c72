//! How a [`Cluster`](super::Cluster) is built: [`Options`] and its parts — where the
//! nodes keep their data ([`Storage`]), how they reach each other ([`Transport`]), their
//! clock ([`Timing`], [`fast`]), a [`Tweak`] of every node's configuration and, over TCP,
//! a [`TcpTweak`] of every node's transport settings.

use std::path::PathBuf;
use std::sync::Arc;

use crate::transport::TcpConfig;
use crate::Config;

/// Adjusts every node's configuration, after the [`Timing`] is applied.
pub type Tweak = Arc<dyn Fn(Config) -> Config + Send + Sync>;

/// Adjusts every node's TCP transport settings ([`Transport::Tcp`]), starting from
/// [`loopback_tcp`](super::loopback_tcp)'s; the listen address stays the harness's.
pub type TcpTweak = Arc<dyn Fn(TcpConfig) -> TcpConfig + Send + Sync>;

/// Where the nodes keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A new temporary directory, removed when the cluster is dropped; node `id` in
    /// `node-<id>` under it.
    TempDir,
    /// Node `id` in `<dir>/node-<id>`; the directory is the caller's.
    Dir(PathBuf),
    /// Each node on its own simulated disk (`keel_fs::SimFs`) at [`DATA_DIR`](super::DATA_DIR), which
    /// [`Cluster::crash`](super::Cluster::crash) can cut the power of.
    Simulated,
}

/// How the nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// [`InProcessNetwork`](crate::transport::InProcessNetwork): can drop, delay and partition messages.
    InProcess,
    /// Each node its own [`TcpTransport`](crate::transport::TcpTransport) on 127.0.0.1
    /// ([`loopback_tcp`](super::loopback_tcp)): real sockets, no fault injection. A
    /// node's port is picked when the cluster opens and kept when it restarts; every
    /// transport knows every node's address. [`Cluster::net`](super::Cluster::net)
    /// has no network to give; [`Cluster::tcp`](super::Cluster::tcp) gives a node's
    /// transport.
    Tcp,
}

/// The nodes' clock settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// [`fast`]: for tests.
    Test,
    /// 20 ms ticks, elections after 0.5–1 s of silence: failover a person can watch
    /// (`keel demo`), yet a busy 2-core machine does not make leaders flap.
    Interactive,
}

impl Timing {
    /// `config` with these clock settings.
    pub fn apply(self, mut config: Config) -> Config {
        match self {
            Timing::Test => fast(config),
            Timing::Interactive => {
                config.tick_ms = 20;
                config.election_ticks = 25;
                config.heartbeat_ticks = 3;
                config
            }
        }
    }
}

/// Timing for tests: 10 ms ticks, heartbeats every 20 ms, elections after 200–400 ms
/// (short, yet a busy 2-core machine running the whole suite in parallel does not make
/// leaders flap), 5 s request timeout, 1 MiB WAL segments.
pub fn fast(mut c: Config) -> Config {
    c.tick_ms = 10;
    c.election_ticks = 20;
    c.heartbeat_ticks = 2;
    c.request_timeout_ms = 5_000;
    c.wal_segment_size_bytes = 1 << 20;
    c
}

/// How to build a [`Cluster`](super::Cluster); [`Options::new`] gives the defaults tests use.
#[derive(Clone)]
pub struct Options {
    pub(super) ids: Vec<u64>,
    pub(super) storage: Storage,
    pub(super) transport: Transport,
    pub(super) timing: Timing,
    pub(super) seed: u64,
    pub(super) tweak: Option<Tweak>,
    pub(super) tcp_tweak: Option<TcpTweak>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("ids", &self.ids)
            .field("storage", &self.storage)
            .field("transport", &self.transport)
            .field("timing", &self.timing)
            .field("seed", &self.seed)
            .field("tweak", &self.tweak.is_some())
            .field("tcp_tweak", &self.tcp_tweak.is_some())
            .finish()
    }
}

impl Options {
    /// Nodes `1..=n` in a temporary directory on the in-process network, [`Timing::Test`],
    /// seed 7.
    pub fn new(n: u64) -> Options {
        Options {
            ids: (1..=n).collect(),
            storage: Storage::TempDir,
            transport: Transport::InProcess,
            timing: Timing::Test,
            seed: 7,
            tweak: None,
            tcp_tweak: None,
        }
    }

    /// These node ids instead of `1..=n`. Ids unique in the process let a test pick out
    /// its own nodes' threads by name (`keel-persist-ID`) while other tests run.
    pub fn ids(mut self, ids: Vec<u64>) -> Options {
        self.ids = ids;
        self
    }

    /// Where the nodes keep their data.
    pub fn storage(mut self, storage: Storage) -> Options {
        self.storage = storage;
        self
    }

    /// How the nodes reach each other.
    pub fn transport(mut self, transport: Transport) -> Options {
        self.transport = transport;
        self
    }

    /// The nodes' clock settings.
    pub fn timing(mut self, timing: Timing) -> Options {
        self.timing = timing;
        self
    }

    /// The seed of the in-process network's message loss. On [`Storage::Simulated`] also of each
    /// disk (`seed * 1000 + id`) and each node's Raft (`seed * 31 + id`), so one number
    /// replays a run; on a real directory a node keeps [`Config::cluster`]'s seed (its id).
    pub fn seed(mut self, seed: u64) -> Options {
        self.seed = seed;
        self
    }

    /// Adjusts every node's configuration, after the timing is applied.
    pub fn tweak(mut self, tweak: impl Fn(Config) -> Config + Send + Sync + 'static) -> Options {
        self.tweak = Some(Arc::new(tweak));
        self
    }

    /// Adjusts every node's TCP transport settings ([`Transport::Tcp`]); the listen
    /// address stays the harness's. Ignored on the in-process network.
    pub fn tcp_tweak(
        mut self,
        tweak: impl Fn(TcpConfig) -> TcpConfig + Send + Sync + 'static,
    ) -> Options {
        self.tcp_tweak = Some(Arc::new(tweak));
        self
    }
}
