//! The log: what was recorded, in order, hash-chained, and how it is read
//! back.
//!
//! Why a log: an auditor must be able to replay history, so every record is
//! appended, never changed, and each entry's hash chains to the one before
//! (docs/journal.md, "The hash chain"). Why one `commit` per batch: a batch's
//! entries, its index writes and the new chain head go to sled in one
//! `apply_batch` followed by one flush, so a reported state has been flushed
//! and a crash leaves a batch wholly there or wholly absent. Why a frame
//! cache: entries are stored in compressed frames of about 64 KiB, and readers
//! go through keys in order, so keeping the last frame read decompresses each
//! frame once per run of keys rather than once per key.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::RunId;
use backfill_core::{Digest, MigrationEvent, Timestamp};
use serde::{Deserialize, Serialize};

use crate::frame::{self, Frame};
use crate::journal::{decode_as, encode_as, Journal};
use crate::layout::{frame_first_seq, log_key, META_CURSOR, META_HEAD, META_PASS};
use crate::record::{Logged, Record};
use crate::runs::Run;
use crate::{Error, Result};

/// The largest stored frame: sled 0.34 writes a node above a quarter of its
/// 8 MiB segment to a blob file that it never fsyncs; a frame of at most
/// 1 MiB keeps every node (a frame with its key) well inside the log.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// One log entry: a key's record or a run's start or end, at its position.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    pub seq: u64,
    pub at: Timestamp,
    pub run: Option<RunId>,
    pub body: Body,
}

/// What an entry records.
#[derive(Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Body {
    Key { key: i64, record: Record },
    RunStarted(Run),
    RunEnded { run: Run },
}

impl Body {
    /// The event of a `Planned` record.
    fn into_planned(self) -> Option<MigrationEvent> {
        match self {
            Body::Key {
                record: Record::Planned { event },
                ..
            } => Some(event),
            _ => None,
        }
    }
}

/// Where the journal's pass over the source stands. A pass reads the source
/// in key order from the cursor; `Reading` until it reached the end, so a
/// replay after a kill, a crash or a stop knows to finish it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassState {
    /// A pass started and has not reached the end of the source.
    Reading,
    /// The last pass read the source to its end.
    Exhausted,
}

/// Records to append atomically, with one flush.
#[derive(Default)]
pub struct Batch {
    pub(crate) run: Option<RunId>,
    pub(crate) items: Vec<Body>,
    pub(crate) cursor: Option<i64>,
    pub(crate) pass: Option<PassState>,
}

impl Batch {
    /// An empty batch, not tied to a run.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch whose records belong to `run`.
    pub fn for_run(run: RunId) -> Self {
        Self {
            run: Some(run),
            ..Self::default()
        }
    }

    /// Appends a `Planned` record for the event's key.
    pub fn plan(&mut self, event: MigrationEvent) -> &mut Self {
        self.items.push(Body::Key {
            key: event.collector_result_id,
            record: Record::Planned { event },
        });
        self
    }

    /// The events of its `Planned` records, in order (a batch not
    /// committed: a dry run's).
    pub fn into_planned(self) -> Vec<MigrationEvent> {
        self.items
            .into_iter()
            .filter_map(Body::into_planned)
            .collect()
    }

    /// Appends a record for a key.
    pub fn record(&mut self, key: i64, record: Record) -> &mut Self {
        self.items.push(Body::Key { key, record });
        self
    }

    /// Moves the source cursor (highest key fully planned) with this batch.
    pub fn cursor(&mut self, key: i64) -> &mut Self {
        self.cursor = Some(key);
        self
    }

    /// Records where the pass over the source stands, with this batch.
    pub fn pass(&mut self, state: PassState) -> &mut Self {
        self.pass = Some(state);
        self
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there are no records, no cursor move and no pass change.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.cursor.is_none() && self.pass.is_none()
    }
}

