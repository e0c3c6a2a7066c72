//! Serving one inbound connection on its own thread (`keel-in-<id>`): check the
//! hello and answer it, then either read Raft messages and hand them to the node's
//! sink until the connection ends, or receive one snapshot stream and answer with its
//! result. Anything unexpected closes the connection with a warning; nothing a peer
//! sends can panic the node or keep the thread past the read deadline.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_raft::MessageType;

use super::conns::ConnGuard;
use super::frame::{self, FrameError, FrameType};
use super::handshake::{self, ConnKind, HandshakeError, Hello};
use super::route::route_of;
use super::shared::Inner;
use crate::transport::{ChunkSource, TransportError};

// Read buffer of a message connection: many small frames per read call.
const MESSAGE_READ_BUF_BYTES: usize = 64 << 10;
// Read buffer of a snapshot stream (chunks are ~1 MiB).
const SNAPSHOT_READ_BUF_BYTES: usize = 256 << 10;
// Longest snapshot result text sent back.
const MAX_RESULT_TEXT_BYTES: usize = 4096;

/// Why an inbound connection was closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("bad handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Serves `stream` until it ends; `guard` keeps it in the registry meanwhile.
pub(crate) fn serve(inner: Arc<Inner>, stream: TcpStream, guard: ConnGuard, from: SocketAddr) {
    let outcome = serve_inner(&inner, &stream, &guard);
    match outcome {
        Ok(()) | Err(Closed::Frame(FrameError::Closed)) => {
            log::debug!("node {}: connection from {from} closed", inner.id);
        }
        Err(e) => {
            match e {
                Closed::Refused(_) => inner.stats.refused(),
                _ => inner.stats.failed(),
            }
            if !inner.is_stopping() {
                log::warn!("node {}: closed connection from {from}: {e}", inner.id);
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve_inner(inner: &Inner, stream: &TcpStream, guard: &ConnGuard) -> Result<(), Closed> {
    let cfg = &inner.config;
    stream
        .set_write_timeout(Some(Duration::from_millis(cfg.write_timeout_ms)))
        .map_err(FrameError::from)?;
    // Its own, short deadline: until the hello is in, the connection holds one of the
    // few handshaking slots.
    let deadline = Instant::now() + Duration::from_millis(cfg.handshake_timeout_ms);
    let hello = handshake::read_hello(stream, deadline)?;
    let mut refused = refusal(inner, &hello);
    if refused.is_none() && !guard.authenticate(hello.from, cfg.max_inbound_conns) {
        refused = Some(format!(
            "{} peer connections open already (max_inbound_conns)",
            cfg.max_inbound_conns
        ));
    }
    if let Some(reason) = refused {
        // Best effort: the dialer learns why; the connection closes either way.
        let _ = handshake::answer(stream, false, inner.id, &reason);
        return Err(Closed::Refused(reason));
    }
    handshake::answer(stream, true, inner.id, "")?;
    stream
        .set_read_timeout(Some(Duration::from_millis(cfg.read_timeout_ms)))
        .map_err(FrameError::from)?;
    match hello.kind {
        ConnKind::Messages => read_messages(inner, stream, hello.from),
        ConnKind::Snapshot => receive_snapshot(inner, stream, hello.from),
    }
}

fn refusal(inner: &Inner, hello: &Hello) -> Option<String> {
    if hello.cluster_id != inner.config.cluster_id {
        return Some(format!(
            "wrong cluster id {:?} (this node is in cluster {:?})",
            hello.cluster_id, inner.config.cluster_id
        ));
    }
    if hello.to != inner.id {
        return Some(format!("this is node {}, not node {}", inner.id, hello.to));
    }
    if !inner.peers.read().contains_key(&hello.from) {
        return Some(format!("unknown sender id {}", hello.from));
    }
    if inner.is_stopping() {
        return Some("shutting down".into());
    }
    None
}

// Checks that a message's head matches the connection it came on.
fn check_route(inner: &Inner, payload: &[u8], peer: u64, snapshot: bool) -> Result<(), Closed> {
    let route = route_of(payload).ok_or_else(|| Closed::Protocol("undecodable message".into()))?;
    // A relayed request (proposal, read, leadership transfer) keeps the node that
    // asked as its sender; every other message must come from the connection's peer.
    if route.from != peer && !route.msg_type.is_relayable() {
        return Err(Closed::Protocol(format!(
            "message from node {} on node {peer}'s connection",
            route.from
        )));
    }
    if route.to != inner.id {
        return Err(Closed::Protocol(format!(
            "message for node {} sent to node {}",
            route.to, inner.id
        )));
    }
    // A snapshot message is only valid next to its chunks, which the sink installs
    // before raft sees the message.
    if (route.msg_type == MessageType::Snapshot) != snapshot {
        return Err(Closed::Protocol(format!(
            "{:?} message on a {} connection",
            route.msg_type,
            if snapshot { "snapshot" } else { "message" }
        )));
    }
    Ok(())
}

fn read_messages(inner: &Inner, stream: &TcpStream, peer: u64) -> Result<(), Closed> {
    let max = inner.config.max_frame_bytes;
    let mut r = BufReader::with_capacity(MESSAGE_READ_BUF_BYTES, stream);
    // Ends with the connection: on close, error, the read deadline, or shutdown.
    loop {
        if inner.is_stopping() {
            return Ok(());
        }
        let (ty, payload) = match frame::read_frame(&mut r, max) {
            Ok(f) => f,
            Err(FrameError::TimedOut) => {
                return Err(Closed::Protocol(format!(
                    "nothing received from node {peer} for {} ms",
                    inner.config.read_timeout_ms
                )))
            }
            Err(e) => return Err(e.into()),
        };
        match ty {
            FrameType::Ping => {}
            FrameType::Message => {
                check_route(inner, &payload, peer, false)?;
                inner.deliver(payload);
            }
            other => {
                return Err(Closed::Protocol(format!(
                    "unexpected {other:?} frame on a message connection"
                )))
            }
        }
    }
}

/// The chunk frames of a snapshot stream, read off the socket as the sink asks.
struct SocketChunks<'a, R: Read> {
    reader: &'a mut R,
    max_frame_bytes: u32,
    ended: bool,
    broken: bool,
}

impl<R: Read> ChunkSource for SocketChunks<'_, R> {
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        if self.ended {
            return Ok(None);
        }
        if self.broken {
            return Err(TransportError::Snapshot("the snapshot stream broke".into()));
        }
        match frame::read_frame(self.reader, self.max_frame_bytes) {
            Ok((FrameType::Chunk, payload)) => Ok(Some(payload)),
            Ok((FrameType::ChunkEnd, _)) => {
                self.ended = true;
                Ok(None)
            }
            Ok((other, _)) => {
                self.broken = true;
                Err(TransportError::Snapshot(format!(
                    "unexpected {other:?} frame in a snapshot stream"
                )))
            }
            Err(e) => {
                self.broken = true;
                Err(TransportError::Snapshot(format!(
                    "reading the snapshot stream: {e}"
                )))
            }
        }
    }
}

fn receive_snapshot(inner: &Inner, stream: &TcpStream, peer: u64) -> Result<(), Closed> {
    let cfg = &inner.config;
    let mut r = BufReader::with_capacity(SNAPSHOT_READ_BUF_BYTES, stream);
    let (ty, message) = frame::read_frame(&mut r, cfg.max_frame_bytes)?;
    if ty != FrameType::SnapshotMessage {
        return Err(Closed::Protocol(format!(
            "snapshot stream opened with a {ty:?} frame"
        )));
    }
    check_route(inner, &message, peer, true)?;
    let mut chunks = SocketChunks {
        reader: &mut r,
        max_frame_bytes: cfg.max_frame_bytes,
        ended: false,
        broken: false,
    };
    let result = match inner.sink() {
        Some(sink) => sink.deliver_snapshot(message, &mut chunks),
        None => Err(TransportError::Snapshot(format!(
            "node {} is not running",
            inner.id
        ))),
    };
    let (ended, broken) = (chunks.ended, chunks.broken);
    match &result {
        Ok(()) => log::info!("node {}: installed a snapshot from node {peer}", inner.id),
        Err(e) => log::warn!(
            "node {}: refused a snapshot from node {peer}: {e}",
            inner.id
        ),
    }
    if broken {
        // The stream itself failed; no one is listening for a result.
        return Ok(());
    }
    let mut payload = Vec::new();
    match &result {
        Ok(()) => payload.push(0),
        Err(e) => {
            payload.push(1);
            let text = match e {
                TransportError::Snapshot(text) => text.clone(),
                other => other.to_string(),
            };
            let mut cut = text.len().min(MAX_RESULT_TEXT_BYTES);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            payload.extend_from_slice(&text.as_bytes()[..cut]);
        }
    }
    let mut w = stream;
    w.write_all(&frame::encoded(FrameType::SnapshotResult, &payload))
        .map_err(FrameError::from)?;
    if !ended {
        drain(inner, &mut r, stream);
    }
    Ok(())
}

// Reads and discards what the sender still streams after we answered early, until its
// end frame, its close, or the read deadline, so closing does not reset the
// connection before the sender has read the result.
fn drain<R: Read>(inner: &Inner, r: &mut R, stream: &TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(inner.config.read_timeout_ms);
    // Bounded by the deadline: every read waits at most until it.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match frame::read_frame(r, inner.config.max_frame_bytes) {
            Ok((FrameType::ChunkEnd, _)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
