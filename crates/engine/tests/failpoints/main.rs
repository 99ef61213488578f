//! The two crash windows of a batch, forced with fail points: the journal
//! recorded the plan but the target never saw the batch, and the target
//! committed the batch but the journal never heard. Either way the next
//! replay ends with every key applied exactly once.
//!
//! A binary of its own: fail points are process-global, so no other test may
//! run through a configured one.

use std::sync::Arc;

use backfill_core::testing::realistic_group;
use backfill_engine::{
    Engine, EngineSettings, ErrorKind, KeyResult, Limits, MemorySink, MemorySource, Mode,
    RunControl,
};
use backfill_journal::{Journal, State};

fn world(n: i64) -> (MemorySource, Arc<Journal>, tempfile::TempDir) {
    let source = MemorySource::new();
    for key in 1..=n {
        let g = realistic_group(key);
        source.set_group(key, g.rows.clone());
        if let Some(at) = g.directories.collector_result_created_at(key) {
            source.add_collector_result(key, at);
        }
        if key == 1 {
            source.add_brand(
                g.brand_id,
                g.directories.brand_customer(g.brand_id).flatten(),
            );
            for name in ["Acme", "Beta Corp", "Gamma", "Delta", "Epsilon"] {
                source.add_competitor(g.brand_id, g.competitor_id(name), name);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path()).unwrap());
    (source, journal, dir)
}

fn engine(source: &MemorySource, journal: &Arc<Journal>) -> Engine<MemorySource> {
    let control = RunControl::new(Limits {
        batch_size: 5,
        ..Limits::default()
    });
    Engine::new(
        source.clone(),
        journal.clone(),
        EngineSettings::default(),
        control,
    )
}

const REPLAY: Mode = Mode::Replay {
    retry_failed: true,
    reapply_drifted: false,
};

#[tokio::test]
async fn target_committed_journal_not_is_reconciled_from_the_ledger() {
    let scenario = fail::FailScenario::setup();
    let (source, journal, _dir) = world(20);
    let sink = MemorySink::new(journal.id());
    // The first batch commits in the target, then the process "dies".
    fail::cfg("engine::after_apply", "1*return").unwrap();
    let crashed = engine(&source, &journal)
        .execute(Mode::Backfill { rescan: false }, &mut sink.clone())
        .await;
    assert_eq!(
        crashed.error.as_ref().map(|e| e.kind()),
        Some(ErrorKind::Resumable)
    );
    assert_eq!(sink.facts().len(), 5, "the target has the first batch");
    assert_eq!(journal.count(State::Applied), 0, "the journal never heard");
    fail::cfg("engine::after_apply", "off").unwrap();

    let replay = engine(&source, &journal)
        .execute(REPLAY, &mut sink.clone())
        .await;
    assert!(replay.error.is_none(), "{:?}", replay.error);
    assert_eq!(replay.summary.of(KeyResult::AlreadyApplied), 5);
    assert_eq!(replay.summary.of(KeyResult::Applied), 15);
    assert_eq!(journal.count(State::Applied), 20);
    assert_eq!(sink.facts().len(), 20);
    // The first five were written by the crashed run, never again.
    let crashed_run = crashed.run.unwrap();
    let by_crashed = sink
        .facts()
        .values()
        .filter(|f| f.ledger.is_some_and(|(_, _, run)| run == crashed_run))
        .count();
    assert_eq!(by_crashed, 5);
    scenario.teardown();
}

#[tokio::test]
async fn journal_recorded_target_not_is_applied_by_the_next_replay() {
    let scenario = fail::FailScenario::setup();
    let (source, journal, _dir) = world(20);
    let sink = MemorySink::new(journal.id());
    fail::cfg("engine::before_apply", "1*return").unwrap();
    let crashed = engine(&source, &journal)
        .execute(Mode::Backfill { rescan: false }, &mut sink.clone())
        .await;
    assert!(crashed.error.is_some());
    assert_eq!(sink.applies(), 0, "the target never saw a batch");
    let pending = journal.count(State::Pending);
    assert!(
        pending >= 5,
        "the first batch is recorded pending: {pending}"
    );
    fail::cfg("engine::before_apply", "off").unwrap();

    let replay = engine(&source, &journal)
        .execute(REPLAY, &mut sink.clone())
        .await;
    assert!(replay.error.is_none(), "{:?}", replay.error);
    assert_eq!(replay.summary.of(KeyResult::Applied), 20);
    assert_eq!(replay.summary.of(KeyResult::AlreadyApplied), 0);
    assert_eq!(journal.count(State::Applied), 20);
    assert_eq!(journal.count(State::Pending), 0);
    scenario.teardown();
}

/// Both crash windows with two batches in flight (decision 59): whatever
/// the other batch did, the journal never claims a key the target lacks,
/// and the next replay ends with every key applied exactly once.
#[tokio::test]
async fn with_two_appliers_both_crash_windows_end_exactly_once() {
    for point in ["engine::after_apply", "engine::before_apply"] {
        let scenario = fail::FailScenario::setup();
        let (source, journal, _dir) = world(40);
        let sink = MemorySink::new(journal.id());
        // Slow transactions: two batches in flight at once.
        sink.slow(std::time::Duration::from_millis(30));
        let two = |journal: &Arc<Journal>| {
            Engine::new(
                source.clone(),
                journal.clone(),
                EngineSettings {
                    appliers: 2,
                    ..EngineSettings::default()
                },
                RunControl::new(Limits {
                    batch_size: 5,
                    ..Limits::default()
                }),
            )
        };
        fail::cfg(point, "1*return").unwrap();
        let crashed = two(&journal)
            .execute(Mode::Backfill { rescan: false }, &mut sink.clone())
            .await;
        assert!(
            crashed.error.is_some(),
            "{point}: the fail point stopped the run"
        );
        let facts = sink.facts();
        let recorded: Vec<i64> = journal
            .keys_in_state(State::Applied, None)
            .collect::<Result<_, _>>()
            .unwrap();
        for key in &recorded {
            assert!(
                facts.contains_key(key),
                "{point}: key {key} journaled, not in the target"
            );
        }
        fail::cfg(point, "off").unwrap();

        let replay = two(&journal).execute(REPLAY, &mut sink.clone()).await;
        assert!(replay.error.is_none(), "{point}: {:?}", replay.error);
        assert_eq!(journal.count(State::Applied), 40, "{point}");
        assert_eq!(sink.facts().len(), 40, "{point}");
        let s = &replay.summary;
        assert_eq!(
            s.of(KeyResult::Applied) + s.of(KeyResult::AlreadyApplied) + recorded.len() as u64,
            40,
            "{point}: every key applied once, by the crashed run or by the replay"
        );
        assert_eq!(
            s.of(KeyResult::AlreadyApplied),
            (facts.len() - recorded.len()) as u64,
            "{point}: what committed unrecorded is reconciled, not written again"
        );
        scenario.teardown();
    }
}
