//! `rollback`: removes exactly what this journal wrote and still hashes as
//! written; prints what it would do unless `--yes`.

use anyhow::Result;
use backfill_journal::{RunEnd, RunId};
use backfill_postgres::audit::{self, RollbackOptions};
use backfill_postgres::{schema, LockScope, TargetLock};

use crate::args::{Cli, RollbackArgs};
use crate::settings::Databases;
use crate::{context, Exit};

pub async fn run(cli: &Cli, args: &RollbackArgs) -> Result<Exit> {
    let databases = Databases::resolve(cli)?.named("rollback", None);
    let journal = context::existing_journal(&cli.journal)?;
    // Only the target this journal applied to.
    journal.check_target(&databases.target_fingerprint())?;
    let target = databases.target.connect(2).await?;
    context::restore_deferred(&target).await?;
    schema::ensure_ledger(&target).await?;
    if let Some(run) = args.run.map(RunId) {
        if journal.run(run)?.is_none() {
            anyhow::bail!("no run {run} in this journal (`backfill status` lists its runs)");
        }
    }
    let lock = TargetLock::acquire(&target, LockScope::Whole).await?;
    let run = if args.yes {
        let options = vec![
            (
                "run".to_owned(),
                args.run
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "all".into()),
            ),
            ("force".to_owned(), args.force.to_string()),
        ];
        journal.start_run("rollback", options)?
    } else {
        RunId::NIL
    };
    let options = RollbackOptions {
        only_run: args.run.map(RunId),
        force: args.force,
        execute: args.yes,
        batch_size: args.batch_size,
    };
    let report = audit::rollback(&journal, &target, options, run).await?;
    lock.release().await;
    if args.yes {
        journal.end_run(
            run,
            RunEnd::Completed,
            vec![(
                "rolled_back".into(),
                u64::try_from(report.removed.len() + report.already_gone.len())?,
            )],
        )?;
        schema::refresh_view(&target).await?;
    }
    if cli.json {
        out!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let verb = if args.yes {
            "removed"
        } else {
            "would remove (pass --yes to do it)"
        };
        out!(
            "{verb}: {} keys; already gone: {}; refused: {}",
            report.removed.len(),
            report.already_gone.len(),
            report.refused.len()
        )?;
        for (key, why) in &report.refused {
            let hint = if args.force {
                ""
            } else {
                "; --force to remove anyway"
            };
            out!(
                "  refused collector_result_id {key}: changed since written ({}){hint}",
                why.join(", ")
            )?;
        }
    }
    Ok(if report.refused.is_empty() {
        Exit::Ok
    } else {
        Exit::Problems
    })
}
