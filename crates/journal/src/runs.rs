//! Runs: which command changed the journal, when, with which options, and
//! what it counted.
//!
//! Why runs are log entries: a run's start and end are part of the history an
//! auditor replays, so they are chained like any record, and every record of a
//! run names it. Why they are also stored under `R`: the operator's "which
//! runs were there?" must not replay the log, so the latest state of each run
//! is written, in the same commit, beside the entry that changed it.

use crate::ids::RunId;
use crate::ErrorKind;
use backfill_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::journal::{decode_as, Journal};
use crate::layout::{run_key, RUN};
use crate::log::{now, Batch, Body};
use crate::{Error, Result};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// It did all it was asked.
    Completed,
    /// A stop (signal, control) ended it after the batch in flight:
    /// resumable.
    Interrupted,
    /// An error ended it.
    Stopped {
        /// What kind of error.
        kind: ErrorKind,
        /// The error, as printed.
        error: String,
    },
}

/// One invocation of a command that changed the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Run id (also in `backfill.ledger`).
    pub id: RunId,
    /// The command (`plan`, `replay`, `run`, `rollback`, …).
    pub command: String,
    /// The options that matter, as name/value pairs.
    pub options: Vec<(String, String)>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended, if it did.
    pub ended_at: Option<Timestamp>,
    /// How it ended, once it did.
    pub end: Option<RunEnd>,
    /// What it counted (keys by result), by name.
    pub counts: Vec<(String, u64)>,
}

impl Journal {
    /// Records the start of a run and returns its id.
    pub fn start_run(&self, command: &str, options: Vec<(String, String)>) -> Result<RunId> {
        self.start_run_as(RunId::new_random(), command, options)
    }

    /// Records the start of a run under an id chosen beforehand (the binary
    /// names its database connections after the run before it starts).
    pub fn start_run_as(
        &self,
        id: RunId,
        command: &str,
        options: Vec<(String, String)>,
    ) -> Result<RunId> {
        let run = Run {
            id,
            command: command.to_owned(),
            options,
            started_at: now(),
            ended_at: None,
            end: None,
            counts: Vec::new(),
        };
        let id = run.id;
        let mut batch = Batch::for_run(id);
        batch.items.push(Body::RunStarted(run));
        self.commit(batch)?;
        Ok(id)
    }

    /// Records the end of a run: how it ended and what it counted.
    pub fn end_run(&self, id: RunId, end: RunEnd, counts: Vec<(String, u64)>) -> Result<()> {
        let mut run = self.run(id)?.ok_or(Error::UnknownRun { run: id })?;
        run.ended_at = Some(now());
        run.end = Some(end);
        run.counts = counts;
        let mut batch = Batch::for_run(id);
        batch.items.push(Body::RunEnded { run });
        self.commit(batch)?;
        Ok(())
    }

    /// A run by id.
    pub fn run(&self, id: RunId) -> Result<Option<Run>> {
        self.db
            .get(run_key(id))?
            .map(|bytes| decode_as(|| format!("run {id}"), &bytes))
            .transpose()
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for item in self.db.scan_prefix([RUN]) {
            let (_, bytes) = item?;
            runs.push(decode_as::<Run>(|| "run".into(), &bytes)?);
        }
        runs.sort_by_key(|r| (r.started_at, r.id));
        Ok(runs)
    }
}
