//! Event delivery as pure logic: what a delivery policy is (Knative's `delivery` spec:
//! retries, linear or exponential backoff, a dead-letter sink; Cloud Tasks' rate limit),
//! how durations are written (ISO 8601 as Knative writes them, or `500ms`), what
//! happens after each attempt (delivered, retried when, or dead-lettered why), and when
//! a cron schedule in a time zone is due, DST included, and CloudEvents 1.0 read from
//! and written to HTTP in binary and structured modes.
//!
//! It must not do I/O or read a clock: every decision takes the time from its caller, so
//! the policies are tested with an injected clock and the dispatcher that uses them owns
//! its time.
#![forbid(unsafe_code)]

mod cloud;
mod delivery;
mod duration;
mod rate;
mod retry_after;
mod schedule;

pub use cloud::{
    originate, read_event, write_event, AttributesReader, CloudEvent, EventError, Mode, Outgoing,
};
pub use delivery::{Attempt, BackoffPolicy, Decision, DeliveryPolicy, PolicyError, Undelivered};
pub use duration::{parse_duration, DurationError};
pub use rate::RateLimit;
pub use retry_after::parse_retry_after;
pub use schedule::{Schedule, ScheduleError, Start};
