//! The state machine's side of a snapshot: producing and consuming its bytes as a stream.
//!
//! The store and the transfer code only ever see a byte stream, so any state machine
//! plugs in (the reference `BTreeMap` in [`crate::memory`], and the engine's memory and
//! RocksDB state machines, which stream their records in that module's layout) and none
//! of them has to hold its whole image in memory.

use std::io::{self, Read, Write};

/// Writes a point-in-time image of a state machine as a byte stream.
///
/// The image must be consistent as of one applied index: the caller either holds the
/// state machine still while this runs or gives the producer an immutable view (a
/// cloned persistent map, a RocksDB snapshot).
pub trait SnapshotProducer {
    /// Writes the image into `out`. `out` buffers at most one chunk, so writing in small
    /// pieces is fine.
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()>;
}

/// Rebuilds a state machine from a byte stream written by the matching producer.
pub trait SnapshotConsumer {
    /// The rebuilt state. It is built beside the live state and handed back only after
    /// the whole stream has passed its final checksum, so a damaged or interrupted
    /// stream never leaves a half-restored state machine behind.
    type Image;

    /// Reads one whole image from `input`. An error of kind `InvalidData` from `input`
    /// means the stream itself is damaged; return it unchanged.
    fn read_snapshot(&self, input: &mut dyn Read) -> io::Result<Self::Image>;
}
