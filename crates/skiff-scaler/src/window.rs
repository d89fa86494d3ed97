//! Time-bucketed window of demand samples: the mean concurrency of each bucket and the
//! requests that arrived in it. Owns only arithmetic over the samples it was given; the
//! caller supplies every instant, so tests drive it with simulated time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Bucket number since the window's origin.
    index: u64,
    concurrency_sum: f64,
    samples: u32,
    requests: u64,
}

/// Samples grouped into buckets of `granularity`, kept for `span`.
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

    /// Adds one sample: the concurrency seen at `at`, and the requests that arrived since
    /// the previous sample.
    pub fn record(&mut self, at: Instant, concurrency: f64, requests: u64) {
        let index = self.index(at);
        match self.buckets.back_mut() {
            Some(b) if b.index == index => {
                b.concurrency_sum += concurrency;
                b.samples += 1;
                b.requests += requests;
            }
            // A sample older than the newest bucket (a clock that went back) joins it
            // rather than reordering the window.
            Some(b) if b.index > index => {
                b.concurrency_sum += concurrency;
                b.samples += 1;
                b.requests += requests;
            }
            _ => self.buckets.push_back(Bucket {
                index,
                concurrency_sum: concurrency,
                samples: 1,
                requests,
            }),
        }
        self.prune(index);
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
    /// sample with demand is recorded.
    pub fn is_quiet(&self, now: Instant, window: Duration) -> bool {
        self.within(now, window)
            .all(|b| b.concurrency_sum == 0.0 && b.requests == 0)
    }

    /// Records that there was no demand from `from` to `to` (the caller stopped sampling
    /// because nothing could arrive unseen): each bucket after `from`'s gets a zero
    /// sample up to `to`'s, and `to`'s too when `to` is past its start, so the stretch
    /// weighs in the means as a sample a bucket would have (a mean counts only buckets
    /// with samples, and a quiet loop samples about once a bucket).
    pub fn record_quiet(&mut self, from: Instant, to: Instant) {
        let last = self.index(to);
        let after_newest = self.buckets.back().map_or(0, |b| b.index + 1);
        let first = (self.index(from) + 1)
            .max(last.saturating_sub(self.kept()))
            .max(after_newest);
        // The bucket `to` falls in was quiet from its start, if `to` is past its start.
        let into_last = !to
            .saturating_duration_since(self.origin)
            .as_nanos()
            .is_multiple_of(self.granularity.as_nanos());
        let end = if into_last { last + 1 } else { last };
        for index in first..end {
            self.buckets.push_back(Bucket {
                index,
                concurrency_sum: 0.0,
                samples: 1,
                requests: 0,
            });
        }
        self.prune(last);
    }

    /// Buckets that fall within `window` before `now`.
    fn within(&self, now: Instant, window: Duration) -> impl Iterator<Item = &Bucket> {
        let newest = self.index(now);
        let count = (window.as_nanos() / self.granularity.as_nanos()).max(1) as u64;
        self.buckets
            .iter()
            .filter(move |b| b.index <= newest && newest - b.index < count)
    }

    /// Mean concurrency over the last `window`: the mean of the buckets that hold samples.
    /// Buckets without samples (the loop did not run) do not dilute the mean.
    pub fn mean_concurrency(&self, now: Instant, window: Duration) -> f64 {
        let (sum, n) = self.within(now, window).fold((0.0, 0u32), |(s, n), b| {
            (s + b.concurrency_sum / f64::from(b.samples), n + 1)
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

    #[test]
    fn a_quiet_stretch_weighs_in_the_mean_as_zero_samples() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut w = Window::new(t0, S, minute);
        w.record(t0, 0.0, 0);
        assert!(w.is_quiet(t0, minute));
        // Quiet from 0 s to 50 s, then 6 requests in flight at 50 s.
        w.record_quiet(t0, t0 + S * 50);
        w.record(t0 + S * 50, 6.0, 0);
        assert!(!w.is_quiet(t0 + S * 50, minute));
        // 51 buckets: 50 of zero (0 s and the 49 skipped), one of 6.
        let mean = w.mean_concurrency(t0 + S * 50, minute);
        assert!((mean - 6.0 / 51.0).abs() < 1e-9, "{mean}");
        // Woken half-way into a bucket: its quiet half is a zero sample beside the 6.
        w.record_quiet(t0 + S * 50, t0 + S * 52 + S / 2);
        w.record(t0 + S * 52 + S / 2, 6.0, 0);
        let mean = w.mean_concurrency(t0 + S * 52 + S / 2, minute);
        assert!((mean - (6.0 + 3.0) / 53.0).abs() < 1e-9, "{mean}");
        // Without the stretch the mean would be that of the sampled buckets only.
        let mut unfilled = Window::new(t0, S, minute);
        unfilled.record(t0, 0.0, 0);
        unfilled.record(t0 + S * 50, 6.0, 0);
        assert_eq!(unfilled.mean_concurrency(t0 + S * 50, minute), 3.0);
    }

    #[test]
    fn a_long_quiet_stretch_keeps_only_the_span() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut w = Window::new(t0, S, minute);
        w.record(t0, 2.0, 1);
        w.record_quiet(t0, t0 + S * 3600);
        assert!(w.buckets.len() <= 61, "{}", w.buckets.len());
        w.record(t0 + S * 3600, 0.0, 0);
        assert!(w.is_quiet(t0 + S * 3600, minute));
        assert_eq!(w.mean_concurrency(t0 + S * 3600, minute), 0.0);
        assert_eq!(w.request_rate(t0 + S * 3600, minute), 0.0);
    }

    #[test]
    fn a_quiet_stretch_within_one_bucket_adds_nothing() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        w.record(t0, 4.0, 0);
        w.record_quiet(t0, t0 + Duration::from_millis(900));
        w.record_quiet(t0, t0 + S);
        assert_eq!(w.buckets.len(), 1);
        assert_eq!(w.mean_concurrency(t0 + S / 2, Duration::from_secs(60)), 4.0);
        assert!(!w.is_quiet(t0 + S, Duration::from_secs(60)));
    }

    #[test]
    fn mean_covers_only_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(60));
        for s in 0..10 {
            w.record(t0 + S * s, 100.0, 0);
        }
        for s in 10..20 {
            w.record(t0 + S * s, 10.0, 0);
        }
        let now = t0 + S * 19;
        assert_eq!(w.mean_concurrency(now, Duration::from_secs(5)), 10.0);
        assert_eq!(w.mean_concurrency(now, Duration::from_secs(20)), 55.0);
    }

    #[test]
    fn samples_in_one_bucket_are_averaged_and_old_buckets_dropped() {
        let t0 = Instant::now();
        let mut w = Window::new(t0, S, Duration::from_secs(3));
        w.record(t0, 2.0, 1);
        w.record(t0 + Duration::from_millis(500), 4.0, 1);
        assert_eq!(w.mean_concurrency(t0 + Duration::from_millis(900), S), 3.0);
        w.record(t0 + S * 10, 1.0, 0);
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
            w.record(t0 + S * s, 0.0, 50);
        }
        // 10 s of history, a 60 s window: judged over the 10 s that exist.
        assert_eq!(w.request_rate(t0 + S * 10, Duration::from_secs(60)), 50.0);
        // A 2 s window holds the last two buckets.
        assert_eq!(w.request_rate(t0 + S * 10, Duration::from_secs(2)), 50.0);
    }
}
