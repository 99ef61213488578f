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
mod copy;
mod copy_out;
pub mod demo;
pub mod initial;
pub mod lock;
pub mod ranges;
pub mod schema;
pub mod sink;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod timestamp;

pub use backfill_journal::ErrorKind;
pub use lock::{LockScope, TargetLock};
pub use schema::{Missing, SchemaParts, SchemaReport};
pub use sink::{PostgresSink, Timeouts};
pub use source::{SourceReader, SourceTable};

/// Errors of the Postgres side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Could not connect.
    #[error("cannot connect to {url}: {problem}")]
    Connect {
        /// The database as `postgres://user@host:port/db` (never a password).
        url: String,
        /// What to check, from [`connect_problem`].
        problem: &'static str,
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
    /// `run --initial-load` needs empty target tables.
    #[error("--initial-load needs empty target tables, and {table} has rows: run without --initial-load (the online path), or empty the five target tables first")]
    TargetNotEmpty {
        /// The first table found with rows.
        table: String,
    },
    /// `run --initial-load` gives `metric_facts` its ids from that table's
    /// own sequence.
    #[error("--initial-load gives metric_facts its ids in blocks from its own sequence, and metric_facts.id's default is not nextval of that sequence with increment 1: run without --initial-load (the online path)")]
    FactIdsNotFromSequence,
    /// A constraint deferred by an initial load could not be re-created.
    #[error("re-creating constraint {name} on {table} (deferred by an initial load) failed: fix the rows it names, then run any backfill command against this target again")]
    RestoreConstraint {
        /// The table.
        table: String,
        /// The constraint.
        name: String,
        /// The database's refusal.
        #[source]
        source: sqlx::Error,
    },
    /// A restore was given a pool it cannot hold its lock and work beside it
    /// in (it would wait for a connection until the pool's timeout).
    #[error("restoring the constraints an initial load deferred needs a pool of at least 2 connections (one holds the applier lock while another re-creates them); this pool allows {max}")]
    RestorePoolTooSmall {
        /// The pool's `max_connections`.
        max: u32,
    },
    /// A record of `backfill.deferred_constraints` that is not what an
    /// initial load writes: it is not executed.
    #[error("backfill.deferred_constraints records {name} on {table} as {definition:?}, which is not a foreign key, unique constraint or plain index as the database writes them: it was not executed; re-create the constraint by hand from ../shared/schema/target.sql and delete the record")]
    DeferredRecord {
        /// The table.
        table: String,
        /// The constraint.
        name: String,
        /// What is recorded.
        definition: String,
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
    /// A statement kept timing out or losing races (lock_timeout,
    /// statement_timeout, serialization failures, deadlocks) through every
    /// retry.
    #[error("gave up {context} after {attempts} attempts: {cause} each time (another session holds locks on the target for longer than --lock-timeout, or statements need more than --statement-timeout)")]
    RetriesExhausted {
        /// What was being done.
        context: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last cause (`lock_timeout`, …).
        cause: &'static str,
        /// The last error.
        #[source]
        source: sqlx::Error,
    },
    /// The connection goes through a transaction-mode pooler (PgBouncer,
    /// Supavisor on port 6543): session advisory locks do not hold there.
    #[error("{url} goes through a transaction-mode connection pooler (consecutive statements ran on backends {first} and {second}): the applier lock cannot be held; connect directly or through a session-mode pooler (Supabase: port 5432, not 6543)")]
    TransactionPooler {
        /// The database.
        url: String,
        /// One backend pid seen.
        first: i32,
        /// Another.
        second: i32,
    },
    /// The connection was lost and did not come back after retries.
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
            Self::TransactionPooler { .. }
            | Self::TargetNotEmpty { .. }
            | Self::FactIdsNotFromSequence
            | Self::RestoreConstraint { .. }
            | Self::RestorePoolTooSmall { .. } => ErrorKind::Configuration,
            Self::DeferredRecord { .. } => ErrorKind::Integrity,
            Self::RetriesExhausted { .. } => ErrorKind::Resumable,
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

/// The retry cause of a transient or connection error, as counted in the
/// summary.
pub fn retry_cause(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("55P03") => "lock_timeout",
            Some("57014") => "statement_timeout",
            Some("40001") => "serialization_failure",
            Some("40P01") => "deadlock",
            _ => "connection",
        },
        _ => "connection",
    }
}

