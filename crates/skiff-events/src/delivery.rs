//! A delivery policy and the decision after each attempt. Retried: 5xx, 429, a timeout,
//! a connection that failed; never another 4xx (the target refused the event itself)
//! nor a redirect. The k-th retry waits `delay × k` (linear) or `delay × 2^k`
//! (exponential), as Knative's `backoffPolicy` says, at most `backoff_max`; a 429 or 503
//! with `Retry-After` waits at least that (at most `retry_after_max`). An event past its
//! maximum age, or out of retries, goes to the dead-letter sink with the reason.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Knative's `backoffPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    Linear,
    #[default]
    Exponential,
}

impl std::str::FromStr for BackoffPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linear" => Ok(BackoffPolicy::Linear),
            "exponential" => Ok(BackoffPolicy::Exponential),
            other => Err(format!(
                "backoff policy {other:?} is neither linear nor exponential"
            )),
        }
    }
}

/// How an event is delivered to one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    pub backoff: BackoffPolicy,
    /// The unit of backoff.
    pub backoff_delay: Duration,
    /// The longest wait the backoff may reach.
    pub backoff_max: Option<Duration>,
    /// The longest a target's `Retry-After` may make a retry wait.
    pub retry_after_max: Option<Duration>,
    /// The longest one attempt may take.
    pub timeout: Duration,
    /// Past this age an event is not attempted again.
    pub max_age: Option<Duration>,
}

/// The most retries a policy may ask for.
pub const MAX_RETRIES: u32 = 100;

impl Default for DeliveryPolicy {
    /// Three retries, exponential from 1 s, at most 5 minutes apart; 30 s an attempt;
    /// events older than a day are not tried again.
    fn default() -> Self {
        DeliveryPolicy {
            retries: 3,
            backoff: BackoffPolicy::Exponential,
            backoff_delay: Duration::from_secs(1),
            backoff_max: Some(Duration::from_secs(300)),
            retry_after_max: Some(Duration::from_secs(3600)),
            timeout: Duration::from_secs(30),
            max_age: Some(Duration::from_secs(86_400)),
        }
    }
}

/// Why a policy is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct PolicyError {
    pub field: &'static str,
    pub why: String,
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The target answered with this status (and, on a 429 or 503, the wait its
    /// `Retry-After` asked for, already read: see [`crate::parse_retry_after`]).
    Answered {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer within the policy's timeout.
    TimedOut,
    /// No connection, or it broke before an answer.
    ConnectionFailed,
}

/// Why an event was given up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// Every attempt the policy allows failed; the last one as it ended.
    RetriesExhausted { attempts: u32, last: Attempt },
    /// The target refused it in a way trying again will not change.
    Refused { status: u16 },
    /// The next attempt would come after the event's maximum age.
    TooOld { age: Duration },
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undelivered::RetriesExhausted { attempts, last } => {
                let s = if *attempts == 1 { "" } else { "s" };
                write!(f, "{attempts} attempt{s} failed, the last ")?;
                match last {
                    Attempt::Answered { status, .. } => write!(f, "with status {status}"),
                    Attempt::TimedOut => f.write_str("timed out"),
                    Attempt::ConnectionFailed => f.write_str("could not connect"),
                }
            }
            Undelivered::Refused { status } => {
                write!(
                    f,
                    "the target refused it with status {status} (not retried)"
                )
            }
            Undelivered::TooOld { age } => {
                write!(f, "past its maximum age ({}s old)", age.as_secs())
            }
        }
    }
}

/// What to do after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    /// To the dead-letter sink (or the store's dead-letter queue).
    DeadLetter(Undelivered),
}

