//! An in-memory source and target, for tests of the pipeline (this crate's,
//! and users' own) without a database.
//!
//! Why they keep the real semantics rather than recording calls: the engine's
//! promises (exactly once through the ledger, failure isolation, resume) are
//! about what ends up in the target, so the memory target has a ledger, can
//! hold a live writer's facts, and can refuse keys or stop like a database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use backfill_core::{Digest, Directories, MigrationEvent, SourceRow, TargetRows, Timestamp};
use backfill_journal::{JournalId, RunId};

use crate::sink::{
    classify, Action, ApplyError, ApplyOutcome, Existing, KeyOutcome, OnConflict, Sink, TableCounts,
};
use crate::source::{KeyRange, Source, SourceBatch};
use crate::{AdapterError, Error, ErrorKind, Result};

#[derive(Default)]
struct SourceData {
    groups: BTreeMap<i64, Vec<SourceRow>>,
    directories: Directories,
    collector_results: BTreeMap<i64, Timestamp>,
    batches_read: usize,
}

/// Source rows and directories in memory. Clones share the data, so a test
/// can change the source while a run reads it.
#[derive(Clone, Default)]
pub struct MemorySource {
    data: Arc<Mutex<SourceData>>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> MutexGuard<'_, SourceData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces a key's rows.
    pub fn set_group(&self, key: i64, rows: Vec<SourceRow>) {
        self.data().groups.insert(key, rows);
    }

    /// Removes a key's rows.
    pub fn remove_group(&self, key: i64) {
        self.data().groups.remove(&key);
    }

    /// A `brand_competitors` row.
    pub fn add_competitor(&self, brand_id: uuid::Uuid, id: uuid::Uuid, name: &str) {
        self.data().directories.add_competitor(brand_id, id, name);
    }

    /// A `brands` row.
    pub fn add_brand(&self, id: uuid::Uuid, customer_id: Option<uuid::Uuid>) {
        self.data().directories.add_brand(id, customer_id);
    }

    /// A `collector_results` row.
    pub fn add_collector_result(&self, id: i64, created_at: Timestamp) {
        self.data().collector_results.insert(id, created_at);
    }

    /// Source rows in all.
    pub fn rows(&self) -> usize {
        self.data().groups.values().map(Vec::len).sum()
    }

    /// Batches `next_batch` has returned so far.
    pub fn batches_read(&self) -> usize {
        self.data().batches_read
    }
}

impl Source for MemorySource {
    fn describe(&self) -> String {
        "memory source".into()
    }

    async fn is_empty(&self) -> Result<bool> {
        Ok(self.data().groups.is_empty())
    }

    async fn estimate_rows(&self) -> Result<Option<u64>> {
        Ok(u64::try_from(self.rows()).ok())
    }

    async fn next_batch(
        &self,
        range: KeyRange,
        after: Option<i64>,
        max_keys: usize,
    ) -> Result<Option<SourceBatch>> {
        let mut data = self.data();
        let mut batch = SourceBatch::default();
        let from = match (after, range.start) {
            (Some(a), Some(s)) => a.checked_add(1).map(|a| a.max(s)),
            (Some(a), None) => a.checked_add(1),
            (None, s) => Some(s.unwrap_or(i64::MIN)),
        };
        let Some(from) = from else { return Ok(None) };
        for (key, rows) in data.groups.range(from..).take(max_keys.max(1)) {
            if !range.contains(*key) {
                break;
            }
            let mut rows = rows.clone();
            rows.sort_by_key(|r| r.id);
            batch.rows += rows.len();
            batch.groups.push((*key, rows));
        }
        if batch.groups.is_empty() {
            return Ok(None);
        }
        data.batches_read += 1;
        Ok(Some(batch))
    }

    async fn groups_of(&self, keys: &[i64]) -> Result<SourceBatch> {
        let data = self.data();
        let keys: BTreeSet<i64> = keys.iter().copied().collect();
        let mut batch = SourceBatch::default();
        for key in keys {
            if let Some(rows) = data.groups.get(&key) {
                let mut rows = rows.clone();
                rows.sort_by_key(|r| r.id);
                batch.rows += rows.len();
                batch.groups.push((key, rows));
            }
        }
        Ok(batch)
    }

    async fn load_directories(&self) -> Result<Directories> {
        let mut dirs = self.data().directories.clone();
        dirs.clear_collector_results();
        Ok(dirs)
    }

    async fn load_collector_results(&self, dirs: &mut Directories, keys: &[i64]) -> Result<()> {
        let data = self.data();
        dirs.clear_collector_results();
        for key in keys {
            if let Some(at) = data.collector_results.get(key) {
                dirs.add_collector_result(*key, *at);
            }
        }
        Ok(())
    }
}

/// A fact in the memory target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryFact {
    /// The rows (None for a live writer's fact whose content the test does
    /// not care about).
    pub rows: Option<TargetRows>,
    /// Its ledger row: (journal, content hash, run).
    pub ledger: Option<(JournalId, Digest, RunId)>,
}

#[derive(Default)]
struct TargetData {
    facts: BTreeMap<i64, MemoryFact>,
    refuse: BTreeSet<i64>,
    stop_after: Option<usize>,
    batches: usize,
    applies: usize,
    delay: Option<std::time::Duration>,
    in_flight: usize,
    most_in_flight: usize,
}

