//! `plan`: source → journal; the target is not touched.

use anyhow::Result;
use backfill_engine::{Mode, NullSink, RunId};

use crate::args::{Cli, PlanArgs};
use crate::settings::{Databases, Inherited, RunSettings};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &PlanArgs) -> Result<Exit> {
    let settings = RunSettings::resolve(&args.common, &Inherited::default())?;
    let run = RunId::new_random();
    let databases = Databases::resolve(cli)?.named("plan", Some(run));
    let source = databases.source.connect(4).await?;
    context::require_schema(&source, None, &settings.table).await?;
    let journal = context::open_journal(&cli.journal)?;
    let engine = settings.engine(
        source,
        journal.clone(),
        "plan",
        run,
        (Some(databases.fingerprint(&settings.table)), None),
        &[("rescan", args.rescan.to_string())],
    );
    output::observe(engine.control(), cli, false);
    crate::signals::install(engine.control(), cli.quiet);
    let report = engine
        .execute(
            Mode::Plan {
                rescan: args.rescan,
            },
            &mut NullSink,
        )
        .await;
    output::summary(
        "plan",
        &report.summary,
        &journal,
        cli.json,
        &format!("{} (or with --dry-run)", crate::resume_command(cli, false)),
    );
    Ok(context::conclude(
        report,
        None,
        &journal,
        &crate::resume_command(cli, false),
    ))
}
