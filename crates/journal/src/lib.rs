//! The journal is the backfill's memory: every key's migration event, every
//! state it passed through, the runs, and the source cursor, in one local sled
//! database. Resume, dry run and audit all read it; nothing else is needed to
//! know what happened.
//!
//! Why a log with a fold: an auditor must be able to replay history, while an
//! operator needs O(1) answers ("how many pending?"). So records are appended
//! to a hash-chained log, and the fold of each key's records is kept as an
//! index written in the same atomic batch; `verify_index` proves the two agree
//! and `verify_chain` proves the log was not edited, reordered or truncated.
//!
//! Layout, in sled's default tree (one tree, so that one `apply_batch` is one
//! atomic unit covering log, index and counts):
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `M` | name | metadata (format, id, mapping version, source, cursor, head) |
//! | `L` | seq of the frame's first entry (u64 BE) | a frame: up to ~64 KiB of one commit's entries, LZ4-compressed, each with its chain hash |
//! | `S` | page = key div 64 (order-preserving BE) | the [`KeyStatus`] of each key of the page |
//! | `I` | state tag, page | a 64-bit map of the page's keys in that state |
//! | `C` | (state, reason) | count (u64 BE) |
//! | `R` | run id | the run's [`Run`] |
#![deny(missing_docs)]

mod frame;
mod identity;
mod ids;
mod index;
mod journal;
mod layout;
mod log;
mod record;
mod runs;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod verify;

pub use frame::{chain_hash, LEAF_DOMAIN, LINK_DOMAIN};
pub use identity::MARKER;
pub use ids::{JournalId, RunId};
pub use journal::{Journal, SourceFingerprint};
pub use log::{Batch, Receipt};
pub use log::{PassState, MAX_FRAME_BYTES};
pub use record::{decide, fold, Decision, KeyStatus, Logged, Reason, Record, State};
pub use runs::{Run, RunEnd};
pub use store::{FORMAT_VERSION, SEGMENT_SIZE};
pub use verify::{ChainProblem, ChainReport, IndexReport};

use std::path::PathBuf;

use backfill_core::Digest;
pub use uuid::Uuid;

/// What kind of problem an error is, across the crates: it decides the exit
/// code and whether a run can be resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Something the operator must fix before anything can run: a setting, a
    /// URL, a missing table or privilege, a journal in use (exit 2).
    Configuration,
    /// Interrupted by something passing (a lost connection, a timeout): the
    /// same command, or `replay`, resumes (exit 3).
    Resumable,
    /// The record itself is in doubt: a damaged journal, a broken chain, a
    /// mismatch between journal and target (exit 2, naming what is damaged).
    Integrity,
    /// Refused on purpose to protect data: another applier holds the lock,
    /// the journal belongs to another source or target (exit 2).
    Refused,
}

