//! Services and revisions: the spec a user deploys, its defaults (Cloud Run's where Cloud
//! Run has one) and its validation. A revision is an immutable copy of a spec with the
//! image resolved to a digest; the names here are the ones URLs, env and the store use.

use crate::autoscaling::Autoscaling;
use crate::egress::{EgressMode, EgressRule};
use crate::probe::Probe;
use crate::secret::{check_secret_uses, SecretTarget, SecretUse};
use serde::{Deserialize, Serialize};

/// Cloud Run's default concurrency: requests one instance serves at once.
pub const DEFAULT_CONCURRENCY: u32 = 80;
/// Cloud Run's default request timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;
/// How long a revision may go without a request before it scales to zero.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Cloud Run's default memory limit.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// One CPU.
pub const DEFAULT_CPU_MILLIS: u64 = 1000;
/// Cloud Run's default cap on instances.
pub const DEFAULT_MAX_INSTANCES: u32 = 100;
/// Longest service name: a DNS label, less room for a tag prefix and revision suffix.
pub const MAX_SERVICE_NAME: usize = 49;
/// Longest request timeout Cloud Run allows (60 minutes).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// What a user deploys. Every field has a default except the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Image reference as given (name[:tag], digest or digest prefix).
    pub image: String,
    /// Port the app listens on; also its `$PORT`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Extra environment, `KEY=VALUE`, applied over the image's.
    #[serde(default)]
    pub env: Vec<String>,
    /// Replaces the image's Cmd when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint when not empty; the image's Cmd is then dropped
    /// too unless `command` gives one (Kubernetes' `command` and `args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Memory limit in bytes.
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
    /// CPU limit in thousandths of a core.
    #[serde(default = "default_cpu")]
    pub cpu_millis: u64,
    /// Requests one instance serves at once; 0 means no limit.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Instances kept running even when idle.
    #[serde(default)]
    pub min_instances: u32,
    /// Cap on instances.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Time a request may take until its response starts, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Time without any request after which the revision's last instances stop (scale to
    /// zero, when `min_instances` is 0). Between zero and the peak, the autoscaler's
    /// stable window decides.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// HTTP path probed (GET, 2xx/3xx = ready) before the first request; when absent, a
    /// TCP connect to the port decides readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<String>,
    /// Probed while the instance serves; failing takes it out of the rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Probed while the instance serves; failing restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Autoscaler knobs; unset ones take the daemon's defaults.
    #[serde(default, skip_serializing_if = "Autoscaling::is_default")]
    pub autoscaling: Autoscaling,
    /// CPU only while serving (Cloud Run's CPU throttling): an instance with no request
    /// in flight is frozen, and thawed when one arrives.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpu_throttling: bool,
    /// The app's working directory (an absolute path), instead of the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user to run as (`name`, `uid`, `uid:gid`, `name:group`), instead of the
    /// image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Refuse to run as root (uid 0): Kubernetes' `runAsNonRoot`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_as_non_root: bool,
    /// Mount the root filesystem read-only (`/tmp` and `/dev/shm` stay writable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Run the app under skiff's minimal init (PID 1 forwards signals to the app's
    /// process group, reaps zombies). On unless turned off.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub init: bool,
    /// Capabilities taken from the default set (`--cap-drop`, Kubernetes'
    /// `capabilities.drop`): canonical names, or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Whether instances reach public addresses (`--egress`).
    #[serde(default, skip_serializing_if = "EgressMode::is_default")]
    pub egress: EgressMode,
    /// Private destinations and host ports instances may reach (`--egress-allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allow: Vec<EgressRule>,
    /// Secrets given to instances, as environment variables or files (`--set-secrets`);
    /// references only, resolved when an instance starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretUse>,
    /// Whether anyone may call the service through the ingress (gcloud's
    /// `--allow-unauthenticated`, the default); when not, only invoker tokens for it and
    /// the services in `allowed_callers`.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub allow_unauthenticated: bool,
    /// Services whose instances may call it when it is private (`--allowed-callers`);
    /// `*` alone: every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_callers: Vec<String>,
    /// Run with the host's ids instead of a user namespace of its own (`--host-users`,
    /// Kubernetes' `hostUsers: true`): for apps that need files owned by host ids.
    #[serde(default, skip_serializing_if = "is_off")]
    pub host_users: bool,
    /// How its async invocations are delivered (`--retries`, `--backoff-delay`…).
    #[serde(default, skip_serializing_if = "crate::Delivery::is_default")]
    pub delivery: crate::Delivery,
}

