//! The KPA in simulated time: synthetic traffic in, decisions out, instances following the
//! decisions as a reconciler would (ready one tick after they are asked for).

use skiff_scaler::{BusyTime, Decision, Metric, Observation, Scaler, Settings};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);

/// When a simulated reconciler samples.
#[derive(Clone, Copy, PartialEq)]
enum Sampling {
    EveryTick,
    /// Every tick with demand, every whole second without (the reconciler's quiet tick).
    QuietEverySecond,
    /// As `QuietEverySecond`, but without demand not at all while the scaler says its
    /// decision stands: until then (on a whole second), or until demand arrives.
    Pausing,
}

struct Sim {
    scaler: Scaler,
    now: Instant,
    t0: Instant,
    ready: u32,
    /// Instances asked for, ready at the next tick.
    starting: u32,
    requests_total: u64,
    decisions: Vec<(Duration, Decision)>,
    sampling: Sampling,
    /// While paused: until when.
    paused_until: Option<Instant>,
    /// The integral of concurrency over time a pool keeps (in nanoseconds since `t0`).
    busy: BusyTime,
}

impl Sim {
    fn new(settings: Settings, ready: u32) -> Sim {
        settings.validate().unwrap();
        let t0 = Instant::now();
        Sim {
            scaler: Scaler::new(settings, t0),
            now: t0,
            t0,
            ready,
            starting: 0,
            requests_total: 0,
            decisions: Vec::new(),
            sampling: Sampling::EveryTick,
            paused_until: None,
            busy: BusyTime::default(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Runs `for_how_long` with `concurrency` requests always in flight (or queued, for the
    /// part beyond what the ready instances accept) and `rps` arriving per second.
    fn run(&mut self, for_how_long: Duration, concurrency: u32, rps: u64) -> &Decision {
        let end = self.now + for_how_long;
        while self.now < end {
            self.now += TICK;
            // The tick's demand, as the pool counts it whether sampled or not.
            let tick_start = (self.elapsed() - TICK).as_nanos() as u64;
            self.busy.request_nanos += u128::from(concurrency) * TICK.as_nanos();
            self.busy.at_nanos = self.elapsed().as_nanos() as u64;
            if concurrency > 0 {
                self.busy.busy_from_nanos.get_or_insert(tick_start);
            }
            let quiet = concurrency == 0 && rps == 0;
            if let Some(until) = self.paused_until {
                // Demand wakes it at once, as a request wakes the reconciler.
                if self.now < until && quiet {
                    continue;
                }
                self.paused_until = None;
            }
            let whole_second = self.elapsed().subsec_nanos() == 0;
            if self.sampling != Sampling::EveryTick && quiet && !whole_second {
                continue;
            }
            self.ready += std::mem::take(&mut self.starting);
            self.requests_total += rps / 10;
            let cc = self.scaler.settings().container_concurrency;
            let capacity = if cc == 0 { u32::MAX } else { self.ready * cc };
            self.scaler.observe(
                self.now,
                Observation {
                    in_flight: concurrency.min(capacity),
                    queued: concurrency.saturating_sub(capacity),
                    requests_total: self.requests_total,
                    busy: Some(self.busy),
                },
            );
            self.busy.busy_from_nanos = (concurrency > 0).then_some(self.busy.at_nanos);
            let d = self.scaler.decide(self.now, self.ready);
            if d.desired > self.ready {
                self.starting = d.desired - self.ready;
            } else {
                self.ready = d.desired;
            }
            if self.sampling == Sampling::Pausing {
                if let Some(until) = self.scaler.quiet_until(self.now, &d) {
                    let since = until - self.t0;
                    let whole = since.as_secs() + u64::from(since.subsec_nanos() > 0);
                    self.paused_until = Some(self.t0 + Duration::from_secs(whole));
                }
            }
            let at = self.elapsed();
            self.decisions.push((at, d));
        }
        &self.decisions.last().unwrap().1
    }
}

fn settings(container_concurrency: u32) -> Settings {
    Settings::knative_defaults(container_concurrency, 100)
}

#[test]
fn steady_load_converges_to_demand_over_target_times_utilization() {
    // 10 per instance at 70 %: 7 each; 35 in flight needs 5.
    let mut sim = Sim::new(settings(10), 1);
    sim.run(Duration::from_secs(120), 35, 0);
    let last_minute: Vec<u32> = sim
        .decisions
        .iter()
        .filter(|(at, _)| *at >= Duration::from_secs(60))
        .map(|(_, d)| d.desired)
        .collect();
    assert!(last_minute.iter().all(|&d| d == 5), "{last_minute:?}");
    assert_eq!(sim.ready, 5);
    assert!(!sim.decisions.last().unwrap().1.panicking);
}

#[test]
fn a_tenfold_burst_panics_and_scales_up_within_the_panic_window() {
    let mut sim = Sim::new(settings(10), 1);
    sim.run(Duration::from_secs(90), 14, 0);
    assert_eq!(sim.ready, 2, "steady 14 at 7 per instance");
    let burst_start = sim.elapsed();
    sim.run(Duration::from_secs(6), 140, 0);
    let burst: Vec<&(Duration, Decision)> = sim
        .decisions
        .iter()
        .filter(|(at, _)| *at > burst_start)
        .collect();
    let first_panic = burst
        .iter()
        .find(|(_, d)| d.panicking)
        .expect("the burst enters panic mode");
    assert!(
        first_panic.0 - burst_start <= Duration::from_secs(1),
        "{:?}",
        first_panic.0
    );
    let full = burst
        .iter()
        .find(|(_, d)| d.desired >= 20)
        .expect("140 in flight at 7 per instance reaches 20 within the panic window");
    assert!(full.0 - burst_start <= Duration::from_secs(6));
    // Stable-window demand alone would still ask for far fewer.
    let (_, d) = burst.last().unwrap();
    assert!((d.stable_demand / 7.0).ceil() < 20.0, "{d:?}");
}

#[test]
fn panic_never_scales_down_and_ends_a_stable_window_after_the_burst() {
    let mut sim = Sim::new(settings(10), 2);
    sim.run(Duration::from_secs(60), 14, 0);
    sim.run(Duration::from_secs(7), 140, 0);
    let peak = sim.ready;
    assert!(peak >= 20);
    let calm_start = sim.elapsed();
    sim.run(Duration::from_secs(90), 14, 0);
    let calm: Vec<&(Duration, Decision)> = sim
        .decisions
        .iter()
        .filter(|(at, _)| *at > calm_start)
        .collect();
    let first_calm = calm
        .iter()
        .position(|(_, d)| !d.panicking)
        .expect("panic ends");
    assert!(calm[..first_calm].iter().all(|(_, d)| d.desired >= peak));
    // The last decision whose panic-window count crossed 200 % of the ready instances.
    let last_crossing = sim
        .decisions
        .iter()
        .filter(|(_, d)| (d.panic_demand / 7.0).ceil() / f64::from(d.ready.max(1)) >= 2.0)
        .map(|(at, _)| *at)
        .next_back()
        .unwrap();
    let lasted = calm[first_calm].0 - last_crossing;
    assert_eq!(
        lasted,
        Duration::from_secs(60),
        "panic ends a stable window after the last crossing"
    );
    assert_eq!(sim.ready, 2, "back to 14 / 7");
}

#[test]
fn scale_down_is_gradual_and_at_most_halves_per_decision() {
    let mut sim = Sim::new(settings(10), 1);
    sim.run(Duration::from_secs(120), 210, 0);
    assert_eq!(sim.ready, 30);
    let drop_start = sim.elapsed();
    sim.run(Duration::from_secs(120), 7, 0);
    let after: Vec<u32> = sim
        .decisions
        .iter()
        .filter(|(at, _)| *at > drop_start)
        .map(|(_, d)| d.desired)
        .collect();
    let mut previous = (Duration::ZERO, 30);
    for (at, d) in sim.decisions.iter().filter(|(at, _)| *at > drop_start) {
        if d.desired < previous.1 {
            assert!(
                d.desired >= previous.1 / 2,
                "{} → {} is more than halving",
                previous.1,
                d.desired
            );
            assert!(
                *at - previous.0 >= Duration::from_secs(2) || previous.1 == 30,
                "steps down at most every 2 s: {previous:?} then {at:?}"
            );
            previous = (*at, d.desired);
        }
    }
    // The stable window remembers the load: the first half minute keeps more than half.
    let at_30s = after[299];
    assert!(
        at_30s > 10,
        "scale-down follows the 60 s average, not the instant: {at_30s}"
    );
    assert_eq!(sim.ready, 1);
}

#[test]
fn zero_only_after_the_idle_time_and_grace() {
    let mut s = settings(10);
    s.idle_before_zero = Duration::from_secs(30);
    s.scale_to_zero_grace = Duration::from_secs(10);
    let mut sim = Sim::new(s, 1);
    sim.run(Duration::from_secs(10), 5, 0);
    let idle_start = sim.elapsed();
    sim.run(Duration::from_secs(60), 0, 0);
    let zero_at = sim
        .decisions
        .iter()
        .find(|(_, d)| d.desired == 0)
        .map(|(at, _)| *at - idle_start)
        .expect("scaled to zero");
    // The last sample with demand was at idle_start; 30 s idle plus 10 s grace.
    assert!(
        zero_at >= Duration::from_secs(40) && zero_at <= Duration::from_secs(41),
        "{zero_at:?}"
    );
    assert!(sim
        .decisions
        .last()
        .unwrap()
        .1
        .reason
        .to_string()
        .contains("scaled to zero"));
    assert_eq!(sim.ready, 0);
    // A request at zero needs an instance at once.
    let d = sim.run(TICK, 1, 0).clone();
    assert_eq!(d.desired, 1, "{d:?}");
}

#[test]
fn min_and_max_instances_bound_every_decision() {
    let mut s = settings(10);
    s.min_scale = 2;
    s.max_scale = 5;
    s.idle_before_zero = Duration::from_secs(6);
    let mut sim = Sim::new(s, 0);
    sim.run(Duration::from_secs(60), 500, 0);
    assert!(sim
        .decisions
        .iter()
        .all(|(_, d)| (2..=5).contains(&d.desired)));
    assert_eq!(sim.ready, 5);
    assert!(sim
        .decisions
        .last()
        .unwrap()
        .1
        .reason
        .to_string()
        .starts_with("max-instances 5"));
    sim.run(Duration::from_secs(120), 0, 0);
    assert_eq!(sim.ready, 2, "min-instances holds with no traffic");
    assert!(sim
        .decisions
        .iter()
        .all(|(_, d)| (2..=5).contains(&d.desired)));
}

#[test]
fn queued_requests_get_instances_at_once_though_the_windows_lag() {
    let mut s = settings(1);
    s.min_scale = 1;
    let mut sim = Sim::new(s, 1);
    sim.run(Duration::from_secs(60), 0, 0);
    // One tick of 8 requests moves a 6 s average to 8 / 6 (the newest bucket's 100 ms
    // at 8 beside five quiet ones): the windows would ask for 2 instances.
    let d = sim.run(TICK, 8, 0).clone();
    assert!((d.panic_demand / 0.7).ceil() <= 2.0, "{d:?}");
    assert_eq!(d.desired, 8, "8 requests at concurrency 1: {d:?}");
    assert!(
        d.reason.to_string().contains("need 8 instances now"),
        "{d:?}"
    );
}

#[test]
fn from_zero_a_burst_is_met_at_target_utilization() {
    let mut s = settings(1);
    s.idle_before_zero = Duration::from_secs(6);
    let mut sim = Sim::new(s, 0);
    let d = sim.run(TICK, 8, 0).clone();
    // 8 at 1 × 70 % each: ceil(8 / 0.7) = 12, the panic window's count.
    assert_eq!(d.desired, 12, "{d:?}");
    assert!(d.panicking);
}

#[test]
fn requests_per_second_is_an_alternative_metric() {
    let mut s = settings(0);
    s.metric = Metric::Rps;
    s.target = 50.0;
    let mut sim = Sim::new(s, 1);
    sim.run(Duration::from_secs(120), 1, 350);
    // 350 rps at 50 × 70 % = 35 per instance.
    assert_eq!(sim.ready, 10);
}

#[test]
fn unlimited_concurrency_targets_one_hundred() {
    let mut sim = Sim::new(settings(0), 1);
    sim.run(Duration::from_secs(120), 150, 0);
    // 150 / (100 × 70 %) = 2.14 → 3.
    assert_eq!(sim.ready, 3);
}

/// Load, a quiet stretch long enough to scale to zero, then a burst: a scaler that
/// stops being sampled whenever [`Scaler::quiet_until`] allows decides, at each instant
/// it does decide, exactly as one sampled on the reconciler's ticks, and in between the
/// sampled one never changes its count.
#[test]
fn a_paused_scaler_decides_as_one_sampled_every_tick() {
    let mut s = settings(10);
    s.idle_before_zero = Duration::from_secs(90);
    s.scale_to_zero_grace = Duration::from_secs(5);
    let mut ticking = Sim::new(s.clone(), 1);
    ticking.sampling = Sampling::QuietEverySecond;
    let mut pausing = Sim::new(s, 1);
    pausing.sampling = Sampling::Pausing;
    for sim in [&mut ticking, &mut pausing] {
        sim.run(Duration::from_secs(30), 14, 20);
        sim.run(Duration::from_secs(300), 0, 0);
        sim.run(Duration::from_secs(8), 140, 50);
        sim.run(Duration::from_secs(120), 0, 0);
    }
    let at = |sim: &Sim, t: Duration| sim.decisions.iter().find(|(a, _)| *a == t).cloned();
    for (t, d) in &pausing.decisions {
        let (_, same) = at(&ticking, *t).expect("the ticking scaler decided then too");
        assert_eq!(d.desired, same.desired, "at {t:?}");
        assert_eq!(d.panicking, same.panicking, "at {t:?}");
        assert_eq!(d.stable_demand, same.stable_demand, "at {t:?}");
        assert_eq!(d.panic_demand, same.panic_demand, "at {t:?}");
        assert_eq!(d.reason.to_string(), same.reason.to_string(), "at {t:?}");
    }
    // Between two of the paused scaler's decisions the ticking one kept the first count.
    for pair in pausing.decisions.windows(2) {
        let ((from, d), (to, _)) = (&pair[0], &pair[1]);
        for (t, same) in ticking.decisions.iter().filter(|(t, _)| t > from && t < to) {
            assert_eq!(same.desired, d.desired, "at {t:?}, paused from {from:?}");
        }
    }
    // It went to zero, and came back for the burst, at the same instants.
    let first = |sim: &Sim, want: fn(&Decision) -> bool| {
        sim.decisions.iter().find(|(_, d)| want(d)).map(|(t, _)| *t)
    };
    let zero = first(&ticking, |d| d.desired == 0).expect("scales to zero");
    assert_eq!(first(&pausing, |d| d.desired == 0), Some(zero));
    assert_eq!(
        first(&pausing, |d| d.panicking),
        first(&ticking, |d| d.panicking)
    );
    assert_eq!(pausing.ready, ticking.ready);
    // Over the quiet stretch it decided while demand was still in the stable window
    // (a minute), when the idle time and its grace ran out, and then once a stable
    // window (five times in 300 s).
    let quiet_stretch = |sim: &Sim| {
        let (from, to) = (Duration::from_secs(30), Duration::from_secs(330));
        sim.decisions
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .count()
    };
    let (paused, sampled) = (quiet_stretch(&pausing), quiet_stretch(&ticking));
    assert_eq!(sampled, 300);
    assert!(paused <= 60 + 2 + 5, "{paused} decisions while quiet");
}

#[test]
fn a_scaler_with_demand_or_a_pending_change_is_not_quiet() {
    let t0 = Instant::now();
    let mut scaler = Scaler::new(settings(10), t0);
    let seen = |in_flight, total| Observation {
        in_flight,
        queued: 0,
        requests_total: total,
        busy: None,
    };
    // Requests in flight.
    scaler.observe(t0, seen(3, 3));
    let d = scaler.decide(t0, 1);
    assert_eq!(scaler.quiet_until(t0, &d), None);
    // None in flight, but demand still in the stable window.
    let later = t0 + Duration::from_secs(10);
    scaler.observe(later, seen(0, 3));
    let d = scaler.decide(later, 1);
    assert_eq!(scaler.quiet_until(later, &d), None);
    // A minute later the window is empty: quiet until the idle time (60 s after the
    // last demand, seen at 0 s) runs out; here that is now, so not quiet either.
    let empty = t0 + Duration::from_secs(75);
    scaler.observe(empty, seen(0, 3));
    let d = scaler.decide(empty, 1);
    assert_eq!(d.desired, 0, "{d:?}");
    assert_eq!(scaler.quiet_until(empty, &d), None, "one to stop first");
    // At zero with none ready nothing is timed: quiet for a stable window.
    let d = scaler.decide(empty, 0);
    assert_eq!(
        scaler.quiet_until(empty, &d),
        Some(empty + Duration::from_secs(60))
    );
}

/// A request an idle instance takes at once does not wake the reconciler, so it may start
/// and end between two samples; it still counts for the time it was in flight, as in
/// Knative's queue-proxy, whose reports are means over time.
#[test]
fn a_request_between_two_samples_counts_for_the_time_it_was_in_flight() {
    let t0 = Instant::now();
    let mut scaler = Scaler::new(settings(1), t0);
    let ms = |n: u64| Duration::from_millis(n);
    let nanos = |d: Duration| d.as_nanos() as u64;
    let quiet = |at: Duration, requests_total| Observation {
        requests_total,
        busy: Some(BusyTime {
            request_nanos: 0,
            at_nanos: nanos(at),
            busy_from_nanos: None,
        }),
        ..Observation::default()
    };
    scaler.observe(t0 + ms(1000), quiet(ms(1000), 0));
    // In flight from 1.2 s to 1.7 s; sampled at 2 s with nothing in flight.
    let seen = Observation {
        requests_total: 1,
        busy: Some(BusyTime {
            request_nanos: u128::from(nanos(ms(500))),
            at_nanos: nanos(ms(2000)),
            busy_from_nanos: Some(nanos(ms(1200))),
        }),
        ..Observation::default()
    };
    scaler.observe(t0 + ms(2000), seen);
    let d = scaler.decide(t0 + ms(2000), 1);
    // Two buckets: the first second quiet, the second busy half of the time.
    assert!((d.panic_demand - 0.25).abs() < 1e-9, "{d:?}");
    assert!((d.stable_demand - 0.25).abs() < 1e-9, "{d:?}");
    // Sampled the same way, but without the integral: only the arrival is seen.
    let mut sampled = Scaler::new(settings(1), t0);
    sampled.observe(t0 + ms(1000), Observation::default());
    let without = Observation {
        requests_total: 1,
        ..Observation::default()
    };
    sampled.observe(t0 + ms(2000), without);
    assert_eq!(sampled.decide(t0 + ms(2000), 1).panic_demand, 0.0);
}
