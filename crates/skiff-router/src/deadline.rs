//! A connection's deadlines, moved lazily: a deadline is reset only when it would fall
//! early or later than its slack allows, since moving a tokio timer takes its wheel's lock.
//!
//! This module owns that rule only; which deadline a request gets is the caller's.

use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Most a deadline may fall after the time asked for (see [`extend_deadline`]).
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// Sets `deadline` to `timeout` after `now`, or up to a sixteenth of it (at most
/// [`DEADLINE_SLACK`]) later: a deadline already within that span is left alone. Moving a
/// tokio timer takes its wheel's lock, and a connection moves two for every request (1 %
/// of the router's time at 32 connections, bench/proxy-hop); nginx skips timer updates
/// under 300 ms for the same reason. A deadline never falls early.
pub(crate) fn extend_deadline(deadline: Pin<&mut Sleep>, now: Instant, timeout: Duration) {
    let earliest = now + timeout;
    let latest = earliest + (timeout / 16).min(DEADLINE_SLACK);
    let at = deadline.deadline();
    if at < earliest || at > latest {
        deadline.reset(latest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_moves_only_when_it_would_fall_early_or_past_its_slack() {
        let t0 = Instant::now();
        let mut deadline = Box::pin(tokio::time::sleep_until(t0));
        let minute = Duration::from_secs(60);
        // Too early: moved to the end of the span (one second of slack at a minute).
        extend_deadline(deadline.as_mut(), t0, minute);
        assert_eq!(deadline.deadline(), t0 + minute + DEADLINE_SLACK);
        // Still within the span half a second on: left alone.
        let later = t0 + Duration::from_millis(500);
        extend_deadline(deadline.as_mut(), later, minute);
        assert_eq!(deadline.deadline(), t0 + minute + DEADLINE_SLACK);
        // A second and a half on it would fall early: moved.
        let later = t0 + Duration::from_millis(1500);
        extend_deadline(deadline.as_mut(), later, minute);
        assert_eq!(deadline.deadline(), later + minute + DEADLINE_SLACK);
        // A shorter timeout: moved in, with a sixteenth of it as slack.
        let short = Duration::from_millis(160);
        extend_deadline(deadline.as_mut(), later, short);
        assert_eq!(
            deadline.deadline(),
            later + short + Duration::from_millis(10)
        );
    }
}
