//! The sled store: atomic, flushed batches of hash-chained records plus the
//! index that folds them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use backfill_core::{decode, encode, Digest, MigrationEvent, Timestamp, MAPPING_VERSION};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::frame::{self, Frame};
use crate::record::{fold, KeyStatus, Logged, Record, State};
use crate::{Error, Result};

/// The journal format this build writes and the only one it reads. Format 1
/// stored a commit as one value with a serial per-entry chain
/// (docs/journal.md).
pub const FORMAT_VERSION: u32 = 2;

/// sled's segment (and I/O buffer) size for journals. sled 0.34 writes a node
/// larger than a quarter of this to a blob file that it never fsyncs; 8 MiB
/// keeps the journal's nodes (at most 17 frames of about 64 KiB, or status
/// pages) inside sled's own log. Tests open journals with it.
pub const SEGMENT_SIZE: usize = 8 << 20;

/// sled's page cache.
const CACHE_BYTES: u64 = 32 << 20;

/// At most this many threads encode one commit.
const MAX_THREADS: usize = 4;

const META_FORMAT: &[u8] = b"Mformat";
const META_ID: &[u8] = b"Mid";
const META_MAPPING: &[u8] = b"Mmapping";
const META_SOURCE: &[u8] = b"Msource";
const META_CURSOR: &[u8] = b"Mcursor";
const META_HEAD: &[u8] = b"Mhead";

/// Where a journal's events were planned from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    /// The source database (host, port, name; never a password).
    pub database: String,
    /// The source table.
    pub table: String,
}

impl fmt::Display for SourceFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} table {}", self.database, self.table)
    }
}

/// One invocation of a command that changed the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Run id (also in `backfill.ledger`).
    pub id: Uuid,
    /// The command (`plan`, `replay`, `run`, `rollback`, …).
    pub command: String,
    /// The options that matter, as name/value pairs.
    pub options: Vec<(String, String)>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended, if it did.
    pub ended_at: Option<Timestamp>,
    /// Its final counts, by name.
    pub counts: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    seq: u64,
    at: Timestamp,
    run: Option<Uuid>,
    body: Body,
}

#[derive(Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
enum Body {
    Key { key: i64, record: Record },
    RunStarted(Run),
    RunEnded { run: Run },
}

/// Records to append atomically, with one flush.
#[derive(Default)]
pub struct Batch {
    run: Option<Uuid>,
    items: Vec<Body>,
    cursor: Option<i64>,
}

impl Batch {
    /// An empty batch, not tied to a run.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch whose records belong to `run`.
    pub fn for_run(run: Uuid) -> Self {
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

    /// Number of records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there are no records and no cursor move.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.cursor.is_none()
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

/// Result of [`Journal::verify_chain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Entries checked.
    pub entries: u64,
    /// Hash of the last entry (the chain head).
    pub head: Digest,
}

/// Result of [`Journal::verify_index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexReport {
    /// Keys checked.
    pub keys: u64,
}

/// What is wrong at the first bad log position.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainProblem {
    /// The entry's bytes, chained to the previous entry's hash, do not hash
    /// to the hash stored with it (edited, or an entry before it replaced).
    HashMismatch,
    /// The entry does not decode although its hash matches (written by
    /// something else than this journal).
    Undecodable,
    /// The entry's stored position is not where it stands.
    WrongPosition {
        /// The position the entry claims.
        claimed: u64,
    },
    /// An entry is missing before the head (deleted).
    Missing,
    /// The log ends before the recorded head (truncated), or the head does not
    /// match the last entry.
    Truncated {
        /// Entries the head says there are.
        expected_entries: u64,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HashMismatch => f.write_str(
                "the entry, chained to the one before it, does not hash to its stored hash (edited)",
            ),
            Self::Undecodable => f.write_str("the entry does not decode"),
            Self::WrongPosition { claimed } => write!(f, "the entry claims position {claimed}"),
            Self::Missing => f.write_str("the entry is missing (deleted)"),
            Self::Truncated { expected_entries } => write!(
                f,
                "the log ends here but the head records {expected_entries} entries (truncated)"
            ),
        }
    }
}

type Counts = BTreeMap<(State, Option<String>), u64>;

struct Inner {
    next_seq: u64,
    head: Digest,
    counts: Counts,
    cursor: Option<i64>,
    source: Option<SourceFingerprint>,
}

