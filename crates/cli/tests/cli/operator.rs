//! Regressions from following the runbooks as a new operator would (issue
//! 11): each names the defect.

use assert_cmd::Command;
use backfill_postgres::testing::TestDb;
use predicates::prelude::*;

use crate::{backfill, seeded};

#[tokio::test]
async fn regression_a_refused_run_binds_nothing() {
    // `run --source-table archive.empty` exited 2 but bound the journal to
    // that table, so the run with the right table was refused.
    let db = seeded(20).await;
    sqlx::raw_sql("CREATE TABLE archive_empty (LIKE extracted_positions)")
        .execute(&db.pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["run", "--source-table", "archive_empty"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--allow-empty"));
    backfill(&db, dir.path()).arg("run").assert().code(1);
}

#[tokio::test]
async fn regression_rollback_of_an_unknown_run_is_refused() {
    // `rollback --run <unknown id>` said "0 keys", exit 0.
    let db = seeded(20).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    backfill(&db, dir.path())
        .args(["rollback", "--run", &uuid::Uuid::new_v4().to_string()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run"));
}

#[tokio::test]
async fn regression_inspect_says_how_many_keys_it_did_not_list() {
    // `inspect --state rejected` listed 50 of 141 with no marker and no total;
    // `--limit 0` listed nothing; `--reason bogus` was an empty list, exit 0.
    let db = seeded(400).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = backfill(&db, dir.path())
            .args(["--json", "journal", "inspect"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let one = json(&["--state", "rejected", "--limit", "1"]);
    let total = one["keys_total"].as_u64().unwrap();
    assert!(total > 1, "{one}");
    assert_eq!(one["keys"].as_array().unwrap().len(), 1);
    assert_eq!(one["keys_truncated"], true);
    let all = json(&["--state", "rejected", "--limit", "0"]);
    assert_eq!(
        u64::try_from(all["keys"].as_array().unwrap().len()).unwrap(),
        total
    );
    assert_eq!(all["keys_truncated"], false);
    backfill(&db, dir.path())
        .args(["journal", "inspect", "--reason", "bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("existing_in_target"));
}

#[tokio::test]
async fn regression_json_is_honoured_by_schema_apply_seed_and_refresh() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    for (command, args) in [
        ("schema apply", &["schema", "apply"][..]),
        ("seed", &["seed", "--results", "5"]),
        ("refresh", &["refresh"]),
    ] {
        let out = Command::cargo_bin("backfill")
            .unwrap()
            .env("DATABASE_URL", &db.url)
            .arg("--journal")
            .arg(dir.path())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e})"));
        assert_eq!(json["command"], command);
    }
}
