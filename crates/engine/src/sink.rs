//! Where planned events go, and the pure decision of what to do with a key
//! given what the target holds.
//!
//! Why the sink only applies one batch: splitting a refused batch until the
//! refused keys are alone, retrying, stopping, counting and journaling are the
//! pipeline's, the same for every sink; a sink knows its store and says, per
//! batch, "done (with each key's outcome)", "refused because of the rows" or
//! "stop". Hooks around the run let a sink take its lock, or (initial load)
//! defer and restore constraints.

use std::collections::BTreeMap;
use std::future::Future;

use backfill_core::{MigrationEvent, TargetRows};
use backfill_journal::{JournalId, RunId};

use crate::Error;

/// How to treat a fact already in the target without this journal's ledger
/// row and hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Leave it (it belongs to the live writer): `skipped`/`existing_in_target`.
    #[default]
    Skip,
    /// Delete it (and its children) and write ours.
    Replace,
}

impl OnConflict {
    /// The name on the command line and in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Replace => "replace",
        }
    }
}

/// What happened to one key of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Written now.
    Applied,
    /// Already in the target with this journal's ledger row and hash (a
    /// previous run committed it but the journal did not hear): nothing
    /// written.
    AlreadyApplied,
    /// Written now, after deleting a fact that was not this journal's
    /// (`OnConflict::Replace`); the hash of what was deleted.
    Replaced {
        /// The content hash of the deleted rows, if they read as a fact.
        previous: Option<backfill_core::Digest>,
    },
    /// A fact that is not ours is there; left alone.
    ExistingInTarget,
    /// The target refused this key; its error.
    Failed(String),
}

/// Rows written per target table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct TableCounts {
    pub metric_facts: u64,
    pub brand_metrics: u64,
    pub brand_sentiment: u64,
    pub competitor_metrics: u64,
    pub competitor_sentiment: u64,
}

impl TableCounts {
    /// The rows one event writes.
    pub fn of(rows: &TargetRows) -> Self {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        Self {
            metric_facts: 1,
            brand_metrics: 1,
            brand_sentiment: u64::from(rows.brand_sentiment.is_some()),
            competitor_metrics: n(rows.competitors.len()),
            competitor_sentiment: n(rows
                .competitors
                .iter()
                .filter(|c| c.sentiment.is_some())
                .count()),
        }
    }

    /// Adds another count.
    pub fn add(&mut self, other: &TableCounts) {
        self.metric_facts += other.metric_facts;
        self.brand_metrics += other.brand_metrics;
        self.brand_sentiment += other.brand_sentiment;
        self.competitor_metrics += other.competitor_metrics;
        self.competitor_sentiment += other.competitor_sentiment;
    }
}

/// The outcome of applying a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Per key.
    pub keys: Vec<(i64, KeyOutcome)>,
    /// Rows written.
    pub tables: TableCounts,
    /// Attempts the sink retried before this outcome, by cause (a lock
    /// timeout, a lost connection, …).
    pub retries: BTreeMap<String, u64>,
}

impl ApplyOutcome {
    /// Adds another batch's outcome.
    pub fn extend(&mut self, other: ApplyOutcome) {
        self.keys.extend(other.keys);
        self.tables.add(&other.tables);
        for (cause, n) in other.retries {
            *self.retries.entry(cause).or_insert(0) += n;
        }
    }
}

/// Why a sink did not apply a batch.
#[derive(Debug)]
pub enum ApplyError {
    /// The target refused the batch because of something in its rows (a
    /// foreign key, a check, a value): nothing of it was written. The
    /// pipeline splits the batch until the refused keys are alone and marks
    /// only those failed.
    Refused(String),
    /// Nothing of the batch was written and the run must stop (a permission,
    /// a missing table, a lost connection after retries, a lost lock): the
    /// error says what to fix.
    Stop(Error),
}

