//! What people see: a progress bar on a terminal, a plain line every few
//! seconds otherwise, and the final summary (or JSON). The displays are
//! observers of the run's events; they decide nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backfill_engine::{Event, Observer, Phase, RunControl, Summary, WaitReason};
use backfill_journal::Journal;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::Cli;

/// Attaches the display fit for where stderr goes (none with `--quiet` or
/// `--json`).
pub fn observe(control: &RunControl, cli: &Cli, dry_run: bool) {
    if cli.quiet || cli.json {
        return;
    }
    let verb = if dry_run { "would apply" } else { "applied" };
    if std::io::stderr().is_terminal() {
        control.observe(Arc::new(Bar {
            bar: Mutex::new(None),
            verb,
        }));
    } else {
        control.observe(Arc::new(Lines {
            verb,
            ..Lines::default()
        }));
    }
}

/// Source passes count rows; journal passes count keys.
fn counts_keys(phase: Phase) -> bool {
    !matches!(phase, Phase::SourcePass { .. })
}

struct Bar {
    bar: Mutex<Option<(ProgressBar, bool)>>,
    verb: &'static str,
}

impl Observer for Bar {
    fn on_event(&self, event: &Event) {
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::PhaseStarted { phase, total } => {
                let bar = match total {
                    Some(total) => ProgressBar::new(*total),
                    None => ProgressBar::new_spinner(),
                };
                let keys = counts_keys(*phase);
                let unit = if keys { "keys" } else { "rows" };
                let name = phase.name();
                let template = format!(
                    "{name:>7} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} {{per_sec}} ETA {{eta}} {{msg}}"
                );
                if let Ok(style) = ProgressStyle::with_template(&template) {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(200));
                *guard = Some((bar, keys));
            }
            Event::RowsPlanned { rows, .. } => {
                if let Some((bar, false)) = guard.as_ref() {
                    bar.inc(*rows);
                    bar.set_message("");
                }
            }
            Event::BatchApplied { keys, retries, .. } => {
                if let Some((bar, counts_keys)) = guard.as_ref() {
                    if *counts_keys {
                        bar.inc(*keys);
                    }
                    if *retries > 0 {
                        bar.set_message(format!("{} (a batch retried {retries}×)", self.verb));
                    } else {
                        bar.set_message(self.verb);
                    }
                }
            }
            Event::Waiting(WaitReason::Paused) => {
                if let Some((bar, _)) = guard.as_ref() {
                    bar.set_message("paused");
                }
            }
            Event::PhaseFinished { .. } => {
                if let Some((bar, _)) = guard.take() {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

/// (phase start, last line, phase, total).
type PhaseClock = (Instant, Instant, Phase, Option<u64>);

#[derive(Default)]
struct Lines {
    started: Mutex<Option<PhaseClock>>,
    rows: AtomicU64,
    keys: AtomicU64,
    verb: &'static str,
}

impl Lines {
    fn tick(&self, force: bool) {
        let mut guard = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let Some((start, last, phase, total)) = guard.as_mut() else {
            return;
        };
        if !force && last.elapsed() < Duration::from_secs(5) {
            return;
        }
        *last = Instant::now();
        let rows = self.rows.load(Ordering::Relaxed);
        let keys = self.keys.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let name = phase.name();
        let verb = self.verb;
        if counts_keys(*phase) {
            let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
            eprintln!(
                "{name}: {keys}{of} keys {verb}, {:.0} keys/s, {secs:.0}s",
                keys as f64 / secs
            );
        } else {
            let of = total.map(|t| format!(" of ~{t}")).unwrap_or_default();
            eprintln!(
                "{name}: {rows} source rows{of} read, {keys} keys {verb}, {:.0} rows/s, {secs:.0}s",
                rows as f64 / secs
            );
        }
    }
}

impl Observer for Lines {
    fn on_event(&self, event: &Event) {
        match event {
            Event::PhaseStarted { phase, total } => {
                self.rows.store(0, Ordering::Relaxed);
                self.keys.store(0, Ordering::Relaxed);
                *self.started.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), Instant::now(), *phase, *total));
            }
            Event::RowsPlanned { rows, .. } => {
                self.rows.fetch_add(*rows, Ordering::Relaxed);
                self.tick(false);
            }
            Event::BatchApplied {
                applied, retries, ..
            } => {
                if *retries > 0 {
                    eprintln!(
                        "a batch was retried {retries} time(s) (lock or statement timeout, or a lost connection) before it committed"
                    );
                }
                self.keys.fetch_add(*applied, Ordering::Relaxed);
                self.tick(false);
            }
            Event::Waiting(WaitReason::Paused) => eprintln!("paused"),
            Event::PhaseFinished { .. } => self.tick(true),
            _ => {}
        }
    }
}

/// Journal counts as `state` or `state:reason` → n.
pub fn journal_counts(journal: &Journal) -> Vec<(String, u64)> {
    journal
        .counts()
        .into_iter()
        .map(|((state, reason), n)| match reason {
            Some(reason) => (format!("{state}:{reason}"), n),
            None => (state.to_string(), n),
        })
        .collect()
}

/// Prints a command's summary and the journal's state, human or JSON. The
/// work is done by then: a reader that went away (`| head`) does not change
/// the exit code, and another write error is reported on stderr.
pub fn summary(command: &str, summary: &Summary, journal: &Journal, json: bool, next_step: &str) {
    if let Err(err) = print_summary(command, summary, journal, json, next_step) {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("warning: cannot print the summary: {err}");
        }
    }
}

