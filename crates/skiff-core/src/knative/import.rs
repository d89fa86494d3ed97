//! A Knative Service document to a skiff service: its spec and traffic. Everything skiff
//! cannot honour is an error naming the field; everything it may safely ignore is a
//! warning. Pure conversion: it must not talk to the daemon.

use super::model::{self, PortRef, Service, API_VERSION, KIND};
use super::{annotation as a, duration_text};
use crate::{parse_cpu_millis, parse_memory_bytes, Probe, SecretUse, ServiceSpec, TrafficTarget};
use std::collections::BTreeMap;

/// A service as a document describes it.
#[derive(Debug)]
pub struct Imported {
    pub name: String,
    pub spec: ServiceSpec,
    pub traffic: Vec<TrafficTarget>,
    /// The revision's name, when the document chose one.
    pub revision_name: Option<String>,
    pub warnings: Vec<String>,
}

type Result<T> = std::result::Result<T, String>;

/// Converts one document.
pub fn service(doc: Service) -> Result<Imported> {
    if doc.api_version != API_VERSION || doc.kind != KIND {
        return Err(format!(
            "apiVersion/kind: {}/{} is not a Knative Service (want {API_VERSION}/{KIND})",
            doc.api_version, doc.kind
        ));
    }
    let name = doc.metadata.name.clone();
    let mut warnings = Vec::new();
    let mut ignore = |field: String| warnings.push(format!("{field}: ignored"));
    if let Some(ns) = &doc.metadata.namespace {
        if ns != "default" {
            ignore(format!(
                "metadata.namespace {ns:?} (skiff has no namespaces)"
            ));
        }
    }
    let mut private = false;
    for (key, value) in &doc.metadata.labels {
        match (key.as_str(), value.as_str()) {
            (a::VISIBILITY, a::CLUSTER_LOCAL) => private = true,
            (a::VISIBILITY, other) => {
                return Err(format!(
                    "metadata.labels[{key:?}]: {other:?} is not a visibility skiff knows \
                     (cluster-local, or leave the label out for a public service)"
                ))
            }
            _ => ignore(format!("metadata.labels[{key:?}]")),
        }
    }
    for key in doc.metadata.annotations.keys() {
        ignore(format!("metadata.annotations[{key:?}]"));
    }
    for (key, value) in &doc.metadata.other {
        match value.as_object() {
            // Name each annotation or label, so it is clear which ones do nothing here.
            Some(map) if key == "annotations" || key == "labels" => {
                for inner in map.keys() {
                    ignore(format!("metadata.{key}[{inner:?}]"));
                }
            }
            _ => ignore(format!("metadata.{key}")),
        }
    }
    if doc.status.is_some() {
        ignore("status".into());
    }
    let template = doc.spec.template;
    let revision_name = template.metadata.name.clone();
    if let Some(n) = &revision_name {
        crate::validate_revision_name(&name, n)
            .map_err(|e| format!("spec.template.metadata.name: {e}"))?;
    }
    for key in template.metadata.other.keys() {
        ignore(format!("spec.template.metadata.{key}"));
    }
    let rs = template.spec;
    if rs.service_account_name.is_some() {
        ignore("spec.template.spec.serviceAccountName".into());
    }
    if rs.enable_service_links.is_some() {
        ignore("spec.template.spec.enableServiceLinks".into());
    }
    let volumes = rs.volumes;
    let [container] = <[model::Container; 1]>::try_from(rs.containers).map_err(|c| {
        format!(
            "spec.template.spec.containers: skiff runs one container per revision, found {}",
            c.len()
        )
    })?;
    let at = "spec.template.spec.containers[0]";
    for (field, value) in [
        ("imagePullPolicy", &container.image_pull_policy),
        (
            "terminationMessagePath",
            &container.termination_message_path,
        ),
        (
            "terminationMessagePolicy",
            &container.termination_message_policy,
        ),
    ] {
        if value.is_some() {
            ignore(format!("{at}.{field}"));
        }
    }
    let mut spec = ServiceSpec::new(container.image.clone());
    spec.host_users = rs.host_users.unwrap_or(false);
    if let Some(n) = rs.container_concurrency {
        spec.concurrency = n;
    }
    if let Some(s) = rs.timeout_seconds {
        spec.timeout_ms = s.saturating_mul(1000);
    }
    spec.entrypoint = container.command.clone().unwrap_or_default();
    spec.command = container.args.clone().unwrap_or_default();
    spec.working_dir = container.working_dir.clone();
    if let Some(sc) = &container.security_context {
        security_context(sc, &mut spec)?;
    }
    for (i, e) in container.env.iter().enumerate() {
        match &e.value_from {
            None => spec.env.push(format!("{}={}", e.name, e.value)),
            Some(source) => spec
                .secrets
                .push(secret_env(e, source, &format!("{at}.env[{i}]"))?),
        }
    }
    for (i, source) in container.env_from.iter().enumerate() {
        spec.secrets
            .push(secret_env_from(source, &format!("{at}.envFrom[{i}]"))?);
    }
    spec.secrets.extend(secret_volumes(
        &container.volume_mounts,
        &volumes,
        at,
        &mut ignore,
    )?);
    let port_names = ports(&container, &mut spec)?;
    if let Some(r) = &container.resources {
        resources(r, &mut spec, &mut ignore)?;
    }
    let probe_port = |p: &Option<PortRef>, field: &str| -> Result<()> {
        match p {
            None => Ok(()),
            Some(PortRef::Number(n)) if *n == spec.port => Ok(()),
            Some(PortRef::Name(n)) if port_names.contains(n) => Ok(()),
            Some(other) => Err(format!(
                "{at}.{field}.port {other:?}: skiff probes the container's port ({})",
                spec.port
            )),
        }
    };
    if let Some(p) = &container.startup_probe {
        probe_port(&probe_target_port(p), "startupProbe")?;
        spec.startup_probe = probe(p, &format!("{at}.startupProbe"))?.http_path;
        if p.period_seconds.is_some() || p.failure_threshold.is_some() {
            ignore(format!(
                "{at}.startupProbe periodSeconds/failureThreshold (skiff polls every 50 ms for up to 240 s)"
            ));
        }
    }
    if let Some(p) = &container.readiness_probe {
        probe_port(&probe_target_port(p), "readinessProbe")?;
        spec.readiness_probe = Some(probe(p, &format!("{at}.readinessProbe"))?);
    }
    if let Some(p) = &container.liveness_probe {
        probe_port(&probe_target_port(p), "livenessProbe")?;
        spec.liveness_probe = Some(probe(p, &format!("{at}.livenessProbe"))?);
    }
    annotations(&template.metadata.annotations, &mut spec, &mut ignore)?;
    if private {
        spec.allow_unauthenticated = false;
        // Knative's cluster-local: callable from inside, by every service, unless the
        // document names which.
        if !template
            .metadata
            .annotations
            .contains_key(a::ALLOWED_CALLERS)
        {
            spec.allowed_callers = vec!["*".into()];
        }
    }
    let traffic = match doc.spec.traffic {
        None => crate::default_traffic(),
        Some(t) => traffic(&t)?,
    };
    spec.validate()
        .map_err(|e| format!("the revision it describes: {e}"))?;
    Ok(Imported {
        name,
        spec,
        traffic,
        revision_name,
        warnings,
    })
}

