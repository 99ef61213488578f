//! Regressions from the hostile test of the audit record and the safety
//! interlocks (issue 10): each test names the defect and fails without its
//! fix.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use backfill_postgres::testing::TestDb;
use predicates::prelude::*;
use sqlx::Connection;

use crate::{backfill, seeded};

#[tokio::test]
async fn regression_read_only_commands_never_create_or_adopt_a_journal() {
    let db = TestDb::with_schema().await;
    let work = tempfile::tempdir().unwrap();
    let absent = work.path().join("absent");
    for args in [
        &["status"][..],
        &["journal", "inspect"],
        &["journal", "verify"],
        &["replay"],
        &["rollback"],
    ] {
        backfill(&db, &absent)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("no journal at"));
        assert!(!absent.exists(), "{args:?} created a journal");
    }
    // A directory of other files is never adopted, not even by planning.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    for args in [
        &["status"][..],
        &["plan", "--allow-empty"],
        &["run", "--allow-empty"],
    ] {
        backfill(&db, &other)
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("is not a journal"));
    }
    let names: Vec<_> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    // `status --journal /` wrote sled files into /.
    Command::cargo_bin("backfill")
        .unwrap()
        .args(["--journal", "/", "status"])
        .assert()
        .code(2);
    for name in ["db", "conf", "JOURNAL", "HEAD"] {
        assert!(!std::path::Path::new("/").join(name).exists(), "/{name}");
    }
}

#[tokio::test]
async fn regression_a_journal_is_private_to_its_owner() {
    // The journal directory was created 0755 with 0644 files although it
    // holds source data.
    let db = seeded(20).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("journal");
    backfill(&db, &dir).arg("plan").assert().code(1);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn regression_schema_check_names_a_column_of_the_wrong_type() {
    // A `collector_result_id text` passed, then `run` failed with "operator
    // does not exist: text > bigint".
    let db = seeded(10).await;
    sqlx::raw_sql("ALTER TABLE extracted_positions ALTER COLUMN collector_result_id TYPE text")
        .execute(&db.pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected =
        "column extracted_positions.collector_result_id is text but the contract says bigint";
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains(expected));
    backfill(&db, dir.path())
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(expected));
}