/// A target in memory with a ledger: the exactly-once and conflict rules of
/// the Postgres sink, without Postgres. Clones share the target, so a test
/// can inspect it after handing a clone to the engine.
#[derive(Clone)]
pub struct MemorySink {
    journal: JournalId,
    data: Arc<Mutex<TargetData>>,
}

/// The error a [`MemorySink`] stops with.
#[derive(Debug, thiserror::Error)]
#[error("memory target stopped after {batches} batches, as the test asked")]
pub struct MemoryStop {
    /// Batches committed before.
    pub batches: usize,
}

impl MemorySink {
    /// A memory target written for `journal`.
    pub fn new(journal: JournalId) -> Self {
        Self {
            journal,
            data: Arc::default(),
        }
    }

    fn data(&self) -> MutexGuard<'_, TargetData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuse any batch holding `key` (like a foreign key would).
    pub fn refuse(&self, key: i64) {
        self.data().refuse.insert(key);
    }

    /// Stop the run (a non-key error) once `batches` batches committed.
    pub fn stop_after(&self, batches: usize) {
        self.data().stop_after = Some(batches);
    }

    /// A fact of the live writer (no ledger row).
    pub fn insert_foreign(&self, key: i64) {
        self.data().facts.insert(
            key,
            MemoryFact {
                rows: None,
                ledger: None,
            },
        );
    }

    /// The target's facts.
    pub fn facts(&self) -> BTreeMap<i64, MemoryFact> {
        self.data().facts.clone()
    }

    /// Committed batches.
    pub fn batches(&self) -> usize {
        self.data().batches
    }

    /// Calls to `apply` (committed, refused or stopped).
    pub fn applies(&self) -> usize {
        self.data().applies
    }

    /// Every transaction takes `delay` before it applies, so that a test
    /// sees batches in flight together (two appliers).
    pub fn slow(&self, delay: std::time::Duration) {
        self.data().delay = Some(delay);
    }

    /// The most transactions open at once so far (across forks).
    pub fn most_in_flight(&self) -> usize {
        self.data().most_in_flight
    }
}

impl MemorySink {
    /// One transaction, at once.
    fn apply_now(
        &self,
        run: RunId,
        events: &[&MigrationEvent],
        on_conflict: OnConflict,
    ) -> Result<ApplyOutcome, ApplyError> {
        let journal = self.journal;
        let mut data = self.data();
        data.applies += 1;
        if data.stop_after.is_some_and(|n| data.batches >= n) {
            let stop = MemoryStop {
                batches: data.batches,
            };
            return Err(ApplyError::Stop(Error::Adapter(AdapterError::new(
                ErrorKind::Resumable,
                stop,
            ))));
        }
        if let Some(key) = events
            .iter()
            .map(|e| e.collector_result_id)
            .find(|k| data.refuse.contains(k))
        {
            return Err(ApplyError::Refused(format!(
                "collector_result_id {key} refused by the memory target"
            )));
        }
        let mut outcome = ApplyOutcome::default();
        for event in events {
            let Some(rows) = event.target_rows() else {
                continue;
            };
            let key = event.collector_result_id;
            let existing = data.facts.get(&key).map(|f| Existing {
                has_fact: true,
                ledger: f.ledger.map(|(j, h, _)| (j, *h.as_bytes())),
            });
            match classify(
                existing,
                journal,
                event.content_hash.as_bytes(),
                on_conflict,
            ) {
                action @ (Action::Write | Action::Replace) => {
                    let previous = data.facts.get(&key).map(|f| {
                        f.rows.as_ref().and_then(|rows| {
                            backfill_core::current_content_hash(&backfill_core::Outcome::Migrate(
                                rows.clone(),
                            ))
                            .ok()
                        })
                    });
                    data.facts.insert(
                        key,
                        MemoryFact {
                            rows: Some(rows.clone()),
                            ledger: Some((journal, event.content_hash, run)),
                        },
                    );
                    outcome.tables.add(&TableCounts::of(rows));
                    let replaced_foreign = action == Action::Replace
                        && existing.is_some_and(|e| e.ledger.is_none_or(|(j, _)| j != journal));
                    outcome.keys.push(match previous {
                        Some(previous) if replaced_foreign => {
                            (key, KeyOutcome::Replaced { previous })
                        }
                        _ => (key, KeyOutcome::Applied),
                    });
                }
                Action::AlreadyApplied => outcome.keys.push((key, KeyOutcome::AlreadyApplied)),
                Action::ExistingInTarget => {
                    outcome.keys.push((key, KeyOutcome::ExistingInTarget));
                }
            }
        }
        data.batches += 1;
        Ok(outcome)
    }
}

impl Sink for MemorySink {
    async fn apply(
        &mut self,
        run: RunId,
        events: &[&MigrationEvent],
        on_conflict: OnConflict,
    ) -> Result<ApplyOutcome, ApplyError> {
        let delay = {
            let mut data = self.data();
            data.in_flight += 1;
            data.most_in_flight = data.most_in_flight.max(data.in_flight);
            data.delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let applied = self.apply_now(run, events, on_conflict);
        self.data().in_flight -= 1;
        applied
    }

    fn writes(&self) -> bool {
        true
    }

    fn fork(&self) -> Option<Self> {
        Some(self.clone())
    }
}
