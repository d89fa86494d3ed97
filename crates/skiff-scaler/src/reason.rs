//! Why a decision came out as it did: the figures it rested on, put into words only when
//! someone reads them (`Display`). A revision's loop decides at every tick, thousands of
//! revisions tick every second, and almost no decision is ever shown: formatting each
//! one's floats and durations was a good part of an idle daemon's CPU.

use crate::Metric;
use std::fmt;
use std::time::Duration;

/// Why a decision's count: what it started from and the bounds that moved it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reason {
    pub(crate) basis: Basis,
    /// Held at this many ready instances until the next scale-down step, this far away.
    pub(crate) holding: Option<(u32, Duration)>,
    /// Raised to the revision's min-instances.
    pub(crate) min_instances: Option<u32>,
    /// Capped by max-instances (the first), from the count decided before (the second).
    pub(crate) max_instances: Option<(u32, u32)>,
}

/// What a count was decided from, before the bounds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Basis {
    /// The panic window's demand crossed the threshold.
    Panic {
        metric: Metric,
        demand: f64,
        window: Duration,
        threshold: f64,
        ready: u32,
    },
    /// The stable window's demand over the target, and the scaling rate that limited it.
    Stable {
        metric: Metric,
        demand: f64,
        window: Duration,
        target: f64,
        utilization: f64,
        count: f64,
        limited: Option<(u32, RateLimit)>,
    },
    /// Requests in flight or queued that need this many instances now.
    InFlight { requests: u32, need: u32 },
    /// No demand for this long: at zero, or on the way there.
    Idle { idle_for: Duration, at_zero: bool },
    /// No demand for this long; zero once the grace period's rest has passed.
    Grace { idle_for: Duration, left: Duration },
    /// The last instance stays until the revision was idle for its idle time.
    KeepingLast {
        idle_before_zero: Duration,
        idle_for: Duration,
    },
}

/// Which of the scaling rates limited a stable count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateLimit {
    ScaleUp,
    ScaleDown,
}

impl Reason {
    pub(crate) fn new(basis: Basis) -> Reason {
        Reason {
            basis,
            holding: None,
            min_instances: None,
            max_instances: None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Each bound wraps what it overrode: "max-instances 5 caps 8 (min-instances …)".
        if let Some((max, decided)) = self.max_instances {
            write!(f, "max-instances {max} caps {decided} (")?;
        }
        if let Some(min) = self.min_instances {
            write!(f, "min-instances {min} (")?;
        }
        write!(f, "{}", self.basis)?;
        if let Some((ready, left)) = self.holding {
            write!(
                f,
                "; holding {ready} until the next scale-down step ({} left)",
                Secs(left)
            )?;
        }
        if self.min_instances.is_some() {
            f.write_str(")")?;
        }
        if self.max_instances.is_some() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Basis::Panic {
                metric,
                demand,
                window,
                threshold,
                ready,
            } => write!(
                f,
                "panic: {} {demand:.1} over {window:?} is ≥ {:.0} % of {ready} ready; never scaling down while panicking",
                metric.as_str(),
                threshold * 100.0
            ),
            Basis::Stable {
                metric,
                demand,
                window,
                target,
                utilization,
                count,
                limited,
            } => {
                write!(
                    f,
                    "stable: {} {demand:.1} over {window:?} ÷ ({target} × {:.0} %) = {count}",
                    metric.as_str(),
                    utilization * 100.0
                )?;
                match limited {
                    Some((c, RateLimit::ScaleUp)) => {
                        write!(f, ", limited to {c} by the max scale-up rate")
                    }
                    Some((c, RateLimit::ScaleDown)) => {
                        write!(f, ", limited to {c} by the max scale-down rate")
                    }
                    None => Ok(()),
                }
            }
            Basis::InFlight { requests, need } => write!(
                f,
                "{requests} requests in flight or queued need {need} instances now"
            ),
            Basis::Idle {
                idle_for,
                at_zero: true,
            } => write!(f, "no requests for {}: scaled to zero", Secs(idle_for)),
            Basis::Idle {
                idle_for,
                at_zero: false,
            } => write!(
                f,
                "no requests for {}: going to zero, at most halving per step",
                Secs(idle_for)
            ),
            Basis::Grace { idle_for, left } => write!(
                f,
                "no requests for {}: zero after the grace period ({} left)",
                Secs(idle_for),
                Secs(left)
            ),
            Basis::KeepingLast {
                idle_before_zero,
                idle_for,
            } => write!(
                f,
                "keeping the last instance until {} without requests (now {})",
                Secs(idle_before_zero),
                Secs(idle_for)
            ),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A duration in seconds with one decimal: "12.5s".
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}s", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stable(limited: Option<(u32, RateLimit)>) -> Basis {
        Basis::Stable {
            metric: Metric::Concurrency,
            demand: 7.25,
            window: Duration::from_secs(60),
            target: 10.0,
            utilization: 0.7,
            count: 2.0,
            limited,
        }
    }

    #[test]
    fn each_basis_reads_as_a_sentence_with_its_figures() {
        let cases = [
            (
                stable(None),
                "stable: concurrency 7.2 over 60s ÷ (10 × 70 %) = 2",
            ),
            (
                stable(Some((4, RateLimit::ScaleDown))),
                "stable: concurrency 7.2 over 60s ÷ (10 × 70 %) = 2, limited to 4 by the max scale-down rate",
            ),
            (
                stable(Some((1, RateLimit::ScaleUp))),
                "stable: concurrency 7.2 over 60s ÷ (10 × 70 %) = 2, limited to 1 by the max scale-up rate",
            ),
            (
                Basis::Panic {
                    metric: Metric::Rps,
                    demand: 120.0,
                    window: Duration::from_secs(6),
                    threshold: 2.0,
                    ready: 3,
                },
                "panic: rps 120.0 over 6s is ≥ 200 % of 3 ready; never scaling down while panicking",
            ),
            (
                Basis::InFlight { requests: 8, need: 8 },
                "8 requests in flight or queued need 8 instances now",
            ),
            (
                Basis::Idle {
                    idle_for: Duration::from_millis(30_040),
                    at_zero: true,
                },
                "no requests for 30.0s: scaled to zero",
            ),
            (
                Basis::Idle {
                    idle_for: Duration::from_secs(31),
                    at_zero: false,
                },
                "no requests for 31.0s: going to zero, at most halving per step",
            ),
            (
                Basis::Grace {
                    idle_for: Duration::from_secs(32),
                    left: Duration::from_millis(7_500),
                },
                "no requests for 32.0s: zero after the grace period (7.5s left)",
            ),
            (
                Basis::KeepingLast {
                    idle_before_zero: Duration::from_secs(30),
                    idle_for: Duration::from_secs(2),
                },
                "keeping the last instance until 30.0s without requests (now 2.0s)",
            ),
        ];
        for (basis, text) in cases {
            assert_eq!(Reason::new(basis).to_string(), text);
        }
    }

    #[test]
    fn bounds_wrap_what_they_overrode_innermost_first() {
        let mut reason = Reason::new(Basis::InFlight {
            requests: 9,
            need: 9,
        });
        reason.holding = Some((9, Duration::from_secs(2)));
        reason.min_instances = Some(2);
        reason.max_instances = Some((5, 9));
        assert_eq!(
            reason.to_string(),
            "max-instances 5 caps 9 (min-instances 2 (9 requests in flight or queued need 9 \
             instances now; holding 9 until the next scale-down step (2.0s left)))"
        );
        assert_eq!(
            serde_json::to_value(&reason).unwrap(),
            serde_json::Value::String(reason.to_string()),
            "serialised as its words"
        );
    }
}
