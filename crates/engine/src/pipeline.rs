//! The stages, written once: read → plan → record → apply → record.
//!
//! Why three tasks with bounded channels in a source pass: reading (source
//! I/O), planning plus journaling (CPU and fsync) and applying (target I/O)
//! overlap on two cores, while at most one batch waits between stages, so
//! memory does not grow with the data. The journal is written before the
//! target for every batch: a crash at any point leaves keys pending (applied
//! by the next replay) or applied with a ledger row (reconciled as applied),
//! never lost and never written twice. Every wait between batches honours
//! the run's stop; an abort ends the run wherever it is (`Engine::execute`),
//! abandoning the sink's transaction in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use backfill_core::{plan, Digest, Directories, MigrationEvent, Outcome};
use backfill_journal::{decide, Batch, Decision, Journal, PassState, Reason, Record, RunId, State};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::{Event, Phase, RunControl, WaitReason};
use crate::engine::Engine;
use crate::sink::{ApplyError, ApplyOutcome, KeyOutcome, OnConflict, Sink};
use crate::source::{KeyRange, Source, SourceBatch};
use crate::summary::{KeyResult, Summary, MAX_FAILURES};
use crate::throttle::Throttle;
use crate::{Error, Result};

/// Keys already attempted in this run: a key that failed in one step is not
/// retried by a later step of the same run (its failure is counted once).
#[derive(Default)]
pub(crate) struct Attempted {
    failed: HashSet<i64>,
}

/// A batch the sink has been given: what it applied, and the error that
/// stopped it, if any.
struct Applied {
    /// The content hash of every key given to the sink.
    hashes: HashMap<i64, Digest>,
    outcome: ApplyOutcome,
    stopped: Option<Error>,
    duration: std::time::Duration,
}

