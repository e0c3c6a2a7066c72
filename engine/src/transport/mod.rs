//! How nodes reach each other. Raft messages travel as opaque bytes (raft-core's
//! codec); a snapshot travels as its encoded `Snapshot` message followed by a stream of
//! chunk frames (`keel_snapshot::transfer`), so no side holds a whole snapshot in memory.
//!
//! Each node registers a [`MessageSink`] under its id; a transport calls it when bytes
//! for that node arrive. The in-process transport ([`in_process`]) calls it directly;
//! the TCP transport ([`tcp`]) calls it from its connection threads.

pub mod in_process;
pub mod tcp;
mod traits;

pub use in_process::InProcessNetwork;
pub use tcp::{TcpConfig, TcpTransport};
pub use traits::{ChunkSource, MessageSink, Transport, TransportError};