/// A destination for planned events.
pub trait Sink: Send {
    /// Before the first batch of a run: take locks, prepare the target.
    fn begin(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// Applies the `Migrate` events of a batch as one unit: all of it or
    /// nothing. Every key gets an outcome.
    fn apply(
        &mut self,
        run: RunId,
        events: &[&MigrationEvent],
        on_conflict: OnConflict,
    ) -> impl Future<Output = Result<ApplyOutcome, ApplyError>> + Send;

    /// After the last batch, also after an error or a stop: restore what
    /// `begin` changed, release locks.
    fn finish(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// True if outcomes are real (recorded in the journal); false for a dry
    /// run.
    fn writes(&self) -> bool;

    /// A second handle on the same target, so that two batches are applied
    /// at once (on their own connections), after [`begin`](Self::begin) and
    /// under the same lock; `None` (the default) if this sink cannot. The
    /// engine calls [`apply`](Self::apply) on both concurrently, always with
    /// disjoint keys, and [`finish`](Self::finish) only on the original.
    fn fork(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// Writes nothing; reports what a real sink would write if nothing
/// conflicted. A dry run is the real run with this sink.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    async fn apply(
        &mut self,
        _run: RunId,
        events: &[&MigrationEvent],
        _on_conflict: OnConflict,
    ) -> Result<ApplyOutcome, ApplyError> {
        let mut outcome = ApplyOutcome::default();
        for event in events {
            if let Some(rows) = event.target_rows() {
                outcome.tables.add(&TableCounts::of(rows));
                outcome
                    .keys
                    .push((event.collector_result_id, KeyOutcome::Applied));
            }
        }
        Ok(outcome)
    }

    fn writes(&self) -> bool {
        false
    }
}

/// What to do with one key, given what the target holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Insert its rows.
    Write,
    /// Delete the existing fact (and its children), then insert.
    Replace,
    /// Ours, same hash, already there.
    AlreadyApplied,
    /// Someone else's; leave it.
    ExistingInTarget,
}

/// What the target holds for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Existing {
    /// A `metric_facts` row exists.
    pub has_fact: bool,
    /// The ledger row, if any: (journal id, content hash).
    pub ledger: Option<(JournalId, [u8; 32])>,
}

/// Decides what to do with a key. A fact with our ledger row and our hash is
/// already applied (exactly once, whatever the journal says); with our ledger
/// row and another hash it is an earlier version this journal wrote (a drift
/// rewrite that was cut short) and is replaced; any other fact is the live
/// writer's (or another journal's) and is left unless `replace`.
pub fn classify(
    existing: Option<Existing>,
    journal_id: JournalId,
    content_hash: &[u8; 32],
    on_conflict: OnConflict,
) -> Action {
    match existing {
        None
        | Some(Existing {
            has_fact: false, ..
        }) => Action::Write,
        Some(Existing {
            ledger: Some((journal, hash)),
            ..
        }) if journal == journal_id && &hash == content_hash => Action::AlreadyApplied,
        Some(Existing {
            ledger: Some((journal, _)),
            ..
        }) if journal == journal_id => Action::Replace,
        Some(_) if on_conflict == OnConflict::Replace => Action::Replace,
        Some(_) => Action::ExistingInTarget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_an_earlier_version_of_ours_is_replaced_whatever_the_policy() {
        // A drift rewrite cut short (journal re-planned, target not yet
        // rewritten) was then classified as someone else's fact: the key was
        // journaled skipped and the old rows stayed.
        let earlier = Existing {
            has_fact: true,
            ledger: Some((OURS, [8; 32])),
        };
        for policy in [OnConflict::Skip, OnConflict::Replace] {
            assert_eq!(
                classify(Some(earlier), OURS, &HASH, policy),
                Action::Replace
            );
        }
    }

    const OURS: JournalId = JournalId(uuid_from(1));
    const HASH: [u8; 32] = [7; 32];

    const fn uuid_from(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[test]
    fn classify_writes_when_nothing_is_there() {
        assert_eq!(classify(None, OURS, &HASH, OnConflict::Skip), Action::Write);
        let stale_ledger = Existing {
            has_fact: false,
            ledger: Some((OURS, HASH)),
        };
        assert_eq!(
            classify(Some(stale_ledger), OURS, &HASH, OnConflict::Skip),
            Action::Write
        );
    }

    #[test]
    fn classify_our_ledger_row_with_our_hash_is_already_applied() {
        let ours = Existing {
            has_fact: true,
            ledger: Some((OURS, HASH)),
        };
        assert_eq!(
            classify(Some(ours), OURS, &HASH, OnConflict::Skip),
            Action::AlreadyApplied
        );
        assert_eq!(
            classify(Some(ours), OURS, &HASH, OnConflict::Replace),
            Action::AlreadyApplied
        );
    }

    #[test]
    fn classify_someone_elses_fact_is_left_unless_replace() {
        for other in [
            Existing {
                has_fact: true,
                ledger: None,
            },
            Existing {
                has_fact: true,
                ledger: Some((JournalId(uuid_from(2)), HASH)),
            },
        ] {
            assert_eq!(
                classify(Some(other), OURS, &HASH, OnConflict::Skip),
                Action::ExistingInTarget
            );
            assert_eq!(
                classify(Some(other), OURS, &HASH, OnConflict::Replace),
                Action::Replace
            );
        }
    }
}
