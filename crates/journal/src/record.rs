//! The records a key passes through and the fold that turns them into its
//! current state. The fold is a pure function so that the stored index can be
//! proven equal to a replay of the log (`Journal::verify_index`).

use std::fmt;

use crate::ids::RunId;
use backfill_core::{Digest, MigrationEvent, Outcome, RejectReason, SkipReason, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One thing that happened to a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // Planned is the common record
pub enum Record {
    /// The key was planned (or re-planned) into this event.
    Planned {
        /// The event.
        event: MigrationEvent,
    },
    /// The event's rows were committed to the target.
    Applied {
        /// The run that applied it.
        run: RunId,
        /// The batch number within the run.
        batch: u64,
        /// The content hash that was written (must match the planned event).
        content_hash: Digest,
    },
    /// Nothing written, for a reason (e.g. `existing_in_target`).
    Skipped {
        /// Why.
        reason: Reason,
    },
    /// The key cannot be written as it is.
    Rejected {
        /// Why.
        reason: Reason,
    },
    /// Writing failed; the database's error.
    Failed {
        /// The error as the database reported it.
        error: String,
        /// Which attempt this was (1 for the first).
        attempt: u32,
    },
    /// The source changed after the key was applied.
    Drifted {
        /// The source hash of the changed source.
        new_source_hash: Digest,
    },
    /// The key's rows were removed from the target by `rollback`.
    RolledBack {
        /// The run that rolled it back.
        run: RunId,
    },
    /// A fact that was not this journal's (the live writer's) was deleted to
    /// write this key (`--on-conflict replace`); always followed by the
    /// key's `Applied` in the same commit.
    Replaced {
        /// The content hash of the rows that were deleted, as they read
        /// (`None` if they did not read as a complete fact).
        previous_hash: Option<Digest>,
    },
}

impl Record {
    /// The record's kind, as in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Planned { .. } => "planned",
            Self::Applied { .. } => "applied",
            Self::Skipped { .. } => "skipped",
            Self::Rejected { .. } => "rejected",
            Self::Failed { .. } => "failed",
            Self::Drifted { .. } => "drifted",
            Self::RolledBack { .. } => "rolled_back",
            Self::Replaced { .. } => "replaced",
        }
    }
}

/// Why a key was skipped or rejected: the core's reasons, plus the ones the
/// pipeline adds. Stored as an enum, printed as its stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// Skipped: the group has no brand row.
    NoBrandRow,
    /// Skipped: a fact that is not this journal's is in the target.
    ExistingInTarget,
    /// Rejected: no `collector_results` row.
    OrphanCollectorResult,
    /// Rejected: no customer id from the brand row or `brands`.
    MissingCustomerId,
    /// Rejected: a value does not fit `numeric(5,2)`.
    ValueOutOfRange,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 5] = [
        Reason::NoBrandRow,
        Reason::ExistingInTarget,
        Reason::OrphanCollectorResult,
        Reason::MissingCustomerId,
        Reason::ValueOutOfRange,
    ];

    /// The stable code used in JSON, summaries and on the command line.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoBrandRow => SkipReason::NoBrandRow.code(),
            Self::ExistingInTarget => "existing_in_target",
            Self::OrphanCollectorResult => RejectReason::OrphanCollectorResult.code(),
            Self::MissingCustomerId => "missing_customer_id",
            Self::ValueOutOfRange => "value_out_of_range",
        }
    }
}

impl From<&SkipReason> for Reason {
    fn from(reason: &SkipReason) -> Self {
        match reason {
            SkipReason::NoBrandRow => Self::NoBrandRow,
        }
    }
}

impl From<&RejectReason> for Reason {
    fn from(reason: &RejectReason) -> Self {
        match reason {
            RejectReason::OrphanCollectorResult => Self::OrphanCollectorResult,
            RejectReason::MissingCustomerId { .. } => Self::MissingCustomerId,
            RejectReason::ValueOutOfRange { .. } => Self::ValueOutOfRange,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Reason::ALL
            .into_iter()
            .find(|r| r.code() == s)
            .ok_or_else(|| {
                let codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
                format!("unknown reason {s:?}; expected one of {}", codes.join(", "))
            })
    }
}

/// A key's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum State {
    Pending,
    Applied,
    Skipped,
    Rejected,
    Failed,
    Drifted,
    RolledBack,
}

