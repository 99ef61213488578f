//! Journal throughput: append + one flush per batch of 1,000 events of about
//! 1 KB (realistic ones, and less compressible ones); and the O(1) counts on a
//! journal holding 1,000,000 keys.

// Measured with the allocator the `backfill` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use backfill_core::testing::realistic_group;
use backfill_core::{encode, plan, Json, MigrationEvent};
use backfill_journal::{Batch, Journal, State};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{Rng, SeedableRng};

const BATCH: i64 = 1_000;

fn events(start: i64) -> Vec<MigrationEvent> {
    (start..start + BATCH)
        .map(|key| {
            let g = realistic_group(key);
            plan(key, &g.rows, &g.directories).unwrap()
        })
        .collect()
}

/// Realistic events whose brand row also carries 400 random hex digits of
/// metadata: about 1.2 KB each, and LZ4 shrinks a frame of them about 2.2×
/// instead of 5.6× (the generated `backfill seed` data: about 1.6×, hashes
/// and applied records included).
fn noisy_events(start: i64) -> Vec<MigrationEvent> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    (start..start + BATCH)
        .map(|key| {
            let mut g = realistic_group(key);
            let noise: String = (0..400)
                .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
                .collect();
            for row in g.rows.iter_mut().filter(|r| r.competitor_name.is_none()) {
                row.metadata = Some(Json(format!("{{\"trace\": \"{noise}\"}}")));
            }
            plan(key, &g.rows, &g.directories).unwrap()
        })
        .collect()
}

fn append(c: &mut Criterion, name: &str, sample: Vec<MigrationEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let size = encode(&sample[0]).unwrap().len();
    eprintln!("{name}: encoded event size {size} bytes");
    let mut next = 0i64;
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(u64::try_from(BATCH).unwrap()));
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                // New keys every time: re-keyed copies of the sample events.
                let start = next;
                next += BATCH;
                sample
                    .iter()
                    .zip(start..)
                    .map(|(e, key)| MigrationEvent {
                        collector_result_id: key,
                        ..e.clone()
                    })
                    .collect::<Vec<_>>()
            },
            |batch_events| {
                let mut batch = Batch::new();
                for e in batch_events {
                    batch.plan(e);
                }
                journal.commit(batch).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    append(c, "append_flush_batch_of_1000", events(0));
    append(c, "append_flush_batch_of_1000_noisy", noisy_events(0));
}

fn bench_counts(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let sample = events(0);
    let started = Instant::now();
    for start in (0..1_000_000).step_by(1_000) {
        let mut batch = Batch::new();
        for (e, key) in sample.iter().zip(start..) {
            batch.plan(MigrationEvent {
                collector_result_id: key,
                ..e.clone()
            });
        }
        journal.commit(batch).unwrap();
    }
    eprintln!(
        "loaded 1,000,000 keys in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    c.bench_function("journal/counts_at_1m_keys", |b| {
        b.iter(|| black_box((journal.counts(), journal.count(State::Pending))))
    });
}

criterion_group!(benches, bench_append, bench_counts);
criterion_main!(benches);
