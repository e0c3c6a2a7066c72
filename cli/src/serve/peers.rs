//! Peer addresses: parsing `--peers`, the context a membership change carries (the
//! added node's address), and teaching the TCP transport about members as changes
//! apply.
//!
//! Addresses given on this node's command line win over those carried in changes: the
//! lists given to different nodes may name the same peer differently (a proxy, a NAT).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use keel::transport::TcpTransport;
use keel::{ConfChangeType, ConfChangeV2, ConfState, MembershipObserver};
use parking_lot::Mutex;

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(list: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("--peers entry {item:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|&id| id != 0)
            .ok_or_else(|| format!("--peers entry {item:?}: the id must be a positive number"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!(
                "--peers entry {item:?}: the address must be HOST:PORT"
            ));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("--peers names node {id} twice"));
        }
    }
    Ok(peers)
}

/// The context bytes of a membership change made through the API: the address of the
/// node it adds, so every member can reach it.
pub fn encode_context(id: u64, addr: Option<&str>) -> Vec<u8> {
    match addr {
        Some(addr) => serde_json::json!({ "id": id, "addr": addr })
            .to_string()
            .into_bytes(),
        None => Vec::new(),
    }
}

fn decode_context(bytes: &[u8]) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some((v.get("id")?.as_u64()?, v.get("addr")?.as_str()?.to_string()))
}

enum PeerOp {
    Add(u64, String),
    Remove(u64),
}

// Changes queued for the transport, at most (each takes at most about a connect
// timeout; membership changes are rare).
const PEER_OP_QUEUE_LEN: usize = 256;

/// Keeps the transport's peer list in line with the membership. Changes reach the
/// transport from a thread of its own, in order: removing a peer waits for its writer
/// thread, and the raft thread that reports changes must not block.
pub struct PeerBook {
    my_id: u64,
    // Ids whose address came from the command line.
    configured: BTreeMap<u64, String>,
    known: Mutex<HashMap<u64, String>>,
    ops: Sender<PeerOp>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl PeerBook {
    /// A book for node `my_id` whose command line named `configured`.
    pub fn start(
        my_id: u64,
        configured: BTreeMap<u64, String>,
        transport: Arc<TcpTransport>,
    ) -> std::io::Result<Arc<PeerBook>> {
        let (ops, rx) = bounded(PEER_OP_QUEUE_LEN);
        let worker = std::thread::Builder::new()
            .name(format!("keel-peers-{my_id}"))
            .spawn(move || run_ops(rx, transport))?;
        let known = configured
            .iter()
            .filter(|(&id, _)| id != my_id)
            .map(|(&id, a)| (id, a.clone()))
            .collect();
        Ok(Arc::new(PeerBook {
            my_id,
            configured,
            known: Mutex::new(known),
            ops,
            worker: Mutex::new(Some(worker)),
        }))
    }

    fn queue(&self, op: PeerOp) {
        match self.ops.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::error!(
                    "node {}: too many peer changes queued; one was lost",
                    self.my_id
                )
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Stops the worker (after the queued changes). Idempotent.
    pub fn stop(&self) {
        let worker = self.worker.lock().take();
        if let Some(w) = worker {
            // The worker ends when every sender is gone; ours is dropped with `self`,
            // so tell it explicitly with a removal of nobody.
            self.queue(PeerOp::Remove(0));
            let _ = w.join();
        }
    }
}

fn run_ops(rx: Receiver<PeerOp>, transport: Arc<TcpTransport>) {
    while let Ok(op) = rx.recv() {
        match op {
            PeerOp::Add(id, addr) => {
                if let Err(e) = transport.add_peer(id, addr.clone()) {
                    log::warn!("cannot add peer {id} at {addr}: {e}");
                } else {
                    log::info!("peer {id} is at {addr}");
                }
            }
            PeerOp::Remove(0) => break,
            PeerOp::Remove(id) => {
                transport.remove_peer(id);
                log::info!("peer {id} removed");
            }
        }
    }
}

impl MembershipObserver for PeerBook {
    fn applied(&self, change: &ConfChangeV2, _conf_state: &ConfState) {
        let carried = decode_context(&change.context);
        for c in &change.changes {
            let id = c.node_id;
            if id == self.my_id {
                continue;
            }
            match c.change_type {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let addr = self.configured.get(&id).cloned().or_else(|| {
                        carried
                            .as_ref()
                            .filter(|(cid, _)| *cid == id)
                            .map(|(_, a)| a.clone())
                    });
                    let Some(addr) = addr else {
                        // Bootstrap entries carry nothing: their peers are on the
                        // command line, or in a joining node's --peers.
                        continue;
                    };
                    let mut known = self.known.lock();
                    if known.get(&id) != Some(&addr) {
                        known.insert(id, addr.clone());
                        drop(known);
                        self.queue(PeerOp::Add(id, addr));
                    }
                }
                ConfChangeType::RemoveNode => {
                    if self.known.lock().remove(&id).is_some() {
                        self.queue(PeerOp::Remove(id));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peer_lists() {
        let p = parse_peers("1=127.0.0.1:7001, 2=host:7002").unwrap();
        assert_eq!(p[&1], "127.0.0.1:7001");
        assert_eq!(p[&2], "host:7002");
        for bad in [
            "1",
            "0=h:1",
            "x=h:1",
            "1=h",
            "1=h:99999",
            "1=h:1,1=h:2",
            "1=:5",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contexts_round_trip() {
        let c = encode_context(4, Some("127.0.0.1:9"));
        assert_eq!(decode_context(&c), Some((4, "127.0.0.1:9".to_string())));
        assert_eq!(decode_context(b"garbage"), None);
        assert!(encode_context(4, None).is_empty());
    }
}