/// The container's port (one at most); returns the port names probes may use.
fn ports(c: &model::Container, spec: &mut ServiceSpec) -> Result<Vec<String>> {
    let at = "spec.template.spec.containers[0].ports";
    match c.ports.as_slice() {
        [] => Ok(Vec::new()),
        [p] => {
            match p.name.as_deref() {
                None | Some("http1") => {}
                Some("h2c") => {
                    return Err(format!(
                        "{at}[0].name \"h2c\": skiff speaks HTTP/1.1 to instances (HTTP/2 \
                         cleartext is not supported yet); name the port http1 or leave the \
                         name out"
                    ))
                }
                Some(other) => {
                    return Err(format!(
                        "{at}[0].name {other:?}: Knative names the serving port http1 (or \
                         h2c); leave the name out for http1"
                    ))
                }
            }
            if let Some(proto) = p.protocol.as_deref().filter(|p| *p != "TCP") {
                return Err(format!("{at}[0].protocol {proto:?}: only TCP"));
            }
            spec.port = p.container_port;
            Ok(p.name.iter().cloned().collect())
        }
        more => Err(format!("{at}: one port only, found {}", more.len())),
    }
}

fn resources(
    r: &model::Resources,
    spec: &mut ServiceSpec,
    ignore: &mut impl FnMut(String),
) -> Result<()> {
    let at = "spec.template.spec.containers[0].resources";
    for (key, q) in &r.limits {
        let text = q.text();
        match key.as_str() {
            "memory" => {
                spec.memory_bytes =
                    parse_memory_bytes(&text).map_err(|e| format!("{at}.limits.memory: {e}"))?
            }
            "cpu" => {
                spec.cpu_millis =
                    parse_cpu_millis(&text).map_err(|e| format!("{at}.limits.cpu: {e}"))?
            }
            other => {
                return Err(format!(
                    "{at}.limits.{other}: skiff limits memory and cpu only"
                ))
            }
        }
    }
    for key in r.requests.keys() {
        ignore(format!(
            "{at}.requests.{key} (skiff enforces limits; requests reserve nothing)"
        ));
    }
    Ok(())
}

