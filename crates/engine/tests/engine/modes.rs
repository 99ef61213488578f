//! Each mode over a memory source and target: what ends in the target, in
//! the journal, and in the summary.

use backfill_core::testing::dec;
use backfill_engine::{
    EngineSettings, ErrorKind, KeyRange, KeyResult, MemorySink, Mode, NullSink, RunEnd,
};
use backfill_journal::{PassState, Reason, State};

use crate::support::{target, World};

const BACKFILL: Mode = Mode::Backfill { rescan: false };
const REPLAY: Mode = Mode::Replay {
    retry_failed: true,
    reapply_drifted: false,
};

#[tokio::test]
async fn backfill_writes_every_migrating_key_once_and_a_rerun_changes_nothing() {
    let w = World::new(40);
    let sink = w.sink();
    let report = w.engine(7).execute(BACKFILL, &mut sink.clone()).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    let s = &report.summary;
    let migrating = w.migrating();
    assert_eq!(s.of(KeyResult::Applied), 40);
    assert_eq!(migrating.len(), 40);
    assert_eq!(s.of(KeyResult::Skipped(Reason::NoBrandRow)), 1);
    assert_eq!(s.of(KeyResult::Rejected(Reason::OrphanCollectorResult)), 1);
    assert_eq!((s.keys_read, s.keys_planned), (42, 42));
    assert!(s.has_problems(), "a rejected key is a problem");
    // The target holds exactly the core's events, hash for hash.
    let expected: std::collections::BTreeMap<_, _> = migrating
        .iter()
        .map(|k| (*k, w.expected_hash(*k)))
        .collect();
    assert_eq!(target(&sink), expected);
    assert_eq!(w.journal.count(State::Applied), 40);
    assert_eq!(w.journal.pass(), Some(PassState::Exhausted));
    let run = w.journal.run(report.run.unwrap()).unwrap().unwrap();
    assert_eq!(run.end, Some(RunEnd::Completed));
    assert!(run.counts.contains(&("applied".to_owned(), 40)));

    let batches = sink.batches();
    let again = w
        .engine(7)
        .execute(Mode::Backfill { rescan: true }, &mut sink.clone())
        .await;
    assert_eq!(again.summary.keys_unchanged, 42);
    assert_eq!(again.summary.of(KeyResult::Applied), 0);
    assert_eq!(sink.batches(), batches, "nothing sent to the target");
    assert_eq!(target(&sink), expected);
}

#[tokio::test]
async fn plan_writes_nothing_and_replay_then_gives_the_backfill_target() {
    let reference = World::new(30);
    let ref_sink = reference.sink();
    reference
        .engine(30)
        .execute(BACKFILL, &mut ref_sink.clone())
        .await;

    let w = World::new(30);
    let sink = w.sink();
    let planned = w
        .engine(4)
        .execute(Mode::Plan { rescan: false }, &mut NullSink)
        .await;
    assert!(planned.error.is_none());
    assert!(!planned.summary.dry_run, "a plan is not a dry run");
    assert_eq!(w.journal.count(State::Pending), 30);
    assert_eq!(sink.applies(), 0);
    let replayed = w.engine(4).execute(REPLAY, &mut sink.clone()).await;
    assert_eq!(replayed.summary.of(KeyResult::Applied), 30);
    assert_eq!(target(&sink), target(&ref_sink));
}

#[tokio::test]
async fn a_refused_key_fails_alone_and_once_per_run() {
    let w = World::new(25);
    let sink = w.sink();
    sink.refuse(13);
    let report = w.engine(25).execute(BACKFILL, &mut sink.clone()).await;
    let s = &report.summary;
    assert_eq!(s.of(KeyResult::Failed), 1);
    assert_eq!(s.of(KeyResult::Applied), 24);
    assert_eq!(s.failures.len(), 1);
    assert_eq!(s.failures[0].0, 13);
    let status = w.journal.status(13).unwrap().unwrap();
    assert_eq!((status.state, status.failures), (State::Failed, 1));
    assert!(!target(&sink).contains_key(&13));

    // A replay retries it: one more attempt, counted once.
    let again = w.engine(25).execute(REPLAY, &mut sink.clone()).await;
    assert_eq!(again.summary.of(KeyResult::Failed), 1);
    assert_eq!(w.journal.status(13).unwrap().unwrap().failures, 2);
}

