//! plan + hashing throughput on production-like groups
//! (`testing::realistic_group`: 12 rows, one unresolved competitor, five
//! duplicates). Reported in source rows per second.

// Measured with the allocator the `backfill` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use backfill_core::testing::realistic_group;
use backfill_core::{encode, plan};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn bench_plan(c: &mut Criterion) {
    let groups: Vec<_> = (1..=1_000).map(realistic_group).collect();
    let rows: usize = groups.iter().map(|g| g.rows.len()).sum();
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(u64::try_from(rows).unwrap()));
    group.bench_function("plan", |b| {
        b.iter(|| {
            for g in &groups {
                black_box(plan(g.key, black_box(&g.rows), &g.directories).unwrap());
            }
        })
    });
    group.bench_function("plan_and_encode", |b| {
        b.iter(|| {
            for g in &groups {
                let event = plan(g.key, black_box(&g.rows), &g.directories).unwrap();
                black_box(encode(&event).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