fn probe_target_port(p: &model::Probe) -> Option<PortRef> {
    p.http_get
        .as_ref()
        .and_then(|h| h.port.clone())
        .or_else(|| p.tcp_socket.as_ref().and_then(|t| t.port.clone()))
}

fn probe(p: &model::Probe, at: &str) -> Result<Probe> {
    let (http_path, exec) = match (&p.http_get, &p.tcp_socket, &p.exec) {
        (None, None, Some(e)) if !e.command.is_empty() => (None, e.command.clone()),
        (None, None, Some(_)) => return Err(format!("{at}.exec.command: give a command")),
        (Some(h), None, None) => {
            if let Some(s) = h
                .scheme
                .as_deref()
                .filter(|s| !s.eq_ignore_ascii_case("HTTP"))
            {
                return Err(format!("{at}.httpGet.scheme {s:?}: only HTTP"));
            }
            (Some(h.path.clone()), Vec::new())
        }
        (None, Some(_), None) => (None, Vec::new()),
        _ => {
            return Err(format!(
                "{at}: give exactly one of httpGet, tcpSocket and exec"
            ))
        }
    };
    if let Some(n) = p.success_threshold.filter(|n| *n != 1) {
        return Err(format!(
            "{at}.successThreshold {n}: only 1 (as Kubernetes' liveness probes)"
        ));
    }
    let mut probe = Probe::new(http_path);
    probe.exec = exec;
    // Knative's `periodSeconds: 0` on a readiness probe asks for its aggressive probing
    // at startup, which skiff always does (every 50 ms until the first pass); the probe
    // then runs at the default period.
    let aggressive = p.period_seconds == Some(0) && at.ends_with("readinessProbe");
    if let Some(s) = p.period_seconds.filter(|_| !aggressive) {
        probe.period_ms = s.saturating_mul(1000);
    }
    if let Some(s) = p.timeout_seconds {
        probe.timeout_ms = s.saturating_mul(1000);
    }
    if let Some(n) = p.failure_threshold {
        probe.failure_threshold = n;
    }
    if let Some(s) = p.initial_delay_seconds {
        probe.initial_delay_ms = s.saturating_mul(1000);
    }
    probe.validate().map_err(|e| format!("{at}: {e}"))?;
    Ok(probe)
}