impl ErrorKind {
    /// The name in JSON and in run records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configuration => "configuration",
            Self::Resumable => "resumable",
            Self::Integrity => "integrity",
            Self::Refused => "refused",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Locked { .. }
            | Self::OlderFormat { .. }
            | Self::NewerFormat { .. }
            | Self::NoJournal { .. }
            | Self::NotAJournal { .. }
            | Self::EntryTooLarge { .. }
            | Self::Io { .. } => ErrorKind::Configuration,
            Self::SourceMismatch { .. } | Self::TargetMismatch { .. } => ErrorKind::Refused,
            // A journal that cannot be written (disk full, I/O) stops the run;
            // what it holds is intact, so the run resumes once that is fixed.
            Self::Storage { .. } => ErrorKind::Resumable,
            Self::UnknownRun { .. } => ErrorKind::Configuration,
            Self::Damaged { .. }
            | Self::Decode { .. }
            | Self::UnknownKey { .. }
            | Self::KeyMismatch { .. }
            | Self::ConflictingHash { .. }
            | Self::ChainBroken { .. }
            | Self::IndexMismatch { .. } => ErrorKind::Integrity,
        }
    }
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No journal where one was expected.
    #[error("no journal at {path}: a journal is created by planning (plan, run)")]
    NoJournal {
        /// The directory.
        path: PathBuf,
    },
    /// A directory that is not a journal, where a journal was to be created
    /// or opened.
    #[error("{path} is not a journal ({problem}); a journal is created only in a new or empty directory")]
    NotAJournal {
        /// The directory.
        path: PathBuf,
        /// What is there.
        problem: String,
    },
    /// A file operation on the journal's directory failed.
    #[error("journal {path}: {what} failed")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An entry too large to store durably (one key's event, compressed).
    #[error("{}: its event takes {bytes} bytes in the journal, more than the {limit} it stores durably; reduce the source row's metadata or sentences", key.map_or_else(|| "an entry".to_owned(), |k| format!("collector_result_id {k}")))]
    EntryTooLarge {
        /// The key, if the entry is a key's.
        key: Option<i64>,
        /// Its stored size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Another process has the journal open.
    #[error("journal {path} is in use by another process (one writer at a time); wait for it to finish or use another journal directory")]
    Locked {
        /// The journal directory.
        path: PathBuf,
    },
    /// The journal's files cannot be read as a journal.
    #[error("journal {path} is damaged: {problem}")]
    Damaged {
        /// The journal directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The journal was written by an earlier version of backfill, in a format
    /// this one does not read.
    #[error("journal {path} has format version {found}, written by an earlier backfill; this backfill reads format {supported}: finish it with the backfill that wrote it, or plan again into a new journal directory")]
    OlderFormat {
        /// The journal directory.
        path: PathBuf,
        /// The journal's format version.
        found: u32,
        /// The format this build reads.
        supported: u32,
    },
    /// The journal was written by a newer version of backfill.
    #[error("journal {path} has format version {found}; this backfill reads up to {supported}: upgrade backfill")]
    NewerFormat {
        /// The journal directory.
        path: PathBuf,
        /// The journal's format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// sled failed.
    #[error("journal storage error")]
    Storage {
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A stored value does not decode.
    #[error("journal value {what} does not decode")]
    Decode {
        /// Which value.
        what: String,
        /// The core's decoding error.
        #[source]
        source: backfill_core::Error,
    },
    /// A record other than `Planned` for a key that was never planned.
    #[error("collector_result_id {key}: cannot record {record} for a key that was never planned")]
    UnknownKey {
        /// The key.
        key: i64,
        /// The record's kind.
        record: &'static str,
    },
    /// A `Planned` record whose event belongs to another key.
    #[error("collector_result_id {key}: the event is for key {event_key}")]
    KeyMismatch {
        /// The key recorded under.
        key: i64,
        /// The event's key.
        event_key: i64,
    },
    /// An `Applied` record whose hash is not the planned event's.
    #[error("collector_result_id {key}: applied content hash {actual} differs from the planned {expected}")]
    ConflictingHash {
        /// The key.
        key: i64,
        /// The planned event's content hash.
        expected: Digest,
        /// The hash that was reported applied.
        actual: Digest,
    },
    /// The journal was planned from another source.
    #[error(
        "journal was planned from {journal} but this run reads {requested}: one journal per source"
    )]
    SourceMismatch {
        /// The journal's source.
        journal: SourceFingerprint,
        /// The source of this run.
        requested: SourceFingerprint,
    },
    /// The journal applied to another target database.
    #[error(
        "journal applied to {journal} but this command targets {requested}: one journal per target"
    )]
    TargetMismatch {
        /// The journal's target.
        journal: String,
        /// The target of this command.
        requested: String,
    },
    /// A run id the journal does not know.
    #[error("no run {run} in this journal")]
    UnknownRun {
        /// The run id.
        run: RunId,
    },
    /// The hash chain is broken.
    #[error("hash chain broken at log position {position}: {problem}")]
    ChainBroken {
        /// The first bad position.
        position: u64,
        /// What is wrong there.
        problem: ChainProblem,
    },
    /// The index does not equal the fold of the log.
    #[error("index disagrees with the log for collector_result_id {key}: {problem}")]
    IndexMismatch {
        /// The first key that differs.
        key: i64,
        /// What differs.
        problem: String,
    },
}

/// `Result` with the journal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sled::Error> for Error {
    fn from(source: sled::Error) -> Self {
        Error::Storage { source }
    }
}
