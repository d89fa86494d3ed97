//! Each target's limits on deliveries (Cloud Tasks' queue settings): how many at once
//! (`max_in_flight`) and how many started a second (`max_per_second`, a token bucket
//! with a second's burst). A delivery a limit holds back is not attempted: it goes back
//! to the store pending, due when the limit allows. Time comes from the caller, so the
//! decisions are tested without a clock.

use super::Target;
use skiff_events::RateLimit;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How soon a delivery held back by the concurrency limit is looked at again (a
/// finishing delivery wakes the dispatcher too, which then finds it due soon after).
pub(crate) const RECHECK: Duration = Duration::from_millis(100);

/// Whether a delivery may start now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Go,
    /// Not before this much later.
    Later(Duration),
}

#[derive(Default)]
struct State {
    in_flight: u32,
    /// The rate the bucket was made for, and the bucket.
    rate: Option<(u32, RateLimit)>,
}

/// Deliveries in flight and rate buckets, by target key.
#[derive(Default)]
pub(crate) struct Limits {
    by_target: Mutex<HashMap<String, State>>,
}

impl Limits {
    /// Whether a delivery to `key` (limited as `target` says) may start at `now` (any
    /// monotonic clock); `Go` counts it in flight until [`Limits::done`].
    pub(crate) fn admit(&self, key: &str, target: &Target, now: Duration) -> Admit {
        if target.max_in_flight.is_none() && target.max_per_second.is_none() {
            // The common case keeps no state: nothing to forget later.
            return Admit::Go;
        }
        let mut all = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        let state = all.entry(key.to_owned()).or_default();
        if target
            .max_in_flight
            .is_some_and(|max| state.in_flight >= max)
        {
            return Admit::Later(RECHECK);
        }
        if let Some(per_second) = target.max_per_second {
            if state
                .rate
                .as_ref()
                .is_none_or(|(made_for, _)| *made_for != per_second)
            {
                state.rate = Some((
                    per_second,
                    RateLimit::new(f64::from(per_second), per_second, now),
                ));
            }
            if let Some((_, bucket)) = state.rate.as_mut() {
                if let Err(wait) = bucket.take(now) {
                    return Admit::Later(wait);
                }
            }
        }
        state.in_flight += 1;
        Admit::Go
    }

    /// A delivery to `key` that was let go has ended.
    pub(crate) fn done(&self, key: &str) {
        let mut all = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = all.get_mut(key) {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 && state.rate.is_none() {
                all.remove(key);
            }
        }
    }

    /// How many deliveries to `key` are in flight (limited targets only).
    #[cfg(test)]
    fn in_flight(&self, key: &str) -> u32 {
        let all = self.by_target.lock().unwrap();
        all.get(key).map_or(0, |s| s.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(max_in_flight: Option<u32>, max_per_second: Option<u32>) -> Target {
        Target {
            max_in_flight,
            max_per_second,
            ..Default::default()
        }
    }

    #[test]
    fn at_most_so_many_at_once() {
        let limits = Limits::default();
        let t = target(Some(2), None);
        let now = Duration::ZERO;
        assert_eq!(limits.admit("a", &t, now), Admit::Go);
        assert_eq!(limits.admit("a", &t, now), Admit::Go);
        assert_eq!(limits.admit("a", &t, now), Admit::Later(RECHECK));
        // Another target is not held back by this one's.
        assert_eq!(limits.admit("b", &t, now), Admit::Go);
        limits.done("a");
        assert_eq!(limits.in_flight("a"), 1);
        assert_eq!(limits.admit("a", &t, now), Admit::Go);
        // Unlimited targets are not even counted.
        assert_eq!(limits.admit("c", &target(None, None), now), Admit::Go);
        assert_eq!(limits.in_flight("c"), 0);
    }

    #[test]
    fn at_most_so_many_a_second_after_a_seconds_burst() {
        let limits = Limits::default();
        let t = target(None, Some(10));
        let start = Duration::from_secs(100);
        for _ in 0..10 {
            assert_eq!(limits.admit("a", &t, start), Admit::Go);
            limits.done("a");
        }
        // The burst is spent: the next is due a tenth of a second on.
        assert_eq!(
            limits.admit("a", &t, start),
            Admit::Later(Duration::from_millis(100))
        );
        assert_eq!(
            limits.admit("a", &t, start + Duration::from_millis(100)),
            Admit::Go
        );
        // Over a simulated minute, about ten a second.
        let mut started = 0;
        let mut now = start + Duration::from_secs(1);
        let end = now + Duration::from_secs(60);
        while now < end {
            if limits.admit("a", &t, now) == Admit::Go {
                started += 1;
                limits.done("a");
            }
            now += Duration::from_millis(10);
        }
        assert!((600..=611).contains(&started), "{started} in 60 s");
        // A changed rate takes effect.
        let faster = target(None, Some(1000));
        assert_eq!(limits.admit("a", &faster, end), Admit::Go);
    }
}
