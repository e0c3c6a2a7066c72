//! Sending and receiving a snapshot chunk by chunk.
//!
//! The sender reads a stored snapshot's frames one at a time; the engine ships each
//! [`Chunk`] (as [`Chunk::encode`] bytes) in whatever message it likes. The receiver
//! checks each chunk as it arrives (its CRC, its sequence number, its kind and size),
//! appends it to a temporary file and, once the trailer's totals and whole-snapshot
//! checksum match, syncs the file and renames it into the store. Any bad, missing,
//! duplicated or reordered chunk aborts the transfer: the temporary file is removed
//! and the receiver refuses further chunks.
//!
//! Resuming: a connection that breaks without a bad chunk leaves the receiver intact.
//! Open a new sender at [`SnapshotReceiver::next_seq`] and carry on from there. A
//! receiver made with [`SnapshotStore::receiver_for`] (for the snapshot the leader's
//! snapshot message announced) goes further: its partial file survives the receiver
//! and even a crash, and the next `receiver_for` of the same snapshot re-checks what
//! the file holds, cuts any torn tail, and resumes after the last good chunk.
//!
//! The Raft message itself carries only the snapshot's metadata (the log cache's
//! `Storage::snapshot` returns empty `data`); the chunks travel beside it.
//!
//! # Example
//!
//! A transfer that breaks off after two chunks and resumes where it stopped:
//!
//! ```
//! use std::sync::Arc;
//! use keel_fs::SimFs;
//! use keel_raft::SnapshotMetadata;
//! use keel_snapshot::memory::{Map, MapConsumer};
//! use keel_snapshot::{ReceiveStatus, SnapshotStore, StoreOptions};
//!
//! # fn main() -> keel_snapshot::Result<()> {
//! // Small chunks so that this snapshot takes several.
//! let opts = StoreOptions { chunk_size_bytes: 64, ..StoreOptions::default() };
//! let leader = SnapshotStore::open(SimFs::new(1).shared(), "/leader/snap", opts)?;
//! let follower = Arc::new(SnapshotStore::open(SimFs::new(2).shared(), "/follower/snap", opts)?);
//!
//! let state: Map = (0..20u32).map(|i| (i.to_be_bytes().to_vec(), vec![b'v'; 30])).collect();
//! let meta = SnapshotMetadata { index: 100, term: 4, ..SnapshotMetadata::default() };
//! let saved = leader.save(&meta, &state)?;
//!
//! // The first attempt delivers two chunks; then the connection drops.
//! let mut sender = leader.sender(saved.id, 0)?;
//! let mut receiver = follower.receiver_for(&meta)?;
//! for _ in 0..2 {
//!     let chunk = sender.next_chunk()?.expect("more chunks");
//!     receiver.receive_frame(&chunk.encode())?;
//! }
//! drop(receiver); // its partial file stays
//!
//! // The retry picks up after the last chunk that arrived.
//! let mut receiver = follower.receiver_for(&meta)?;
//! assert_eq!(receiver.next_seq(), 2);
//! let mut sender = leader.sender(saved.id, receiver.next_seq())?;
//! let mut status = None;
//! while let Some(chunk) = sender.next_chunk()? {
//!     status = Some(receiver.receive(&chunk)?);
//! }
//! assert!(matches!(status, Some(ReceiveStatus::Installed { .. })));
//! let loaded = follower.load_newest(&MapConsumer::default())?.expect("installed");
//! assert_eq!(loaded.image, state);
//! # Ok(())
//! # }
//! ```

use std::io::BufReader;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use keel_fs::FsFile;
use keel_raft::SnapshotMetadata;

use crate::chunk::{
    Accepted, Chunk, ChunkKind, FrameReader, StreamHeader, StreamValidator, FRAME_OVERHEAD_BYTES,
};
use crate::error::{Result, SnapshotError};
use crate::file_io::{FileReader, FileWriter};
use crate::store::{SnapshotId, SnapshotStore, PARTIAL_EXT, TMP_EXT};