/// One planned batch on its way to the applier.
struct Planned {
    /// Keys to apply (new events, and unchanged ones still pending or failed).
    events: Vec<MigrationEvent>,
    /// What planning counted.
    summary: Summary,
    /// Why `events` is empty though the batch was recorded ([`resolve`]):
    /// the pass stops once the batch's counts are taken.
    defect: Option<Error>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

async fn commit(journal: &Arc<Journal>, batch: Batch) -> Result<()> {
    let journal = journal.clone();
    blocking(move || journal.commit(batch).map(|_| ()).map_err(Error::from)).await
}

/// Commits a batch and hands back its planned events (see [`resolve`]).
async fn commit_planned(journal: &Arc<Journal>, batch: Batch) -> Result<Vec<MigrationEvent>> {
    let journal = journal.clone();
    blocking(move || {
        journal
            .commit_planned(batch)
            .map(|(_, events)| events)
            .map_err(Error::from)
    })
    .await
}

/// A key to apply, in key order: its event, or (`None`) the next migration
/// among the batch's `Planned` records, which the journal hands back once
/// they are committed: the applier takes them over instead of a copy.
type ToApply = Option<MigrationEvent>;

/// The keys to apply: each `None` slot takes the next migration of
/// `planned` (the batch's `Planned` events, in order; [`record_plan`] pushed
/// one `None` per migration it recorded).
fn resolve(slots: Vec<ToApply>, planned: Vec<MigrationEvent>) -> Result<Vec<MigrationEvent>> {
    let migrations: Vec<MigrationEvent> = planned
        .into_iter()
        .filter(|event| matches!(event.outcome, Outcome::Migrate(_)))
        .collect();
    let expected = slots.iter().filter(|slot| slot.is_none()).count();
    if migrations.len() != expected {
        return Err(Error::PlannedMismatch {
            expected,
            returned: migrations.len(),
        });
    }
    let mut migrations = migrations.into_iter();
    Ok(slots
        .into_iter()
        .filter_map(|slot| slot.or_else(|| migrations.next()))
        .collect())
}

/// Records a (re)planned event: counted, queued for the sink if it migrates
/// (as a `None` slot, see [`ToApply`]), appended to the journal batch.
fn record_plan(
    event: MigrationEvent,
    records: &mut Batch,
    to_apply: &mut Vec<ToApply>,
    summary: &mut Summary,
) {
    summary.keys_planned += 1;
    match &event.outcome {
        Outcome::Migrate(_) => to_apply.push(None),
        Outcome::Skip(r) => summary.count(KeyResult::Skipped(Reason::from(r))),
        Outcome::Reject(r) => summary.count(KeyResult::Rejected(Reason::from(r))),
    }
    records.plan(event);
}

/// Plans a batch of groups against the journal and records it (with the
/// cursor) in one commit.
fn plan_batch(
    journal: &Journal,
    dirs: &Directories,
    batch: SourceBatch,
    run: RunId,
    replace: bool,
) -> Result<Planned> {
    let mut summary = Summary {
        source_rows: u64::try_from(batch.rows).unwrap_or(u64::MAX),
        keys_read: u64::try_from(batch.groups.len()).unwrap_or(u64::MAX),
        ..Summary::default()
    };
    let last_key = batch.last_key();
    let mut records = Batch::for_run(run);
    let mut events = Vec::with_capacity(batch.groups.len());
    let keys: Vec<i64> = batch.groups.iter().map(|(key, _)| *key).collect();
    let mut statuses = journal.statuses(&keys)?;
    for (key, rows) in batch.groups {
        let event = plan(key, &rows, dirs)?;
        summary.notes_of(&event.notes);
        let status = statuses.remove(&key);
        match decide(status.as_ref(), &event) {
            Decision::Plan => record_plan(event, &mut records, &mut events, &mut summary),
            Decision::Unchanged => {
                summary.keys_unchanged += 1;
                let conflict = status
                    .as_ref()
                    .is_some_and(|s| s.reason == Some(Reason::ExistingInTarget));
                match status.map(|s| s.state) {
                    Some(State::Pending | State::Failed) => events.push(Some(event)),
                    // A replace asked for after the fact.
                    Some(State::Skipped) if replace && conflict => events.push(Some(event)),
                    _ => {}
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
    let (_, planned) = journal.commit_planned(records)?;
    // The batch is in the journal: its counts go on even if its events
    // cannot be handed on (its keys stay pending for the next replay).
    Ok(match resolve(events, planned) {
        Ok(events) => Planned {
            events,
            summary,
            defect: None,
        },
        Err(defect) => Planned {
            events: Vec::new(),
            summary,
            defect: Some(defect),
        },
    })
}

/// What the spawned stages of a source pass share.
struct Stage<S> {
    source: Arc<S>,
    journal: Arc<Journal>,
    control: RunControl,
    /// Cancelled by a stop, or by the pass itself after an error.
    token: CancellationToken,
    /// `OnConflict::Replace`: unchanged keys skipped as a live writer's are
    /// applied again.
    replace: bool,
}

impl<S> Clone for Stage<S> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            journal: self.journal.clone(),
            control: self.control.clone(),
            token: self.token.clone(),
            replace: self.replace,
        }
    }
}

/// The reader stage: keyset pages of the range, paced and pausable. Returns
/// true if the range was read to its end.
async fn read<S: Source>(
    stage: Stage<S>,
    range: KeyRange,
    mut after: Option<i64>,
    tx: mpsc::Sender<SourceBatch>,
) -> Result<bool> {
    let Stage {
        source,
        control,
        token,
        ..
    } = stage;
    let started = Instant::now();
    let mut throttle = Throttle::new();
    loop {
        if !control.wait_while_paused(&token).await {
            return Ok(false);
        }
        // A batch is read once the planner has taken the previous one: one
        // batch being read beside the one being planned, not a third held
        // ready (peak RSS, decision 69).
        let permit = tokio::select! {
            () = token.cancelled() => return Ok(false),
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(false),
            },
        };
        let limits = control.limits();
        let next = tokio::select! {
            () = token.cancelled() => return Ok(false),
            next = source.next_batch(range, after, limits.batch_size.max(1)) => next?,
        };
        let Some(batch) = next else {
            return Ok(true);
        };
        after = batch.last_key();
        let rows = u64::try_from(batch.rows).unwrap_or(u64::MAX);
        let wait = throttle.after_batch(started.elapsed(), rows, limits.max_rows_per_sec);
        permit.send(batch);
        if !wait.is_zero() {
            control.emit(Event::Waiting(WaitReason::Throttled { wait }));
            if !RunControl::sleep(&token, wait).await {
                return Ok(false);
            }
        }
    }
}

/// The planner stage: directories for the batch's keys, then plan and record
/// on a blocking thread.
async fn plan_stage<S: Source>(
    stage: Stage<S>,
    mut dirs: Directories,
    run: RunId,
    mut rx: mpsc::Receiver<SourceBatch>,
    tx: mpsc::Sender<Planned>,
) -> Result<()> {
    let Stage {
        source,
        journal,
        control,
        token,
        replace,
    } = stage;
    loop {
        // Planned once an applier has room for it (as the reader does).
        let permit = tokio::select! {
            () = token.cancelled() => return Ok(()),
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(()),
            },
        };
        let batch = tokio::select! {
            () = token.cancelled() => return Ok(()),
            batch = rx.recv() => match batch { Some(b) => b, None => return Ok(()) },
        };
        let keys = batch.keys();
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            loaded = source.load_collector_results(&mut dirs, &keys) => loaded?,
        }
        let journal = journal.clone();
        let (mut planned, back) = blocking(move || {
            let planned = plan_batch(&journal, &dirs, batch, run, replace)?;
            Ok((planned, dirs))
        })
        .await?;
        dirs = back;
        control.emit(Event::RowsPlanned {
            rows: planned.summary.source_rows,
            keys: planned.summary.keys_read,
        });
        let defect = planned.defect.take();
        permit.send(planned);
        if let Some(defect) = defect {
            return Err(defect);
        }
    }
}

