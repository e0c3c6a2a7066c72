//! Unit tests of the chunk stream.

use std::io::{self, Read, Write};

use keel_raft::{ConfState, SnapshotMetadata};

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

fn members() -> crate::info::MemberAddresses {
    [
        (4, "10.0.0.4:7004"),
        (5, "node-5.example:7005"),
        (900, "h:1"),
    ]
    .into_iter()
    .map(|(id, a)| (id, a.to_string()))
    .collect()
}

fn header_payload(members: crate::info::MemberAddresses) -> Vec<u8> {
    let header = StreamHeader {
        metadata: meta(),
        chunk_size_bytes: 16,
        members,
    };
    header.encode_payload().unwrap()
}

#[test]
fn the_header_carries_member_addresses() {
    let info = crate::info::SnapshotInfo {
        metadata: meta(),
        members: members(),
    };
    let mut w = ChunkWriter::with_info(Vec::new(), &info, 16).unwrap();
    w.write_all(&data(40)).unwrap();
    let (bytes, _) = w.finish().unwrap();
    let reader = SnapshotReader::new(bytes.as_slice()).unwrap();
    assert_eq!(reader.header().metadata, meta());
    assert_eq!(reader.header().members, members());
    assert_eq!(read_all(&bytes).unwrap().0, data(40));
    // Every damaged byte of the bigger header is still caught.
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        assert!(read_all(&bad).is_err(), "flip at {pos} went unnoticed");
    }
    // The layout: the metadata, length-prefixed, then the members.
    let payload = header_payload(members());
    assert_eq!(&payload[..8], b"KEELSNAP");
    assert_eq!(payload[8], 2, "version");
    let meta_len = u32::from_le_bytes(payload[13..17].try_into().unwrap()) as usize;
    assert_eq!(
        &payload[17..17 + meta_len],
        keel_raft::codec::encode(&meta()).as_slice()
    );
    let at = 17 + meta_len;
    assert_eq!(
        u32::from_le_bytes(payload[at..at + 4].try_into().unwrap()),
        3
    );
    assert_eq!(
        u64::from_le_bytes(payload[at + 4..at + 12].try_into().unwrap()),
        4
    );
    assert_eq!(
        u16::from_le_bytes(payload[at + 12..at + 14].try_into().unwrap()),
        13
    );
    assert_eq!(&payload[at + 14..at + 27], b"10.0.0.4:7004");
}

#[test]
fn a_version_1_header_reads_without_members() {
    // Version 1, as written before member addresses: the metadata runs to the end.
    let mut v1 = b"KEELSNAP".to_vec();
    v1.push(1);
    v1.extend_from_slice(&16u32.to_le_bytes());
    v1.extend_from_slice(&keel_raft::codec::encode(&meta()));
    let header = StreamHeader::decode_payload(0, &v1).unwrap();
    assert_eq!(header.metadata, meta());
    assert_eq!(header.chunk_size_bytes, 16);
    assert!(header.members.is_empty());
    let mut v3 = v1.clone();
    v3[8] = 3;
    assert!(StreamHeader::decode_payload(0, &v3).is_err(), "version 3");
}

#[test]
fn malformed_member_lists_are_refused() {
    let good = header_payload(members());
    let at = good.len() - (4 + 3 * 10 + 13 + 19 + 3);
    assert_eq!(
        u32::from_le_bytes(good[at..at + 4].try_into().unwrap()),
        3,
        "the member count sits where the test expects"
    );
    let decode = |p: &[u8]| StreamHeader::decode_payload(0, p);
    decode(&good).unwrap();
    for cut in 0..good.len() {
        assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = good.clone();
    extra.push(0);
    assert!(decode(&extra).is_err(), "a byte after the members");
    // A count beyond the limit, even with the bytes missing.
    let mut many = good.clone();
    many[at..at + 4].copy_from_slice(&(crate::info::MAX_MEMBERS as u32 + 1).to_le_bytes());
    assert!(decode(&many).is_err());
    // Ids out of order, repeated, or 0; an address that is not UTF-8 or empty.
    let one = |id: u64, addr: &[u8]| {
        let mut p = good[..at].to_vec();
        p.extend_from_slice(&2u32.to_le_bytes());
        for (id, addr) in [(id, addr), (id, addr)] {
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&(addr.len() as u16).to_le_bytes());
            p.extend_from_slice(addr);
        }
        p
    };
    assert!(decode(&one(4, b"h:1")).is_err(), "repeated id");
    let mut single = good[..at].to_vec();
    single.extend_from_slice(&1u32.to_le_bytes());
    single.extend_from_slice(&7u64.to_le_bytes());
    single.extend_from_slice(&3u16.to_le_bytes());
    single.extend_from_slice(b"h:1");
    assert_eq!(decode(&single).unwrap().members[&7], "h:1");
    for (id, addr) in [(0u64, &b"h:1"[..]), (7, b"\xff:1"), (7, b"")] {
        let mut p = good[..at].to_vec();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&(addr.len() as u16).to_le_bytes());
        p.extend_from_slice(addr);
        assert!(decode(&p).is_err(), "member {id} at {addr:?}");
    }
    // A metadata length past the payload.
    let mut long = good.clone();
    long[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode(&long).is_err());
}

#[test]
fn member_lists_out_of_bounds_are_not_written() {
    let write = |members: crate::info::MemberAddresses| {
        let info = crate::info::SnapshotInfo {
            metadata: meta(),
            members,
        };
        ChunkWriter::with_info(Vec::new(), &info, 16).map(|_| ())
    };
    let long = "h".repeat(crate::info::MAX_MEMBER_ADDRESS_BYTES + 1);
    for bad in [
        [(4, long.clone())].into_iter().collect(),
        [(0, "h:1".to_string())].into_iter().collect(),
        [(4, String::new())].into_iter().collect(),
        (1..=crate::info::MAX_MEMBERS as u64 + 1)
            .map(|id| (id, "h:1".to_string()))
            .collect(),
    ] {
        assert!(matches!(write(bad), Err(SnapshotError::InvalidArgument(_))));
    }
    // The most a header may carry is written and read back.
    let most: crate::info::MemberAddresses = (1..=crate::info::MAX_MEMBERS as u64)
        .map(|id| (id, "h".repeat(crate::info::MAX_MEMBER_ADDRESS_BYTES)))
        .collect();
    let payload = header_payload(most.clone());
    assert!(payload.len() <= MAX_HEADER_BYTES as usize);
    assert_eq!(
        StreamHeader::decode_payload(0, &payload).unwrap().members,
        most
    );
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
        fn decoding_a_damaged_header_never_panics(
            pos in 0usize..200,
            byte in any::<u8>(),
            cut in 0usize..200,
        ) {
            let mut p = header_payload(members());
            let pos = pos % p.len();
            p[pos] = byte;
            p.truncate(cut.max(1).min(p.len()));
            let _ = StreamHeader::decode_payload(0, &p);
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
