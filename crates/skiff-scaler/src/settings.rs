//! The autoscaler's knobs, resolved: every value present, in the units the decision uses.
//! Defaults are Knative's (`config-autoscaler`) except where skiff's always-present
//! activator makes one unnecessary (see `DEFAULT_SCALE_TO_ZERO_GRACE`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Knative's stable window.
pub const DEFAULT_STABLE_WINDOW: Duration = Duration::from_secs(60);
/// Knative's panic window, as a share of the stable window.
pub const DEFAULT_PANIC_WINDOW_PERCENTAGE: f64 = 10.0;
/// Knative's panic threshold: panic-window demand at 200 % of current capacity.
pub const DEFAULT_PANIC_THRESHOLD_PERCENTAGE: f64 = 200.0;
/// Knative's target utilization.
pub const DEFAULT_TARGET_UTILIZATION_PERCENTAGE: f64 = 70.0;
/// Knative's soft concurrency target when the container's concurrency is unlimited.
pub const DEFAULT_UNLIMITED_CONCURRENCY_TARGET: f64 = 100.0;
/// Knative's default requests-per-second target per instance.
pub const DEFAULT_RPS_TARGET: f64 = 200.0;
/// Knative's max scale-up rate: at most 1000× the ready instances in one decision.
pub const DEFAULT_MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Knative's max scale-down rate: at most halve the ready instances in one decision.
pub const DEFAULT_MAX_SCALE_DOWN_RATE: f64 = 2.0;
/// Knative waits 30 s after deciding on zero so its activator can be put in the path.
/// skiff's router always holds requests for a revision without instances, so nothing
/// needs that time; a user may still set one.
pub const DEFAULT_SCALE_TO_ZERO_GRACE: Duration = Duration::ZERO;
/// Knative's evaluation interval (`tick-interval`).
pub const DEFAULT_SCALE_DOWN_STEP: Duration = Duration::from_secs(2);
/// Knative's stable window bounds.
pub const MIN_STABLE_WINDOW: Duration = Duration::from_secs(6);
pub const MAX_STABLE_WINDOW: Duration = Duration::from_secs(3600);
/// Shortest panic window (Knative's bucket granularity).
pub const MIN_PANIC_WINDOW: Duration = Duration::from_secs(1);

/// What demand is measured in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Requests in flight plus queued, per instance (Knative's `concurrency`).
    #[default]
    Concurrency,
    /// Requests arriving per second, per instance (Knative's `rps`).
    Rps,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Concurrency => "concurrency",
            Metric::Rps => "rps",
        }
    }
}

/// Everything one revision's scaler needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub metric: Metric,
    /// Soft target per instance, in the metric's unit.
    pub target: f64,
    /// Share of the target to aim for, 0 < u ≤ 1.
    pub target_utilization: f64,
    /// Requests one instance accepts at once (0: unlimited). Queued requests beyond what
    /// the ready instances accept are capacity needed now, whatever the windows say.
    pub container_concurrency: u32,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when panic-window demand reaches this multiple of current capacity.
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub min_scale: u32,
    pub max_scale: u32,
    /// Time without any demand before the last instance may go (skiff's idle timeout,
    /// Knative's `scale-to-zero-pod-retention-period`).
    pub idle_before_zero: Duration,
    /// Further wait after the decision to go to zero.
    pub scale_to_zero_grace: Duration,
    /// Shortest time between two scale-down steps. Knative evaluates every 2 s and its
    /// max scale-down rate applies per evaluation; skiff decides every tick (so it can
    /// scale up at once) but steps down at Knative's pace.
    pub scale_down_step: Duration,
    /// Width of a window bucket.
    pub granularity: Duration,
}

/// A knob out of range: which one and why.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{knob}: {why}")]
pub struct SettingsError {
    pub knob: &'static str,
    pub why: String,
}

