//! One classification of what can stop a run.
//!
//! Why kinds and not messages: the binary maps an outcome to an exit code and
//! a next step, and a future status endpoint or controller must decide the
//! same way. So every error carries an [`ErrorKind`] (configuration,
//! resumable, integrity, refused) and no command-line wording; adapters'
//! errors travel inside [`AdapterError`] with the kind their crate decided.

use std::fmt;

use backfill_journal::ErrorKind;

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source has no rows and the settings do not allow that.
    #[error(
        "source {source_name} is empty: nothing to backfill (wrong source table or database?)"
    )]
    EmptySource {
        /// The source, as its adapter describes it.
        source_name: String,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] backfill_journal::Error),
    /// The core failed (an event that does not encode).
    #[error(transparent)]
    Core(#[from] backfill_core::Error),
    /// A source's or sink's error, classified by its adapter.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// A fail point configured by a test fired (feature `failpoints`).
    #[error("fail point {0} fired")]
    FailPoint(&'static str),

    /// The journal handed back another number of planned migrations than
    /// planning recorded in the batch (a defect; nothing of the batch is
    /// applied, and its keys stay pending in the journal).
    #[error(
        "the journal handed back {returned} planned migrations where the batch recorded {expected}"
    )]
    PlannedMismatch {
        /// Migrations recorded.
        expected: usize,
        /// Migrations handed back.
        returned: usize,
    },
}

impl Error {
    /// What kind of problem this is: decides the exit code and whether the
    /// run can be resumed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::EmptySource { .. } => ErrorKind::Configuration,
            Self::Journal(e) => e.kind(),
            Self::Core(_) => ErrorKind::Integrity,
            Self::Adapter(e) => e.kind(),
            Self::FailPoint(_) => ErrorKind::Resumable,
            Self::PlannedMismatch { .. } => ErrorKind::Integrity,
        }
    }
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An adapter's error with the kind its crate assigned. Displays as the
/// error itself; its cause chain is the error's.
pub struct AdapterError {
    kind: ErrorKind,
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl AdapterError {
    /// Wraps an adapter's error.
    pub fn new(kind: ErrorKind, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            kind,
            error: Box::new(error),
        }
    }

    /// The kind the adapter assigned.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The adapter's error, for downcasting.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Debug for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdapterError")
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for AdapterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
