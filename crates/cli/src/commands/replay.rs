//! `replay [--dry-run]`: journal → target, resuming anything (the engine
//! first finishes a pass over the source that did not end).

use anyhow::Result;
use backfill_engine::{Mode, NullSink, RunId};
use backfill_journal::PassState;
use backfill_postgres::schema;

use crate::args::{Cli, ReplayArgs};
use crate::settings::{Databases, RunSettings};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &ReplayArgs) -> Result<Exit> {
    let settings = RunSettings::resolve(&args.common)?;
    let run = RunId::new_random();
    let databases = Databases::resolve(cli)?.named("replay", Some(run));
    let (source, target) = databases.pools().await?;
    context::require_schema(&source, Some(&target), &settings.table).await?;
    let journal = context::existing_journal(&cli.journal)?;
    if journal.source().is_some() {
        // Replay reads the source to finish a pass or re-plan drifted keys:
        // only the source the journal was planned from.
        context::bind_source(&journal, &databases, &settings.table)?;
    }
    let engine = settings.engine(
        source,
        journal.clone(),
        "replay",
        run,
        None,
        &[
            ("dry-run", args.dry_run.to_string()),
            ("retry-failed", (!args.no_retry_failed).to_string()),
            ("reapply-drifted", args.reapply_drifted.to_string()),
        ],
    );
    output::observe(engine.control(), cli, args.dry_run);
    crate::signals::install(engine.control(), cli.quiet);
    let mode = Mode::Replay {
        retry_failed: !args.no_retry_failed,
        reapply_drifted: args.reapply_drifted,
    };
    let finishes_pass = !args.dry_run && journal.pass() == Some(PassState::Reading);
    let report = if args.dry_run {
        engine.execute(mode, &mut NullSink).await
    } else {
        schema::ensure_ledger(&target).await?;
        let mut sink = settings.sink(target.clone(), &journal, cli.quiet);
        engine.execute(mode, &mut sink).await
    };
    // A replay that finished a pass over the source is a backfill's end:
    // refresh the view as `run` does.
    let finished = report.error.is_none() && !report.summary.interrupted;
    let refreshed = if finishes_pass && finished {
        schema::refresh_view(&target).await.err().map(Into::into)
    } else {
        None
    };
    let next = if args.dry_run {
        "backfill replay (without --dry-run)"
    } else if finishes_pass {
        "backfill status; backfill journal verify"
    } else {
        "backfill refresh, then backfill status"
    };
    output::summary("replay", &report.summary, &journal, cli.json, next);
    Ok(context::conclude(
        report,
        refreshed,
        &journal,
        &crate::resume_command(cli, args.dry_run),
    ))
}
