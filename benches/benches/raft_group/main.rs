//! propose → ready → advance on a 3-node in-memory Raft group: entries committed and
//! applied on all nodes per second, for single proposals and batches of 64.
//!
//! Run: `cargo bench -p keel-benches --bench raft_group`

use std::time::Duration;

mod group;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use group::Group;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_group_3_nodes");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    const ENTRIES: usize = 1024;
    for batch in [1usize, 64] {
        g.throughput(Throughput::Elements(ENTRIES as u64));
        g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            // A fresh group per sample keeps the log (and MemoryStorage) from growing
            // without bound across iterations.
            b.iter_batched_ref(
                Group::new,
                |group| group.propose_and_commit(ENTRIES, 128, batch),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
