//! Unit tests of the chunk stream.

use std::io::{self, Read, Write};

use raft_core::{ConfState, SnapshotMetadata};

use super::frame::frame_head;
use super::*;
use crate::error::{Result, SnapshotError};

fn meta() -> SnapshotMetadata {
    SnapshotMetadata {
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
        index: 42,
        term: 7,
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn stream(len: usize, chunk: u32) -> (Vec<u8>, StreamTrailer) {
    let mut w = ChunkWriter::new(Vec::new(), &meta(), chunk).unwrap();
    // Write in odd-sized pieces so chunk boundaries fall inside writes.
    for piece in data(len).chunks(7) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap()
}

fn chunks_of(bytes: &[u8]) -> Vec<Chunk> {
    let mut r = FrameReader::new(bytes);
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk().unwrap() {
        out.push(c);
    }
    out
}

fn read_all(bytes: &[u8]) -> Result<(Vec<u8>, StreamTrailer)> {
    let mut r = SnapshotReader::new(bytes)?;
    let mut out = Vec::new();
    if r.read_to_end(&mut out).is_err() {
        return Err(r.take_failure().expect("a failed read records its cause"));
    }
    let trailer = r.finish()?;
    Ok((out, trailer))
}

#[test]
fn write_sizes_do_not_change_the_bytes() {
    // A write of a whole chunk or more with nothing buffered is framed without copying
    // (ChunkWriter::emit_direct); the stream must be byte-for-byte what small writes
    // make, and the byte count must follow.
    let (expected, expected_trailer) = stream(100, 16);
    for piece in [1, 15, 16, 17, 32, 33, 100] {
        let mut w = ChunkWriter::new(Vec::new(), &meta(), 16).unwrap();
        for p in data(100).chunks(piece) {
            w.write_all(p).unwrap();
            assert_eq!(
                w.bytes_written(),
                w.inner().len() as u64,
                "pieces of {piece}"
            );
        }
        let (bytes, trailer) = w.finish().unwrap();
        assert_eq!(bytes, expected, "pieces of {piece}");
        assert_eq!(trailer, expected_trailer, "pieces of {piece}");
    }
}

#[test]
fn round_trip_at_every_boundary() {
    for len in [0, 1, 15, 16, 17, 48, 55] {
        let (bytes, trailer) = stream(len, 16);
        assert_eq!(trailer.data_bytes, len as u64);
        assert_eq!(trailer.data_chunks, len.div_ceil(16) as u64);
        let (back, t2) = read_all(&bytes).unwrap();
        assert_eq!(back, data(len));
        assert_eq!(t2, trailer);
        let reader = SnapshotReader::new(bytes.as_slice()).unwrap();
        assert_eq!(reader.header().metadata, meta());
        // Every data chunk but the last is full.
        let chunks = chunks_of(&bytes);
        let data_chunks: Vec<_> = chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Data)
            .collect();
        for c in data_chunks.iter().rev().skip(1) {
            assert_eq!(c.payload.len(), 16);
        }
    }
}

#[test]
fn every_flipped_byte_is_caught() {
    let (bytes, _) = stream(40, 16);
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        assert!(read_all(&bad).is_err(), "flip at {pos} went unnoticed");
    }
}

#[test]
fn every_truncation_and_trailing_garbage_is_caught() {
    let (bytes, _) = stream(40, 16);
    for cut in 0..bytes.len() {
        assert!(
            read_all(&bytes[..cut]).is_err(),
            "cut at {cut} went unnoticed"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        read_all(&longer),
        Err(SnapshotError::TrailingData)
    ));
}

