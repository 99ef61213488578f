//! The engine: settings resolved once, a mode, and a report that always
//! comes back.
//!
//! Why a report instead of `Result<Summary>`: a run that stops on an error
//! has usually done work (keys planned, batches committed); "nothing written"
//! must never be claimed after rows were committed. So every run returns its
//! partial summary with the error that ended it, and the journal records how
//! each run ended.

use std::sync::Arc;
use std::time::Instant;

use backfill_journal::{Journal, PassState, RunEnd, RunId, SourceFingerprint};

use crate::control::RunControl;
use crate::sink::{OnConflict, Sink};
use crate::source::{KeyRange, Source};
use crate::summary::Summary;
use crate::{Error, Result};

/// What a run does. Each mode is a sequence of the pipeline's steps
/// (`pipeline.rs`); a new mode (follow, initial load, shards) is a new
/// sequence, a new feed or a new sink, not a new loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Read the source (past the cursor, or all of it with `rescan`) and
    /// record every key's event; apply nothing.
    Plan {
        /// Re-read from the start (detects drift).
        rescan: bool,
    },
    /// Read, plan, record and apply, pipelined; then the keys earlier runs
    /// left pending.
    Backfill {
        /// Re-read from the start (detects drift).
        rescan: bool,
    },
    /// Apply what the journal holds: first finish a pass over the source
    /// that did not end (kill, crash, stop), then the pending keys (and the
    /// failed ones), then, if asked, re-plan and rewrite drifted keys.
    Replay {
        /// Also retry keys that failed before.
        retry_failed: bool,
        /// Also re-plan drifted keys and replace their rows.
        reapply_drifted: bool,
    },
}

/// Settings that do not change during a run (limits that may are in the
/// [`RunControl`]).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// The keys this engine works on (one shard's, or all).
    pub range: KeyRange,
    /// Accept an empty source instead of failing.
    pub allow_empty: bool,
    /// What to do with facts this journal did not write.
    pub on_conflict: OnConflict,
    /// The command recorded with the run (`run`, `replay`, …).
    pub command: String,
    /// The options recorded with the run.
    pub options: Vec<(String, String)>,
    /// The run's id, when chosen beforehand (to name connections after it).
    pub run_id: Option<RunId>,
    /// The source to bind the journal to, once the run is about to start:
    /// a run refused before it starts (an empty source) binds nothing.
    pub bind: Option<SourceFingerprint>,
    /// The target to bind the journal to when the sink writes
    /// (`postgres://host:port/database`).
    pub bind_target: Option<String>,
    /// Batches applied at once in a pass over the source: 1, or 2 when the
    /// sink can [`fork`](Sink::fork) (two connections keep a target busy
    /// while the other waits on a round trip or a commit).
    pub appliers: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            range: KeyRange::ALL,
            allow_empty: false,
            on_conflict: OnConflict::Skip,
            command: "run".into(),
            options: Vec::new(),
            run_id: None,
            bind: None,
            bind_target: None,
            appliers: 1,
        }
    }
}

/// How a run ended: what it did, and the error that stopped it, if any.
#[derive(Debug)]
pub struct RunReport {
    /// The run's id in the journal (`None` if it failed before it started).
    pub run: Option<RunId>,
    /// What it did, also when it stopped early.
    pub summary: Summary,
    /// What stopped it.
    pub error: Option<Error>,
}

impl RunReport {
    /// As recorded in the journal.
    pub fn end(&self) -> RunEnd {
        match &self.error {
            Some(error) => RunEnd::Stopped {
                kind: error.kind(),
                error: error.to_string(),
            },
            None if self.summary.interrupted => RunEnd::Interrupted,
            None => RunEnd::Completed,
        }
    }

    /// The summary, or the error if there was one.
    pub fn into_result(self) -> Result<Summary> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.summary),
        }
    }
}

/// Drives runs of one journal over one source.
pub struct Engine<S: Source> {
    pub(crate) source: Arc<S>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) settings: EngineSettings,
    pub(crate) control: RunControl,
}

impl<S: Source> Engine<S> {
    /// An engine; `control` carries the limits, the stop and the observers.
    pub fn new(
        source: S,
        journal: Arc<Journal>,
        settings: EngineSettings,
        control: RunControl,
    ) -> Self {
        Self {
            source: Arc::new(source),
            journal,
            settings,
            control,
        }
    }

