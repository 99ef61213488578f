//! `run [--dry-run]`: plan and apply pipelined, then refresh the view.

use anyhow::Result;
use backfill_engine::{Mode, RunId};
use backfill_postgres::schema;

use crate::args::{Cli, RunArgs};
use crate::settings::{Databases, Inherited, RunSettings};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &RunArgs) -> Result<Exit> {
    let settings = RunSettings::resolve(&args.common, &Inherited::default())?;
    let run = RunId::new_random();
    let databases = Databases::resolve(cli)?.named("run", Some(run));
    let (source, target) = databases.pools().await?;
    context::require_schema(&source, Some(&target), &settings.table).await?;
    let journal = context::open_journal(&cli.journal)?;
    let mut options = vec![
        ("dry-run", args.dry_run.to_string()),
        ("rescan", args.rescan.to_string()),
        ("initial-load", args.initial_load.to_string()),
    ];
    if args.initial_load {
        // The constraints it defers are in the journal's record of the run
        // (written before they are dropped) as well as in the target.
        let deferred = backfill_postgres::initial::deferrable(&target).await?;
        options.push(("deferred-constraints", serde_json::to_string(&deferred)?));
    }
    let engine = settings.engine(
        source,
        journal.clone(),
        "run",
        run,
        (
            Some(databases.fingerprint(&settings.table)),
            Some(databases.target_fingerprint()),
        ),
        &options,
    );
    output::observe(engine.control(), cli, args.dry_run);
    crate::signals::install(engine.control(), cli.quiet);
    let mode = Mode::Backfill {
        rescan: args.rescan,
    };
    let report = context::execute(
        &engine,
        mode,
        args.dry_run,
        &target,
        &journal,
        &settings,
        cli.quiet,
        args.initial_load,
    )
    .await?;
    let finished = report.error.is_none() && !report.summary.interrupted;
    let refreshed = if !args.dry_run && !args.no_refresh && finished {
        schema::refresh_view(&target).await.err().map(Into::into)
    } else {
        None
    };
    let b = crate::backfill_command(cli);
    let next = if args.dry_run {
        format!("{b} run (without --dry-run)")
    } else {
        format!("{b} status; {b} journal verify")
    };
    output::summary("run", &report.summary, &journal, cli.json, &next);
    Ok(context::conclude(
        report,
        refreshed,
        &journal,
        &crate::resume_command(cli, args.dry_run),
    ))
}
