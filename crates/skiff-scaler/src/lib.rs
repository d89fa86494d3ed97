//! skiff's autoscaler: Knative's KPA as pure logic. The revision's reconcile loop feeds it
//! samples of demand (requests in flight and queued, their running integral over time,
//! and a running request count) and asks for a decision: how many instances the revision
//! should have, and why.
//!
//! The model (Knative `pkg/autoscaler`):
//! - demand is averaged over a stable window (default 60 s) and a panic window (10 % of it);
//! - desired = ceil(demand / (target × utilization)), within the scale-up and scale-down
//!   rates relative to the ready instances;
//! - when the panic window's desired count reaches the panic threshold (200 %) of the ready
//!   instances the scaler panics: it follows the panic window and never scales down,
//!   until a whole stable window passes without crossing the threshold.
//!
//! skiff's additions: requests queued beyond what the ready instances accept are capacity
//! needed now (the activator holds them), so they raise the count at once; and the last
//! instance goes only after no demand at all for the idle time (plus an optional grace).
//!
//! Owns no clock and does no I/O: every instant is an argument, so tests run in simulated
//! time. Must not know how instances are started or stopped.
#![forbid(unsafe_code)]

mod reason;
mod settings;
mod window;

pub use reason::Reason;
use reason::{Basis, RateLimit};
pub use settings::*;
pub use skiff_core::BusyTime;
use std::time::Instant;
use window::Window;

/// One sample of a revision's demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Requests being served.
    pub in_flight: u32,
    /// Requests held by the activator, waiting for a slot.
    pub queued: u32,
    /// Requests received since the revision started (a running count).
    pub requests_total: u64,
    /// The running integral of concurrency over time, when the sampler keeps one.
    pub busy: Option<BusyTime>,
}

/// What the scaler decided and the figures it decided on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    /// Instances the revision should have.
    pub desired: u32,
    /// Ready instances when deciding.
    pub ready: u32,
    /// Mean demand over the stable window (the metric's unit).
    pub stable_demand: f64,
    /// Mean demand over the panic window.
    pub panic_demand: f64,
    pub panicking: bool,
    pub metric: Metric,
    /// Why this count (in words when shown).
    pub reason: Reason,
}

/// One revision's autoscaler.
#[derive(Debug)]
pub struct Scaler {
    settings: Settings,
    window: Window,
    requests_seen: Option<u64>,
    latest: Observation,
    last_demand: Instant,
    panic_since: Option<Instant>,
    max_panic: u32,
    zero_since: Option<Instant>,
    last_step_down: Option<Instant>,
    /// When the last observation was made (at first, when the scaler was).
    observed_at: Instant,
    /// The last observation's integral.
    busy_seen: Option<BusyTime>,
}

