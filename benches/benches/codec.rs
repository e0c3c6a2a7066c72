//! Throughput of raft-core's binary codec (`keel_raft::codec`).
//!
//! Two payloads, each measured three ways, all reported in bytes of *encoded* output per
//! second (`Throughput::Bytes` of the versioned encoding, so MB/s figures are comparable
//! between encode and decode):
//!
//! * `append_64x256`: a `Message` of type `Append` carrying 64 normal entries of 256-byte
//!   payload each (about 16.8 KB encoded) — a typical replication batch.
//! * `entry_4k`: a single normal `Entry` with a 4 KiB payload — one WAL record.
//!
//! For each:
//!
//! * `encode`: `codec::encode`, which allocates a fresh `Vec` per call (the common API);
//! * `encode_into`: `codec::encode_into` appending to a cleared, reused buffer, i.e. the
//!   serialisation cost without allocator growth;
//! * `decode`: `codec::decode` of the full encoding back into an owned value (this
//!   allocates the entry list and every payload).
//!
//! Measurement is kept short (1 s warm-up, 3 s measurement, 20 samples per benchmark) so
//! the whole file runs in well under a minute:
//!
//! ```text
//! cargo bench -p keel-benches --bench codec
//! cargo bench -p keel-benches --bench codec -- --quick
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use keel_raft::codec::{self, Codec};
use keel_raft::{Entry, Message, MessageType};

/// Deterministic, non-constant payload bytes (the codec copies them verbatim, so the
/// content does not matter beyond not being trivially compressible by the hardware).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = keel_raft::Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Leader 1 replicating entries 1001..=1064 of term 5 to follower 2.
fn append_message() -> Message {
    let entries = (0..64u64)
        .map(|i| Entry::new(5, 1001 + i, payload(256, i)))
        .collect();
    Message {
        term: 5,
        log_term: 5,
        index: 1000,
        commit: 1000,
        entries,
        ..Message::new(MessageType::Append, 1, 2)
    }
}

fn big_entry() -> Entry {
    Entry::new(5, 1001, payload(4096, 42))
}

fn bench_value<T, M>(group: &mut BenchmarkGroup<'_, M>, value: &T)
where
    T: Codec + PartialEq + std::fmt::Debug,
    M: criterion::measurement::Measurement,
{
    let encoded = codec::encode(value);
    assert_eq!(codec::decode::<T>(&encoded).as_ref(), Ok(value));
    group.throughput(Throughput::Bytes(encoded.len() as u64));

    group.bench_function("encode", |b| b.iter(|| codec::encode(black_box(value))));

    let mut buf = Vec::with_capacity(encoded.len());
    group.bench_function("encode_into", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode_into(black_box(value), &mut buf);
            black_box(buf.len())
        })
    });

    group.bench_function("decode", |b| {
        b.iter(|| codec::decode::<T>(black_box(&encoded)).unwrap())
    });
}

fn codec_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/append_64x256");
    bench_value(&mut group, &append_message());
    group.finish();

    let mut group = c.benchmark_group("codec/entry_4k");
    bench_value(&mut group, &big_entry());
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = codec_benches
}
criterion_main!(benches);