impl DeliveryPolicy {
    /// Checks the numbers, naming the field at fault.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |field, why: String| Err(PolicyError { field, why });
        if self.retries > MAX_RETRIES {
            return bad(
                "retries",
                format!("{}: at most {MAX_RETRIES}", self.retries),
            );
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be more than zero".into());
        }
        if self.backoff_max.is_some_and(|max| max < self.backoff_delay) {
            return bad(
                "backoff-max",
                "is shorter than the backoff delay itself".into(),
            );
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1 for the first), capped by `backoff_max`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = match self.backoff {
            BackoffPolicy::Linear => u64::from(retry),
            BackoffPolicy::Exponential => 1u64.checked_shl(retry).unwrap_or(u64::MAX),
        };
        let nanos = self
            .backoff_delay
            .as_nanos()
            .saturating_mul(u128::from(factor));
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.backoff_max.map_or(wait, |max| wait.min(max))
    }

    /// What follows attempt number `attempt` (1 for the first) of an event that is `age`
    /// old now and ended as `outcome`.
    pub fn decide(&self, attempt: u32, age: Duration, outcome: Attempt) -> Decision {
        let retry_after = match outcome {
            Attempt::Answered { status, .. } if (200..300).contains(&status) => {
                return Decision::Delivered
            }
            Attempt::Answered { status, .. } if !retryable(status) => {
                return Decision::DeadLetter(Undelivered::Refused { status });
            }
            Attempt::Answered {
                status: 429 | 503,
                retry_after,
            } => retry_after,
            _ => None,
        };
        if attempt > self.retries {
            return Decision::DeadLetter(Undelivered::RetriesExhausted {
                attempts: attempt,
                last: outcome,
            });
        }
        let asked = retry_after.map(|wait| self.retry_after_max.map_or(wait, |max| wait.min(max)));
        let wait = self.backoff(attempt).max(asked.unwrap_or_default());
        if self
            .max_age
            .is_some_and(|max| age.saturating_add(wait) > max)
        {
            return Decision::DeadLetter(Undelivered::TooOld { age });
        }
        Decision::Retry(wait)
    }

    /// Whether an event `age` old may be attempted at all.
    pub fn too_old(&self, age: Duration) -> Option<Undelivered> {
        self.max_age
            .filter(|max| age > *max)
            .map(|_| Undelivered::TooOld { age })
    }
}