/// `env[].valueFrom.secretKeyRef {name, key}`: the key of the secret's latest version.
fn secret_env(e: &model::EnvVar, source: &model::EnvVarSource, at: &str) -> Result<SecretUse> {
    let refused = |what: &str, why: &str| Err(format!("{at}.valueFrom.{what}: {why}"));
    if source.field_ref.is_some() || source.resource_field_ref.is_some() {
        return refused("fieldRef", "the downward API has no skiff equivalent");
    }
    let (field, selector, text) = match (&source.secret_key_ref, &source.config_map_key_ref) {
        (Some(s), None) => (
            "secretKeyRef",
            s,
            format!("{}={}/{}:latest", e.name, s.name, s.key),
        ),
        (None, Some(c)) => (
            "configMapKeyRef",
            c,
            format!("{}=configmap:{}/{}", e.name, c.name, c.key),
        ),
        _ => return refused("", "give one of secretKeyRef and configMapKeyRef"),
    };
    if !e.value.is_empty() {
        return Err(format!("{at}: give value or valueFrom, not both"));
    }
    if selector.optional == Some(true) {
        return refused(
            &format!("{field}.optional"),
            "everything a service names must exist in skiff",
        );
    }
    text.parse()
        .map_err(|err: crate::SecretNameError| format!("{at}.valueFrom.{field}: {err}"))
}

/// `envFrom[].secretRef {name}` (with its `prefix`): every key of the secret's latest
/// version as a variable.
fn secret_env_from(source: &model::EnvFromSource, at: &str) -> Result<SecretUse> {
    let prefix = source.prefix.as_deref().unwrap_or("");
    let (named, text) = match (&source.secret_ref, &source.config_map_ref) {
        (Some(s), None) => (s, format!("{prefix}*={}:latest", s.name)),
        (None, Some(c)) => (c, format!("{prefix}*=configmap:{}", c.name)),
        _ => return Err(format!("{at}: give one of secretRef and configMapRef")),
    };
    if named.optional == Some(true) {
        return Err(format!(
            "{at}: optional: everything a service names must exist in skiff"
        ));
    }
    text.parse()
        .map_err(|e: crate::SecretNameError| format!("{at}: {e}"))
}

/// `volumeMounts[]` of `volumes[].secret`: each a directory with a file per key of the
/// secret's latest version, or with `items` of one key, that one file. Other volume
/// kinds, `subPath`, several `items` and optional secrets are refused by name.
fn secret_volumes(
    mounts: &[model::VolumeMount],
    volumes: &[model::Volume],
    at: &str,
    ignore: &mut impl FnMut(String),
) -> Result<Vec<SecretUse>> {
    let mut out = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        if let Some(kind) = v.other.keys().next() {
            return Err(format!(
                "spec.template.spec.volumes[{i}].{kind}: only secret volumes are supported"
            ));
        }
        if !mounts.iter().any(|m| m.name == v.name) {
            ignore(format!("spec.template.spec.volumes[{i}] (mounted nowhere)"));
        }
    }
    for (i, m) in mounts.iter().enumerate() {
        let at = format!("{at}.volumeMounts[{i}]");
        let Some(volume) = volumes.iter().find(|v| v.name == m.name) else {
            return Err(format!("{at}.name: no volume is named {:?}", m.name));
        };
        // What the files come from (`NAME:latest` or `configmap:NAME`), and how.
        let (source, items, modes, optional) = match (&volume.secret, &volume.config_map) {
            (Some(s), None) => (
                format!("{}:latest", s.secret_name),
                &s.items,
                s.default_mode,
                s.optional,
            ),
            (None, Some(c)) => (
                format!("configmap:{}", c.name),
                &c.items,
                c.default_mode,
                c.optional,
            ),
            _ => {
                return Err(format!(
                    "{at}: volume {:?} is neither a secret nor a config map",
                    m.name
                ))
            }
        };
        if m.sub_path.is_some() {
            return Err(format!("{at}.subPath: mount the whole secret"));
        }
        if optional == Some(true) {
            return Err(format!(
                "{at}: secret volume {:?} is optional; every secret a service names must exist in skiff",
                m.name
            ));
        }
        if m.read_only == Some(false) {
            ignore(format!("{at}.readOnly: false (secret files are read-only)"));
        }
        if modes.is_some() || items.iter().any(|k| k.mode.is_some()) {
            ignore(format!(
                "{at}: file modes (secret files are 0400, the app's own)"
            ));
        }
        let dir = m.mount_path.trim_end_matches('/');
        // `NAME:latest` or `configmap:NAME`, with a key put in after the name.
        let with_key = |key: &str| match source.strip_suffix(":latest") {
            Some(name) => format!("{name}/{key}:latest"),
            None => format!("{source}/{key}"),
        };
        let text = match items.as_slice() {
            [] => format!("{dir}/={source}"),
            [one] if !one.path.contains('/') => {
                format!("{dir}/{}={}", one.path, with_key(&one.key))
            }
            _ => {
                return Err(format!(
                    "{at}: items: skiff mounts every key under its own name, or one key as \
                     one file; leave items out, or give one"
                ))
            }
        };
        out.push(
            text.parse()
                .map_err(|e: crate::SecretNameError| format!("{at}: {e}"))?,
        );
    }
    Ok(out)
}

