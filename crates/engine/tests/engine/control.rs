//! The run control: every wait honours a stop, an abort abandons the batch in
//! flight, a pause holds the next batch, limits change while a run works.
//! Each test would hang (and fail on its timeout) or see the wrong batches
//! if the behaviour were removed.

use std::num::NonZeroU64;
use std::time::Duration;

use backfill_core::MigrationEvent;
use backfill_engine::{ApplyError, ApplyOutcome, KeyResult, Mode, OnConflict, RunId, Sink};
use backfill_journal::{PassState, RunEnd, State};

use crate::support::{Recorder, World};

const BACKFILL: Mode = Mode::Backfill { rescan: false };
const LIMIT: Duration = Duration::from_secs(20);

/// A target whose transactions never finish (a lock held forever).
struct Stuck;

impl Sink for Stuck {
    async fn apply(
        &mut self,
        _run: RunId,
        _events: &[&MigrationEvent],
        _on_conflict: OnConflict,
    ) -> Result<ApplyOutcome, ApplyError> {
        std::future::pending().await
    }

    fn writes(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_abort_abandons_the_batch_in_flight() {
    let w = World::new(10);
    let engine = w.engine(5);
    let control = engine.control().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        control.stop();
        // A stop waits for the batch in flight, which never ends…
        tokio::time::sleep(Duration::from_millis(300)).await;
        control.abort();
    });
    let report = tokio::time::timeout(LIMIT, engine.execute(BACKFILL, &mut Stuck))
        .await
        .expect("an abort must end a run whose batch never finishes");
    assert!(report.summary.interrupted);
    assert!(report.error.is_none(), "an abort is a stop, not an error");
    assert_eq!(w.journal.count(State::Applied), 0);
    assert!(w.journal.count(State::Pending) > 0, "the plan is recorded");
    let run = w.journal.run(report.run.unwrap()).unwrap().unwrap();
    assert_eq!(run.end, Some(RunEnd::Interrupted));
}

#[tokio::test]
async fn a_stop_ends_a_throttle_wait_at_once() {
    let w = World::new(10);
    let engine = w.engine(2);
    // 12 rows per group at 1 row/s: the first batch alone asks for 24 s.
    engine
        .control()
        .set_limits(|l| l.max_rows_per_sec = NonZeroU64::new(1));
    let control = engine.control().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        control.stop();
    });
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(LIMIT, engine.execute(BACKFILL, &mut w.sink()))
        .await
        .expect("a stop must end the throttle's sleep");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(report.summary.interrupted);
    assert_eq!(
        report.summary.of(KeyResult::Applied),
        2,
        "the batch in flight ends"
    );
    assert_eq!(w.journal.pass(), Some(PassState::Reading));
}

#[tokio::test]
async fn a_pause_holds_the_next_batch_until_resumed() {
    let w = World::new(10);
    let sink = w.sink();
    let engine = w.engine(5);
    engine.control().pause();
    let control = engine.control().clone();
    let probe = sink.clone();
    let resumed = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let applies_while_paused = probe.applies();
        control.resume();
        applies_while_paused
    });
    let report = tokio::time::timeout(LIMIT, engine.execute(BACKFILL, &mut sink.clone()))
        .await
        .expect("resumed");
    assert_eq!(resumed.await.unwrap(), 0, "nothing applied while paused");
    assert_eq!(report.summary.of(KeyResult::Applied), 10);
    assert!(!report.summary.interrupted);
}

#[tokio::test]
async fn a_stop_while_paused_ends_the_run() {
    let w = World::new(10);
    let engine = w.engine(5);
    engine.control().pause();
    let control = engine.control().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        control.stop();
    });
    let report = tokio::time::timeout(LIMIT, engine.execute(BACKFILL, &mut w.sink()))
        .await
        .expect("a stop must end a pause");
    assert!(report.summary.interrupted);
    assert_eq!(report.summary.of(KeyResult::Applied), 0);
}

#[tokio::test]
async fn a_batch_size_changed_while_running_reaches_later_batches() {
    let w = World::new(200);
    let engine = w.engine(20);
    let recorder = Recorder::attach(engine.control(), |n, control| {
        if n == 1 {
            control.set_limits(|l| l.batch_size = 3);
        }
    });
    let report = engine.execute(BACKFILL, &mut w.sink()).await;
    assert_eq!(report.summary.of(KeyResult::Applied), 200);
    let sizes = recorder.batch_sizes();
    assert_eq!(sizes[0], 20);
    // Batches read before the change (one in each channel, one planning,
    // one read) keep their size; every later one has at most three keys.
    assert!(sizes.len() > 20, "{sizes:?}");
    assert!(sizes[5..].iter().all(|n| *n <= 3), "{sizes:?}");
}

#[tokio::test]
async fn regression_an_interrupted_run_counts_every_key_it_planned() {
    // A stop used to drop the planned batches waiting in the channel from the
    // summary: "52000 planned" while the journal held 54,000 keys.
    let w = World::new(50);
    let engine = w.engine(5);
    Recorder::attach(engine.control(), |n, c| {
        if n == 2 {
            c.stop();
        }
    });
    let report = engine.execute(BACKFILL, &mut w.sink()).await;
    assert!(report.summary.interrupted);
    let in_journal = u64::try_from(w.journal.keys().count()).unwrap();
    assert!(in_journal > 10, "planning ran ahead of applying");
    assert_eq!(report.summary.keys_planned, in_journal);
}