impl State {
    /// Every state, in a fixed order.
    pub const ALL: [State; 7] = [
        State::Pending,
        State::Applied,
        State::Skipped,
        State::Rejected,
        State::Failed,
        State::Drifted,
        State::RolledBack,
    ];

    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Skipped => "skipped",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Drifted => "drifted",
            Self::RolledBack => "rolled_back",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Applied => 1,
            Self::Skipped => 2,
            Self::Rejected => 3,
            Self::Failed => 4,
            Self::Drifted => 5,
            Self::RolledBack => 6,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// A key's folded state: what lookups and counts read instead of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatus {
    /// The current state.
    pub state: State,
    /// The reason code, where the state has one (skipped, rejected).
    pub reason: Option<Reason>,
    /// The last failure's error, while the state is `failed`.
    pub error: Option<String>,
    /// Log position of the current event's `Planned` record.
    pub event_seq: u64,
    /// The current event's source hash.
    pub source_hash: Digest,
    /// The current event's content hash.
    pub content_hash: Digest,
    /// The source hash seen when the key drifted, while `drifted`.
    pub drifted_source_hash: Option<Digest>,
    /// Log positions of every record of this key, oldest first.
    pub history: Vec<u64>,
    /// Failed attempts since the key was last planned.
    pub failures: u32,
}

impl KeyStatus {
    /// The (state, reason) bucket the key is counted in.
    pub fn bucket(&self) -> (State, Option<Reason>) {
        (self.state, self.reason)
    }
}

/// The fold: the status after `record` (at log position `seq`) given the
/// status before. Refuses transitions that would make the log lie.
pub fn fold(
    key: i64,
    previous: Option<&KeyStatus>,
    seq: u64,
    record: &Record,
) -> Result<KeyStatus> {
    if let Record::Planned { event } = record {
        if event.collector_result_id != key {
            return Err(Error::KeyMismatch {
                key,
                event_key: event.collector_result_id,
            });
        }
        let (state, reason) = match &event.outcome {
            Outcome::Migrate(_) => (State::Pending, None),
            Outcome::Skip(r) => (State::Skipped, Some(Reason::from(r))),
            Outcome::Reject(r) => (State::Rejected, Some(Reason::from(r))),
        };
        let mut history = previous.map(|p| p.history.clone()).unwrap_or_default();
        history.push(seq);
        return Ok(KeyStatus {
            state,
            reason,
            error: None,
            event_seq: seq,
            source_hash: event.source_hash,
            content_hash: event.content_hash,
            drifted_source_hash: None,
            history,
            failures: 0,
        });
    }
    let Some(previous) = previous else {
        return Err(Error::UnknownKey {
            key,
            record: record.kind(),
        });
    };
    let mut next = previous.clone();
    next.history.push(seq);
    next.error = None;
    next.reason = None;
    next.drifted_source_hash = None;
    match record {
        Record::Planned { .. } => unreachable!("handled above"),
        Record::Applied { content_hash, .. } => {
            if *content_hash != previous.content_hash {
                return Err(Error::ConflictingHash {
                    key,
                    expected: previous.content_hash,
                    actual: *content_hash,
                });
            }
            next.state = State::Applied;
        }
        Record::Skipped { reason } => {
            next.state = State::Skipped;
            next.reason = Some(*reason);
        }
        Record::Rejected { reason } => {
            next.state = State::Rejected;
            next.reason = Some(*reason);
        }
        Record::Failed { error, .. } => {
            next.state = State::Failed;
            next.error = Some(error.clone());
            next.failures = previous.failures.saturating_add(1);
        }
        Record::Drifted { new_source_hash } => {
            next.state = State::Drifted;
            next.drifted_source_hash = Some(*new_source_hash);
        }
        Record::RolledBack { .. } => next.state = State::RolledBack,
        // A fact of someone else's deleted: the key's own state does not
        // change (its Applied follows), but its reason and error stay.
        Record::Replaced { .. } => {
            next.reason = previous.reason;
            next.error = previous.error.clone();
        }
    }
    Ok(next)
}

/// A record as it stands in the log, with where and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// Position in the log.
    pub seq: u64,
    /// When it was appended.
    pub at: Timestamp,
    /// The run that appended it, if any.
    pub run: Option<RunId>,
    /// The record.
    pub record: Record,
}

/// What re-planning a key means, given what the journal holds for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// New or changed before being written: record the event (`Planned`).
    Plan,
    /// Same source as recorded: leave the key alone.
    Unchanged,
    /// Written already and the source changed since: record `Drifted`.
    Drift,
}

