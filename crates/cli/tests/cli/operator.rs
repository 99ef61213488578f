//! Regressions from following the runbooks as a new operator would (issue
//! 11): each names the defect.

use assert_cmd::Command;
use backfill_postgres::testing::TestDb;
use predicates::prelude::*;

use crate::{backfill, empty_journal, seeded};

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

/// Starts `run` with `extra`, stops it with SIGTERM after `after`; its exit
/// code and stderr.
fn interrupted_run(
    db: &TestDb,
    journal: &std::path::Path,
    extra: &[&str],
) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("backfill"))
        .env("DATABASE_URL", &db.url)
        .arg("--journal")
        .arg(journal)
        .args(["run", "--batch-size", "40"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    crate::signal(&child, "-TERM");
    let code = crate::wait_for(&mut child, std::time::Duration::from_secs(30));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_resuming_a_dry_run_stays_dry() {
    // Interrupting `run --dry-run` printed "resume with: backfill replay",
    // and that replay wrote 18,828 facts.
    let db = seeded(1500).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = interrupted_run(
        &db,
        dir.path(),
        &["--dry-run", "--max-rows-per-sec", "1500"],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("replay --dry-run"), "{stderr}");
    backfill(&db, dir.path())
        .arg("replay")
        .assert()
        .stderr(predicate::str::contains("a dry run: nothing is written"));
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(facts, 0, "the resume of a dry run wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_resume_keeps_the_interrupted_runs_options() {
    // After SIGTERM on `run --source-table archive.old_positions`, the
    // printed `backfill replay` failed ("missing … table
    // extracted_positions"), and the throttle was not carried over.
    let db = seeded(1500).await;
    sqlx::raw_sql("ALTER TABLE extracted_positions RENAME TO old_positions")
        .execute(&db.pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = interrupted_run(
        &db,
        dir.path(),
        &[
            "--source-table",
            "old_positions",
            "--max-rows-per-sec",
            "3000",
            // Review of decision 59: a resume used two writers again.
            "--connections",
            "1",
        ],
    );
    assert_eq!(code, Some(3), "{stderr}");
    backfill(&db, dir.path())
        .arg("replay")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "resuming with the options of the interrupted run",
        ));
    let journal = backfill_journal::Journal::open_read_only(dir.path()).unwrap();
    let replay = journal.runs().unwrap().pop().unwrap();
    assert_eq!(replay.command, "replay");
    for (name, value) in [
        ("source-table", "old_positions"),
        ("max-rows-per-sec", "3000"),
        ("connections", "1"),
    ] {
        assert!(
            replay
                .options
                .contains(&(name.to_owned(), value.to_owned())),
            "{:?}",
            replay.options
        );
    }
    assert_eq!(journal.pass(), Some(backfill_journal::PassState::Exhausted));
}

#[tokio::test]
async fn regression_replay_verify_and_rollback_refuse_another_target() {
    // `plan` on database A, then `replay` with DATABASE_URL pointing at B
    // wrote A's events into B.
    let a = seeded(40).await;
    let b = TestDb::with_schema().await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&a, dir.path()).arg("run").assert().code(1);
    let names_both = || {
        predicate::str::contains(format!("/{}", a.name()))
            .and(predicate::str::contains(format!("/{}", b.name())))
    };
    for args in [
        vec!["--source-url", &a.url, "--target-url", &b.url, "replay"],
        vec!["--target-url", &b.url, "journal", "verify"],
        vec!["--target-url", &b.url, "rollback", "--yes"],
    ] {
        backfill(&a, dir.path())
            .args(&args)
            .assert()
            .code(2)
            .stderr(names_both());
    }
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(facts, 0);
}

#[tokio::test]
async fn regression_rollback_removes_drifted_keys_too() {
    // Rollback reported success while a drifted key's fact and ledger row
    // stayed.
    let db = seeded(40).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    sqlx::raw_sql(
        "UPDATE extracted_positions SET topic = 'changed upstream'
          WHERE collector_result_id = (SELECT min(collector_result_id) FROM metric_facts)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    backfill(&db, dir.path())
        .args(["--json", "plan", "--rescan"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("\"keys_drifted\": 1"));
    backfill(&db, dir.path())
        .args(["rollback", "--yes"])
        .assert()
        .success();
    for table in ["metric_facts", "backfill.ledger"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn regression_on_conflict_replace_after_the_fact_reaches_skipped_keys_and_journals_what_it_replaced(
) {
    // Once keys ended skipped:existing_in_target, `run`, `replay` and `run
    // --rescan` with --on-conflict replace wrote 0 rows.
    let db = seeded(40).await;
    sqlx::raw_sql(
        "WITH f AS (
           INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, collected_at)
           SELECT collector_result_id, brand_id, brand_id, query_id, collector_type, 'live writer', processed_at
             FROM extracted_positions WHERE collector_result_id = 10 AND competitor_name IS NULL
            ORDER BY processed_at DESC LIMIT 1
           RETURNING id)
         INSERT INTO brand_metrics (metric_fact_id, total_mentions, product_mentions, has_presence)
         SELECT id, 1, 1, true FROM f",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    let topic = || async {
        let t: Option<String> =
            sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 10")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        t
    };
    assert_eq!(topic().await.as_deref(), Some("live writer"));
    backfill(&db, dir.path())
        .args(["replay", "--on-conflict", "replace"])
        .assert()
        .code(1);
    assert_ne!(topic().await.as_deref(), Some("live writer"), "replaced");
    let out = backfill(&db, dir.path())
        .args(["--json", "journal", "inspect", "--collector-result", "10"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"], "applied");
    let replaced: Vec<&serde_json::Value> = json["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"] == "replaced")
        .collect();
    assert_eq!(replaced.len(), 1, "{json}");
    assert!(replaced[0]["previous_hash"].is_string(), "{json}");
    backfill(&db, dir.path())
        .args(["journal", "verify"])
        .assert()
        .success();
}

#[tokio::test]
async fn regression_nothing_to_replay_is_said_and_dry_runs_say_would_apply() {
    // Replay before plan exited 0 with an empty summary and "next: backfill
    // refresh"; dry runs said "applied".
    let db = seeded(30).await;
    // A refused run leaves an empty journal behind.
    let dir = empty_journal(&db).await;
    backfill(&db, dir.path())
        .arg("replay")
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to replay"));
    // And in JSON (it printed nothing).
    let out = backfill(&db, dir.path())
        .args(["--json", "replay"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "command": "replay", "nothing_to_replay": true })
    );
    let journal = dir.path().display().to_string();
    backfill(&db, dir.path())
        .args(["run", "--dry-run"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("would apply"))
        .stdout(predicate::str::contains("rows written").not())
        .stdout(predicate::str::contains(format!(
            "backfill --journal {journal} run (without --dry-run)"
        )));
    backfill(&db, dir.path())
        .args(["replay", "--dry-run"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("would apply"))
        .stdout(predicate::str::contains("refresh").not());
}

#[tokio::test]
async fn regression_each_run_records_what_it_did_and_the_head_is_in_the_json() {
    // Per-run counts were whole-journal snapshots (a replay that applied 29
    // keys showed 2,826), and `status --json` had no chain head although the
    // auditor's guide said to keep it.
    let db = seeded(60).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    let out = backfill(&db, dir.path())
        .args(["--json", "replay"])
        .output()
        .unwrap();
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let applied = replay["summary"]["outcomes"]["applied"].as_u64().unwrap();
    let status = backfill(&db, dir.path())
        .args(["--json", "status"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let runs = status["runs"].as_array().unwrap();
    let plan_run = runs[0]["id"].as_str().unwrap().to_owned();
    let replay_run = runs[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(runs[1]["command"], "replay");
    assert!(status["journal"]["head"]["entries"].as_u64().unwrap() > 0);
    assert_eq!(
        status["journal"]["head"]["entries"],
        status["journal"]["entries"]
    );
    assert!(status["journal"]["head"]["hash"].is_string());
    let run_view = |id: &str| -> serde_json::Value {
        let out = backfill(&db, dir.path())
            .args(["--json", "journal", "inspect", "--run", id])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let replay_view = run_view(&replay_run);
    assert_eq!(replay_view["counts"]["applied"].as_u64(), Some(applied));
    assert_eq!(replay_view["end"], "completed");
    assert!(
        run_view(&plan_run)["counts"]["applied"].is_null(),
        "the plan applied nothing"
    );
}

#[tokio::test]
async fn regression_a_second_seed_adds_keys_instead_of_duplicating_them() {
    let db = TestDb::with_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let count = || async {
        let n: (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE collector_result_id <= 10), max(collector_result_id)
               FROM extracted_positions",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        n
    };
    backfill(&db, dir.path())
        .args(["seed", "--results", "10"])
        .assert()
        .success();
    let (first_ten, _) = count().await;
    backfill(&db, dir.path())
        .args(["--json", "seed", "--results", "10"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"first_key\":11"))
        .stdout(predicate::str::contains("\"last_key\":20"));
    assert_eq!(count().await, (first_ten, 20));
}

#[tokio::test]
async fn regression_schema_check_names_reference_rows_a_separate_target_lacks() {
    // With separate source and target databases `schema check` said ok, yet
    // every key failed: the target lacked the brands, collector_results and
    // generated_queries rows its foreign keys need.
    let source = seeded(20).await;
    let target = TestDb::with_schema().await;
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("backfill")
        .unwrap()
        .env_remove("DATABASE_URL")
        .args(["--source-url", &source.url, "--target-url", &target.url])
        .arg("--journal")
        .arg(dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "the target's collector_results has 0 rows",
        ))
        .stdout(predicate::str::contains(
            "copy collector_results from the source first",
        ));
}

#[tokio::test]
async fn regression_plan_on_conflict_replace_is_applied_by_the_replay() {
    // `plan --on-conflict replace` was recorded, then ignored by `replay`.
    let db = seeded(30).await;
    sqlx::raw_sql(
        "INSERT INTO metric_facts (collector_result_id, brand_id, customer_id, query_id, collector_type, topic, collected_at)
         SELECT collector_result_id, brand_id, brand_id, query_id, collector_type, 'live writer', processed_at
           FROM extracted_positions WHERE collector_result_id = 10 AND competitor_name IS NULL
          ORDER BY processed_at DESC LIMIT 1",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["plan", "--on-conflict", "replace"])
        .assert()
        .code(1);
    backfill(&db, dir.path()).arg("replay").assert().code(1);
    let topic: Option<String> =
        sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 10")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_ne!(topic.as_deref(), Some("live writer"));
}
