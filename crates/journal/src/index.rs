//! The index: the fold of each key's records, kept beside the log.
//!
//! Why an index at all: an operator needs O(1) answers ("how many pending?",
//! "what is key 42's state?") and resume needs the pending keys in order;
//! replaying the log for those would cost the whole history each time. The
//! index is written in the same atomic batch as the log entries it folds, so
//! it can never be ahead of or behind the log, and `verify_index` proves the
//! two agree.
//!
//! Why this shape: statuses are stored by page of consecutive keys (one sled
//! write per page, not per key), each page has one 64-bit map per state so
//! keys in a state are listed in key order without reading statuses, and the
//! counts by (state, reason) are kept whole so a count never scans. A commit
//! writes only the maps and counts that changed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::journal::{decode_as, encode_as, Journal};
use crate::layout::{
    bitmap_end, bitmap_key, bitmap_page, count_key, page_from_key, page_key, page_of, run_key,
    COUNT, PAGE, STATUS,
};
use crate::log::{Body, Entry};
use crate::record::{fold, KeyStatus, Reason, State};
use crate::runs::Run;
use crate::{Error, Result};

/// Keys by (state, reason).
pub(crate) type Counts = BTreeMap<(State, Option<Reason>), u64>;

/// A page of statuses: offset within the page → status.
pub(crate) type Page = BTreeMap<u8, KeyStatus>;

/// A page's keys-by-state maps, in the order of [`State::ALL`].
type Bitmaps = [u64; State::ALL.len()];

fn bitmaps(page: &Page) -> Bitmaps {
    let mut maps = [0u64; State::ALL.len()];
    for (offset, status) in page {
        if let Some(i) = State::ALL.iter().position(|s| *s == status.state) {
            maps[i] |= 1u64 << offset;
        }
    }
    maps
}

/// The index writes of a commit: its status pages, their keys-by-state
/// bitmaps, the counts that changed, and its runs.
fn index_writes(
    pages: &HashMap<i64, (Page, Bitmaps)>,
    counts: &Counts,
    before: &Counts,
    runs: &[&Run],
) -> Result<sled::Batch> {
    let mut writes = sled::Batch::default();
    for (page_id, (page, before)) in pages {
        writes.insert(page_key(*page_id), encode_as("status page", page)?);
        // Only the maps that changed: a fresh page touches one, not seven.
        for (state, (after, before)) in State::ALL.iter().zip(bitmaps(page).iter().zip(before)) {
            if after == before {
                continue;
            }
            if *after == 0 {
                writes.remove(bitmap_key(*state, *page_id));
            } else {
                writes.insert(bitmap_key(*state, *page_id), &after.to_be_bytes());
            }
        }
    }
    for (bucket, count) in counts {
        if before.get(bucket) != Some(count) {
            writes.insert(count_key(bucket)?, &count.to_be_bytes());
        }
    }
    for run in runs {
        writes.insert(run_key(run.id), encode_as("run", run)?);
    }
    Ok(writes)
}

/// The stored counts, read at open.
///
/// # Errors
/// [`Error::Damaged`] if a count is malformed.
pub(crate) fn load_counts(db: &sled::Db, path: &Path) -> Result<Counts> {
    let mut counts = Counts::new();
    for item in db.scan_prefix([COUNT]) {
        let (k, v) = item?;
        let bucket: (State, Option<Reason>) = decode_as(|| "count key".into(), &k[1..])?;
        let value: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::Damaged {
            path: path.to_path_buf(),
            problem: "count is not 8 bytes".into(),
        })?;
        counts.insert(bucket, u64::from_be_bytes(value));
    }
    Ok(counts)
}

impl Journal {
    pub(crate) fn load_page(&self, page: i64) -> Result<Page> {
        let key = page_key(page);
        let value = self.db.get(&key)?;
        crate::store::account(&self.db, &key);
        match value {
            Some(bytes) => decode_as(|| format!("status page {page}"), &bytes),
            None => Ok(Page::new()),
        }
    }

