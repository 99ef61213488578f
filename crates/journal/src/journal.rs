//! The journal as its users see it: one handle over the sled database, whose
//! operations live with their ideas (`log`, `index`, `runs`, `verify`).
//!
//! Why one handle: a process has one writer (sled locks the directory), and
//! the state every commit moves together (next position, chain head, counts,
//! cursor) must change under one lock and only after a successful flush, so
//! it sits here in `Inner` rather than in the modules that read it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::identity;
use crate::ids::JournalId;
use crate::log::PassState;
use backfill_core::{decode, encode, Digest};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::index::{self, Counts};
use crate::layout::{META_SOURCE, META_TARGET};
use crate::store::{self, Meta, FORMAT_VERSION};
use crate::{Error, Result};

/// At most this many threads encode one commit.
const MAX_THREADS: usize = 4;

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

/// The journal's state beside sled, changed only after the flush that
/// stored it.
pub(crate) struct Inner {
    pub next_seq: u64,
    pub head: Digest,
    pub counts: Counts,
    pub cursor: Option<i64>,
    pub pass: Option<PassState>,
    pub source: Option<SourceFingerprint>,
}

/// An open journal. One process at a time (sled locks the directory); within
/// the process it can be shared: writes are serialized internally.
pub struct Journal {
    pub(crate) db: sled::Db,
    pub(crate) path: PathBuf,
    /// Where the files are: `path`, or a temporary copy of it.
    pub(crate) dir: PathBuf,
    id: JournalId,
    mapping_version: u32,
    inner: Mutex<Inner>,
    /// Log entries when it was opened.
    entries_on_open: u64,
    /// Threads a commit may encode on.
    pub(crate) threads: usize,
    /// The last frame read: lookups in key order hit it, so a frame is
    /// decompressed once per run of keys, not once per key. Frames never
    /// change once written.
    pub(crate) last_frame: Mutex<Option<(u64, Arc<Frame>)>>,
    /// The temporary copy a read-only journal lives in (dropped after the
    /// database).
    _copy: Option<tempfile::TempDir>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Decodes a stored value, naming it in the error.
pub(crate) fn decode_as<T: serde::de::DeserializeOwned>(
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T> {
    decode(bytes).map_err(|source| Error::Decode {
        what: what(),
        source,
    })
}

/// Encodes a value to store, naming it in the error.
pub(crate) fn encode_as<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    encode(value).map_err(|source| Error::Decode {
        what: what.to_owned(),
        source,
    })
}

/// How a journal is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Open, or create in a new or empty directory (planning).
    Create,
    /// Open an existing journal to write it (replay, rollback).
    Existing,
    /// Read a copy: the files are left as they are (status, inspect,
    /// verify).
    ReadOnly,
}

