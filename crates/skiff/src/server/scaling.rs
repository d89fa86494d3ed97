//! `skiff server --scaler-*`: the daemon-wide autoscaler defaults as flags, turned into
//! the control plane's [`ScalingDefaults`].

use clap::Args;
use skiff_control::ScalingDefaults;
use std::time::Duration;

/// Global autoscaler knobs; each service may override any of them.
#[derive(Args, Clone, Debug)]
pub struct ScalingArgs {
    /// Stable window: demand is averaged over it to decide the instance count.
    #[arg(long = "scaler-window", default_value = "60s", value_parser = crate::launch::parse_duration)]
    window: Duration,
    /// Panic window, as a percentage of the stable window.
    #[arg(long = "scaler-panic-window-percentage", default_value_t = skiff_scaler::DEFAULT_PANIC_WINDOW_PERCENTAGE)]
    panic_window_percentage: f64,
    /// Panic when panic-window demand reaches this percentage of current capacity.
    #[arg(long = "scaler-panic-threshold", default_value_t = skiff_scaler::DEFAULT_PANIC_THRESHOLD_PERCENTAGE)]
    panic_threshold_percentage: f64,
    /// Share of the per-instance target to aim for, in percent.
    #[arg(long = "scaler-target-utilization", default_value_t = skiff_scaler::DEFAULT_TARGET_UTILIZATION_PERCENTAGE)]
    target_utilization_percentage: f64,
    /// Most the instance count may grow by (a factor) in one decision.
    #[arg(long = "scaler-max-scale-up-rate", default_value_t = skiff_scaler::DEFAULT_MAX_SCALE_UP_RATE)]
    max_scale_up_rate: f64,
    /// Most the instance count may shrink by (a divisor) in one step.
    #[arg(long = "scaler-max-scale-down-rate", default_value_t = skiff_scaler::DEFAULT_MAX_SCALE_DOWN_RATE)]
    max_scale_down_rate: f64,
    /// Wait after deciding on zero before the last instance stops.
    #[arg(long = "scaler-scale-to-zero-grace", default_value = "0s", value_parser = crate::launch::parse_duration)]
    scale_to_zero_grace: Duration,
    /// Instances a new revision starts with before it takes traffic. Knative's default is
    /// 1; skiff's is 0 because a cold start takes milliseconds: a new revision waits for
    /// its first request (a deploy that replaces a revision with ready instances still
    /// warms one, so the switch never queues).
    #[arg(long = "scaler-initial-scale", default_value_t = 0)]
    initial_scale: u32,
}

impl From<ScalingArgs> for ScalingDefaults {
    fn from(a: ScalingArgs) -> Self {
        ScalingDefaults {
            window: a.window,
            panic_window_percentage: a.panic_window_percentage,
            panic_threshold_percentage: a.panic_threshold_percentage,
            target_utilization_percentage: a.target_utilization_percentage,
            max_scale_up_rate: a.max_scale_up_rate,
            max_scale_down_rate: a.max_scale_down_rate,
            scale_to_zero_grace: a.scale_to_zero_grace,
            initial_scale: a.initial_scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Server {
        #[command(flatten)]
        scaling: ScalingArgs,
    }

    #[test]
    fn the_flags_defaults_are_the_control_planes() {
        let parsed: ScalingDefaults = Server::parse_from(["skiff"]).scaling.into();
        assert_eq!(parsed, ScalingDefaults::default());
        let set: ScalingDefaults = Server::parse_from(["skiff", "--scaler-window", "20s"])
            .scaling
            .into();
        assert_eq!(set.window, Duration::from_secs(20));
    }
}
