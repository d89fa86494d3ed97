//! Domain types shared by every skiff crate: content digests, image references, resource
//! quantities, instance identifiers, and service specs, with their parsing and validation;
//! and the Knative `serving.knative.dev/v1` Service model with its import and export.
//!
//! This crate must not do I/O: it is pure data and rules, so that the store, the image
//! store, the sandbox and the CLI agree on one meaning of each word.
#![forbid(unsafe_code)]

mod access;
mod autoscaling;
mod backoff;
mod busy_time;
mod capability;
mod delivery;
mod digest;
mod egress;
mod events;
pub mod knative;
mod patch;
mod probe;
mod quantity;
mod reference;
mod secret;
mod service;
mod traffic;

pub use access::{ApiAction, Grant, Role};
pub use autoscaling::Autoscaling;
pub use backoff::{Backoff, Step};
pub use busy_time::BusyTime;
pub use capability::{canonical_capability, capability_mask, DEFAULT_CAPABILITIES};
pub use delivery::{Delivery, MAX_DELIVERY_RETRIES};
pub use digest::{Digest, DigestError};
pub use egress::{
    egress_rules_text, parse_egress_rules, Destination, EgressMode, EgressRule, HOST_NAME,
};
pub use events::{
    EventFormat, Filter, FilterOp, ScheduleSpec, SubscriptionSpec, MAX_FILTERS, MAX_SCHEDULE_DATA,
};
pub use patch::{PatchError, ProbePatch, SpecPatch};
pub use probe::{Probe, MAX_EXEC_ARGS, MAX_EXEC_BYTES};
pub use quantity::{parse_cpu_millis, parse_memory_bytes, QuantityError};
pub use reference::{ImageRef, ReferenceError};
pub use secret::{
    check_secret_uses, is_env_name, validate_data_key, validate_data_name, validate_secret_key,
    validate_secret_name, SecretNameError, SecretTarget, SecretUse, SecretVersionRef, UseSource,
    MAX_SECRET_BYTES, MAX_SECRET_KEYS,
};
pub use service::{
    revision_name, validate_label_name, validate_revision_name, validate_service_name, ServiceSpec,
    SpecError, DEFAULT_CONCURRENCY, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, RESERVED_ENV,
};
pub use traffic::{default_traffic, tag_host, validate_tag, validate_traffic, TrafficTarget};

/// `PATH` for a process whose image sets none (what Docker and crun use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Validates an instance identifier: 1–32 characters of `[a-z0-9-]`, starting with a
/// letter or digit. Identifiers become hostnames, cgroup names and file names, so the
/// alphabet is kept to what is safe in all three.
pub fn validate_instance_id(id: &str) -> Result<(), InstanceIdError> {
    let ok_len = (1..=32).contains(&id.len());
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_start = id.bytes().next().is_some_and(|b| b != b'-');
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(InstanceIdError(id.to_owned()))
    }
}

/// An instance identifier that is not 1–32 characters of `[a-z0-9-]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid instance id {0:?}: want 1-32 characters of [a-z0-9-], not starting with '-'")]
pub struct InstanceIdError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_hostname_and_path_safe() {
        assert!(validate_instance_id("a1b2-c3").is_ok());
        for bad in ["", "-a", "A", "a/b", "a.b", "..", &"a".repeat(33)] {
            assert!(validate_instance_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