/// Decides what re-planning `event` does to a key in `status`. Pure.
///
/// A key's recorded event is replaced while nothing of it is in the target
/// (pending, failed, skipped, rejected, rolled back). Once applied, a changed
/// source only marks it drifted: rewriting it is an explicit operator action.
pub fn decide(status: Option<&KeyStatus>, event: &MigrationEvent) -> Decision {
    let Some(status) = status else {
        return Decision::Plan;
    };
    let unchanged =
        status.source_hash == event.source_hash && status.content_hash == event.content_hash;
    match status.state {
        State::Applied if unchanged => Decision::Unchanged,
        State::Applied => Decision::Drift,
        State::Drifted if status.drifted_source_hash == Some(event.source_hash) => {
            Decision::Unchanged
        }
        State::Drifted if unchanged => Decision::Unchanged,
        State::Drifted => Decision::Drift,
        _ if unchanged => Decision::Unchanged,
        _ => Decision::Plan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backfill_core::testing::{dec, GroupBuilder};

    fn event(visibility: &str) -> MigrationEvent {
        let g = GroupBuilder::new(1)
            .brand(|r| r.visibility_index = Some(dec(visibility)))
            .build();
        backfill_core::plan(1, &g.rows, &g.directories).unwrap()
    }

    fn status_after(records: &[Record]) -> KeyStatus {
        let mut status: Option<KeyStatus> = None;
        for (seq, record) in (0u64..).zip(records) {
            status = Some(fold(1, status.as_ref(), seq, record).unwrap());
        }
        status.unwrap()
    }

    #[test]
    fn reasons_are_the_cores_codes_and_parse_back() {
        use backfill_core::{RejectReason, SkipReason, TargetColumn};
        let core: [(Reason, &str); 4] = [
            (
                Reason::from(&SkipReason::NoBrandRow),
                SkipReason::NoBrandRow.code(),
            ),
            (
                Reason::from(&RejectReason::OrphanCollectorResult),
                RejectReason::OrphanCollectorResult.code(),
            ),
            (
                Reason::from(&RejectReason::MissingCustomerId {
                    brand_id: uuid::Uuid::nil(),
                }),
                "missing_customer_id",
            ),
            (
                Reason::from(&RejectReason::ValueOutOfRange {
                    row_id: 1,
                    column: TargetColumn::BrandMetricsVisibilityIndex,
                    value: "1e9".into(),
                }),
                "value_out_of_range",
            ),
        ];
        for (reason, code) in core {
            assert_eq!(reason.code(), code);
        }
        for reason in Reason::ALL {
            assert_eq!(reason.code().parse::<Reason>(), Ok(reason));
        }
        assert!("bogus"
            .parse::<Reason>()
            .unwrap_err()
            .contains("existing_in_target"));
    }

    #[test]
    fn stored_enums_keep_their_bytes() {
        // States and reasons are stored by variant index (log entries, count
        // keys): reordering or inserting a variant would silently change what
        // stored values mean.
        for (i, state) in State::ALL.iter().enumerate() {
            assert_eq!(
                backfill_core::encode(state).unwrap(),
                vec![u8::try_from(i).unwrap()]
            );
        }
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(
                backfill_core::encode(reason).unwrap(),
                vec![u8::try_from(i).unwrap()],
                "{reason}"
            );
        }
    }

    #[test]
    fn decide_new_key_is_planned() {
        assert_eq!(decide(None, &event("1")), Decision::Plan);
    }

    #[test]
    fn decide_same_source_is_unchanged_in_every_state() {
        let e = event("1");
        let applied = Record::Applied {
            run: RunId::NIL,
            batch: 0,
            content_hash: e.content_hash,
        };
        for tail in [
            vec![],
            vec![applied.clone()],
            vec![Record::Failed {
                error: "x".into(),
                attempt: 1,
            }],
        ] {
            let mut records = vec![Record::Planned { event: e.clone() }];
            records.extend(tail);
            assert_eq!(
                decide(Some(&status_after(&records)), &e),
                Decision::Unchanged
            );
        }
    }

    #[test]
    fn decide_changed_source_replaces_unwritten_events_and_drifts_written_ones() {
        let old = event("1");
        let new = event("2");
        let pending = status_after(&[Record::Planned { event: old.clone() }]);
        assert_eq!(decide(Some(&pending), &new), Decision::Plan);
        let applied = status_after(&[
            Record::Planned { event: old.clone() },
            Record::Applied {
                run: RunId::NIL,
                batch: 0,
                content_hash: old.content_hash,
            },
        ]);
        assert_eq!(decide(Some(&applied), &new), Decision::Drift);
        let drifted = status_after(&[
            Record::Planned { event: old.clone() },
            Record::Applied {
                run: RunId::NIL,
                batch: 0,
                content_hash: old.content_hash,
            },
            Record::Drifted {
                new_source_hash: new.source_hash,
            },
        ]);
        assert_eq!(
            decide(Some(&drifted), &new),
            Decision::Unchanged,
            "already recorded as drifted"
        );
        assert_eq!(
            decide(Some(&drifted), &event("3")),
            Decision::Drift,
            "drifted again"
        );
    }
}
