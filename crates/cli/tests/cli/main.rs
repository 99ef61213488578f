//! The `backfill` binary: exit codes, messages, signals and kill -9; and
//! connecting (module `connect`).

mod connect;
mod damage;
mod initial;
mod operator;
mod options;
mod reliability;
mod runbook;

use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use sqlx::Connection;

use assert_cmd::Command;
use backfill_postgres::testing::{dump_target, TestDb};
use predicates::prelude::*;
use rand::Rng;

fn backfill(db: &TestDb, journal: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("backfill").unwrap();
    cmd.env("DATABASE_URL", &db.url)
        .arg("--journal")
        .arg(journal)
        .arg("--quiet");
    cmd
}

async fn seeded(results: i64) -> TestDb {
    let db = TestDb::with_schema().await;
    backfill_postgres::demo::seed(&db.pool, results)
        .await
        .unwrap();
    db
}

/// A journal with no keys and no pass, as a refused run leaves it (the
/// run's source table is empty).
async fn empty_journal(db: &TestDb) -> tempfile::TempDir {
    sqlx::raw_sql("CREATE TABLE archive_empty (LIKE extracted_positions)")
        .execute(&db.pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    backfill(db, dir.path())
        .args(["run", "--source-table", "archive_empty"])
        .assert()
        .code(2);
    dir
}

#[test]
fn no_database_url_is_exit_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("backfill")
        .unwrap()
        .env_remove("DATABASE_URL")
        .arg("--journal")
        .arg(dir.path())
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("DATABASE_URL"));
}

#[test]
fn a_bad_url_is_exit_2_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("backfill")
        .unwrap()
        .args([
            "--database-url",
            "postgres://postgres:hunter2@127.0.0.1:1/nothing",
            "--journal",
        ])
        .arg(dir.path())
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cannot connect to postgres://postgres@127.0.0.1:1/nothing",
        ))
        .stderr(predicate::str::contains("hunter2").not());
}

#[test]
fn usage_errors_are_exit_2() {
    Command::cargo_bin("backfill")
        .unwrap()
        .args(["run", "--batch-size", "0"])
        .assert()
        .code(2);
    Command::cargo_bin("backfill")
        .unwrap()
        .arg("frobnicate")
        .assert()
        .code(2);
}

#[tokio::test]
async fn a_missing_table_is_exit_2_naming_it_and_schema_check_lists_the_same() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    let out = backfill(&db, dir.path()).arg("run").assert().code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    for name in [
        "table extracted_positions",
        "table brands",
        "table brand_competitors",
        "table collector_results",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("table metric_facts"))
        .stdout(predicate::str::contains("table mv_brand_daily_metrics"));
    backfill(&db, dir.path())
        .args(["schema", "apply"])
        .assert()
        .success();
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .success();
    // A renamed source table is named as such.
    backfill(&db, dir.path())
        .args(["plan", "--source-table", "positions_old"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("table positions_old"));
}

#[tokio::test]
async fn an_empty_source_is_exit_2_unless_allowed() {
    let db = TestDb::with_schema().await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "source table extracted_positions is empty",
        ))
        .stderr(predicate::str::contains("--allow-empty"));
    backfill(&db, dir.path())
        .args(["run", "--allow-empty"])
        .assert()
        .success();
}

