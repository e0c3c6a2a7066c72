//! The registry of open sockets the transport does not own through a peer writer:
//! inbound connections and outbound snapshot streams. It bounds inbound connections
//! in two separate pools, lets `remove_peer` and `shutdown` cut them (a blocked read
//! or write returns at once when its socket is shut down), and keeps the inbound
//! threads' handles so shutdown can join them.
//!
//! The two pools: connections still handshaking (at most `max_handshaking_conns`) and
//! connections whose hello was accepted (at most `max_inbound_conns`). A connection
//! that never sends a hello therefore never takes a slot a peer needs: when the
//! handshaking pool is full, a newcomer evicts the oldest handshaking connection (a
//! peer sends its hello at once, so the oldest is the likeliest to be idle), unless
//! every one of them is younger than [`EVICTION_GRACE`], in which case the newcomer is
//! refused and its dialer retries.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

struct Entry {
    stream: TcpStream,
    inbound: bool,
    // The peer the handshake proved, once it did.
    peer: Option<u64>,
    // When it was registered (the oldest handshaking connection is evicted first).
    opened: Instant,
    // Cut to make room for a newer handshake; its thread is on its way out.
    evicted: bool,
}

impl Entry {
    fn is_handshaking(&self) -> bool {
        self.inbound && self.peer.is_none() && !self.evicted
    }
    fn is_authenticated(&self) -> bool {
        self.inbound && self.peer.is_some() && !self.evicted
    }
}

/// A handshaking connection younger than this is never evicted for a newcomer: a
/// peer's hello arrives within a round trip of its connect, so a flood of new
/// connections cannot push a real peer's out before it had the time to say hello.
pub(crate) const EVICTION_GRACE: Duration = Duration::from_millis(100);

/// What [`Conns::register_inbound`] did with a new connection.
pub(crate) enum Registered {
    /// Registered, with room to spare.
    Yes(ConnGuard),
    /// Registered in place of the oldest handshaking connection, which was cut.
    Evicted(ConnGuard),
    /// Refused: the registry is closed, or every handshaking slot holds a connection
    /// younger than [`EVICTION_GRACE`].
    No,
}

#[derive(Default)]
struct State {
    next_no: u64,
    open: HashMap<u64, Entry>,
    threads: Vec<JoinHandle<()>>,
    closed: bool,
}

/// Open connections and the threads serving inbound ones.
#[derive(Default)]
pub(crate) struct Conns {
    state: Mutex<State>,
}

/// Keeps a connection in the registry; dropping it removes the entry.
pub(crate) struct ConnGuard {
    conns: Arc<Conns>,
    no: u64,
}

impl ConnGuard {
    /// Moves the connection from the handshaking pool to the authenticated one,
    /// recording the peer the handshake proved so `close_peer` finds it. False, and the
    /// connection must be refused, when `max_authenticated` connections are already
    /// authenticated or this one was evicted meanwhile.
    pub(crate) fn authenticate(&self, peer: u64, max_authenticated: usize) -> bool {
        let mut st = self.conns.state.lock();
        let authenticated = st.open.values().filter(|e| e.is_authenticated()).count();
        match st.open.get_mut(&self.no) {
            Some(e) if !e.evicted && authenticated < max_authenticated => {
                e.peer = Some(peer);
                true
            }
            _ => false,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.state.lock().open.remove(&self.no);
    }
}

impl Conns {
    /// Registers an outbound snapshot stream to `peer`, or refuses it (`None`) once the
    /// registry is closed.
    pub(crate) fn register_outbound(
        self: &Arc<Self>,
        stream: &TcpStream,
        peer: u64,
    ) -> Option<ConnGuard> {
        let clone = stream.try_clone().ok()?;
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        let guard = self.insert(&mut st, clone, false);
        if let Some(e) = st.open.get_mut(&guard.no) {
            e.peer = Some(peer);
        }
        Some(guard)
    }

    /// Registers a freshly accepted connection in the handshaking pool, which holds at
    /// most `max_handshaking`; see the module docs for what happens when it is full.
    pub(crate) fn register_inbound(
        self: &Arc<Self>,
        stream: &TcpStream,
        max_handshaking: usize,
    ) -> Registered {
        let Ok(clone) = stream.try_clone() else {
            return Registered::No;
        };
        let mut st = self.state.lock();
        if st.closed {
            return Registered::No;
        }
        let handshaking = st.open.values().filter(|e| e.is_handshaking()).count();
        if handshaking < max_handshaking {
            return Registered::Yes(self.insert(&mut st, clone, true));
        }
        let oldest = st
            .open
            .iter_mut()
            .filter(|(_, e)| e.is_handshaking())
            .min_by_key(|(&no, _)| no)
            .map(|(_, e)| e);
        match oldest {
            Some(e) if e.opened.elapsed() >= EVICTION_GRACE => {
                e.evicted = true;
                let _ = e.stream.shutdown(Shutdown::Both);
                Registered::Evicted(self.insert(&mut st, clone, true))
            }
            _ => Registered::No,
        }
    }

    fn insert(self: &Arc<Self>, st: &mut State, clone: TcpStream, inbound: bool) -> ConnGuard {
        let no = st.next_no;
        st.next_no += 1;
        st.open.insert(
            no,
            Entry {
                stream: clone,
                inbound,
                peer: None,
                opened: Instant::now(),
                evicted: false,
            },
        );
        ConnGuard {
            conns: Arc::clone(self),
            no,
        }
    }

    /// Keeps an inbound thread's handle for `join_all`, forgetting those that ended.
    pub(crate) fn add_thread(&self, handle: JoinHandle<()>) {
        let mut st = self.state.lock();
        let (done, running): (Vec<_>, Vec<_>) = st.threads.drain(..).partition(|t| t.is_finished());
        st.threads = running;
        st.threads.push(handle);
        drop(st);
        for t in done {
            if t.join().is_err() {
                log::error!("a TCP connection thread panicked");
            }
        }
    }

    /// Cuts every connection with `peer`.
    pub(crate) fn close_peer(&self, peer: u64) {
        for e in self.state.lock().open.values() {
            if e.peer == Some(peer) {
                let _ = e.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Cuts every connection, refuses new ones, and joins the inbound threads (each
    /// returns promptly once its socket is shut down).
    pub(crate) fn close_all_and_join(&self) {
        let threads = {
            let mut st = self.state.lock();
            st.closed = true;
            for e in st.open.values() {
                let _ = e.stream.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut st.threads)
        };
        for t in threads {
            if t.join().is_err() {
                log::error!("a TCP connection thread panicked");
            }
        }
    }
}