// The store's transfer endpoints live here, beside the sender and receiver they make,
// so that the store does not import this module back.
impl SnapshotStore {
    /// A sender streaming snapshot `id` chunk by chunk, starting at chunk `from_seq`
    /// (0 for a fresh transfer, the receiver's [`next_seq`](SnapshotReceiver::next_seq)
    /// to resume one).
    pub fn sender(&self, id: SnapshotId, from_seq: u64) -> Result<SnapshotSender> {
        let path = self.path_of(id);
        if !self
            .fs
            .exists(&path)
            .map_err(|e| SnapshotError::io(&path, e))?
        {
            return Err(SnapshotError::NotFound {
                term: id.term,
                index: id.index,
            });
        }
        let file = self
            .fs
            .open_readonly(&path)
            .map_err(|e| SnapshotError::io(&path, e))?;
        SnapshotSender::new(file, path, from_seq)
    }

    /// A receiver that writes an incoming chunk stream into a temporary file in this
    /// directory and installs it as a snapshot once the final check passes.
    pub fn receiver(self: &Arc<Self>) -> Result<SnapshotReceiver> {
        let n = self.next_receive_id.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("receive-{n:08}{TMP_EXT}"));
        let file = self.create_fresh(&tmp)?;
        Ok(SnapshotReceiver::new(Arc::clone(self), file, tmp, None))
    }

    /// A receiver for the snapshot `expected` (as announced by the leader's snapshot
    /// message): a stream carrying any other snapshot is refused. If an earlier
    /// attempt left a partial file for it (even across a crash), the receiver resumes
    /// after its last good chunk; send from [`SnapshotReceiver::next_seq`].
    pub fn receiver_for(self: &Arc<Self>, expected: &SnapshotMetadata) -> Result<SnapshotReceiver> {
        let id = SnapshotId::of(expected);
        let partial = self.dir.join(format!("{}{PARTIAL_EXT}", id.file_name()));
        self.remove_partials_below(id.index)?;
        let exists = self
            .fs
            .exists(&partial)
            .map_err(|e| SnapshotError::io(&partial, e))?;
        if exists {
            let file = self
                .fs
                .open(&partial)
                .map_err(|e| SnapshotError::io(&partial, e))?;
            return SnapshotReceiver::resume(Arc::clone(self), file, partial, expected.clone());
        }
        let file = self
            .fs
            .create(&partial)
            .map_err(|e| SnapshotError::io(&partial, e))?;
        // Make the partial file's name durable so what it gathers can outlive a crash.
        self.sync_dir()?;
        Ok(SnapshotReceiver::new(
            Arc::clone(self),
            file,
            partial,
            Some(expected.clone()),
        ))
    }
}

/// Streams a stored snapshot as chunks.
#[derive(Debug)]
pub struct SnapshotSender {
    frames: FrameReader<BufReader<FileReader>>,
    path: PathBuf,
    next_seq: u64,
    done: bool,
}

impl SnapshotSender {
    pub(crate) fn new(file: Arc<dyn FsFile>, path: PathBuf, from_seq: u64) -> Result<Self> {
        let reader = FileReader::new(file).map_err(|e| SnapshotError::io(&path, e))?;
        let mut frames = FrameReader::new(BufReader::with_capacity(64 << 10, reader));
        if from_seq > 0 {
            frames
                .skip_to(from_seq)
                .map_err(|e| damaged_or_io(e, &path))?;
        }
        Ok(SnapshotSender {
            frames,
            path,
            next_seq: from_seq,
            done: false,
        })
    }

    /// The sequence number of the next chunk [`next_chunk`](Self::next_chunk) returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next chunk, or `None` once the trailer has been sent. Each chunk's CRC is
    /// checked on the way out, so a damaged stored file fails here rather than at
    /// the far end.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let chunk = self
            .frames
            .next_chunk()
            .map_err(|e| damaged_or_io(e, &self.path))?
            .ok_or_else(|| {
                damaged_or_io(
                    SnapshotError::Truncated {
                        next_seq: self.next_seq,
                    },
                    &self.path,
                )
            })?;
        if chunk.seq != self.next_seq {
            return Err(damaged_or_io(
                SnapshotError::ChunkOutOfOrder {
                    expected: self.next_seq,
                    got: chunk.seq,
                },
                &self.path,
            ));
        }
        self.next_seq += 1;
        self.done = chunk.kind == ChunkKind::Trailer;
        Ok(Some(chunk))
    }
}