impl<S: Source> Engine<S> {
    /// Reads the source (from the cursor, or from the start with `rescan`),
    /// plans and records every batch, and applies it if `apply`.
    pub(crate) async fn source_pass<K: Sink>(
        &self,
        sink: &mut K,
        run: RunId,
        rescan: bool,
        apply: bool,
        summary: &mut Summary,
        attempted: &mut Attempted,
    ) -> Result<()> {
        let phase = Phase::SourcePass { applying: apply };
        let dirs = self.source.load_directories().await?;
        let total = self.source.estimate_rows().await?;
        let mut open = Batch::for_run(run);
        open.pass(PassState::Reading);
        commit(&self.journal, open).await?;
        self.control.emit(Event::PhaseStarted { phase, total });

        let token = self.control.pass_token();
        let stage = Stage {
            source: self.source.clone(),
            journal: self.journal.clone(),
            control: self.control.clone(),
            token: token.clone(),
            replace: self.settings.on_conflict == OnConflict::Replace,
        };
        let after = if rescan { None } else { self.journal.cursor() };
        let (read_tx, read_rx) = mpsc::channel::<SourceBatch>(1);
        let (plan_tx, mut plan_rx) = mpsc::channel::<Planned>(1);
        let reading = tokio::spawn(read(stage.clone(), self.settings.range, after, read_tx));
        // A planner that fails ends the reader too (it may be paused or in a
        // throttle sleep).
        let planner_token = token.clone();
        let planning = tokio::spawn(async move {
            let planned = plan_stage(stage, dirs, run, read_rx, plan_tx).await;
            if planned.is_err() {
                planner_token.cancel();
            }
            planned
        });

        let mut result = Ok(());
        let mut batch_no = 0u64;
        let on_conflict = self.settings.on_conflict;
        // A second connection, when asked for and the sink has one: a
        // planned batch goes to whichever applier is free, so the target is
        // kept busy while the other batch waits on a round trip or a commit.
        let mut second = if apply && self.settings.appliers > 1 {
            sink.fork()
        } else {
            None
        };
        let mut idle: Vec<&mut K> = Vec::with_capacity(2);
        idle.push(sink);
        idle.extend(second.as_mut());
        let mut flying = FuturesUnordered::new();
        let mut finished = std::collections::VecDeque::new();
        let mut planning_open = true;
        // Every planned batch is counted, also after a stop: its keys are in
        // the journal. Only batches before the stop are applied. Outcomes are
        // recorded as batches finish (their keys are disjoint: a pass plans
        // each key once), while the other batch in flight keeps going.
        while planning_open || !flying.is_empty() || !finished.is_empty() {
            if let Some((applier, no, applied)) = finished.pop_front() {
                let applier: &mut K = applier;
                let recorded = match applied {
                    Ok(Some(applied)) => {
                        let recording =
                            self.record_applied(&*applier, run, no, applied, summary, attempted);
                        tokio::pin!(recording);
                        loop {
                            tokio::select! {
                                recorded = &mut recording => break recorded,
                                Some(done) = flying.next(), if !flying.is_empty() => {
                                    finished.push_back(done);
                                }
                            }
                        }
                    }
                    Ok(None) => Ok(()),
                    Err(error) => Err(error),
                };
                idle.push(applier);
                if let Err(error) = recorded {
                    token.cancel();
                    if result.is_ok() {
                        result = Err(error);
                    }
                }
                continue;
            }
            tokio::select! {
                Some(done) = flying.next(), if !flying.is_empty() => finished.push_back(done),
                planned = plan_rx.recv(), if planning_open && !idle.is_empty() => {
                    let Some(planned) = planned else {
                        planning_open = false;
                        continue;
                    };
                    summary.merge(planned.summary);
                    if !apply || result.is_err() || self.control.is_stopping() {
                        continue;
                    }
                    let Some(applier) = idle.pop() else { continue };
                    batch_no += 1;
                    let no = batch_no;
                    let events = planned.events;
                    flying.push(async move {
                        let applied = self.apply_only(&mut *applier, run, &events, on_conflict).await;
                        (applier, no, applied)
                    });
                }
            }
        }
        drop(flying);
        drop(idle);
        let exhausted = join(reading).await;
        let planned = join(planning).await;
        result?;
        let exhausted = exhausted?;
        planned?;
        if exhausted && !self.control.is_stopping() {
            let mut done = Batch::for_run(run);
            done.pass(PassState::Exhausted);
            commit(&self.journal, done).await?;
        }
        self.control.emit(Event::PhaseFinished { phase });
        Ok(())
    }

