//! The engine against real Postgres: re-runs, interruptions, conflicts,
//! failures and dry runs.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use backfill_journal::State;
use backfill_postgres::testing::dump_target;
use backfill_postgres::{EngineOptions, Error, NullSink, OnConflict, PostgresSink, Sink};

use crate::support::{batches, count, CancelAfter, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_is_idempotent() {
    let h = Harness::seeded(300).await;
    let first = h.run(batches(40)).await;
    let dump = dump_target(&h.db.pool).await;
    assert!(first.outcomes["applied"] > 250);
    let again = h
        .run(EngineOptions {
            rescan: true,
            ..batches(40)
        })
        .await;
    assert_eq!(again.keys_unchanged, again.keys_read);
    assert_eq!(again.keys_read, 300);
    assert_eq!(again.outcomes.get("applied"), None);
    assert_eq!(dump_target(&h.db.pool).await, dump);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruption_after_k_batches_then_replay_equals_an_uninterrupted_run() {
    let reference = Harness::seeded(400).await;
    reference.run(batches(25)).await;
    let expected = dump_target(&reference.db.pool).await;

    let h = Harness::seeded(400).await;
    let progress = Arc::new(CancelAfter {
        flag: Mutex::new(None),
        after: 3,
        seen: AtomicU64::new(0),
    });
    let engine = h.engine(batches(25)).with_progress(progress.clone());
    *progress.flag.lock().unwrap() = Some(engine.cancel_flag());
    let run = h.journal.start_run("run", vec![]).unwrap();
    let summary = engine.run(&mut h.sink(), run).await.unwrap();
    assert!(summary.interrupted);
    let partial = count(&h.db.pool, "metric_facts").await;
    assert!(
        partial > 0
            && partial
                < i64::try_from(expected.iter().filter(|l| l.starts_with("fact")).count()).unwrap()
    );

    // Resume: replay what was planned, then run picks up from the cursor.
    let run = h.journal.start_run("replay", vec![]).unwrap();
    h.engine(batches(25))
        .replay(&mut h.sink(), run, true)
        .await
        .unwrap();
    h.run(batches(25)).await;
    assert_eq!(dump_target(&h.db.pool).await, expected);
    assert_eq!(h.journal.count(State::Pending), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_written_fact_is_left_alone_unless_replace() {
    let h = Harness::seeded(60).await;
    // The live writer already wrote key 10 (with a different topic).
    sqlx::raw_sql(
        "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, collected_at)
         SELECT collector_result_id, brand_id, brand_id, query_id, collector_type, 'live writer', processed_at
           FROM extracted_positions WHERE collector_result_id = 10 AND competitor_name IS NULL
          ORDER BY processed_at DESC LIMIT 1",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let summary = h.run(batches(20)).await;
    assert_eq!(summary.outcomes.get("skipped:existing_in_target"), Some(&1));
    let status = h.journal.status(10).unwrap().unwrap();
    assert_eq!(
        (status.state, status.reason.as_deref()),
        (State::Skipped, Some("existing_in_target"))
    );
    let topic: Option<String> =
        sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 10")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(topic.as_deref(), Some("live writer"));
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backfill.ledger WHERE collector_result_id = 10")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(ledger, 0, "not ours: no ledger row");

    // With replace, it is rewritten with ours.
    let event = h.journal.event(10).unwrap().unwrap();
    let mut sink = PostgresSink::new(h.db.pool.clone(), h.journal.id(), OnConflict::Replace);
    let outcome = sink
        .apply(uuid::Uuid::nil(), std::slice::from_ref(&event))
        .await
        .unwrap();
    assert_eq!(
        outcome.keys,
        vec![(10, backfill_postgres::KeyOutcome::Applied)]
    );
    let topic: Option<String> =
        sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 10")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(topic, event.target_rows().unwrap().fact.topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_foreign_key_failure_fails_only_that_key() {
    let h = Harness::seeded(120).await;
    sqlx::raw_sql(
        "UPDATE extracted_positions SET query_id = '00000000-0000-0000-0000-00000000dead' WHERE collector_result_id = 50",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let summary = h.run(batches(120)).await;
    assert_eq!(summary.outcomes.get("failed"), Some(&1));
    assert_eq!(summary.failures.len(), 1);
    let (key, error) = &summary.failures[0];
    assert_eq!(*key, 50);
    assert!(error.contains("metric_facts_query_id_fkey"), "{error}");
    assert!(summary.has_problems());
    let status = h.journal.status(50).unwrap().unwrap();
    assert_eq!((status.state, status.failures), (State::Failed, 1));
    assert!(status.error.unwrap().contains("23503"));
    // Everyone else committed.
    let applied = summary.outcomes["applied"];
    assert_eq!(
        count(&h.db.pool, "metric_facts").await,
        i64::try_from(applied).unwrap()
    );
    assert!(applied > 100);
    // A retry fails again and counts the attempt.
    let run = h.journal.start_run("replay", vec![]).unwrap();
    h.engine(batches(120))
        .replay(&mut h.sink(), run, true)
        .await
        .unwrap();
    let history = h.journal.history(50).unwrap();
    assert!(matches!(
        history.last().unwrap().record,
        backfill_journal::Record::Failed { attempt: 2, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_touches_nothing_and_reports_what_the_real_run_writes() {
    let h = Harness::seeded(200).await;
    let run = h.journal.start_run("run", vec![]).unwrap();
    let dry = h.engine(batches(30)).run(&mut NullSink, run).await.unwrap();
    assert!(dry.dry_run);
    assert!(
        dump_target(&h.db.pool).await.is_empty(),
        "dry run wrote to the target"
    );
    assert_eq!(count(&h.db.pool, "backfill.ledger").await, 0);
    assert_eq!(
        h.journal.count(State::Applied),
        0,
        "dry run marks nothing applied"
    );
    assert!(h.journal.count(State::Pending) > 0, "the plan is recorded");

    let real = h.run(batches(30)).await;
    assert_eq!(real.tables, dry.tables);
    assert_eq!(real.outcomes.get("applied"), dry.outcomes.get("applied"));
    assert_eq!(
        count(&h.db.pool, "competitor_metrics").await,
        i64::try_from(dry.tables.competitor_metrics).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_commit_without_journal_flush_is_never_written_twice() {
    // The old tool's resume check trusted its own bookkeeping. Here a batch
    // committed to the target whose outcome never reached the journal (a
    // crash in between) is found in the ledger and reconciled as applied.
    let h = Harness::seeded(50).await;
    let run = h.journal.start_run("plan", vec![]).unwrap();
    h.engine(batches(50)).plan(run).await.unwrap();
    let pending: Vec<i64> = h.journal.pending(None).collect::<Result<_, _>>().unwrap();
    let events: Vec<_> = pending[..10]
        .iter()
        .map(|k| h.journal.event(*k).unwrap().unwrap())
        .collect();
    h.sink().apply(run, &events).await.unwrap(); // committed; journal not told
    let before = count(&h.db.pool, "competitor_metrics").await;

    let run = h.journal.start_run("replay", vec![]).unwrap();
    let summary = h
        .engine(batches(7))
        .replay(&mut h.sink(), run, true)
        .await
        .unwrap();
    assert_eq!(summary.outcomes.get("already_applied"), Some(&10));
    for key in &pending[..10] {
        assert_eq!(
            h.journal.status(*key).unwrap().unwrap().state,
            State::Applied
        );
    }
    let facts: i64 = sqlx::query_scalar(
        "SELECT count(*) - count(DISTINCT collector_result_id) FROM metric_facts",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(facts, 0);
    assert!(count(&h.db.pool, "competitor_metrics").await > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_groups_are_never_split_across_batches() {
    // The old tool paged with OFFSET over a non-unique order and lost
    // competitors at batch boundaries. Batch sizes that cut everywhere must
    // give the same target as one big batch.
    let one = Harness::seeded(90).await;
    one.run(batches(1000)).await;
    let expected = dump_target(&one.db.pool).await;
    for size in [1, 7] {
        let h = Harness::seeded(90).await;
        h.run(batches(size)).await;
        assert_eq!(dump_target(&h.db.pool).await, expected, "batch size {size}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_source_is_an_error_unless_allowed() {
    let h = Harness::new().await;
    let run = h.journal.start_run("run", vec![]).unwrap();
    let err = h
        .engine(batches(10))
        .run(&mut h.sink(), run)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::EmptySource { table } if table == "extracted_positions"),
        "{err:?}"
    );
    assert!(err.to_string().contains("--allow-empty"));
    let allowed = EngineOptions {
        allow_empty: true,
        ..batches(10)
    };
    let summary = h.engine(allowed).run(&mut h.sink(), run).await.unwrap();
    assert_eq!(summary.keys_read, 0);
}