fn print_summary(
    command: &str,
    summary: &Summary,
    journal: &Journal,
    json: bool,
    next_step: &str,
) -> std::io::Result<()> {
    if json {
        let value = serde_json::json!({
            "command": command,
            "summary": summary,
            "journal": {
                "id": journal.id(),
                "path": journal.path(),
                "cursor": journal.cursor(),
                "states": journal_counts(journal).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            },
            "next_step": next_step,
        });
        out!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )?;
        return Ok(());
    }
    let dry = if summary.dry_run {
        " (dry run: nothing written)"
    } else {
        ""
    };
    out!("{command}{dry}: {:.1}s", summary.elapsed_secs)?;
    if summary.keys_read > 0 {
        let rate = summary.source_rows as f64 / summary.elapsed_secs.max(0.001);
        out!(
            "  source: {} rows, {} keys ({:.0} rows/s); {} planned, {} unchanged, {} drifted",
            summary.source_rows,
            summary.keys_read,
            rate,
            summary.keys_planned,
            summary.keys_unchanged,
            summary.keys_drifted
        )?;
    }
    if !summary.outcomes.is_empty() {
        out!("  this run:")?;
        for (outcome, n) in &summary.outcomes {
            let outcome = match outcome {
                backfill_engine::KeyResult::Applied if summary.dry_run => "would apply".to_owned(),
                other => other.to_string(),
            };
            out!("    {outcome:<36} {n:>10}")?;
        }
    }
    let t = &summary.tables;
    let verb = if summary.dry_run {
        "would write"
    } else {
        "rows written"
    };
    out!("  {verb}:")?;
    for (table, n) in [
        ("metric_facts", t.metric_facts),
        ("brand_metrics", t.brand_metrics),
        ("brand_sentiment", t.brand_sentiment),
        ("competitor_metrics", t.competitor_metrics),
        ("competitor_sentiment", t.competitor_sentiment),
    ] {
        out!("    {table:<36} {n:>10}")?;
    }
    if !summary.notes.is_empty() {
        out!("  notes:")?;
        for (kind, n) in &summary.notes {
            out!("    {kind:<36} {n:>10}")?;
        }
    }
    if !summary.unresolved_competitors.is_empty() {
        let mut top: Vec<_> = summary.unresolved_competitors.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        out!("  unresolved competitor names (top 10 of {}):", top.len())?;
        for (name, n) in top.into_iter().take(10) {
            out!("    {:<36} {n:>10}", format!("{name:?}"))?;
        }
    }
    if !summary.retries.is_empty() {
        out!("  batch attempts retried:")?;
        for (cause, n) in &summary.retries {
            out!("    {cause:<36} {n:>10}")?;
        }
    }
    if !summary.failures.is_empty() {
        out!("  failures (first {}):", summary.failures.len().min(10))?;
        for (key, error) in summary.failures.iter().take(10) {
            out!("    collector_result_id {key}: {error}")?;
        }
    }
    out!("  journal {} ({}):", journal.path().display(), journal.id())?;
    for (state, n) in journal_counts(journal) {
        out!("    {state:<36} {n:>10}")?;
    }
    if summary.interrupted {
        out!("interrupted: the run stopped before its end (stderr says how to resume)")?;
    } else {
        out!("next: {next_step}")?;
    }
    Ok(())
}