fn damaged_or_io(e: SnapshotError, path: &Path) -> SnapshotError {
    match e {
        SnapshotError::Stream(source) => SnapshotError::io(path, source),
        e if e.is_corruption() => SnapshotError::Damaged {
            path: path.to_path_buf(),
            reason: Box::new(e),
        },
        e => e,
    }
}

/// Where a transfer stands after a chunk was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveStatus {
    /// Send the chunk with this sequence number next.
    NeedMore {
        /// The next chunk wanted.
        next_seq: u64,
    },
    /// The snapshot passed its final check and is installed in the store.
    Installed {
        /// Its id.
        id: SnapshotId,
        /// Its metadata.
        metadata: SnapshotMetadata,
        /// Its file.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Receiving,
    Installed,
    Aborted,
}

/// Receives one snapshot chunk by chunk into a temporary file of a store.
///
/// Dropping an unfinished receiver removes its temporary file, except the partial file
/// of a [`SnapshotStore::receiver_for`] receiver, which is kept so the transfer can
/// resume. A bad chunk removes either.
#[derive(Debug)]
pub struct SnapshotReceiver {
    store: Arc<SnapshotStore>,
    writer: FileWriter,
    tmp: PathBuf,
    validator: StreamValidator,
    expected: Option<SnapshotMetadata>,
    bytes_written: u64,
    bytes_synced: u64,
    phase: Phase,
}

impl SnapshotReceiver {
    pub(crate) fn new(
        store: Arc<SnapshotStore>,
        file: Arc<dyn FsFile>,
        tmp: PathBuf,
        expected: Option<SnapshotMetadata>,
    ) -> SnapshotReceiver {
        SnapshotReceiver {
            store,
            writer: FileWriter::new(file),
            tmp,
            validator: StreamValidator::new(),
            expected,
            bytes_written: 0,
            bytes_synced: 0,
            phase: Phase::Receiving,
        }
    }

    /// A receiver continuing the partial file `tmp` of snapshot `expected`: replays
    /// its frames through the validator, keeps the longest valid prefix (stopping
    /// before the trailer, which the sender resends), and cuts the rest.
    pub(crate) fn resume(
        store: Arc<SnapshotStore>,
        file: Arc<dyn FsFile>,
        tmp: PathBuf,
        expected: SnapshotMetadata,
    ) -> Result<SnapshotReceiver> {
        let reader = FileReader::new(Arc::clone(&file)).map_err(|e| SnapshotError::io(&tmp, e))?;
        let mut frames = FrameReader::new(BufReader::with_capacity(256 << 10, reader));
        let mut validator = StreamValidator::new();
        let mut good_bytes = 0u64;
        let mut payload = Vec::new();
        // Any read error, damaged frame or rule violation just ends the usable prefix.
        while let Ok(Some((seq, kind))) = frames.read_into(&mut payload) {
            if kind == ChunkKind::Trailer {
                break;
            }
            match validator.accept(seq, kind, &payload) {
                Ok(Accepted::Header(h)) if h.metadata != expected => {
                    validator = StreamValidator::new();
                    break;
                }
                Ok(_) => good_bytes += (FRAME_OVERHEAD_BYTES + payload.len()) as u64,
                Err(_) => break,
            }
        }
        if validator.next_seq() == 0 {
            good_bytes = 0;
        }
        file.set_len(good_bytes)
            .map_err(|e| SnapshotError::io(&tmp, e))?;
        if good_bytes > 0 {
            log::info!(
                "resuming snapshot transfer into {} at chunk {} ({good_bytes} bytes kept)",
                tmp.display(),
                validator.next_seq()
            );
        }
        let mut rx = SnapshotReceiver::new(store, file, tmp, Some(expected));
        rx.validator = validator;
        rx.bytes_written = good_bytes;
        rx.bytes_synced = good_bytes;
        Ok(rx)
    }

    /// The sequence number of the next chunk wanted: where a resumed sender starts.
    pub fn next_seq(&self) -> u64 {
        self.validator.next_seq()
    }