/// What a commit wrote: log positions `first_seq .. next_seq`, flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Position of the first record written.
    pub first_seq: u64,
    /// Position the next record will take.
    pub next_seq: u64,
}

/// The time of an entry: now, in microseconds since the epoch.
pub(crate) fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    Timestamp(i64::try_from(micros).unwrap_or(i64::MAX))
}

impl Journal {
    /// Appends a batch atomically and flushes it once. When this returns Ok,
    /// every record is durable; on error nothing of the batch is visible.
    /// A large batch is encoded, hashed and compressed on up to four scoped
    /// threads (as many as the machine has cores); the call returns after
    /// they have finished.
    ///
    /// # Errors
    /// [`Error::UnknownKey`], [`Error::KeyMismatch`], [`Error::ConflictingHash`]
    /// if a record would make the log lie (the whole batch is refused), or a
    /// storage error.
    pub fn commit(&self, batch: Batch) -> Result<Receipt> {
        self.commit_entries(batch).map(|(receipt, _)| receipt)
    }

    /// Commits like [`Journal::commit`], then hands back the events of the
    /// batch's `Planned` records, in order: a caller that applies them next
    /// needs no copy of its own (a deep copy of every key's target rows was
    /// a tenth of planning's allocations; decision 75).
    pub fn commit_planned(&self, batch: Batch) -> Result<(Receipt, Vec<MigrationEvent>)> {
        let (receipt, entries) = self.commit_entries(batch)?;
        let events = entries
            .into_iter()
            .filter_map(|entry| entry.body.into_planned())
            .collect();
        Ok((receipt, events))
    }

    fn commit_entries(&self, batch: Batch) -> Result<(Receipt, Vec<Entry>)> {
        let mut inner = self.inner();
        let first_seq = inner.next_seq;
        let at = now();
        let entries: Vec<Entry> = batch
            .items
            .into_iter()
            .zip(first_seq..)
            .map(|(body, seq)| Entry {
                seq,
                at,
                run: batch.run,
                body,
            })
            .collect();
        let seq = first_seq.saturating_add(u64::try_from(entries.len()).unwrap_or(u64::MAX));
        // Encoding, leaf hashes and compression run on all cores; this thread
        // first folds the records into the index, then joins in. The chain
        // over the leaves is serial and cheap (64-byte inputs).
        let (sealed, index) = frame::seal(first_seq, &entries, self.threads, || {
            self.fold_batch(&entries, &inner.counts)
        });
        let (mut writes, counts) = index?;
        let mut head = inner.head;
        for sealed in sealed? {
            let hashes: Vec<Digest> = sealed
                .leaves()
                .iter()
                .map(|leaf| {
                    head = frame::link_hash(&head, leaf);
                    head
                })
                .collect();
            let first = sealed.first;
            let value = sealed.into_value(&hashes)?;
            if value.len() > MAX_FRAME_BYTES {
                // sled would put a node this large in a blob file, which it
                // never fsyncs: refuse rather than lose it on a power cut.
                let index = usize::try_from(first - first_seq).unwrap_or(0);
                let key = match entries.get(index).map(|e| &e.body) {
                    Some(Body::Key { key, .. }) => Some(*key),
                    _ => None,
                };
                return Err(Error::EntryTooLarge {
                    key,
                    bytes: value.len(),
                    limit: MAX_FRAME_BYTES,
                });
            }
            writes.insert(log_key(first), value);
        }
        writes.insert(META_HEAD, encode_as("head", &(seq, head))?);
        if let Some(cursor) = batch.cursor {
            writes.insert(META_CURSOR, encode_as("cursor", &cursor)?);
        }
        if let Some(pass) = batch.pass {
            writes.insert(META_PASS, encode_as("pass", &pass)?);
        }
        self.db.apply_batch(writes)?;
        self.db.flush()?;
        inner.next_seq = seq;
        inner.head = head;
        inner.counts = counts;
        if batch.cursor.is_some() {
            inner.cursor = batch.cursor;
        }
        if batch.pass.is_some() {
            inner.pass = batch.pass;
        }
        crate::identity::write_head(&self.dir, seq, &head)?;
        let receipt = Receipt {
            first_seq,
            next_seq: seq,
        };
        Ok((receipt, entries))
    }

