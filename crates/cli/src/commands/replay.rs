//! `replay [--dry-run]`: journal → target, resuming anything.

use anyhow::Result;
use backfill_postgres::{schema, NullSink, PostgresSink, SourceTable};

use crate::args::{Cli, ReplayArgs};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &ReplayArgs) -> Result<Exit> {
    context::validate(&args.common)?;
    let (source, target) = context::pools(cli).await?;
    let table = SourceTable::parse(&args.common.source_table);
    context::require_schema(&source, Some(&target), &table).await?;
    let journal = context::open_journal(&cli.journal)?;
    // A pass over the source that did not finish (kill -9, crash, signal) is
    // resumed too: replay after any interruption gives the rows of an
    // uninterrupted run.
    let resume_source = output::pass_unfinished(&journal)?;
    if resume_source {
        context::bind_source(&journal, cli, &table)?;
    }
    let engine = context::engine(source, journal.clone(), &args.common, false)
        .with_progress(output::progress(cli.quiet || cli.json));
    context::on_signals(&engine, cli.quiet);
    let options = context::run_options(
        &args.common,
        &[
            ("dry-run", args.dry_run.to_string()),
            ("resume-source", resume_source.to_string()),
        ],
    );
    // Resuming the source makes this a pass over it: recorded as `run`.
    let command = if resume_source && !args.dry_run {
        "run"
    } else {
        "replay"
    };
    let run = journal.start_run(command, options)?;
    let retry_failed = !args.no_retry_failed;
    let summary = if args.dry_run {
        engine.replay(&mut NullSink, run, retry_failed).await?
    } else {
        let (_lock, mut sink) = context::target_sink(&target, &journal, &args.common).await?;
        let mut summary = if resume_source {
            // Finish the pass (from the cursor), then the pending keys.
            let mut summary = engine.run(&mut sink, run).await?;
            if !summary.interrupted && retry_failed {
                summary.merge(engine.replay(&mut sink, run, true).await?);
            }
            summary
        } else {
            engine.replay(&mut sink, run, retry_failed).await?
        };
        if args.reapply_drifted && !summary.interrupted {
            let mut replace = PostgresSink::new(
                target.clone(),
                journal.id(),
                backfill_postgres::OnConflict::Replace,
            );
            summary.merge(engine.reapply_drifted(&mut replace, run).await?);
        }
        summary
    };
    if command == "run" {
        journal.end_run(run, output::pass_counts(&journal, &summary))?;
        if !summary.interrupted {
            schema::refresh_view(&target).await?;
        }
    } else {
        journal.end_run(run, output::journal_counts(&journal))?;
    }
    output::summary(
        "replay",
        &summary,
        &journal,
        cli.json,
        "backfill refresh, then backfill status",
    );
    Ok(crate::commands::exit_for(&summary, &journal))
}