impl Settings {
    /// Knative's defaults for a revision whose instances take `container_concurrency`
    /// requests at once (0: unlimited).
    pub fn knative_defaults(container_concurrency: u32, max_scale: u32) -> Settings {
        Settings {
            metric: Metric::Concurrency,
            target: default_target(Metric::Concurrency, container_concurrency),
            target_utilization: DEFAULT_TARGET_UTILIZATION_PERCENTAGE / 100.0,
            container_concurrency,
            stable_window: DEFAULT_STABLE_WINDOW,
            panic_window: panic_window(DEFAULT_STABLE_WINDOW, DEFAULT_PANIC_WINDOW_PERCENTAGE),
            panic_threshold: DEFAULT_PANIC_THRESHOLD_PERCENTAGE / 100.0,
            max_scale_up_rate: DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: DEFAULT_MAX_SCALE_DOWN_RATE,
            min_scale: 0,
            max_scale,
            idle_before_zero: DEFAULT_STABLE_WINDOW,
            scale_to_zero_grace: DEFAULT_SCALE_TO_ZERO_GRACE,
            scale_down_step: DEFAULT_SCALE_DOWN_STEP,
            granularity: Duration::from_secs(1),
        }
    }

    /// Checks every knob, naming the first that is out of range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |knob, why: &str| {
            Err(SettingsError {
                knob,
                why: why.into(),
            })
        };
        if !(self.target.is_finite() && self.target >= 0.01) {
            return bad("target", "must be at least 0.01");
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return bad("target-utilization", "must be above 0 % and at most 100 %");
        }
        if self.stable_window < MIN_STABLE_WINDOW || self.stable_window > MAX_STABLE_WINDOW {
            return bad("window", "must be between 6s and 1h");
        }
        if self.panic_window < MIN_PANIC_WINDOW || self.panic_window > self.stable_window {
            return bad(
                "panic-window",
                "must be at least 1s and at most the stable window",
            );
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold > 1.0) {
            return bad("panic-threshold", "must be above 100 %");
        }
        if !(self.max_scale_up_rate.is_finite() && self.max_scale_up_rate > 1.0) {
            return bad("max-scale-up-rate", "must be above 1");
        }
        if !(self.max_scale_down_rate.is_finite() && self.max_scale_down_rate > 1.0) {
            return bad("max-scale-down-rate", "must be above 1");
        }
        if self.max_scale == 0 {
            return bad("max-scale", "must be at least 1");
        }
        if self.min_scale > self.max_scale {
            return bad("min-scale", "must not exceed max-scale");
        }
        if self.granularity.is_zero() || self.granularity > self.panic_window {
            return bad(
                "granularity",
                "must be above 0 and at most the panic window",
            );
        }
        Ok(())
    }
}

/// Knative's soft target: the container's concurrency when it has a limit, else 100;
/// for requests per second, 200.
pub fn default_target(metric: Metric, container_concurrency: u32) -> f64 {
    match (metric, container_concurrency) {
        (Metric::Rps, _) => DEFAULT_RPS_TARGET,
        (Metric::Concurrency, 0) => DEFAULT_UNLIMITED_CONCURRENCY_TARGET,
        (Metric::Concurrency, c) => f64::from(c),
    }
}

/// The panic window for a stable window and a percentage of it, never under 1 s.
pub fn panic_window(stable: Duration, percentage: f64) -> Duration {
    stable.mul_f64(percentage / 100.0).max(MIN_PANIC_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_knatives_and_valid() {
        let s = Settings::knative_defaults(80, 10);
        s.validate().unwrap();
        assert_eq!(s.target, 80.0);
        assert_eq!(s.panic_window, Duration::from_secs(6));
        assert_eq!(Settings::knative_defaults(0, 10).target, 100.0);
        assert_eq!(default_target(Metric::Rps, 80), 200.0);
    }

    #[test]
    fn each_bad_knob_is_named() {
        let base = Settings::knative_defaults(10, 10);
        type Breaks = fn(&mut Settings);
        let cases: [(Breaks, &str); 8] = [
            (|s| s.target = 0.0, "target"),
            (|s| s.target_utilization = 1.5, "target-utilization"),
            (|s| s.stable_window = Duration::from_secs(2), "window"),
            (
                |s| s.panic_window = Duration::from_secs(120),
                "panic-window",
            ),
            (|s| s.panic_threshold = 0.5, "panic-threshold"),
            (|s| s.max_scale_down_rate = 1.0, "max-scale-down-rate"),
            (|s| s.max_scale = 0, "max-scale"),
            (|s| s.min_scale = 11, "min-scale"),
        ];
        for (break_it, knob) in cases {
            let mut s = base.clone();
            break_it(&mut s);
            assert_eq!(s.validate().unwrap_err().knob, knob);
        }
    }
}
