//! The daemon's autoscaler defaults (`skiff server --scaler-*`) and how a revision's spec
//! overrides them: the one place a spec's knobs become the scaler's settings.

use skiff_core::ServiceSpec;
use skiff_scaler::{default_target, panic_window, Metric, Settings, SettingsError};
use std::time::Duration;

/// Global autoscaler knobs; each service may override any of them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingDefaults {
    /// Stable window: demand is averaged over it to decide the instance count.
    pub window: Duration,
    /// Panic window, as a percentage of the stable window.
    pub panic_window_percentage: f64,
    /// Panic when panic-window demand reaches this percentage of current capacity.
    pub panic_threshold_percentage: f64,
    /// Share of the per-instance target to aim for, in percent.
    pub target_utilization_percentage: f64,
    /// Most the instance count may grow by (a factor) in one decision.
    pub max_scale_up_rate: f64,
    /// Most the instance count may shrink by (a divisor) in one step.
    pub max_scale_down_rate: f64,
    /// Wait after deciding on zero before the last instance stops.
    pub scale_to_zero_grace: Duration,
    /// Instances a new revision starts with before it takes traffic. Knative's default is
    /// 1; skiff's is 0 because a cold start takes milliseconds: a new revision waits for
    /// its first request (a deploy that replaces a revision with ready instances still
    /// warms one, so the switch never queues).
    pub initial_scale: u32,
}

impl Default for ScalingDefaults {
    /// Knative's defaults, but for the initial scale (see [`ScalingDefaults::initial_scale`]).
    fn default() -> Self {
        ScalingDefaults {
            window: Duration::from_secs(60),
            panic_window_percentage: skiff_scaler::DEFAULT_PANIC_WINDOW_PERCENTAGE,
            panic_threshold_percentage: skiff_scaler::DEFAULT_PANIC_THRESHOLD_PERCENTAGE,
            target_utilization_percentage: skiff_scaler::DEFAULT_TARGET_UTILIZATION_PERCENTAGE,
            max_scale_up_rate: skiff_scaler::DEFAULT_MAX_SCALE_UP_RATE,
            max_scale_down_rate: skiff_scaler::DEFAULT_MAX_SCALE_DOWN_RATE,
            scale_to_zero_grace: Duration::ZERO,
            initial_scale: 0,
        }
    }
}

impl ScalingDefaults {
    /// The scaler's settings for a revision of `spec`.
    pub fn settings_for(&self, spec: &ServiceSpec) -> Result<Settings, SettingsError> {
        let a = &spec.autoscaling;
        let metric = match a.metric.as_deref() {
            Some("rps") => Metric::Rps,
            _ => Metric::Concurrency,
        };
        let window = a.window_ms.map_or(self.window, Duration::from_millis);
        let mut s = Settings::knative_defaults(spec.concurrency, spec.max_instances);
        s.metric = metric;
        s.target = a
            .target
            .unwrap_or_else(|| default_target(metric, spec.concurrency));
        s.target_utilization = a
            .target_utilization_percentage
            .unwrap_or(self.target_utilization_percentage)
            / 100.0;
        s.stable_window = window;
        s.panic_window = panic_window(
            window,
            a.panic_window_percentage
                .unwrap_or(self.panic_window_percentage),
        );
        s.panic_threshold = a
            .panic_threshold_percentage
            .unwrap_or(self.panic_threshold_percentage)
            / 100.0;
        s.max_scale_up_rate = a.max_scale_up_rate.unwrap_or(self.max_scale_up_rate);
        s.max_scale_down_rate = a.max_scale_down_rate.unwrap_or(self.max_scale_down_rate);
        s.min_scale = spec.min_instances;
        s.max_scale = spec.max_instances;
        s.idle_before_zero = Duration::from_millis(spec.idle_timeout_ms);
        s.scale_to_zero_grace = a
            .scale_to_zero_grace_ms
            .map_or(self.scale_to_zero_grace, Duration::from_millis);
        s.validate()?;
        Ok(s)
    }

    /// Instances a new revision of `spec` starts with.
    pub fn initial_scale(&self, spec: &ServiceSpec) -> u32 {
        spec.autoscaling
            .initial_scale
            .unwrap_or(self.initial_scale)
            .max(spec.min_instances)
            .min(spec.max_instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ScalingDefaults {
        ScalingDefaults::default()
    }

    #[test]
    fn a_spec_overrides_the_defaults_knob_by_knob() {
        let d = defaults();
        let mut spec = ServiceSpec::new("hello");
        spec.concurrency = 10;
        let s = d.settings_for(&spec).unwrap();
        assert_eq!(s.target, 10.0);
        assert_eq!(s.stable_window, Duration::from_secs(60));
        assert_eq!(s.panic_window, Duration::from_secs(6));
        assert_eq!(s.target_utilization, 0.7);
        spec.autoscaling.window_ms = Some(20_000);
        spec.autoscaling.target_utilization_percentage = Some(100.0);
        spec.autoscaling.metric = Some("rps".into());
        let s = d.settings_for(&spec).unwrap();
        assert_eq!(s.stable_window, Duration::from_secs(20));
        assert_eq!(s.panic_window, Duration::from_secs(2));
        assert_eq!(s.target_utilization, 1.0);
        assert_eq!((s.metric, s.target), (Metric::Rps, 200.0));
    }

    #[test]
    fn initial_scale_stays_within_min_and_max() {
        let d = defaults();
        let mut spec = ServiceSpec::new("hello");
        assert_eq!(d.initial_scale(&spec), 0);
        spec.min_instances = 3;
        assert_eq!(d.initial_scale(&spec), 3, "never below min-instances");
        spec.autoscaling.initial_scale = Some(200);
        spec.max_instances = 5;
        assert_eq!(d.initial_scale(&spec), 5, "never above max-instances");
    }
}
