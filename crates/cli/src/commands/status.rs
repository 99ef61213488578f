//! `status`: counts by state, cursor, runs, rate — from the journal alone.

use anyhow::Result;
use backfill_journal::RunEnd;

use crate::args::Cli;
use crate::{context, output, Exit};

pub fn run(cli: &Cli) -> Result<Exit> {
    let journal = context::read_journal(&cli.journal)?;
    let runs = journal.runs()?;
    let counts = output::journal_counts(&journal);
    if cli.json {
        let runs: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "command": r.command, "options": r.options,
                    "started_at_us": r.started_at.micros(),
                    "ended_at_us": r.ended_at.map(|t| t.micros()),
                    "end": r.end,
                    "counts": r.counts,
                })
            })
            .collect();
        let value = serde_json::json!({
            "journal": { "id": journal.id(), "path": journal.path(), "format_version": journal.format_version(),
                         "mapping_version": journal.mapping_version(), "source": journal.source(),
                         "target": journal.target()?,
                         "cursor": journal.cursor(), "pass": journal.pass(), "entries": journal.entries(),
                         "head": { "entries": journal.head().0, "hash": journal.head().1 } },
            "states": counts.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "runs": runs,
        });
        out!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(Exit::Ok);
    }
    out!("journal {} ({})", journal.path().display(), journal.id())?;
    if let Some(source) = journal.source() {
        out!("  source: {source}")?;
    }
    out!(
        "  cursor: {}",
        journal
            .cursor()
            .map_or("none (nothing planned yet)".to_owned(), |c| c.to_string())
    )?;
    out!("  states:")?;
    for (state, n) in &counts {
        out!("    {state:<36} {n:>10}")?;
    }
    out!("  runs: {}", runs.len())?;
    for run in runs.iter().rev().take(5) {
        let secs = run
            .ended_at
            .map(|end| (end.micros() - run.started_at.micros()) as f64 / 1e6);
        let applied: u64 = run
            .counts
            .iter()
            .filter(|(k, _)| k == "applied")
            .map(|(_, v)| *v)
            .sum();
        let rate = secs
            .filter(|s| *s > 0.0 && applied > 0)
            .map(|s| format!(", {applied} keys applied ({:.0}/s)", applied as f64 / s));
        let end = match &run.end {
            None => "did not end (killed?)".to_owned(),
            Some(RunEnd::Completed) => "completed".to_owned(),
            Some(RunEnd::Interrupted) => "interrupted".to_owned(),
            Some(RunEnd::Stopped { kind, error }) => format!("stopped ({kind}): {error}"),
        };
        out!(
            "    {} {:<8} {}{} {end}{}",
            run.id,
            run.command,
            secs.map_or(String::new(), |s| format!("{s:.1}s")),
            if secs.is_some() { "," } else { "" },
            rate.unwrap_or_default()
        )?;
    }
    Ok(Exit::Ok)
}
