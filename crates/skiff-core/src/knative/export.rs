//! A skiff service (its latest revision's spec and its traffic) as a Knative Service
//! document that `skiff apply` turns back into the same state. Settings at skiff's
//! defaults are left out. Pure conversion.

use super::annotation as a;
use super::duration_text::format_ms;
use super::model::{self, Service, API_VERSION, KIND};
use crate::{
    Probe, SecretTarget, SecretUse, SecretVersionRef, ServiceSpec, TrafficTarget, UseSource,
};
use std::collections::BTreeMap;

/// The document for service `name`. Knative counts probe periods in whole seconds:
/// shorter ones are rounded up, and each rounding is reported in the returned notes.
pub fn document(
    name: &str,
    spec: &ServiceSpec,
    traffic: &[TrafficTarget],
) -> (Service, Vec<String>) {
    let defaults = ServiceSpec::new(spec.image.clone());
    let mut notes = Vec::new();
    let mut container = model::Container {
        image: spec.image.clone(),
        command: (!spec.entrypoint.is_empty()).then(|| spec.entrypoint.clone()),
        args: (!spec.command.is_empty()).then(|| spec.command.clone()),
        working_dir: spec.working_dir.clone(),
        security_context: security_context(spec),
        env: spec
            .env
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                model::EnvVar {
                    name: k.to_owned(),
                    value: v.to_owned(),
                    value_from: None,
                }
            })
            .chain(spec.secrets.iter().filter_map(secret_key_ref))
            .collect(),
        env_from: spec.secrets.iter().filter_map(secret_env_from).collect(),
        ..Default::default()
    };
    if spec.port != defaults.port {
        container.ports = vec![model::Port {
            container_port: spec.port,
            name: None,
            protocol: None,
        }];
    }
    let mut limits = BTreeMap::new();
    if spec.memory_bytes != defaults.memory_bytes {
        limits.insert(
            "memory".into(),
            model::Quantity::Text(memory_text(spec.memory_bytes)),
        );
    }
    if spec.cpu_millis != defaults.cpu_millis {
        limits.insert(
            "cpu".into(),
            model::Quantity::Text(cpu_text(spec.cpu_millis)),
        );
    }
    if !limits.is_empty() {
        container.resources = Some(model::Resources {
            limits,
            requests: BTreeMap::new(),
        });
    }
    {
        container.startup_probe = spec.startup_probe.as_ref().map(|path| model::Probe {
            http_get: Some(http_get(path)),
            ..Default::default()
        });
    }
    container.readiness_probe = spec
        .readiness_probe
        .as_ref()
        .map(|p| probe(p, "readiness", &mut notes));
    container.liveness_probe = spec
        .liveness_probe
        .as_ref()
        .map(|p| probe(p, "liveness", &mut notes));
    let (volumes, mounts): (Vec<_>, Vec<_>) = spec
        .secrets
        .iter()
        .enumerate()
        .filter_map(|(n, u)| secret_volume(u, n))
        .unzip();
    container.volume_mounts = mounts;
    let mut revision = model::RevisionSpec {
        containers: vec![container],
        volumes,
        host_users: spec.host_users.then_some(true),
        ..Default::default()
    };
    if spec.concurrency != defaults.concurrency {
        revision.container_concurrency = Some(spec.concurrency);
    }
    if spec.timeout_ms != defaults.timeout_ms {
        revision.timeout_seconds = Some(spec.timeout_ms.div_ceil(1000));
        if !spec.timeout_ms.is_multiple_of(1000) {
            notes.push(format!(
                "timeout {} written as {}s (Knative counts whole seconds)",
                format_ms(spec.timeout_ms),
                spec.timeout_ms.div_ceil(1000)
            ));
        }
    }
    let template = model::Template {
        metadata: model::TemplateMeta {
            annotations: annotations(spec, &defaults),
            ..Default::default()
        },
        spec: revision,
    };
    let traffic = (traffic != crate::default_traffic().as_slice()).then(|| {
        traffic
            .iter()
            .map(|t| model::Traffic {
                tag: t.tag.clone(),
                revision_name: t.revision.clone(),
                latest_revision: t.revision.is_none().then_some(true),
                percent: Some(t.percent),
            })
            .collect()
    });
    let doc = Service {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: model::ServiceMeta {
            name: name.to_owned(),
            labels: if spec.allow_unauthenticated {
                BTreeMap::new()
            } else {
                BTreeMap::from([(a::VISIBILITY.into(), a::CLUSTER_LOCAL.into())])
            },
            ..Default::default()
        },
        spec: model::ServiceBody { template, traffic },
        status: None,
    };
    (doc, notes)
}

fn http_get(path: &str) -> model::HttpGet {
    model::HttpGet {
        path: path.to_owned(),
        port: None,
        scheme: None,
    }
}