/// 5xx and 429 may pass; other statuses will not change by trying again.
fn retryable(status: u16) -> bool {
    status >= 500 || status == 429
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy(backoff: BackoffPolicy, retries: u32) -> DeliveryPolicy {
        DeliveryPolicy {
            retries,
            backoff,
            backoff_delay: Duration::from_millis(500),
            backoff_max: None,
            retry_after_max: None,
            timeout: secs(10),
            max_age: None,
        }
    }

    fn status(status: u16) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn backoff_grows_as_knative_says_and_stops_at_its_max() {
        let linear = policy(BackoffPolicy::Linear, 5);
        let waits: Vec<u128> = (1..=4).map(|k| linear.backoff(k).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 1500, 2000]);
        let mut exp = policy(BackoffPolicy::Exponential, 5);
        let waits: Vec<u128> = (1..=4).map(|k| exp.backoff(k).as_millis()).collect();
        assert_eq!(waits, [1000, 2000, 4000, 8000]);
        // One second doubled twenty times is about twelve days, as Knative's docs say.
        exp.backoff_delay = secs(1);
        assert_eq!(exp.backoff(20).as_secs() / 86_400, 12);
        assert_eq!(exp.backoff(200), Duration::from_nanos(u64::MAX));
        exp.backoff_max = Some(secs(600));
        assert_eq!(exp.backoff(20), secs(600));
    }

    #[test]
    fn what_is_retried_and_what_is_not() {
        let p = policy(BackoffPolicy::Linear, 3);
        assert_eq!(p.decide(1, secs(0), status(200)), Decision::Delivered);
        assert_eq!(p.decide(1, secs(0), status(204)), Decision::Delivered);
        for retried in [
            status(500),
            status(503),
            status(429),
            Attempt::TimedOut,
            Attempt::ConnectionFailed,
        ] {
            assert_eq!(
                p.decide(1, secs(0), retried),
                Decision::Retry(Duration::from_millis(500)),
                "{retried:?}"
            );
        }
        for refused in [400, 401, 403, 404, 408, 413, 301] {
            assert_eq!(
                p.decide(1, secs(0), status(refused)),
                Decision::DeadLetter(Undelivered::Refused { status: refused })
            );
        }
    }

    #[test]
    fn the_last_retry_failing_dead_letters_with_the_last_outcome() {
        let p = policy(BackoffPolicy::Exponential, 2);
        assert!(matches!(
            p.decide(2, secs(0), status(500)),
            Decision::Retry(_)
        ));
        let d = p.decide(3, secs(0), Attempt::TimedOut);
        assert_eq!(
            d,
            Decision::DeadLetter(Undelivered::RetriesExhausted {
                attempts: 3,
                last: Attempt::TimedOut
            })
        );
        let Decision::DeadLetter(why) = d else {
            unreachable!()
        };
        assert_eq!(why.to_string(), "3 attempts failed, the last timed out");
        // No retries at all: the first failure is the last.
        let none = policy(BackoffPolicy::Linear, 0);
        assert!(matches!(
            none.decide(1, secs(0), status(502)),
            Decision::DeadLetter(Undelivered::RetriesExhausted { attempts: 1, .. })
        ));
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_within_its_cap() {
        let mut p = policy(BackoffPolicy::Linear, 3);
        let asked = |status, wait| Attempt::Answered {
            status,
            retry_after: Some(secs(wait)),
        };
        assert_eq!(
            p.decide(1, secs(0), asked(429, 7)),
            Decision::Retry(secs(7))
        );
        assert_eq!(
            p.decide(1, secs(0), asked(503, 7)),
            Decision::Retry(secs(7))
        );
        // Never shorter than the backoff.
        p.backoff_delay = secs(10);
        assert_eq!(
            p.decide(1, secs(0), asked(429, 7)),
            Decision::Retry(secs(10))
        );
        // A 500's Retry-After is not a request to wait.
        p.backoff_delay = secs(1);
        assert_eq!(
            p.decide(1, secs(0), asked(500, 7)),
            Decision::Retry(secs(1))
        );
        p.retry_after_max = Some(secs(3));
        assert_eq!(
            p.decide(1, secs(0), asked(429, 7_000)),
            Decision::Retry(secs(3))
        );
    }

    #[test]
    fn an_event_is_not_retried_past_its_maximum_age() {
        let mut p = policy(BackoffPolicy::Linear, 10);
        p.backoff_delay = secs(60);
        p.max_age = Some(secs(600));
        // An event 100 s old, first failure: waits 60 s, still young enough.
        assert_eq!(
            p.decide(1, secs(100), status(500)),
            Decision::Retry(secs(60))
        );
        // 500 s old at its fourth failure: the wait (240 s) would take it past 600 s.
        assert_eq!(
            p.decide(4, secs(500), status(500)),
            Decision::DeadLetter(Undelivered::TooOld { age: secs(500) })
        );
        assert_eq!(p.too_old(secs(599)), None);
        assert!(p.too_old(secs(601)).is_some());
        // Success is success whatever the age.
        assert_eq!(p.decide(4, secs(5000), status(200)), Decision::Delivered);
    }

    #[test]
    fn policies_out_of_bounds_are_refused_by_field() {
        let mut p = DeliveryPolicy::default();
        assert_eq!(p.validate(), Ok(()));
        p.retries = MAX_RETRIES + 1;
        assert_eq!(p.validate().unwrap_err().field, "retries");
        p = DeliveryPolicy::default();
        p.timeout = Duration::ZERO;
        assert_eq!(p.validate().unwrap_err().field, "timeout");
        p = DeliveryPolicy::default();
        p.backoff_max = Some(Duration::from_millis(1));
        assert_eq!(p.validate().unwrap_err().field, "backoff-max");
        assert_eq!("linear".parse(), Ok(BackoffPolicy::Linear));
        assert!("quadratic".parse::<BackoffPolicy>().is_err());
    }
}
