//! `journal inspect`: what was planned, written, skipped and why — from the
//! journal alone (no database connection). The JSON form is documented in
//! docs/auditor.md and docs/inspect.schema.json.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use backfill_core::Note;
use backfill_journal::{Journal, Record, State};
use serde_json::{json, Value};

use crate::args::{Cli, InspectArgs};
use crate::{context, Exit};

pub fn run(cli: &Cli, args: &InspectArgs) -> Result<Exit> {
    let journal = context::read_journal(&cli.journal)?;
    let value = match (args.collector_result, args.run) {
        (Some(key), _) => key_view(&journal, key)?,
        (None, Some(run)) => run_view(&journal, backfill_journal::RunId(run))?,
        (None, None) => overview(&journal, args)?,
    };
    if cli.json {
        out!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        print_human(&value, 0)?;
    }
    Ok(Exit::Ok)
}

fn record_view(seq: u64, at: i64, run: Option<backfill_journal::RunId>, record: &Record) -> Value {
    let mut v = json!({ "seq": seq, "at_us": at, "run": run, "record": record.kind() });
    match record {
        Record::Planned { event } => {
            v["source_hash"] = json!(event.source_hash);
            v["content_hash"] = json!(event.content_hash);
            v["outcome"] = json!(outcome_name(&event.outcome));
        }
        Record::Applied {
            batch,
            content_hash,
            ..
        } => {
            v["batch"] = json!(batch);
            v["content_hash"] = json!(content_hash);
        }
        Record::Skipped { reason } | Record::Rejected { reason } => v["reason"] = json!(reason),
        Record::Failed { error, attempt } => {
            v["error"] = json!(error);
            v["attempt"] = json!(attempt);
        }
        Record::Drifted { new_source_hash } => v["new_source_hash"] = json!(new_source_hash),
        Record::RolledBack { .. } => {}
        Record::Replaced { previous_hash } => v["previous_hash"] = json!(previous_hash),
    }
    v
}

fn outcome_name(outcome: &backfill_core::Outcome) -> String {
    match outcome {
        backfill_core::Outcome::Migrate(_) => "migrate".into(),
        backfill_core::Outcome::Skip(r) => format!("skip:{}", r.code()),
        backfill_core::Outcome::Reject(r) => format!("reject:{}", r.code()),
    }
}

fn run_view(journal: &Journal, id: backfill_journal::RunId) -> Result<Value> {
    let Some(run) = journal.run(id)? else {
        bail!("no run {id} in this journal (`backfill status` lists its runs)");
    };
    Ok(json!({
        "id": run.id, "command": run.command, "options": run.options,
        "started_at_us": run.started_at.micros(), "ended_at_us": run.ended_at.map(|t| t.micros()),
        "end": run.end,
        "counts": run.counts.iter().cloned().collect::<BTreeMap<String, u64>>(),
    }))
}

fn key_view(journal: &Journal, key: i64) -> Result<Value> {
    let Some(status) = journal.status(key)? else {
        bail!("collector_result_id {key} is not in the journal");
    };
    let event = journal.event(key)?;
    let history: Vec<Value> = journal
        .history(key)?
        .iter()
        .map(|l| record_view(l.seq, l.at.micros(), l.run, &l.record))
        .collect();
    let reject_detail = event.as_ref().and_then(|e| match &e.outcome {
        backfill_core::Outcome::Reject(r) => Some(r.to_string()),
        _ => None,
    });
    Ok(json!({
        "collector_result_id": key,
        "state": status.state,
        "reason": status.reason,
        "reason_detail": reject_detail,
        "error": status.error,
        "source_hash": status.source_hash,
        "content_hash": status.content_hash,
        "history": history,
        "outcome": event.as_ref().map(|e| json!(e.outcome)),
        "notes": event.as_ref().map(|e| json!(e.notes)).unwrap_or(json!([])),
    }))
}

fn overview(journal: &Journal, args: &InspectArgs) -> Result<Value> {
    let state_filter: Option<State> = args
        .state
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let reason_filter: Option<backfill_journal::Reason> = args
        .reason
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut unresolved: BTreeMap<String, u64> = BTreeMap::new();
    let mut notes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut keys = Vec::new();
    let mut total = 0u64;
    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    for item in journal.keys() {
        let (key, status) = item?;
        if let Some(event) = journal.event(key)? {
            for note in &event.notes {
                *notes.entry(note.kind()).or_insert(0) += 1;
                if let Note::UnresolvedCompetitor { name, .. } = note {
                    *unresolved.entry(name.clone()).or_insert(0) += 1;
                }
            }
        }
        let listed = (state_filter.is_some() || reason_filter.is_some())
            && state_filter.is_none_or(|s| s == status.state)
            && reason_filter.is_none_or(|r| status.reason == Some(r));
        total += u64::from(listed);
        if listed && keys.len() < limit {
            keys.push(json!({
                "collector_result_id": key, "state": status.state, "reason": status.reason, "error": status.error,
            }));
        }
    }
    let mut unresolved: Vec<(String, u64)> = unresolved.into_iter().collect();
    unresolved.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let runs: Vec<Value> = journal
        .runs()?
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "command": r.command, "options": r.options,
                "started_at_us": r.started_at.micros(), "ended_at_us": r.ended_at.map(|t| t.micros()),
                "end": r.end, "counts": r.counts,
            })
        })
        .collect();
    let states: Vec<Value> = journal
        .counts()
        .into_iter()
        .map(|((state, reason), count)| json!({ "state": state, "reason": reason, "count": count }))
        .collect();
    Ok(json!({
        "journal": {
            "id": journal.id(), "path": journal.path(), "format_version": journal.format_version(),
            "mapping_version": journal.mapping_version(), "source": journal.source(),
            "cursor": journal.cursor(), "pass": journal.pass(), "entries": journal.entries(),
            "head": { "entries": journal.head().0, "hash": journal.head().1 },
        },
        "runs": runs,
        "states": states,
        "unresolved_competitors": unresolved.into_iter().map(|(name, rows)| json!({ "name": name, "rows": rows })).collect::<Vec<_>>(),
        "notes": notes.into_iter().map(|(kind, count)| json!({ "kind": kind, "count": count })).collect::<Vec<_>>(),
        "keys_total": total,
        "keys_truncated": u64::try_from(keys.len()).unwrap_or(u64::MAX) < total,
        "keys": keys,
    }))
}

/// Indented `name: value` lines for people.
fn print_human(value: &Value, depth: usize) -> std::io::Result<()> {
    let pad = "  ".repeat(depth);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(_) | Value::Array(_) if !is_empty(v) => {
                        out!("{pad}{k}:")?;
                        print_human(v, depth + 1)?;
                    }
                    _ => out!("{pad}{k}: {}", scalar(v))?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map)
                        if map.values().all(|v| {
                            !matches!(v, Value::Object(_) | Value::Array(_)) || is_empty(v)
                        }) =>
                    {
                        let line: Vec<String> = map
                            .iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| format!("{k}={}", scalar(v)))
                            .collect();
                        out!("{pad}- {}", line.join(" "))?;
                    }
                    Value::Object(_) | Value::Array(_) => {
                        out!("{pad}-")?;
                        print_human(item, depth + 1)?;
                    }
                    _ => out!("{pad}- {}", scalar(item))?,
                }
            }
        }
        _ => out!("{pad}{}", scalar(value))?,
    }
    Ok(())
}

fn is_empty(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(o) if o.is_empty())
}

/// A value for a terminal: control characters in names (an escape sequence
/// in a competitor name) are shown escaped, never sent to the terminal.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().any(char::is_control) => s
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
