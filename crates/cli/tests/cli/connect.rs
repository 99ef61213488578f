//! Connecting like psql does (DESIGN §7), against real servers: TLS modes and
//! certificates on the second cluster `scripts/test.sh` starts (a CA of its
//! own, a role that needs a password), libpq's environment and password file,
//! secrets kept out of every output, and lock and statement timeouts against
//! an application's lock on the main cluster.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use backfill_postgres::testing::{dump_target, TestDb};
use predicates::prelude::*;
use sqlx::Connection;

use crate::{backfill, seeded, wait_for};

/// The second cluster (scripts/tls-cluster.sh).
struct Tls {
    port: String,
    ca: PathBuf,
    wrong_ca: PathBuf,
    user: String,
    password: String,
}

fn tls() -> Tls {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: the connection tests need the TLS cluster that scripts/test.sh starts (scripts/tls-cluster.sh)")
        })
    };
    Tls {
        port: var("BACKFILL_TLS_PORT"),
        ca: var("BACKFILL_TLS_CA").into(),
        wrong_ca: var("BACKFILL_TLS_WRONG_CA").into(),
        user: var("BACKFILL_TLS_USER"),
        password: var("BACKFILL_TLS_PASSWORD"),
    }
}

impl Tls {
    /// A database with the contract schema (and `results` seeded) on the
    /// TLS cluster.
    async fn db(&self, results: i64) -> TestDb {
        let admin = format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        );
        let db = TestDb::with_schema_on(&admin).await;
        if results > 0 {
            backfill_postgres::demo::seed(&db.pool, results)
                .await
                .unwrap();
        }
        db
    }

    fn url(&self, host: &str, db: &TestDb, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/{}?{query}",
            self.port,
            db.name()
        )
    }
}