#[tokio::test]
async fn regression_a_replay_that_finishes_the_pass_does_not_retry_its_own_failures() {
    // A replay that first finished an interrupted pass, then retried failed
    // keys, attempted a key that failed in the pass a second time: "failed 2"
    // for one key.
    let w = World::new(20);
    let sink = w.sink();
    sink.refuse(18);
    let engine = w.engine(5);
    crate::support::Recorder::attach(engine.control(), |n, c| {
        if n == 1 {
            c.stop();
        }
    });
    let first = engine.execute(BACKFILL, &mut sink.clone()).await;
    assert!(first.summary.interrupted);
    assert_eq!(w.journal.pass(), Some(PassState::Reading));
    let replay = w.engine(5).execute(REPLAY, &mut sink.clone()).await;
    assert_eq!(
        replay.summary.of(KeyResult::Failed),
        1,
        "{:?}",
        replay.summary
    );
    assert_eq!(w.journal.status(18).unwrap().unwrap().failures, 1);
    assert_eq!(w.journal.pass(), Some(PassState::Exhausted));
}

#[tokio::test]
async fn a_stopping_error_records_what_committed_and_reports_it() {
    let w = World::new(30);
    let sink = w.sink();
    sink.stop_after(2);
    let report = w.engine(5).execute(BACKFILL, &mut sink.clone()).await;
    let error = report.error.as_ref().expect("the target stopped the run");
    assert_eq!(error.kind(), ErrorKind::Resumable);
    assert!(report.summary.interrupted);
    assert_eq!(report.summary.of(KeyResult::Applied), 10);
    assert!(report.summary.did_work());
    assert_eq!(w.journal.count(State::Applied), 10);
    assert_eq!(target(&sink).len(), 10);
    let run = w.journal.run(report.run.unwrap()).unwrap().unwrap();
    assert!(
        matches!(
            &run.end,
            Some(RunEnd::Stopped {
                kind: ErrorKind::Resumable,
                ..
            })
        ),
        "{:?}",
        run.end
    );
    // Every key the journal holds was counted as planned.
    let keys = u64::try_from(w.journal.keys().count()).unwrap();
    assert_eq!(report.summary.keys_planned, keys);
}

#[tokio::test]
async fn an_empty_source_is_refused_before_a_run_is_recorded() {
    let w = World::empty();
    let report = w.engine(10).execute(BACKFILL, &mut w.sink()).await;
    let error = report.error.expect("refused");
    assert_eq!(error.kind(), ErrorKind::Configuration);
    assert!(report.run.is_none());
    assert!(w.journal.runs().unwrap().is_empty());
    let allowed = w.engine_with(
        10,
        EngineSettings {
            allow_empty: true,
            ..EngineSettings::default()
        },
    );
    assert!(allowed
        .execute(BACKFILL, &mut w.sink())
        .await
        .error
        .is_none());
}

#[tokio::test]
async fn a_dry_run_writes_and_marks_nothing_and_counts_what_the_real_run_writes() {
    let w = World::new(20);
    let dry = w.engine(6).execute(BACKFILL, &mut NullSink).await;
    assert!(dry.summary.dry_run);
    assert_eq!(w.journal.count(State::Applied), 0);
    let sink = w.sink();
    let real = w.engine(6).execute(BACKFILL, &mut sink.clone()).await;
    // The real run finds the dry run's keys planned and applies them.
    assert_eq!(real.summary.tables, dry.summary.tables);
    assert_eq!(
        real.summary.of(KeyResult::Applied),
        dry.summary.of(KeyResult::Applied)
    );
}

