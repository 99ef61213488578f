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

use crate::ids::JournalId;
use crate::log::PassState;
use backfill_core::{decode, encode, Digest};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;
use crate::index::{self, Counts};
use crate::layout::META_SOURCE;
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
    id: JournalId,
    mapping_version: u32,
    inner: Mutex<Inner>,
    /// Threads a commit may encode on.
    pub(crate) threads: usize,
    /// The last frame read: lookups in key order hit it, so a frame is
    /// decompressed once per run of keys, not once per key. Frames never
    /// change once written.
    pub(crate) last_frame: Mutex<Option<(u64, Arc<Frame>)>>,
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

impl Journal {
    /// Opens (or creates) the journal in directory `path`.
    ///
    /// # Errors
    /// [`Error::Locked`] if another process has it open, [`Error::Damaged`] if
    /// its files are not a readable journal, [`Error::NewerFormat`] if a newer
    /// backfill wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = store::open_sled(&path)?;
        let meta = Meta::read_or_create(&db, &path)?;
        let counts = index::load_counts(&db, &path)?;
        Ok(Self {
            db,
            path,
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
