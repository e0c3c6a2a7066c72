//! An in-process network for tests: nodes in one process exchange bytes through their
//! sinks, with controls to drop a fraction of messages, delay them, and partition,
//! isolate and heal links. Drops use a seeded generator so a failing run replays.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use keel_raft::Rng;
use parking_lot::Mutex;

use super::{ChunkSource, MessageSink, Transport, TransportError};

// Messages waiting out a configured delay, at most. Beyond it they are dropped, which
// Raft tolerates.
const DELAY_QUEUE_LEN: usize = 16_384;

#[derive(Default)]
struct Links {
    sinks: HashMap<u64, Arc<dyn MessageSink>>,
    // Directed links that are cut: (from, to).
    cut: HashSet<(u64, u64)>,
    // Probability in parts per million that a message is dropped.
    drop_ppm: u32,
    delay_ms: u64,
    rng: Rng,
}

impl Links {
    fn next_random_ppm(&mut self) -> u32 {
        // Seeded, so a test's seed picks the same messages to drop.
        self.rng.range(0, 1_000_000) as u32
    }

    // The sink for `to` if the link from `from` is up and the message is not dropped.
    fn route(&mut self, from: u64, to: u64) -> Option<Arc<dyn MessageSink>> {
        if self.cut.contains(&(from, to)) {
            return None;
        }
        if self.drop_ppm > 0 && self.next_random_ppm() < self.drop_ppm {
            return None;
        }
        self.sinks.get(&to).cloned()
    }
}

struct Delayed {
    due: Instant,
    to: u64,
    bytes: Vec<u8>,
}

/// A network of nodes in one process. Cheap to share (`Arc`); the delay thread, if a
/// delay was ever set, is joined when the network is dropped.
pub struct InProcessNetwork {
    links: Arc<Mutex<Links>>,
    delayer: Mutex<Option<(Sender<Delayed>, JoinHandle<()>)>>,
}

impl Default for InProcessNetwork {
    fn default() -> Self {
        InProcessNetwork::new(0)
    }
}

impl InProcessNetwork {
    /// A fully connected network; `seed` drives which messages a drop rate drops.
    /// Nodes join it through [`Config::cluster`](crate::Config::cluster) (a whole
    /// three-node example is there); tests then cut and heal it:
    ///
    /// ```
    /// let net = keel_engine::transport::InProcessNetwork::new(42);
    /// net.isolate(1); // cut node 1 off from every node registered
    /// net.set_drop_rate(0.1); // and a tenth of the other messages are lost
    /// net.heal(); // every link back, no more drops
    /// ```
    pub fn new(seed: u64) -> InProcessNetwork {
        InProcessNetwork {
            links: Arc::new(Mutex::new(Links {
                rng: Rng::new(seed),
                ..Links::default()
            })),
            delayer: Mutex::new(None),
        }
    }

    /// Drops each message with probability `fraction` (0.0 to 1.0).
    pub fn set_drop_rate(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0) as u32;
        self.links.lock().drop_ppm = ppm;
    }

    /// Delays every message by `delay_ms` milliseconds (0 delivers at once).
    pub fn set_delay_ms(&self, delay_ms: u64) {
        self.links.lock().delay_ms = delay_ms;
        if delay_ms > 0 {
            self.start_delayer();
        }
    }

    /// Cuts every link between a node of `a` and a node of `b`, both directions.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut links = self.links.lock();
        for &x in a {
            for &y in b {
                links.cut.insert((x, y));
                links.cut.insert((y, x));
            }
        }
    }

    /// Cuts `id` off from every other registered node.
    pub fn isolate(&self, id: u64) {
        let mut links = self.links.lock();
        let others: Vec<u64> = links.sinks.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            links.cut.insert((id, o));
            links.cut.insert((o, id));
        }
    }

    /// Restores every link, and stops dropping messages.
    pub fn heal(&self) {
        let mut links = self.links.lock();
        links.cut.clear();
        links.drop_ppm = 0;
    }

    fn start_delayer(&self) {
        let mut delayer = self.delayer.lock();
        if delayer.is_some() {
            return;
        }
        let (tx, rx) = bounded::<Delayed>(DELAY_QUEUE_LEN);
        let links = Arc::clone(&self.links);
        let spawned = std::thread::Builder::new()
            .name("keel-net-delay".into())
            .spawn(move || run_delayer(&rx, &links));
        match spawned {
            Ok(handle) => *delayer = Some((tx, handle)),
            Err(e) => log::error!("cannot start the network delay thread: {e}; not delaying"),
        }
    }
}

// Delivers delayed messages in order (one constant delay keeps them in due order);
// ends when the network drops its sender.
fn run_delayer(rx: &Receiver<Delayed>, links: &Mutex<Links>) {
    while let Ok(d) = rx.recv() {
        let now = Instant::now();
        if d.due > now {
            std::thread::sleep(d.due - now);
        }
        let sink = links.lock().sinks.get(&d.to).cloned();
        if let Some(sink) = sink {
            sink.deliver(d.bytes);
        }
    }
}

impl Drop for InProcessNetwork {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.delayer.lock().take() {
            drop(tx);
            if handle.join().is_err() {
                log::error!("network delay thread panicked");
            }
        }
    }
}

impl Transport for InProcessNetwork {
    fn register(&self, id: u64, sink: Arc<dyn MessageSink>) {
        self.links.lock().sinks.insert(id, sink);
    }

    fn unregister(&self, id: u64, sink: &Arc<dyn MessageSink>) {
        let mut links = self.links.lock();
        if links.sinks.get(&id).is_some_and(|s| Arc::ptr_eq(s, sink)) {
            links.sinks.remove(&id);
        }
    }

    fn send(&self, from: u64, to: u64, bytes: Vec<u8>) -> Result<(), TransportError> {
        let (sink, delay_ms) = {
            let mut links = self.links.lock();
            (links.route(from, to), links.delay_ms)
        };
        // A dropped message looks delivered, as on a real network.
        let Some(sink) = sink else {
            return Ok(());
        };
        if delay_ms > 0 {
            if let Some((tx, _)) = self.delayer.lock().as_ref() {
                let d = Delayed {
                    due: Instant::now() + Duration::from_millis(delay_ms),
                    to,
                    bytes,
                };
                if let Err(TrySendError::Full(_)) = tx.try_send(d) {
                    log::debug!("network delay queue full; dropping a message to {to}");
                }
                return Ok(());
            }
        }
        sink.deliver(bytes);
        Ok(())
    }

    fn send_snapshot(
        &self,
        from: u64,
        to: u64,
        message: Vec<u8>,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(), TransportError> {
        let sink = self.links.lock().route(from, to);
        let sink = sink.ok_or(TransportError::Unreachable(to))?;
        sink.deliver_snapshot(message, chunks)
    }
}