    /// Folds a commit's entries into the index: its sled writes (status
    /// pages, keys-by-state maps, changed counts, runs) and the new counts.
    pub(crate) fn fold_batch(
        &self,
        entries: &[Entry],
        before: &Counts,
    ) -> Result<(sled::Batch, Counts)> {
        let mut pages: HashMap<i64, (Page, Bitmaps)> = HashMap::new();
        let mut counts = before.clone();
        let mut runs: Vec<&Run> = Vec::new();
        for entry in entries {
            let (key, record) = match &entry.body {
                Body::Key { key, record } => (*key, record),
                Body::RunStarted(run) | Body::RunEnded { run } => {
                    runs.push(run);
                    continue;
                }
            };
            let (page_id, offset) = page_of(key);
            let (page, _) = match pages.entry(page_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let page = self.load_page(page_id)?;
                    let before = bitmaps(&page);
                    e.insert((page, before))
                }
            };
            let next = fold(key, page.get(&offset), entry.seq, record)?;
            if let Some(previous) = page.get(&offset) {
                if let Some(count) = counts.get_mut(&previous.bucket()) {
                    *count = count.saturating_sub(1);
                }
            }
            *counts.entry(next.bucket()).or_insert(0) += 1;
            page.insert(offset, next);
        }
        let writes = index_writes(&pages, &counts, before, &runs)?;
        Ok((writes, counts))
    }

    pub(crate) fn load_status(&self, key: i64) -> Result<Option<KeyStatus>> {
        let (page, offset) = page_of(key);
        Ok(self.load_page(page)?.remove(&offset))
    }

    /// A key's folded state, without replaying its records.
    pub fn status(&self, key: i64) -> Result<Option<KeyStatus>> {
        self.load_status(key)
    }

    /// The folded states of several keys (absent keys are left out). Why not
    /// [`Journal::status`] in a loop: each call decodes the key's whole page
    /// of statuses, so a batch of consecutive keys would decode each page
    /// once per key; here each page is decoded once.
    pub fn statuses(&self, keys: &[i64]) -> Result<HashMap<i64, KeyStatus>> {
        let mut by_page: BTreeMap<i64, Vec<(i64, u8)>> = BTreeMap::new();
        for &key in keys {
            let (page, offset) = page_of(key);
            by_page.entry(page).or_default().push((key, offset));
        }
        let mut out = HashMap::with_capacity(keys.len());
        for (page, members) in by_page {
            let mut loaded = self.load_page(page)?;
            for (key, offset) in members {
                if let Some(status) = loaded.remove(&offset) {
                    out.insert(key, status);
                }
            }
        }
        Ok(out)
    }

    /// Keys by (state, reason), maintained with the index: O(1).
    pub fn counts(&self) -> BTreeMap<(State, Option<Reason>), u64> {
        let mut counts = self.inner().counts.clone();
        counts.retain(|_, n| *n > 0);
        counts
    }

    /// Keys in a state, all reasons together: O(number of reasons).
    pub fn count(&self, state: State) -> u64 {
        self.inner()
            .counts
            .iter()
            .filter(|((s, _), _)| *s == state)
            .map(|(_, n)| n)
            .sum()
    }

    /// Keys in `state` from `from` (inclusive) upwards, in key order.
    pub fn keys_in_state(
        &self,
        state: State,
        from: Option<i64>,
    ) -> impl Iterator<Item = Result<i64>> + '_ {
        let from = from.unwrap_or(i64::MIN);
        let start = bitmap_key(state, page_of(from).0);
        let end = bitmap_end(state);
        self.db
            .range(start..end)
            .map(move |item| -> Result<Vec<i64>> {
                let (k, v) = item?;
                let page = bitmap_page(&k);
                let bits = v.as_ref().try_into().ok().map(u64::from_be_bytes);
                let (Some(page), Some(bits)) = (page, bits) else {
                    return Err(Error::Damaged {
                        path: self.path.clone(),
                        problem: "a keys-by-state entry is malformed".into(),
                    });
                };
                Ok((0..PAGE)
                    .filter(|offset| bits & (1u64 << offset) != 0)
                    .map(|offset| page * PAGE + offset)
                    .filter(|key| *key >= from)
                    .collect())
            })
            .flat_map(|keys| match keys {
                Ok(keys) => keys.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
    }

    /// Pending keys from `from` (inclusive), in key order.
    pub fn pending(&self, from: Option<i64>) -> impl Iterator<Item = Result<i64>> + '_ {
        self.keys_in_state(State::Pending, from)
    }

    /// All keys with their status, in key order.
    pub fn keys(&self) -> impl Iterator<Item = Result<(i64, KeyStatus)>> + '_ {
        self.db
            .scan_prefix([STATUS])
            .map(|item| -> Result<Vec<(i64, KeyStatus)>> {
                let (k, v) = item?;
                crate::store::account(&self.db, &k);
                let page = page_from_key(&k).ok_or_else(|| Error::Damaged {
                    path: self.path.clone(),
                    problem: "a status page key is malformed".into(),
                })?;
                let statuses: Page = decode_as(|| format!("status page {page}"), &v)?;
                Ok(statuses
                    .into_iter()
                    .map(|(offset, status)| (page * PAGE + i64::from(offset), status))
                    .collect())
            })
            .flat_map(|keys| match keys {
                Ok(keys) => keys.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
    }
}
