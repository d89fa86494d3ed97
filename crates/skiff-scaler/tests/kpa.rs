//! The KPA in simulated time: synthetic traffic in, decisions out, instances following the
//! decisions as a reconciler would (ready one tick after they are asked for).

use skiff_scaler::{Decision, Metric, Observation, Scaler, Settings};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);

struct Sim {
    scaler: Scaler,
    now: Instant,
    t0: Instant,
    ready: u32,
    /// Instances asked for, ready at the next tick.
    starting: u32,
    requests_total: u64,
    decisions: Vec<(Duration, Decision)>,
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
                },
            );
            let d = self.scaler.decide(self.now, self.ready);
            if d.desired > self.ready {
                self.starting = d.desired - self.ready;
            } else {
                self.ready = d.desired;
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
    // One tick of 8 requests barely moves a 6 s average: 8 / 60 samples.
    let d = sim.run(TICK, 8, 0).clone();
    assert!(d.panic_demand < 1.0, "{d:?}");
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
