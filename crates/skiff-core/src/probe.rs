//! Health probes of an instance after it started: readiness (failing takes it out of
//! the rotation until it passes again) and liveness (failing restarts it), as Knative
//! and Kubernetes define them. Owns the probe's shape, defaults and range checks; running
//! probes is the daemon's job.

use serde::{Deserialize, Serialize};

/// Bounds on an exec probe's command (it travels to the instance in one message).
pub const MAX_EXEC_ARGS: usize = 32;
pub const MAX_EXEC_BYTES: usize = 2048;

/// Kubernetes' default probe period.
pub const DEFAULT_PERIOD_MS: u64 = 10_000;
/// Kubernetes' default probe timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Kubernetes' default failures in a row before acting.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// One probe: an HTTP GET of `http_path` (2xx/3xx passes), a command run inside the
/// instance (`exec`, exit status 0 passes: Kubernetes' exec action), or, without either,
/// a TCP connect to the instance's port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// A command (argv; the first word looked up in the app's `PATH`) run inside the
    /// instance as its user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// Time between probes.
    #[serde(default = "default_period")]
    pub period_ms: u64,
    /// Time a probe may take.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Failures in a row that count as failing.
    #[serde(default = "default_failures")]
    pub failure_threshold: u32,
    /// Wait after the instance is ready before the first probe.
    #[serde(default)]
    pub initial_delay_ms: u64,
}

fn default_period() -> u64 {
    DEFAULT_PERIOD_MS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_failures() -> u32 {
    DEFAULT_FAILURE_THRESHOLD
}

impl Probe {
    /// A probe with Kubernetes' defaults: HTTP GET of `path`, or TCP when `None`.
    pub fn new(http_path: Option<String>) -> Probe {
        Probe {
            http_path,
            exec: Vec::new(),
            period_ms: DEFAULT_PERIOD_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            initial_delay_ms: 0,
        }
    }

    /// A probe that runs `command` inside the instance, with Kubernetes' defaults.
    pub fn exec(command: Vec<String>) -> Probe {
        Probe {
            exec: command,
            ..Probe::new(None)
        }
    }

    /// Checks the probe's fields; `Err(why)`.
    pub fn validate(&self) -> Result<(), String> {
        if !self.exec.is_empty() {
            if self.http_path.is_some() {
                return Err("give an HTTP path or a command, not both".into());
            }
            if self.exec[0].is_empty() || self.exec.iter().any(|a| a.contains('\0')) {
                return Err("the command is empty or has a NUL byte".into());
            }
            let size: usize = self.exec.iter().map(|a| a.len() + 1).sum();
            if self.exec.len() > MAX_EXEC_ARGS || size > MAX_EXEC_BYTES {
                return Err(format!(
                    "the command is too long (at most {MAX_EXEC_ARGS} words, {MAX_EXEC_BYTES} bytes)"
                ));
            }
        }
        if let Some(p) = &self.http_path {
            if !is_url_path(p) {
                return Err(format!("{p:?} is not an absolute URL path"));
            }
        }
        if self.period_ms < 100 || self.period_ms > 3_600_000 {
            return Err("period must be between 100ms and 1h".into());
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.period_ms {
            return Err("timeout must be above 0 and at most the period".into());
        }
        if self.failure_threshold == 0 || self.failure_threshold > 100 {
            return Err("failure threshold must be 1-100".into());
        }
        if self.initial_delay_ms > 3_600_000 {
            return Err("initial delay must be at most 1h".into());
        }
        Ok(())
    }

    /// How the probe reads in messages: `GET /healthz`, `exec cat /tmp/ok` or `TCP connect`.
    pub fn describe(&self) -> String {
        match &self.http_path {
            Some(p) => format!("GET {p}"),
            None if !self.exec.is_empty() => format!("exec {}", self.exec.join(" ")),
            None => "TCP connect".into(),
        }
    }

    /// Whether it runs a command inside the instance.
    pub fn is_exec(&self) -> bool {
        !self.exec.is_empty()
    }
}

/// An absolute path of visible ASCII (what a probe may request).
pub fn is_url_path(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kubernetes_and_bad_fields_are_explained() {
        let p: Probe = serde_json::from_str(r#"{"http_path":"/healthz"}"#).unwrap();
        assert_eq!(p, Probe::new(Some("/healthz".into())));
        assert!(p.validate().is_ok());
        assert_eq!(p.describe(), "GET /healthz");
        let bad = |f: fn(&mut Probe)| {
            let mut p = Probe::new(None);
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.http_path = Some("healthz".into())).contains("absolute"));
        assert!(bad(|p| p.http_path = Some("/a b".into())).contains("absolute"));
        assert!(bad(|p| p.period_ms = 10).contains("period"));
        assert!(bad(|p| p.timeout_ms = 20_000).contains("timeout"));
        assert!(bad(|p| p.failure_threshold = 0).contains("threshold"));
        assert!(bad(|p| p.exec = vec![String::new()]).contains("empty"));
        assert!(bad(|p| p.exec = vec!["x".repeat(3000)]).contains("too long"));
        let both = |p: &mut Probe| {
            p.exec = vec!["true".into()];
            p.http_path = Some("/".into());
        };
        assert!(bad(both).contains("not both"));
        let exec = Probe::exec(vec!["cat".into(), "/tmp/ok".into()]);
        assert!(exec.validate().is_ok());
        assert_eq!(exec.describe(), "exec cat /tmp/ok");
    }
}
