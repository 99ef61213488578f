//! What every command needs before it works: the schema checked, the journal
//! opened and bound, with errors that name what to fix.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use backfill_engine::RunReport;
use backfill_journal::{Journal, State};
use backfill_postgres::{schema, SourceTable};
use sqlx::PgPool;

use crate::exit::{exit_code, Exit};
use crate::settings::Databases;

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

/// Opens the journal, creating it in a new or empty directory (planning
/// commands); exit 2 with the path if it is held, damaged or not a journal.
pub fn open_journal(path: &Path) -> Result<Arc<Journal>> {
    Ok(Arc::new(Journal::open(path).with_context(|| {
        format!("cannot open the journal at {}", path.display())
    })?))
}

/// Opens an existing journal to write it (replay, rollback): never creates
/// one.
pub fn existing_journal(path: &Path) -> Result<Arc<Journal>> {
    Ok(Arc::new(Journal::open_existing(path).with_context(
        || format!("cannot open the journal at {}", path.display()),
    )?))
}

/// Reads a copy of an existing journal (status, inspect, verify): the
/// journal's files are left exactly as they are.
pub fn read_journal(path: &Path) -> Result<Arc<Journal>> {
    Ok(Arc::new(Journal::open_read_only(path).with_context(
        || format!("cannot read the journal at {}", path.display()),
    )?))
}

/// Binds the journal to the source it plans from (or proves it is bound to
/// it already).
pub fn bind_source(journal: &Journal, databases: &Databases, table: &SourceTable) -> Result<()> {
    journal.bind_source(&databases.fingerprint(table))?;
    Ok(())
}

/// Runs `mode` into the target, or into a `NullSink` for a dry run (the
/// ledger is created first when missing).
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    engine: &backfill_engine::Engine<backfill_postgres::SourceReader>,
    mode: backfill_engine::Mode,
    dry_run: bool,
    target: &PgPool,
    journal: &Journal,
    settings: &crate::settings::RunSettings,
    quiet: bool,
    initial_load: bool,
) -> Result<RunReport> {
    if dry_run {
        return Ok(engine.execute(mode, &mut backfill_engine::NullSink).await);
    }
    schema::ensure_ledger(target).await?;
    let mut sink = settings.sink(target.clone(), journal, quiet);
    if initial_load {
        sink = sink.initial_load();
    }
    Ok(engine.execute(mode, &mut sink).await)
}

/// Before anything else against a target: re-creates the constraints an
/// interrupted `run --initial-load` deferred (DESIGN §10), and says so.
pub async fn restore_deferred(target: &PgPool) -> Result<()> {
    use backfill_postgres::initial::{restore, Restored};
    match restore(target, false).await? {
        Restored::Nothing => {}
        Restored::LoadRunning => eprintln!(
            "note: constraints deferred by an initial load are absent, and another backfill holds this target's applier lock (the load itself, or another applier): they are restored when it ends, or by the next command after it"
        ),
        Restored::Constraints(list) => eprintln!(
            "restored {} constraint(s) and index(es) deferred by an interrupted initial load: {}",
            list.len(),
            list.iter()
                .map(|d| format!("{}.{}", d.table, d.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}

/// Ends a command that ran the engine: prints the error that stopped it (the
/// summary was printed already) with what to do next, and maps the outcome
/// to the exit code.
pub fn conclude(
    report: RunReport,
    after: Option<anyhow::Error>,
    journal: &Journal,
    resume: &str,
) -> Exit {
    let drifted = journal.count(State::Drifted);
    // Drifted keys are unfinished work: their source changed after they were
    // written, and the target still holds the old rows.
    let problems = journal.count(State::Rejected) + journal.count(State::Failed) + drifted > 0;
    if drifted > 0 && report.error.is_none() && !report.summary.interrupted {
        eprintln!(
            "hint: {drifted} key(s) drifted (their source changed after they were applied): backfill replay --reapply-drifted"
        );
    }
    // A step after a complete run (the view refresh) is redone on its own.
    let resume = if report.error.is_none() && after.is_some() {
        "backfill refresh"
    } else {
        resume
    };
    let error: Option<anyhow::Error> = report.error.map(Into::into).or(after);
    let kind = error.as_ref().map(crate::exit::kind_of);
    let exit = exit_code(kind, Some(&report.summary), problems);
    if let Some(error) = &error {
        crate::print_error(error);
        if exit == Exit::Interrupted && report.summary.did_work() {
            eprintln!("work was recorded before the error (see the summary above)");
        }
    }
    if exit == Exit::Interrupted {
        eprintln!("resume with: {resume}");
    }
    exit
}
