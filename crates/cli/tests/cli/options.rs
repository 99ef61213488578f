//! Every documented option the other modules do not reach (issue 13), each
//! with a control that fails if the option were ignored.

use assert_cmd::Command;
use backfill_postgres::testing::TestDb;
use predicates::prelude::*;
use sqlx::PgPool;

use crate::reliability::clean_source;
use crate::{backfill, seeded};

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn inspect_key(db: &TestDb, journal: &std::path::Path, key: i64) -> serde_json::Value {
    let out = backfill(db, journal)
        .args([
            "--json",
            "journal",
            "inspect",
            "--collector-result",
            &key.to_string(),
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run_ids(db: &TestDb, journal: &std::path::Path) -> Vec<(String, String)> {
    let out = backfill(db, journal)
        .args(["--json", "status"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["command"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn replay_no_retry_failed_leaves_failed_keys_alone_and_a_plain_replay_retries_them() {
    let db = clean_source(40).await;
    let key: i64 = count(
        &db.pool,
        "SELECT min(collector_result_id) FROM extracted_positions",
    )
    .await;
    // A query the target does not know: the key fails alone (foreign key).
    sqlx::query(
        "UPDATE extracted_positions SET query_id = '00000000-0000-0000-0000-00000000dead'
          WHERE collector_result_id = $1",
    )
    .bind(key)
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["--json", "run"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\"failed\": 1"));
    assert_eq!(inspect_key(&db, dir.path(), key)["state"], "failed");
    // The operator restores the query; the key would now apply.
    sqlx::query(
        "INSERT INTO generated_queries (id, brand_id, query_text)
         SELECT query_id, brand_id, 'restored' FROM extracted_positions
          WHERE collector_result_id = $1 LIMIT 1",
    )
    .bind(key)
    .execute(&db.pool)
    .await
    .unwrap();
    let fact = format!("SELECT count(*) FROM metric_facts WHERE collector_result_id = {key}");
    backfill(&db, dir.path())
        .args(["replay", "--no-retry-failed"])
        .assert()
        .code(1);
    assert_eq!(count(&db.pool, &fact).await, 0, "not retried");
    let history = inspect_key(&db, dir.path(), key);
    assert_eq!(history["state"], "failed");
    assert_eq!(
        history["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["record"] == "failed")
            .count(),
        1,
        "no second attempt: {history}"
    );
    backfill(&db, dir.path()).arg("replay").assert().success();
    assert_eq!(count(&db.pool, &fact).await, 1, "retried");
    assert_eq!(inspect_key(&db, dir.path(), key)["state"], "applied");
}

#[tokio::test]
async fn rollback_run_removes_only_the_keys_of_that_run() {
    let db = seeded(30).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    let first_max = count(
        &db.pool,
        "SELECT max(collector_result_id) FROM extracted_positions",
    )
    .await;
    let first_facts = count(&db.pool, "SELECT count(*) FROM metric_facts").await;
    backfill(&db, dir.path())
        .args(["seed", "--results", "30"])
        .assert()
        .success();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    let second_facts =
        format!("SELECT count(*) FROM metric_facts WHERE collector_result_id > {first_max}");
    assert!(count(&db.pool, &second_facts).await > 0);
    let runs = run_ids(&db, dir.path());
    let second = &runs.iter().rfind(|(_, c)| c == "run").unwrap().0;
    // Dry: names what it would remove, removes nothing.
    backfill(&db, dir.path())
        .args(["rollback", "--run", second, "--batch-size", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would remove"));
    assert!(count(&db.pool, &second_facts).await > 0);
    backfill(&db, dir.path())
        .args(["rollback", "--run", second, "--batch-size", "3", "--yes"])
        .assert()
        .success();
    assert_eq!(
        count(&db.pool, &second_facts).await,
        0,
        "the second run's keys are gone"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM metric_facts").await,
        first_facts,
        "the first run's keys stay"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM backfill.ledger").await,
        first_facts
    );
}

#[tokio::test]
async fn run_rescan_applies_a_rejected_key_once_its_source_is_fixed() {
    let db = seeded(220).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    let out = backfill(&db, dir.path())
        .args([
            "--json",
            "journal",
            "inspect",
            "--reason",
            "value_out_of_range",
            "--limit",
            "1",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = json["keys"][0]["collector_result_id"].as_i64().unwrap();
    let fixed = sqlx::query(
        "UPDATE extracted_positions SET visibility_index = 10.5
          WHERE collector_result_id = $1 AND visibility_index > 100",
    )
    .bind(key)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(fixed.rows_affected(), 1);
    // Control: without --rescan the cursor is past the key.
    backfill(&db, dir.path()).arg("run").assert().code(1);
    assert_eq!(inspect_key(&db, dir.path(), key)["state"], "rejected");
    backfill(&db, dir.path())
        .args(["run", "--rescan"])
        .assert()
        .code(1);
    assert_eq!(inspect_key(&db, dir.path(), key)["state"], "applied");
    let fact = format!("SELECT count(*) FROM metric_facts WHERE collector_result_id = {key}");
    assert_eq!(count(&db.pool, &fact).await, 1);
    backfill(&db, dir.path())
        .args(["journal", "verify", "--batch-size", "7"])
        .assert()
        .success();
}

#[tokio::test]
async fn run_no_refresh_leaves_the_view_and_refresh_fills_it() {
    let db = clean_source(40).await;
    let dir = tempfile::tempdir().unwrap();
    let view = "SELECT count(*) FROM mv_brand_daily_metrics";
    backfill(&db, dir.path())
        .args(["run", "--no-refresh"])
        .assert()
        .success();
    assert!(count(&db.pool, "SELECT count(*) FROM metric_facts").await > 0);
    assert_eq!(count(&db.pool, view).await, 0, "not refreshed");
    backfill(&db, dir.path()).arg("refresh").assert().success();
    assert!(count(&db.pool, view).await > 0, "refreshed");
}

#[tokio::test]
async fn rollback_refuses_a_key_changed_since_written_until_force() {
    let db = seeded(40).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    let key = count(
        &db.pool,
        "SELECT min(collector_result_id) FROM metric_facts",
    )
    .await;
    sqlx::query("UPDATE metric_facts SET topic = 'edited by hand' WHERE collector_result_id = $1")
        .bind(key)
        .execute(&db.pool)
        .await
        .unwrap();
    backfill(&db, dir.path())
        .args(["rollback", "--yes"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!(
            "refused collector_result_id {key}: changed since written (metric_facts.topic); --force"
        )));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM metric_facts").await,
        1
    );
    backfill(&db, dir.path())
        .args(["rollback", "--yes", "--force"])
        .assert()
        .success();
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM metric_facts").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM backfill.ledger").await,
        0
    );
}

#[tokio::test]
async fn schema_apply_source_and_target_create_only_their_part() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["schema", "apply", "--source"])
        .assert()
        .success();
    let tables = |name: &'static str| {
        let pool = db.pool.clone();
        async move {
            count(
                &pool,
                &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{name}'"),
            )
            .await
        }
    };
    assert_eq!(tables("extracted_positions").await, 1);
    assert_eq!(tables("metric_facts").await, 0);
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("table metric_facts"))
        .stdout(predicate::str::contains("table extracted_positions").not());
    backfill(&db, dir.path())
        .args(["schema", "apply", "--target"])
        .assert()
        .success();
    assert_eq!(tables("metric_facts").await, 1);
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .success();
}

#[tokio::test]
async fn demo_runs_end_to_end_and_replaces_only_a_journal() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    // A directory that is not a journal is refused, not deleted.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("keep.txt"), "mine").unwrap();
    let demo = |journal: &std::path::Path| {
        let mut cmd = Command::cargo_bin("backfill").unwrap();
        cmd.env("DATABASE_URL", &db.url)
            .arg("--journal")
            .arg(journal)
            .args(["--quiet", "demo", "--results", "30", "--batch-size", "7"]);
        cmd
    };
    demo(&notes)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("keep.txt"));
    assert!(
        notes.join("keep.txt").exists(),
        "regression: demo deleted a directory that was not a journal"
    );
    let journal = dir.path().join("journal");
    demo(&journal).assert().success();
    // A second demo replaces its own journal.
    demo(&journal).assert().success();
    let demo_url = format!("{}/backfill_demo", db.url.rsplit_once('/').unwrap().0);
    let pool = PgPool::connect(&demo_url).await.unwrap();
    let facts = count(&pool, "SELECT count(*) FROM metric_facts").await;
    let ledger = count(&pool, "SELECT count(*) FROM backfill.ledger").await;
    pool.close().await;
    assert!(facts > 0);
    assert_eq!(facts, ledger);
    let admin = PgPool::connect(&db.url).await.unwrap();
    sqlx::query("DROP DATABASE IF EXISTS backfill_demo WITH (FORCE)")
        .execute(&admin)
        .await
        .unwrap();
}
