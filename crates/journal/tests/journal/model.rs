//! Model-based test: random operation sequences (batches of transitions,
//! reopen) against a `BTreeMap` model, checking every query after each step.

use std::collections::{BTreeMap, HashMap};

use backfill_core::{Digest, Outcome};
use backfill_journal::{Batch, Error, Journal, Reason, Record, RunId, State};
use proptest::prelude::*;
use uuid::Uuid;

use crate::support::event;

#[derive(Clone, Debug)]
enum Action {
    Plan(u8),
    Apply { correct_hash: bool },
    Skip,
    Reject,
    Fail,
    Drift,
    RollBack,
}

#[derive(Clone, Debug)]
enum Op {
    Commit(Vec<(i64, Action)>, Option<i64>),
    Reopen,
}

#[derive(Clone, Debug, PartialEq)]
struct Model {
    state: State,
    reason: Option<String>,
    content_hash: Digest,
    records: usize,
}

fn arb_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0u8..4).prop_map(Action::Plan),
        3 => prop::bool::weighted(0.85).prop_map(|correct_hash| Action::Apply { correct_hash }),
        1 => Just(Action::Skip),
        1 => Just(Action::Reject),
        1 => Just(Action::Fail),
        1 => Just(Action::Drift),
        1 => Just(Action::RollBack),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((-3i64..6, arb_action()), 0..8), prop::option::of(-3i64..6))
            .prop_map(|(items, cursor)| Op::Commit(items, cursor)),
        1 => Just(Op::Reopen),
    ]
}

const RUN: RunId = RunId(Uuid::from_u128(7));

/// Applies a batch to the model; `None` if the journal must refuse it.
fn model_apply(
    model: &BTreeMap<i64, Model>,
    items: &[(i64, Action)],
) -> Option<BTreeMap<i64, Model>> {
    let mut next = model.clone();
    for (key, action) in items {
        if let Action::Plan(variant) = action {
            let e = event(*key, *variant);
            let (state, reason) = match &e.outcome {
                Outcome::Migrate(_) => (State::Pending, None),
                Outcome::Skip(r) => (State::Skipped, Some(r.code().to_owned())),
                Outcome::Reject(r) => (State::Rejected, Some(r.code().to_owned())),
            };
            let records = next.get(key).map_or(0, |m| m.records) + 1;
            next.insert(
                *key,
                Model {
                    state,
                    reason,
                    content_hash: e.content_hash,
                    records,
                },
            );
            continue;
        }
        let m = next.get_mut(key)?;
        m.records += 1;
        m.reason = None;
        m.state = match action {
            Action::Plan(_) => unreachable!(),
            Action::Apply { correct_hash: true } => State::Applied,
            Action::Apply {
                correct_hash: false,
            } => return None,
            Action::Skip => {
                m.reason = Some("existing_in_target".into());
                State::Skipped
            }
            Action::Reject => {
                m.reason = Some("value_out_of_range".into());
                State::Rejected
            }
            Action::Fail => State::Failed,
            Action::Drift => State::Drifted,
            Action::RollBack => State::RolledBack,
        };
    }
    Some(next)
}

fn journal_batch(journal: &Journal, items: &[(i64, Action)], cursor: Option<i64>) -> Batch {
    let mut batch = Batch::for_run(RUN);
    // Hashes as of the batch's start plus plans within it (the journal folds in order).
    let mut hashes: HashMap<i64, Digest> = HashMap::new();
    for (key, action) in items {
        let current = hashes
            .get(key)
            .copied()
            .or_else(|| journal.status(*key).unwrap().map(|s| s.content_hash))
            .unwrap_or_default();
        match action {
            Action::Plan(variant) => {
                let e = event(*key, *variant);
                hashes.insert(*key, e.content_hash);
                batch.plan(e);
            }
            Action::Apply { correct_hash } => {
                let mut content_hash = current;
                if !correct_hash {
                    content_hash.0[0] ^= 0xff;
                }
                batch.record(
                    *key,
                    Record::Applied {
                        run: RUN,
                        batch: 1,
                        content_hash,
                    },
                );
            }
            Action::Skip => {
                batch.record(
                    *key,
                    Record::Skipped {
                        reason: Reason::ExistingInTarget,
                    },
                );
            }
            Action::Reject => {
                batch.record(
                    *key,
                    Record::Rejected {
                        reason: Reason::ValueOutOfRange,
                    },
                );
            }
            Action::Fail => {
                batch.record(
                    *key,
                    Record::Failed {
                        error: "foreign key violation".into(),
                        attempt: 1,
                    },
                );
            }
            Action::Drift => {
                batch.record(
                    *key,
                    Record::Drifted {
                        new_source_hash: Digest([9; 32]),
                    },
                );
            }
            Action::RollBack => {
                batch.record(*key, Record::RolledBack { run: RUN });
            }
        }
    }
    if let Some(cursor) = cursor {
        batch.cursor(cursor);
    }
    batch
}