    /// The run control.
    pub fn control(&self) -> &RunControl {
        &self.control
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Runs `mode` into `sink` (a `NullSink` for a dry run or a plan). The
    /// run is recorded in the journal with how it ended; the report carries
    /// the partial summary with any error.
    pub async fn execute<K: Sink>(&self, mode: Mode, sink: &mut K) -> RunReport {
        let started = Instant::now();
        let mut summary = Summary {
            dry_run: !sink.writes() && !matches!(mode, Mode::Plan { .. }),
            ..Summary::default()
        };
        let preflight = match self.preflight(mode).await {
            Ok(()) => self.bind(sink.writes()),
            Err(error) => Err(error),
        };
        if let Err(error) = preflight {
            return RunReport {
                run: None,
                summary,
                error: Some(error),
            };
        }
        let run = match self.journal.start_run_as(
            self.settings.run_id.unwrap_or_else(RunId::new_random),
            &self.settings.command,
            self.settings.options.clone(),
        ) {
            Ok(run) => run,
            Err(error) => {
                return RunReport {
                    run: None,
                    summary,
                    error: Some(error.into()),
                }
            }
        };
        // An abort ends the run wherever it is: a query, a commit in
        // flight (a committed batch not yet recorded is reconciled from the
        // ledger by the next run), a lock being taken.
        let mut error = tokio::select! {
            begun = sink.begin() => begun.err(),
            () = self.control.aborted() => None,
        };
        if error.is_none() && !self.control.is_aborted() {
            error = tokio::select! {
                done = self.steps(mode, sink, run, &mut summary) => done.err(),
                () = self.control.aborted() => None,
            };
        }
        if let Err(finish) = sink.finish().await {
            error.get_or_insert(finish);
        }
        summary.interrupted |= self.control.is_stopping() || error.is_some();
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        let mut report = RunReport {
            run: Some(run),
            summary,
            error,
        };
        if let Err(end) = self
            .journal
            .end_run(run, report.end(), report.summary.run_counts())
        {
            report.error.get_or_insert(end.into());
        }
        report
    }

    /// Binds the journal to its source, and to its target when the sink
    /// writes: a refused run binds nothing.
    fn bind(&self, writes: bool) -> Result<()> {
        if let Some(source) = &self.settings.bind {
            self.journal.bind_source(source)?;
        }
        match &self.settings.bind_target {
            Some(target) if writes => self.journal.bind_target(target)?,
            Some(target) => self.journal.check_target(target)?,
            None => {}
        }
        Ok(())
    }

    /// The states a journal pass applies: `states`, and with
    /// `OnConflict::Replace` the keys skipped as `existing_in_target` (a
    /// replace asked for after the fact reaches them).
    fn journal_states(&self, states: &[backfill_journal::State]) -> Vec<backfill_journal::State> {
        let mut states = states.to_vec();
        if self.settings.on_conflict == OnConflict::Replace {
            states.push(backfill_journal::State::Skipped);
        }
        states
    }

    /// Checks that need no run: an empty source is refused unless allowed.
    async fn preflight(&self, mode: Mode) -> Result<()> {
        if matches!(mode, Mode::Plan { .. } | Mode::Backfill { .. })
            && !self.settings.allow_empty
            && self.source.is_empty().await?
        {
            return Err(Error::EmptySource {
                source_name: self.source.describe(),
            });
        }
        Ok(())
    }

    async fn steps<K: Sink>(
        &self,
        mode: Mode,
        sink: &mut K,
        run: RunId,
        summary: &mut Summary,
    ) -> Result<()> {
        let mut attempted = crate::pipeline::Attempted::default();
        match mode {
            Mode::Plan { rescan } => {
                self.source_pass(sink, run, rescan, false, summary, &mut attempted)
                    .await
            }
            Mode::Backfill { rescan } => {
                self.source_pass(sink, run, rescan, true, summary, &mut attempted)
                    .await?;
                // Keys planned by an earlier `plan` or interrupted run. A dry
                // run leaves everything pending: it would count its own pass
                // twice.
                if sink.writes() && !self.control.is_stopping() {
                    let states = self.journal_states(&[backfill_journal::State::Pending]);
                    self.journal_pass(sink, run, &states, summary, &mut attempted)
                        .await?;
                }
                Ok(())
            }
            Mode::Replay {
                retry_failed,
                reapply_drifted,
            } => {
                if sink.writes() && self.journal.pass() == Some(PassState::Reading) {
                    self.source_pass(sink, run, false, true, summary, &mut attempted)
                        .await?;
                }
                let mut states = vec![backfill_journal::State::Pending];
                if retry_failed {
                    states.push(backfill_journal::State::Failed);
                }
                let states = self.journal_states(&states);
                if !self.control.is_stopping() {
                    self.journal_pass(sink, run, &states, summary, &mut attempted)
                        .await?;
                }
                if reapply_drifted && !self.control.is_stopping() {
                    self.drifted_pass(sink, run, summary, &mut attempted)
                        .await?;
                }
                Ok(())
            }
        }
    }
}
