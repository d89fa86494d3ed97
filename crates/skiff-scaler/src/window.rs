//! Time-bucketed window of demand: the time-weighted mean concurrency of each bucket and
//! the requests that arrived in it. Owns only arithmetic over the spans it was given; the
//! caller supplies every instant, so tests drive it with simulated time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Bucket number since the window's origin.
    index: u64,
    /// Concurrency × nanoseconds over the part of the bucket spans covered (whole
    /// nanoseconds, so that a steady concurrency reads back exactly).
    concurrency_nanos: f64,
    /// Nanoseconds of the bucket that spans covered.
    covered_nanos: u64,
    requests: u64,
}

impl Bucket {
    fn new(index: u64) -> Bucket {
        Bucket {
            index,
            ..Bucket::default()
        }
    }
}

/// Spans of demand grouped into buckets of `granularity`, kept for `span`.
#[derive(Debug)]
pub struct Window {
    origin: Instant,
    granularity: Duration,
    span: Duration,
    buckets: VecDeque<Bucket>,
}

impl Window {
    pub fn new(origin: Instant, granularity: Duration, span: Duration) -> Window {
        Window {
            origin,
            granularity: granularity.max(Duration::from_millis(1)),
            span,
            buckets: VecDeque::new(),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        (since.as_nanos() / self.granularity.as_nanos()) as u64
    }

    /// Where bucket `index` starts.
    fn start_of(&self, index: u64) -> Instant {
        let nanos = u128::from(index) * self.granularity.as_nanos();
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Records that the mean concurrency from `from` to `to` was `concurrency`, and that
    /// `requests` arrived by `to` since the previous span. Each bucket the span overlaps
    /// gets the concurrency for the time it overlaps, so buckets hold means over time
    /// whatever the spacing of the caller's samples. A span that starts before the newest
    /// bucket (a clock that went back, or spans given out of order) is cut to start there,
    /// rather than reordering the window; one wholly before it adds only its requests.
    pub fn record_span(&mut self, from: Instant, to: Instant, concurrency: f64, requests: u64) {
        let newest = self.buckets.back().map(|b| b.index);
        // A span that ends where a bucket starts belongs to the bucket before.
        let ends_on_edge = to > from && self.start_of(self.index(to)) == to;
        let end_index = self.index(to).saturating_sub(u64::from(ends_on_edge));
        let last = end_index.max(newest.unwrap_or(0));
        // Buckets older than the span kept would be dropped at once.
        let kept_from = last.saturating_sub(self.kept() - 1);
        let first = self.index(from).max(newest.unwrap_or(0)).max(kept_from);
        for index in first..=last {
            if self.buckets.back().is_none_or(|b| b.index < index) {
                self.buckets.push_back(Bucket::new(index));
            }
            let (start, end) = (self.start_of(index), self.start_of(index + 1));
            let overlap = to.min(end).saturating_duration_since(from.max(start));
            let overlap = u64::try_from(overlap.as_nanos()).unwrap_or(u64::MAX);
            let b = self.buckets.back_mut().expect("pushed above");
            b.concurrency_nanos += concurrency * overlap as f64;
            b.covered_nanos += overlap;
        }
        if let Some(b) = self.buckets.back_mut() {
            b.requests += requests;
        }
        self.prune(last);
    }

    /// Buckets kept: those of the span, and the one being filled.
    fn kept(&self) -> u64 {
        (self.span.as_nanos() / self.granularity.as_nanos()) as u64 + 1
    }

    /// Drops the buckets that fell out of the span before bucket `newest`.
    fn prune(&mut self, newest: u64) {
        let keep = self.kept();
        while let Some(front) = self.buckets.front() {
            if newest.saturating_sub(front.index) >= keep {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether no bucket within `window` before `now` holds demand (concurrency or an
    /// arrival): every mean and rate over it, or over a later window, reads zero until a
    /// span with demand is recorded.
    pub fn is_quiet(&self, now: Instant, window: Duration) -> bool {
        self.within(now, window)
            .all(|b| b.concurrency_nanos == 0.0 && b.requests == 0)
    }

    /// Buckets that fall within `window` before `now`.
    fn within(&self, now: Instant, window: Duration) -> impl Iterator<Item = &Bucket> {
        let newest = self.index(now);
        let count = (window.as_nanos() / self.granularity.as_nanos()).max(1) as u64;
        self.buckets
            .iter()
            .filter(move |b| b.index <= newest && newest - b.index < count)
    }

    /// Mean concurrency over the last `window`: the mean of its buckets' means over time.
    /// Buckets no span covered (nothing was recorded since) do not dilute it, and the
    /// bucket being filled counts with the mean of its part so far, so a burst weighs in
    /// at once (as in Knative, where the newest bucket holds the last second's mean).
    pub fn mean_concurrency(&self, now: Instant, window: Duration) -> f64 {
        let (sum, n) = self
            .within(now, window)
            .filter(|b| b.covered_nanos > 0)
            .fold((0.0, 0u32), |(s, n), b| {
                (s + b.concurrency_nanos / b.covered_nanos as f64, n + 1)
            });
        if n == 0 {
            0.0
        } else {
            sum / f64::from(n)
        }
    }

    /// Requests per second over the last `window`, or over the time since the origin when
    /// that is shorter (a new revision is not judged by time it did not exist).
    pub fn request_rate(&self, now: Instant, window: Duration) -> f64 {
        let total: u64 = self.within(now, window).map(|b| b.requests).sum();
        let covered = window
            .min(now.saturating_duration_since(self.origin))
            .max(self.granularity);
        total as f64 / covered.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_bucket_holds_the_mean_over_time_not_over_samples() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        // Quiet for 900 ms, then 2 in flight for the last 100 ms of the second: a mean of
        // 0.2, where the two spans' values averaged would read 1.
        w.record_span(t0, t0 + MS * 900, 0.0, 0);
        w.record_span(t0 + MS * 900, t0 + S, 2.0, 2);
        let mean = w.mean_concurrency(t0 + MS * 999, S);
        assert!(close(mean, 0.2), "{mean}");
        assert!(!w.is_quiet(t0 + MS * 999, S));
    }

    #[test]
    fn a_span_over_several_buckets_gives_each_its_part() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        w.record_span(t0 + MS * 500, t0 + MS * 2500, 4.0, 7);
        w.record_span(t0 + MS * 2500, t0 + MS * 3000, 0.0, 0);
        let means: Vec<(u64, f64)> = w
            .buckets
            .iter()
            .filter(|b| b.covered_nanos > 0)
            .map(|b| {
                (
                    b.covered_nanos,
                    b.concurrency_nanos / b.covered_nanos as f64,
                )
            })
            .collect();
        let half = S.as_nanos() as u64 / 2;
        assert_eq!(means, vec![(half, 4.0), (2 * half, 4.0), (2 * half, 2.0)]);
        // The requests are counted in the bucket the span ends in.
        assert_eq!(
            w.buckets.iter().map(|b| b.requests).collect::<Vec<_>>(),
            [0, 0, 7]
        );
        // Over the three seconds: the mean of the buckets' means.
        let mean = w.mean_concurrency(t0 + MS * 2999, Duration::from_secs(3));
        assert!(close(mean, 10.0 / 3.0), "{mean}");
    }

    #[test]
    fn a_long_quiet_span_keeps_only_the_window_span() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut w = Window::new(t0, S, minute);
        w.record_span(t0, t0 + S, 2.0, 1);
        w.record_span(t0 + S, t0 + S * 3600, 0.0, 0);
        assert!(w.buckets.len() <= 61, "{}", w.buckets.len());
        assert!(w.is_quiet(t0 + S * 3600, minute));
        assert_eq!(w.mean_concurrency(t0 + S * 3600, minute), 0.0);
        assert_eq!(w.request_rate(t0 + S * 3600, minute), 0.0);
        // A quiet stretch weighs in the mean as the time it lasted.
        w.record_span(t0 + S * 3600, t0 + S * 3601, 6.0, 0);
        let mean = w.mean_concurrency(t0 + S * 3600 + MS * 999, minute);
        assert!(close(mean, 6.0 / 60.0), "{mean}");
    }

    #[test]
    fn a_span_given_out_of_order_does_not_reorder_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        w.record_span(t0 + S * 4, t0 + S * 5, 1.0, 0);
        // Starts before the newest bucket (4 s): only its part from there counts.
        w.record_span(t0 + MS * 3500, t0 + MS * 4500, 3.0, 2);
        let indices: Vec<u64> = w.buckets.iter().map(|b| b.index).collect();
        assert_eq!(indices, [4]);
        let b = &w.buckets[0];
        assert!(close(b.concurrency_nanos, 2.5e9), "{b:?}");
        assert_eq!(b.requests, 2);
    }

    #[test]
    fn mean_covers_only_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        for s in 0..10 {
            w.record_span(t0 + S * s, t0 + S * (s + 1), 100.0, 0);
        }
        for s in 10..20 {
            w.record_span(t0 + S * s, t0 + S * (s + 1), 10.0, 0);
        }
        let now = t0 + S * 19 + MS * 999;
        assert_eq!(w.mean_concurrency(now, Duration::from_secs(5)), 10.0);
        assert_eq!(w.mean_concurrency(now, Duration::from_secs(20)), 55.0);
    }

    #[test]
    fn old_buckets_are_dropped() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(3));
        w.record_span(t0, t0 + MS * 500, 2.0, 1);
        w.record_span(t0 + MS * 500, t0 + MS * 900, 4.0, 1);
        let mean = w.mean_concurrency(t0 + MS * 900, S);
        assert!(close(mean, (1.0 + 1.6) / 0.9), "{mean}");
        w.record_span(t0 + S * 10, t0 + S * 10 + MS * 500, 1.0, 0);
        assert_eq!(
            w.buckets.len(),
            1,
            "buckets older than the span are dropped"
        );
        assert_eq!(
            w.mean_concurrency(t0 + S * 10, Duration::from_secs(60)),
            1.0
        );
    }

    #[test]
    fn rate_counts_requests_per_second_of_covered_time() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        for s in 1..=10 {
            w.record_span(t0 + S * (s - 1), t0 + S * s, 0.0, 50);
        }
        // 10 s of history, a 60 s window: judged over the 10 s that exist.
        assert_eq!(w.request_rate(t0 + S * 10, Duration::from_secs(60)), 50.0);
        // A 2 s window holds the last two buckets.
        assert_eq!(
            w.request_rate(t0 + S * 10 - MS, Duration::from_secs(2)),
            50.0
        );
    }
}