    /// Applies the keys the journal holds in `states`, in key order.
    pub(crate) async fn journal_pass<K: Sink>(
        &self,
        sink: &mut K,
        run: RunId,
        states: &[State],
        summary: &mut Summary,
        attempted: &mut Attempted,
    ) -> Result<()> {
        let phase = Phase::Journal;
        let total: u64 = states.iter().map(|s| self.journal.count(*s)).sum();
        self.control.emit(Event::PhaseStarted {
            phase,
            total: Some(total),
        });
        let token = self.control.pass_token();
        let range = self.settings.range;
        let mut batch_no = 0u64;
        // Reasons of skipped keys, read a window of keys at a time (one
        // status page decoded per 64 keys, not one per key).
        let mut reasons: HashMap<i64, Option<Reason>> = HashMap::new();
        for state in states {
            let mut from = range.start;
            loop {
                if !self.control.wait_while_paused(&token).await {
                    break;
                }
                let limit = self.control.limits().batch_size.max(1);
                let mut keys = Vec::with_capacity(limit);
                for key in self.journal.keys_in_state(*state, from) {
                    let key = key?;
                    if !range.contains(key) {
                        break;
                    }
                    if attempted.failed.contains(&key) {
                        continue;
                    }
                    // Of the skipped keys, only a live writer's conflicts
                    // are applied again (with a replace).
                    if *state == State::Skipped
                        && self.skip_reason(&mut reasons, key)? != Some(Reason::ExistingInTarget)
                    {
                        continue;
                    }
                    keys.push(key);
                    if keys.len() == limit {
                        break;
                    }
                }
                let Some(&last) = keys.last() else { break };
                let mut found = self.journal.events(&keys)?;
                let events: Vec<_> = keys.iter().filter_map(|key| found.remove(key)).collect();
                batch_no += 1;
                self.apply_batch(
                    sink,
                    run,
                    batch_no,
                    &events,
                    self.settings.on_conflict,
                    summary,
                    attempted,
                )
                .await?;
                match last.checked_add(1) {
                    Some(next) => from = Some(next),
                    None => break,
                }
            }
        }
        self.control.emit(Event::PhaseFinished { phase });
        Ok(())
    }

    /// The skip reason of `key`, from `reasons` or, when absent, read for
    /// the next 256 keys at once.
    fn skip_reason(
        &self,
        reasons: &mut HashMap<i64, Option<Reason>>,
        key: i64,
    ) -> Result<Option<Reason>> {
        if let Some(reason) = reasons.get(&key) {
            return Ok(*reason);
        }
        reasons.clear();
        let window: Vec<i64> = (0..256).map_while(|i| key.checked_add(i)).collect();
        let statuses = self.journal.statuses(&window)?;
        for k in window {
            reasons.insert(k, statuses.get(&k).and_then(|s| s.reason));
        }
        Ok(reasons.get(&key).copied().flatten())
    }