#[tokio::test]
async fn regression_a_run_needs_no_create_privilege_once_the_ledger_exists() {
    // Every start ran CREATE SCHEMA/INDEX IF NOT EXISTS, which needs CREATE
    // on the database even when everything exists.
    let db = seeded(40).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    backfill_postgres::schema::ensure_ledger(&db.pool)
        .await
        .unwrap();
    let role = format!("backfill_applier_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!(
        "CREATE ROLE {role} LOGIN;
         REVOKE CREATE ON DATABASE \"{db}\" FROM PUBLIC;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         GRANT USAGE ON SCHEMA public, backfill TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
         GRANT INSERT, DELETE ON metric_facts, brand_metrics, brand_sentiment,
               competitor_metrics, competitor_sentiment TO {role};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON backfill.ledger TO {role};",
        db = db.name()
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let out = Command::cargo_bin("backfill")
        .unwrap()
        .env("DATABASE_URL", &url)
        .arg("--journal")
        .arg(dir.path())
        .args(["--quiet", "run", "--no-refresh"])
        .output()
        .unwrap();
    let cleanup = format!("DROP OWNED BY {role}; DROP ROLE {role};");
    sqlx::raw_sql(&cleanup).execute(&db.pool).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejections only: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(facts > 30, "the limited role applied the planned keys");
}

#[tokio::test]
async fn regression_status_reads_a_journal_another_process_holds() {
    let db = seeded(30).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    let held = backfill_journal::Journal::open(dir.path()).unwrap();
    backfill(&db, dir.path())
        .args(["--json", "status"])
        .assert()
        .success()
        .stdout(predicate::str::contains(held.id().to_string()));
    drop(held);
}

#[test]
fn regression_a_wrong_port_says_connection_refused_at_once() {
    let started = std::time::Instant::now();
    Command::cargo_bin("backfill")
        .unwrap()
        .args([
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
            "schema",
            "check",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("connection refused"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not a 10 s pool time-out"
    );
}

#[test]
fn regression_max_rows_per_sec_0_is_refused() {
    Command::cargo_bin("backfill")
        .unwrap()
        .args(["--database-url", "postgres://postgres@127.0.0.1:1/x"])
        .args(["run", "--max-rows-per-sec", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--max-rows-per-sec must be at least 1",
        ));
}

#[tokio::test]
async fn regression_inspect_escapes_control_characters_in_names() {
    let db = seeded(30).await;
    sqlx::raw_sql(
        "UPDATE extracted_positions SET competitor_name = E'Evil\\x1b[31m Co\\x07'
          WHERE id = (SELECT min(e.id) FROM extracted_positions e
                       WHERE btrim(e.competitor_name) <> ''
                         AND EXISTS (SELECT 1 FROM extracted_positions b
                                      WHERE b.collector_result_id = e.collector_result_id
                                        AND b.competitor_name IS NULL))",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    let out = backfill(&db, dir.path())
        .args(["journal", "inspect"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Evil\\u{1b}[31m Co\\u{7}"), "{text}");
    assert!(!out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_refresh_failure_after_a_complete_run_exits_3_saying_what_was_written() {
    // Exit 2 ("nothing written") came after a complete run whose view
    // refresh failed.
    let db = seeded(40).await;
    let mut app = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // A refresh in flight holds the view's lock until it commits.
    sqlx::raw_sql("BEGIN; REFRESH MATERIALIZED VIEW mv_brand_daily_metrics")
        .execute(&mut app)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("backfill"))
        .env("DATABASE_URL", &db.url)
        .env("PGOPTIONS", "-c lock_timeout=500")
        .arg("--journal")
        .arg(dir.path())
        .args(["--quiet", "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut app).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("metric_facts"),
        "the summary says what was written: {stdout}"
    );
    assert!(
        stderr.contains("refreshing mv_brand_daily_metrics"),
        "{stderr}"
    );
    assert!(stderr.contains("resume with: backfill refresh"), "{stderr}");
}

/// A source without rejected keys: the seed's rejected keys removed.
pub(crate) async fn clean_source(results: i64) -> TestDb {
    let db = seeded(results).await;
    let probe = tempfile::tempdir().unwrap();
    backfill(&db, probe.path()).arg("plan").assert().code(1);
    let out = backfill(&db, probe.path())
        .args([
            "--json", "journal", "inspect", "--state", "rejected", "--limit", "100000",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<i64> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["collector_result_id"].as_i64().unwrap())
        .collect();
    assert!(!keys.is_empty());
    sqlx::query("DELETE FROM extracted_positions WHERE collector_result_id = ANY($1)")
        .bind(&keys)
        .execute(&db.pool)
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn regression_drifted_keys_are_unfinished_work_exit_1_naming_the_next_command() {
    // `run --rescan` exited 0 with drifted keys (the target still holds their
    // old rows) and named no next step.
    let db = clean_source(60).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().success();
    sqlx::raw_sql(
        "UPDATE extracted_positions SET topic = 'changed upstream'
          WHERE collector_result_id = (SELECT min(collector_result_id) FROM extracted_positions
                                        WHERE competitor_name IS NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    backfill(&db, dir.path())
        .args(["run", "--rescan"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "backfill replay --reapply-drifted",
        ));
    backfill(&db, dir.path())
        .args(["replay", "--reapply-drifted"])
        .assert()
        .success();
}

#[tokio::test]
async fn regression_a_failed_verify_into_a_closed_pipe_still_exits_1() {
    // `journal verify | head -1` exited 0 with thousands of findings: the
    // closed pipe turned the failed check into success.
    let db = seeded(60).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    sqlx::raw_sql("DELETE FROM metric_facts WHERE collector_result_id IN (SELECT collector_result_id FROM metric_facts LIMIT 5)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("backfill"))
        .env("DATABASE_URL", &db.url)
        .arg("--journal")
        .arg(dir.path())
        .args(["journal", "verify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The reader goes away before the first line.
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(1));
}
