//! One peer as the transport holds it: the sending end of its queue, bounded in count
//! (`queue_len`) and in bytes (`queue_max_bytes`, a [`ByteBudget`] each queued message
//! holds its share of until the writer has framed it), the [`Link`] its writer thread
//! shares, and that thread's handle. The thread itself is `peer_writer`'s.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;

use crate::budget::{ByteBudget, Charged};

/// What the writer thread and the transport share about one peer.
pub(crate) struct Link {
    /// Where to dial; may change at runtime (`add_peer` with a new address).
    pub(crate) addr: Mutex<String>,
    pub(super) connected: AtomicBool,
    // Set by `Peer::stop` before it cuts the socket, so a dial finishing later does
    // not go on to a handshake.
    pub(super) stopped: AtomicBool,
    // The live socket, so `stop` and an address change can cut a blocked write.
    pub(super) stream: Mutex<Option<TcpStream>>,
}

impl Link {
    /// Whether a handshaken connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    // Breaks the current connection (the writer notices and redials or stops).
    pub(super) fn cut(&self) {
        if let Some(s) = self.stream.lock().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Outcome of `Peer::try_send`.
pub(crate) enum Queued {
    /// In the queue.
    Yes,
    /// Dropped: the queue is full (the writer is behind or the peer is slow).
    Full,
    /// Dropped: there is no live connection to the peer.
    NotConnected,
}

/// One peer: the sending end of its queue and its writer thread.
pub(crate) struct Peer {
    pub(crate) link: Arc<Link>,
    pub(super) queue: Sender<Charged<Vec<u8>>>,
    pub(super) queue_budget: Arc<ByteBudget>,
    pub(super) thread: JoinHandle<()>,
}

impl Peer {
    /// Queues one encoded message without blocking.
    pub(crate) fn try_send(&self, bytes: Vec<u8>) -> Queued {
        if !self.link.is_connected() {
            return Queued::NotConnected;
        }
        let len = bytes.len() as u64;
        let Ok(charged) = self.queue_budget.try_wrap(bytes, len) else {
            return Queued::Full;
        };
        // A refused message gives its bytes back as it is dropped.
        match self.queue.try_send(charged) {
            Ok(()) => Queued::Yes,
            Err(TrySendError::Full(_)) => Queued::Full,
            Err(TrySendError::Disconnected(_)) => Queued::NotConnected,
        }
    }

    /// Points the peer at a new address; the current connection is cut so the next
    /// dial uses it.
    pub(crate) fn set_addr(&self, addr: String) {
        let mut current = self.link.addr.lock();
        if *current != addr {
            *current = addr;
            drop(current);
            self.link.cut();
        }
    }

    /// Stops the writer and joins it. Closing the queue ends its wait; cutting the
    /// socket ends a blocked write or handshake. Only a connect in progress cannot be
    /// interrupted, so this takes at most `connect_timeout_ms`.
    pub(crate) fn stop(self) {
        join_writer(self.begin_stop());
    }

    /// Tells the writer to stop and returns its thread to join, so several peers can
    /// be stopped at once.
    pub(crate) fn begin_stop(self) -> JoinHandle<()> {
        let Peer {
            link,
            queue,
            thread,
            ..
        } = self;
        drop(queue);
        link.stopped.store(true, Ordering::SeqCst);
        link.cut();
        thread
    }
}

/// Joins a writer thread returned by [`Peer::begin_stop`].
pub(crate) fn join_writer(thread: JoinHandle<()>) {
    if thread.join().is_err() {
        log::error!("a TCP writer thread panicked");
    }
}