/// An open journal. One process at a time (sled locks the directory); within
/// the process it can be shared: writes are serialized internally.
pub struct Journal {
    db: sled::Db,
    path: PathBuf,
    id: Uuid,
    mapping_version: u32,
    inner: Mutex<Inner>,
    /// Threads a commit may encode on.
    threads: usize,
    /// The last frame read: lookups in key order hit it, so a frame is
    /// decompressed once per run of keys, not once per key. Frames never
    /// change once written.
    last_frame: Mutex<Option<(u64, Arc<Frame>)>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn key_bytes(key: i64) -> [u8; 8] {
    // Big-endian with the sign bit flipped: byte order equals numeric order,
    // negative keys included.
    let mut bytes = key.to_be_bytes();
    bytes[0] ^= 0x80;
    bytes
}

fn key_from_bytes(bytes: &[u8]) -> Option<i64> {
    let mut array: [u8; 8] = bytes.try_into().ok()?;
    array[0] ^= 0x80;
    Some(i64::from_be_bytes(array))
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + rest.len());
    out.push(prefix);
    out.extend_from_slice(rest);
    out
}

fn log_key(seq: u64) -> Vec<u8> {
    prefixed(b'L', &seq.to_be_bytes())
}

/// Keys per status page: consecutive keys (as keyset pagination produces)
/// share a page, so a batch of 1,000 keys is about 16 sled writes, not 1,000.
const PAGE: i64 = 64;

/// A page of statuses: offset within the page → status.
type Page = BTreeMap<u8, KeyStatus>;

fn page_of(key: i64) -> (i64, u8) {
    let offset = u8::try_from(key.rem_euclid(PAGE)).unwrap_or(0);
    (key.div_euclid(PAGE), offset)
}

fn page_key(page: i64) -> Vec<u8> {
    prefixed(b'S', &key_bytes(page))
}

fn bitmap_key(state: State, page: i64) -> Vec<u8> {
    let mut out = vec![b'I', state.tag()];
    out.extend_from_slice(&key_bytes(page));
    out
}

/// The first log position of a stored frame, from its key (`L` + u64 BE);
/// `u64::MAX` for a malformed key, which no position matches.
fn frame_first_seq(key: &[u8]) -> u64 {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(u64::MAX)
}

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
        writes.insert(prefixed(b'R', run.id.as_bytes()), encode_as("run", run)?);
    }
    Ok(writes)
}

fn count_key(bucket: &(State, Option<String>)) -> Result<Vec<u8>> {
    let encoded = encode(&(bucket.0, &bucket.1)).map_err(|source| Error::Decode {
        what: "count key".into(),
        source,
    })?;
    Ok(prefixed(b'C', &encoded))
}

fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    Timestamp(i64::try_from(micros).unwrap_or(i64::MAX))
}

fn decode_as<T: serde::de::DeserializeOwned>(
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T> {
    decode(bytes).map_err(|source| Error::Decode {
        what: what(),
        source,
    })
}

fn encode_as<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    encode(value).map_err(|source| Error::Decode {
        what: what.to_owned(),
        source,
    })
}

