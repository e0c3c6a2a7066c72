//! The crate's typed errors.

use std::io;
use std::path::PathBuf;

/// Why a snapshot could not be written, read, received or installed.
///
/// The stream variants (`ChunkCrc` to `TrailingData`) say precisely what was wrong with a
/// chunk stream so a transfer can be aborted and reported; `Damaged` wraps one of them
/// with the file it was found in.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file-system call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An I/O error on a stream that is not a named file (a socket, a caller's writer).
    #[error("stream I/O error: {0}")]
    Stream(#[source] io::Error),
    /// A chunk's own CRC does not match its bytes.
    #[error("chunk {seq} failed its CRC check (stored {stored:#010x}, computed {computed:#010x})")]
    ChunkCrc {
        /// Sequence number the chunk claims (it may itself be damaged).
        seq: u64,
        /// CRC stored in the frame.
        stored: u32,
        /// CRC computed over the frame.
        computed: u32,
    },
    /// A chunk arrived ahead of its turn: the chunks between were lost or reordered.
    #[error("chunk {got} arrived while chunk {expected} was expected (missing or reordered)")]
    ChunkOutOfOrder {
        /// The next sequence number the receiver needs.
        expected: u64,
        /// The sequence number that arrived.
        got: u64,
    },
    /// A chunk that was already accepted arrived again.
    #[error("chunk {seq} arrived twice (next expected is {expected})")]
    DuplicateChunk {
        /// The repeated sequence number.
        seq: u64,
        /// The next sequence number the receiver needs.
        expected: u64,
    },
    /// A chunk's framing or contents are malformed (bad kind byte, magic, version,
    /// oversized length, undecodable metadata, a header where data belongs...).
    #[error("malformed chunk {seq}: {reason}")]
    Malformed {
        /// Sequence number of the offending chunk.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream ended before its trailer.
    #[error(
        "snapshot stream truncated: ended before the trailer (next chunk would be {next_seq})"
    )]
    Truncated {
        /// The chunk that was expected when the stream ended.
        next_seq: u64,
    },
    /// Bytes follow the trailer.
    #[error("snapshot stream has data after its trailer")]
    TrailingData,
    /// The trailer's totals or whole-snapshot checksum disagree with what was received.
    #[error("snapshot stream failed its final check: {0}")]
    FinalCheck(String),
    /// A snapshot file is damaged; `reason` says how.
    #[error("snapshot file {path} is damaged: {reason}")]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What was found wrong.
        reason: Box<SnapshotError>,
    },
    /// The requested snapshot is not in the store.
    #[error("snapshot {term:016x}-{index:016x} not found")]
    NotFound {
        /// Term of the requested snapshot.
        term: u64,
        /// Index of the requested snapshot.
        index: u64,
    },
    /// A transfer was used after it had failed or finished.
    #[error("snapshot transfer already ended: {0}")]
    TransferEnded(&'static str),
    /// The state machine's producer or consumer failed for reasons of its own (the
    /// chunk stream itself was sound).
    #[error("state machine snapshot error: {0}")]
    StateMachine(#[source] io::Error),
    /// An incoming stream carries a different snapshot from the one announced.
    #[error("expected snapshot {expected_term:016x}-{expected_index:016x}, the stream carries {got_term:016x}-{got_index:016x} (or other membership)")]
    WrongSnapshot {
        /// Index announced.
        expected_index: u64,
        /// Term announced.
        expected_term: u64,
        /// Index in the stream's header.
        got_index: u64,
        /// Term in the stream's header.
        got_term: u64,
    },
    /// An incoming snapshot grew past the receiver's size limit.
    #[error("incoming snapshot exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A caller passed an argument out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl SnapshotError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error says the stream's bytes are bad (as opposed to an I/O failure
    /// or a caller mistake): a stored file failing this way is renamed `.broken`.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            SnapshotError::ChunkCrc { .. }
                | SnapshotError::ChunkOutOfOrder { .. }
                | SnapshotError::DuplicateChunk { .. }
                | SnapshotError::Malformed { .. }
                | SnapshotError::Truncated { .. }
                | SnapshotError::TrailingData
                | SnapshotError::FinalCheck(_)
                | SnapshotError::Damaged { .. }
        )
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, SnapshotError>;
