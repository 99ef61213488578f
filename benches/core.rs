//! plan + hashing throughput on realistic groups (1 brand row, 5 competitor
//! rows: one unresolved, one duplicate). Reported in source rows per second.

use backfill_core::testing::{dec, GroupBuilder};
use backfill_core::{encode, plan};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn realistic_group(key: i64) -> backfill_core::testing::Group {
    let mut builder = GroupBuilder::new(key).brand(|r| {
        r.visibility_index = Some(dec("45.455"));
        r.share_of_answers_brand = Some(dec("12.5"));
        r.total_brand_mentions = Some(4);
        r.brand_first_position = Some(1);
        r.has_brand_presence = true;
        r.topic = Some("pricing".into());
        r.sentiment_label = Some("POSITIVE".into());
        r.sentiment_score = Some(dec("0.82"));
        r.sentiment_positive_sentences = Some(backfill_core::Json(
            "[\"They are the best option for teams.\", \"Pricing is fair.\"]".into(),
        ));
        r.metadata = Some(backfill_core::Json(
            "{\"model\": \"gpt-4o\", \"run\": 17}".into(),
        ));
    });
    for name in ["Acme", "Beta Corp", "Gamma", "Acme"] {
        builder = builder
            .competitor(name, Some("23.456"))
            .competitor_row(name, |r| {
                r.competitor_mentions = Some(2);
                r.competitor_positions = Some(vec![Some(3), Some(7)]);
                r.sentiment_label_competitor = Some("neutral".into());
                r.sentiment_score_competitor = Some(dec("0.1"));
            });
    }
    builder.competitor_row("Unknown Co", |_| {}).build()
}

fn bench_plan(c: &mut Criterion) {
    let groups: Vec<_> = (1..=1_000).map(realistic_group).collect();
    let rows: usize = groups.iter().map(|g| g.rows.len()).sum();
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(u64::try_from(rows).unwrap()));
    group.bench_function("plan_1000_groups", |b| {
        b.iter(|| {
            for g in &groups {
                black_box(plan(g.key, black_box(&g.rows), &g.directories).unwrap());
            }
        })
    });
    group.bench_function("plan_and_encode_1000_groups", |b| {
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
