//! A service's autoscaler knobs as the user sets them (Knative's `autoscaling.knative.dev/*`
//! annotations, skiff's `deploy` flags). Every knob is optional: an unset one takes the
//! daemon's default. Owns the range checks of each knob; resolving them into the
//! scaler's settings is the daemon's job.

use serde::{Deserialize, Serialize};

/// Per-service autoscaler overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscaling {
    /// `concurrency` (in flight and queued per instance) or `rps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Soft target per instance in the metric's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Share of the target to aim for, in percent (1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization_percentage: Option<f64>,
    /// Stable window in milliseconds (6 s – 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// Panic window as a percentage of the stable window (1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_window_percentage: Option<f64>,
    /// Panic when demand reaches this percentage of capacity (110–1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percentage: Option<f64>,
    /// Most the ready count may be multiplied by in one decision (> 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_up_rate: Option<f64>,
    /// Most the ready count may be divided by in one decision (> 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_down_rate: Option<f64>,
    /// Wait after deciding on zero before the last instance goes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_grace_ms: Option<u64>,
    /// Instances a new revision starts with before traffic decides (Knative's
    /// initial-scale; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_scale: Option<u32>,
}

/// Longest stable window Knative allows.
pub const MAX_WINDOW_MS: u64 = 3_600_000;
/// Shortest stable window Knative allows.
pub const MIN_WINDOW_MS: u64 = 6_000;

impl Autoscaling {
    pub fn is_default(&self) -> bool {
        *self == Autoscaling::default()
    }

    /// Checks every knob that is set; `Err((knob, why))` names the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |knob: &'static str, v: Option<f64>, lo: f64, hi: f64, unit: &str| match v {
            Some(x) if !(x.is_finite() && x >= lo && x <= hi) => {
                Err((knob, format!("{x} is outside {lo}{unit}–{hi}{unit}")))
            }
            _ => Ok(()),
        };
        if let Some(m) = &self.metric {
            if m != "concurrency" && m != "rps" {
                return Err(("metric", format!("{m:?} is not concurrency or rps")));
            }
        }
        range("target", self.target, 0.01, 1e9, "")?;
        range(
            "target-utilization",
            self.target_utilization_percentage,
            1.0,
            100.0,
            " %",
        )?;
        if let Some(w) = self.window_ms {
            if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&w) {
                return Err(("window", format!("{w}ms is outside 6s–1h")));
            }
        }
        range(
            "panic-window-percentage",
            self.panic_window_percentage,
            1.0,
            100.0,
            " %",
        )?;
        range(
            "panic-threshold",
            self.panic_threshold_percentage,
            110.0,
            1000.0,
            " %",
        )?;
        for (knob, rate) in [
            ("max-scale-up-rate", self.max_scale_up_rate),
            ("max-scale-down-rate", self.max_scale_down_rate),
        ] {
            if let Some(r) = rate {
                if !(r.is_finite() && r > 1.0) {
                    return Err((knob, format!("{r} must be above 1")));
                }
            }
        }
        if let Some(g) = self.scale_to_zero_grace_ms {
            if g > MAX_WINDOW_MS {
                return Err(("scale-to-zero-grace", format!("{g}ms is over 1h")));
            }
        }
        Ok(())
    }
}
