//! The one mapping from what happened to the exit code (DESIGN §5): 0 every
//! key applied or skipped; 1 some keys rejected or failed, or a check found a
//! difference; 2 configuration, connection or refusal, nothing done; 3
//! interrupted or stopped after doing work (resumable).

use backfill_engine::{ErrorKind, Summary};

/// What the process returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Ok,
    /// 1: some keys rejected or failed, or a difference found.
    Problems,
    /// 2: configuration error, nothing done.
    Config,
    /// 3: interrupted, resumable.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Problems => 1,
            Self::Config => 2,
            Self::Interrupted => 3,
        }
    }
}

/// The exit code for a command that ended with an error of `error` kind
/// after doing what `summary` says; `journal_problems` is true when the
/// journal holds rejected or failed keys (they stay so until their source is
/// fixed). Pure.
pub fn exit_code(
    error: Option<ErrorKind>,
    summary: Option<&Summary>,
    journal_problems: bool,
) -> Exit {
    let did_work = summary.is_some_and(Summary::did_work);
    match error {
        // Work was done before the error: "nothing written" would be false,
        // and the journal resumes it.
        Some(_) if did_work => Exit::Interrupted,
        // Nothing done (DESIGN §5: configuration or connection error), also
        // for a passing one: running the command again is the remedy.
        Some(_) => Exit::Config,
        None if summary.is_some_and(|s| s.interrupted) => Exit::Interrupted,
        None if journal_problems || summary.is_some_and(Summary::has_problems) => Exit::Problems,
        None => Exit::Ok,
    }
}

/// What the operator can do about a library error, in command-line terms
/// (the libraries' messages do not know the flags).
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    err.chain().find_map(|cause| {
        if let Some(backfill_engine::Error::EmptySource { .. }) = cause.downcast_ref() {
            return Some("name the right table with --source-table, or pass --allow-empty if an empty source is expected");
        }
        match cause.downcast_ref::<backfill_journal::Error>() {
            Some(backfill_journal::Error::Locked { .. }) => {
                Some("another backfill uses this journal; wait for it, or pass another --journal")
            }
            Some(backfill_journal::Error::SourceMismatch { .. }) => {
                Some("use a separate --journal for each source")
            }
            _ => None,
        }
    })
}

/// The kind of the first classified error in an error's chain
/// (configuration if none says otherwise).
pub fn kind_of(err: &anyhow::Error) -> ErrorKind {
    err.chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<backfill_engine::Error>() {
                Some(e.kind())
            } else if let Some(e) = cause.downcast_ref::<backfill_engine::AdapterError>() {
                Some(e.kind())
            } else if let Some(e) = cause.downcast_ref::<backfill_postgres::Error>() {
                Some(e.kind())
            } else {
                cause
                    .downcast_ref::<backfill_journal::Error>()
                    .map(backfill_journal::Error::kind)
            }
        })
        .unwrap_or(ErrorKind::Configuration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backfill_engine::KeyResult;
    use backfill_journal::Reason;

    fn summary(f: impl FnOnce(&mut Summary)) -> Summary {
        let mut s = Summary::default();
        f(&mut s);
        s
    }

    #[test]
    fn a_clean_run_is_0_and_rejections_or_failures_are_1() {
        let clean = summary(|s| {
            s.count(KeyResult::Applied);
            s.count(KeyResult::Skipped(Reason::NoBrandRow));
        });
        assert_eq!(exit_code(None, Some(&clean), false), Exit::Ok);
        assert_eq!(exit_code(None, Some(&clean), true), Exit::Problems);
        let failed = summary(|s| s.count(KeyResult::Failed));
        assert_eq!(exit_code(None, Some(&failed), false), Exit::Problems);
        let rejected = summary(|s| s.count(KeyResult::Rejected(Reason::ValueOutOfRange)));
        assert_eq!(exit_code(None, Some(&rejected), false), Exit::Problems);
    }

    #[test]
    fn an_interruption_is_3_even_with_problems() {
        let s = summary(|s| {
            s.interrupted = true;
            s.count(KeyResult::Failed);
        });
        assert_eq!(exit_code(None, Some(&s), true), Exit::Interrupted);
    }

    #[test]
    fn an_error_is_2_only_when_nothing_was_done() {
        let nothing = Summary::default();
        for kind in [
            ErrorKind::Configuration,
            ErrorKind::Refused,
            ErrorKind::Integrity,
        ] {
            assert_eq!(exit_code(Some(kind), Some(&nothing), false), Exit::Config);
            assert_eq!(exit_code(Some(kind), None, false), Exit::Config);
        }
        let worked = summary(|s| {
            s.batches = 3;
            s.count(KeyResult::Applied);
        });
        assert_eq!(
            exit_code(Some(ErrorKind::Configuration), Some(&worked), false),
            Exit::Interrupted,
            "regression: exit 2 said 'nothing written' after rows were committed"
        );
        assert_eq!(
            exit_code(Some(ErrorKind::Resumable), Some(&nothing), false),
            Exit::Config,
            "a lost connection before any work: 2, nothing written"
        );
        assert_eq!(
            exit_code(Some(ErrorKind::Resumable), Some(&worked), false),
            Exit::Interrupted
        );
    }
}