fn seconds(ms: u64, what: &str, notes: &mut Vec<String>) -> u64 {
    let s = ms.div_ceil(1000).max(1);
    if s * 1000 != ms {
        notes.push(format!(
            "{what} {} written as {s}s (Knative counts whole seconds)",
            format_ms(ms)
        ));
    }
    s
}

fn probe(p: &Probe, kind: &str, notes: &mut Vec<String>) -> model::Probe {
    let defaults = Probe::new(None);
    let mut out = model::Probe {
        http_get: p.http_path.as_deref().map(http_get),
        tcp_socket: (p.http_path.is_none() && !p.is_exec()).then(model::TcpSocket::default),
        exec: p.is_exec().then(|| model::ExecAction {
            command: p.exec.clone(),
        }),
        ..Default::default()
    };
    if p.period_ms != defaults.period_ms {
        out.period_seconds = Some(seconds(p.period_ms, &format!("{kind} period"), notes));
    }
    if p.timeout_ms != defaults.timeout_ms {
        out.timeout_seconds = Some(seconds(p.timeout_ms, &format!("{kind} timeout"), notes));
    }
    if p.failure_threshold != defaults.failure_threshold {
        out.failure_threshold = Some(p.failure_threshold);
    }
    if p.initial_delay_ms != defaults.initial_delay_ms {
        out.initial_delay_seconds = Some(p.initial_delay_ms.div_ceil(1000));
    }
    out
}

/// A user given as `uid` or `uid:gid`, as numbers.
fn numeric_user(user: &str) -> Option<(u32, Option<u32>)> {
    match user.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, Some(g.parse().ok()?))),
        None => Some((user.parse().ok()?, None)),
    }
}

/// The container's securityContext for what the spec sets (a user by name goes in the
/// `skiff.dev/user` annotation instead).
fn security_context(spec: &ServiceSpec) -> Option<model::SecurityContext> {
    let (uid, gid) = spec.user.as_deref().and_then(numeric_user).unzip();
    let sc = model::SecurityContext {
        run_as_user: uid,
        run_as_group: gid.flatten(),
        run_as_non_root: spec.run_as_non_root.then_some(true),
        read_only_root_filesystem: spec.read_only.then_some(true),
        capabilities: (!spec.cap_drop.is_empty()).then(|| model::Capabilities {
            add: Vec::new(),
            drop: spec.cap_drop.clone(),
        }),
        ..Default::default()
    };
    let empty = sc.run_as_user.is_none()
        && sc.run_as_non_root.is_none()
        && sc.read_only_root_filesystem.is_none()
        && sc.capabilities.is_none();
    (!empty).then_some(sc)
}

/// Whether Knative can say secret use `u` (the rest go in the `skiff.dev/secrets`
/// annotation): uses of the latest version, as a variable of a key, every key as
/// variables, a directory, or one key as a file.
fn knative_says(u: &SecretUse) -> bool {
    secret_key_ref(u).is_some() || secret_env_from(u).is_some() || secret_volume(u, 0).is_some()
}

/// `envFrom[].secretRef` for a use of every key as variables.
fn secret_env_from(u: &SecretUse) -> Option<model::EnvFromSource> {
    let (SecretTarget::EnvAll(prefix), SecretVersionRef::Latest) = (&u.target, u.version) else {
        return None;
    };
    let named = model::NameRef {
        name: u.secret.clone(),
        optional: None,
    };
    let config_map = u.from == UseSource::ConfigMap;
    let (secret_ref, config_map_ref) = if config_map {
        (None, Some(named))
    } else {
        (Some(named), None)
    };
    Some(model::EnvFromSource {
        prefix: (!prefix.is_empty()).then(|| prefix.clone()),
        secret_ref,
        config_map_ref,
    })
}

/// A secret volume (named `secret-N`) and its mount, for a use as files.
fn secret_volume(u: &SecretUse, n: usize) -> Option<(model::Volume, model::VolumeMount)> {
    if u.version != SecretVersionRef::Latest {
        return None;
    }
    let (dir, items) = match (&u.target, &u.key) {
        (SecretTarget::Dir(dir), None) => (dir.clone(), Vec::new()),
        (SecretTarget::File(path), Some(key)) => {
            let (dir, file) = path.rsplit_once('/')?;
            let item = model::KeyToPath {
                key: key.clone(),
                path: file.to_owned(),
                mode: None,
            };
            (dir.to_owned(), vec![item])
        }
        _ => return None,
    };
    let (name, secret, config_map) = match u.from {
        UseSource::Secret => (
            format!("secret-{n}"),
            Some(model::SecretVolumeSource {
                secret_name: u.secret.clone(),
                items,
                default_mode: None,
                optional: None,
            }),
            None,
        ),
        UseSource::ConfigMap => (
            format!("configmap-{n}"),
            None,
            Some(model::ConfigMapVolumeSource {
                name: u.secret.clone(),
                items,
                default_mode: None,
                optional: None,
            }),
        ),
    };
    let volume = model::Volume {
        name: name.clone(),
        secret,
        config_map,
        other: BTreeMap::new(),
    };
    let mount = model::VolumeMount {
        name,
        mount_path: dir,
        read_only: Some(true),
        sub_path: None,
    };
    Some((volume, mount))
}

