//! The engine against real Postgres: re-runs, interruptions, conflicts,
//! failures, dry runs and the applier lock.

use std::sync::Arc;

use sqlx::Connection;

use backfill_engine::{
    ApplyError, Event, KeyOutcome, KeyResult, Mode, NullSink, Observer, OnConflict, RunControl,
    RunId, Sink,
};
use backfill_journal::{Reason, State};
use backfill_postgres::testing::dump_target;
use backfill_postgres::{LockScope, TargetLock};

use crate::support::{batches, count, Harness, Opts, REPLAY};

const BACKFILL: Mode = Mode::Backfill { rescan: false };

/// Stops the run after `after` applied batches.
struct StopAfter {
    control: RunControl,
    after: usize,
    seen: std::sync::atomic::AtomicUsize,
}

impl Observer for StopAfter {
    fn on_event(&self, event: &Event) {
        if matches!(event, Event::BatchApplied { .. }) {
            let seen = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if seen >= self.after {
                self.control.stop();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_is_idempotent() {
    let h = Harness::seeded(300).await;
    let first = h.run(batches(40)).await;
    let dump = dump_target(&h.db.pool).await;
    assert!(first.of(KeyResult::Applied) > 250);
    let again = h
        .run(Opts {
            rescan: true,
            ..batches(40)
        })
        .await;
    assert_eq!(again.keys_unchanged, again.keys_read);
    assert_eq!(again.keys_read, 300);
    assert_eq!(again.of(KeyResult::Applied), 0);
    assert_eq!(dump_target(&h.db.pool).await, dump);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interruption_after_k_batches_then_replay_equals_an_uninterrupted_run() {
    let reference = Harness::seeded(400).await;
    reference.run(batches(25)).await;
    let expected = dump_target(&reference.db.pool).await;

    let h = Harness::seeded(400).await;
    let engine = h.engine(batches(25));
    engine.control().observe(Arc::new(StopAfter {
        control: engine.control().clone(),
        after: 3,
        seen: Default::default(),
    }));
    let summary = engine
        .execute(BACKFILL, &mut h.sink())
        .await
        .into_result()
        .unwrap();
    assert!(summary.interrupted);
    let partial = count(&h.db.pool, "metric_facts").await;
    assert!(
        partial > 0
            && partial
                < i64::try_from(expected.iter().filter(|l| l.starts_with("fact")).count()).unwrap()
    );

    // Resume: the replay finishes the pass over the source, then the rest.
    h.execute(batches(25), REPLAY).await;
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
    assert_eq!(summary.of(KeyResult::Skipped(Reason::ExistingInTarget)), 1);
    let status = h.journal.status(10).unwrap().unwrap();
    assert_eq!(
        (status.state, status.reason),
        (State::Skipped, Some(Reason::ExistingInTarget))
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
    let mut sink = h.sink();
    let outcome = sink
        .apply(RunId::NIL, &[&event], OnConflict::Replace)
        .await
        .unwrap();
    sink.finish().await.unwrap();
    // Written, and said to have replaced a fact (that read as no complete
    // fact: the live writer wrote no brand_metrics row).
    assert_eq!(
        outcome.keys,
        vec![(10, KeyOutcome::Replaced { previous: None })]
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
    assert_eq!(summary.of(KeyResult::Failed), 1);
    assert_eq!(summary.failures.len(), 1);
    let (key, error) = &summary.failures[0];
    assert_eq!(*key, 50);
    assert!(error.contains("metric_facts_query_id_fkey"), "{error}");
    assert!(summary.has_problems());
    let status = h.journal.status(50).unwrap().unwrap();
    assert_eq!((status.state, status.failures), (State::Failed, 1));
    assert!(status.error.unwrap().contains("23503"));
    // Everyone else committed.
    let applied = summary.of(KeyResult::Applied);
    assert_eq!(
        count(&h.db.pool, "metric_facts").await,
        i64::try_from(applied).unwrap()
    );
    assert!(applied > 100);
    // A retry fails again and counts the attempt.
    h.execute(batches(120), REPLAY).await;
    let history = h.journal.history(50).unwrap();
    assert!(matches!(
        history.last().unwrap().record,
        backfill_journal::Record::Failed { attempt: 2, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_an_error_of_the_whole_target_stops_the_run_instead_of_failing_every_key() {
    // With INSERT revoked on competitor_metrics, every batch was split down
    // to single keys: all keys "failed", minutes instead of seconds.
    let h = Harness::seeded(80).await;
    sqlx::raw_sql(
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'permission denied for table competitor_metrics' USING ERRCODE = '42501'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON competitor_metrics FOR EACH STATEMENT EXECUTE FUNCTION refuse();",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let report = h.engine(batches(20)).execute(BACKFILL, &mut h.sink()).await;
    let error = report.error.expect("the run stops");
    assert_eq!(error.kind(), backfill_engine::ErrorKind::Configuration);
    assert!(error.to_string().contains("applying a batch"), "{error}");
    assert_eq!(report.summary.of(KeyResult::Failed), 0, "no key is blamed");
    assert_eq!(h.journal.count(State::Failed), 0);
    assert_eq!(count(&h.db.pool, "metric_facts").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_touches_nothing_and_reports_what_the_real_run_writes() {
    let h = Harness::seeded(200).await;
    let dry = h
        .engine(batches(30))
        .execute(BACKFILL, &mut NullSink)
        .await
        .into_result()
        .unwrap();
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
    assert_eq!(real.of(KeyResult::Applied), dry.of(KeyResult::Applied));
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
    h.engine(batches(50))
        .execute(Mode::Plan { rescan: false }, &mut NullSink)
        .await
        .into_result()
        .unwrap();
    let pending: Vec<i64> = h.journal.pending(None).collect::<Result<_, _>>().unwrap();
    let events: Vec<_> = pending[..10]
        .iter()
        .map(|k| h.journal.event(*k).unwrap().unwrap())
        .collect();
    let refs: Vec<_> = events.iter().collect();
    let mut sink = h.sink();
    sink.apply(RunId::NIL, &refs, OnConflict::Skip)
        .await
        .unwrap(); // committed; journal not told
    sink.finish().await.unwrap();
    let before = count(&h.db.pool, "competitor_metrics").await;

    let summary = h.execute(batches(7), REPLAY).await;
    assert_eq!(summary.of(KeyResult::AlreadyApplied), 10);
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
    let report = h.engine(batches(10)).execute(BACKFILL, &mut h.sink()).await;
    let err = report.error.expect("refused");
    assert!(
        matches!(&err, backfill_engine::Error::EmptySource { source_name } if source_name == "table extracted_positions"),
        "{err:?}"
    );
    assert!(h.journal.runs().unwrap().is_empty(), "no run recorded");
    let allowed = Opts {
        allow_empty: true,
        ..batches(10)
    };
    let summary = h.run(allowed).await;
    assert_eq!(summary.keys_read, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_lost_applier_lock_is_retaken_or_the_batch_is_refused() {
    // The session lock was taken once; after its backend was terminated a
    // second applier was admitted and both applied.
    let h = Harness::seeded(40).await;
    h.engine(batches(40))
        .execute(Mode::Plan { rescan: false }, &mut NullSink)
        .await;
    let events: Vec<_> = h
        .journal
        .pending(None)
        .map(|k| h.journal.event(k.unwrap()).unwrap().unwrap())
        .collect();
    let refs: Vec<_> = events.iter().collect();
    let terminate = |pid: i32| {
        let pool = h.db.pool.clone();
        async move {
            let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(done);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };

    let mut sink = h.sink();
    sink.begin().await.unwrap();
    let holder = sink_holder(&h).await;
    // Lost, and nobody else took it: retaken, the batch commits.
    terminate(holder).await;
    let outcome = sink
        .apply(RunId::NIL, &refs[..10], OnConflict::Skip)
        .await
        .unwrap();
    assert_eq!(outcome.keys.len(), 10);
    let retaken = sink_holder(&h).await;
    assert_ne!(retaken, holder, "held again, on a new connection");

    // Lost, and another applier took it: the batch is refused, nothing
    // committed.
    terminate(retaken).await;
    let other = TargetLock::acquire(&h.db.pool, LockScope::Whole)
        .await
        .unwrap();
    let facts = count(&h.db.pool, "metric_facts").await;
    let refused = sink
        .apply(RunId::NIL, &refs[10..20], OnConflict::Skip)
        .await;
    match refused {
        Err(ApplyError::Stop(error)) => {
            assert_eq!(error.kind(), backfill_engine::ErrorKind::Refused);
            assert!(
                error
                    .to_string()
                    .contains("lost the target's advisory lock"),
                "{error}"
            );
        }
        other => panic!("expected the batch refused, got {other:?}"),
    }
    assert_eq!(count(&h.db.pool, "metric_facts").await, facts);
    other.release().await;
    sink.finish().await.unwrap();
}

/// The pid holding the target lock.
async fn sink_holder(h: &Harness) -> i32 {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND classid::int8 = $1 AND objid::int8 = $2
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(0x6261_636b_i64)
    .bind(0x6669_6c6c_i64)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_fact_inserted_between_the_check_and_the_insert_is_left_to_its_writer() {
    // The race the sink's `ON CONFLICT DO NOTHING` exists for: the live writer
    // inserts key 10 after the batch looked it up and before the batch
    // inserts it. Its uncommitted insert holds ours (a unique-index wait)
    // until it commits; then ours must do nothing: no ledger row, the key
    // journaled skipped, the writer's fact intact.
    let h = Harness::seeded(30).await;
    let mut writer = sqlx::PgConnection::connect(&h.db.url).await.unwrap();
    sqlx::raw_sql(
        "BEGIN;
         INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, collected_at)
         SELECT collector_result_id, brand_id, brand_id, query_id, collector_type, 'live writer', processed_at
           FROM extracted_positions WHERE collector_result_id = 10 AND competitor_name IS NULL
          ORDER BY processed_at DESC LIMIT 1",
    )
    .execute(&mut writer)
    .await
    .unwrap();
    let engine = h.engine(batches(30));
    let sink = h.patient_sink();
    let run = tokio::spawn(async move {
        let mut sink = sink;
        engine.execute(BACKFILL, &mut sink).await
    });
    // Our batch checked (nothing committed for key 10), inserted, and waits
    // on the writer's transaction.
    let mut waited = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        if n > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waited, "the batch never waited on the writer's insert");
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    let summary = run.await.unwrap().into_result().unwrap();
    assert_eq!(summary.of(KeyResult::Skipped(Reason::ExistingInTarget)), 1);
    let status = h.journal.status(10).unwrap().unwrap();
    assert_eq!(
        (status.state, status.reason),
        (State::Skipped, Some(Reason::ExistingInTarget))
    );
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backfill.ledger WHERE collector_result_id = 10")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(ledger, 0, "not ours: no ledger row");
    let topic: Option<String> =
        sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 10")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(topic.as_deref(), Some("live writer"));
    assert!(summary.of(KeyResult::Applied) > 20, "the others committed");
}

/// A session holding ACCESS EXCLUSIVE on competitor_metrics until it rolls
/// back: every batch waits on it.
async fn hold_competitor_metrics(h: &Harness) -> sqlx::PgConnection {
    let mut blocker = sqlx::PgConnection::connect(&h.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE competitor_metrics IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

/// Waits until a backend of this database waits on a lock; its pid.
/// A backend waiting on a lock, other than `except` (a backend just
/// terminated can still show as waiting for a moment).
async fn waiting_backend(h: &Harness, except: i32) -> i32 {
    for _ in 0..200 {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1 LIMIT 1",
        )
        .bind(except)
        .fetch_optional(&h.db.pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no batch ever waited on the lock");
}

async fn terminate(h: &Harness, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_backend_is_terminated_is_retried_and_the_target_is_right() {
    let reference = Harness::seeded(60).await;
    reference.run(batches(20)).await;
    let expected = dump_target(&reference.db.pool).await;

    let h = Harness::seeded(60).await;
    let mut blocker = hold_competitor_metrics(&h).await;
    let engine = h.engine(batches(20));
    let sink = h.patient_sink();
    let run = tokio::spawn(async move {
        let mut sink = sink;
        engine.execute(BACKFILL, &mut sink).await
    });
    // The batch's backend dies mid-transaction.
    let pid = waiting_backend(&h, 0).await;
    terminate(&h, pid).await;
    // The retry waits on the lock again, on a new connection.
    let again = waiting_backend(&h, pid).await;
    assert_ne!(again, pid);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let summary = run.await.unwrap().into_result().unwrap();
    assert!(summary.retries["connection"] >= 1, "{:?}", summary.retries);
    assert_eq!(dump_target(&h.db.pool).await, expected);
    h.journal.verify_index().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_past_the_retries_stops_resumable_with_the_journal_consistent() {
    let reference = Harness::seeded(40).await;
    reference.run(batches(20)).await;
    let expected = dump_target(&reference.db.pool).await;

    let h = Harness::seeded(40).await;
    let mut blocker = hold_competitor_metrics(&h).await;
    let engine = h.engine(batches(20));
    let notices = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&notices);
    let sink = h.patient_sink().with_retries(1).on_retry(Arc::new(
        move |cause: &str, attempt, of, wait| {
            seen.lock()
                .unwrap()
                .push((cause.to_owned(), attempt, of, wait));
        },
    ));
    let run = tokio::spawn(async move {
        let mut sink = sink;
        engine.execute(BACKFILL, &mut sink).await
    });
    let first = waiting_backend(&h, 0).await;
    terminate(&h, first).await;
    let second = waiting_backend(&h, first).await;
    terminate(&h, second).await;
    let report = run.await.unwrap();
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let error = report.error.expect("past the retries the run stops");
    assert_eq!(error.kind(), backfill_engine::ErrorKind::Resumable);
    // Named as a lost connection (not as a lock or timeout), after one
    // retry announced with its backoff (400 ms for the first).
    assert!(
        error
            .to_string()
            .contains("lost the database connection while applying a batch (2 attempts)"),
        "{error}"
    );
    assert_eq!(
        *notices.lock().unwrap(),
        vec![(
            "connection".to_owned(),
            1,
            1,
            std::time::Duration::from_millis(400)
        )]
    );
    assert!(
        report.summary.did_work(),
        "planned keys are recorded: exit 3"
    );
    h.journal.verify_chain().unwrap();
    h.journal.verify_index().unwrap();
    assert_eq!(h.journal.count(State::Applied), 0);
    assert_eq!(count(&h.db.pool, "backfill.ledger").await, 0);
    // The resume gives the rows of an uninterrupted run.
    h.execute(batches(20), REPLAY).await;
    assert_eq!(dump_target(&h.db.pool).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_another_journals_fact_names_its_hash_and_rewriting_our_own_is_applied() {
    // Mutation survivors of the sink (issue 13): the read-back of what a
    // replace deletes covered our own earlier rows instead of others'.
    let h = Harness::seeded(30).await;
    h.run(batches(30)).await;
    let (theirs, ours) = (10, 11);
    for key in [theirs, ours] {
        assert_eq!(
            h.journal.status(key).unwrap().unwrap().state,
            State::Applied
        );
    }
    // Key 10 now reads as written by another journal; key 11 as an earlier
    // version of ours.
    sqlx::query(
        "UPDATE backfill.ledger SET journal_id = gen_random_uuid() WHERE collector_result_id = $1",
    )
    .bind(theirs)
    .execute(&h.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE backfill.ledger SET content_hash = decode(repeat('00', 32), 'hex') WHERE collector_result_id = $1")
        .bind(ours)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let a = h.journal.event(theirs).unwrap().unwrap();
    let b = h.journal.event(ours).unwrap().unwrap();
    let mut sink = h.sink();
    let debug = format!("{sink:?}");
    assert!(
        debug.starts_with("PostgresSink") && debug.contains(&h.journal.id().0.to_string()),
        "{debug}"
    );
    let outcome = sink
        .apply(RunId::NIL, &[&a, &b], OnConflict::Replace)
        .await
        .unwrap();
    sink.finish().await.unwrap();
    let mut keys = outcome.keys.clone();
    keys.sort_by_key(|(k, _)| *k);
    assert_eq!(
        keys,
        vec![
            // The deleted rows were identical to ours: their hash is ours.
            (
                theirs,
                KeyOutcome::Replaced {
                    previous: Some(a.content_hash)
                }
            ),
            (ours, KeyOutcome::Applied),
        ]
    );
    let ledger: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT collector_result_id, content_hash FROM backfill.ledger
          WHERE collector_result_id = ANY($1) AND journal_id = $2 ORDER BY 1",
    )
    .bind(vec![theirs, ours])
    .bind(h.journal.id().0)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        ledger,
        vec![
            (theirs, a.content_hash.as_bytes().to_vec()),
            (ours, b.content_hash.as_bytes().to_vec())
        ]
    );
}

/// The most backends of this database seen waiting on a lock at once, polled
/// until `want` is reached or 10 s pass.
async fn most_waiting_on_locks(url: &str, want: i64) -> i64 {
    let mut watcher = sqlx::PgConnection::connect(url).await.unwrap();
    let mut most = 0;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        most = most.max(waiting);
        if most >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    most
}

/// Decision 59: with two appliers, two batches are in the target at once
/// (both wait on a table another session holds), and the target ends as
/// with one applier. With the pairing removed only one batch ever waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appliers_have_two_batches_in_the_target_at_once_and_write_what_one_writes() {
    let reference = Harness::seeded(200).await;
    reference.run(batches(20)).await;
    let expected = dump_target(&reference.db.pool).await;

    let h = Harness::seeded(200).await;
    let blocker = hold_competitor_metrics(&h).await;
    let engine = h.engine(Opts {
        appliers: 2,
        ..batches(20)
    });
    let mut sink = h.patient_sink();
    let watch = async {
        let most = most_waiting_on_locks(&h.db.url, 2).await;
        // Releasing the table lets both batches finish.
        blocker.close().await.unwrap();
        most
    };
    let (report, most) = tokio::join!(engine.execute(BACKFILL, &mut sink), watch);
    let summary = report.into_result().expect("the run");
    assert_eq!(most, 2, "two batches waited on the held table at once");
    assert!(summary.of(KeyResult::Applied) > 150);
    assert_eq!(dump_target(&h.db.pool).await, expected);
    assert_eq!(
        h.journal.count(State::Applied),
        u64::try_from(count(&h.db.pool, "backfill.ledger").await).unwrap()
    );
}
