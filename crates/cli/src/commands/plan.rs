//! `plan`: source → journal; the target is not touched.

use anyhow::Result;
use backfill_postgres::SourceTable;

use crate::args::{Cli, PlanArgs};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<Exit> {
    context::validate(&args.common)?;
    let source = backfill_postgres::connect(&context::source_url(cli)?, 4).await?;
    let table = SourceTable::parse(&args.common.source_table);
    context::require_schema(&source, None, &table).await?;
    let journal = context::open_journal(&cli.journal)?;
    context::bind_source(&journal, cli, &table)?;
    let engine = context::engine(source, journal.clone(), &args.common, args.rescan)
        .with_progress(output::progress(cli.quiet || cli.json));
    context::on_signals(&engine, cli.quiet);
    let run = journal.start_run(
        "plan",
        context::run_options(&args.common, &[("rescan", args.rescan.to_string())]),
    )?;
    let summary = engine.plan(run).await?;
    journal.end_run(run, output::pass_counts(&journal, &summary))?;
    output::summary(
        "plan",
        &summary,
        &journal,
        cli.json,
        "backfill replay (or replay --dry-run)",
    );
    Ok(crate::commands::exit_for(&summary, &journal))
}