#[tokio::test]
async fn run_reports_json_and_exit_1_for_rejections_then_status_reads_the_journal() {
    let db = seeded(300).await;
    let dir = tempfile::tempdir().unwrap();
    let out = backfill(&db, dir.path())
        .args(["--json", "run", "--batch-size", "64"])
        .assert()
        .code(1);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let applied = json["summary"]["outcomes"]["applied"].as_u64().unwrap();
    assert!(applied > 250);
    assert_eq!(json["journal"]["states"]["applied"].as_u64(), Some(applied));
    assert!(
        json["journal"]["states"]["rejected:orphan_collector_result"]
            .as_u64()
            .unwrap()
            >= 3
    );
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(u64::try_from(facts).unwrap(), applied);
    // The view was refreshed.
    let view: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(total_responses), 0)::int8 FROM mv_brand_daily_metrics",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(view, facts);

    let status = Command::cargo_bin("backfill")
        .unwrap()
        .env_remove("DATABASE_URL")
        .args(["--json", "--journal"])
        .arg(dir.path())
        .arg("status")
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&status.get_output().stdout).unwrap();
    assert_eq!(json["states"]["applied"].as_u64(), Some(applied));
    assert_eq!(json["runs"][0]["command"], "run");
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let db = seeded(100).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["run", "--dry-run"])
        .assert()
        .code(1);
    assert!(dump_target(&db.pool).await.is_empty());
}

#[tokio::test]
async fn a_second_applier_is_refused_with_a_clear_message() {
    let db = seeded(20).await;
    let dir = tempfile::tempdir().unwrap();
    // Replay needs a journal (it never creates one).
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x6261_636b_6669_6c6c_i64)
        .execute(&mut holder)
        .await
        .unwrap();
    backfill(&db, dir.path())
        .arg("replay")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "another backfill is applying to this target",
        ));
    holder.close().await.unwrap();
    // Applied; the seed's rejected keys keep the exit code at 1.
    backfill(&db, dir.path()).arg("replay").assert().code(1);
}

#[tokio::test]
async fn a_journal_in_use_is_exit_2_naming_its_path() {
    let db = seeded(20).await;
    let dir = tempfile::tempdir().unwrap();
    let _held = backfill_journal::Journal::open(dir.path()).unwrap();
    backfill(&db, dir.path())
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(dir.path().display().to_string()))
        .stderr(predicate::str::contains("in use"));
}

/// The target rows of an uninterrupted `run` on freshly seeded data.
async fn uninterrupted_dump(results: i64) -> Vec<String> {
    let reference = seeded(results).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&reference, dir.path())
        .args(["run", "--batch-size", "40"])
        .assert()
        .code(1);
    dump_target(&reference.pool).await
}

