//! `journal verify`: target rows vs journal vs ledger, key by key.

use anyhow::Result;
use backfill_postgres::audit;

use crate::args::{Cli, VerifyArgs};
use crate::settings::Databases;
use crate::{context, Exit};

pub async fn run(cli: &Cli, args: &VerifyArgs) -> Result<Exit> {
    let databases = Databases::resolve(cli)?.named("journal verify", None);
    let journal = context::read_journal(&cli.journal)?;
    // The target this journal applied to, and no other.
    journal.check_target(&databases.target_fingerprint())?;
    let target = databases.target.connect(2).await?;
    context::restore_deferred(&target).await?;
    backfill_postgres::schema::ensure_ledger(&target).await?;
    let report = audit::verify(&journal, &target, args.batch_size).await?;
    let exit = if report.is_ok() {
        Exit::Ok
    } else {
        Exit::Problems
    };
    // A reader that goes away (`| head -1`) must not turn a failed check
    // into success.
    match print(cli, &report) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit),
        Err(err) => Err(err.into()),
        Ok(()) => Ok(exit),
    }
}

fn print(cli: &Cli, report: &audit::VerifyReport) -> std::io::Result<()> {
    if cli.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?
        )?;
    } else {
        out!(
            "verified {} applied keys: {} match journal, ledger and target; {} findings; chain: {}",
            report.keys_checked,
            report.keys_matching,
            report.findings.len(),
            report.chain_problem.as_deref().unwrap_or("intact")
        )?;
        for finding in &report.findings {
            out!(
                "  {}",
                serde_json::to_string(finding).map_err(std::io::Error::other)?
            )?;
        }
    }
    Ok(())
}
