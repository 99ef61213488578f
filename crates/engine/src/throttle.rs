//! Pacing the source to `max_rows_per_sec`, as a pure decision.
//!
//! Why pure: the rate may change while a run works (`RunControl`), a pause
//! must not be followed by a burst that "catches up", and both are easier to
//! prove on numbers than on a clock. The pipeline feeds it elapsed time and
//! rows; it answers how long to wait.

use std::num::NonZeroU64;
use std::time::Duration;

/// Paces reads: after each batch, the time the next may start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Throttle {
    /// When the next batch is due, measured from the start of the run.
    due: Duration,
}

impl Throttle {
    /// A throttle at the start of a run.
    pub fn new() -> Self {
        Self::default()
    }

    /// `rows` were just read at `elapsed` since the start; with `rate`, how
    /// long to wait before the next read. Time spent waiting for other reasons
    /// (a pause, a slow apply) is not made up for by reading faster later.
    pub fn after_batch(
        &mut self,
        elapsed: Duration,
        rows: u64,
        rate: Option<NonZeroU64>,
    ) -> Duration {
        let Some(rate) = rate else {
            self.due = elapsed;
            return Duration::ZERO;
        };
        // Never schedule from a point in the past: no bursts after a stall.
        let from = self
            .due
            .max(elapsed.saturating_sub(Duration::from_millis(50)));
        let cost = Duration::from_secs_f64(rows as f64 / rate.get() as f64);
        self.due = from + cost;
        self.due.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(n)
    }

    #[test]
    fn no_rate_never_waits() {
        let mut t = Throttle::new();
        assert_eq!(
            t.after_batch(Duration::ZERO, 1_000_000, None),
            Duration::ZERO
        );
    }

    #[test]
    fn a_batch_costs_rows_over_rate() {
        let mut t = Throttle::new();
        // 500 rows at 1000/s, read instantly: wait half a second.
        assert_eq!(
            t.after_batch(Duration::ZERO, 500, rate(1000)),
            Duration::from_millis(500)
        );
        // The next 500 read right when due: another half second.
        assert_eq!(
            t.after_batch(Duration::from_millis(500), 500, rate(1000)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_rate_change_applies_to_the_next_batch() {
        let mut t = Throttle::new();
        t.after_batch(Duration::ZERO, 1000, rate(1000));
        // Halved rate: 1000 rows now cost two seconds.
        assert_eq!(
            t.after_batch(Duration::from_secs(1), 1000, rate(500)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_stall_is_not_made_up_by_a_burst() {
        let mut t = Throttle::new();
        t.after_batch(Duration::ZERO, 100, rate(100));
        // Paused for a minute: the next batch still waits its own cost.
        let wait = t.after_batch(Duration::from_secs(60), 100, rate(100));
        assert!(wait >= Duration::from_millis(950), "{wait:?}");
    }
}
