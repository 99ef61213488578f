//! The Postgres side of backfill: reading whole groups from the source,
//! loading the directories, writing batches to the target with their ledger
//! rows, and the engine that drives plan → journal → apply.
//!
//! Why one crate for all of it: every piece here shares the connection,
//! error and retry policy, and none of it has rules of its own — the rules are
//! in `backfill-core`, the memory in `backfill-journal`. This crate only moves
//! bytes between them and Postgres, set-based and in transactions.
#![deny(missing_docs)]

pub mod audit;
pub mod demo;
pub mod engine;
pub mod schema;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use engine::{Engine, EngineOptions, OnConflict, Progress, Summary};
pub use schema::{Missing, SchemaReport};
pub use sink::{ApplyOutcome, KeyOutcome, NullSink, PostgresSink, Sink, TableCounts};
pub use source::{SourceReader, SourceTable};

/// Errors of the Postgres side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Could not connect.
    #[error("cannot connect to {url}: check the URL, that the server runs, and the credentials")]
    Connect {
        /// The URL without its password.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Tables or columns the backfill needs are missing.
    #[error("missing in the database: {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    MissingSchema {
        /// What is missing.
        missing: Vec<Missing>,
    },
    /// The source table has no rows.
    #[error("source table {table} is empty: nothing to backfill (wrong --source-table or database?). Pass --allow-empty if that is expected")]
    EmptySource {
        /// The table.
        table: String,
    },
    /// Another applier holds the target.
    #[error("another backfill is applying to this target (advisory lock {key} is held): wait for it to finish")]
    TargetLocked {
        /// The advisory lock key.
        key: i64,
    },
    /// A source value that the core cannot read.
    #[error("{table}.{column} = {value:?} on row id {row_id} cannot be read")]
    InvalidSourceValue {
        /// The source table.
        table: String,
        /// The column.
        column: &'static str,
        /// `id` of the row.
        row_id: i64,
        /// The value as text.
        value: String,
    },
    /// A database statement failed.
    #[error("database error while {context}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The connection was lost and did not come back after retries.
    #[error("lost the database connection while {context} ({attempts} attempts); resume with `backfill replay`")]
    ConnectionLost {
        /// What was being done.
        context: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: sqlx::Error,
    },
    /// Stopped by a signal after finishing the batch in flight.
    #[error("interrupted; resume with `backfill replay`")]
    Interrupted,
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] backfill_journal::Error),
    /// The core failed.
    #[error(transparent)]
    Core(#[from] backfill_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True for errors that mean the connection, not the statement, failed.
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c == "57P01"))
}

/// Maps a driver error: a lost connection is resumable (exit 3), anything
/// else is a database error naming what was being done.
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| {
        if is_connection_error(&source) {
            Error::ConnectionLost {
                context,
                attempts: 1,
                source,
            }
        } else {
            Error::Database { context, source }
        }
    }
}

/// The URL with any password replaced by `***`, for messages and fingerprints.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Connects a pool, mapping failure to [`Error::Connect`].
pub async fn connect(url: &str, max_connections: u32) -> Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|source| Error::Connect {
            url: redact_url(url),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres:///db"), "postgres:///db");
    }
}