#[test]
fn validator_rejects_missing_duplicate_reordered_and_misplaced_chunks() {
    let (bytes, _) = stream(64, 16);
    let chunks = chunks_of(&bytes);
    assert_eq!(chunks.len(), 6); // header, 4 data, trailer
    let run = |order: &[usize]| -> Result<bool> {
        let mut v = StreamValidator::new();
        for &i in order {
            let c = &chunks[i];
            v.accept(c.seq, c.kind, &c.payload)?;
        }
        Ok(v.is_complete())
    };
    assert!(run(&[0, 1, 2, 3, 4, 5]).unwrap());
    assert!(matches!(
        run(&[0, 1, 3]),
        Err(SnapshotError::ChunkOutOfOrder {
            expected: 2,
            got: 3
        })
    ));
    assert!(matches!(
        run(&[0, 1, 2, 2]),
        Err(SnapshotError::DuplicateChunk {
            seq: 2,
            expected: 3
        })
    ));
    assert!(matches!(
        run(&[0, 2, 1]),
        Err(SnapshotError::ChunkOutOfOrder {
            expected: 1,
            got: 2
        })
    ));
    assert!(matches!(
        run(&[0, 1, 2, 3, 4, 5, 5]),
        Err(SnapshotError::TrailingData)
    ));

    // A data chunk dropped and the rest renumbered passes the sequence checks but
    // not the trailer's totals.
    let mut v = StreamValidator::new();
    let mut seq = 0;
    for (i, c) in chunks.iter().enumerate() {
        if i == 2 {
            continue;
        }
        let r = v.accept(seq, c.kind, &c.payload);
        seq += 1;
        if c.kind == ChunkKind::Trailer {
            assert!(matches!(r, Err(SnapshotError::FinalCheck(_))));
        } else {
            r.unwrap();
        }
    }

    // A data chunk whose payload changed (and whose frame CRC was recomputed) fails
    // the whole-snapshot checksum.
    let mut v = StreamValidator::new();
    for c in &chunks {
        let mut payload = c.payload.clone();
        if c.seq == 3 {
            payload[0] ^= 0xff;
        }
        let r = v.accept(c.seq, c.kind, &payload);
        if c.kind == ChunkKind::Trailer {
            assert!(matches!(r, Err(SnapshotError::FinalCheck(_))));
        }
    }

    // Data before the header, a second header, an oversized or empty data chunk.
    let mut v = StreamValidator::new();
    assert!(matches!(
        v.accept(0, ChunkKind::Data, b"x"),
        Err(SnapshotError::Malformed { .. })
    ));
    let mut v = StreamValidator::new();
    v.accept(0, ChunkKind::Header, &chunks[0].payload).unwrap();
    assert!(v.accept(1, ChunkKind::Header, &chunks[0].payload).is_err());
    assert!(v.accept(1, ChunkKind::Data, &[0u8; 17]).is_err());
    assert!(v.accept(1, ChunkKind::Data, &[]).is_err());
}

#[test]
fn chunk_encode_decode_and_damage() {
    let c = Chunk {
        seq: 9,
        kind: ChunkKind::Data,
        payload: b"hello".to_vec(),
    };
    let frame = c.encode();
    assert_eq!(frame.len(), FRAME_OVERHEAD_BYTES + 5);
    assert_eq!(Chunk::decode(&frame).unwrap(), c);
    for pos in 0..frame.len() {
        let mut bad = frame.clone();
        bad[pos] ^= 0x80;
        assert!(Chunk::decode(&bad).is_err());
    }
    for cut in 0..frame.len() {
        assert!(Chunk::decode(&frame[..cut]).is_err());
    }
}

#[test]
fn a_lying_length_does_not_allocate_or_hang() {
    let mut head = frame_head(ChunkKind::Data, 1, MAX_CHUNK_SIZE_BYTES).to_vec();
    head.extend_from_slice(b"short");
    let mut r = FrameReader::new(head.as_slice());
    assert!(matches!(
        r.next_chunk(),
        Err(SnapshotError::Truncated { .. })
    ));
    let head = frame_head(ChunkKind::Data, 1, u32::MAX);
    let mut r = FrameReader::new(&head[..]);
    assert!(matches!(
        r.next_chunk(),
        Err(SnapshotError::Malformed { .. })
    ));
}

#[test]
fn skip_to_finds_frames() {
    let (bytes, _) = stream(64, 16);
    let mut r = FrameReader::new(io::Cursor::new(bytes.clone()));
    r.skip_to(3).unwrap();
    assert_eq!(r.next_chunk().unwrap().unwrap().seq, 3);
    let mut r = FrameReader::new(io::Cursor::new(bytes));
    assert!(matches!(
        r.skip_to(99),
        Err(SnapshotError::InvalidArgument(_))
    ));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Chunk::decode(&bytes);
            let _ = read_all(&bytes);
        }

        #[test]
        fn any_data_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1u32..64) {
            let mut w = ChunkWriter::new(Vec::new(), &meta(), chunk).unwrap();
            w.write_all(&data).unwrap();
            let (bytes, _) = w.finish().unwrap();
            let (back, _) = read_all(&bytes).unwrap();
            prop_assert_eq!(back, data);
        }
    }
}
