//! The engine: source → plan → journal → sink, batch by batch.
//!
//! Why three stages with bounded channels: reading (Postgres I/O), planning
//! plus journaling (CPU and fsync) and applying (Postgres I/O) overlap on two
//! cores, while at most one batch waits between stages, so memory does not
//! grow with the data. The journal is written before the target for every
//! batch: a crash at any point leaves keys pending (re-applied by `replay`) or
//! applied with a ledger row (reconciled as already applied), never lost and
//! never written twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backfill_core::{plan, Directories, MigrationEvent, Note};
use backfill_journal::{decide, Batch, Decision, Journal, Record, State};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::sink::{KeyOutcome, Sink, TableCounts};
use crate::source::{SourceBatch, SourceReader};
use crate::{Error, Result};

pub use crate::sink::OnConflict;

/// Options that shape a run (none of them change what is written).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Keys per batch.
    pub batch_size: usize,
    /// Source rows per second at most (`--max-rows-per-sec`).
    pub max_rows_per_sec: Option<u64>,
    /// Accept an empty source table.
    pub allow_empty: bool,
    /// Re-read the source from the start instead of from the cursor (drift).
    pub rescan: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            max_rows_per_sec: None,
            allow_empty: false,
            rescan: false,
        }
    }
}

/// Progress reporting (a terminal bar, plain lines, or nothing).
pub trait Progress: Send + Sync {
    /// A phase starts; `total_rows` is an estimate when known.
    fn start(&self, phase: &str, total_rows: Option<u64>);
    /// Source rows planned.
    fn rows(&self, rows: u64);
    /// Keys applied (or decided) by the sink.
    fn keys(&self, keys: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn rows(&self, _: u64) {}
    fn keys(&self, _: u64) {}
    fn finish(&self) {}
}

/// What a command did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Source rows read.
    pub source_rows: u64,
    /// Keys read from the source.
    pub keys_read: u64,
    /// Keys whose event was recorded (new or changed).
    pub keys_planned: u64,
    /// Keys whose source was unchanged.
    pub keys_unchanged: u64,
    /// Applied keys whose source changed (now `drifted`).
    pub keys_drifted: u64,
    /// Keys by outcome of this command: `applied`, `already_applied`,
    /// `skipped:<reason>`, `rejected:<reason>`, `failed`.
    pub outcomes: BTreeMap<String, u64>,
    /// Rows written (or, in a dry run, that would be written) per table.
    pub tables: TableCounts,
    /// Unresolved competitor names with their row counts.
    pub unresolved_competitors: BTreeMap<String, u64>,
    /// Notes by kind.
    pub notes: BTreeMap<String, u64>,
    /// The first failures: (key, database error).
    pub failures: Vec<(i64, String)>,
    /// Batches applied.
    pub batches: u64,
    /// Stopped by a signal.
    pub interrupted: bool,
    /// A dry run (nothing written, nothing marked applied).
    pub dry_run: bool,
    /// Wall time.
    pub elapsed_secs: f64,
}

impl Summary {
    fn count(&mut self, outcome: impl Into<String>) {
        *self.outcomes.entry(outcome.into()).or_insert(0) += 1;
    }

    /// Adds another summary's counts (the first's timing is kept).
    pub fn merge(&mut self, other: Summary) {
        self.source_rows += other.source_rows;
        self.keys_read += other.keys_read;
        self.keys_planned += other.keys_planned;
        self.keys_unchanged += other.keys_unchanged;
        self.keys_drifted += other.keys_drifted;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_insert(0) += v;
        }
        self.tables.add(&other.tables);
        for (k, v) in other.unresolved_competitors {
            *self.unresolved_competitors.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.notes {
            *self.notes.entry(k).or_insert(0) += v;
        }
        self.failures.extend(other.failures);
        self.failures.truncate(MAX_FAILURES);
        self.batches += other.batches;
        self.interrupted |= other.interrupted;
    }

    /// True if some key ended rejected or failed (exit code 1).
    pub fn has_problems(&self) -> bool {
        self.outcomes
            .iter()
            .any(|(k, v)| *v > 0 && (k.starts_with("rejected") || k == "failed"))
    }
}

const MAX_FAILURES: usize = 100;

