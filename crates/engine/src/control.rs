//! The run control: one handle that stops, pauses and re-limits a run while
//! it works, and through which the run reports what it does.
//!
//! Why one handle: a signal handler, a terminal display, `--json`, a future
//! control socket (`backfill ctl`), a status snapshot and metrics all act on
//! or read the same run. Cancellation is two tokens (stop after the batch in
//! flight; abort at once) that every await of the pipeline honours, so a
//! throttle sleep, a pause or a slow query never outlives a stop. Limits are a
//! watch channel, so a change reaches the next batch without a restart.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Limits a run reads before each batch; they may change while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Keys per batch.
    pub batch_size: usize,
    /// Source rows read per second at most.
    pub max_rows_per_sec: Option<NonZeroU64>,
    /// Paused: no new batch starts until resumed (the batch in flight ends).
    pub paused: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            max_rows_per_sec: None,
            paused: false,
        }
    }
}

/// The stages of a run, as progress reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Reading the source and planning (and, when applying, writing).
    SourcePass {
        /// Whether planned keys are applied as they are planned.
        applying: bool,
    },
    /// Applying keys the journal holds (pending, failed).
    Journal,
    /// Re-planning and rewriting drifted keys.
    Drifted,
}

impl Phase {
    /// A short name for displays.
    pub fn name(self) -> &'static str {
        match self {
            Self::SourcePass { applying: true } => "run",
            Self::SourcePass { applying: false } => "plan",
            Self::Journal => "replay",
            Self::Drifted => "drifted",
        }
    }
}

/// Why the run is waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// Paused through the control.
    Paused,
    /// Holding to `max_rows_per_sec`.
    Throttled {
        /// How long.
        wait: Duration,
    },
}

/// What a run reports while it works.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A phase starts; `total` is an estimate when known (rows for a source
    /// pass, keys otherwise).
    PhaseStarted {
        /// The phase.
        phase: Phase,
        /// Its estimated size.
        total: Option<u64>,
    },
    /// Source rows read and planned.
    RowsPlanned {
        /// Rows in the batch.
        rows: u64,
        /// Keys in the batch.
        keys: u64,
    },
    /// A batch went to the sink and its outcome was recorded.
    BatchApplied {
        /// Keys in the batch.
        keys: u64,
        /// Keys written (or, in a dry run, that would be).
        applied: u64,
        /// Keys that failed.
        failed: u64,
        /// How long the sink took.
        duration: Duration,
        /// Attempts retried (lock or statement timeouts, lost connections).
        retries: u64,
    },
    /// The run waits.
    Waiting(WaitReason),
    /// A phase ended.
    PhaseFinished {
        /// The phase.
        phase: Phase,
    },
}

/// Receives a run's events (a terminal display, a metrics registry, …).
/// Called on the pipeline's tasks: keep it quick.
pub trait Observer: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event);
}

struct Shared {
    abort: CancellationToken,
    stop: CancellationToken,
    limits: watch::Sender<Limits>,
    observers: Mutex<Vec<Arc<dyn Observer>>>,
}

/// A handle on one run (cheap to clone; all clones act on the same run).
#[derive(Clone)]
pub struct RunControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("limits", &self.limits())
            .field("stopping", &self.is_stopping())
            .field("aborted", &self.is_aborted())
            .finish()
    }
}

impl RunControl {
    /// A control with these starting limits.
    pub fn new(limits: Limits) -> Self {
        let abort = CancellationToken::new();
        let stop = abort.child_token();
        Self {
            shared: Arc::new(Shared {
                abort,
                stop,
                limits: watch::Sender::new(limits),
                observers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Stop after the batch in flight: no new batch is read, planned or
    /// applied; what is in flight is finished and recorded.
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// Stop at once: the batch in flight is abandoned (a transaction not yet
    /// committed rolls back; one committed but not yet recorded is found in
    /// the ledger by the next run).
    pub fn abort(&self) {
        self.shared.abort.cancel();
    }

    /// True once [`stop`](Self::stop) or [`abort`](Self::abort) was called.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.is_cancelled()
    }

    /// True once [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.shared.abort.is_cancelled()
    }

    /// Resolves when a stop (or abort) is requested.
    pub async fn stopping(&self) {
        self.shared.stop.cancelled().await;
    }

    /// Resolves when an abort is requested.
    pub async fn aborted(&self) {
        self.shared.abort.cancelled().await;
    }

    /// The current limits.
    pub fn limits(&self) -> Limits {
        *self.shared.limits.borrow()
    }

    /// Changes the limits; the next batch reads them.
    pub fn set_limits(&self, change: impl FnOnce(&mut Limits)) {
        self.shared.limits.send_modify(change);
    }

    /// Pauses before the next batch.
    pub fn pause(&self) {
        self.set_limits(|l| l.paused = true);
    }

    /// Resumes a paused run.
    pub fn resume(&self) {
        self.set_limits(|l| l.paused = false);
    }

    /// Adds an observer of this run's events.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        self.shared
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    /// Tells every observer.
    pub(crate) fn emit(&self, event: Event) {
        let observers = self
            .shared
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for observer in observers {
            observer.on_event(&event);
        }
    }

    /// A token cancelled by a stop (or abort) of the run, and that a pass
    /// cancels on its own to end its tasks after an error.
    pub(crate) fn pass_token(&self) -> CancellationToken {
        self.shared.stop.child_token()
    }

    /// Waits while paused. Returns false if `token` was cancelled first.
    pub(crate) async fn wait_while_paused(&self, token: &CancellationToken) -> bool {
        let mut limits = self.shared.limits.subscribe();
        if !limits.borrow().paused {
            return !token.is_cancelled();
        }
        self.emit(Event::Waiting(WaitReason::Paused));
        loop {
            tokio::select! {
                () = token.cancelled() => return false,
                changed = limits.changed() => {
                    if changed.is_err() || !limits.borrow().paused {
                        return !token.is_cancelled();
                    }
                }
            }
        }
    }

    /// Sleeps for `wait` unless `token` is cancelled first (then false).
    pub(crate) async fn sleep(token: &CancellationToken, wait: Duration) -> bool {
        tokio::select! {
            () = token.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

impl Default for RunControl {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}
