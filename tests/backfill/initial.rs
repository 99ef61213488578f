//! `run --initial-load` (DESIGN §10) against real Postgres: the same rows as
//! the online path, every constraint back and validated, a bad key failing
//! alone, other writers refused while constraints are absent, and a
//! non-empty target refused.

use backfill_engine::{KeyResult, Mode};
use backfill_journal::State;
use backfill_postgres::initial::{self, Restored};
use backfill_postgres::testing::dump_target;

use crate::support::{batches, count, Harness};

const BACKFILL: Mode = Mode::Backfill { rescan: false };

/// `run --initial-load` in batches of 40, which must end without error.
async fn initial_load(h: &Harness) -> backfill_engine::Summary {
    h.engine(batches(40))
        .execute(BACKFILL, &mut h.sink().initial_load())
        .await
        .into_result()
        .unwrap()
}

/// The target rows the online path writes for `keys` seeded keys (what
/// an initial load of the same seed must write).
async fn online_rows(keys: i64) -> Vec<String> {
    let online = Harness::seeded(keys).await;
    online.run(batches(40)).await;
    dump_target(&online.db.pool).await
}

/// (primary keys, foreign keys and unique constraints of the five tables,
/// all validated). During a load only `metric_facts`' primary key, which the
/// children's foreign keys reference, is left.
async fn constraints(h: &Harness) -> (i64, bool) {
    sqlx::query_as(
        "SELECT count(*), coalesce(bool_and(convalidated), false) FROM pg_constraint
          WHERE contype IN ('f', 'u', 'p') AND conrelid::regclass::text = ANY($1)",
    )
    .bind(initial::TABLES.map(str::to_owned).to_vec())
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

/// The contract's two plain indexes that are present.
async fn indexes(h: &Harness) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes
          WHERE indexname IN ('idx_metric_facts_brand_collected', 'idx_competitor_metrics_competitor')",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

async fn guards(h: &Harness) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'backfill_initial_load_guard'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_load_writes_the_online_paths_rows_and_restores_every_constraint_validated() {
    let expected = online_rows(300).await;

    let h = Harness::seeded(300).await;
    let before = constraints(&h).await;
    assert_eq!(
        before,
        (19, true),
        "the contract's foreign keys and unique constraints"
    );
    let summary = initial_load(&h).await;
    assert!(summary.of(KeyResult::Applied) > 250);
    assert_eq!(dump_target(&h.db.pool).await, expected);
    assert_eq!(constraints(&h).await, before);
    assert_eq!(guards(&h).await, 0);
    assert!(initial::recorded(&h.db.pool).await.unwrap().is_empty());
    // Exactly once: every applied key has its ledger row.
    assert_eq!(
        count(&h.db.pool, "backfill.ledger").await,
        count(&h.db.pool, "metric_facts").await
    );
    // The ids were given in blocks (decision 74): every sequence ends past
    // its table's ids, so a later online insert takes a fresh one.
    for table in initial::TABLES {
        let past: bool = sqlx::query_scalar(&format!(
            "SELECT (SELECT last_value FROM {}) >= (SELECT max(id) FROM {table})",
            sqlx::query_scalar::<_, String>("SELECT pg_get_serial_sequence($1, 'id')")
                .bind(table)
                .fetch_one(&h.db.pool)
                .await
                .unwrap()
        ))
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        assert!(past, "{table}");
    }
}

/// The primary keys other objects depend on stay while loading (decision
/// 74, found by review): one a foreign key from outside the five tables
/// names, and one of a table in a publication (whose deletes need it as
/// replica identity). A table whose `id` default is not its own sequence
/// keeps its default: it gets no id block and still loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_keys_with_dependents_stay_and_a_foreign_id_default_is_kept() {
    let expected = online_rows(120).await;

    let h = Harness::seeded(120).await;
    sqlx::raw_sql(
        "CREATE TABLE brand_metrics_notes (brand_metric_id bigint REFERENCES brand_metrics (id));
         CREATE PUBLICATION backfill_test_publication FOR TABLE competitor_sentiment;
         CREATE SEQUENCE other_ids START 500000;
         ALTER TABLE brand_sentiment ALTER COLUMN id SET DEFAULT nextval('other_ids');",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let deferred = initial::deferrable(&h.db.pool).await.unwrap();
    let keys: Vec<&str> = deferred
        .iter()
        .filter(|d| d.kind == "p")
        .map(|d| d.table.as_str())
        .collect();
    assert_eq!(keys, ["brand_sentiment", "competitor_metrics"]);
    initial_load(&h).await;
    assert_eq!(dump_target(&h.db.pool).await, expected);
    assert_eq!(constraints(&h).await, (19, true));
    let min: i64 = sqlx::query_scalar("SELECT min(id) FROM brand_sentiment")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(
        min >= 500_000,
        "brand_sentiment took its default's ids: {min}"
    );
}

/// `metric_facts` takes its ids in blocks from its own sequence (its ids
/// link the children): a target whose `id` default is something else is
/// refused before anything is deferred (review of decision 74).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_fact_ids_are_not_their_own_sequences_is_refused_before_deferring() {
    let h = Harness::seeded(10).await;
    sqlx::raw_sql(
        "CREATE SEQUENCE other_fact_ids;
         ALTER TABLE metric_facts ALTER COLUMN id SET DEFAULT nextval('other_fact_ids') + 0;",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let error = h
        .engine(batches(40))
        .execute(BACKFILL, &mut h.sink().initial_load())
        .await
        .into_result()
        .unwrap_err();
    assert!(
        error.to_string().contains("metric_facts.id's default"),
        "{error}"
    );
    assert_eq!(error.kind(), backfill_engine::ErrorKind::Configuration);
    assert_eq!(constraints(&h).await, (19, true));
    assert_eq!(guards(&h).await, 0);
    assert_eq!(count(&h.db.pool, "metric_facts").await, 0);
}

/// Regression (review of decision 74): a table has one primary key, so a
/// restore that finds one under another name (added by hand after `schema
/// check` named it missing) keeps it; adding the recorded one failed with
/// 42P16 every time, and every command restores first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_primary_key_added_by_hand_under_another_name_ends_the_restore() {
    let h = Harness::seeded(10).await;
    initial::defer(&h.db.pool).await.unwrap();
    sqlx::raw_sql("ALTER TABLE competitor_metrics ADD CONSTRAINT by_hand PRIMARY KEY (id)")
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert!(matches!(
        initial::restore(&h.db.pool, false).await.unwrap(),
        Restored::Constraints(_)
    ));
    assert_eq!(constraints(&h).await, (19, true));
    assert!(initial::recorded(&h.db.pool).await.unwrap().is_empty());
    let name: String = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint
          WHERE conrelid = 'competitor_metrics'::regclass AND contype = 'p'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(name, "by_hand");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_query_is_missing_fails_alone_in_the_initial_load() {
    let h = Harness::seeded(120).await;
    sqlx::raw_sql(
        "UPDATE extracted_positions SET query_id = '00000000-0000-0000-0000-00000000dead' WHERE collector_result_id = 50",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let summary = initial_load(&h).await;
    assert_eq!(summary.of(KeyResult::Failed), 1);
    let (key, error) = &summary.failures[0];
    assert_eq!(*key, 50);
    assert!(
        error.contains("has no generated_queries row (metric_facts_query_id_fkey)"),
        "{error}"
    );
    assert_eq!(h.journal.status(50).unwrap().unwrap().state, State::Failed);
    let applied = summary.of(KeyResult::Applied);
    assert!(applied > 100);
    assert_eq!(
        count(&h.db.pool, "metric_facts").await,
        i64::try_from(applied).unwrap()
    );
    // The constraints came back validated: nothing the load wrote breaks them.
    assert_eq!(constraints(&h).await, (19, true));
    assert_eq!(indexes(&h).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_constraints_are_deferred_other_writers_are_refused_until_restored() {
    let h = Harness::seeded(20).await;
    let deferred = initial::defer(&h.db.pool).await.unwrap();
    assert_eq!(deferred.len(), 20);
    assert_eq!(deferred.iter().filter(|d| d.kind == "i").count(), 2);
    // The children's primary keys; `metric_facts`' one is referenced.
    let keys: Vec<&str> = deferred
        .iter()
        .filter(|d| d.kind == "p")
        .map(|d| d.table.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "brand_metrics",
            "brand_sentiment",
            "competitor_metrics",
            "competitor_sentiment"
        ]
    );
    assert_eq!(constraints(&h).await.0, 1);
    assert_eq!(indexes(&h).await, 0);
    assert_eq!(guards(&h).await, 5);
    let write = "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, collected_at)
                 SELECT collector_result_id, brand_id, brand_id, query_id, collector_type, processed_at
                   FROM extracted_positions WHERE collector_result_id = 10 AND competitor_name IS NULL LIMIT 1";
    let refused = sqlx::raw_sql(write).execute(&h.db.pool).await.unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("--initial-load is loading metric_facts"),
        "{text}"
    );
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("55006")
    );
    // What any later command does first.
    match initial::restore(&h.db.pool, false).await.unwrap() {
        Restored::Constraints(mut list) => {
            let key = |d: &initial::Deferred| (d.table.clone(), d.name.clone());
            let mut expected = deferred.clone();
            expected.sort_by_key(key);
            list.sort_by_key(key);
            assert_eq!(list, expected);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(constraints(&h).await, (19, true));
    assert_eq!(indexes(&h).await, 2);
    assert_eq!(guards(&h).await, 0);
    sqlx::raw_sql(write).execute(&h.db.pool).await.unwrap();
    assert_eq!(
        initial::restore(&h.db.pool, false).await.unwrap(),
        Restored::Nothing
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_waits_for_a_live_load_that_holds_the_applier_lock() {
    let h = Harness::seeded(20).await;
    let mut sink = h.sink();
    sink.lock().await.unwrap();
    initial::defer(&h.db.pool).await.unwrap();
    assert_eq!(
        initial::restore(&h.db.pool, false).await.unwrap(),
        Restored::LoadRunning
    );
    assert_eq!(constraints(&h).await.0, 1);
    sink.unlock().await;
    assert!(matches!(
        initial::restore(&h.db.pool, false).await.unwrap(),
        Restored::Constraints(_)
    ));
    assert_eq!(constraints(&h).await, (19, true));
}

/// Regression (kill -9 test, CI): right after a load was killed, its
/// backend still held the applier lock for a moment, so the next command
/// took the load for a live one and went on with the constraints absent.
/// A lock let go within a few seconds is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_restore_right_after_a_kill_waits_for_the_dying_holder_of_the_lock() {
    let h = Harness::seeded(20).await;
    let mut sink = h.sink();
    sink.lock().await.unwrap();
    initial::defer(&h.db.pool).await.unwrap();
    let (restored, ()) = tokio::join!(initial::restore(&h.db.pool, false), async {
        // The "killed" load's backend ends half a second later.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sink.unlock().await;
    });
    assert!(
        matches!(restored.unwrap(), Restored::Constraints(_)),
        "the restore waited for the lock to be let go"
    );
    assert_eq!(constraints(&h).await, (19, true));
    assert_eq!(guards(&h).await, 0);
}

/// Regression (review): `refresh` restored through a one-connection pool,
/// which the restore's transaction held while it waited for a second
/// connection until the pool's timeout; the constraints stayed absent.
#[tokio::test]
async fn regression_a_restore_through_a_one_connection_pool_is_refused_at_once() {
    let h = Harness::seeded(5).await;
    initial::defer(&h.db.pool).await.unwrap();
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&h.db.url)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = initial::restore(&one, false).await.unwrap_err();
    assert!(
        matches!(
            refused,
            backfill_postgres::Error::RestorePoolTooSmall { max: 1 }
        ),
        "{refused}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(constraints(&h).await.0, 1, "nothing was half done");
    one.close().await;
    assert!(matches!(
        initial::restore(&h.db.pool, false).await.unwrap(),
        Restored::Constraints(_)
    ));
    assert_eq!(constraints(&h).await, (19, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_load_into_a_non_empty_target_is_refused_naming_the_table() {
    let h = Harness::seeded(40).await;
    h.run(batches(40)).await;
    sqlx::raw_sql("DELETE FROM metric_facts WHERE id NOT IN (SELECT min(id) FROM metric_facts); DELETE FROM backfill.ledger")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let report = h
        .engine(batches(40))
        .execute(BACKFILL, &mut h.sink().initial_load())
        .await;
    let error = report.error.expect("refused");
    assert_eq!(error.kind(), backfill_engine::ErrorKind::Configuration);
    assert!(
        error.to_string().contains("metric_facts has rows"),
        "{error}"
    );
    assert_eq!(constraints(&h).await, (19, true), "nothing deferred");
    assert!(initial::recorded(&h.db.pool).await.unwrap().is_empty());
    assert_eq!(guards(&h).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_stale_ledger_rows_of_an_emptied_target_do_not_hide_keys_from_the_initial_load()
{
    // Ledger rows left after the five tables were emptied by hand (another
    // journal's, or this one's) made the initial load skip those keys: the
    // run ended with their rows absent (review of issue 14).
    let expected = online_rows(60).await;

    let h = Harness::seeded(60).await;
    sqlx::raw_sql(
        "INSERT INTO backfill.ledger (collector_result_id, content_hash, journal_id, run_id)
         SELECT id, decode(repeat('ab', 32), 'hex'), gen_random_uuid(), gen_random_uuid()
           FROM collector_results",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let summary = initial_load(&h).await;
    assert_eq!(
        summary.of(KeyResult::Skipped(
            backfill_journal::Reason::ExistingInTarget
        )),
        0
    );
    assert_eq!(dump_target(&h.db.pool).await, expected);
    let ours: i64 =
        sqlx::query_scalar("SELECT count(*) FROM backfill.ledger WHERE journal_id = $1")
            .bind(h.journal.id().0)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(ours, count(&h.db.pool, "metric_facts").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_definition_that_is_not_a_constraint_is_refused_not_executed() {
    let h = Harness::seeded(10).await;
    initial::defer(&h.db.pool).await.unwrap();
    sqlx::raw_sql(
        "UPDATE backfill.deferred_constraints
            SET definition = 'CHECK (pg_sleep(1) IS NULL)'
          WHERE constraint_name = 'metric_facts_query_id_fkey'",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let error = initial::restore(&h.db.pool, false).await.unwrap_err();
    assert!(
        error.to_string().contains("metric_facts_query_id_fkey"),
        "{error}"
    );
    assert_eq!(error.kind(), backfill_postgres::ErrorKind::Integrity);
    assert_eq!(
        initial::recorded(&h.db.pool).await.unwrap().len(),
        20,
        "kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_index_that_is_not_a_plain_index_definition_is_refused_not_executed() {
    let h = Harness::seeded(10).await;
    initial::defer(&h.db.pool).await.unwrap();
    sqlx::raw_sql(
        "UPDATE backfill.deferred_constraints
            SET definition = 'DROP TABLE brands CASCADE'
          WHERE constraint_name = 'idx_competitor_metrics_competitor'",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let brands = count(&h.db.pool, "brands").await;
    let error = initial::restore(&h.db.pool, false).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("idx_competitor_metrics_competitor"),
        "{error}"
    );
    assert_eq!(error.kind(), backfill_postgres::ErrorKind::Integrity);
    // Refused before anything ran: nothing re-created, brands still there.
    assert_eq!(constraints(&h).await.0, 1);
    assert_eq!(count(&h.db.pool, "brands").await, brands);
}

/// A restore interrupted after its first steps (a unique constraint and an
/// index re-created, a foreign key added but not validated yet) is finished
/// by the next one: what exists is kept, the rest re-created, and the key
/// left unvalidated validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_interrupted_midway_is_finished_by_the_next_one() {
    let h = Harness::seeded(30).await;
    initial_load_interrupted_before_restore(&h).await;
    sqlx::raw_sql(
        "ALTER TABLE metric_facts ADD CONSTRAINT metric_facts_collector_result_id_key UNIQUE (collector_result_id);
         CREATE INDEX idx_competitor_metrics_competitor ON competitor_metrics (competitor_id);
         ALTER TABLE metric_facts ADD CONSTRAINT metric_facts_query_id_fkey
           FOREIGN KEY (query_id) REFERENCES generated_queries(id) NOT VALID;",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    // With `metric_facts`' primary key, which is never deferred.
    assert_eq!(constraints(&h).await, (3, false));
    match initial::restore(&h.db.pool, false).await.unwrap() {
        Restored::Constraints(list) => assert_eq!(list.len(), 20),
        other => panic!("{other:?}"),
    }
    assert_eq!(constraints(&h).await, (19, true));
    assert_eq!(indexes(&h).await, 2);
    assert_eq!(guards(&h).await, 0);
    assert!(initial::recorded(&h.db.pool).await.unwrap().is_empty());
}

/// Rows loaded with the constraints deferred, as a load killed before its
/// restore leaves them.
async fn initial_load_interrupted_before_restore(h: &Harness) {
    initial::defer(&h.db.pool).await.unwrap();
    sqlx::raw_sql(
        "BEGIN; SET LOCAL backfill.initial_load = on;
         INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, collected_at)
         SELECT DISTINCT ON (e.collector_result_id) e.collector_result_id, e.brand_id, e.brand_id, e.query_id,
                e.collector_type, e.processed_at
           FROM extracted_positions e
           JOIN collector_results c ON c.id = e.collector_result_id
           JOIN brands b ON b.id = e.brand_id
           JOIN generated_queries q ON q.id = e.query_id
          ORDER BY e.collector_result_id;
         COMMIT;",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    assert!(count(&h.db.pool, "metric_facts").await > 0);
}

/// Regression: `backfill.deferred_constraints` created by an earlier version
/// allows only kinds `f` and `u`; deferring indexes must still work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_deferred_constraints_table_of_an_earlier_version_takes_index_records() {
    let h = Harness::seeded(10).await;
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS backfill;
         CREATE TABLE backfill.deferred_constraints (
           table_name      text NOT NULL,
           constraint_name text NOT NULL,
           definition      text NOT NULL,
           kind            text NOT NULL CHECK (kind IN ('f', 'u')),
           deferred_at     timestamptz NOT NULL DEFAULT now(),
           PRIMARY KEY (table_name, constraint_name));",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(initial::defer(&h.db.pool).await.unwrap().len(), 20);
    assert!(matches!(
        initial::restore(&h.db.pool, false).await.unwrap(),
        Restored::Constraints(_)
    ));
    assert_eq!((constraints(&h).await, indexes(&h).await), ((19, true), 2));
}