fn is_off(b: &bool) -> bool {
    !*b
}

fn default_port() -> u16 {
    8080
}
fn default_memory() -> u64 {
    DEFAULT_MEMORY_BYTES
}
fn default_cpu() -> u64 {
    DEFAULT_CPU_MILLIS
}
fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_max_instances() -> u32 {
    DEFAULT_MAX_INSTANCES
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn on() -> bool {
    true
}

fn is_on(b: &bool) -> bool {
    *b
}

fn default_idle_timeout() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

impl ServiceSpec {
    /// A spec with every default, running `image`.
    pub fn new(image: impl Into<String>) -> Self {
        ServiceSpec {
            image: image.into(),
            port: default_port(),
            env: Vec::new(),
            command: Vec::new(),
            entrypoint: Vec::new(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpu_millis: DEFAULT_CPU_MILLIS,
            concurrency: DEFAULT_CONCURRENCY,
            min_instances: 0,
            max_instances: DEFAULT_MAX_INSTANCES,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            startup_probe: None,
            readiness_probe: None,
            liveness_probe: None,
            autoscaling: Autoscaling::default(),
            cpu_throttling: false,
            working_dir: None,
            user: None,
            run_as_non_root: false,
            read_only: false,
            init: true,
            cap_drop: Vec::new(),
            egress: EgressMode::All,
            egress_allow: Vec::new(),
            secrets: Vec::new(),
            allow_unauthenticated: true,
            allowed_callers: Vec::new(),
            host_users: false,
            delivery: crate::Delivery::default(),
        }
    }

    /// The secrets: no collisions among them, and none over a variable the spec or skiff
    /// sets.
    fn validate_secrets(&self) -> Result<(), SpecError> {
        let bad = |why: String| {
            Err(SpecError {
                field: "secrets",
                why,
            })
        };
        if self.secrets.len() > MAX_SECRET_USES {
            return bad(format!(
                "{} secrets: at most {MAX_SECRET_USES}",
                self.secrets.len()
            ));
        }
        if let Err(e) = check_secret_uses(&self.secrets) {
            return bad(e.to_string());
        }
        let mounts = self
            .secrets
            .iter()
            .filter(|u| matches!(u.target, SecretTarget::File(_) | SecretTarget::Dir(_)))
            .count();
        if mounts > MAX_SECRET_MOUNTS {
            return bad(format!(
                "{mounts} secrets as files: at most {MAX_SECRET_MOUNTS}"
            ));
        }
        let plain: std::collections::HashSet<&str> = self
            .env
            .iter()
            .map(|kv| kv.split('=').next().unwrap_or_default())
            .collect();
        for u in &self.secrets {
            if let SecretTarget::Env(name) = &u.target {
                if RESERVED_ENV.contains(&name.as_str()) {
                    return bad(format!("{name} is set by skiff and may not be overridden"));
                }
                if plain.contains(name.as_str()) {
                    return bad(format!(
                        "{name} is both a plain variable and a secret: remove one"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every field, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &'static str, why: String| Err(SpecError { field, why });
        if self.image.trim().is_empty() {
            return bad("image", "must not be empty".into());
        }
        if self.port == 0 {
            return bad("port", "must be 1-65535".into());
        }
        if self.env.len() > MAX_ENV_ENTRIES {
            return bad(
                "env",
                format!("{} entries: at most {MAX_ENV_ENTRIES}", self.env.len()),
            );
        }
        let env_bytes: usize = self.env.iter().map(String::len).sum();
        if env_bytes > MAX_ENV_BYTES {
            return bad(
                "env",
                format!("{env_bytes} bytes in all: at most {MAX_ENV_BYTES}"),
            );
        }
        for kv in &self.env {
            let key = kv.split('=').next().unwrap_or_default();
            if !kv.contains('=') || key.is_empty() {
                return bad("env", format!("{kv:?} is not KEY=VALUE"));
            }
            if kv.contains('\0') {
                return bad("env", format!("{key} contains a NUL byte"));
            }
            if RESERVED_ENV.contains(&key) {
                return bad(
                    "env",
                    format!("{key} is set by skiff and may not be overridden"),
                );
            }
        }
        self.validate_secrets()?;
        check_allowed_callers(&self.allowed_callers).map_err(|why| SpecError {
            field: "allowed-callers",
            why,
        })?;
        self.delivery
            .check()
            .map_err(|(field, why)| SpecError { field, why })?;
        if self.command.iter().any(|a| a.contains('\0')) {
            return bad("command", "an argument contains a NUL byte".into());
        }
        if self.entrypoint.iter().any(|a| a.contains('\0')) {
            return bad("entrypoint", "an argument contains a NUL byte".into());
        }
        if let Some(user) = &self.user {
            if user.is_empty() || user.contains(['\0', '\n']) || user.len() > 256 {
                return bad(
                    "user",
                    format!("{user:?} is not a user (name, uid or uid:gid)"),
                );
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') || dir.contains('\0') {
                return bad("working-dir", format!("{dir:?} is not an absolute path"));
            }
        }
        for cap in &self.cap_drop {
            if crate::canonical_capability(cap).as_deref() != Some(cap.as_str()) {
                return bad(
                    "cap-drop",
                    format!("{cap:?} is not a capability (NET_RAW, CAP_CHOWN, ALL…)"),
                );
            }
        }
        if let Err(why) = crate::egress::check_rules(&self.egress_allow) {
            return bad("egress-allow", why);
        }
        if self.memory_bytes < 4 << 20 {
            return bad("memory", "must be at least 4Mi".into());
        }
        // The kernel's CFS quota is at least 1 ms per 100 ms period: 10 millicores.
        if !(MIN_CPU_MILLIS..=MAX_CPU_MILLIS).contains(&self.cpu_millis) {
            return bad(
                "cpu",
                format!(
                    "{}m: must be between {MIN_CPU_MILLIS}m (the kernel's smallest quota) and {} cores",
                    self.cpu_millis,
                    MAX_CPU_MILLIS / 1000
                ),
            );
        }
        if self.memory_bytes > MAX_MEMORY_BYTES {
            return bad("memory", "must be at most 16Ti".into());
        }
        if self.max_instances == 0 {
            return bad("max-instances", "must be at least 1".into());
        }
        if self.min_instances > self.max_instances {
            return bad(
                "min-instances",
                format!(
                    "{} is above max-instances ({})",
                    self.min_instances, self.max_instances
                ),
            );
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return bad("timeout", "must be between 1ms and 3600s".into());
        }
        if self.idle_timeout_ms == 0 {
            return bad("idle-timeout", "must be more than 0".into());
        }
        for (field, probe) in [
            ("readiness-probe", &self.readiness_probe),
            ("liveness-probe", &self.liveness_probe),
        ] {
            if let Some(Err(why)) = probe.as_ref().map(Probe::validate) {
                return bad(field, why);
            }
            if probe.as_ref().is_some_and(Probe::is_exec) && !self.init {
                return bad(
                    field,
                    "exec probes run through skiff's init: drop --no-init".into(),
                );
            }
        }
        if let Err((knob, why)) = self.autoscaling.validate() {
            return bad(knob, why);
        }
        if let Some(n) = self.autoscaling.initial_scale {
            if n > self.max_instances {
                return bad(
                    "initial-instances",
                    format!("{n} is above max-instances ({})", self.max_instances),
                );
            }
        }
        if let Some(p) = &self.startup_probe {
            if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return bad(
                    "startup-probe",
                    format!("{p:?} is not an absolute URL path"),
                );
            }
        }
        Ok(())
    }
}

/// The smallest CPU limit the kernel can enforce (a 1 ms quota per 100 ms period).
pub const MIN_CPU_MILLIS: u64 = 10;
/// The largest CPU limit taken (1,000 cores).
pub const MAX_CPU_MILLIS: u64 = 1_000_000;
/// The largest memory limit taken.
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// Environment entries per revision (Cloud Run's limit).
pub const MAX_ENV_ENTRIES: usize = 1000;
/// All environment entries together, in bytes.
pub const MAX_ENV_BYTES: usize = 256 << 10;

/// Environment variables skiff sets itself (as Cloud Run and Knative do).
pub const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// Most secrets one service uses.
pub const MAX_SECRET_USES: usize = 100;
/// Most secrets one service has as files (each is a mount in every instance).
pub const MAX_SECRET_MOUNTS: usize = 8;

/// The most services a private service may name as its callers.
pub const MAX_ALLOWED_CALLERS: usize = 100;

/// Service names, no repeats; or `*` alone.
fn check_allowed_callers(callers: &[String]) -> Result<(), String> {
    if callers.len() > MAX_ALLOWED_CALLERS {
        return Err(format!(
            "{} services: at most {MAX_ALLOWED_CALLERS}",
            callers.len()
        ));
    }
    if callers.iter().any(|c| c == "*") {
        return match callers.len() {
            1 => Ok(()),
            _ => Err("* (every service) stands alone".into()),
        };
    }
    let mut seen = std::collections::HashSet::new();
    for c in callers {
        validate_service_name(c).map_err(|e| format!("{c:?}: {}", e.why))?;
        if !seen.insert(c) {
            return Err(format!("{c} is named twice"));
        }
    }
    Ok(())
}

/// A field of a spec that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SpecError {
    /// The field, as the CLI flag names it.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// Validates a service name: a DNS label of 1–49 characters of `[a-z0-9-]`, starting with
/// a letter and not ending with `-`, so `NAME.<domain>` is a valid host name.
pub fn validate_service_name(name: &str) -> Result<(), SpecError> {
    validate_label_name("service", name)
}

/// The name of a `kind` of thing (`service`, `token`): the rules of a service's name.
pub fn validate_label_name(kind: &str, name: &str) -> Result<(), SpecError> {
    if is_dns_label(name, MAX_SERVICE_NAME) {
        Ok(())
    } else {
        Err(SpecError {
            field: "name",
            why: format!(
                "{name:?} is not a {kind} name: want 1-{MAX_SERVICE_NAME} characters of \
                 [a-z0-9-], starting with a letter, not ending with '-'"
            ),
        })
    }
}

/// Whether `s` is 1 to `max` characters of `[a-z0-9-]`, starting with a letter and not
/// ending with `-`: a DNS label, and safe in file and cgroup names too.
pub(crate) fn is_dns_label(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a revision name a user chose (Knative's `spec.template.metadata.name`): a DNS
/// label that starts with the service's name and a `-`, as Knative requires.
pub fn validate_revision_name(service: &str, name: &str) -> Result<(), SpecError> {
    let after = name.strip_prefix(service).and_then(|r| r.strip_prefix('-'));
    if is_dns_label(name, 63) && after.is_some_and(|a| !a.is_empty()) {
        return Ok(());
    }
    Err(SpecError {
        field: "revision-name",
        why: format!(
            "{name:?} is not a revision name of service {service}: want {service}-SUFFIX, \
             up to 63 characters of [a-z0-9-], not ending with '-'"
        ),
    })
}

/// A revision's name: the service name and its generation, as Knative writes them
/// (`hello-00001`).
pub fn revision_name(service: &str, generation: u32) -> String {
    format!("{service}-{generation:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_callers_are_service_names_or_every_service() {
        let with = |callers: &[&str]| {
            let mut spec = ServiceSpec::new("app");
            spec.allow_unauthenticated = false;
            spec.allowed_callers = callers.iter().map(|c| c.to_string()).collect();
            spec.validate().map_err(|e| e.to_string())
        };
        assert!(with(&[]).is_ok());
        assert!(with(&["front", "batch"]).is_ok());
        assert!(with(&["*"]).is_ok());
        for (callers, says) in [
            (&["*", "front"][..], "stands alone"),
            (&["Front"][..], "\"Front\""),
            (&["front", "front"][..], "named twice"),
        ] {
            let e = with(callers).unwrap_err();
            assert!(
                e.starts_with("allowed-callers: ") && e.contains(says),
                "{e}"
            );
        }
        let many: Vec<String> = (0..=MAX_ALLOWED_CALLERS).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(with(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn secrets_may_not_collide_with_plain_or_reserved_variables() {
        let mut spec = ServiceSpec::new("app");
        spec.env = vec!["MODE=a".into()];
        spec.secrets = vec!["DB=db:latest".parse().unwrap()];
        assert!(spec.validate().is_ok());
        for (uses, says) in [
            ("MODE=db:1", "both a plain variable and a secret"),
            ("K_SERVICE=db:1", "set by skiff"),
        ] {
            spec.secrets = vec![uses.parse().unwrap()];
            let e = spec.validate().unwrap_err();
            assert_eq!(e.field, "secrets");
            assert!(e.why.contains(says), "{uses}: {e}");
        }
        spec.secrets = vec!["A=a:1".parse().unwrap(), "A=b:1".parse().unwrap()];
        assert!(spec.validate().unwrap_err().why.contains("two secrets"));
    }

    #[test]
    fn limits_the_kernel_cannot_enforce_and_huge_environments_are_refused() {
        let field = |tune: fn(&mut ServiceSpec)| {
            let mut s = ServiceSpec::new("x");
            tune(&mut s);
            s.validate().map(|()| "").map_err(|e| e.field).unwrap_err()
        };
        assert_eq!(field(|s| s.cpu_millis = 1), "cpu");
        assert_eq!(field(|s| s.cpu_millis = u64::MAX), "cpu");
        assert_eq!(field(|s| s.memory_bytes = u64::MAX), "memory");
        assert_eq!(
            field(|s| s.env = (0..1001).map(|i| format!("K{i}=v")).collect()),
            "env"
        );
        assert_eq!(
            field(|s| s.env = vec![format!("BIG={}", "x".repeat(300 << 10))]),
            "env"
        );
        let mut ok = ServiceSpec::new("x");
        ok.cpu_millis = MIN_CPU_MILLIS;
        ok.env = (0..1000).map(|i| format!("K{i}=v")).collect();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn revision_names_start_with_the_service() {
        assert!(validate_revision_name("web", "web-blue").is_ok());
        assert!(validate_revision_name("web", "web-00007").is_ok());
        for bad in ["web", "web-", "webx-1", "api-1", "web-Blue", "web_1"] {
            let err = validate_revision_name("web", bad).unwrap_err();
            assert_eq!(err.field, "revision-name", "{bad}");
        }
        assert!(validate_revision_name("web", &format!("web-{}", "a".repeat(60))).is_err());
    }

    #[test]
    fn defaults_are_cloud_runs() {
        let s: ServiceSpec = serde_json::from_str(r#"{"image":"hello"}"#).unwrap();
        assert_eq!(s, ServiceSpec::new("hello"));
        assert_eq!(s.concurrency, 80);
        assert_eq!(s.timeout_ms, 300_000);
        assert_eq!(s.port, 8080);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = serde_json::from_str::<ServiceSpec>(r#"{"image":"x","replicas":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("replicas"), "{e}");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut ServiceSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.image = " ".into(), "image"),
            (|s| s.port = 0, "port"),
            (|s| s.env = vec!["NOEQ".into()], "env"),
            (|s| s.env = vec!["PORT=1".into()], "env"),
            (|s| s.memory_bytes = 1024, "memory"),
            (|s| s.cpu_millis = 0, "cpu"),
            (|s| s.max_instances = 0, "max-instances"),
            (
                |s| {
                    s.min_instances = 5;
                    s.max_instances = 2
                },
                "min-instances",
            ),
            (|s| s.timeout_ms = 0, "timeout"),
            (|s| s.timeout_ms = MAX_TIMEOUT_MS + 1, "timeout"),
            (|s| s.idle_timeout_ms = 0, "idle-timeout"),
            (|s| s.working_dir = Some("srv".into()), "working-dir"),
            (|s| s.autoscaling.metric = Some("cpu".into()), "metric"),
            (|s| s.autoscaling.target = Some(0.0), "target"),
            (
                |s| s.autoscaling.target_utilization_percentage = Some(150.0),
                "target-utilization",
            ),
            (|s| s.autoscaling.window_ms = Some(1000), "window"),
            (
                |s| s.autoscaling.panic_window_percentage = Some(0.5),
                "panic-window-percentage",
            ),
            (
                |s| s.autoscaling.panic_threshold_percentage = Some(100.0),
                "panic-threshold",
            ),
            (
                |s| s.autoscaling.max_scale_down_rate = Some(1.0),
                "max-scale-down-rate",
            ),
            (
                |s| s.autoscaling.max_scale_up_rate = Some(f64::NAN),
                "max-scale-up-rate",
            ),
            (
                |s| s.autoscaling.initial_scale = Some(500),
                "initial-instances",
            ),
            (
                |s| s.startup_probe = Some("healthz".into()),
                "startup-probe",
            ),
        ];
        for (mutate, field) in cases {
            let mut s = ServiceSpec::new("hello");
            mutate(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field, "{s:?}");
        }
    }

    #[test]
    fn service_names_are_dns_labels() {
        for ok in ["a", "hello", "hello-world-2"] {
            assert!(validate_service_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_SERVICE_NAME + 1);
        for bad in ["", "1abc", "-a", "a-", "Hello", "a.b", "a_b", long.as_str()] {
            assert!(validate_service_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(revision_name("hello", 7), "hello-00007");
    }
}
