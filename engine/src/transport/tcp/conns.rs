//! The registry of open sockets the transport does not own through a peer writer:
//! inbound connections and outbound snapshot streams. It bounds how many inbound
//! connections are served at once, lets `remove_peer` and `shutdown` cut them (a
//! blocked read or write returns at once when its socket is shut down), and keeps the
//! inbound threads' handles so shutdown can join them.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

struct Entry {
    stream: TcpStream,
    inbound: bool,
    // The peer the handshake proved, once it did.
    peer: Option<u64>,
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
    /// Records the peer the handshake proved, so `close_peer` finds the connection.
    pub(crate) fn set_peer(&self, peer: u64) {
        if let Some(e) = self.conns.state.lock().open.get_mut(&self.no) {
            e.peer = Some(peer);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.state.lock().open.remove(&self.no);
    }
}

impl Conns {
    /// Registers `stream`, or refuses it (`None`) once the registry is closed or, for
    /// an inbound one, when `max_inbound` are already open.
    pub(crate) fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
        inbound: bool,
        max_inbound: usize,
    ) -> Option<ConnGuard> {
        let clone = stream.try_clone().ok()?;
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        if inbound && st.open.values().filter(|e| e.inbound).count() >= max_inbound {
            return None;
        }
        let no = st.next_no;
        st.next_no += 1;
        st.open.insert(
            no,
            Entry {
                stream: clone,
                inbound,
                peer: None,
            },
        );
        Some(ConnGuard {
            conns: Arc::clone(self),
            no,
        })
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
