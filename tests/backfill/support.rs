//! Helpers: run the engine on a test database.

use std::sync::Arc;

use backfill_engine::{Engine, EngineSettings, Limits, Mode, RunControl, Summary};
use backfill_journal::Journal;
use backfill_postgres::testing::TestDb;
use backfill_postgres::{schema, PostgresSink, SourceReader, SourceTable};

pub struct Harness {
    pub db: TestDb,
    pub journal: Arc<Journal>,
    pub _dir: tempfile::TempDir,
}

/// What a test varies about a run.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub batch_size: usize,
    pub rescan: bool,
    pub allow_empty: bool,
    /// Batches applied at once (`EngineSettings::appliers`).
    pub appliers: usize,
}

pub fn batches(n: usize) -> Opts {
    Opts {
        batch_size: n,
        rescan: false,
        allow_empty: false,
        appliers: 1,
    }
}

impl Harness {
    pub async fn new() -> Self {
        let db = TestDb::with_schema().await;
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap());
        schema::ensure_ledger(&db.pool).await.unwrap();
        Self {
            db,
            journal,
            _dir: dir,
        }
    }

    pub async fn seeded(results: i64) -> Self {
        let h = Self::new().await;
        backfill_postgres::demo::seed(&h.db.pool, results)
            .await
            .unwrap();
        h
    }

    pub fn engine(&self, opts: Opts) -> Engine<SourceReader> {
        Engine::new(
            SourceReader::new(self.db.pool.clone(), SourceTable::default()),
            self.journal.clone(),
            EngineSettings {
                allow_empty: opts.allow_empty,
                appliers: opts.appliers,
                ..EngineSettings::default()
            },
            RunControl::new(Limits {
                batch_size: opts.batch_size,
                ..Limits::default()
            }),
        )
    }

    pub fn sink(&self) -> PostgresSink {
        PostgresSink::new(self.db.pool.clone(), self.journal.id())
    }

    /// A sink that waits up to 30 s for a lock: for tests that hold one.
    pub fn patient_sink(&self) -> PostgresSink {
        self.sink().with_timeouts(backfill_postgres::Timeouts {
            lock: std::time::Duration::from_secs(30),
            statement: std::time::Duration::from_secs(60),
        })
    }

    /// Runs `mode` into the target; panics on an error.
    pub async fn execute(&self, opts: Opts, mode: Mode) -> Summary {
        let report = self.engine(opts).execute(mode, &mut self.sink()).await;
        report.into_result().expect("the run")
    }

    /// A backfill (`run`).
    pub async fn run(&self, opts: Opts) -> Summary {
        self.execute(
            opts,
            Mode::Backfill {
                rescan: opts.rescan,
            },
        )
        .await
    }
}

pub const REPLAY: Mode = Mode::Replay {
    retry_failed: true,
    reapply_drifted: false,
};

pub async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

pub use backfill_journal::testing::raw_sled;