    /// The frame holding log position `seq`: (its first position, frame).
    fn frame_at(&self, seq: u64) -> Result<Option<(u64, Arc<Frame>)>> {
        let mut last = self.last_frame.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((first, frame)) = last.as_ref() {
            let len = u64::try_from(frame.len()).unwrap_or(u64::MAX);
            if *first <= seq && seq - *first < len {
                return Ok(Some((*first, Arc::clone(frame))));
            }
        }
        let Some(item) = self.db.range(log_key(0)..=log_key(seq)).next_back() else {
            return Ok(None);
        };
        let (k, value) = item?;
        crate::store::account(&self.db, &k);
        let first = frame_first_seq(&k);
        let frame = Frame::parse(&value).ok_or_else(|| Error::Damaged {
            path: self.path.clone(),
            problem: format!(
                "the log frame at position {first} does not decompress (run `journal verify`)"
            ),
        })?;
        let frame = Arc::new(frame);
        *last = Some((first, Arc::clone(&frame)));
        Ok(Some((first, frame)))
    }

    pub(crate) fn entry(&self, seq: u64) -> Result<Option<Entry>> {
        let Some((first, frame)) = self.frame_at(seq)? else {
            return Ok(None);
        };
        let Some(index) = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok()) else {
            return Ok(None);
        };
        frame
            .entry(index)
            .map(|(_, bytes)| decode_as(|| format!("log entry {seq}"), bytes))
            .transpose()
    }

    /// The key's current event.
    pub fn event(&self, key: i64) -> Result<Option<MigrationEvent>> {
        let Some(status) = self.load_status(key)? else {
            return Ok(None);
        };
        match self.entry(status.event_seq)?.map(|e| e.body) {
            Some(Body::Key {
                record: Record::Planned { event },
                ..
            }) => Ok(Some(event)),
            _ => Err(Error::IndexMismatch {
                key,
                problem: format!("log entry {} is not its Planned record", status.event_seq),
            }),
        }
    }

    /// The current events of several keys (keys without one are left out),
    /// each status page decoded once and the log read in position order (see
    /// [`Journal::statuses`]).
    pub fn events(&self, keys: &[i64]) -> Result<std::collections::HashMap<i64, MigrationEvent>> {
        let statuses = self.statuses(keys)?;
        let mut by_seq: Vec<(u64, i64)> = statuses
            .iter()
            .map(|(key, status)| (status.event_seq, *key))
            .collect();
        by_seq.sort_unstable();
        let mut out = std::collections::HashMap::with_capacity(by_seq.len());
        for (seq, key) in by_seq {
            match self.entry(seq)?.map(|e| e.body) {
                Some(Body::Key {
                    record: Record::Planned { event },
                    ..
                }) => {
                    out.insert(key, event);
                }
                _ => {
                    return Err(Error::IndexMismatch {
                        key,
                        problem: format!("log entry {seq} is not its Planned record"),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Every record of a key, oldest first, with position, time and run.
    pub fn history(&self, key: i64) -> Result<Vec<Logged>> {
        let Some(status) = self.load_status(key)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(status.history.len());
        for seq in status.history {
            match self.entry(seq)? {
                Some(Entry {
                    at,
                    run,
                    body: Body::Key { record, .. },
                    ..
                }) => out.push(Logged {
                    seq,
                    at,
                    run,
                    record,
                }),
                _ => {
                    return Err(Error::IndexMismatch {
                        key,
                        problem: format!("history names log entry {seq}, which is not its record"),
                    })
                }
            }
        }
        Ok(out)
    }
}
