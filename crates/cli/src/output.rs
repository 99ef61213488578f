//! What people see: a progress bar on a terminal, a plain line every few
//! seconds otherwise, and the final summary (or JSON).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backfill_journal::Journal;
use backfill_postgres::engine::{NoProgress, Progress};
use backfill_postgres::Summary;
use indicatif::{ProgressBar, ProgressStyle};

/// A progress display fit for where stderr goes.
pub fn progress(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bar(Mutex::new(None)))
    } else {
        Arc::new(Lines::default())
    }
}

/// The bar counts source rows, except in `replay`, which counts keys.
struct Bar(Mutex<Option<(ProgressBar, bool)>>);

impl Bar {
    fn inc(&self, n: u64, keys: bool) {
        if let Some((bar, counts_keys)) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            if *counts_keys == keys {
                bar.inc(n);
            }
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let counts_keys = phase == "replay";
        let unit = if counts_keys { "keys" } else { "rows" };
        let template = format!(
            "{phase:>7} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} {{per_sec}} ETA {{eta}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((bar, counts_keys));
    }
    fn rows(&self, rows: u64) {
        self.inc(rows, false);
    }
    fn keys(&self, keys: u64) {
        self.inc(keys, true);
    }
    fn finish(&self) {
        if let Some((bar, _)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// (phase start, last line, phase, total).
type Phase = (Instant, Instant, String, Option<u64>);

#[derive(Default)]
struct Lines {
    started: Mutex<Option<Phase>>,
    rows: AtomicU64,
    keys: AtomicU64,
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
        if phase == "replay" {
            let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
            eprintln!(
                "{phase}: {keys}{of} pending keys applied, {:.0} keys/s, {secs:.0}s",
                keys as f64 / secs
            );
        } else {
            let of = total.map(|t| format!(" of ~{t}")).unwrap_or_default();
            eprintln!(
                "{phase}: {rows} source rows{of} read, {keys} keys applied, {:.0} rows/s, {secs:.0}s",
                rows as f64 / secs
            );
        }
    }
}

impl Progress for Lines {
    fn start(&self, phase: &str, total: Option<u64>) {
        self.rows.store(0, Ordering::Relaxed);
        self.keys.store(0, Ordering::Relaxed);
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), Instant::now(), phase.to_owned(), total));
    }
    fn rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.tick(false);
    }
    fn keys(&self, keys: u64) {
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.tick(false);
    }
    fn finish(&self) {
        self.tick(true);
    }
}

/// The run counts recorded at the end of a command that reads the source:
/// the journal's counts plus `source_exhausted` (1 when the pass read the
/// source to its end), which tells `replay` whether reading must resume.
pub fn pass_counts(journal: &Journal, summary: &Summary) -> Vec<(String, u64)> {
    let mut counts = journal_counts(journal);
    counts.push((SOURCE_EXHAUSTED.to_owned(), u64::from(!summary.interrupted)));
    counts
}

/// The run count that marks a completed pass over the source.
pub const SOURCE_EXHAUSTED: &str = "source_exhausted";

/// True if the latest `plan`/`run`/`demo` did not read the source to its end
/// (killed, interrupted, failed): `replay` then resumes reading too.
pub fn pass_unfinished(journal: &Journal) -> anyhow::Result<bool> {
    let runs = journal.runs()?;
    let last_pass = runs
        .iter()
        .rev()
        .find(|r| matches!(r.command.as_str(), "plan" | "run" | "demo"));
    Ok(last_pass.is_some_and(|r| {
        !r.counts
            .iter()
            .any(|(k, v)| k == SOURCE_EXHAUSTED && *v == 1)
    }))
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
        out!("interrupted after the batch in flight; resume with: backfill replay")?;
    } else {
        out!("next: {next_step}")?;
    }
    Ok(())
}