fn spawn_run(db: &TestDb, journal: &std::path::Path, extra: &[&str]) -> std::process::Child {
    StdCommand::new(assert_cmd::cargo::cargo_bin("backfill"))
        .env("DATABASE_URL", &db.url)
        .arg("--journal")
        .arg(journal)
        .arg("--quiet")
        .args(["run", "--batch-size", "40"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_then_replay_gives_the_rows_of_an_uninterrupted_run() {
    let expected = uninterrupted_dump(2500).await;

    let db = seeded(2500).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut killed_mid_run = 0;
    for _ in 0..4 {
        let mut child = spawn_run(&db, dir.path(), &[]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..900)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(
        killed_mid_run > 0,
        "every run finished before the kill: use more data"
    );
    backfill(&db, dir.path())
        .arg("replay")
        .assert()
        .code(predicate::in_iter([0, 1]));
    backfill(&db, dir.path())
        .args(["run", "--batch-size", "40"])
        .assert()
        .code(1);
    assert_eq!(dump_target(&db.pool).await, expected);
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT metric_fact_id, competitor_id FROM competitor_metrics
          GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_the_batch_in_flight_and_exits_3() {
    let db = seeded(2500).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_run(&db, dir.path(), &["--max-rows-per-sec", "4000"]);
    std::thread::sleep(Duration::from_millis(800));
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(3));
    let journal = backfill_journal::Journal::open(dir.path()).unwrap();
    journal.verify_chain().unwrap();
    let applied = journal.count(backfill_journal::State::Applied);
    drop(journal);
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        u64::try_from(facts).unwrap(),
        applied,
        "journal and target agree after SIGINT"
    );
    assert!(facts > 0);
    backfill(&db, dir.path())
        .args(["run", "--batch-size", "40"])
        .assert()
        .code(1);
}

/// Waits for `child` up to `limit`; its exit code, or None if it still runs.
fn wait_for(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn signal(child: &std::process::Child, name: &str) {
    let status = StdCommand::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// How the journal's last run ended.
fn last_run_end(journal: &std::path::Path) -> Option<backfill_journal::RunEnd> {
    let journal = backfill_journal::Journal::open(journal).unwrap();
    journal.runs().unwrap().last().and_then(|r| r.end.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_sigterm_ends_a_throttle_wait_at_once() {
    // The stop flag was read between batches only: a throttle sleep (here
    // 40 keys × 6 rows at 20 rows/s = 12 s) outlived the signal.
    let db = seeded(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_run(&db, dir.path(), &["--max-rows-per-sec", "20"]);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "-TERM");
    let code = wait_for(&mut child, Duration::from_secs(5));
    if code.is_none() {
        child.kill().ok();
    }
    assert_eq!(code, Some(3), "exit 3 within 5 s of SIGTERM");
    assert_eq!(
        last_run_end(dir.path()),
        Some(backfill_journal::RunEnd::Interrupted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_second_signal_abandons_a_stuck_batch_and_the_run_is_recorded() {
    // A second signal called process::exit from a task: the run was never
    // recorded as ended. Now it aborts through the run control.
    let db = seeded(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE competitor_metrics IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let mut child = spawn_run(&db, dir.path(), &[]);
    // Wait until the run's first batch waits on the lock.
    let mut waiting = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waiting, "the run never reached the locked table");
    signal(&child, "-TERM");
    assert_eq!(
        wait_for(&mut child, Duration::from_millis(800)),
        None,
        "the first signal waits for the batch in flight"
    );
    signal(&child, "-TERM");
    let code = wait_for(&mut child, Duration::from_secs(5));
    if code.is_none() {
        child.kill().ok();
    }
    assert_eq!(code, Some(3));
    assert_eq!(
        last_run_end(dir.path()),
        Some(backfill_journal::RunEnd::Interrupted)
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(facts, 0, "the abandoned batch rolled back");
}

/// A validator for the subset of JSON Schema docs/inspect.schema.json uses
/// (type, required, properties, items, enum, $ref into $defs).
fn validate(
    schema: &serde_json::Value,
    root: &serde_json::Value,
    value: &serde_json::Value,
    path: &str,
) -> Vec<String> {
    use serde_json::Value;
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
        None => schema,
    };
    let mut errors = Vec::new();
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{path}: {value} is not {types:?}"));
            return errors;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} not in enum"));
        }
    }
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if value.get(name).is_none() {
                errors.push(format!("{path}: missing {name}"));
            }
        }
    }
    if let (Some(Value::Object(props)), Value::Object(obj)) = (schema.get("properties"), value) {
        for (name, sub) in props {
            if let Some(v) = obj.get(name) {
                errors.extend(validate(sub, root, v, &format!("{path}.{name}")));
            }
        }
    }
    if let (Some(items), Value::Array(values)) = (schema.get("items"), value) {
        for (i, v) in values.iter().enumerate() {
            errors.extend(validate(items, root, v, &format!("{path}[{i}]")));
        }
    }
    errors
}

#[tokio::test]
async fn inspect_json_follows_the_documented_schema_and_verify_and_rollback_work_end_to_end() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/inspect.schema.json")).unwrap();
    let db = seeded(120).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["run", "--batch-size", "50"])
        .assert()
        .code(1);

    let offline = |args: &[&str]| {
        let mut cmd = Command::cargo_bin("backfill").unwrap();
        cmd.env_remove("DATABASE_URL")
            .arg("--json")
            .arg("--journal")
            .arg(dir.path())
            .args(args);
        cmd
    };
    for args in [
        vec!["journal", "inspect"],
        vec!["journal", "inspect", "--state", "rejected", "--limit", "3"],
        vec!["journal", "inspect", "--reason", "no_brand_row"],
    ] {
        let out = offline(&args).assert().success();
        let value: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let errors = validate(&schema["$defs"]["overview"], &schema, &value, "$");
        assert!(errors.is_empty(), "{args:?}: {errors:?}");
        if args.len() > 2 {
            assert!(!value["keys"].as_array().unwrap().is_empty(), "{args:?}");
        }
    }
    let out = offline(&["journal", "inspect", "--collector-result", "13"])
        .assert()
        .success();
    let value: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let errors = validate(&schema["$defs"]["key"], &schema, &value, "$");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(value["state"], "applied");
    assert_eq!(value["history"].as_array().unwrap().len(), 2);
    offline(&["journal", "inspect", "--state", "bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown state"));

    backfill(&db, dir.path())
        .args(["journal", "verify"])
        .assert()
        .success();
    sqlx::raw_sql("UPDATE metric_facts SET topic = 'edited' WHERE collector_result_id = 13")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = backfill(&db, dir.path())
        .args(["--json", "journal", "verify"])
        .assert()
        .code(1);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["findings"][0]["collector_result_id"], 13);
    assert_eq!(report["findings"][0]["differs"][0], "metric_facts.topic");

    backfill(&db, dir.path())
        .arg("rollback")
        .assert()
        .code(1)
        .stdout(predicate::str::contains("would remove"));
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM metric_facts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(facts > 100, "rollback without --yes changes nothing");
    backfill(&db, dir.path())
        .args(["rollback", "--yes"])
        .assert()
        .code(1);
    let left: Vec<i64> = sqlx::query_scalar("SELECT collector_result_id FROM metric_facts")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![13]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_kill_mid_read_resumes_the_unfinished_pass() {
    let expected = uninterrupted_dump(1500).await;

    let db = seeded(1500).await;
    let dir = tempfile::tempdir().unwrap();
    // Throttled reading: the kill lands while the source is only partly read.
    let mut child = spawn_run(&db, dir.path(), &["--max-rows-per-sec", "2000"]);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    {
        let journal = backfill_journal::Journal::open(dir.path()).unwrap();
        let cursor = journal.cursor().expect("something was planned");
        assert!(
            cursor < 1500,
            "the pass must be unfinished (cursor {cursor})"
        );
    }
    backfill(&db, dir.path())
        .args(["replay", "--batch-size", "40"])
        .assert()
        .code(1);
    assert_eq!(dump_target(&db.pool).await, expected);
}

#[tokio::test]
async fn drift_is_planned_and_reapplied_from_the_command_line() {
    let db = seeded(80).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    sqlx::raw_sql("UPDATE extracted_positions SET topic = 'changed upstream' WHERE collector_result_id = 40 AND competitor_name IS NULL")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = backfill(&db, dir.path())
        .args(["--json", "plan", "--rescan"])
        .assert()
        .code(1);
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["summary"]["keys_drifted"], 1);
    assert_eq!(json["journal"]["states"]["drifted"], 1);
    backfill(&db, dir.path())
        .args(["replay", "--reapply-drifted"])
        .assert()
        .code(1);
    let topic: Option<String> =
        sqlx::query_scalar("SELECT topic FROM metric_facts WHERE collector_result_id = 40")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(topic.as_deref(), Some("changed upstream"));
    backfill(&db, dir.path())
        .args(["journal", "verify"])
        .assert()
        .success();
}

/// Regression: `println!` panicked (exit 101) when the reader of the output
/// went away, as in `backfill journal inspect … | head`.
#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let db = seeded(2000).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("plan").assert().code(1);
    for json in [true, false] {
        let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("backfill"));
        cmd.env("DATABASE_URL", &db.url)
            .arg("--journal")
            .arg(dir.path())
            .arg("--quiet");
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .args([
                "journal", "inspect", "--state", "pending", "--limit", "100000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The pipe is closed here, long before the listing (well over the
        // 64 KiB a pipe buffers) is written.
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "json={json}: {:?}, stderr: {stderr}",
            output.status
        );
        assert!(!stderr.contains("panicked"), "json={json}: {stderr}");
    }
}