/// A secret use as Knative says it, when it can: a key of the latest version, as an
/// environment variable.
fn secret_key_ref(u: &SecretUse) -> Option<model::EnvVar> {
    let (SecretTarget::Env(name), Some(key), SecretVersionRef::Latest) =
        (&u.target, &u.key, u.version)
    else {
        return None;
    };
    let selector = model::KeySelector {
        name: u.secret.clone(),
        key: key.clone(),
        optional: None,
    };
    let source = match u.from {
        UseSource::Secret => model::EnvVarSource {
            secret_key_ref: Some(selector),
            ..Default::default()
        },
        UseSource::ConfigMap => model::EnvVarSource {
            config_map_key_ref: Some(selector),
            ..Default::default()
        },
    };
    Some(model::EnvVar {
        name: name.clone(),
        value: String::new(),
        value_from: Some(source),
    })
}

fn annotations(spec: &ServiceSpec, defaults: &ServiceSpec) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        out.insert(key.to_owned(), value);
    };
    if spec.min_instances != defaults.min_instances {
        put(a::MIN_SCALE, spec.min_instances.to_string());
    }
    if spec.max_instances != defaults.max_instances {
        put(a::MAX_SCALE, spec.max_instances.to_string());
    }
    if spec.idle_timeout_ms != defaults.idle_timeout_ms {
        put(a::RETENTION, format_ms(spec.idle_timeout_ms));
    }
    if spec.cpu_throttling {
        put(a::CPU_THROTTLING, "true".into());
    }
    if !spec.init {
        put(a::INIT, "false".into());
    }
    if !spec.egress.is_default() {
        put(a::EGRESS, spec.egress.to_string());
    }
    let unsaid: Vec<String> = spec
        .secrets
        .iter()
        .filter(|u| !knative_says(u))
        .map(ToString::to_string)
        .collect();
    if !unsaid.is_empty() {
        put(a::SECRETS, unsaid.join(","));
    }
    if !spec.allow_unauthenticated {
        put(a::ALLOWED_CALLERS, spec.allowed_callers.join(","));
    }
    let d = &spec.delivery;
    if let Some(n) = d.retries {
        put(a::RETRIES, n.to_string());
    }
    if let Some(p) = &d.backoff_policy {
        put(a::BACKOFF_POLICY, p.clone());
    }
    if let Some(ms) = d.backoff_delay_ms {
        put(a::BACKOFF_DELAY, format_ms(ms));
    }
    if let Some(ms) = d.timeout_ms {
        put(a::DELIVERY_TIMEOUT, format_ms(ms));
    }
    if let Some(sink) = &d.dead_letter {
        put(a::DEAD_LETTER, sink.clone());
    }
    if let Some(n) = d.max_in_flight {
        put(a::MAX_IN_FLIGHT, n.to_string());
    }
    if let Some(n) = d.max_per_second {
        put(a::MAX_PER_SECOND, n.to_string());
    }
    if let Some(ms) = d.max_age_ms {
        put(a::MAX_AGE, format_ms(ms));
    }
    if !spec.egress_allow.is_empty() {
        put(
            a::EGRESS_ALLOW,
            crate::egress_rules_text(&spec.egress_allow),
        );
    }
    if let Some(user) = spec.user.as_ref().filter(|u| numeric_user(u).is_none()) {
        put(a::USER, user.clone());
    }
    let s = &spec.autoscaling;
    let number = |n: f64| n.to_string();
    if let Some(v) = &s.metric {
        put(a::METRIC, v.clone());
    }
    let numbers = [
        (a::TARGET, s.target),
        (a::TARGET_UTILIZATION, s.target_utilization_percentage),
        (a::PANIC_WINDOW, s.panic_window_percentage),
        (a::PANIC_THRESHOLD, s.panic_threshold_percentage),
        (a::SCALE_UP_RATE, s.max_scale_up_rate),
        (a::SCALE_DOWN_RATE, s.max_scale_down_rate),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            put(key, number(v));
        }
    }
    if let Some(n) = s.initial_scale {
        put(a::INITIAL_SCALE, n.to_string());
    }
    if let Some(ms) = s.window_ms {
        put(a::WINDOW, format_ms(ms));
    }
    if let Some(ms) = s.scale_to_zero_grace_ms {
        put(a::ZERO_GRACE, format_ms(ms));
    }
    out
}

fn memory_text(bytes: u64) -> String {
    for (unit, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn cpu_text(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}
