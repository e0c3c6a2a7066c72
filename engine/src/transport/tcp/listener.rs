//! The accept loop (`keel-listen-<id>`): takes connections off the listening socket,
//! registers each in the handshaking pool (`max_handshaking_conns`, see `conns`), and
//! gives each one registered a thread of its own (see `inbound`). The socket is
//! non-blocking and polled, so the loop notices shutdown within one poll interval
//! without any wake-up trick.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::conns::Registered;
use super::inbound;
use super::shared::Inner;

// How long the loop sleeps when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Runs until the transport stops, then closes the listening socket.
pub(crate) fn run(inner: Arc<Inner>, listener: TcpListener) {
    // Ends when the transport stops; each pass accepts one connection or sleeps.
    while !inner.is_stopping() {
        match listener.accept() {
            Ok((stream, from)) => accept(&inner, stream, from),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors and the like: keep serving existing
                // connections and try again shortly.
                log::warn!("node {}: accepting a connection: {e}", inner.id);
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn accept(inner: &Arc<Inner>, stream: TcpStream, from: SocketAddr) {
    // Accepted sockets must block (with timeouts); do not rely on them not inheriting
    // the listener's mode.
    if let Err(e) = stream.set_nonblocking(false) {
        log::warn!("node {}: connection from {from}: {e}", inner.id);
        return;
    }
    let max = inner.config.max_handshaking_conns;
    let guard = match inner.conns.register_inbound(&stream, max) {
        Registered::Yes(guard) => guard,
        Registered::Evicted(guard) => {
            inner.stats.evicted();
            log::warn!(
                "node {}: {max} connections still handshaking; closed the oldest to make \
                 room for one from {from}",
                inner.id
            );
            guard
        }
        Registered::No => {
            inner.stats.refused();
            log::warn!(
                "node {}: refusing a connection from {from}: {max} connections still \
                 handshaking, all opened in the last {} ms",
                inner.id,
                super::conns::EVICTION_GRACE.as_millis()
            );
            return;
        }
    };
    let worker = Arc::clone(inner);
    let spawned = std::thread::Builder::new()
        .name(format!("keel-in-{}", inner.id))
        .spawn(move || inbound::serve(worker, stream, guard, from));
    match spawned {
        Ok(handle) => inner.conns.add_thread(handle),
        Err(e) => log::warn!(
            "node {}: no thread for a connection from {from}: {e}",
            inner.id
        ),
    }
}