impl Journal {
    /// Opens the journal in directory `path`, or creates one there if the
    /// directory is absent or empty.
    ///
    /// # Errors
    /// [`Error::Locked`] if another process has it open, [`Error::Damaged`] if
    /// its files are not a readable journal (an empty or foreign store under
    /// its identity marker included), [`Error::NotAJournal`] for a directory
    /// of other files, [`Error::NewerFormat`]/[`Error::OlderFormat`] for
    /// another format.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), Access::Create)
    }

    /// Opens an existing journal to write it; never creates one.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`Error::NoJournal`] if there is none.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), Access::Existing)
    }

    /// Opens a copy of an existing journal: its files are left byte for byte
    /// as they are, and a journal another process holds can be read (as of
    /// its last flushed commit). Writes go to the copy and are lost.
    ///
    /// # Errors
    /// As [`open_existing`](Self::open_existing), except [`Error::Locked`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), Access::ReadOnly)
    }

    fn open_with(path: &Path, access: Access) -> Result<Self> {
        let damaged = |problem: String| Error::Damaged {
            path: path.to_path_buf(),
            problem,
        };
        let marked = match identity::inspect(path)? {
            identity::Found::Nothing if access == Access::Create => {
                let staging = identity::staging_dir(path)?;
                let id = {
                    let journal = Self::open_store(&staging, path, None)?;
                    identity::write_marker(&staging, journal.id.0)?;
                    let (entries, head) = journal.head();
                    identity::write_head(&staging, entries, &head)?;
                    journal.id
                };
                identity::restrict(&staging)?;
                identity::install(&staging, path)?;
                Some(id.0)
            }
            identity::Found::Nothing => {
                return Err(Error::NoJournal {
                    path: path.to_path_buf(),
                })
            }
            identity::Found::Other(problem) => {
                return Err(Error::NotAJournal {
                    path: path.to_path_buf(),
                    problem,
                })
            }
            identity::Found::Journal(id) => Some(id),
            identity::Found::Unmarked => None,
        };
        // Check a copy first: sled writes while it opens, and a damaged
        // store must be reported, never replaced.
        let copy = identity::copy(path)?;
        let copy_dir = copy.path().to_path_buf();
        let checked = Self::open_store(&copy_dir, path, Some(copy))?;
        match marked {
            None => {
                return Err(damaged(format!(
                    "the identity marker {} is missing beside a store of journal {}",
                    identity::MARKER,
                    checked.id
                )))
            }
            Some(id) if checked.entries_on_open == 0 && checked.id.0 != id => {
                return Err(damaged(format!(
                    "the store is empty or new (journal id {}) but journal {id} was created here: its log was deleted or overwritten",
                    checked.id
                )))
            }
            Some(id) if checked.id.0 != id => {
                return Err(damaged(format!(
                    "the store belongs to journal {} but the identity marker names journal {id}: the store was replaced",
                    checked.id
                )))
            }
            Some(_) => {}
        }
        if let Some((entries, head)) = identity::read_head(path) {
            let (have, hash) = checked.head();
            if entries > have {
                return Err(damaged(format!(
                    "the log ends after {have} entries but {entries} were committed ({}): the log was truncated or rolled back",
                    identity::HEAD
                )));
            }
            if entries == have && head != hash.to_string() {
                return Err(damaged(format!(
                    "the chain head after {have} entries is {hash} but {head} was committed ({}): the log was edited or replaced",
                    identity::HEAD
                )));
            }
        }
        if access == Access::ReadOnly {
            return Ok(checked);
        }
        drop(checked);
        let journal = Self::open_store(path, path, None)?;
        // sled may have written a snapshot while opening.
        identity::restrict(path)?;
        Ok(journal)
    }

    /// Opens the sled store in `dir` (reported as `path`), creating its
    /// metadata if it is empty; `copy` keeps a temporary copy alive.
    fn open_store(dir: &Path, path: &Path, copy: Option<tempfile::TempDir>) -> Result<Self> {
        let db = store::open_sled(dir).map_err(|e| match e {
            Error::Damaged { problem, .. } => Error::Damaged {
                path: path.to_path_buf(),
                problem,
            },
            Error::Locked { .. } => Error::Locked {
                path: path.to_path_buf(),
            },
            other => other,
        })?;
        let meta = Meta::read_or_create(&db, path)?;
        let counts = index::load_counts(&db, path)?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            entries_on_open: meta.next_seq,
            id: JournalId(meta.id),
            mapping_version: meta.mapping_version,
            inner: Mutex::new(Inner {
                next_seq: meta.next_seq,
                head: meta.head,
                counts,
                cursor: meta.cursor,
                pass: meta.pass,
                source: meta.source,
            }),
            threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_THREADS),
            last_frame: Mutex::new(None),
            _copy: copy,
        })
    }

    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner half-updated:
        // it is only assigned after a successful flush.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The journal's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal id, created on first open.
    pub fn id(&self) -> JournalId {
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

    /// The chain head: (entries, hash of the last entry).
    pub fn head(&self) -> (u64, Digest) {
        let inner = self.inner();
        (inner.next_seq, inner.head)
    }

    /// Number of log entries.
    pub fn entries(&self) -> u64 {
        self.inner().next_seq
    }

    /// Where the pass over the source stands (`None`: no pass yet).
    pub fn pass(&self) -> Option<PassState> {
        self.inner().pass
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
    /// The target database this journal applies to, once bound
    /// (`postgres://host:port/database`).
    pub fn target(&self) -> Result<Option<String>> {
        self.db
            .get(META_TARGET)?
            .map(|bytes| decode_as::<String>(|| "target".into(), &bytes))
            .transpose()
    }

    /// Refuses a target other than the one the journal applied to.
    pub fn check_target(&self, target: &str) -> Result<()> {
        match self.target()? {
            Some(bound) if bound != target => Err(Error::TargetMismatch {
                journal: bound,
                requested: target.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Binds the journal to the target it applies to on first use;
    /// afterwards the same target is required.
    pub fn bind_target(&self, target: &str) -> Result<()> {
        self.check_target(target)?;
        if self.target()?.is_none() {
            self.db.insert(META_TARGET, encode_as("target", &target)?)?;
            self.db.flush()?;
        }
        Ok(())
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
}
