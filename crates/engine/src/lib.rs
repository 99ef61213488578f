//! The backfill pipeline, written once: read → plan → record → apply →
//! record, over a [`Source`], a [`Sink`] and the journal, driven by a
//! [`RunControl`].
//!
//! Why a crate of its own, without sqlx: every mode the product has or will
//! have (backfill, replay, reapply drifted, dry run, initial load, following a
//! live source, shards) is the same pipeline with another feed or another
//! sink. Written once here, each mode is a few lines of [`Mode`] and the
//! invariants (the journal knows a key before the target does; a batch is
//! split until only the keys the database refuses fail; a stop leaves every
//! key in a state the journal can show) hold for all of them, and are tested
//! without a database through [`MemorySource`] and [`MemorySink`].
//! `backfill-postgres` provides the Postgres adapters.
#![deny(missing_docs)]

pub mod control;
mod engine;
mod error;
pub mod memory;
mod pipeline;
pub mod sink;
pub mod source;
pub mod summary;
pub mod throttle;

pub use backfill_journal::{ErrorKind, JournalId, RunEnd, RunId};
pub use control::{Event, Limits, Observer, Phase, RunControl, WaitReason};
pub use engine::{Engine, EngineSettings, Mode, RunReport};
pub use error::{AdapterError, Error, Result};
pub use memory::{MemorySink, MemorySource};
pub use sink::{
    classify, Action, ApplyError, ApplyOutcome, Existing, KeyOutcome, NullSink, OnConflict, Sink,
    TableCounts,
};
pub use source::{KeyRange, Source, SourceBatch};
pub use summary::{KeyResult, Summary};