impl Scaler {
    /// A scaler for a revision that starts at `now`. The revision counts as having had
    /// demand at `now`, so it is not judged idle before its idle time has passed.
    pub fn new(settings: Settings, now: Instant) -> Scaler {
        let window = Window::new(now, settings.granularity, settings.stable_window);
        Scaler {
            settings,
            window,
            requests_seen: None,
            latest: Observation::default(),
            last_demand: now,
            panic_since: None,
            max_panic: 0,
            zero_since: None,
            last_step_down: None,
            observed_at: now,
            busy_seen: None,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Records a sample taken at `now`: the demand since the previous one (or since the
    /// scaler was made) goes into the window as a span of time (see
    /// [`Scaler::span_demand`]).
    pub fn observe(&mut self, now: Instant, o: Observation) {
        let arrived = match self.requests_seen {
            Some(seen) => o.requests_total.saturating_sub(seen),
            None => 0,
        };
        self.requests_seen = Some(o.requests_total);
        let from = std::mem::replace(&mut self.observed_at, now);
        let (busy_from, mean) = self.span_demand(from, now, o.busy);
        if busy_from > from {
            self.window.record_span(from, busy_from, 0.0, 0);
        }
        self.window.record_span(busy_from, now, mean, arrived);
        if o.in_flight + o.queued > 0 || arrived > 0 || mean > 0.0 {
            self.last_demand = now;
        }
        if o.busy.is_some() {
            self.busy_seen = o.busy;
        }
        self.latest = o;
    }

    /// The demand from `from` (the previous sample) to `now`: from when on it may have
    /// been above zero, and its mean from then. With the sampler's integral that is exact
    /// (the mean over time since concurrency first rose; the first integral counts from
    /// the sampler's start, as the scaler's first span from its own). Without it, the
    /// concurrency seen at the previous sample stands until this one: a quiet revision's
    /// zero, across a stretch the caller did not sample, until the sample that saw demand.
    fn span_demand(&self, from: Instant, now: Instant, busy: Option<BusyTime>) -> (Instant, f64) {
        let held = f64::from(self.latest.in_flight) + f64::from(self.latest.queued);
        let prev = self.busy_seen.unwrap_or_default();
        let Some(cur) = busy.filter(|cur| cur.at_nanos > prev.at_nanos) else {
            return (from, held);
        };
        let Some(busy_from) = cur.busy_from_nanos else {
            return (from, 0.0);
        };
        let busy_nanos = cur.at_nanos - busy_from.clamp(prev.at_nanos, cur.at_nanos);
        if busy_nanos == 0 {
            return (now, 0.0);
        }
        let area = cur.request_nanos.saturating_sub(prev.request_nanos);
        let start = now
            .checked_sub(std::time::Duration::from_nanos(busy_nanos))
            .map_or(from, |s| s.max(from));
        (start, area as f64 / busy_nanos as f64)
    }

    /// How many instances the revision should have at `now`, given `ready` of them.
    pub fn decide(&mut self, now: Instant, ready: u32) -> Decision {
        let s = &self.settings;
        let (stable, panic) = match s.metric {
            Metric::Concurrency => (
                self.window.mean_concurrency(now, s.stable_window),
                self.window.mean_concurrency(now, s.panic_window),
            ),
            Metric::Rps => (
                self.window.request_rate(now, s.stable_window),
                self.window.request_rate(now, s.panic_window),
            ),
        };
        let per_instance = s.target * s.target_utilization;
        let ready_f = f64::from(ready.max(1));
        let stable_count = (stable / per_instance).ceil();
        let panic_count = (panic / per_instance).ceil();
        let max_up = (s.max_scale_up_rate * ready_f).ceil();
        let max_down = (ready_f / s.max_scale_down_rate).floor();
        let within_rates = |c: f64| c.max(max_down).min(max_up) as u32;

        self.update_panic(now, panic_count / ready_f >= s.panic_threshold, ready);
        let s = &self.settings;
        let (mut desired, mut reason) = if self.panic_since.is_some() {
            self.max_panic = self.max_panic.max(within_rates(panic_count));
            let basis = Basis::Panic {
                metric: s.metric,
                demand: panic,
                window: s.panic_window,
                threshold: s.panic_threshold,
                ready,
            };
            (self.max_panic, Reason::new(basis))
        } else {
            let c = within_rates(stable_count);
            let limited = match f64::from(c) {
                x if x > stable_count => Some((c, RateLimit::ScaleDown)),
                x if x < stable_count => Some((c, RateLimit::ScaleUp)),
                _ => None,
            };
            let basis = Basis::Stable {
                metric: s.metric,
                demand: stable,
                window: s.stable_window,
                target: s.target,
                utilization: s.target_utilization,
                count: stable_count,
                limited,
            };
            (c, Reason::new(basis))
        };

        let need_now = self.needed_now();
        if need_now > desired {
            desired = need_now;
            reason = Reason::new(Basis::InFlight {
                requests: self.latest.in_flight + self.latest.queued,
                need: need_now,
            });
        }

        let idle_for = now.saturating_duration_since(self.last_demand);
        if s.min_scale == 0 && idle_for >= s.idle_before_zero && need_now == 0 {
            let since = *self.zero_since.get_or_insert(now);
            let waited = now.saturating_duration_since(since);
            if waited >= s.scale_to_zero_grace {
                desired = within_rates(0.0);
                reason = Reason::new(Basis::Idle {
                    idle_for,
                    at_zero: desired == 0,
                });
            } else {
                desired = desired.max(1);
                reason = Reason::new(Basis::Grace {
                    idle_for,
                    left: s.scale_to_zero_grace - waited,
                });
            }
        } else {
            self.zero_since = None;
            if desired == 0 && ready > 0 {
                desired = 1;
                reason = Reason::new(Basis::KeepingLast {
                    idle_before_zero: s.idle_before_zero,
                    idle_for,
                });
            }
        }

        if desired < ready {
            match self.last_step_down {
                Some(t) if now.saturating_duration_since(t) < s.scale_down_step => {
                    let left = s.scale_down_step - now.saturating_duration_since(t);
                    reason.holding = Some((ready, left));
                    desired = ready;
                }
                _ => self.last_step_down = Some(now),
            }
        }
        if desired < s.min_scale {
            desired = s.min_scale;
            reason.min_instances = Some(s.min_scale);
        }
        if desired > s.max_scale {
            reason.max_instances = Some((s.max_scale, desired));
            desired = s.max_scale;
        }
        Decision {
            desired,
            ready,
            stable_demand: stable,
            panic_demand: panic,
            panicking: self.panic_since.is_some(),
            metric: s.metric,
            reason,
        }
    }

    /// Until when `decision` (just made at `now`) stands without new samples, if the
    /// revision is quiet: nothing in flight or waiting, no demand in the stable window,
    /// not panicking, and as many instances ready as desired. Demand arriving is what
    /// changes it before then; without demand only time does: the idle time before
    /// scaling to zero (and its grace) running out. `None` when it is not quiet. At most
    /// a stable window away, so a decision is made again at least that often.
    pub fn quiet_until(&self, now: Instant, decision: &Decision) -> Option<Instant> {
        let s = &self.settings;
        if self.latest.in_flight + self.latest.queued > 0
            || self.panic_since.is_some()
            || decision.desired != decision.ready
            || !self.window.is_quiet(now, s.stable_window)
        {
            return None;
        }
        let mut until = now + s.stable_window;
        if s.min_scale == 0 && decision.ready > 0 {
            let next = match self.zero_since {
                Some(since) => since + s.scale_to_zero_grace,
                None => self.last_demand + s.idle_before_zero,
            };
            until = until.min(next);
        }
        (until > now).then_some(until)
    }

    /// Instances the requests in flight and queued need right now.
    fn needed_now(&self) -> u32 {
        instances_for(
            self.latest.in_flight + self.latest.queued,
            self.settings.container_concurrency,
        )
    }

    /// Knative's panic state: enter when over the threshold, stay while over it, leave a
    /// stable window after it was last over.
    fn update_panic(&mut self, now: Instant, over_threshold: bool, ready: u32) {
        match (self.panic_since, over_threshold) {
            (None, true) => {
                self.panic_since = Some(now);
                self.max_panic = ready;
            }
            (Some(_), true) => self.panic_since = Some(now),
            (Some(since), false)
                if now.saturating_duration_since(since) >= self.settings.stable_window =>
            {
                self.panic_since = None;
                self.max_panic = 0;
            }
            _ => {}
        }
    }
}

/// Instances that `requests` in flight or queued need at a container concurrency of
/// `container_concurrency` (0: unlimited, so one serves them all).
pub fn instances_for(requests: u32, container_concurrency: u32) -> u32 {
    match container_concurrency {
        0 => u32::from(requests > 0),
        c => requests.div_ceil(c),
    }
}
