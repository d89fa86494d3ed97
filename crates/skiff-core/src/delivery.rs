//! How a service's async invocations are delivered (Knative's `delivery` spec, Cloud
//! Tasks' retry settings): retries, backoff, a timeout per attempt, and where the ones
//! given up on go. Each knob unset keeps skiff's default.

use serde::{Deserialize, Serialize};

/// The most retries a service may ask for.
pub const MAX_DELIVERY_RETRIES: u32 = 100;

/// A service's delivery settings; `None` fields keep the defaults (3 retries,
/// exponential from 1 s, 30 s an attempt, dead ones kept in the store).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Attempts after the first (`--retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// `linear` or `exponential` (`--backoff-policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<String>,
    /// The unit of backoff, in milliseconds (`--backoff-delay`, ISO 8601 or `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay_ms: Option<u64>,
    /// The longest one attempt may take, in milliseconds (`--delivery-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Where invocations given up on go: `store` (kept, the default), or `SERVICE[/PATH]`
    /// (kept, and sent there too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// The most deliveries to it at once (`--max-in-flight`; Cloud Tasks'
    /// maxConcurrentDispatches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// The most deliveries started a second (`--max-per-second`; Cloud Tasks'
    /// maxDispatchesPerSecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
    /// Given up on once this old, in milliseconds (`--max-age`; default a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

impl Delivery {
    pub fn is_default(&self) -> bool {
        *self == Delivery::default()
    }

    /// Each knob `other` sets, over these.
    pub fn merged(&self, other: &Delivery) -> Delivery {
        Delivery {
            retries: other.retries.or(self.retries),
            backoff_policy: other.backoff_policy.clone().or(self.backoff_policy.clone()),
            backoff_delay_ms: other.backoff_delay_ms.or(self.backoff_delay_ms),
            timeout_ms: other.timeout_ms.or(self.timeout_ms),
            dead_letter: other.dead_letter.clone().or(self.dead_letter.clone()),
            max_in_flight: other.max_in_flight.or(self.max_in_flight),
            max_per_second: other.max_per_second.or(self.max_per_second),
            max_age_ms: other.max_age_ms.or(self.max_age_ms),
        }
    }

    /// The first knob out of bounds, by its flag's name.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(n) = self.retries.filter(|n| *n > MAX_DELIVERY_RETRIES) {
            return Err(("retries", format!("{n}: at most {MAX_DELIVERY_RETRIES}")));
        }
        if let Some(p) = self
            .backoff_policy
            .as_deref()
            .filter(|p| !matches!(*p, "linear" | "exponential"))
        {
            return Err((
                "backoff-policy",
                format!("{p:?} is neither linear nor exponential"),
            ));
        }
        if self.timeout_ms == Some(0) {
            return Err(("delivery-timeout", "must be more than zero".into()));
        }
        for (field, value) in [
            ("max-in-flight", self.max_in_flight),
            ("max-per-second", self.max_per_second),
        ] {
            if value == Some(0) {
                return Err((field, "must be at least 1".into()));
            }
        }
        if self.max_age_ms == Some(0) {
            return Err(("max-age", "must be more than zero".into()));
        }
        match self.dead_letter.as_deref() {
            None | Some("store") => Ok(()),
            Some(sink) => dead_letter_service(sink)
                .map(drop)
                .map_err(|why| ("dead-letter", why)),
        }
    }

    /// The service (and path on it) dead deliveries go to, when they go to one.
    pub fn dead_letter_sink(&self) -> Option<(&str, &str)> {
        match self.dead_letter.as_deref() {
            None | Some("store") => None,
            Some(sink) => dead_letter_service(sink).ok(),
        }
    }
}

/// `SERVICE` or `SERVICE/PATH`: the service and the path (`/` when none).
fn dead_letter_service(sink: &str) -> Result<(&str, &str), String> {
    let (service, path) = match sink.find('/') {
        Some(i) => (&sink[..i], &sink[i..]),
        None => (sink, "/"),
    };
    let bad_path = !path.bytes().all(|b| b.is_ascii_graphic());
    if !crate::service::is_dns_label(service, 49) || bad_path {
        return Err(format!(
            "{sink:?}: want store (kept for skiff events dlq), or a service as SERVICE or \
             SERVICE/PATH"
        ));
    }
    Ok((service, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_merge_and_bad_ones_are_named() {
        let base = Delivery {
            retries: Some(5),
            backoff_policy: Some("linear".into()),
            ..Default::default()
        };
        let over = Delivery {
            retries: Some(1),
            backoff_delay_ms: Some(200),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!(
            (m.retries, m.backoff_policy.as_deref(), m.backoff_delay_ms),
            (Some(1), Some("linear"), Some(200))
        );
        assert!(m.check().is_ok());
        for (bad, field) in [
            (
                Delivery {
                    retries: Some(101),
                    ..Default::default()
                },
                "retries",
            ),
            (
                Delivery {
                    backoff_policy: Some("cubic".into()),
                    ..Default::default()
                },
                "backoff-policy",
            ),
            (
                Delivery {
                    timeout_ms: Some(0),
                    ..Default::default()
                },
                "delivery-timeout",
            ),
            (
                Delivery {
                    max_in_flight: Some(0),
                    ..Default::default()
                },
                "max-in-flight",
            ),
            (
                Delivery {
                    max_per_second: Some(0),
                    ..Default::default()
                },
                "max-per-second",
            ),
            (
                Delivery {
                    max_age_ms: Some(0),
                    ..Default::default()
                },
                "max-age",
            ),
            (
                Delivery {
                    dead_letter: Some("Bad_Sink".into()),
                    ..Default::default()
                },
                "dead-letter",
            ),
        ] {
            assert_eq!(bad.check().unwrap_err().0, field);
        }
        let sink = |text: &str| Delivery {
            dead_letter: Some(text.into()),
            ..Default::default()
        };
        assert!(sink("store").check().is_ok());
        assert_eq!(sink("store").dead_letter_sink(), None);
        assert_eq!(sink("dlq").dead_letter_sink(), Some(("dlq", "/")));
        assert_eq!(
            sink("dlq/failed?x=1").dead_letter_sink(),
            Some(("dlq", "/failed?x=1"))
        );
        assert!(sink("dlq/a b").check().is_err());
    }
}