    /// The snapshot's header, once chunk 0 has arrived.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.validator.header()
    }

    /// File bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_written
    }

    /// Accepts one encoded frame as sent over the wire.
    pub fn receive_frame(&mut self, frame: &[u8]) -> Result<ReceiveStatus> {
        self.check_open()?;
        match Chunk::decode(frame) {
            Ok(chunk) => self.accept(&chunk, frame),
            Err(e) => Err(self.abort_with(e)),
        }
    }

    /// Accepts one chunk.
    pub fn receive(&mut self, chunk: &Chunk) -> Result<ReceiveStatus> {
        self.check_open()?;
        let frame = chunk.encode();
        self.accept(chunk, &frame)
    }

    /// Gives up on the transfer, removing the temporary file.
    pub fn abort(mut self) {
        self.cleanup();
    }

    fn check_open(&self) -> Result<()> {
        match self.phase {
            Phase::Receiving => Ok(()),
            Phase::Installed => Err(SnapshotError::TransferEnded("already installed")),
            Phase::Aborted => Err(SnapshotError::TransferEnded("aborted after an error")),
        }
    }

    fn accept(&mut self, chunk: &Chunk, frame: &[u8]) -> Result<ReceiveStatus> {
        let limit_bytes = self.store.options().max_receive_bytes;
        if self.bytes_written.saturating_add(frame.len() as u64) > limit_bytes {
            return Err(self.abort_with(SnapshotError::TooLarge { limit_bytes }));
        }
        let end = match self.validator.accept(chunk.seq, chunk.kind, &chunk.payload) {
            Ok(Accepted::End(_)) => true,
            Ok(Accepted::Header(h)) => match &self.expected {
                Some(want) if *want != h.metadata => {
                    let e = SnapshotError::WrongSnapshot {
                        expected_index: want.index,
                        expected_term: want.term,
                        got_index: h.metadata.index,
                        got_term: h.metadata.term,
                    };
                    return Err(self.abort_with(e));
                }
                _ => false,
            },
            Ok(Accepted::Data(_)) => false,
            Err(e) => return Err(self.abort_with(e)),
        };
        if let Err(e) = self.writer.file().write_at(frame, self.bytes_written) {
            return Err(self.abort_with(SnapshotError::io(&self.tmp, e)));
        }
        self.bytes_written += frame.len() as u64;
        let sync_every = self.store.options().receive_sync_every_bytes;
        if !end && self.expected.is_some() && self.bytes_written - self.bytes_synced >= sync_every {
            if let Err(e) = self.writer.file().sync_data() {
                return Err(self.abort_with(SnapshotError::io(&self.tmp, e)));
            }
            self.bytes_synced = self.bytes_written;
        }
        if !end {
            return Ok(ReceiveStatus::NeedMore {
                next_seq: self.validator.next_seq(),
            });
        }
        match self.install() {
            Ok(status) => Ok(status),
            Err(e) => Err(self.abort_with(e)),
        }
    }

    fn install(&mut self) -> Result<ReceiveStatus> {
        let Some(header) = self.validator.header() else {
            // A complete stream always had a header; report rather than panic.
            return Err(SnapshotError::TransferEnded("complete without a header"));
        };
        let metadata = header.metadata.clone();
        let id = SnapshotId::of(&metadata);
        self.writer
            .file()
            .sync_data()
            .map_err(|e| SnapshotError::io(&self.tmp, e))?;
        let path = self.store.install(&self.tmp, id)?;
        self.phase = Phase::Installed;
        Ok(ReceiveStatus::Installed { id, metadata, path })
    }

    fn abort_with(&mut self, e: SnapshotError) -> SnapshotError {
        log::warn!(
            "aborting snapshot transfer into {}: {e}",
            self.tmp.display()
        );
        self.cleanup();
        e
    }

    fn cleanup(&mut self) {
        if self.phase == Phase::Receiving {
            self.phase = Phase::Aborted;
            if let Err(e) = self.store.fs().remove_file(&self.tmp) {
                log::warn!("could not remove {}: {e}", self.tmp.display());
            }
        }
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        // A resumable receiver's partial file is worth keeping; an anonymous one's
        // could never be found again.
        if self.expected.is_none() {
            self.cleanup();
        }
    }
}