    /// Re-plans every drifted key from the source as it is now and replaces
    /// its rows (they are this journal's). The key's history keeps both
    /// events.
    pub(crate) async fn drifted_pass<K: Sink>(
        &self,
        sink: &mut K,
        run: RunId,
        summary: &mut Summary,
        attempted: &mut Attempted,
    ) -> Result<()> {
        let phase = Phase::Drifted;
        let range = self.settings.range;
        let drifted: Vec<i64> = self
            .journal
            .keys_in_state(State::Drifted, range.start)
            .filter(|k| k.as_ref().map_or(true, |k| range.contains(*k)))
            .collect::<std::result::Result<_, _>>()?;
        self.control.emit(Event::PhaseStarted {
            phase,
            total: u64::try_from(drifted.len()).ok(),
        });
        let token = self.control.pass_token();
        let mut dirs = self.source.load_directories().await?;
        let mut batch_no = 0u64;
        let mut rest = drifted.as_slice();
        while !rest.is_empty() {
            if !self.control.wait_while_paused(&token).await {
                break;
            }
            let (keys, tail) = rest.split_at(self.control.limits().batch_size.clamp(1, rest.len()));
            rest = tail;
            let batch = self.source.groups_of(keys).await?;
            self.source.load_collector_results(&mut dirs, keys).await?;
            let mut records = Batch::for_run(run);
            let mut events = Vec::new();
            for (key, rows) in &batch.groups {
                let event = plan(*key, rows, &dirs)?;
                record_plan(event, &mut records, &mut events, summary);
            }
            let planned = if sink.writes() {
                commit_planned(&self.journal, records).await?
            } else {
                records.into_planned()
            };
            let events = resolve(events, planned)?;
            batch_no += 1;
            self.apply_batch(
                sink,
                run,
                batch_no,
                &events,
                OnConflict::Replace,
                summary,
                attempted,
            )
            .await?;
        }
        self.control.emit(Event::PhaseFinished { phase });
        Ok(())
    }

    /// Applies one batch (isolating refused keys) and records the outcomes.
    /// Outcomes of the parts committed before an error are recorded too.
    #[allow(clippy::too_many_arguments)]
    async fn apply_batch<K: Sink>(
        &self,
        sink: &mut K,
        run: RunId,
        batch_no: u64,
        events: &[MigrationEvent],
        on_conflict: OnConflict,
        summary: &mut Summary,
        attempted: &mut Attempted,
    ) -> Result<()> {
        match self.apply_only(sink, run, events, on_conflict).await? {
            Some(applied) => {
                self.record_applied(&*sink, run, batch_no, applied, summary, attempted)
                    .await
            }
            None => Ok(()),
        }
    }

    /// The sink's part of a batch: its migrating events applied (refused
    /// keys isolated). `None` if nothing in it migrates.
    async fn apply_only<K: Sink>(
        &self,
        sink: &mut K,
        run: RunId,
        events: &[MigrationEvent],
        on_conflict: OnConflict,
    ) -> Result<Option<Applied>> {
        let migrating: Vec<&MigrationEvent> = events
            .iter()
            .filter(|e| e.target_rows().is_some())
            .collect();
        if migrating.is_empty() {
            return Ok(None);
        }
        fail::fail_point!("engine::before_apply", |_| Err(Error::FailPoint(
            "engine::before_apply"
        )));
        let started = Instant::now();
        let (outcome, stopped) = self.isolate(sink, run, &migrating, on_conflict).await;
        let duration = started.elapsed();
        fail::fail_point!("engine::after_apply", |_| Err(Error::FailPoint(
            "engine::after_apply"
        )));
        Ok(Some(Applied {
            hashes: migrating
                .iter()
                .map(|e| (e.collector_result_id, e.content_hash))
                .collect(),
            outcome,
            stopped,
            duration,
        }))
    }

