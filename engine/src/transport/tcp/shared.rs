//! What every thread of a TCP transport shares: its settings, the sink it delivers
//! into, the live peer table, the inbound connections and the counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::config::TcpConfig;
use super::conns::Conns;
use super::peer::Peer;
use super::stats::Counters;
use crate::transport::MessageSink;

/// What every thread of a transport shares.
pub(super) struct Inner {
    pub(super) id: u64,
    // `peers` is moved out into the live table below.
    pub(super) config: TcpConfig,
    pub(super) stopping: AtomicBool,
    pub(super) sink: RwLock<Option<Arc<dyn MessageSink>>>,
    pub(super) peers: RwLock<HashMap<u64, Peer>>,
    pub(super) conns: Arc<Conns>,
    pub(super) stats: Counters,
}

impl Inner {
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(super) fn sink(&self) -> Option<Arc<dyn MessageSink>> {
        self.sink.read().clone()
    }

    pub(super) fn peer_addr(&self, id: u64) -> Option<String> {
        self.peers
            .read()
            .get(&id)
            .map(|p| p.link.addr.lock().clone())
    }

    // Hands one message to the node, if one is registered (a restarting node is not).
    pub(super) fn deliver(&self, bytes: Vec<u8>) {
        if let Some(sink) = self.sink() {
            sink.deliver(bytes);
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
