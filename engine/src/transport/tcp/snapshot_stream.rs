//! Sending one snapshot on a connection of its own, dialled for it on the caller's
//! (snapshot sender) thread: the encoded `Snapshot` message, the chunk frames pulled
//! from the `ChunkSource`, an end frame, then the receiver's result. Message
//! connections never wait behind it. A receiver that fails early answers at once; the
//! sender looks for that answer between chunks and stops streaming.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_raft::MessageType;

use super::dial::dial;
use super::frame::{self, DeadlineReader, FrameType};
use super::handshake::ConnKind;
use super::route::route_of;
use super::shared::Inner;
use crate::transport::{ChunkSource, TransportError};

fn failed(text: impl Into<String>) -> TransportError {
    TransportError::Snapshot(text.into())
}

/// Streams `message` and `chunks` to node `to` and returns the receiver's verdict.
pub(crate) fn send(
    inner: &Arc<Inner>,
    to: u64,
    message: Vec<u8>,
    chunks: &mut dyn ChunkSource,
) -> Result<(), TransportError> {
    let cfg = &inner.config;
    if inner.is_stopping() {
        return Err(TransportError::Unreachable(to));
    }
    match route_of(&message) {
        Some(r) if r.from == inner.id && r.to == to && r.msg_type == MessageType::Snapshot => {}
        _ => {
            return Err(failed(
                "not a snapshot message from this node to its destination",
            ))
        }
    }
    if message.len() > cfg.max_frame_bytes as usize {
        return Err(failed(format!(
            "snapshot message of {} bytes exceeds max_frame_bytes",
            message.len()
        )));
    }
    let addr = inner.peer_addr(to).ok_or(TransportError::Unreachable(to))?;
    let mut guard = None;
    let stream = dial(inner, to, &addr, ConnKind::Snapshot, |s| {
        // Tagged with the peer so that removing the peer cuts the stream.
        guard = inner.conns.register_outbound(s, to);
        if guard.is_none() {
            // Shutting down: cut the dial short.
            let _ = s.shutdown(Shutdown::Both);
        }
    })
    .map_err(|e| {
        log::warn!("node {}: snapshot to node {to}: {e}", inner.id);
        TransportError::Unreachable(to)
    })?;
    let result = stream_to(inner, &stream, &message, chunks);
    let _ = stream.shutdown(Shutdown::Both);
    drop(guard);
    result
}

fn stream_to(
    inner: &Inner,
    stream: &TcpStream,
    message: &[u8],
    chunks: &mut dyn ChunkSource,
) -> Result<(), TransportError> {
    let max = inner.config.max_frame_bytes as usize;
    let mut w = stream;
    let mut buf = Vec::new();
    frame::encode(&mut buf, FrameType::SnapshotMessage, message);
    let mut write_failure = w.write_all(&buf).err();
    // Bounded by the chunk source, which ends after the snapshot's trailer.
    while write_failure.is_none() {
        if inner.is_stopping() {
            return Err(failed("transport shutting down"));
        }
        if answered_early(stream) {
            break;
        }
        buf.clear();
        let last = match chunks.next_frame()? {
            Some(chunk) if chunk.len() > max => {
                return Err(failed(format!(
                    "chunk frame of {} bytes exceeds max_frame_bytes ({max})",
                    chunk.len()
                )))
            }
            Some(chunk) => {
                frame::encode(&mut buf, FrameType::Chunk, &chunk);
                false
            }
            None => {
                frame::encode(&mut buf, FrameType::ChunkEnd, &[]);
                true
            }
        };
        write_failure = w.write_all(&buf).err();
        if last {
            break;
        }
    }
    // Even after a failed write the receiver may have answered (it refused the stream
    // and closed): its reason beats our broken pipe.
    let wait = if write_failure.is_some() {
        Duration::from_millis(inner.config.read_timeout_ms.min(1_000))
    } else {
        Duration::from_millis(inner.config.snapshot_timeout_ms)
    };
    match read_result(stream, Instant::now() + wait) {
        Ok(r) => r,
        Err(e) => Err(failed(match write_failure {
            Some(w) => format!("sending the snapshot: {w}"),
            None => format!("waiting for the snapshot result: {e}"),
        })),
    }
}

// Whether the receiver has already written something (its result, or a close).
fn answered_early(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut one = [0u8; 1];
    let seen = match stream.peek(&mut one) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    // If this fails the next write or read fails too, and reports it.
    let _ = stream.set_nonblocking(false);
    seen
}

fn read_result(
    stream: &TcpStream,
    deadline: Instant,
) -> Result<Result<(), TransportError>, String> {
    let mut r = DeadlineReader::new(stream, deadline);
    let (ty, payload) = frame::read_frame(&mut r, 64 << 10).map_err(|e| e.to_string())?;
    if ty != FrameType::SnapshotResult {
        return Err(format!("expected the snapshot result, got a {ty:?} frame"));
    }
    match payload.split_first() {
        Some((0, _)) => Ok(Ok(())),
        Some((1, text)) => Ok(Err(failed(String::from_utf8_lossy(text).into_owned()))),
        _ => Err("malformed snapshot result".into()),
    }
}