/// The binary with no connection settings from this process's environment.
fn bare(journal: &Path) -> Command {
    let mut cmd = Command::cargo_bin("backfill").unwrap();
    for var in [
        "DATABASE_URL",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGAPPNAME",
        "PGPASSFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", journal).arg("--journal").arg(journal);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_is_encrypted_disable_is_not_and_connections_are_named() {
    let tls = tls();
    for (mode, encrypted) in [("require", true), ("disable", false)] {
        let db = tls.db(300).await;
        let dir = tempfile::tempdir().unwrap();
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("backfill"))
            .env_remove("DATABASE_URL")
            .arg("--database-url")
            .arg(tls.url("localhost", &db, &format!("sslmode={mode}")))
            .arg("--journal")
            .arg(dir.path())
            .args([
                "--quiet",
                "run",
                "--batch-size",
                "10",
                "--max-rows-per-sec",
                "200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut seen: Vec<(bool, String)> = Vec::new();
        for _ in 0..100 {
            seen = sqlx::query_as(
                "SELECT s.ssl, a.application_name FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.datname = current_database() AND a.application_name LIKE 'backfill %'",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            if !seen.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().ok();
        child.wait().ok();
        assert!(!seen.is_empty(), "the run's connections never showed up");
        for (ssl, name) in &seen {
            assert_eq!(*ssl, encrypted, "sslmode={mode}: {name}");
            let run_id = name.strip_prefix("backfill run ").unwrap_or_else(|| {
                panic!("application_name should be `backfill run <run id>`: {name}")
            });
            assert!(run_id.parse::<uuid::Uuid>().is_ok(), "{name}");
        }
    }
}

#[tokio::test]
async fn verify_full_needs_the_right_ca_and_the_right_host_name() {
    let tls = tls();
    let db = tls.db(0).await;
    let dir = tempfile::tempdir().unwrap();
    let check = |url: String| {
        let mut cmd = bare(dir.path());
        cmd.arg("--database-url").arg(url).args(["schema", "check"]);
        cmd
    };
    let ca = tls.ca.display().to_string();
    let wrong = tls.wrong_ca.display().to_string();
    check(tls.url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .assert()
    .success();
    check(tls.url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={wrong}"),
    ))
    .assert()
    .code(2)
    .stderr(predicate::str::contains("TLS handshake failed"));
    // The certificate is for "localhost", not for 127.0.0.1.
    check(tls.url(
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .assert()
    .code(2)
    .stderr(predicate::str::contains("TLS handshake failed"));
    // verify-ca checks the issuer only.
    check(tls.url(
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .assert()
    .success();
}

#[tokio::test]
async fn libpq_variables_and_the_password_file_carry_the_connection() {
    let tls = tls();
    let db = tls.db(0).await;
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "localhost:{}:{}:{}:{}\n",
            tls.port,
            db.name(),
            tls.user,
            tls.password
        ),
    )
    .unwrap();
    let chmod = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let env_only = || {
        let mut cmd = bare(dir.path());
        cmd.env("PGHOST", "localhost")
            .env("PGPORT", &tls.port)
            .env("PGUSER", &tls.user)
            .env("PGDATABASE", db.name())
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &tls.ca)
            .args(["schema", "check"]);
        cmd
    };
    chmod(0o600);
    env_only().env("PGPASSFILE", &pgpass).assert().success();
    // Readable by others: ignored, with a warning, as libpq does.
    chmod(0o644);
    env_only()
        .env("PGPASSFILE", &pgpass)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("warning: password file"))
        .stderr(predicate::str::contains("chmod 0600"))
        .stderr(predicate::str::contains("authentication failed"));
    env_only()
        .env("PGPASSWORD", &tls.password)
        .assert()
        .success();
    // Nothing at all: named.
    bare(dir.path())
        .args(["schema", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("DATABASE_URL"))
        .stderr(predicate::str::contains("PGHOST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_never_appears_in_any_output_or_in_the_journal() {
    let tls = tls();
    let db = tls.db(60).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = tls.password.clone();
    let with_password = format!(
        "postgres://{}:{secret}@localhost:{}/{}?sslmode=require",
        tls.user,
        tls.port,
        db.name()
    );
    let mut outputs: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut record = |what: &str, cmd: &mut Command| {
        let out = cmd.output().unwrap();
        outputs.push((what.to_owned(), out.stdout, out.stderr));
    };
    for args in [
        &["run"][..],
        &["--json", "run", "--rescan"],
        &["status"],
        &["--json", "status"],
        &["journal", "inspect"],
        &["--json", "journal", "inspect"],
        &["--json", "journal", "inspect", "--collector-result", "5"],
        &["journal", "verify"],
        &["--json", "journal", "verify"],
        &["schema", "check"],
        &["rollback"],
    ] {
        record(
            &args.join(" "),
            bare(dir.path())
                .arg("--database-url")
                .arg(&with_password)
                .args(args),
        );
    }
    // Errors: a wrong database, a wrong port, and inputs that are not URLs.
    let wrong_db = with_password.replace(db.name(), "no_such_database");
    let wrong_port = with_password.replace(&format!(":{}/", tls.port), ":1/");
    for url in [
        wrong_db,
        wrong_port,
        format!("postgres:/{}:{secret}@localhost/db", tls.user),
        format!("{}:{secret}@localhost/db", tls.user),
        format!("host=localhost password={secret} dbname=x"),
    ] {
        record(
            "error",
            bare(dir.path())
                .arg("--database-url")
                .arg(&url)
                .args(["schema", "check"]),
        );
    }
    // The password from PGPASSWORD, with a connection that fails.
    record(
        "PGPASSWORD",
        bare(dir.path())
            .env("PGPASSWORD", &secret)
            .env("PGHOST", "localhost")
            .env("PGPORT", "1")
            .env("PGUSER", &tls.user)
            .args(["schema", "check"]),
    );
    for (what, stdout, stderr) in &outputs {
        for (stream, bytes) in [("stdout", stdout), ("stderr", stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains(&secret),
                "{what}: the password is on {stream}: {text}"
            );
        }
    }
    assert!(
        outputs
            .iter()
            .any(|(w, o, _)| w == "status" && !o.is_empty()),
        "the commands ran"
    );
    // Nor in any file of the journal.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the password",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_lock_is_waited_out_with_timeouts_and_retries_blocking_no_one() {
    let reference = seeded(300).await;
    let ref_dir = tempfile::tempdir().unwrap();
    backfill(&reference, ref_dir.path())
        .args(["run", "--batch-size", "50"])
        .assert()
        .code(1);
    let expected = dump_target(&reference.pool).await;

    let db = seeded(300).await;
    let dir = tempfile::tempdir().unwrap();
    // The application holds ACCESS EXCLUSIVE on a target table for 5 s.
    let mut app = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE competitor_metrics IN ACCESS EXCLUSIVE MODE")
        .execute(&mut app)
        .await
        .unwrap();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("backfill"))
        .env("DATABASE_URL", &db.url)
        .arg("--journal")
        .arg(dir.path())
        .args([
            "--json",
            "run",
            "--batch-size",
            "50",
            "--lock-timeout",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile an application reader queues behind the lock too; nothing
    // may ever wait on one of the backfill's sessions.
    let reader_url = db.url.clone();
    let reader = tokio::spawn(async move {
        let mut conn = sqlx::PgConnection::connect(&reader_url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM competitor_metrics")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n
    });
    let started = std::time::Instant::now();
    let mut blocked_by_backfill = 0i64;
    while started.elapsed() < Duration::from_secs(5) {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity w, unnest(pg_blocking_pids(w.pid)) AS b(pid)
               JOIN pg_stat_activity h ON h.pid = b.pid
              WHERE w.datname = current_database() AND h.application_name LIKE 'backfill %'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        blocked_by_backfill += n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut app).await.unwrap();
    reader.await.unwrap();
    let code = wait_for(&mut child, Duration::from_secs(60));
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    // Regression: nothing was printed while waiting out a lock.
    assert!(
        stderr.contains("waiting: lock timeout on the target; retrying the batch in"),
        "{stderr}"
    );
    assert_eq!(code, Some(1), "rejections in the seed data: exit 1");
    assert_eq!(
        blocked_by_backfill, 0,
        "a session waited behind the backfill"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let retried = json["summary"]["retries"]["lock_timeout"]
        .as_u64()
        .unwrap_or(0);
    assert!(retried >= 1, "lock timeouts retried and reported: {stdout}");
    assert_eq!(dump_target(&db.pool).await, expected);
}

#[tokio::test]
async fn a_transaction_mode_pooler_is_refused_naming_the_port_to_use() {
    // Behind PgBouncer in transaction mode a session advisory lock is held by
    // whichever backend took it, for whoever gets that backend next: two
    // appliers could both believe they hold the target.
    let port = std::env::var("BACKFILL_POOLER_PORT").unwrap_or_else(|_| {
        panic!("BACKFILL_POOLER_PORT is not set: this test needs the PgBouncer that scripts/test.sh starts (scripts/pooler.sh)")
    });
    let db = TestDb::with_schema().await;
    let dir = tempfile::tempdir().unwrap();
    bare(dir.path())
        .arg("--database-url")
        .arg(format!(
            "postgres://postgres@127.0.0.1:{port}/{}",
            db.name()
        ))
        .args(["run", "--allow-empty"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "goes through a transaction-mode connection pooler",
        ))
        .stderr(predicate::str::contains("port 5432"));
}