fn annotations(
    notes: &BTreeMap<String, String>,
    spec: &mut ServiceSpec,
    ignore: &mut impl FnMut(String),
) -> Result<()> {
    let scaling = &mut spec.autoscaling;
    for (key, value) in notes {
        let at = || format!("spec.template.metadata.annotations[{key:?}]");
        let boolean = || -> Result<bool> {
            match value.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("{}: {value:?} is not true or false", at())),
            }
        };
        let number = || -> Result<f64> {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| format!("{}: {value:?} is not a number", at()))
        };
        let whole = || -> Result<u32> {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("{}: {value:?} is not a whole number", at()))
        };
        let millis = || -> Result<u64> {
            duration_text::parse_ms(value).map_err(|e| format!("{}: {e}", at()))
        };
        match a::canonical(key) {
            a::CLASS if value == a::KPA => {}
            a::CLASS => {
                return Err(format!(
                    "{}: {value:?}: skiff's autoscaler is the KPA",
                    at()
                ))
            }
            a::MIN_SCALE => spec.min_instances = whole()?,
            a::MAX_SCALE => match whole()? {
                0 => return Err(format!("{}: 0 (unlimited): give skiff a cap", at())),
                n => spec.max_instances = n,
            },
            a::INITIAL_SCALE => scaling.initial_scale = Some(whole()?),
            a::TARGET => scaling.target = Some(number()?),
            a::TARGET_UTILIZATION => scaling.target_utilization_percentage = Some(number()?),
            a::METRIC => scaling.metric = Some(value.clone()),
            a::WINDOW => scaling.window_ms = Some(millis()?),
            a::PANIC_WINDOW => scaling.panic_window_percentage = Some(number()?),
            a::PANIC_THRESHOLD => scaling.panic_threshold_percentage = Some(number()?),
            a::RETENTION => spec.idle_timeout_ms = millis()?,
            a::SCALE_UP_RATE => scaling.max_scale_up_rate = Some(number()?),
            a::SCALE_DOWN_RATE => scaling.max_scale_down_rate = Some(number()?),
            a::ZERO_GRACE => scaling.scale_to_zero_grace_ms = Some(millis()?),
            a::CPU_THROTTLING => spec.cpu_throttling = boolean()?,
            a::INIT => spec.init = boolean()?,
            a::USER => spec.user = Some(value.clone()),
            a::IMAGE_DIGEST => {}
            a::EGRESS => spec.egress = value.parse().map_err(|e| format!("{}: {e}", at()))?,
            a::SECRETS => {
                for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let u = text.parse().map_err(|e| format!("{}: {e}", at()))?;
                    spec.secrets.push(u);
                }
            }
            a::RETRIES => spec.delivery.retries = Some(whole()?),
            a::BACKOFF_POLICY => spec.delivery.backoff_policy = Some(value.clone()),
            a::BACKOFF_DELAY => spec.delivery.backoff_delay_ms = Some(millis()?),
            a::DELIVERY_TIMEOUT => spec.delivery.timeout_ms = Some(millis()?),
            a::DEAD_LETTER => spec.delivery.dead_letter = Some(value.clone()),
            a::MAX_IN_FLIGHT => spec.delivery.max_in_flight = Some(whole()?),
            a::MAX_PER_SECOND => spec.delivery.max_per_second = Some(whole()?),
            a::MAX_AGE => spec.delivery.max_age_ms = Some(millis()?),
            a::ALLOWED_CALLERS => {
                spec.allowed_callers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            a::EGRESS_ALLOW => {
                spec.egress_allow =
                    crate::parse_egress_rules(value).map_err(|e| format!("{}: {e}", at()))?
            }
            key if a::REFUSED_EGRESS.iter().any(|(k, _)| *k == key) => {
                let (_, instead) = a::REFUSED_EGRESS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .expect("matched above");
                return Err(format!("{}: not supported: {instead}", at()));
            }
            other if other.starts_with(a::AUTOSCALING_PREFIX) => {
                return Err(format!(
                    "{}: skiff does not support this autoscaling knob",
                    at()
                ))
            }
            _ => ignore(at()),
        }
    }
    Ok(())
}

