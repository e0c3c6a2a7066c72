//! `keel serve`: one node of a cluster — the engine, its TCP peer transport, and the
//! HTTP API on `--listen-client` — until SIGINT or SIGTERM, which stop it cleanly, or
//! until the node stops on a fatal error: then it logs the cause and exits with
//! [`CliError::NodeFailed`]'s code (3) within a second, for a supervisor to restart it.
//!
//! Owns: turning the command line into an engine [`keel_engine::Config`], starting and
//! stopping the node's parts in order (transport, engine, HTTP; then the reverse),
//! and the HTTP API ([`routes`]) on a small server of our own ([`http`]).

pub mod http;
pub mod logger;
pub mod peers;
pub mod routes;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use keel_engine::transport::{TcpConfig, TcpTransport};
use keel_engine::{Config, Db, LogBackend, StateMachineKind};

use self::http::{HttpConfig, HttpServer};
use self::peers::PeerBook;
use self::routes::{Api, MAX_KEY_BYTES};
use crate::error::{CliError, Status};

/// Arguments of `keel serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (a positive number, unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// Where the node keeps its data (`wal/`, `snap/`); created if missing. A node
    /// restarted with the same directory recovers from it and rejoins.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Every voter of a new cluster, this node included: `1=HOST:PORT,2=HOST:PORT,...`.
    /// This node binds its own entry's address and dials the others. With `--join`:
    /// the members to reach (and this node's own address). Omit for a single node.
    #[arg(long, value_name = "ID=HOST:PORT,...", default_value = "")]
    pub peers: String,
    /// The HTTP address of the client API.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen_client: String,
    /// Bind the peer transport here instead of at this node's `--peers` address.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen_peer: Option<String>,
    /// The cluster's name; peers from another cluster are refused.
    #[arg(long, value_name = "NAME", default_value = "keel")]
    pub cluster_id: String,
    /// The Raft log backend.
    #[arg(long, value_name = "wal|rocksdb", default_value = "wal")]
    pub log: String,
    /// The state machine.
    #[arg(long, value_name = "memory|rocksdb", default_value = "memory")]
    pub state: String,
    /// Join an existing cluster: start without voters and wait until a member adds this
    /// node (`POST /cluster/members` on the leader) and the leader sends it the log.
    #[arg(long)]
    pub join: bool,
    /// Take a snapshot every N applied entries (0: never). The default is etcd's
    /// `--snapshot-count`: each snapshot writes the whole state.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub snapshot_every: u64,
    /// A snapshot also waits until the entries logged since the previous one add up
    /// to this percentage of its size (0: count only), so a large state is not
    /// rewritten whole every N entries.
    #[arg(long, value_name = "PERCENT", default_value_t = 100)]
    pub snapshot_log_percent: u64,
    /// Log entries kept behind each snapshot, so a follower that is only a little
    /// behind catches up from the log rather than by a whole snapshot.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub catch_up_entries: u64,
    /// Bytes of a WAL segment file.
    #[arg(long, value_name = "BYTES")]
    pub segment_size: Option<u64>,
    /// fsync the log before acknowledging (`false` only for throwaway data).
    #[arg(long, value_name = "true|false", default_value = "true", action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Largest value `PUT /kv/{key}` accepts, in bytes (larger: 413). A write must fit
    /// one peer message frame (16 MiB) with its key and encoding, so at most
    /// 16,771,000 or so; a larger setting is refused at start.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: u64,
    /// Largest snapshot this node accepts from a leader, in bytes of snapshot file;
    /// a larger stream is aborted before it fills the disk. The default, 64 GiB, is
    /// above what a memory state machine can hold on the machines it is meant for
    /// (it restores the whole image into RAM); raise it for a larger RocksDB state.
    #[arg(long, value_name = "BYTES", default_value_t = keel_engine::DEFAULT_MAX_SNAPSHOT_RECEIVE_BYTES)]
    pub max_snapshot_bytes: u64,
    /// How long a request waits for its commit or read before answering 504.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Client connections open at once. A new client beyond it takes the slot of the
    /// oldest idle connection (one waiting for its next request), which is closed;
    /// with none idle it is answered 503.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// How long a client connection may wait for its next request (or its first)
    /// before it is closed.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub http_idle_timeout_ms: u64,
    /// How long a request's line, headers and body may take to arrive, from its first
    /// byte (slower: 408, and the connection is closed).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub http_request_timeout_ms: u64,
    /// How long writing one whole response may take, however slowly the client reads
    /// (slower: the connection is closed).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub http_response_timeout_ms: u64,
    /// Log level on stderr: error, warn, info, debug, trace or off.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

fn fail(msg: impl Into<String>) -> CliError {
    CliError::Node(msg.into())
}

