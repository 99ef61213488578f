//! `replay [--dry-run]`: journal → target, resuming anything (the engine
//! first finishes a pass over the source that did not end).

use anyhow::Result;
use backfill_engine::{Mode, RunId};
use backfill_journal::PassState;
use backfill_postgres::schema;

use crate::args::{Cli, ReplayArgs};
use crate::settings::{Databases, Inherited, RunSettings};
use crate::{context, output, Exit};

pub async fn run(cli: &Cli, args: &ReplayArgs) -> Result<Exit> {
    let journal = context::existing_journal(&cli.journal)?;
    // A resume takes over the interrupted run's options where its own flags
    // are silent (the source table from the journal's binding); a dry run's
    // resume stays dry.
    let inherited = Inherited::from_journal(&journal)?;
    let settings = RunSettings::resolve(&args.common, &inherited)?;
    let dry_run = args.dry_run || inherited.dry_run;
    {
        if let Some((id, command)) = &inherited.from {
            eprintln!(
                "resuming with the options of the interrupted {command} {id}{}",
                if inherited.dry_run && !args.dry_run {
                    " (a dry run: nothing is written; `backfill run` writes)"
                } else {
                    ""
                }
            );
        }
    }
    let run = RunId::new_random();
    let databases = Databases::resolve(cli)?.named("replay", Some(run));
    // Connecting restores what an interrupted initial load deferred, which
    // a load killed after deferring but before its pass was journaled
    // leaves behind with nothing to replay: so before that answer.
    let (source, target) = databases.pools().await?;
    if journal.keys().next().is_none() && journal.pass().is_none() {
        if cli.json {
            out!(
                "{}",
                serde_json::json!({ "command": "replay", "nothing_to_replay": true })
            )?;
        } else {
            out!("nothing to replay: the journal holds no planned keys yet (plan or run first)")?;
        }
        return Ok(Exit::Ok);
    }
    context::require_schema(&source, Some(&target), &settings.table).await?;
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
        (None, Some(databases.target_fingerprint())),
        &[
            ("dry-run", dry_run.to_string()),
            ("retry-failed", (!args.no_retry_failed).to_string()),
            ("reapply-drifted", args.reapply_drifted.to_string()),
        ],
    );
    output::observe(engine.control(), cli, dry_run);
    crate::signals::install(engine.control(), cli.quiet);
    let mode = Mode::Replay {
        retry_failed: !args.no_retry_failed,
        reapply_drifted: args.reapply_drifted,
    };
    let finishes_pass = !dry_run && journal.pass() == Some(PassState::Reading);
    let report = context::execute(
        &engine, mode, dry_run, &target, &journal, &settings, cli.quiet, false,
    )
    .await?;
    // A replay that finished a pass over the source is a backfill's end:
    // refresh the view as `run` does.
    let finished = report.error.is_none() && !report.summary.interrupted;
    let refreshed = if finishes_pass && finished {
        schema::refresh_view(&target).await.err().map(Into::into)
    } else {
        None
    };
    let b = crate::backfill_command(cli);
    let next = if dry_run {
        format!("{b} run (writes; a dry run's resume stays dry)")
    } else if finishes_pass {
        format!("{b} status; {b} journal verify")
    } else {
        format!("{b} refresh, then {b} status")
    };
    output::summary("replay", &report.summary, &journal, cli.json, &next);
    Ok(context::conclude(
        report,
        refreshed,
        &journal,
        &crate::resume_command(cli, dry_run),
    ))
}
