//! Opening a connection to a peer: resolve its address, connect within
//! `connect_timeout_ms`, and introduce ourselves within `read_timeout_ms`.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::handshake::{self, ConnKind, HandshakeError, Hello};
use super::shared::Inner;

// A host name resolving to more addresses than this is tried on the first few only.
const MAX_ADDRS_TRIED: usize = 4;

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The address does not resolve, or connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The last failure.
        source: io::Error,
    },
    /// Connected, but the handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The address dialled.
        addr: String,
        /// Why.
        source: HandshakeError,
    },
}

impl DialError {
    /// Whether the peer answered and refused us (wrong cluster, unknown id, ...).
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            DialError::Handshake {
                source: HandshakeError::Rejected(_) | HandshakeError::WrongPeer { .. },
                ..
            }
        )
    }
}

/// Connects to `addr`, expecting node `peer` there, for a connection of `kind`.
/// `on_connect` sees the socket before the handshake, so its owner can cut a dial
/// that hangs in the handshake.
pub(crate) fn dial(
    inner: &Inner,
    peer: u64,
    addr: &str,
    kind: ConnKind,
    on_connect: impl FnOnce(&TcpStream),
) -> Result<TcpStream, DialError> {
    let cfg = &inner.config;
    let connect_err = |source| DialError::Connect {
        addr: addr.to_string(),
        source,
    };
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut connected = None;
    for sa in addr
        .to_socket_addrs()
        .map_err(connect_err)?
        .take(MAX_ADDRS_TRIED)
    {
        match TcpStream::connect_timeout(&sa, Duration::from_millis(cfg.connect_timeout_ms)) {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let stream = connected.ok_or_else(|| connect_err(last_err))?;
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_millis(cfg.write_timeout_ms))));
    setup.map_err(connect_err)?;
    on_connect(&stream);
    let hello = Hello {
        kind,
        from: inner.id,
        to: peer,
        cluster_id: cfg.cluster_id.clone(),
    };
    let deadline = Instant::now() + Duration::from_millis(cfg.read_timeout_ms);
    handshake::introduce(&stream, &hello, deadline).map_err(|source| DialError::Handshake {
        addr: addr.to_string(),
        source,
    })?;
    Ok(stream)
}
