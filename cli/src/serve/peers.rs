//! Peer addresses: parsing `--peers`, the context a membership change made through
//! the API carries (the added node's address, in the engine's format:
//! [`keel_engine::member_context`]), and teaching the TCP transport where the members are,
//! from the changes as they apply and from the whole book a snapshot restores.
//!
//! Addresses given on this node's command line win over those carried in changes and
//! snapshots: the lists given to different nodes may name the same peer differently
//! (a proxy, a NAT). Who is a peer is the membership's call: a node that leaves it is
//! dropped from the transport, whichever way its address was learnt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use keel_engine::transport::TcpTransport;
use keel_engine::{ConfChangeType, ConfChangeV2, ConfState, Members, MembershipObserver};
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
/// node it adds (none when an existing member is promoted without one). The API's
/// changes are built by `keel_engine::Db::add_member` & co. now; the tests build theirs here.
#[cfg(test)]
pub fn encode_context(id: u64, addr: Option<&str>) -> Vec<u8> {
    addr.map_or_else(Vec::new, |addr| keel_engine::member_context(id, addr))
}

enum PeerOp {
    Add(u64, String),
    Remove(u64),
}

// Changes queued for the transport, at most (each takes at most about a connect
// timeout; membership changes are rare). Room for a whole restored book twice over
// (every member removed and every one added).
const PEER_OP_QUEUE_LEN: usize = 2 * keel_snapshot::info::MAX_MEMBERS;