fn check(
    journal: &Journal,
    model: &BTreeMap<i64, Model>,
    cursor: Option<i64>,
    entries: u64,
) -> Result<(), TestCaseError> {
    for key in -3i64..6 {
        let status = journal.status(key).unwrap();
        match model.get(&key) {
            None => prop_assert!(status.is_none(), "key {key} should be unknown"),
            Some(m) => {
                let s = status.expect("status");
                prop_assert_eq!(s.state, m.state, "key {}", key);
                prop_assert_eq!(
                    s.reason.map(|r| r.code().to_owned()),
                    m.reason.clone(),
                    "key {}",
                    key
                );
                prop_assert_eq!(s.content_hash, m.content_hash);
                prop_assert_eq!(journal.history(key).unwrap().len(), m.records);
                prop_assert_eq!(
                    journal.event(key).unwrap().unwrap().content_hash,
                    m.content_hash
                );
            }
        }
    }
    // The batch lookups (two pages: -1 and 0) agree with the model.
    let keys: Vec<i64> = (-3i64..6).collect();
    let statuses = journal.statuses(&keys).unwrap();
    let events = journal.events(&keys).unwrap();
    let known: std::collections::BTreeSet<i64> =
        model.keys().copied().filter(|k| keys.contains(k)).collect();
    prop_assert_eq!(
        &statuses
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        &known
    );
    prop_assert_eq!(
        &events
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        &known
    );
    for key in &known {
        prop_assert_eq!(statuses[key].state, model[key].state);
        prop_assert_eq!(events[key].content_hash, model[key].content_hash);
    }
    let mut expected_counts: BTreeMap<(State, Option<String>), u64> = BTreeMap::new();
    for m in model.values() {
        *expected_counts
            .entry((m.state, m.reason.clone()))
            .or_insert(0) += 1;
    }
    let counts: BTreeMap<(State, Option<String>), u64> = journal
        .counts()
        .into_iter()
        .map(|((state, reason), n)| ((state, reason.map(|r| r.code().to_owned())), n))
        .collect();
    prop_assert_eq!(counts, expected_counts);
    for state in State::ALL {
        let keys: Vec<i64> = journal
            .keys_in_state(state, None)
            .map(Result::unwrap)
            .collect();
        let expected: Vec<i64> = model
            .iter()
            .filter(|(_, m)| m.state == state)
            .map(|(k, _)| *k)
            .collect();
        prop_assert_eq!(&keys, &expected);
        prop_assert_eq!(journal.count(state), u64::try_from(expected.len()).unwrap());
    }
    let pending_from_1: Vec<i64> = journal.pending(Some(1)).map(Result::unwrap).collect();
    let expected: Vec<i64> = model
        .range(1..)
        .filter(|(_, m)| m.state == State::Pending)
        .map(|(k, _)| *k)
        .collect();
    prop_assert_eq!(pending_from_1, expected);
    prop_assert_eq!(journal.cursor(), cursor);
    prop_assert_eq!(journal.entries(), entries);
    prop_assert_eq!(journal.verify_chain().unwrap().entries, entries);
    journal.verify_index().unwrap();
    Ok(())
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path()).unwrap();
    let id = journal.id();
    let mut model: BTreeMap<i64, Model> = BTreeMap::new();
    let mut cursor = None;
    let mut entries = 0u64;
    for op in ops {
        match op {
            Op::Reopen => {
                drop(journal);
                journal = Journal::open(dir.path()).unwrap();
                prop_assert_eq!(journal.id(), id, "journal id survives reopen");
            }
            Op::Commit(items, new_cursor) => {
                let batch = journal_batch(&journal, &items, new_cursor);
                let result = journal.commit(batch);
                match model_apply(&model, &items) {
                    Some(next) => {
                        prop_assert!(result.is_ok(), "{:?}", result);
                        model = next;
                        entries += u64::try_from(items.len()).unwrap();
                        cursor = new_cursor.or(cursor);
                    }
                    None => prop_assert!(
                        matches!(
                            result,
                            Err(Error::UnknownKey { .. } | Error::ConflictingHash { .. })
                        ),
                        "{:?}",
                        result
                    ),
                }
            }
        }
        check(&journal, &model, cursor, entries)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn journal_behaves_like_the_model(ops in prop::collection::vec(arb_op(), 1..14)) {
        run_ops(ops)?;
    }
}

#[test]
fn regression_refused_batch_leaves_nothing_behind() {
    // A batch whose last record is invalid must not leave its first records.
    run_ops(vec![
        Op::Commit(
            vec![
                (1, Action::Plan(0)),
                (2, Action::Apply { correct_hash: true }),
            ],
            Some(1),
        ),
        Op::Commit(vec![(3, Action::Plan(0))], None),
        Op::Reopen,
    ])
    .unwrap();
}

#[test]
fn regression_same_key_twice_in_one_batch_folds_in_order() {
    run_ops(vec![
        Op::Commit(
            vec![
                (4, Action::Plan(0)),
                (4, Action::Apply { correct_hash: true }),
                (4, Action::Plan(1)),
                (4, Action::Apply { correct_hash: true }),
                (4, Action::Drift),
            ],
            None,
        ),
        Op::Reopen,
    ])
    .unwrap();
}
