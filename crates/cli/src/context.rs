//! Turning options into connections, a journal and an engine, with errors
//! that name what to fix.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use backfill_journal::{Journal, SourceFingerprint};
use backfill_postgres::{
    connect, redact_url, schema, Engine, EngineOptions, SourceReader, SourceTable,
};
use sqlx::PgPool;

use crate::args::{Cli, Common, OnConflictArg};

/// The source URL: --source-url, else --database-url / DATABASE_URL.
pub fn source_url(cli: &Cli) -> Result<String> {
    cli.source_url
        .clone()
        .or_else(|| cli.database_url.clone())
        .context("no source database: pass --database-url (or --source-url) or set DATABASE_URL")
}

/// The target URL: --target-url, else --database-url / DATABASE_URL.
pub fn target_url(cli: &Cli) -> Result<String> {
    cli.target_url
        .clone()
        .or_else(|| cli.database_url.clone())
        .context("no target database: pass --database-url (or --target-url) or set DATABASE_URL")
}

/// Connects to source and target (one pool when they are the same URL).
pub async fn pools(cli: &Cli) -> Result<(PgPool, PgPool)> {
    let source = source_url(cli)?;
    let target = target_url(cli)?;
    let source_pool = connect(&source, 4).await?;
    let target_pool = if source == target {
        source_pool.clone()
    } else {
        connect(&target, 4).await?
    };
    Ok((source_pool, target_pool))
}

/// Fails (exit 2) naming every missing table and column.
pub async fn require_schema(
    source: &PgPool,
    target: Option<&PgPool>,
    table: &SourceTable,
) -> Result<()> {
    let mut missing = schema::check_source(source, table).await?.missing;
    if let Some(target) = target {
        missing.extend(schema::check_target(target).await?.missing);
    }
    if !missing.is_empty() {
        return Err(backfill_postgres::Error::MissingSchema { missing }.into());
    }
    Ok(())
}

/// Opens the journal (exit 2 with the path if it is held or damaged).
pub fn open_journal(path: &Path) -> Result<Arc<Journal>> {
    Ok(Arc::new(Journal::open(path).with_context(|| {
        format!("cannot open the journal at {}", path.display())
    })?))
}

/// Binds the journal to the source it plans from.
pub fn bind_source(journal: &Journal, cli: &Cli, table: &SourceTable) -> Result<()> {
    let fingerprint = SourceFingerprint {
        database: redact_url(&source_url(cli)?),
        table: table.to_string(),
    };
    journal.bind_source(&fingerprint)?;
    Ok(())
}

/// The engine for these options.
pub fn engine(source: PgPool, journal: Arc<Journal>, common: &Common, rescan: bool) -> Engine {
    let table = SourceTable::parse(&common.source_table);
    let options = EngineOptions {
        batch_size: usize::try_from(common.batch_size).unwrap_or(1000),
        max_rows_per_sec: common.max_rows_per_sec,
        allow_empty: common.allow_empty,
        rescan,
    };
    Engine::new(SourceReader::new(source, table), journal, options)
}

/// Maps the clap enum to the library's.
pub fn on_conflict(arg: OnConflictArg) -> backfill_postgres::OnConflict {
    match arg {
        OnConflictArg::Skip => backfill_postgres::OnConflict::Skip,
        OnConflictArg::Replace => backfill_postgres::OnConflict::Replace,
    }
}

/// The options of a run as recorded in the journal.
pub fn run_options(common: &Common, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut options = vec![
        ("batch-size".to_owned(), common.batch_size.to_string()),
        ("source-table".to_owned(), common.source_table.clone()),
        (
            "on-conflict".to_owned(),
            format!("{:?}", common.on_conflict).to_lowercase(),
        ),
    ];
    if let Some(rate) = common.max_rows_per_sec {
        options.push(("max-rows-per-sec".to_owned(), rate.to_string()));
    }
    options.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    options
}

/// Holds `pg_try_advisory_lock` on a dedicated connection: one applier per
/// target. Released when the connection closes.
pub struct TargetLock {
    _conn: sqlx::PgConnection,
}

/// The advisory lock key ("backfill" in ASCII).
pub const LOCK_KEY: i64 = 0x6261_636b_6669_6c6c;

/// Takes the target lock or fails saying another applier holds it.
pub async fn lock_target(pool: &PgPool) -> Result<TargetLock> {
    let mut conn = pool
        .acquire()
        .await
        .context("connecting to the target")?
        .detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await
        .context("taking the target's advisory lock")?;
    if !locked {
        return Err(backfill_postgres::Error::TargetLocked { key: LOCK_KEY }.into());
    }
    Ok(TargetLock { _conn: conn })
}

/// SIGINT/SIGTERM: the first asks the engine to stop after the batch in
/// flight; a second one ends the process at once (still resumable).
pub fn on_signals(engine: &Engine, quiet: bool) {
    let flag = engine.cancel_flag();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        for round in 0.. {
            #[cfg(unix)]
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if round == 0 {
                flag.store(true, Ordering::SeqCst);
                if !quiet {
                    eprintln!("\nstopping after the batch in flight (signal again to stop now)…");
                }
            } else {
                eprintln!("stopped; resume with: backfill replay");
                std::process::exit(3);
            }
        }
    });
}

/// Checks options clap cannot.
pub fn validate(common: &Common) -> Result<()> {
    if common.source_table.trim().is_empty() {
        bail!("--source-table is empty");
    }
    Ok(())
}

/// What writing to the target needs: the ledger, the applier lock (held while
/// the returned guard lives) and the sink.
pub async fn target_sink(
    target: &PgPool,
    journal: &Journal,
    common: &Common,
) -> Result<(TargetLock, backfill_postgres::PostgresSink)> {
    schema::ensure_ledger(target).await?;
    let lock = lock_target(target).await?;
    let sink = backfill_postgres::PostgresSink::new(
        target.clone(),
        journal.id(),
        on_conflict(common.on_conflict),
    );
    Ok((lock, sink))
}
