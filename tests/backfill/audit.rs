//! The auditor path: verify, drift, rollback, against real Postgres.

use backfill_engine::{KeyResult, Mode, NullSink};
use backfill_journal::{Journal, State};
use backfill_postgres::audit::RollbackOptions;
use backfill_postgres::audit::{self, Finding};

use crate::support::{batches, count, Harness, Opts};

async fn exec(h: &Harness, sql: &str) {
    sqlx::raw_sql(sql).execute(&h.db.pool).await.unwrap();
}

async fn fact_of(h: &Harness, key: i64) -> i64 {
    sqlx::query_scalar("SELECT id FROM metric_facts WHERE collector_result_id = $1")
        .bind(key)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_an_untouched_target() {
    let h = Harness::seeded(150).await;
    h.run(batches(40)).await;
    let report = audit::verify(&h.journal, &h.db.pool, 17).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.findings);
    assert_eq!(report.keys_checked, h.journal.count(State::Applied));
    assert_eq!(report.keys_matching, report.keys_checked);
    assert!(report.chain_entries > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_exactly_the_key_and_what_differs() {
    let h = Harness::seeded(150).await;
    h.run(batches(40)).await;
    let changed = fact_of(&h, 20).await;
    exec(&h, &format!("UPDATE brand_metrics SET visibility_index = visibility_index + 1 WHERE metric_fact_id = {changed}")).await;
    exec(
        &h,
        "DELETE FROM metric_facts WHERE collector_result_id = 21",
    )
    .await;
    // A forged ledger row: a rejected key (no customer) claimed as ours.
    exec(
        &h,
        &format!(
            "INSERT INTO backfill.ledger (collector_result_id, content_hash, journal_id, run_id)
             VALUES (97, '\\x00', '{}', '00000000-0000-0000-0000-000000000000')",
            h.journal.id()
        ),
    )
    .await;
    exec(
        &h,
        "UPDATE backfill.ledger SET content_hash = '\\x01' WHERE collector_result_id = 22",
    )
    .await;

    let report = audit::verify(&h.journal, &h.db.pool, 40).await.unwrap();
    assert!(!report.is_ok());
    let keys: Vec<i64> = report.findings.iter().map(Finding::key).collect();
    assert_eq!(keys, vec![20, 21, 22, 97], "{:?}", report.findings);
    assert!(
        matches!(&report.findings[0], Finding::Changed { differs, .. } if differs == &["brand_metrics.visibility_index"])
    );
    assert!(matches!(report.findings[1], Finding::Missing { .. }));
    assert!(matches!(report.findings[2], Finding::LedgerMismatch { .. }));
    assert!(
        matches!(&report.findings[3], Finding::UnknownLedgerRow { journal_state: Some(s), .. } if s == "rejected")
    );
    assert_eq!(report.keys_matching, report.keys_checked - 3);
}

/// Verify reads a chunk's rows by id ranges (decision 76), not by each id:
/// a fact moved far from its chunk's block, and another writer's fact (with
/// a child) sitting inside a chunk's range, change nothing it reports; a
/// changed value next to them is still named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_by_id_ranges_ignores_rows_in_gaps_and_finds_what_differs() {
    let h = Harness::seeded(150).await;
    h.run(batches(40)).await;
    // Key 50's rows, rewritten under an id far after every other.
    let old = fact_of(&h, 50).await;
    exec(
        &h,
        &format!(
            "ALTER TABLE metric_facts DROP CONSTRAINT metric_facts_collector_result_id_key;
             INSERT INTO metric_facts (id, collector_result_id, brand_id, customer_id, query_id, collector_type,
                                       topic, collected_at, metadata, created_at)
             SELECT id + 1000000, collector_result_id, brand_id, customer_id, query_id, collector_type, topic,
                    collected_at, metadata, created_at FROM metric_facts WHERE id = {old};
             UPDATE brand_metrics SET metric_fact_id = {old} + 1000000 WHERE metric_fact_id = {old};
             UPDATE brand_sentiment SET metric_fact_id = {old} + 1000000 WHERE metric_fact_id = {old};
             UPDATE competitor_metrics SET metric_fact_id = {old} + 1000000 WHERE metric_fact_id = {old};
             UPDATE competitor_sentiment SET metric_fact_id = {old} + 1000000 WHERE metric_fact_id = {old};
             DELETE FROM metric_facts WHERE id = {old};
             ALTER TABLE metric_facts ADD CONSTRAINT metric_facts_collector_result_id_key UNIQUE (collector_result_id);"
        ),
    )
    .await;
    // Key 60's rows gone, and another writer's fact for a key this journal
    // never saw, with a child, under key 60's old id: inside the range of
    // key 60's chunk.
    let gap = fact_of(&h, 60).await;
    exec(
        &h,
        &format!(
            "DELETE FROM metric_facts WHERE id = {gap};
             INSERT INTO collector_results (id, brand_id, collector_type)
             SELECT 900000, brand_id, collector_type FROM collector_results WHERE id = 60;
             INSERT INTO metric_facts (id, collector_result_id, brand_id, customer_id, query_id, collector_type,
                                       collected_at)
             SELECT {gap}, 900000, brand_id, brand_id, query_id, collector_type, processed_at
               FROM extracted_positions WHERE collector_result_id = 60 LIMIT 1;
             INSERT INTO brand_metrics (metric_fact_id) VALUES ({gap});"
        ),
    )
    .await;
    let changed = fact_of(&h, 61).await;
    exec(&h, &format!("UPDATE competitor_metrics SET total_mentions = total_mentions + 1 WHERE metric_fact_id = {changed}")).await;

    let report = audit::verify(&h.journal, &h.db.pool, 17).await.unwrap();
    let keys: Vec<i64> = report.findings.iter().map(Finding::key).collect();
    assert_eq!(keys, vec![60, 61], "{:?}", report.findings);
    assert!(matches!(report.findings[0], Finding::Missing { .. }));
    assert!(
        matches!(&report.findings[1], Finding::Changed { differs, .. }
            if differs.iter().all(|d| d == "competitor_metrics.total_mentions")),
        "{:?}",
        report.findings[1]
    );
    assert_eq!(report.keys_matching, report.keys_checked - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_flipped_journal_byte() {
    let h = Harness::seeded(30).await;
    h.run(batches(10)).await;
    let dir = tempfile::tempdir().unwrap();
    {
        // A copy of the journal with one byte of one log entry flipped.
        let journal = Journal::open(dir.path()).unwrap();
        let mut batch = backfill_journal::Batch::new();
        for key in 1..=3 {
            batch.plan(h.journal.event(key).unwrap().unwrap());
        }
        journal.commit(batch).unwrap();
    }
    {
        let db = crate::support::raw_sled(dir.path());
        let (k, v) = db.scan_prefix(b"L").next().unwrap().unwrap();
        let mut v = v.to_vec();
        let at = v.len() - 10;
        v[at] ^= 1;
        db.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let journal = std::sync::Arc::new(Journal::open(dir.path()).unwrap());
    let report = audit::verify(&journal, &h.db.pool, 10).await.unwrap();
    assert!(!report.is_ok());
    let problem = report
        .chain_problem
        .expect("the chain must be reported broken");
    assert!(
        problem.contains("position 2") && problem.contains("edited"),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_detected_and_reapplied_with_history() {
    let h = Harness::seeded(80).await;
    h.run(batches(30)).await;
    let before = h.journal.event(40).unwrap().unwrap();
    exec(&h, "UPDATE extracted_positions SET topic = 'changed upstream' WHERE collector_result_id = 40 AND competitor_name IS NULL").await;

    let rescan = Opts {
        rescan: true,
        ..batches(30)
    };
    let plan = Mode::Plan { rescan: true };
    let summary = h
        .engine(rescan)
        .execute(plan, &mut NullSink)
        .await
        .into_result()
        .unwrap();
    assert_eq!(summary.keys_drifted, 1);
    assert_eq!(summary.keys_unchanged, 79);
    assert_eq!(h.journal.status(40).unwrap().unwrap().state, State::Drifted);
    // Planning again does not drift it twice.
    let summary = h
        .engine(rescan)
        .execute(plan, &mut NullSink)
        .await
        .into_result()
        .unwrap();
    assert_eq!(summary.keys_drifted, 0);

    let summary = h
        .execute(
            batches(30),
            Mode::Replay {
                retry_failed: true,
                reapply_drifted: true,
            },
        )
        .await;
    assert_eq!(summary.of(KeyResult::Applied), 1);
    let status = h.journal.status(40).unwrap().unwrap();
    assert_eq!(status.state, State::Applied);
    let topic: Option<String> =
        sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 40")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(topic.as_deref(), Some("changed upstream"));
    let planned: Vec<_> = h
        .journal
        .history(40)
        .unwrap()
        .into_iter()
        .filter_map(|l| match l.record {
            backfill_journal::Record::Planned { event } => Some(event.content_hash),
            _ => None,
        })
        .collect();
    assert_eq!(
        planned,
        vec![before.content_hash, status.content_hash],
        "history keeps before and after"
    );
    assert!(audit::verify(&h.journal, &h.db.pool, 30)
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_removes_only_this_journals_rows_and_refuses_changed_keys() {
    let h = Harness::seeded(60).await;
    // A dual-written fact (the live writer's) for key 10.
    exec(
        &h,
        "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, collected_at)
         SELECT collector_result_id, brand_id, brand_id, query_id, collector_type, processed_at
           FROM extracted_positions WHERE collector_result_id = 10 AND competitor_name IS NULL LIMIT 1",
    )
    .await;
    h.run(batches(25)).await;
    let applied = h.journal.count(State::Applied);
    let changed = fact_of(&h, 30).await;
    exec(
        &h,
        &format!("UPDATE brand_metrics SET total_mentions = 99 WHERE metric_fact_id = {changed}"),
    )
    .await;

    // Without --yes: nothing changes.
    let options = RollbackOptions {
        only_run: None,
        force: false,
        execute: false,
        batch_size: 25,
    };
    let dry = audit::rollback(
        &h.journal,
        &h.db.pool,
        options,
        backfill_journal::RunId::NIL,
    )
    .await
    .unwrap();
    assert_eq!(u64::try_from(dry.removed.len()).unwrap(), applied - 1);
    assert_eq!(
        count(&h.db.pool, "metric_facts").await,
        i64::try_from(applied).unwrap() + 1
    );

    let run = h.journal.start_run("rollback", vec![]).unwrap();
    let execute = RollbackOptions {
        execute: true,
        ..options
    };
    let report = audit::rollback(&h.journal, &h.db.pool, execute, run)
        .await
        .unwrap();
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].0, 30);
    assert_eq!(
        report.refused[0].1,
        vec!["brand_metrics.total_mentions".to_owned()]
    );
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT collector_result_id FROM metric_facts ORDER BY 1")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![10, 30],
        "only the live writer's fact and the refused key remain"
    );
    assert_eq!(
        count(&h.db.pool, "backfill.ledger").await,
        1,
        "key 30's ledger row stays"
    );
    assert_eq!(h.journal.count(State::RolledBack), applied - 1);
    assert_eq!(h.journal.status(30).unwrap().unwrap().state, State::Applied);
    assert_eq!(
        count(&h.db.pool, "competitor_metrics").await,
        count_children(&h, 30).await
    );

    // --force removes it too.
    let force = RollbackOptions {
        force: true,
        ..execute
    };
    let report = audit::rollback(&h.journal, &h.db.pool, force, run)
        .await
        .unwrap();
    assert_eq!(report.removed, vec![30]);
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT collector_result_id FROM metric_facts ORDER BY 1")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![10]);
}

async fn count_children(h: &Harness, key: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM competitor_metrics c JOIN metric_facts f ON f.id = c.metric_fact_id WHERE f.collector_result_id = $1",
    )
    .bind(key)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}
