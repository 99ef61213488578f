//! The pure core of backfill: source rows of one `collector_result_id` in,
//! one deterministic, content-hashed [`MigrationEvent`] out.
//!
//! Why pure: every guarantee the tool makes — resumability, exactly-once,
//! dry run, audit — rests on the same inputs always giving the same bytes.
//! Keeping the rules free of I/O lets them be tested exhaustively (unit tests
//! per rule, property tests, fuzzing) without a database, and lets the journal
//! and the applier treat an event as an opaque, verifiable value.
//!
//! ```
//! use backfill_core::{plan, Outcome};
//! use backfill_core::testing::GroupBuilder;
//!
//! let group = GroupBuilder::new(42)
//!     .competitor("Acme", Some("12.345"))
//!     .competitor_row("Unknown Co", |_| {})
//!     .build();
//! let event = plan(42, &group.rows, &group.directories).unwrap();
//! let rows = event.target_rows().expect("migrated");
//! assert_eq!(rows.competitors.len(), 1);
//! assert_eq!(rows.competitors[0].metrics.visibility_index.unwrap().to_string(), "12.35");
//! assert_eq!(event.notes.len(), 1); // "Unknown Co" did not resolve
//! # let _ = Outcome::Skip(backfill_core::SkipReason::NoBrandRow);
//! ```
#![deny(missing_docs)]

mod decimal;
mod event;
mod hash;
mod plan;
mod source;
mod target;

#[cfg(feature = "testing")]
pub mod testing;

pub use decimal::{Decimal, Numeric52};
pub use event::{
    DroppedSentiment, MigrationEvent, Note, Outcome, RejectReason, Side, SkipReason, TargetColumn,
    Unresolved,
};
pub use hash::{
    content_hash, current_content_hash, decode, decode_event, encode, encode_into, source_hash,
    Digest, SourceInputs, CONTENT_DOMAIN, DECODE_LIMIT, SOURCE_DOMAIN,
};
pub use plan::plan;
pub use source::{normalize_name, Directories, Json, Resolution, SourceRow, Timestamp};
pub use target::{CompetitorRows, Fact, Metrics, Sentiment, SentimentLabel, TargetRows};

/// The version of the mapping rules. It is hashed into every source and
/// content hash: bump it whenever a rule changes what is written, so that
/// every journal sees the change as drift instead of silently mixing rules.
pub const MAPPING_VERSION: u32 = 1;

/// Errors of the core crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Text that is not a decimal as Postgres prints `numeric`.
    #[error("{input:?} is not a decimal number (expected digits with an optional sign and point, NaN or Infinity)")]
    InvalidDecimal {
        /// The text.
        input: String,
    },
    /// Text that is not a 64-digit hex hash.
    #[error("{input:?} is not a 64-digit hex hash")]
    InvalidDigest {
        /// The text.
        input: String,
    },
    /// A row handed to `plan` belongs to another key.
    #[error("row {row_id} has collector_result_id {actual} but is planned under {expected}: a group must hold exactly one key's rows")]
    ForeignRow {
        /// The key being planned.
        expected: i64,
        /// The row's key.
        actual: i64,
        /// `extracted_positions.id` of the row.
        row_id: i64,
    },
    /// Canonical encoding failed.
    #[error("canonical encoding failed")]
    Encode {
        /// bincode's error.
        #[source]
        source: bincode::error::EncodeError,
    },
    /// Bytes that do not decode to the expected type.
    #[error("bytes do not decode as a canonical value")]
    Decode {
        /// bincode's error.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// A value decoded from fewer bytes than given.
    #[error("decoded a value from {used} of {len} bytes: trailing bytes")]
    TrailingBytes {
        /// Bytes consumed.
        used: usize,
        /// Bytes given.
        len: usize,
    },
    /// A stored content hash does not match the content.
    #[error(
        "collector_result_id {key}: content hash {actual} does not match the recorded {expected}"
    )]
    ConflictingHash {
        /// The key.
        key: i64,
        /// The recorded hash.
        expected: Digest,
        /// The hash of the content as it is.
        actual: Digest,
    },
}

/// `Result` with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/library.md")]
struct LibraryDoctests;