impl Journal {
    /// Opens (or creates) the journal in directory `path`.
    ///
    /// # Errors
    /// [`Error::Locked`] if another process has it open, [`Error::Damaged`] if
    /// its files are not a readable journal, [`Error::NewerFormat`] if a newer
    /// backfill wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = open_sled(&path)?;
        let damaged = |problem: String| Error::Damaged {
            path: path.clone(),
            problem,
        };
        let format = match db.get(META_FORMAT)? {
            Some(bytes) => {
                let array: [u8; 4] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| damaged("format version is not 4 bytes".into()))?;
                u32::from_be_bytes(array)
            }
            None if db.is_empty() => {
                let mut batch = sled::Batch::default();
                batch.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes());
                batch.insert(META_ID, Uuid::new_v4().as_bytes());
                batch.insert(META_MAPPING, &MAPPING_VERSION.to_be_bytes());
                batch.insert(META_HEAD, encode_as("head", &(0u64, Digest::default()))?);
                db.apply_batch(batch)?;
                db.flush()?;
                FORMAT_VERSION
            }
            None => return Err(damaged("no format version: not a backfill journal".into())),
        };
        if format > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                path,
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        if format < FORMAT_VERSION {
            return Err(Error::OlderFormat {
                path,
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        let id = db
            .get(META_ID)?
            .and_then(|b| Uuid::from_slice(&b).ok())
            .ok_or_else(|| damaged("journal id missing".into()))?;
        let mapping_version = db
            .get(META_MAPPING)?
            .and_then(|b| b.as_ref().try_into().ok().map(u32::from_be_bytes))
            .ok_or_else(|| damaged("mapping version missing".into()))?;
        let (next_seq, head): (u64, Digest) = match db.get(META_HEAD)? {
            Some(bytes) => decode_as(|| "head".into(), &bytes)?,
            None => return Err(damaged("chain head missing".into())),
        };
        let cursor = match db.get(META_CURSOR)? {
            Some(bytes) => Some(decode_as::<i64>(|| "cursor".into(), &bytes)?),
            None => None,
        };
        let source = match db.get(META_SOURCE)? {
            Some(bytes) => Some(decode_as::<SourceFingerprint>(|| "source".into(), &bytes)?),
            None => None,
        };
        let mut counts = Counts::new();
        for item in db.scan_prefix(b"C") {
            let (k, v) = item?;
            let bucket: (State, Option<String>) = decode_as(|| "count key".into(), &k[1..])?;
            let value: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| damaged("count is not 8 bytes".into()))?;
            counts.insert(bucket, u64::from_be_bytes(value));
        }
        Ok(Self {
            db,
            path,
            id,
            mapping_version,
            inner: Mutex::new(Inner {
                next_seq,
                head,
                counts,
                cursor,
                source,
            }),
            threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_THREADS),
            last_frame: Mutex::new(None),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner half-updated:
        // it is only assigned after a successful flush.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The journal's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal id, created on first open.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The format version of this journal.
    pub fn format_version(&self) -> u32 {
        FORMAT_VERSION
    }

    /// The mapping version the journal was created with.
    pub fn mapping_version(&self) -> u32 {
        self.mapping_version
    }

    /// Number of log entries.
    pub fn entries(&self) -> u64 {
        self.inner().next_seq
    }

    /// The source cursor: the highest key fully planned.
    pub fn cursor(&self) -> Option<i64> {
        self.inner().cursor
    }

    /// The source the journal was planned from, once bound.
    pub fn source(&self) -> Option<SourceFingerprint> {
        self.inner().source.clone()
    }

    /// Binds the journal to a source on first use; afterwards the same source
    /// is required.
    pub fn bind_source(&self, source: &SourceFingerprint) -> Result<()> {
        let mut inner = self.inner();
        match &inner.source {
            Some(existing) if existing == source => Ok(()),
            Some(existing) => Err(Error::SourceMismatch {
                journal: existing.clone(),
                requested: source.clone(),
            }),
            None => {
                self.db.insert(META_SOURCE, encode_as("source", source)?)?;
                self.db.flush()?;
                inner.source = Some(source.clone());
                Ok(())
            }
        }
    }

    fn load_page(&self, page: i64) -> Result<Page> {
        match self.db.get(page_key(page))? {
            Some(bytes) => decode_as(|| format!("status page {page}"), &bytes),
            None => Ok(Page::new()),
        }
    }

    /// Folds a commit's entries into the index: its sled writes (status
    /// pages, keys-by-state maps, changed counts, runs) and the new counts.
    fn fold_batch(&self, entries: &[Entry], before: &Counts) -> Result<(sled::Batch, Counts)> {
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

    fn load_status(&self, key: i64) -> Result<Option<KeyStatus>> {
        let (page, offset) = page_of(key);
        Ok(self.load_page(page)?.remove(&offset))
    }

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
            writes.insert(log_key(sealed.first), sealed.into_value(&hashes)?);
        }
        writes.insert(META_HEAD, encode_as("head", &(seq, head))?);
        if let Some(cursor) = batch.cursor {
            writes.insert(META_CURSOR, encode_as("cursor", &cursor)?);
        }
        self.db.apply_batch(writes)?;
        self.db.flush()?;
        inner.next_seq = seq;
        inner.head = head;
        inner.counts = counts;
        if batch.cursor.is_some() {
            inner.cursor = batch.cursor;
        }
        Ok(Receipt {
            first_seq,
            next_seq: seq,
        })
    }

    /// Records the start of a run and returns its id.
    pub fn start_run(&self, command: &str, options: Vec<(String, String)>) -> Result<Uuid> {
        let run = Run {
            id: Uuid::new_v4(),
            command: command.to_owned(),
            options,
            started_at: now(),
            ended_at: None,
            counts: Vec::new(),
        };
        let id = run.id;
        let mut batch = Batch::for_run(id);
        batch.items.push(Body::RunStarted(run));
        self.commit(batch)?;
        Ok(id)
    }

    /// Records the end of a run with its counts.
    pub fn end_run(&self, id: Uuid, counts: Vec<(String, u64)>) -> Result<()> {
        let mut run = self.run(id)?.ok_or(Error::UnknownRun { run: id })?;
        run.ended_at = Some(now());
        run.counts = counts;
        let mut batch = Batch::for_run(id);
        batch.items.push(Body::RunEnded { run });
        self.commit(batch)?;
        Ok(())
    }

    /// A run by id.
    pub fn run(&self, id: Uuid) -> Result<Option<Run>> {
        self.db
            .get(prefixed(b'R', id.as_bytes()))?
            .map(|bytes| decode_as(|| format!("run {id}"), &bytes))
            .transpose()
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        let mut runs = Vec::new();
        for item in self.db.scan_prefix(b"R") {
            let (_, bytes) = item?;
            runs.push(decode_as::<Run>(|| "run".into(), &bytes)?);
        }
        runs.sort_by_key(|r| (r.started_at, r.id));
        Ok(runs)
    }

    /// A key's folded state, without replaying its records.
    pub fn status(&self, key: i64) -> Result<Option<KeyStatus>> {
        self.load_status(key)
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

    fn entry(&self, seq: u64) -> Result<Option<Entry>> {
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

    /// Keys by (state, reason), maintained with the index: O(1).
    pub fn counts(&self) -> BTreeMap<(State, Option<String>), u64> {
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
        let end = vec![b'I', state.tag() + 1];
        self.db
            .range(start..end)
            .map(move |item| -> Result<Vec<i64>> {
                let (k, v) = item?;
                let page = k.get(2..).and_then(key_from_bytes);
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
            .scan_prefix(b"S")
            .map(|item| -> Result<Vec<(i64, KeyStatus)>> {
                let (k, v) = item?;
                let page = key_from_bytes(&k[1..]).ok_or_else(|| Error::Damaged {
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

    /// Walks the log and proves it is the chain the head describes: every
    /// entry decodes, stands at the position it claims, carries the previous
    /// entry's hash, and the last one hashes to the recorded head.
    ///
    /// # Errors
    /// [`Error::ChainBroken`] with the first bad position.
    pub fn verify_chain(&self) -> Result<ChainReport> {
        let (expected_entries, expected_head) = {
            let inner = self.inner();
            (inner.next_seq, inner.head)
        };
        let mut prev = Digest::default();
        let mut position = 0u64;
        for item in self.db.scan_prefix(b"L") {
            let (k, value) = item?;
            if frame_first_seq(&k) != position {
                return Err(Error::ChainBroken {
                    position,
                    problem: ChainProblem::Missing,
                });
            }
            let undecodable = |position| Error::ChainBroken {
                position,
                problem: ChainProblem::Undecodable,
            };
            let frame = Frame::parse(&value).ok_or_else(|| undecodable(position))?;
            for i in 0..frame.len() {
                let broken = |problem| Error::ChainBroken { position, problem };
                let (stored, bytes) = frame.entry(i).ok_or_else(|| undecodable(position))?;
                let hash = frame::chain_hash(&prev, bytes);
                let entry: Option<Entry> = decode(bytes).ok();
                let claimed = entry.as_ref().map(|e| e.seq);
                if let Some(claimed) = claimed.filter(|c| *c != position) {
                    return Err(broken(ChainProblem::WrongPosition { claimed }));
                }
                if stored != hash {
                    return Err(broken(ChainProblem::HashMismatch));
                }
                if entry.is_none() {
                    return Err(broken(ChainProblem::Undecodable));
                }
                prev = hash;
                position += 1;
            }
        }
        if position != expected_entries || prev != expected_head {
            return Err(Error::ChainBroken {
                position,
                problem: ChainProblem::Truncated { expected_entries },
            });
        }
        Ok(ChainReport {
            entries: position,
            head: prev,
        })
    }

    /// Replays the whole log through [`fold`] and proves the stored index
    /// (statuses, keys-by-state, counts) equals it.
    ///
    /// # Errors
    /// [`Error::IndexMismatch`] naming the first key that differs.
    pub fn verify_index(&self) -> Result<IndexReport> {
        let mut folded: BTreeMap<i64, KeyStatus> = BTreeMap::new();
        for item in self.db.scan_prefix(b"L") {
            let (k, value) = item?;
            let first = frame_first_seq(&k);
            let frame = Frame::parse(&value).ok_or_else(|| Error::Damaged {
                path: self.path.clone(),
                problem: format!("the log frame at position {first} does not decompress"),
            })?;
            for i in 0..frame.len() {
                let Some((_, bytes)) = frame.entry(i) else {
                    continue;
                };
                let entry: Entry = decode_as(|| "log entry".into(), bytes)?;
                if let Body::Key { key, record } = entry.body {
                    let next = fold(key, folded.get(&key), entry.seq, &record)?;
                    folded.insert(key, next);
                }
            }
        }
        let mismatch = |key, problem: &str| Error::IndexMismatch {
            key,
            problem: problem.to_owned(),
        };
        let mut stored = 0u64;
        let mut remaining = folded.clone();
        for item in self.keys() {
            let (key, status) = item?;
            stored += 1;
            match remaining.remove(&key) {
                Some(expected) if expected == status => {}
                Some(_) => return Err(mismatch(key, "stored status differs from the fold")),
                None => {
                    return Err(mismatch(
                        key,
                        "status stored for a key the log never mentions",
                    ))
                }
            }
        }
        if let Some(key) = remaining.keys().next() {
            return Err(mismatch(*key, "no stored status"));
        }
        for state in State::ALL {
            let mut expected = folded
                .iter()
                .filter(|(_, s)| s.state == state)
                .map(|(k, _)| *k);
            for key in self.keys_in_state(state, None) {
                let key = key?;
                if expected.next() != Some(key) {
                    return Err(mismatch(key, "keys-by-state index differs from the fold"));
                }
            }
            if let Some(key) = expected.next() {
                return Err(mismatch(key, "missing from the keys-by-state index"));
            }
        }
        let mut expected_counts = Counts::new();
        for status in folded.values() {
            *expected_counts.entry(status.bucket()).or_insert(0) += 1;
        }
        if expected_counts != self.counts() {
            let key = folded.keys().next().copied().unwrap_or_default();
            return Err(mismatch(key, "counts differ from the fold"));
        }
        Ok(IndexReport { keys: stored })
    }
}

/// Opens sled with the journal's settings. A directory lock that is busy is
/// retried for half a second: sled finishes background writes of a database
/// dropped a moment ago (in this process) before it lets go of the lock. A
/// lock held by another process stays held, and then this fails.
/// The sled settings of a journal. No background flusher: every commit
/// flushes itself, and dropping the database releases its lock at once.
pub(crate) fn sled_config(path: &Path, segment_size: usize) -> sled::Config {
    sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        // sled's default cache is 1 GiB; the journal is written sequentially
        // and read by page, so a small cache keeps the process's memory low.
        .cache_capacity(CACHE_BYTES)
        .segment_size(segment_size)
}

fn open_sled(path: &Path) -> Result<sled::Db> {
    let mut waited = 0;
    let mut segment_size = SEGMENT_SIZE;
    loop {
        // No background flusher: every commit flushes itself.
        let opened = std::panic::catch_unwind(|| sled_config(path, segment_size).open());
        match opened {
            Ok(Ok(db)) => return Ok(db),
            // A journal of another format can have another segment size: open
            // it with its own so that its format version is read and named.
            Ok(Err(err)) if stored_segment_size(&err).is_some_and(|s| s != segment_size) => {
                segment_size = stored_segment_size(&err).unwrap_or(SEGMENT_SIZE);
            }
            Ok(Err(err)) => match map_open_error(path, err) {
                Error::Locked { .. } if waited < LOCK_WAIT_MS => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waited += 20;
                }
                other => return Err(other),
            },
            Err(_) => {
                return Err(Error::Damaged {
                    path: path.to_path_buf(),
                    problem: "sled could not recover its files".into(),
                })
            }
        }
    }
}

/// The segment size a sled database was created with, from sled's refusal to
/// open it with another one ("… please change it back to N").
fn stored_segment_size(err: &sled::Error) -> Option<usize> {
    match err {
        sled::Error::Unsupported(message) if message.contains("io buffer size") => message
            .rsplit(' ')
            .next()
            .and_then(|n| n.trim().parse().ok()),
        _ => None,
    }
}

/// How long a busy directory lock is retried.
const LOCK_WAIT_MS: u64 = 500;

fn map_open_error(path: &Path, err: sled::Error) -> Error {
    match err {
        sled::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            Error::Locked {
                path: path.to_path_buf(),
            }
        }
        sled::Error::Corruption { .. }
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_) => Error::Damaged {
            path: path.to_path_buf(),
            problem: err.to_string(),
        },
        other => Error::Storage { source: other },
    }
}