/// What to check when connecting failed, in an operator's words. TLS,
/// refused connections and authentication are told apart, so a wrong port
/// says "connection refused" rather than "pool timed out".
pub fn connect_problem(err: &sqlx::Error) -> &'static str {
    const TLS: &str = "the TLS handshake failed: the server's certificate is not trusted (check sslrootcert) or not issued for this host name (sslmode=verify-full checks it)";
    let tls_io = |io: &std::io::Error| {
        let text = io.to_string().to_lowercase();
        ["certificate", "handshake", "tls", "ssl"]
            .iter()
            .any(|w| text.contains(w))
    };
    match err {
        sqlx::Error::Tls(_) => TLS,
        sqlx::Error::Io(io) if tls_io(io) => TLS,
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is the server running, on that host and port?"
        }
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            "no such host or socket: check the host name"
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") | Some("28000") => {
                "authentication failed: check the user and the password (URL, PGPASSWORD or the password file)"
            }
            Some("3D000") => "the database does not exist: check the database name",
            _ => "the server refused the connection: check the URL and the credentials",
        },
        other if other.to_string().contains("TLS") || other.to_string().contains("SSL") => {
            "TLS could not be negotiated: check sslmode (the server may not offer TLS)"
        }
        _ => "check the URL, that the server runs, and the credentials",
    }
}

/// Detects a transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy
/// without pinning) in front of the server: session state (advisory locks,
/// prepared statements) does not survive there. A second client holds a
/// transaction open; behind a direct connection or a session-mode pooler it
/// runs on another backend than `first`, and `first` keeps its own. Behind a
/// transaction-mode pooler the second client gets `first`'s idle backend
/// (PgBouncer hands out the most recently used one), or `first` moves.
/// Only simple-protocol statements: no prepared statement to lose. Returns
/// the two backends seen when they betray a pooler.
async fn transaction_pooler(
    first: &mut sqlx::PgConnection,
    options: &sqlx::postgres::PgConnectOptions,
) -> std::result::Result<Option<(i32, i32)>, sqlx::Error> {
    use sqlx::{Connection as _, Row as _};
    let pid = |row: sqlx::postgres::PgRow| -> std::result::Result<i32, sqlx::Error> {
        let text: String = row.try_get(0)?;
        text.trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| sqlx::Error::Decode(Box::new(e)))
    };
    let query = "SELECT pg_backend_pid()::text";
    let before = pid(sqlx::raw_sql(query).fetch_one(&mut *first).await?)?;
    let mut second = sqlx::PgConnection::connect_with(options).await?;
    sqlx::raw_sql("BEGIN").execute(&mut second).await?;
    let other = pid(sqlx::raw_sql(query).fetch_one(&mut second).await?)?;
    let after = pid(sqlx::raw_sql(query).fetch_one(&mut *first).await?)?;
    sqlx::raw_sql("ROLLBACK").execute(&mut second).await.ok();
    second.close().await.ok();
    Ok(if other == before {
        Some((before, other))
    } else if after != before {
        Some((before, after))
    } else {
        None
    })
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

/// Connects a pool of at most `max_connections` to `options` (`display`
/// names it in errors, never with a password). One connection is made first,
/// so that a refused connection, a TLS or an authentication problem is
/// reported as itself and at once, not as a pool timeout.
pub async fn connect(
    options: &sqlx::postgres::PgConnectOptions,
    display: &str,
    max_connections: u32,
) -> Result<sqlx::PgPool> {
    use sqlx::Connection as _;
    let failed = |source: sqlx::Error| Error::Connect {
        url: display.to_owned(),
        problem: connect_problem(&source),
        source,
    };
    let mut first = sqlx::PgConnection::connect_with(options)
        .await
        .map_err(failed)?;
    let pooled = transaction_pooler(&mut first, options)
        .await
        .map_err(failed)?;
    first.close().await.ok();
    if let Some((first, second)) = pooled {
        return Err(Error::TransactionPooler {
            url: display.to_owned(),
            first,
            second,
        });
    }
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options.clone())
        .await
        .map_err(failed)
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
