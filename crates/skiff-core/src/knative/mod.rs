//! Knative compatibility: `skiff apply -f` reads `serving.knative.dev/v1` Service
//! documents as Knative and Cloud Run users write them, and `skiff export` writes a
//! service back as one. This module converts between those documents and skiff's
//! [`crate::ServiceSpec`] and traffic; it must not talk to the daemon (the CLI does).

pub mod eventing;
mod export;
mod import;
pub mod model;

pub use export::document;
pub use import::{service as import, Imported};

/// Parses every document of a YAML stream (`---` separated).
pub fn parse(text: &str) -> Result<Vec<model::Service>, String> {
    serde_saphyr::from_multiple(text).map_err(|e| e.to_string())
}

/// Parses every document of a YAML stream as plain values (any kind).
pub fn parse_values(text: &str) -> Result<Vec<serde_json::Value>, String> {
    serde_saphyr::from_multiple(text).map_err(|e| e.to_string())
}

/// Writes a document as YAML.
pub fn to_yaml(doc: &model::Service) -> Result<String, String> {
    serde_saphyr::to_string(doc).map_err(|e| e.to_string())
}

/// The annotations skiff reads and writes on a revision template.
pub mod annotation {
    pub const AUTOSCALING_PREFIX: &str = "autoscaling.knative.dev/";
    pub const CLASS: &str = "autoscaling.knative.dev/class";
    pub const KPA: &str = "kpa.autoscaling.knative.dev";
    pub const MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
    pub const MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";
    pub const INITIAL_SCALE: &str = "autoscaling.knative.dev/initial-scale";
    pub const TARGET: &str = "autoscaling.knative.dev/target";
    pub const TARGET_UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
    pub const METRIC: &str = "autoscaling.knative.dev/metric";
    pub const WINDOW: &str = "autoscaling.knative.dev/window";
    pub const PANIC_WINDOW: &str = "autoscaling.knative.dev/panic-window-percentage";
    pub const PANIC_THRESHOLD: &str = "autoscaling.knative.dev/panic-threshold-percentage";
    pub const RETENTION: &str = "autoscaling.knative.dev/scale-to-zero-pod-retention-period";
    /// Knative sets these cluster-wide only; skiff takes them per revision.
    pub const SCALE_UP_RATE: &str = "skiff.dev/max-scale-up-rate";
    pub const SCALE_DOWN_RATE: &str = "skiff.dev/max-scale-down-rate";
    pub const ZERO_GRACE: &str = "skiff.dev/scale-to-zero-grace-period";
    /// Cloud Run's "CPU only during requests".
    pub const CPU_THROTTLING: &str = "run.googleapis.com/cpu-throttling";
    /// A user by name (Kubernetes' `runAsUser` takes numbers only).
    pub const USER: &str = "skiff.dev/user";
    /// `"false"`: the app runs as PID 1 itself, without skiff's init.
    pub const INIT: &str = "skiff.dev/init";
    /// The digest the exported revision's image resolved to (informational: a new
    /// revision resolves its image again).
    pub const IMAGE_DIGEST: &str = "skiff.dev/image-digest";
    /// `all` or `none`: whether instances reach public addresses.
    pub const EGRESS: &str = "skiff.dev/egress";
    /// Comma-separated `CIDR[:PORT]` and `host.skiff.internal:PORT` rules.
    pub const EGRESS_ALLOW: &str = "skiff.dev/egress-allow";
    /// Comma-separated secret uses Knative's `secretKeyRef` cannot say (a pinned version,
    /// a one-key secret's only key): `ENV=SECRET[/KEY]:VERSION`.
    pub const SECRETS: &str = "skiff.dev/secrets";
    /// Async invocations' delivery knobs (Knative has them on triggers only).
    pub const RETRIES: &str = "skiff.dev/retries";
    pub const BACKOFF_POLICY: &str = "skiff.dev/backoff-policy";
    pub const BACKOFF_DELAY: &str = "skiff.dev/backoff-delay";
    pub const DELIVERY_TIMEOUT: &str = "skiff.dev/delivery-timeout";
    pub const DEAD_LETTER: &str = "skiff.dev/dead-letter";
    pub const MAX_IN_FLIGHT: &str = "skiff.dev/max-in-flight";
    pub const MAX_PER_SECOND: &str = "skiff.dev/max-per-second";
    pub const MAX_AGE: &str = "skiff.dev/max-age";
    /// Comma-separated services whose instances may call a private service (`*`: all);
    /// written whenever the service is private, empty when none may.
    pub const ALLOWED_CALLERS: &str = "skiff.dev/allowed-callers";
    /// Knative's label on a Service that keeps it off the public ingress.
    pub const VISIBILITY: &str = "networking.knative.dev/visibility";
    pub const CLUSTER_LOCAL: &str = "cluster-local";
    /// Cloud Run's ways out to private networks, each with what to use in skiff instead.
    pub const REFUSED_EGRESS: &[(&str, &str)] = &[
        (
            "run.googleapis.com/cloudsql-instances",
            "skiff has no Cloud SQL proxy: allow the database's address and port with \
             skiff.dev/egress-allow (CIDR:PORT, or host.skiff.internal:PORT for one on the host)",
        ),
        (
            "run.googleapis.com/vpc-access-connector",
            "skiff needs no connector: allow private destinations with skiff.dev/egress-allow",
        ),
        (
            "run.googleapis.com/vpc-access-egress",
            "use skiff.dev/egress (all or none) and skiff.dev/egress-allow",
        ),
        (
            "run.googleapis.com/network-interfaces",
            "skiff has no VPC network interfaces: use skiff.dev/egress-allow",
        ),
    ];

    /// The current name of an annotation also known by its older camelCase name
    /// (Cloud Run still writes `autoscaling.knative.dev/maxScale`).
    pub fn canonical(key: &str) -> &str {
        match key {
            "autoscaling.knative.dev/minScale" => MIN_SCALE,
            "autoscaling.knative.dev/maxScale" => MAX_SCALE,
            "autoscaling.knative.dev/initialScale" => INITIAL_SCALE,
            "autoscaling.knative.dev/targetUtilizationPercentage" => TARGET_UTILIZATION,
            "autoscaling.knative.dev/panicWindowPercentage" => PANIC_WINDOW,
            "autoscaling.knative.dev/panicThresholdPercentage" => PANIC_THRESHOLD,
            other => other,
        }
    }
}

/// Durations as Kubernetes writes them (`60s`, `1m30s`, `500ms`, `1h`).
pub mod duration_text {
    /// Milliseconds in a duration like `1m30s`.
    pub fn parse_ms(text: &str) -> Result<u64, String> {
        let bad = || format!("{text:?} is not a duration (e.g. 60s, 1m30s, 500ms)");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (1, 2)
            } else if rest.starts_with('s') {
                (1000, 1)
            } else if rest.starts_with('m') {
                (60_000, 1)
            } else if rest.starts_with('h') {
                (3_600_000, 1)
            } else {
                return Err(bad());
            };
            rest = &rest[len..];
            total = n
                .checked_mul(unit)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(bad)?;
        }
        Ok(total)
    }

    /// `60s` for whole seconds, else `1500ms`.
    pub fn format_ms(ms: u64) -> String {
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests;