    /// Counts an applied batch and records every key's outcome in the
    /// journal (a dry run's sink records nothing).
    async fn record_applied<K: Sink>(
        &self,
        sink: &K,
        run: RunId,
        batch_no: u64,
        applied: Applied,
        summary: &mut Summary,
        attempted: &mut Attempted,
    ) -> Result<()> {
        let Applied {
            hashes,
            outcome,
            stopped,
            duration,
        } = applied;
        summary.tables.add(&outcome.tables);
        for (cause, n) in &outcome.retries {
            *summary.retries.entry(cause.clone()).or_insert(0) += n;
        }
        if !outcome.keys.is_empty() {
            summary.batches += 1;
        }
        let mut records = Batch::for_run(run);
        let (mut applied, mut failed) = (0u64, 0u64);
        for (key, outcome) in &outcome.keys {
            let result = match outcome {
                KeyOutcome::Applied | KeyOutcome::Replaced { .. } => KeyResult::Applied,
                KeyOutcome::AlreadyApplied => KeyResult::AlreadyApplied,
                KeyOutcome::ExistingInTarget => KeyResult::Skipped(Reason::ExistingInTarget),
                KeyOutcome::Failed(error) => {
                    attempted.failed.insert(*key);
                    if summary.failures.len() < MAX_FAILURES {
                        summary.failures.push((*key, error.clone()));
                    }
                    KeyResult::Failed
                }
            };
            summary.count(result);
            match result {
                KeyResult::Applied | KeyResult::AlreadyApplied => applied += 1,
                KeyResult::Failed => failed += 1,
                _ => {}
            }
            if !sink.writes() {
                continue;
            }
            if let KeyOutcome::Replaced { previous } = outcome {
                records.record(
                    *key,
                    Record::Replaced {
                        previous_hash: *previous,
                    },
                );
            }
            let record = match outcome {
                KeyOutcome::Applied | KeyOutcome::AlreadyApplied | KeyOutcome::Replaced { .. } => {
                    Record::Applied {
                        run,
                        batch: batch_no,
                        content_hash: hashes[key],
                    }
                }
                KeyOutcome::ExistingInTarget => Record::Skipped {
                    reason: Reason::ExistingInTarget,
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
        if sink.writes() && !records.is_empty() {
            commit(&self.journal, records).await?;
        }
        self.control.emit(Event::BatchApplied {
            keys: u64::try_from(outcome.keys.len()).unwrap_or(u64::MAX),
            applied,
            failed,
            duration,
            retries: outcome.retries.values().sum(),
        });
        match stopped {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Applies `events`; a refused part is split in halves until the refused
    /// keys are alone, and only those fail. Returns what committed, and the
    /// error that stopped it (none after an abort: that is a stop).
    async fn isolate<K: Sink>(
        &self,
        sink: &mut K,
        run: RunId,
        events: &[&MigrationEvent],
        on_conflict: OnConflict,
    ) -> (ApplyOutcome, Option<Error>) {
        let mut outcome = ApplyOutcome::default();
        let mut work: Vec<&[&MigrationEvent]> = vec![events];
        while let Some(part) = work.pop() {
            if part.is_empty() {
                continue;
            }
            let applied = tokio::select! {
                () = self.control.aborted() => return (outcome, None),
                applied = sink.apply(run, part, on_conflict) => applied,
            };
            match applied {
                Ok(done) => outcome.extend(done),
                Err(ApplyError::Refused(error)) if part.len() == 1 => outcome
                    .keys
                    .push((part[0].collector_result_id, KeyOutcome::Failed(error))),
                Err(ApplyError::Refused(_)) => {
                    let (left, right) = part.split_at(part.len() / 2);
                    work.push(right);
                    work.push(left);
                }
                Err(ApplyError::Stop(error)) => return (outcome, Some(error)),
            }
        }
        (outcome, None)
    }
}

async fn join<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    task.await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

#[cfg(test)]
mod tests {
    use backfill_core::testing::realistic_group;
    use backfill_core::{plan, MigrationEvent, Outcome, SkipReason};

    use super::{resolve, ToApply};
    use crate::Error;

    fn migration(key: i64) -> MigrationEvent {
        let group = realistic_group(key);
        plan(key, &group.rows, &group.directories).unwrap()
    }

    fn skip(key: i64) -> MigrationEvent {
        MigrationEvent {
            outcome: Outcome::Skip(SkipReason::NoBrandRow),
            ..migration(key)
        }
    }

    fn keys(events: &[MigrationEvent]) -> Vec<i64> {
        events.iter().map(|e| e.collector_result_id).collect()
    }

    #[test]
    fn planned_migrations_fill_their_slots_in_key_order() {
        // Keys 1 and 4 planned now, 2 unchanged (still pending), 3 skipped.
        let slots: Vec<ToApply> = vec![None, Some(migration(2)), None];
        let planned = vec![migration(1), skip(3), migration(4)];
        let events = resolve(slots, planned).unwrap();
        assert_eq!(keys(&events), [1, 2, 4]);
        assert_eq!(events[0], migration(1));
    }

    #[test]
    fn a_count_that_does_not_match_is_an_error_not_a_lost_key() {
        let slots: Vec<ToApply> = vec![None, None];
        let error = resolve(slots, vec![migration(1)]).unwrap_err();
        assert!(matches!(
            error,
            Error::PlannedMismatch {
                expected: 2,
                returned: 1
            }
        ));
        let error = resolve(vec![None], vec![migration(1), migration(2)]).unwrap_err();
        assert!(matches!(error, Error::PlannedMismatch { .. }));
    }
}
