//! `run [--dry-run]`: plan and replay pipelined, then refresh the view.

use anyhow::Result;
use backfill_postgres::{schema, NullSink, SourceTable};

use crate::args::{Cli, RunArgs};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &RunArgs) -> Result<Exit> {
    context::validate(&args.common)?;
    let (source, target) = context::pools(cli).await?;
    let table = SourceTable::parse(&args.common.source_table);
    context::require_schema(&source, Some(&target), &table).await?;
    let journal = context::open_journal(&cli.journal)?;
    context::bind_source(&journal, cli, &table)?;
    let engine = context::engine(source, journal.clone(), &args.common, args.rescan)
        .with_progress(output::progress(cli.quiet || cli.json));
    context::on_signals(&engine, cli.quiet);
    let options = context::run_options(
        &args.common,
        &[
            ("dry-run", args.dry_run.to_string()),
            ("rescan", args.rescan.to_string()),
        ],
    );
    let run = journal.start_run("run", options)?;
    let summary = if args.dry_run {
        engine.run(&mut NullSink, run).await?
    } else {
        let (_lock, mut sink) = context::target_sink(&target, &journal, &args.common).await?;
        engine.run(&mut sink, run).await?
    };
    journal.end_run(run, output::pass_counts(&journal, &summary))?;
    if !args.dry_run && !args.no_refresh && !summary.interrupted {
        schema::refresh_view(&target).await?;
    }
    let next = if args.dry_run {
        "backfill run (without --dry-run)"
    } else {
        "backfill status; backfill journal verify"
    };
    output::summary("run", &summary, &journal, cli.json, next);
    Ok(crate::commands::exit_for(&summary, &journal))
}
