//! A target's rate limit (Cloud Tasks' `maxDispatchesPerSecond` and burst): a token
//! bucket over a clock the caller reads.

use std::time::Duration;

/// Deliveries per second to one target, with a burst. Kept as the generic cell rate
/// algorithm in whole nanoseconds, so a rate is exact, not drifting with float error.
#[derive(Clone, Debug)]
pub struct RateLimit {
    /// Time between deliveries at the steady rate.
    interval: Duration,
    /// How far ahead of the clock a burst may run.
    tolerance: Duration,
    /// When the next delivery would be due at the steady rate.
    due: Duration,
}

impl RateLimit {
    /// `per_second` deliveries (above zero), up to `burst` at once (at least one); full
    /// at `now`.
    pub fn new(per_second: f64, burst: u32, now: Duration) -> RateLimit {
        let interval = Duration::try_from_secs_f64(1.0 / per_second.max(1e-9))
            .unwrap_or(Duration::MAX)
            .max(Duration::from_nanos(1));
        RateLimit {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            due: now,
        }
    }

    /// Takes one delivery at `now`; when there is none to take, how long until there is.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        let due = self.due.max(now);
        let ahead = due - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        self.due = due.saturating_add(self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_on_an_injected_clock() {
        let ms = Duration::from_millis;
        let mut r = RateLimit::new(10.0, 3, ms(0));
        for _ in 0..3 {
            assert_eq!(r.take(ms(0)), Ok(()));
        }
        let wait = r.take(ms(0)).unwrap_err();
        assert_eq!(wait.as_millis(), 100);
        assert!(r.take(ms(50)).is_err());
        assert_eq!(r.take(ms(100)), Ok(()));
        // Over a second at 10/s: ten deliveries, not more.
        let taken = (1..=100)
            .filter(|i| r.take(ms(100 + i * 10)).is_ok())
            .count();
        assert_eq!(taken, 10);
        // A clock read out of order changes nothing.
        let mut r = RateLimit::new(1.0, 1, ms(1000));
        assert_eq!(r.take(ms(1000)), Ok(()));
        assert!(r.take(ms(500)).is_err());
    }
}
