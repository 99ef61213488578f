//! What a run did, counted by key.
//!
//! Why typed outcomes: the exit code, the next step printed, the run record
//! in the journal and `--json` all read these counts; matching on
//! `"rejected"` prefixes of strings is how a renamed reason silently turns a
//! failure green. [`KeyResult`] is an enum end to end and only becomes text
//! at the edge (JSON keys, human output) through one function.

use std::collections::BTreeMap;
use std::fmt;

use backfill_core::Note;
use backfill_journal::Reason;
use serde::{Serialize, Serializer};

use crate::sink::TableCounts;

/// How one key ended in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyResult {
    /// Written (or, in a dry run, would be).
    Applied,
    /// Found in the target with this journal's ledger row: nothing written.
    AlreadyApplied,
    /// Not written, for a reason (no brand row, existing in target).
    Skipped(Reason),
    /// Cannot be written as it is (the mapping rules refuse it).
    Rejected(Reason),
    /// The target refused it.
    Failed,
}

impl KeyResult {
    /// True for results that leave work to do (exit 1).
    pub fn is_problem(self) -> bool {
        matches!(self, Self::Rejected(_) | Self::Failed)
    }
}

impl fmt::Display for KeyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied => f.write_str("applied"),
            Self::AlreadyApplied => f.write_str("already_applied"),
            Self::Skipped(r) => write!(f, "skipped:{}", r.code()),
            Self::Rejected(r) => write!(f, "rejected:{}", r.code()),
            Self::Failed => f.write_str("failed"),
        }
    }
}

impl Serialize for KeyResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
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
    /// Keys by how they ended in this run.
    pub outcomes: BTreeMap<KeyResult, u64>,
    /// Rows written (or, in a dry run, that would be written) per table.
    pub tables: TableCounts,
    /// Unresolved competitor names with their row counts.
    pub unresolved_competitors: BTreeMap<String, u64>,
    /// Notes by kind.
    pub notes: BTreeMap<String, u64>,
    /// The first failures: (key, the target's error).
    pub failures: Vec<(i64, String)>,
    /// Batch attempts the target made us retry, by cause (`lock_timeout`,
    /// `statement_timeout`, `connection`, …).
    pub retries: BTreeMap<String, u64>,
    /// Batches applied.
    pub batches: u64,
    /// Stopped before the end (a stop, an abort, or an error).
    pub interrupted: bool,
    /// A dry run (nothing written, nothing marked applied).
    pub dry_run: bool,
    /// Wall time.
    pub elapsed_secs: f64,
}

/// At most this many failures are listed (all are counted).
pub const MAX_FAILURES: usize = 100;

impl Summary {
    /// Counts one key's result.
    pub fn count(&mut self, result: KeyResult) {
        *self.outcomes.entry(result).or_insert(0) += 1;
    }

    /// Keys that ended with `result`.
    pub fn of(&self, result: KeyResult) -> u64 {
        self.outcomes.get(&result).copied().unwrap_or(0)
    }

    /// Counts a planned event's notes.
    pub fn notes_of(&mut self, notes: &[Note]) {
        for note in notes {
            *self.notes.entry(note.kind().to_owned()).or_insert(0) += 1;
            if let Note::UnresolvedCompetitor { name, .. } = note {
                *self.unresolved_competitors.entry(name.clone()).or_insert(0) += 1;
            }
        }
    }

    /// Adds another summary's counts (this one's timing is kept).
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
        for (k, v) in other.retries {
            *self.retries.entry(k).or_insert(0) += v;
        }
        self.batches += other.batches;
        self.interrupted |= other.interrupted;
    }

    /// True if some key ended rejected or failed in this run.
    pub fn has_problems(&self) -> bool {
        self.outcomes.iter().any(|(k, v)| *v > 0 && k.is_problem())
    }

    /// True if this run changed the target (keys written, not counting a dry
    /// run) or the journal (keys planned): after an error, such a run is
    /// resumable, not "nothing done".
    pub fn did_work(&self) -> bool {
        self.keys_planned > 0 || self.keys_drifted > 0 || (!self.dry_run && self.batches > 0)
    }

    /// The counts as recorded with the run in the journal: `result` → keys.
    pub fn run_counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .outcomes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        counts.push(("planned".into(), self.keys_planned));
        counts.push(("unchanged".into(), self.keys_unchanged));
        counts.push(("drifted".into(), self.keys_drifted));
        counts.push(("source_rows".into(), self.source_rows));
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_have_stable_names_and_problems_are_rejections_and_failures() {
        let all = [
            (KeyResult::Applied, "applied", false),
            (KeyResult::AlreadyApplied, "already_applied", false),
            (
                KeyResult::Skipped(Reason::ExistingInTarget),
                "skipped:existing_in_target",
                false,
            ),
            (
                KeyResult::Skipped(Reason::NoBrandRow),
                "skipped:no_brand_row",
                false,
            ),
            (
                KeyResult::Rejected(Reason::ValueOutOfRange),
                "rejected:value_out_of_range",
                true,
            ),
            (KeyResult::Failed, "failed", true),
        ];
        for (result, name, problem) in all {
            assert_eq!(result.to_string(), name);
            assert_eq!(result.is_problem(), problem, "{name}");
            let mut s = Summary::default();
            s.count(result);
            assert_eq!(s.has_problems(), problem, "{name}");
            assert_eq!(
                serde_json::to_value(&s.outcomes).unwrap()[name],
                serde_json::json!(1)
            );
        }
    }
}
