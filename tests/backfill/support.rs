//! Helpers: run the engine on a test database.

use std::sync::Arc;

use backfill_journal::Journal;
use backfill_postgres::engine::Progress;
use backfill_postgres::testing::TestDb;
use backfill_postgres::{
    schema, Engine, EngineOptions, OnConflict, PostgresSink, SourceReader, SourceTable, Summary,
};

pub struct Harness {
    pub db: TestDb,
    pub journal: Arc<Journal>,
    pub _dir: tempfile::TempDir,
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

    pub fn engine(&self, options: EngineOptions) -> Engine {
        Engine::new(
            SourceReader::new(self.db.pool.clone(), SourceTable::default()),
            self.journal.clone(),
            options,
        )
    }

    pub fn sink(&self) -> PostgresSink {
        PostgresSink::new(self.db.pool.clone(), self.journal.id(), OnConflict::Skip)
    }

    pub async fn run(&self, options: EngineOptions) -> Summary {
        let run = self.journal.start_run("run", vec![]).unwrap();
        let summary = self
            .engine(options)
            .run(&mut self.sink(), run)
            .await
            .unwrap();
        self.journal.end_run(run, vec![]).unwrap();
        summary
    }
}

pub fn batches(n: usize) -> EngineOptions {
    EngineOptions {
        batch_size: n,
        ..EngineOptions::default()
    }
}

/// Sets the engine's cancel flag after `after` applied batches.
pub struct CancelAfter {
    pub flag: std::sync::Mutex<Option<Arc<std::sync::atomic::AtomicBool>>>,
    pub after: u64,
    pub seen: std::sync::atomic::AtomicU64,
}

impl Progress for CancelAfter {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn rows(&self, _: u64) {}
    fn keys(&self, _: u64) {
        let seen = self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if seen >= self.after {
            if let Some(flag) = &*self.flag.lock().unwrap() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    fn finish(&self) {}
}

pub async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

pub use backfill_journal::testing::raw_sled;
