//! The Postgres adapters of backfill: the source reader and its directories
//! (`Source`), the target sink with its ledger and lock (`Sink`), the schema,
//! the audit read-back, and the demo data.
//!
//! Why one crate for all of it: every piece here shares the connection,
//! error and retry policy, and none of it has rules of its own — the rules are
//! in `backfill-core`, the memory in `backfill-journal`, the pipeline in
//! `backfill-engine`. This crate only moves bytes between them and Postgres,
//! set-based and in transactions.
#![deny(missing_docs)]

pub mod audit;
pub mod demo;
pub mod lock;
pub mod schema;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

pub use backfill_journal::ErrorKind;
pub use lock::{LockScope, TargetLock};
pub use schema::{Missing, SchemaParts, SchemaReport};
pub use sink::PostgresSink;
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
    /// Another applier holds the target.
    #[error("another backfill is applying to this target (advisory lock {key} is held): wait for it to finish")]
    TargetLocked {
        /// The advisory lock key.
        key: i64,
    },
    /// The applier lock was lost (its connection ended) and another process
    /// holds it now: two appliers must never write at once.
    #[error("lost the target's advisory lock {key} and another backfill holds it now: stopped before committing")]
    LockLost {
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
    /// The connection was lost (or a statement kept timing out) and did not
    /// come back after retries.
    #[error("lost the database connection while {context} ({attempts} attempts)")]
    ConnectionLost {
        /// What was being done.
        context: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: sqlx::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] backfill_journal::Error),
    /// The core failed.
    #[error(transparent)]
    Core(#[from] backfill_core::Error),
}

impl Error {
    /// What kind of problem this is (exit code, resumability).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::MissingSchema { .. } | Self::InvalidSourceValue { .. } => {
                ErrorKind::Configuration
            }
            Self::TargetLocked { .. } | Self::LockLost { .. } => ErrorKind::Refused,
            Self::Database { source, .. } => match fault(source) {
                Fault::Connection | Fault::Transient => ErrorKind::Resumable,
                Fault::KeyData | Fault::Target => ErrorKind::Configuration,
            },
            Self::ConnectionLost { .. } => ErrorKind::Resumable,
            Self::Journal(e) => e.kind(),
            Self::Core(_) => ErrorKind::Integrity,
        }
    }
}

impl From<Error> for backfill_engine::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Journal(e) => Self::Journal(e),
            Error::Core(e) => Self::Core(e),
            other => Self::Adapter(backfill_engine::AdapterError::new(other.kind(), other)),
        }
    }
}

/// What a database error means for the work that hit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection, not the statement, failed: retry on a new one.
    Connection,
    /// The statement lost a race or waited too long (lock or statement
    /// timeout, serialization failure, deadlock): retry with backoff.
    Transient,
    /// Something in the rows (a constraint, a foreign key, a bad value): only
    /// the keys that carry it fail.
    KeyData,
    /// Something about the target as a whole (a privilege, a missing table, a
    /// read-only transaction, a full disk, too many connections): every key
    /// would fail the same way, so the run stops and names it.
    Target,
}

/// Classifies a SQLSTATE. Pure: the decision between failing a key and
/// stopping the run is tested without a database.
pub fn fault_of_sqlstate(code: &str) -> Fault {
    match code {
        // Lock not available (lock_timeout), statement/query canceled
        // (statement_timeout), serialization failure, deadlock.
        "55P03" | "57014" | "40001" | "40P01" => Fault::Transient,
        // Admin shutdown, crash shutdown, cannot connect now.
        "57P01" | "57P02" | "57P03" => Fault::Connection,
        c if c.starts_with("08") => Fault::Connection,
        // Data exceptions and integrity constraint violations.
        c if c.starts_with("22") || c.starts_with("23") => Fault::KeyData,
        _ => Fault::Target,
    }
}

/// Classifies a driver error (see [`Fault`]).
pub fn fault(err: &sqlx::Error) -> Fault {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Fault::Connection,
        sqlx::Error::Database(db) => db.code().map_or(Fault::Target, |c| fault_of_sqlstate(&c)),
        _ => Fault::Target,
    }
}

/// True for errors that mean the connection, not the statement, failed.
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    fault(err) == Fault::Connection
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    use super::{fault_of_sqlstate, redact_url, Fault};

    #[test]
    fn errors_of_a_key_fail_the_key_and_errors_of_the_target_stop_the_run() {
        for (code, fault) in [
            ("23503", Fault::KeyData),    // foreign key
            ("23505", Fault::KeyData),    // unique
            ("23514", Fault::KeyData),    // check
            ("22003", Fault::KeyData),    // numeric out of range
            ("22P02", Fault::KeyData),    // invalid text representation
            ("42501", Fault::Target),     // insufficient privilege
            ("42P01", Fault::Target),     // undefined table
            ("25006", Fault::Target),     // read-only transaction
            ("53100", Fault::Target),     // disk full
            ("53300", Fault::Target),     // too many connections
            ("55P03", Fault::Transient),  // lock_timeout
            ("57014", Fault::Transient),  // statement_timeout
            ("40001", Fault::Transient),  // serialization failure
            ("40P01", Fault::Transient),  // deadlock
            ("57P01", Fault::Connection), // admin shutdown
            ("08006", Fault::Connection), // connection failure
        ] {
            assert_eq!(fault_of_sqlstate(code), fault, "{code}");
        }
    }

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
