//! The TCP side of a [`Cluster`](super::Cluster) ([`Transport::Tcp`](super::Transport::Tcp)):
//! each node's loopback address, picked once when the cluster opens and kept across
//! restarts, and a new [`TcpTransport`] on it for each run of the node, knowing every
//! other node's address. Also the loopback settings and the bind retry that the
//! transport's own tests use.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::error::{ClusterError, Result};
use super::options::TcpTweak;
use crate::transport::{TcpConfig, TcpTransport};

/// Longest [`start_tcp`] retries binding an address that is in use.
const BIND_WAIT: Duration = Duration::from_secs(5);

/// Pause between two binds of [`start_tcp`].
const BIND_PAUSE: Duration = Duration::from_millis(50);

/// Node `id` on 127.0.0.1, port 0 (a free one), with timeouts for loopback: connects
/// give up after 500 ms, writes after 2 s, a silent connection is dropped after 1 s,
/// and a lost peer is redialled after 10 ms, backing off to 100 ms. Cluster id `"keel"`.
pub fn loopback_tcp(id: u64) -> TcpConfig {
    let mut c = TcpConfig::new(id, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    c.connect_timeout_ms = 500;
    c.write_timeout_ms = 2_000;
    c.read_timeout_ms = 1_000;
    c.backoff_initial_ms = 10;
    c.backoff_max_ms = 100;
    c
}

/// [`TcpTransport::start`], retrying for up to 5 s while the address is in use: a port
/// given back moments ago (a node restarting on its address) may meanwhile have been
/// taken as the local port of an outgoing connection, of this process or another.
pub fn start_tcp(config: TcpConfig) -> io::Result<Arc<TcpTransport>> {
    let deadline = Instant::now() + BIND_WAIT;
    loop {
        match TcpTransport::start(config.clone()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(BIND_PAUSE);
            }
            started => return started,
        }
    }
}

/// Every node's address, and the transports bound at open that no run has used yet.
pub(super) struct TcpNet {
    tweak: Option<TcpTweak>,
    addrs: RwLock<BTreeMap<u64, SocketAddr>>,
    // Node id to the transport `bind` started for its first run.
    unused: Mutex<BTreeMap<u64, Arc<TcpTransport>>>,
}

impl TcpNet {
    /// Starts a transport for each of `ids` on a free loopback port, and tells each of
    /// them every other's address. On an error the ones started are shut down.
    pub(super) fn bind(ids: &[u64], tweak: Option<TcpTweak>) -> Result<TcpNet> {
        let net = TcpNet {
            tweak,
            addrs: RwLock::new(BTreeMap::new()),
            unused: Mutex::new(BTreeMap::new()),
        };
        let mut started = BTreeMap::new();
        for &id in ids {
            let config = net.config(id, loopback_tcp(id).listen_addr);
            // Dropping `started` on an error shuts down those started before.
            let t = TcpTransport::start(config)
                .map_err(|source| ClusterError::Transport { id, source })?;
            net.addrs.write().insert(id, t.local_addr());
            started.insert(id, t);
        }
        let addrs = net.addrs.read().clone();
        for (&id, t) in &started {
            for (&peer, addr) in &addrs {
                t.add_peer(peer, addr.to_string())
                    .map_err(|source| ClusterError::Transport { id, source })?;
            }
        }
        *net.unused.lock() = started;
        Ok(net)
    }

    /// Node `id`'s address, if it has one.
    pub(super) fn addr(&self, id: u64) -> Option<SocketAddr> {
        self.addrs.read().get(&id).copied()
    }

    /// A transport for node `id`'s next run, knowing every node's address: the one
    /// `bind` started, if no run used it yet; else a new one on the node's address. A
    /// node with no address yet (one joining later) gets a free port, which every
    /// transport in `others` learns.
    pub(super) fn start(&self, id: u64, others: &[Arc<TcpTransport>]) -> Result<Arc<TcpTransport>> {
        if let Some(t) = self.unused.lock().remove(&id) {
            return Ok(t);
        }
        let err = |source| ClusterError::Transport { id, source };
        let known = self.addr(id);
        let mut config = self.config(id, known.unwrap_or(loopback_tcp(id).listen_addr));
        config.peers = self
            .addrs
            .read()
            .iter()
            .map(|(&peer, addr)| (peer, addr.to_string()))
            .collect();
        let t = start_tcp(config).map_err(err)?;
        if known.is_none() {
            let addr = t.local_addr();
            self.addrs.write().insert(id, addr);
            for other in others {
                other
                    .add_peer(id, addr.to_string())
                    .map_err(|source| ClusterError::Transport {
                        id: other.id(),
                        source,
                    })?;
            }
        }
        Ok(t)
    }

    /// Shuts down the transports no run used.
    pub(super) fn shutdown_unused(&self) {
        for t in std::mem::take(&mut *self.unused.lock()).into_values() {
            t.shutdown();
        }
    }

    // Node `id`'s settings: loopback's, tweaked, listening on `listen`.
    fn config(&self, id: u64, listen: SocketAddr) -> TcpConfig {
        let mut c = loopback_tcp(id);
        if let Some(tweak) = &self.tweak {
            c = tweak(c);
        }
        c.listen_addr = listen;
        c
    }
}