/// Drives plan, replay and run against one journal.
pub struct Engine {
    reader: SourceReader,
    journal: Arc<Journal>,
    options: EngineOptions,
    cancel: Arc<AtomicBool>,
    progress: Arc<dyn Progress>,
}

/// Keys to apply after planning one batch, with what planning saw.
struct Planned {
    events: Vec<MigrationEvent>,
    summary: Summary,
}

/// Records a (re)planned event: counted, queued for the sink if it migrates,
/// appended to the journal batch.
fn record_plan(
    event: MigrationEvent,
    records: &mut Batch,
    to_apply: &mut Vec<MigrationEvent>,
    summary: &mut Summary,
) {
    summary.keys_planned += 1;
    match &event.outcome {
        backfill_core::Outcome::Migrate(_) => to_apply.push(event.clone()),
        backfill_core::Outcome::Skip(r) => summary.count(format!("skipped:{}", r.code())),
        backfill_core::Outcome::Reject(r) => summary.count(format!("rejected:{}", r.code())),
    }
    records.plan(event);
}

fn plan_batch(
    journal: &Journal,
    dirs: &Directories,
    batch: SourceBatch,
    run: Uuid,
) -> Result<Planned> {
    let mut summary = Summary {
        source_rows: u64::try_from(batch.rows).unwrap_or(u64::MAX),
        keys_read: u64::try_from(batch.groups.len()).unwrap_or(u64::MAX),
        ..Summary::default()
    };
    let last_key = batch.last_key();
    let mut records = Batch::for_run(run);
    let mut events = Vec::with_capacity(batch.groups.len());
    for (key, rows) in batch.groups {
        let event = plan(key, &rows, dirs)?;
        for note in &event.notes {
            *summary.notes.entry(note.kind().to_owned()).or_insert(0) += 1;
            if let Note::UnresolvedCompetitor { name, .. } = note {
                *summary
                    .unresolved_competitors
                    .entry(name.clone())
                    .or_insert(0) += 1;
            }
        }
        let status = journal.status(key)?;
        match decide(status.as_ref(), &event) {
            Decision::Plan => {
                record_plan(event, &mut records, &mut events, &mut summary);
            }
            Decision::Unchanged => {
                summary.keys_unchanged += 1;
                if matches!(
                    status.map(|s| s.state),
                    Some(State::Pending | State::Failed)
                ) {
                    events.push(event);
                }
            }
            Decision::Drift => {
                summary.keys_drifted += 1;
                records.record(
                    key,
                    Record::Drifted {
                        new_source_hash: event.source_hash,
                    },
                );
            }
        }
    }
    if let Some(last) = last_key {
        records.cursor(last);
    }
    journal.commit(records)?;
    Ok(Planned { events, summary })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

impl Engine {
    /// An engine reading with `reader` into `journal`.
    pub fn new(reader: SourceReader, journal: Arc<Journal>, options: EngineOptions) -> Self {
        Self {
            reader,
            journal,
            options,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(NoProgress),
        }
    }

    /// Reports progress to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// The flag that stops the engine after the batch in flight (set it from
    /// a signal handler).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    async fn check_source(&self) -> Result<()> {
        if !self.options.allow_empty && self.reader.is_empty().await? {
            return Err(Error::EmptySource {
                table: self.reader.table().to_string(),
            });
        }
        Ok(())
    }

    fn start_key(&self) -> Option<i64> {
        if self.options.rescan {
            None
        } else {
            self.journal.cursor()
        }
    }

    /// Spawns the reader and planner stages; returns the channel of planned
    /// batches and the two tasks.
    fn spawn_planning(
        &self,
        dirs: Directories,
        run: Uuid,
    ) -> (
        mpsc::Receiver<Planned>,
        tokio::task::JoinHandle<Result<()>>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (read_tx, mut read_rx) = mpsc::channel::<SourceBatch>(1);
        let (plan_tx, plan_rx) = mpsc::channel::<Planned>(1);
        let reader = self.reader.clone();
        let cancel = self.cancel.clone();
        let batch_size = self.options.batch_size.max(1);
        let max_rate = self.options.max_rows_per_sec.filter(|r| *r > 0);
        let mut after = self.start_key();
        let reading = tokio::spawn(async move {
            let started = Instant::now();
            let mut rows = 0u64;
            while !cancel.load(Ordering::SeqCst) {
                let Some(batch) = reader.next_batch(after, batch_size).await? else {
                    break;
                };
                after = batch.last_key();
                rows += u64::try_from(batch.rows).unwrap_or(0);
                if let Some(rate) = max_rate {
                    let due = Duration::from_secs_f64(rows as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                if read_tx.send(batch).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        let reader = self.reader.clone();
        let journal = self.journal.clone();
        let cancel = self.cancel.clone();
        let progress = self.progress.clone();
        let planning = tokio::spawn(async move {
            let mut dirs = Some(dirs);
            while let Some(batch) = read_rx.recv().await {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                let keys: Vec<i64> = batch.groups.iter().map(|(k, _)| *k).collect();
                let mut d = dirs
                    .take()
                    .expect("directories are returned after each batch");
                reader.load_collector_results(&mut d, &keys).await?;
                let journal = journal.clone();
                let (planned, d) = blocking(move || {
                    let planned = plan_batch(&journal, &d, batch, run)?;
                    Ok((planned, d))
                })
                .await?;
                dirs = Some(d);
                progress.rows(planned.summary.source_rows);
                if plan_tx.send(planned).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        (plan_rx, reading, planning)
    }

    /// Reads the source and records every key's event in the journal; writes
    /// nothing to the target.
    pub async fn plan(&self, run: Uuid) -> Result<Summary> {
        let started = Instant::now();
        self.check_source().await?;
        let dirs = self.reader.load_directories().await?;
        self.progress
            .start("plan", self.reader.estimate_rows().await?);
        let (mut planned, reading, planning) = self.spawn_planning(dirs, run);
        let mut summary = Summary::default();
        while let Some(batch) = planned.recv().await {
            summary.merge(batch.summary);
        }
        reading.await.expect("reader task")?;
        planning.await.expect("planner task")?;
        self.progress.finish();
        summary.interrupted = self.cancelled();
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Applies one batch of events and records the outcomes.
    async fn apply_batch<S: Sink>(
        &self,
        sink: &mut S,
        run: Uuid,
        batch_no: u64,
        events: Vec<MigrationEvent>,
        summary: &mut Summary,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let outcome = sink.apply(run, &events).await?;
        summary.tables.add(&outcome.tables);
        summary.batches += 1;
        let hashes: std::collections::HashMap<i64, backfill_core::Digest> = events
            .iter()
            .map(|e| (e.collector_result_id, e.content_hash))
            .collect();
        let mut records = Batch::for_run(run);
        for (key, outcome) in &outcome.keys {
            match outcome {
                KeyOutcome::Applied => summary.count("applied"),
                KeyOutcome::AlreadyApplied => summary.count("already_applied"),
                KeyOutcome::ExistingInTarget => summary.count("skipped:existing_in_target"),
                KeyOutcome::Failed(error) => {
                    summary.count("failed");
                    if summary.failures.len() < MAX_FAILURES {
                        summary.failures.push((*key, error.clone()));
                    }
                }
            }
            if !sink.writes() {
                continue;
            }
            let record = match outcome {
                KeyOutcome::Applied | KeyOutcome::AlreadyApplied => Record::Applied {
                    run,
                    batch: batch_no,
                    content_hash: hashes[key],
                },
                KeyOutcome::ExistingInTarget => Record::Skipped {
                    reason: "existing_in_target".into(),
                },
                KeyOutcome::Failed(error) => Record::Failed {
                    error: error.clone(),
                    attempt: self
                        .journal
                        .status(*key)?
                        .map_or(1, |s| s.failures.saturating_add(1)),
                },
            };
            records.record(*key, record);
        }
        if sink.writes() {
            let journal = self.journal.clone();
            blocking(move || journal.commit(records).map(|_| ()).map_err(Error::from)).await?;
        }
        self.progress
            .keys(u64::try_from(outcome.keys.len()).unwrap_or(0));
        Ok(())
    }

    /// Applies every pending key (and, with `retry_failed`, every failed
    /// one) from the journal, in key order.
    pub async fn replay<S: Sink>(
        &self,
        sink: &mut S,
        run: Uuid,
        retry_failed: bool,
    ) -> Result<Summary> {
        let started = Instant::now();
        let mut summary = Summary {
            dry_run: !sink.writes(),
            ..Summary::default()
        };
        let mut states = vec![State::Pending];
        if retry_failed {
            states.push(State::Failed);
        }
        let total: u64 = states.iter().map(|s| self.journal.count(*s)).sum();
        self.progress.start("replay", Some(total));
        let mut batch_no = 0u64;
        for state in states {
            let mut from = None;
            loop {
                if self.cancelled() {
                    summary.interrupted = true;
                    break;
                }
                let keys: Vec<i64> = self
                    .journal
                    .keys_in_state(state, from)
                    .take(self.options.batch_size.max(1))
                    .collect::<std::result::Result<_, _>>()?;
                let Some(&last) = keys.last() else { break };
                from = last.checked_add(1);
                let mut events = Vec::with_capacity(keys.len());
                for key in keys {
                    if let Some(event) = self.journal.event(key)? {
                        events.push(event);
                    }
                }
                batch_no += 1;
                self.apply_batch(sink, run, batch_no, events, &mut summary)
                    .await?;
                if from.is_none() {
                    break;
                }
            }
        }
        self.progress.finish();
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Re-plans every `drifted` key from the source as it is now and rewrites
    /// it in the target with `sink` (which should replace: the old rows are
    /// this journal's). The key's history keeps both events.
    pub async fn reapply_drifted<S: Sink>(&self, sink: &mut S, run: Uuid) -> Result<Summary> {
        let started = Instant::now();
        let mut summary = Summary {
            dry_run: !sink.writes(),
            ..Summary::default()
        };
        let mut dirs = self.reader.load_directories().await?;
        let drifted: Vec<i64> = self
            .journal
            .keys_in_state(State::Drifted, None)
            .collect::<std::result::Result<_, _>>()?;
        let mut batch_no = 0u64;
        for keys in drifted.chunks(self.options.batch_size.max(1)) {
            if self.cancelled() {
                summary.interrupted = true;
                break;
            }
            let batch = self.reader.groups_of(keys).await?;
            self.reader.load_collector_results(&mut dirs, keys).await?;
            let mut records = Batch::for_run(run);
            let mut events = Vec::new();
            for (key, rows) in &batch.groups {
                let event = plan(*key, rows, &dirs)?;
                record_plan(event, &mut records, &mut events, &mut summary);
            }
            if sink.writes() {
                let journal = self.journal.clone();
                blocking(move || journal.commit(records).map(|_| ()).map_err(Error::from)).await?;
            }
            batch_no += 1;
            self.apply_batch(sink, run, batch_no, events, &mut summary)
                .await?;
        }
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Plan and replay, pipelined: the one-command backfill. Keys left
    /// pending by earlier runs are applied after the source is exhausted.
    pub async fn run<S: Sink>(&self, sink: &mut S, run: Uuid) -> Result<Summary> {
        let started = Instant::now();
        self.check_source().await?;
        let dirs = self.reader.load_directories().await?;
        self.progress
            .start("run", self.reader.estimate_rows().await?);
        let (mut planned, reading, planning) = self.spawn_planning(dirs, run);
        let mut summary = Summary {
            dry_run: !sink.writes(),
            ..Summary::default()
        };
        let mut batch_no = 0u64;
        let mut result = Ok(());
        while let Some(batch) = planned.recv().await {
            let events = batch.events;
            summary.merge(batch.summary);
            batch_no += 1;
            if let Err(err) = self
                .apply_batch(sink, run, batch_no, events, &mut summary)
                .await
            {
                result = Err(err);
                break;
            }
            if self.cancelled() {
                break;
            }
        }
        drop(planned);
        let read_result = reading.await.expect("reader task");
        let plan_result = planning.await.expect("planner task");
        result?;
        read_result?;
        plan_result?;
        self.progress.finish();
        if self.cancelled() {
            summary.interrupted = true;
        } else if sink.writes() {
            // Keys planned by an earlier `plan` or interrupted run.
            let rest = self.replay(sink, run, false).await?;
            summary.merge(rest);
        }
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}