/// Keeps the transport's peer list in line with the membership. Changes reach the
/// transport from a thread of its own, in order: removing a peer waits for its writer
/// thread, and the raft thread that reports changes must not block.
pub struct PeerBook {
    my_id: u64,
    // Ids whose address came from the command line.
    configured: BTreeMap<u64, String>,
    state: Mutex<BookState>,
    ops: Sender<PeerOp>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

// What the book knows, behind one lock: changes arrive from the raft thread and
// restored books from the apply thread, and the transport must see them in one order.
struct BookState {
    // The peers the transport was given (queued), with their addresses.
    known: HashMap<u64, String>,
    // The log index of the newest change or snapshot told, and the membership there.
    index: u64,
    members: BTreeSet<u64>,
}

fn member_ids(cs: &ConfState) -> BTreeSet<u64> {
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .copied()
        .collect()
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
            state: Mutex::new(BookState {
                known,
                index: 0,
                members: BTreeSet::new(),
            }),
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

    // Gives the transport `id` at `addr` (the command line's address wins), unless
    // it has it already.
    fn add(&self, st: &mut BookState, id: u64, addr: &str) {
        if id == self.my_id {
            return;
        }
        let addr = self.configured.get(&id).map_or(addr, String::as_str);
        if st.known.get(&id).map(String::as_str) != Some(addr) {
            st.known.insert(id, addr.to_string());
            self.queue(PeerOp::Add(id, addr.to_string()));
        }
    }

    fn remove(&self, st: &mut BookState, id: u64) {
        if st.known.remove(&id).is_some() {
            self.queue(PeerOp::Remove(id));
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
    fn changed(&self, index: u64, change: &ConfChangeV2, conf_state: &ConfState) {
        let carried = keel_engine::member_address(change);
        let members = member_ids(conf_state);
        let mut st = self.state.lock();
        if index < st.index {
            // Older than a snapshot already restored, which holds its effect.
            return;
        }
        for c in &change.changes {
            let id = c.node_id;
            match c.change_type {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let addr = self.configured.get(&id).cloned().or_else(|| {
                        carried
                            .as_ref()
                            .filter(|(cid, _)| *cid == id)
                            .map(|(_, a)| a.clone())
                    });
                    // Without one (a bootstrap entry, a promotion) the transport
                    // already has it from the command line or an earlier change.
                    if let Some(addr) = addr {
                        self.add(&mut st, id, &addr);
                    }
                }
                // In a joint configuration a removed voter stays until it is left.
                ConfChangeType::RemoveNode if !members.contains(&id) => self.remove(&mut st, id),
                ConfChangeType::RemoveNode => {}
            }
        }
        // Those that left with this change (a joint configuration left, above all).
        let gone: Vec<u64> = st.members.difference(&members).copied().collect();
        for id in gone {
            self.remove(&mut st, id);
        }
        st.index = index;
        st.members = members;
    }

    fn restored(&self, restored: &Members) {
        let members = member_ids(&restored.conf_state);
        let mut st = self.state.lock();
        if restored.index < st.index {
            // Changes above the snapshot were told first (a snapshot installs on the
            // apply thread while the raft thread goes on): they decide who is a member,
            // and the snapshot only fills in addresses of members still unknown.
            for (&id, addr) in &restored.addresses {
                if st.members.contains(&id) && !st.known.contains_key(&id) {
                    self.add(&mut st, id, addr);
                }
            }
            return;
        }
        for &id in &members {
            let addr = self
                .configured
                .get(&id)
                .or_else(|| restored.addresses.get(&id));
            if let Some(addr) = addr {
                self.add(&mut st, id, &addr.clone());
            }
        }
        let gone: Vec<u64> = st
            .known
            .keys()
            .filter(|id| !members.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.remove(&mut st, id);
        }
        st.index = restored.index;
        st.members = members;
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

    use keel_engine::transport::TcpConfig;
    use keel_engine::{ConfChangeSingle, ConfChangeTransition};

    fn book(configured: &[(u64, &str)]) -> (Arc<PeerBook>, Arc<TcpTransport>) {
        let t = TcpTransport::start(TcpConfig::new(1, "127.0.0.1:0".parse().unwrap()))
            .expect("transport");
        let configured = configured
            .iter()
            .map(|&(id, a)| (id, a.to_string()))
            .collect();
        let b = PeerBook::start(1, configured, Arc::clone(&t)).expect("book");
        (b, t)
    }

    fn known(b: &PeerBook) -> BTreeMap<u64, String> {
        b.state.lock().known.clone().into_iter().collect()
    }

    fn addrs(list: &[(u64, &str)]) -> BTreeMap<u64, String> {
        list.iter().map(|&(id, a)| (id, a.to_string())).collect()
    }

    fn voters(ids: &[u64]) -> ConfState {
        ConfState {
            voters: ids.to_vec(),
            ..ConfState::default()
        }
    }

    fn change(change_type: ConfChangeType, node_id: u64, addr: Option<&str>) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type,
                node_id,
            }],
            context: encode_context(node_id, addr),
        }
    }

    fn members(index: u64, cs: ConfState, list: &[(u64, &str)]) -> Members {
        Members {
            index,
            conf_state: cs,
            addresses: addrs(list),
        }
    }

    #[test]
    fn a_restored_book_reaches_the_transport_and_the_command_line_wins() {
        let (b, t) = book(&[(1, "h1:1"), (2, "h2:1"), (3, "h3:1"), (9, "h9:1")]);
        // At start, from the node's own snapshot: 4 and 5 were added at runtime, 3's
        // address in the log differs from ours, 9 is no member any more.
        b.restored(&members(
            50,
            voters(&[1, 2, 3, 4, 5]),
            &[(3, "elsewhere:3"), (4, "h4:1"), (5, "h5:1")],
        ));
        assert_eq!(
            known(&b),
            addrs(&[(2, "h2:1"), (3, "h3:1"), (4, "h4:1"), (5, "h5:1")])
        );
        // The log above it replays through `changed`.
        b.changed(
            51,
            &change(ConfChangeType::RemoveNode, 5, None),
            &voters(&[1, 2, 3, 4]),
        );
        assert_eq!(known(&b), addrs(&[(2, "h2:1"), (3, "h3:1"), (4, "h4:1")]));
        b.stop();
        t.shutdown();
    }

    #[test]
    fn an_installed_snapshot_older_than_the_changes_told_does_not_undo_them() {
        let (b, t) = book(&[(1, "h1:1"), (2, "h2:1"), (3, "h3:1")]);
        b.changed(
            10,
            &change(ConfChangeType::AddNode, 4, Some("h4:1")),
            &voters(&[1, 2, 3, 4]),
        );
        // The raft thread goes on past a snapshot at 30 before the apply thread has
        // installed it: 5 added at 31, 4 removed at 32.
        b.changed(
            31,
            &change(ConfChangeType::AddNode, 5, Some("h5:1")),
            &voters(&[1, 2, 3, 4, 5]),
        );
        b.changed(
            32,
            &change(ConfChangeType::RemoveNode, 4, None),
            &voters(&[1, 2, 3, 5]),
        );
        b.restored(&members(
            30,
            voters(&[1, 2, 3, 4, 6]),
            &[(4, "h4:1"), (6, "h6:1")],
        ));
        assert_eq!(known(&b), addrs(&[(2, "h2:1"), (3, "h3:1"), (5, "h5:1")]));
        // A change older than what a snapshot restored is ignored.
        b.restored(&members(
            60,
            voters(&[1, 2, 3, 5, 7]),
            &[(5, "h5:1"), (7, "h7:1")],
        ));
        b.changed(
            40,
            &change(ConfChangeType::RemoveNode, 7, None),
            &voters(&[1, 2, 3, 5]),
        );
        assert_eq!(
            known(&b),
            addrs(&[(2, "h2:1"), (3, "h3:1"), (5, "h5:1"), (7, "h7:1")])
        );
        b.stop();
        t.shutdown();
    }

    #[test]
    fn a_removed_voter_stays_a_peer_until_the_joint_configuration_is_left() {
        let (b, t) = book(&[(1, "h1:1"), (2, "h2:1"), (3, "h3:1")]);
        b.changed(
            5,
            &change(ConfChangeType::AddNode, 4, Some("h4:1")),
            &voters(&[1, 2, 3, 4]),
        );
        let joint = ConfState {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![1, 2, 3, 4],
            ..ConfState::default()
        };
        b.changed(6, &change(ConfChangeType::RemoveNode, 4, None), &joint);
        assert!(known(&b).contains_key(&4));
        b.changed(7, &ConfChangeV2::default(), &voters(&[1, 2, 3]));
        assert_eq!(known(&b), addrs(&[(2, "h2:1"), (3, "h3:1")]));
        b.stop();
        t.shutdown();
    }

    #[test]
    fn contexts_are_the_engines() {
        let c = encode_context(4, Some("127.0.0.1:9"));
        assert_eq!(c, br#"{"addr":"127.0.0.1:9","id":4}"#.to_vec());
        assert!(encode_context(4, None).is_empty());
    }
}