fn resolve(addr: &str, what: &str) -> Result<SocketAddr, CliError> {
    addr.to_socket_addrs()
        .map_err(|e| fail(format!("{what} {addr}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("{what} {addr} resolves to no address")))
}

// How often the main thread checks for a signal or a stopped node.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

// Longest the parts of a node that stopped on a fatal error get to stop before the
// process exits anyway: a supervisor must see the exit within a second, and what was
// acknowledged is durable already.
const FATAL_STOP_WAIT: Duration = Duration::from_millis(500);

/// The parts of a running node, stopped in reverse order of starting.
struct Running {
    db: Db,
    http: Option<HttpServer>,
    transport: Option<Arc<TcpTransport>>,
    book: Option<Arc<PeerBook>>,
    shutting_down: Arc<AtomicBool>,
}

impl Running {
    fn stop(mut self) -> Result<(), CliError> {
        self.shutting_down.store(true, Ordering::Release);
        if let Some(http) = self.http.take() {
            http.shutdown();
        }
        let closed = self.db.close();
        if let Some(book) = &self.book {
            book.stop();
        }
        if let Some(t) = &self.transport {
            t.shutdown();
        }
        closed.map_err(|e| fail(format!("the node stopped with an error: {e}")))
    }
}

/// Runs `keel serve` until a signal, or until the node stops on a fatal error.
pub fn run(args: ServeArgs) -> Result<Status, CliError> {
    logger::init(&args.log_level).map_err(fail)?;
    // Tests inject faults through the FAILPOINTS variable (`point=action;...`).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| fail(format!("cannot install a signal handler: {e}")))?;
    }
    let running = start(&args)?;
    log::info!(
        "node {} serving clients on http://{}",
        args.id,
        running
            .http
            .as_ref()
            .map_or_else(String::new, |h| h.local_addr().to_string())
    );
    // Bounded by the signal: every turn sleeps one poll interval.
    while !stop.load(Ordering::Acquire) {
        if let Some(fatal) = running.db.status().fatal {
            log::error!(
                "node {} stopped on a fatal error ({}): {fatal}; exiting",
                args.id,
                fatal.kind
            );
            stop_within(running, FATAL_STOP_WAIT);
            return Err(CliError::NodeFailed(format!(
                "node {} stopped on a fatal error: {fatal}",
                args.id
            )));
        }
        std::thread::sleep(SIGNAL_POLL);
    }
    log::info!("node {}: shutting down", args.id);
    running.stop()?;
    log::info!("node {}: stopped cleanly", args.id);
    Ok(Status::Ok)
}

// Stops the parts of a failed node, waiting at most `limit`: a part that hangs (a
// thread stuck in I/O) must not keep the process from exiting.
fn stop_within(running: Running, limit: Duration) {
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("keel-serve-stop".into())
        .spawn(move || {
            if let Err(e) = running.stop() {
                log::debug!("{e}");
            }
            let _ = done_tx.send(());
        });
    match spawned {
        Ok(_) => {
            if done.recv_timeout(limit).is_err() {
                log::warn!("the node's parts did not stop within {limit:?}; exiting anyway");
            }
        }
        Err(e) => log::warn!("cannot start a thread to stop the node's parts: {e}"),
    }
}

fn log_backend(name: &str) -> Result<LogBackend, CliError> {
    match name {
        "wal" => Ok(LogBackend::Wal),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Ok(LogBackend::RocksDb),
        #[cfg(not(feature = "rocksdb"))]
        "rocksdb" => Err(fail(
            "--log rocksdb: this keel was built without RocksDB; rebuild with \
             `cargo build --release --features rocksdb`",
        )),
        other => Err(fail(format!("--log {other}: use keel_wal or rocksdb"))),
    }
}

fn state_machine(name: &str) -> Result<StateMachineKind, CliError> {
    match name {
        "memory" => Ok(StateMachineKind::Memory),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Ok(StateMachineKind::RocksDb),
        #[cfg(not(feature = "rocksdb"))]
        "rocksdb" => Err(fail(
            "--state rocksdb: this keel was built without RocksDB; rebuild with \
             `cargo build --release --features rocksdb`",
        )),
        other => Err(fail(format!("--state {other}: use memory or rocksdb"))),
    }
}

// The engine's largest write (key + value) `--max-value-bytes` implies, refused when
// a write that large could not travel in one peer message frame: accepted from a
// client, it would then never replicate and would wedge the follower it is sent to.
fn max_entry_bytes(args: &ServeArgs) -> Result<u64, CliError> {
    let usage =
        |why: String| CliError::Usage(format!("--max-value-bytes {}: {why}", args.max_value_bytes));
    let entry = args
        .max_value_bytes
        .checked_add(MAX_KEY_BYTES as u64)
        .ok_or_else(|| usage("too large".into()))?;
    // The frame limit of the transport `start` builds (its default).
    let frame_bytes =
        u64::from(TcpConfig::new(args.id, ([127, 0, 0, 1], 0).into()).max_frame_bytes);
    let probe = Config {
        max_entry_bytes: entry,
        ..Config::single_node(&args.data_dir)
    };
    let message_bytes = probe.max_message_bytes();
    if message_bytes > frame_bytes {
        let most = args
            .max_value_bytes
            .saturating_sub(message_bytes - frame_bytes);
        return Err(usage(format!(
            "a value that large, with its key and encoding, makes a Raft message of up to \
             {message_bytes} bytes, more than the {frame_bytes}-byte peer frame limit; \
             use at most {most}"
        )));
    }
    Ok(entry)
}

fn start(args: &ServeArgs) -> Result<Running, CliError> {
    if args.id == 0 {
        return Err(fail("--id must be a positive number"));
    }
    let max_entry_bytes = max_entry_bytes(args)?;
    if args.max_snapshot_bytes == 0 {
        return Err(CliError::Usage(
            "--max-snapshot-bytes must be at least 1".into(),
        ));
    }
    let log_backend = log_backend(&args.log)?;
    let state_machine = state_machine(&args.state)?;
    let peers = peers::parse_peers(&args.peers).map_err(fail)?;
    let listen_peer = args
        .listen_peer
        .clone()
        .or_else(|| peers.get(&args.id).cloned());
    if !args.join && !peers.is_empty() && !peers.contains_key(&args.id) {
        return Err(fail(format!(
            "--peers must list this node too (id {}) with the address it binds",
            args.id
        )));
    }
    if args.join && listen_peer.is_none() {
        return Err(fail(
            "--join needs this node's peer address: list it in --peers or give --listen-peer",
        ));
    }
    let others: BTreeMap<u64, String> = peers
        .iter()
        .filter(|(&id, _)| id != args.id)
        .map(|(&id, a)| (id, a.clone()))
        .collect();
    if args.join && others.is_empty() {
        return Err(fail(
            "--join needs the addresses of the cluster's members in --peers",
        ));
    }

    // A second node on a live data directory would otherwise first fail to bind the
    // peer port the live one holds, which does not say why. Only a probe: the lock is
    // released at once, and `Db::open` takes it for good.
    if let Err(e @ keel_engine::Error::DataDirLocked { .. }) =
        keel_engine::data_dir::lock(&keel_fs::StdFs, &args.data_dir)
    {
        return Err(fail(format!("cannot start node {}: {e}", args.id)));
    }
    let (transport, book) = match &listen_peer {
        Some(addr) => {
            let mut tc = TcpConfig::new(args.id, resolve(addr, "peer address")?);
            tc.cluster_id = args.cluster_id.clone();
            tc.peers = others.iter().map(|(&id, a)| (id, a.clone())).collect();
            let t = TcpTransport::start(tc)
                .map_err(|e| fail(format!("cannot start the peer transport on {addr}: {e}")))?;
            let book = PeerBook::start(args.id, peers.clone(), Arc::clone(&t))
                .map_err(|e| fail(format!("cannot start the peer book: {e}")))?;
            (Some(t), Some(book))
        }
        None => (None, None),
    };

    let mut config = match &transport {
        Some(t) => {
            let voters = if args.join {
                Vec::new()
            } else if peers.is_empty() {
                vec![args.id]
            } else {
                peers.keys().copied().collect()
            };
            let t: Arc<dyn keel_engine::transport::Transport> = Arc::clone(t) as _;
            Config::cluster(args.id, voters, &args.data_dir, t)
        }
        None => Config {
            id: args.id,
            peers: vec![args.id],
            seed: args.id,
            ..Config::single_node(&args.data_dir)
        },
    };
    config.join = args.join;
    config.membership_observer = book
        .as_ref()
        .map(|b| Arc::clone(b) as Arc<dyn keel_engine::MembershipObserver>);
    config.log_backend = log_backend;
    config.state_machine = state_machine;
    config.fsync = args.fsync;
    config.request_timeout_ms = args.request_timeout_ms;
    config.max_entry_bytes = max_entry_bytes;
    config.max_snapshot_receive_bytes = args.max_snapshot_bytes;
    config.snapshot_every = args.snapshot_every;
    config.snapshot_log_percent = args.snapshot_log_percent;
    config.catch_up_entries = args.catch_up_entries;
    if let Some(b) = args.segment_size {
        config.wal_segment_size_bytes = b;
    }
    let stop_transport = || {
        if let Some(b) = &book {
            b.stop();
        }
        if let Some(t) = &transport {
            t.shutdown();
        }
    };
    let db = match Db::open(config) {
        Ok(db) => db,
        Err(e) => {
            stop_transport();
            return Err(fail(format!(
                "cannot open node {} in {}: {e}",
                args.id,
                args.data_dir.display()
            )));
        }
    };
    let shutting_down = Arc::new(AtomicBool::new(false));
    let api = Arc::new(Api {
        db: db.clone(),
        max_value_bytes: args.max_value_bytes,
        shutting_down: Arc::clone(&shutting_down),
    });
    let http_config = HttpConfig {
        max_connections: args.max_connections.max(1),
        max_body_bytes: args.max_value_bytes,
        idle_timeout: Duration::from_millis(args.http_idle_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(args.http_request_timeout_ms.max(1)),
        response_timeout: Duration::from_millis(args.http_response_timeout_ms.max(1)),
        ..HttpConfig::default()
    };
    let http = match HttpServer::start(&args.listen_client, http_config, api) {
        Ok(h) => h,
        Err(e) => {
            let _ = db.close();
            stop_transport();
            return Err(fail(format!(
                "cannot listen for clients on {}: {e}",
                args.listen_client
            )));
        }
    };
    Ok(Running {
        db,
        http: Some(http),
        transport,
        book,
        shutting_down,
    })
}