/// The container's `securityContext`: the user and group, `runAsNonRoot` and a read-only
/// root are honoured; no privilege escalation and the runtime's default seccomp profile
/// are what skiff always does; capabilities may be dropped, and added only where skiff's
/// default set has them already.
fn security_context(sc: &model::SecurityContext, spec: &mut ServiceSpec) -> Result<()> {
    let at = "spec.template.spec.containers[0].securityContext";
    spec.user = match (sc.run_as_user, sc.run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(_)) => {
            return Err(format!(
                "{at}.runAsGroup without runAsUser: give runAsUser too (skiff sets both)"
            ))
        }
        (None, None) => spec.user.take(),
    };
    spec.run_as_non_root = sc.run_as_non_root.unwrap_or(false);
    spec.read_only = sc.read_only_root_filesystem.unwrap_or(false);
    if sc.allow_privilege_escalation == Some(true) {
        return Err(format!(
            "{at}.allowPrivilegeEscalation true: skiff always sets no_new_privs"
        ));
    }
    if let Some(caps) = &sc.capabilities {
        for name in &caps.add {
            match crate::canonical_capability(name) {
                Some(c) if crate::DEFAULT_CAPABILITIES.contains(&c.as_str()) => {}
                _ => {
                    return Err(format!(
                        "{at}.capabilities.add: {name:?}: instances cannot gain capabilities \
                         beyond skiff's default set ({})",
                        crate::DEFAULT_CAPABILITIES.join(", ")
                    ))
                }
            }
        }
        spec.cap_drop = caps
            .drop
            .iter()
            .map(|name| {
                crate::canonical_capability(name)
                    .ok_or_else(|| format!("{at}.capabilities.drop: {name:?} is not a capability"))
            })
            .collect::<Result<_>>()?;
    }
    if let Some(profile) = &sc.seccomp_profile {
        if profile.get("type").and_then(|t| t.as_str()) != Some("RuntimeDefault") {
            return Err(format!(
                "{at}.seccompProfile: skiff applies its own filter (RuntimeDefault) only"
            ));
        }
    }
    Ok(())
}

fn traffic(entries: &[model::Traffic]) -> Result<Vec<TrafficTarget>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("spec.traffic[{i}]");
            let revision = match (t.latest_revision, &t.revision_name) {
                (Some(true), None) => None,
                (Some(false) | None, Some(rev)) => Some(rev.clone()),
                (None | Some(false), None) => {
                    return Err(format!("{at}: give revisionName or latestRevision: true"))
                }
                (Some(true), Some(_)) => {
                    return Err(format!("{at}: revisionName with latestRevision: true"))
                }
            };
            Ok(TrafficTarget {
                revision,
                percent: t.percent.unwrap_or(0),
                tag: t.tag.clone(),
            })
        })
        .collect()
}
