//! Where source rows come from, as the pipeline needs them: whole groups, by
//! key range or by key set, with the directories the core consults.
//!
//! Why these operations and no more: keyset pages over a key range serve the
//! backfill and, per shard, the shards (DESIGN §11); groups of a key set serve
//! drift, reapplying and following a change queue (DESIGN §9). A batch holds
//! whole groups only: the old tool split groups at batch boundaries and lost
//! competitors.

use std::future::Future;

use backfill_core::{Directories, SourceRow};

use crate::Result;

/// A half-open range of `collector_result_id`s: `start <= key < end`, each
/// bound optional. One shard's keys (DESIGN §11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// Lowest key included.
    pub start: Option<i64>,
    /// First key excluded.
    pub end: Option<i64>,
}

impl KeyRange {
    /// Every key.
    pub const ALL: KeyRange = KeyRange {
        start: None,
        end: None,
    };

    /// True if `key` is in the range.
    pub fn contains(&self, key: i64) -> bool {
        self.start.is_none_or(|s| key >= s) && self.end.is_none_or(|e| key < e)
    }
}

/// Whole groups read in one batch.
#[derive(Clone, Debug, Default)]
pub struct SourceBatch {
    /// (key, rows) in key order, rows in id order.
    pub groups: Vec<(i64, Vec<SourceRow>)>,
    /// Source rows in the batch.
    pub rows: usize,
}

impl SourceBatch {
    /// The last key of the batch.
    pub fn last_key(&self) -> Option<i64> {
        self.groups.last().map(|(k, _)| *k)
    }

    /// The batch's keys, in order.
    pub fn keys(&self) -> Vec<i64> {
        self.groups.iter().map(|(k, _)| *k).collect()
    }
}

/// A source of groups. Implementations: `backfill_postgres::SourceReader`,
/// [`MemorySource`](crate::MemorySource).
pub trait Source: Send + Sync + 'static {
    /// The source as an operator names it (for messages: "table
    /// archive.old_positions").
    fn describe(&self) -> String;

    /// True if the source has no rows at all.
    fn is_empty(&self) -> impl Future<Output = Result<bool>> + Send;

    /// An estimate of the source rows, for progress only.
    fn estimate_rows(&self) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The next `max_keys` keys of `range` strictly after `after`, with every
    /// row of each; `None` when the range is exhausted.
    fn next_batch(
        &self,
        range: KeyRange,
        after: Option<i64>,
        max_keys: usize,
    ) -> impl Future<Output = Result<Option<SourceBatch>>> + Send;

    /// The whole groups of `keys` (keys without rows are absent).
    fn groups_of(&self, keys: &[i64]) -> impl Future<Output = Result<SourceBatch>> + Send;

    /// The directories that change rarely (competitors, brands), loaded once
    /// per run.
    fn load_directories(&self) -> impl Future<Output = Result<Directories>> + Send;

    /// Replaces `dirs`' per-key facts (collector results) with those of
    /// `keys`, so memory does not grow with the source.
    fn load_collector_results(
        &self,
        dirs: &mut Directories,
        keys: &[i64],
    ) -> impl Future<Output = Result<()>> + Send;
}
