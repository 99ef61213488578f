//! Opening the sled database and reading what identifies the journal in it.
//!
//! Why these settings: sled 0.34 writes a node larger than a quarter of its
//! segment size to a blob file that it never fsyncs, so the journal's
//! durability depends on the segment size (docs/journal.md, "Why frames"). Why
//! no background flusher: every commit flushes itself, and then dropping the
//! database releases its directory lock at once. Why the retries: a journal
//! dropped a moment ago in this process still holds its lock until sled's
//! background writes finish, and a journal of format 1 was created with
//! another segment size, which sled refuses before its format can be read and
//! named. Why the metadata is checked here: a journal of another format, or a
//! sled database that is not a journal, must be refused before anything reads
//! its log or index.

use std::path::{Path, PathBuf};

use backfill_core::{Digest, MAPPING_VERSION};
use uuid::Uuid;

use crate::journal::{decode_as, encode_as, SourceFingerprint};
use crate::layout::{
    META_CURSOR, META_FORMAT, META_HEAD, META_ID, META_MAPPING, META_PASS, META_SOURCE,
};
use crate::log::PassState;
use crate::{Error, Result};

/// The journal format this build writes and the only one it reads. Format 1
/// stored a commit as one value with a serial per-entry chain
/// (docs/journal.md).
pub const FORMAT_VERSION: u32 = 3;

/// sled's segment (and I/O buffer) size for journals. sled 0.34 writes a node
/// larger than a quarter of this to a blob file that it never fsyncs; 8 MiB
/// keeps the journal's nodes (at most 17 frames of about 64 KiB, or status
/// pages) inside sled's own log. Tests open journals with it.
pub const SEGMENT_SIZE: usize = 8 << 20;

/// sled's page cache.
const CACHE_BYTES: u64 = 32 << 20;

/// How many times [`account`] looks a value up again after reading it: sled
/// 0.34.7's per-shard access queue holds 64, so every read fills its shard's
/// queue at least once and sled applies the evictions due.
const ACCESS_NUDGES: usize = 64;

/// Makes sled's cache bound hold for a read of `key`.
///
/// Why: sled 0.34.7 splits its LRU into 256 shards (by page id) and applies a
/// shard's accesses, and so its evictions, only once 64 of them have piled
/// up in that shard. A pass that reads each page once (the chain check,
/// verify's event reads, `inspect`'s status scan) never fills a shard, so
/// nothing is evicted and every page read stays in memory: `journal verify`
/// held the whole 339 MB log of a 5M-row journal whatever the cache size
/// (decision 58). Looking the key up again right away fills the shard of the
/// page just read, so sled evicts as it goes: 481 MB became 151 MB. The
/// lookups hit that cached page (~0.2 µs each, ~0.35 s per 25,000 frames).
pub(crate) fn account(db: &sled::Db, key: &[u8]) {
    for _ in 0..ACCESS_NUDGES {
        // A failed lookup here changes nothing: the read that matters has
        // already succeeded or failed on its own.
        let _ = db.get(key);
    }
}

/// How long a busy directory lock is retried.
const LOCK_WAIT_MS: u64 = 500;

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

/// Opens sled with the journal's settings. A directory lock that is busy is
/// retried for half a second: sled finishes background writes of a database
/// dropped a moment ago (in this process) before it lets go of the lock. A
/// lock held by another process stays held, and then this fails.
pub(crate) fn open_sled(path: &Path) -> Result<sled::Db> {
    let mut waited = 0;
    let mut segment_size = SEGMENT_SIZE;
    let mut cleared = false;
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
            Ok(Err(sled::Error::Corruption { .. }))
                if !cleared && clear_unfinished_snapshots(path)? =>
            {
                cleared = true;
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

/// Removes the snapshot files sled 0.34.7 left unfinished when its process
/// was killed while writing one (`snap.<lsn>.generating`), if no process
/// holds the database; says whether it removed any.
///
/// Why: sled writes a snapshot to `snap.<lsn>.generating`, fsyncs it and
/// renames it to `snap.<lsn>`, removing older snapshots only after that. But
/// when it opens a database it reads the newest `snap.*` file *including* an
/// unfinished `.generating` one, and a torn one fails its checksum: the
/// database cannot be opened at all (sled issues #1527, #1533; seen here after
/// a kill -9 during `run`). Such a file is by construction not a snapshot
/// sled finished; the previous snapshot and the log it covers are intact, so
/// removing it loses nothing (docs/journal.md, decision 56).
fn clear_unfinished_snapshots(path: &Path) -> Result<bool> {
    let unfinished: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
            })
            .collect(),
        Err(_) => return Ok(false),
    };
    if unfinished.is_empty() {
        return Ok(false);
    }
    // sled holds an exclusive lock (flock) on its `db` file while open: if
    // another process has the database, leave its files alone.
    let db_file = path.join("db");
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&db_file)
    else {
        return Ok(false);
    };
    if fs2::FileExt::try_lock_exclusive(&file).is_err() {
        return Ok(false);
    }
    for snapshot in &unfinished {
        std::fs::remove_file(snapshot).map_err(|e| Error::Io {
            path: snapshot.clone(),
            what: "removing sled's unfinished snapshot".into(),
            source: e,
        })?;
    }
    drop(file);
    Ok(true)
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

/// The journal's metadata, as read at open.
pub(crate) struct Meta {
    /// The journal id, created with it.
    pub id: Uuid,
    /// The mapping version the journal was created with.
    pub mapping_version: u32,
    /// The number of log entries (the chain head's position).
    pub next_seq: u64,
    /// The hash of the last log entry (the chain head).
    pub head: Digest,
    /// The source cursor, once moved.
    pub cursor: Option<i64>,
    /// Where the pass over the source stands.
    pub pass: Option<PassState>,
    /// The source, once bound.
    pub source: Option<SourceFingerprint>,
}

impl Meta {
    /// Reads the metadata of the journal in `db`, creating it if the database
    /// is empty (a new journal).
    ///
    /// # Errors
    /// [`Error::Damaged`] if it is missing or malformed,
    /// [`Error::NewerFormat`] or [`Error::OlderFormat`] for another format.
    pub(crate) fn read_or_create(db: &sled::Db, path: &Path) -> Result<Self> {
        let damaged = |problem: String| Error::Damaged {
            path: path.to_path_buf(),
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
        let path: PathBuf = path.to_path_buf();
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
        let pass = match db.get(META_PASS)? {
            Some(bytes) => Some(decode_as::<PassState>(|| "pass".into(), &bytes)?),
            None => None,
        };
        let source = match db.get(META_SOURCE)? {
            Some(bytes) => Some(decode_as::<SourceFingerprint>(|| "source".into(), &bytes)?),
            None => None,
        };
        Ok(Self {
            id,
            mapping_version,
            next_seq,
            head,
            cursor,
            pass,
            source,
        })
    }
}
