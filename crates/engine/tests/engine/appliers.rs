//! Two batches in flight: with `appliers: 2` and a sink that forks, a pass
//! over the source keeps two batches at the sink at once, and writes what one
//! applier writes. The in-flight count would stay at 1 if the pairing were
//! removed, and the refusal test would see a key fail twice or not at all if
//! outcomes of one batch were recorded under the other.

use std::time::Duration;

use backfill_engine::{EngineSettings, KeyResult, MemorySink, Mode};
use backfill_journal::{Record, State};

use crate::support::{target, World};

const BACKFILL: Mode = Mode::Backfill { rescan: false };

/// A memory target whose transactions take a while.
fn slow(w: &World) -> MemorySink {
    let sink = w.sink();
    sink.slow(Duration::from_millis(40));
    sink
}

fn two_appliers() -> EngineSettings {
    EngineSettings {
        appliers: 2,
        ..EngineSettings::default()
    }
}

#[tokio::test]
async fn two_appliers_keep_two_batches_in_flight_and_write_what_one_writes() {
    let one = World::new(60);
    let single = slow(&one);
    let report = one.engine(5).execute(BACKFILL, &mut single.clone()).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(
        single.most_in_flight(),
        1,
        "one applier, one batch at a time"
    );

    let two = World::new(60);
    let paired = slow(&two);
    let report = two
        .engine_with(5, two_appliers())
        .execute(BACKFILL, &mut paired.clone())
        .await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(
        paired.most_in_flight(),
        2,
        "a planned batch waiting while another is applied goes beside it"
    );
    assert_eq!(report.summary.of(KeyResult::Applied), 60);
    assert_eq!(two.journal.count(State::Applied), 60);
    assert_eq!(target(&paired), target(&single));
    // Every batch is numbered once in the journal, whichever applier took it.
    let mut batches: Vec<u64> = two
        .migrating()
        .iter()
        .filter_map(|k| two.journal.history(*k).ok())
        .flat_map(|history| {
            history.into_iter().filter_map(|l| match l.record {
                Record::Applied { batch, .. } => Some(batch),
                _ => None,
            })
        })
        .collect();
    batches.sort_unstable();
    batches.dedup();
    assert_eq!(batches, (1..=12).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_two_appliers_a_refused_key_fails_alone_and_a_stop_records_what_committed() {
    let w = World::new(60);
    let sink = slow(&w);
    sink.refuse(23);
    sink.refuse(47);
    let report = w
        .engine_with(5, two_appliers())
        .execute(BACKFILL, &mut sink.clone())
        .await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.summary.of(KeyResult::Failed), 2);
    assert_eq!(report.summary.of(KeyResult::Applied), 58);
    assert_eq!(w.journal.count(State::Failed), 2);
    assert!(!target(&sink).contains_key(&23));

    let w = World::new(60);
    let sink = slow(&w);
    sink.stop_after(5);
    let report = w
        .engine_with(5, two_appliers())
        .execute(BACKFILL, &mut sink.clone())
        .await;
    assert!(report.error.is_some(), "the sink stopped the run");
    // What the target holds is exactly what the journal says is applied.
    let applied: Vec<i64> = w
        .journal
        .keys_in_state(State::Applied, None)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(applied, target(&sink).into_keys().collect::<Vec<_>>());
    assert_eq!(applied.len(), 25, "five batches of five committed");
}

/// The reader and the planner work only when the next stage has room: a
/// batch is read once the planner has taken the previous one, and planned
/// once an applier can take it. With both appliers busy that is at most two
/// batches at the sink, one planned and one read; before, the reader and the
/// planner each held one more, blocked on a full channel (peak RSS grew with
/// them: decision 69). Fails with the reservations removed (6, checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_and_the_planner_run_ahead_of_busy_appliers_by_one_batch_each() {
    let w = World::new(80);
    let sink = slow(&w);
    let source = w.source.clone();
    let observed = sink.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let sampler = tokio::spawn(async move {
        let mut most = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // Read but not yet through a transaction.
            let ahead = source.batches_read().saturating_sub(observed.applies());
            most = most.max(ahead);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        most
    });
    let report = w
        .engine_with(5, two_appliers())
        .execute(BACKFILL, &mut sink.clone())
        .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.await.unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.summary.of(KeyResult::Applied), 80);
    assert_eq!(sink.most_in_flight(), 2, "both appliers were busy");
    // 4 in the steady state (3 if the sampler never ran at such a moment).
    assert!(
        (3..=4).contains(&most),
        "two at the sink, one planned, one read: no batch held beyond ({most})"
    );
}
