//! The damage suite: journals of two sizes, every file of each flipped at
//! offsets across it, truncated, deleted; every read-only command must either
//! exit non-zero naming the journal as damaged, or (the damage touched
//! nothing the journal holds) answer exactly as for the undamaged journal. It
//! never reports a changed journal as fine, and it leaves the files byte for
//! byte as it found them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use backfill_core::plan;
use backfill_core::testing::realistic_group;
use backfill_journal::{Batch, Journal, Record, RunEnd};
use backfill_postgres::testing::TestDb;

/// A journal of `keys` planned keys, every other one applied, in commits of
/// 200 (as the engine writes them), with a run around them, written in
/// `sessions` openings (sled writes a snapshot when it reopens a journal).
fn journal(dir: &Path, keys: i64, sessions: i64) {
    let per_session = keys / sessions;
    for session in 0..sessions {
        write(dir, session * per_session..(session + 1) * per_session);
    }
}

fn write(dir: &Path, keys: std::ops::Range<i64>) {
    let journal = Journal::open(dir).unwrap();
    let run = journal.start_run("test", vec![]).unwrap();
    for start in keys.clone().step_by(200) {
        let mut batch = Batch::for_run(run);
        let end = (start + 200).min(keys.end);
        for key in start..end {
            let g = realistic_group(key);
            batch.plan(plan(key, &g.rows, &g.directories).unwrap());
        }
        batch.cursor(end - 1);
        journal.commit(batch).unwrap();
        let mut applied = Batch::for_run(run);
        for key in (start..end).step_by(2) {
            let hash = journal.status(key).unwrap().unwrap().content_hash;
            applied.record(
                key,
                Record::Applied {
                    run,
                    batch: 1,
                    content_hash: hash,
                },
            );
        }
        journal.commit(applied).unwrap();
    }
    journal
        .end_run(run, RunEnd::Completed, vec![("applied".into(), 1)])
        .unwrap();
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

fn restore(dir: &Path, pristine: &BTreeMap<PathBuf, Vec<u8>>) {
    std::fs::remove_dir_all(dir).unwrap();
    for (name, bytes) in pristine {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// (exit code, stdout, stderr).
type Answer = (Option<i32>, String, String);

struct Commands {
    target: Option<TestDb>,
}

impl Commands {
    fn all(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut all = vec![
            ("status", vec!["--json", "status"]),
            ("inspect", vec!["--json", "journal", "inspect"]),
        ];
        if self.target.is_some() {
            all.push(("verify", vec!["--json", "journal", "verify"]));
        }
        all
    }

    fn answer(&self, journal: &Path, args: &[&str]) -> Answer {
        let mut cmd = Command::cargo_bin("backfill").unwrap();
        match &self.target {
            Some(db) => cmd.env("DATABASE_URL", &db.url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        let out = cmd
            .arg("--journal")
            .arg(journal)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A named way to damage a file.
type Damage = (String, Box<dyn Fn(&Path)>);

/// The damages to try on a file of `len` bytes.
fn damages(len: usize) -> Vec<Damage> {
    let mut out: Vec<Damage> = Vec::new();
    let mut offsets: Vec<usize> = vec![
        0,
        1,
        17,
        50,
        100,
        len / 4,
        len / 2,
        3 * len / 4,
        len.saturating_sub(1),
    ];
    offsets.retain(|o| *o < len);
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        out.push((
            format!("byte {offset} flipped"),
            Box::new(move |p: &Path| {
                let mut bytes = std::fs::read(p).unwrap();
                bytes[offset] ^= 0xff;
                std::fs::write(p, bytes).unwrap();
            }),
        ));
    }
    if len > 1 {
        out.push((
            format!("truncated to {}", len / 2),
            Box::new(move |p: &Path| {
                let file = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                file.set_len(u64::try_from(len / 2).unwrap()).unwrap();
            }),
        ));
    }
    out.push((
        "deleted".into(),
        Box::new(|p: &Path| std::fs::remove_file(p).unwrap()),
    ));
    out
}

/// Runs the suite on a journal of `keys` keys; returns (detected, harmless).
async fn suite(keys: i64, sessions: i64, commands: Commands) -> (usize, usize) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("journal");
    journal(&dir, keys, sessions);
    let pristine = files(&dir);
    let listing: Vec<String> = pristine
        .iter()
        .map(|(n, b)| format!("{} ({} bytes)", n.display(), b.len()))
        .collect();
    eprintln!(
        "{keys} keys in {sessions} session(s): {}",
        listing.join(", ")
    );
    if sessions > 1 {
        assert!(
            pristine
                .keys()
                .any(|n| n.to_string_lossy().starts_with("snap.")),
            "a reopened journal has a sled snapshot"
        );
    }
    assert!(
        pristine.contains_key(Path::new("JOURNAL")),
        "{:?}",
        pristine.keys()
    );
    let baseline: Vec<Answer> = commands
        .all()
        .iter()
        .map(|(_, args)| commands.answer(&dir, args))
        .collect();
    assert_eq!(
        files(&dir),
        pristine,
        "a read-only command changed the journal"
    );
    let (mut detected, mut harmless) = (0, 0);
    let mut regression_cases = 0;
    for (name, bytes) in &pristine {
        for (what, damage) in damages(bytes.len()) {
            restore(&dir, &pristine);
            damage(&dir.join(name));
            let damaged = files(&dir);
            for ((command, args), base) in commands.all().iter().zip(&baseline) {
                let (code, stdout, stderr) = commands.answer(&dir, args);
                let case = format!("{keys} keys, {} {what}: {command}", name.display());
                assert_eq!(
                    files(&dir),
                    damaged,
                    "{case}: the command changed the journal's files"
                );
                if (code, &stdout) == (base.0, &base.1) {
                    harmless += 1;
                    continue;
                }
                let named = stderr.contains(&dir.display().to_string())
                    && (stderr.contains("damaged") || stderr.contains("not a journal"));
                let chain_reported =
                    *command == "verify" && stdout.contains("\"chain_problem\": \"");
                assert!(
                    code != Some(0) && (named || chain_reported),
                    "{case}: a changed journal was not reported as damaged (exit {code:?})\n{stdout}\n{stderr}"
                );
                detected += 1;
                let young_regression = name == Path::new("db")
                    && (what == "deleted"
                        || what.starts_with("byte 0 ")
                        || what.starts_with("byte 50 "));
                if young_regression {
                    regression_cases += 1;
                }
            }
        }
    }
    // The defect: a deleted log, or a flipped byte at its start, made every
    // command see a new, empty journal.
    assert!(
        regression_cases >= 3,
        "{keys} keys: the log's own damage must be detected"
    );
    (detected, harmless)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_damaged_journal_is_reported_never_read_as_sound_nor_changed() {
    let target = TestDb::with_schema().await;
    backfill_postgres::schema::ensure_ledger(&target.pool)
        .await
        .unwrap();
    let (detected, harmless) = suite(
        2_000,
        1,
        Commands {
            target: Some(target),
        },
    )
    .await;
    eprintln!("young journal: {detected} answers named damage, {harmless} were unaffected");
    let (detected, harmless) = suite(4_000, 2, Commands { target: None }).await;
    eprintln!("reopened journal: {detected} answers named damage, {harmless} were unaffected");
}
