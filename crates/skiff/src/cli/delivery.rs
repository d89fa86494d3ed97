//! The delivery flags that `deploy`, `schedule` and `topic subscribe` share (Knative's
//! `delivery` spec): each unset one keeps skiff's default.

use clap::Args;

#[derive(Args, Clone, Debug, Default)]
pub struct DeliveryArgs {
    /// Deliveries: attempts after the first before one is given up on (default 3).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Deliveries: the unit of backoff between attempts, ISO 8601 (PT0.5S) or 500ms
    /// (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_event_duration)]
    pub backoff_delay: Option<u64>,
    /// Deliveries: the k-th retry waits delay × k (linear) or delay × 2^k (exponential,
    /// the default).
    #[arg(long, value_name = "linear|exponential")]
    pub backoff_policy: Option<String>,
    /// Deliveries: the longest one attempt may take (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_event_duration)]
    pub delivery_timeout: Option<u64>,
    /// Deliveries: where those given up on go: store (kept; `skiff events dlq` lists
    /// them), or a service (SERVICE or SERVICE/PATH: kept, and a copy sent there with
    /// X-Skiff-Dead-Letter-Reason).
    #[arg(long, value_name = "store|SERVICE[/PATH]")]
    pub dead_letter: Option<String>,
    /// Deliveries: the most to this target at once.
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Deliveries: the most started a second.
    #[arg(long, value_name = "N")]
    pub max_per_second: Option<u32>,
    /// Deliveries: given up on (dead) once this old, ISO 8601 or 10m (default 1 day).
    #[arg(long, value_name = "DURATION", value_parser = parse_event_duration)]
    pub max_age: Option<u64>,
}

impl DeliveryArgs {
    pub fn delivery(&self) -> skiff_core::Delivery {
        skiff_core::Delivery {
            retries: self.retries,
            backoff_policy: self.backoff_policy.clone(),
            backoff_delay_ms: self.backoff_delay,
            timeout_ms: self.delivery_timeout,
            dead_letter: self.dead_letter.clone(),
            max_in_flight: self.max_in_flight,
            max_per_second: self.max_per_second,
            max_age_ms: self.max_age,
        }
    }
}

/// A duration as ISO 8601 (PT0.5S) or short (500ms), in milliseconds.
fn parse_event_duration(text: &str) -> Result<u64, String> {
    skiff_events::parse_duration(text)
        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
        .map_err(|e| e.to_string())
}
