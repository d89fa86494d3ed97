//! Exponential backoff for every retry loop in the daemon (accepting connections,
//! preparing sandboxes, restarting a failing revision): the wait doubles from a first
//! delay up to a cap, and a run of failures is worth a log line only at each new step
//! (the 1st, 2nd, 4th, 8th… failure), so a failure that repeats for hours writes a few
//! dozen lines, not millions.
//!
//! Pure arithmetic: callers own the clock and the sleeping.

use std::time::Duration;

/// A retry loop's state: how many failures in a row, and the waits they earn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

/// What one more failure means for its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// How long to wait before the next try.
    pub wait: Duration,
    /// Failures in a row, this one included.
    pub failures: u32,
    /// Whether this failure starts a new step of the run and so deserves a log line.
    pub log: bool,
}

impl Backoff {
    /// Waits of `first`, twice that, four times… never more than `cap`.
    pub const fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            failures: 0,
        }
    }

    /// The wait after the `failures`-th failure in a row (1 for the first).
    pub fn wait_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// Counts one more failure.
    pub fn fail(&mut self) -> Step {
        self.failures = self.failures.saturating_add(1);
        Step {
            wait: self.wait_after(self.failures),
            failures: self.failures,
            log: self.failures.is_power_of_two(),
        }
    }

    /// A success ends the run: the next failure waits `first` again.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let waits: Vec<u128> = (0..10).map(|_| b.fail().wait.as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(b.failures(), 10);
    }

    #[test]
    fn a_success_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        b.fail();
        b.fail();
        b.succeed();
        assert_eq!(b.fail().wait, Duration::from_secs(1));
    }

    #[test]
    fn a_long_run_logs_once_per_step() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
        let logged: Vec<u32> = (0..1000)
            .map(|_| b.fail())
            .filter(|s| s.log)
            .map(|s| s.failures)
            .collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
    }

    #[test]
    fn huge_counts_neither_overflow_nor_exceed_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.wait_after(u32::MAX), Duration::from_secs(30));
        assert_eq!(b.wait_after(0), Duration::from_secs(1));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.wait_after(40), Duration::MAX);
    }
}
