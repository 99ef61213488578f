//! `run --initial-load` from the command line (DESIGN §10): refused on a
//! non-empty target, and kill -9 at random moments followed by `replay`
//! always ends with every constraint back, validated, and the rows of an
//! uninterrupted run.

use std::time::Duration;

use backfill_postgres::testing::{dump_target, TestDb};
use predicates::prelude::*;
use rand::Rng;

use crate::{backfill, empty_journal, seeded, spawn_run, uninterrupted_dump};

async fn constraints(db: &TestDb) -> (i64, bool, i64, i64) {
    let (n, valid): (i64, bool) = sqlx::query_as(
        "SELECT count(*), coalesce(bool_and(convalidated), false) FROM pg_constraint
          WHERE contype IN ('f', 'u', 'p') AND conrelid::regclass::text = ANY($1)",
    )
    .bind(
        backfill_postgres::initial::TABLES
            .map(str::to_owned)
            .to_vec(),
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let guards: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'backfill_initial_load_guard'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (n, valid, guards, recorded(db).await)
}

async fn recorded(db: &TestDb) -> i64 {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('backfill.deferred_constraints') IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    if !exists {
        return 0;
    }
    sqlx::query_scalar("SELECT count(*) FROM backfill.deferred_constraints")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_initial_load_into_a_non_empty_target_is_exit_2_naming_the_table() {
    let db = seeded(30).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path()).arg("run").assert().code(1);
    let other = tempfile::tempdir().unwrap();
    backfill(&db, other.path())
        .args(["run", "--initial-load"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("metric_facts has rows"));
    assert_eq!(constraints(&db).await, (19, true, 0, 0));
}

#[tokio::test]
async fn regression_replay_with_nothing_to_replay_still_restores_deferred_constraints() {
    // A load killed after deferring its constraints but before its pass was
    // journaled left a journal with no keys and no pass: `replay` answered
    // "nothing to replay" before connecting, and the constraints stayed
    // absent (CI, round 8 of the kill test).
    let db = seeded(5).await;
    // A refused run leaves an empty journal behind.
    let dir = empty_journal(&db).await;
    backfill_postgres::initial::defer(&db.pool).await.unwrap();
    assert_eq!(constraints(&db).await, (1, true, 5, 20));
    backfill(&db, dir.path())
        .arg("replay")
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to replay"))
        .stderr(predicate::str::contains(
            "restored 20 constraint(s) and index(es)",
        ));
    assert_eq!(constraints(&db).await, (19, true, 0, 0));
}

#[tokio::test]
async fn regression_refresh_schema_apply_and_an_unreachable_source_still_restore() {
    // Found by review: `refresh` restored through a one-connection pool and
    // timed out with the constraints absent; `schema apply --target` wrote
    // the target without restoring; `pools()` connected the source first, so
    // an unreachable source kept a reachable target's constraints absent.
    let db = seeded(5).await;
    let dir = tempfile::tempdir().unwrap();
    let restored = predicate::str::contains("restored 20 constraint(s) and index(es)");

    backfill_postgres::initial::defer(&db.pool).await.unwrap();
    backfill(&db, dir.path())
        .arg("refresh")
        .timeout(Duration::from_secs(8))
        .assert()
        .success()
        .stderr(restored.clone());
    assert_eq!(constraints(&db).await, (19, true, 0, 0), "refresh");

    backfill_postgres::initial::defer(&db.pool).await.unwrap();
    backfill(&db, dir.path())
        .args(["schema", "apply", "--target"])
        .assert()
        .success()
        .stderr(restored.clone());
    assert_eq!(constraints(&db).await, (19, true, 0, 0), "schema apply");

    backfill_postgres::initial::defer(&db.pool).await.unwrap();
    backfill(&db, dir.path())
        .args(["--source-url", "postgres://postgres@127.0.0.1:1/nowhere"])
        .args(["--target-url", &db.url])
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stderr(restored);
    assert_eq!(
        constraints(&db).await,
        (19, true, 0, 0),
        "unreachable source"
    );
}

/// Waits until the load has recorded its deferred constraints (it is then
/// inside the window where they are absent). `None` if the process ended
/// first.
async fn wait_for_deferral(db: &TestDb, child: &mut std::process::Child) -> Option<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if recorded(db).await > 0 {
            return Some(());
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load recorded no deferred constraints within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until no session of a `backfill run` is left on `db`; how long.
async fn sessions_gone(db: &TestDb) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE 'backfill run%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if left == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the killed load's {left} session(s) outlived it by a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_initial_load_then_replay_restores_every_constraint_and_the_rows() {
    const RESULTS: i64 = 3000;
    let expected = uninterrupted_dump(RESULTS).await;
    let mut rng = rand::thread_rng();
    let mut inside = 0;
    let rounds = 10;
    for round in 0..rounds {
        let db = seeded(RESULTS).await;
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let mut child = spawn_run(&db, dir.path(), &["--initial-load"]);
        // Even rounds kill at a random moment after the constraints were
        // deferred, whatever the machine's speed (a fixed delay from the
        // start landed before the deferral when CI was busy); odd rounds at a
        // random moment from the start: before the journal exists, while
        // planning, deferring, loading or restoring.
        if round % 2 == 0 {
            wait_for_deferral(&db, &mut child)
                .await
                .unwrap_or_else(|| panic!("round {round}: the load ended before deferring"));
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The server ends the killed process's sessions once it notices; a
        // command right after waits up to 3 s for the applier lock they hold
        // (decision 62), which a CI machine busy with the other tests once
        // exceeded (the restore was then left to the next command, as
        // designed). Wait for them to be gone, as an operator would see in
        // pg_stat_activity.
        let gone = sessions_gone(&db).await;
        if gone > Duration::from_secs(1) {
            eprintln!("round {round}: the killed load's sessions lasted {gone:?}");
        }
        // Killed while the constraints were absent (recorded, not restored)?
        let deferred = recorded(&db).await > 0;
        eprintln!(
            "round {round}: killed after {:?}{}{}",
            started.elapsed(),
            if finished { ", already finished" } else { "" },
            if deferred {
                ", constraints deferred"
            } else {
                ""
            }
        );
        if deferred {
            inside += 1;
        }
        let mut replayed = String::new();
        // The next command restores them before anything else, then resumes.
        // (Killed before the journal existed: nothing was deferred or
        // written, and `replay` says there is no journal.)
        if dir.path().join(backfill_journal::MARKER).exists() {
            let out = backfill(&db, dir.path()).arg("replay").output().unwrap();
            replayed = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "round {round}: replay exited {:?}: {replayed}",
                out.status.code()
            );
        } else {
            assert_eq!(recorded(&db).await, 0, "round {round}");
            backfill(&db, dir.path())
                .arg("replay")
                .assert()
                .code(2)
                .stderr(predicate::str::contains("no journal"));
        }
        assert_eq!(
            constraints(&db).await,
            (19, true, 0, 0),
            "round {round}: constraints back and validated, guards and records gone; replay said: {replayed}"
        );
        backfill(&db, dir.path())
            .args(["run", "--batch-size", "40"])
            .assert()
            .code(1);
        assert_eq!(dump_target(&db.pool).await, expected, "round {round}");
    }
    eprintln!("{inside} of {rounds} kills landed while the constraints were deferred");
    assert!(
        inside >= rounds / 2,
        "only {inside} of {rounds} kills landed while the constraints were deferred"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_check_names_the_contract_constraints_a_target_lacks() {
    let db = seeded(5).await;
    let dir = tempfile::tempdir().unwrap();
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .success();
    // While a load holds the applier lock with its constraints deferred,
    // nothing is restored and the check names all of them.
    let lock =
        backfill_postgres::TargetLock::acquire(&db.pool, backfill_postgres::LockScope::Whole)
            .await
            .unwrap();
    backfill_postgres::initial::defer(&db.pool).await.unwrap();
    let out = backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "another backfill holds this target's applier lock",
        ));
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    // The children's primary keys too; `metric_facts`' one stays.
    assert_eq!(stdout.matches("  constraint ").count(), 18, "{stdout}");
    assert!(
        stdout.contains("constraint PRIMARY KEY (id) on competitor_metrics"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("constraint PRIMARY KEY (id) on metric_facts"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("  index ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("index (competitor_id) on competitor_metrics"),
        "{stdout}"
    );
    assert!(
        stdout.contains("constraint UNIQUE (metric_fact_id, competitor_id) on competitor_metrics"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "constraint FOREIGN KEY (query_id) REFERENCES generated_queries on metric_facts"
        ),
        "{stdout}"
    );
    lock.release().await;
    // The load is gone: the next command restores them, and the check passes.
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "restored 20 constraint(s) and index(es)",
        ));
    // One dropped by hand is named.
    sqlx::raw_sql("ALTER TABLE brand_sentiment DROP CONSTRAINT brand_sentiment_metric_fact_id_key")
        .execute(&db.pool)
        .await
        .unwrap();
    backfill(&db, dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "constraint UNIQUE (metric_fact_id) on brand_sentiment",
        ));
}