#[tokio::test]
async fn a_live_writers_fact_is_skipped_and_journaled_with_its_reason() {
    let w = World::new(10);
    let sink = w.sink();
    sink.insert_foreign(4);
    let report = w.engine(10).execute(BACKFILL, &mut sink.clone()).await;
    assert_eq!(
        report
            .summary
            .of(KeyResult::Skipped(Reason::ExistingInTarget)),
        1
    );
    let status = w.journal.status(4).unwrap().unwrap();
    assert_eq!(
        (status.state, status.reason),
        (State::Skipped, Some(Reason::ExistingInTarget))
    );
    assert!(sink.facts()[&4].ledger.is_none(), "not ours: untouched");
}

#[tokio::test]
async fn drifted_keys_are_replanned_and_replaced_on_request() {
    let mut w = World::new(12);
    let sink = w.sink();
    w.engine(5).execute(BACKFILL, &mut sink.clone()).await;
    // The source of key 7 changes after it was applied.
    let mut group = w.groups[&7].clone();
    group.rows[0].visibility_index = Some(dec("77.7"));
    w.add(group);
    let rescan = w
        .engine(5)
        .execute(Mode::Plan { rescan: true }, &mut NullSink)
        .await;
    assert_eq!(rescan.summary.keys_drifted, 1);
    assert_eq!(w.journal.status(7).unwrap().unwrap().state, State::Drifted);
    let replay = w
        .engine(5)
        .execute(
            Mode::Replay {
                retry_failed: true,
                reapply_drifted: true,
            },
            &mut sink.clone(),
        )
        .await;
    assert_eq!(replay.summary.of(KeyResult::Applied), 1);
    assert_eq!(w.journal.status(7).unwrap().unwrap().state, State::Applied);
    assert_eq!(target(&sink)[&7], w.expected_hash(7));
}

#[tokio::test]
async fn shards_by_key_range_together_write_what_one_engine_writes() {
    let whole = World::new(30);
    let whole_sink = whole.sink();
    whole
        .engine(4)
        .execute(BACKFILL, &mut whole_sink.clone())
        .await;

    let mut union = std::collections::BTreeMap::new();
    for range in [
        KeyRange {
            start: None,
            end: Some(16),
        },
        KeyRange {
            start: Some(16),
            end: None,
        },
    ] {
        let shard = World::new(30);
        let sink = shard.sink();
        let settings = EngineSettings {
            range,
            ..EngineSettings::default()
        };
        shard
            .engine_with(4, settings)
            .execute(BACKFILL, &mut sink.clone())
            .await;
        let written = target(&sink);
        assert!(written.keys().all(|k| range.contains(*k)), "{range:?}");
        union.extend(written);
    }
    assert_eq!(union, target(&whole_sink));
}

#[tokio::test]
async fn the_memory_source_plans_what_the_core_plans_from_the_groups_own_directories() {
    let w = World::new(5);
    let sink: MemorySink = w.sink();
    w.engine(2).execute(BACKFILL, &mut sink.clone()).await;
    for key in 1..=5 {
        assert_eq!(
            w.journal.event(key).unwrap().unwrap().content_hash,
            w.expected_hash(key)
        );
    }
}

#[tokio::test]
async fn regression_a_replace_asked_for_after_the_fact_reaches_the_skipped_keys() {
    // Once keys ended skipped:existing_in_target, later runs and replays
    // with --on-conflict replace wrote nothing.
    let w = World::new(10);
    let sink = w.sink();
    sink.insert_foreign(4);
    w.engine(10).execute(BACKFILL, &mut sink.clone()).await;
    assert_eq!(w.journal.status(4).unwrap().unwrap().state, State::Skipped);
    let replace = EngineSettings {
        on_conflict: backfill_engine::OnConflict::Replace,
        ..EngineSettings::default()
    };
    let report = w
        .engine_with(10, replace)
        .execute(REPLAY, &mut sink.clone())
        .await;
    assert_eq!(report.summary.of(KeyResult::Applied), 1);
    assert_eq!(w.journal.status(4).unwrap().unwrap().state, State::Applied);
    assert_eq!(target(&sink)[&4], w.expected_hash(4));
    let history = w.journal.history(4).unwrap();
    let kinds: Vec<&str> = history.iter().map(|l| l.record.kind()).collect();
    assert_eq!(kinds, ["planned", "skipped", "replaced", "applied"]);
}
