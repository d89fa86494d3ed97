//! `skiff deploy | ls | describe | rm | logs`: services, through the daemon's API.
//!
//! A deploy of an existing service starts from its latest revision's settings and changes
//! only what the flags say (as `gcloud run deploy` does); `--image` is needed only the
//! first time. The flags travel as a patch that the daemon applies, so a removal between
//! reading and writing cannot be undone.

use super::client::Client;
use super::output::{self, Format};
use crate::launch::{parse_cpu, parse_duration, parse_memory};
use anyhow::Context as _;
use clap::Args;
use hyper::Method;
use skiff_control::documents::{Deployed, LogLine, ServiceDetail, ServiceSummary, UpdateRequest};
use skiff_core::{ProbePatch, SpecPatch};
use std::borrow::Cow;
use std::time::Duration;

#[derive(Args)]
pub struct DeployArgs {
    /// Service name (the host is NAME.<domain>).
    name: String,
    /// Image reference: name[:tag], digest, or digest prefix.
    #[arg(long)]
    image: Option<String>,
    /// Port the app listens on (its $PORT). Default 8080.
    #[arg(long)]
    port: Option<u16>,
    /// Environment KEY=VALUE set over the previous revision's (repeatable; other keys
    /// stay). Same as --update-env-vars.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Environment entries to set or change, comma-separated: K=V,K2=V2 (others stay).
    #[arg(long, value_name = "K=V,...", value_delimiter = ',')]
    update_env_vars: Vec<String>,
    /// Environment keys to remove, comma-separated.
    #[arg(long, value_name = "KEY,...", value_delimiter = ',')]
    remove_env_vars: Vec<String>,
    /// The whole environment, comma-separated: K=V,K2=V2 (replaces every entry; with no
    /// value, clears it). Does not go with the two above.
    #[arg(long, value_name = "K=V,...", value_delimiter = ',', num_args = 0..=1)]
    set_env_vars: Option<Vec<String>>,
    /// Secrets to give instances, comma-separated, replacing every secret use:
    /// ENV=SECRET[/KEY]:VERSION (a variable), PREFIX*=SECRET:VERSION (a variable per key),
    /// /PATH=SECRET[/KEY]:VERSION (a file), /DIR/=SECRET:VERSION (a file per key);
    /// VERSION is `latest` or a number. Taken when an instance starts; files follow
    /// `latest` while it runs.
    #[arg(long, value_name = "ENV=SECRET:VERSION,...", value_delimiter = ',', value_parser = parse_secret_use)]
    set_secrets: Option<Vec<skiff_core::SecretUse>>,
    /// Secret uses to set or change, comma-separated (others stay).
    #[arg(long, value_name = "ENV=SECRET:VERSION,...", value_delimiter = ',', value_parser = parse_secret_use)]
    update_secrets: Vec<skiff_core::SecretUse>,
    /// Secret uses to take out, by target (ENV, PREFIX*, /PATH or /DIR/), comma-separated.
    #[arg(long, value_name = "TARGET,...", value_delimiter = ',')]
    remove_secrets: Vec<String>,
    /// Take out every secret use.
    #[arg(long, conflicts_with_all = ["set_secrets", "update_secrets", "remove_secrets"])]
    clear_secrets: bool,
    /// The app's working directory (an absolute path); "" goes back to the image's.
    #[arg(long, value_name = "DIR")]
    working_dir: Option<String>,
    /// Memory limit (e.g. 256Mi). Default 512Mi.
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// CPU limit in cores (e.g. 1, 0.5, 250m). Default 1.
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<u64>,
    /// Requests one instance serves at once (0 = no limit). Default 80.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Instances kept running when idle. Default 0 (scale to zero).
    #[arg(long)]
    min_instances: Option<u32>,
    /// Cap on instances. Default 100.
    #[arg(long)]
    max_instances: Option<u32>,
    /// Time a request may take until its response starts. Default 300s.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Time without any request after which the last instance stops (scale to zero).
    /// Default 60s.
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// HTTP path that must answer 2xx/3xx before an instance takes requests.
    #[arg(long)]
    startup_probe: Option<String>,
    /// CPU only while serving: freeze an instance whenever it has no request in flight
    /// (Cloud Run's CPU throttling).
    #[arg(long, overrides_with = "no_cpu_throttling")]
    cpu_throttling: bool,
    /// Keep CPU for instances between requests (the default).
    #[arg(long, overrides_with = "cpu_throttling")]
    no_cpu_throttling: bool,
    /// Run the app under skiff's minimal init, which forwards signals to its process
    /// group and reaps zombies (the default).
    #[arg(long, overrides_with = "no_init")]
    init: bool,
    /// Run the app itself as PID 1.
    #[arg(long, overrides_with = "init")]
    no_init: bool,
    /// The user to run as (name, uid, uid:gid) instead of the image's; "" goes back to
    /// the image's.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Mount the root filesystem read-only (/tmp and /dev/shm stay writable).
    #[arg(long, overrides_with = "no_read_only")]
    read_only: bool,
    /// Mount the root filesystem writable (the default).
    #[arg(long, overrides_with = "read_only")]
    no_read_only: bool,
    /// Capabilities an instance running as root gives up (NET_BIND_SERVICE, CHOWN…, or
    /// ALL), comma-separated, replacing the list ('' drops none).
    #[arg(long, value_name = "CAPS", value_delimiter = ',')]
    cap_drop: Option<Vec<String>>,
    /// Whether instances reach public addresses through the host's NAT (all, the
    /// default) or nothing outside skiff (none). Other services and DNS stay reachable.
    #[arg(long, value_name = "all|none", value_parser = parse_egress_mode)]
    egress: Option<skiff_core::EgressMode>,
    /// Private destinations and host ports instances may reach, replacing the list:
    /// CIDR[:PORT] or host.skiff.internal:PORT, comma-separated ('' clears it).
    #[arg(long, value_name = "RULES", value_parser = parse_egress_rules)]
    egress_allow: Option<EgressRules>,
    /// Anyone may call the service through the ingress (the default).
    #[arg(long, overrides_with = "no_allow_unauthenticated")]
    allow_unauthenticated: bool,
    /// Make the service private: the ingress answers 403 unless the request bears a
    /// token that may invoke it (Authorization: Bearer …) or comes from an instance of
    /// a service named by --allowed-callers.
    #[arg(long, overrides_with = "allow_unauthenticated")]
    no_allow_unauthenticated: bool,
    /// Services whose instances may call this one when it is private, comma-separated,
    /// replacing the list ('*': every service; '' clears it).
    #[arg(long, value_name = "SERVICES", value_delimiter = ',')]
    allowed_callers: Option<Vec<String>>,
    #[command(flatten)]
    delivery: super::delivery::DeliveryArgs,
    /// Run with the host's user and group ids instead of a user namespace of the
    /// instance's own (for apps that need files owned by host ids).
    #[arg(long, overrides_with = "no_host_users")]
    host_users: bool,
    /// Run in a user namespace of its own, root inside an unprivileged id outside (the
    /// default where the kernel can).
    #[arg(long, overrides_with = "host_users")]
    no_host_users: bool,
    /// The new revision gets no traffic: the share that followed the latest revision
    /// stays pinned to the one serving now (try it at a --tag URL first).
    #[arg(long)]
    no_traffic: bool,
    /// Tag the new revision: it answers at TAG-NAME.<domain> (the tag moves from
    /// wherever it was).
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    scaling: ScalingArgs,
    /// Command replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

/// Readiness and liveness probes: `PATH` for an HTTP GET (2xx/3xx passes) or `tcp` for a
/// connect to the port. Unset ones keep the previous revision's.
#[derive(Args)]
struct ProbeArgs {
    /// Probe while serving (an HTTP path, tcp, or exec:COMMAND ARGS run inside the
    /// instance); failing takes the instance out of the rotation.
    #[arg(long, value_name = "PATH|tcp|exec:CMD")]
    readiness_probe: Option<String>,
    /// Time between readiness probes (default 10s).
    #[arg(long, value_parser = parse_duration)]
    readiness_period: Option<Duration>,
    /// Readiness failures in a row before the instance leaves the rotation (default 3).
    #[arg(long)]
    readiness_failures: Option<u32>,
    /// Probe while serving; failing restarts the instance.
    #[arg(long, value_name = "PATH|tcp|exec:CMD")]
    liveness_probe: Option<String>,
    /// Time between liveness probes (default 10s).
    #[arg(long, value_parser = parse_duration)]
    liveness_period: Option<Duration>,
    /// Liveness failures in a row before the instance is restarted (default 3).
    #[arg(long)]
    liveness_failures: Option<u32>,
}

impl ProbeArgs {
    fn patch(
        kind: &Option<String>,
        period: Option<Duration>,
        failures: Option<u32>,
    ) -> Option<ProbePatch> {
        let patch = ProbePatch {
            kind: kind.clone(),
            period_ms: period.map(|d| d.as_millis() as u64),
            failure_threshold: failures,
        };
        (patch != ProbePatch::default()).then_some(patch)
    }

    fn readiness(&self) -> Option<ProbePatch> {
        Self::patch(
            &self.readiness_probe,
            self.readiness_period,
            self.readiness_failures,
        )
    }

    fn liveness(&self) -> Option<ProbePatch> {
        Self::patch(
            &self.liveness_probe,
            self.liveness_period,
            self.liveness_failures,
        )
    }
}

/// Autoscaler knobs (Knative's `autoscaling.knative.dev/*`); unset ones keep the
/// previous revision's value, or the daemon's default.
#[derive(Args)]
struct ScalingArgs {
    /// What demand is measured in: concurrency (in flight + queued) or rps.
    #[arg(long, value_parser = ["concurrency", "rps"])]
    metric: Option<String>,
    /// Soft target per instance in the metric's unit (default: --concurrency, or 100
    /// when unlimited; 200 for rps).
    #[arg(long)]
    target: Option<f64>,
    /// Percentage of the target to aim for (default 70).
    #[arg(long)]
    target_utilization: Option<f64>,
    /// Stable window demand is averaged over (6s-1h, default 60s).
    #[arg(long, value_parser = parse_duration)]
    window: Option<Duration>,
    /// Panic window as a percentage of the stable window (default 10).
    #[arg(long)]
    panic_window_percentage: Option<f64>,
    /// Panic at this percentage of current capacity (default 200).
    #[arg(long)]
    panic_threshold: Option<f64>,
    /// Most the instance count may grow by in one decision, a factor (default 1000).
    #[arg(long)]
    max_scale_up_rate: Option<f64>,
    /// Most the instance count may shrink by in one step, a divisor (default 2).
    #[arg(long)]
    max_scale_down_rate: Option<f64>,
    /// Extra wait before the last instance stops once idle (default 0s).
    #[arg(long, value_parser = parse_duration)]
    scale_to_zero_grace: Option<Duration>,
    /// Instances a new revision starts with before the deploy returns (default 0).
    #[arg(long)]
    initial_instances: Option<u32>,
}

impl ScalingArgs {
    fn patch(&self) -> skiff_core::Autoscaling {
        let ms = |d: Duration| d.as_millis() as u64;
        skiff_core::Autoscaling {
            metric: self.metric.clone(),
            target: self.target,
            target_utilization_percentage: self.target_utilization,
            window_ms: self.window.map(ms),
            panic_window_percentage: self.panic_window_percentage,
            panic_threshold_percentage: self.panic_threshold,
            max_scale_up_rate: self.max_scale_up_rate,
            max_scale_down_rate: self.max_scale_down_rate,
            scale_to_zero_grace_ms: self.scale_to_zero_grace.map(ms),
            initial_scale: self.initial_instances,
        }
    }
}

/// A parsed `--egress-allow` list (a newtype: clap would take a bare Vec as many values).
#[derive(Clone)]
struct EgressRules(Vec<skiff_core::EgressRule>);

fn parse_egress_rules(text: &str) -> Result<EgressRules, String> {
    skiff_core::parse_egress_rules(text).map(EgressRules)
}

fn parse_secret_use(text: &str) -> Result<skiff_core::SecretUse, String> {
    text.parse()
        .map_err(|e: skiff_core::SecretNameError| e.to_string())
}

fn parse_egress_mode(text: &str) -> Result<skiff_core::EgressMode, String> {
    text.parse()
}

/// The changes the flags make; the daemon applies them to the latest revision's spec.
fn patch(a: &DeployArgs) -> SpecPatch {
    let ms = |d: Duration| d.as_millis() as u64;
    SpecPatch {
        image: a.image.clone(),
        port: a.port,
        env: a
            .set_env_vars
            .as_ref()
            .map(|all| all.iter().filter(|kv| !kv.is_empty()).cloned().collect()),
        update_env: a.env.iter().chain(&a.update_env_vars).cloned().collect(),
        remove_env: a.remove_env_vars.clone(),
        working_dir: a.working_dir.clone(),
        memory_bytes: a.memory,
        cpu_millis: a.cpu,
        concurrency: a.concurrency,
        min_instances: a.min_instances,
        max_instances: a.max_instances,
        timeout_ms: a.timeout.map(ms),
        idle_timeout_ms: a.idle_timeout.map(ms),
        startup_probe: a.startup_probe.clone(),
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        cpu_throttling: (a.cpu_throttling || a.no_cpu_throttling).then_some(a.cpu_throttling),
        init: (a.init || a.no_init).then_some(a.init),
        user: a.user.clone(),
        read_only: (a.read_only || a.no_read_only).then_some(a.read_only),
        cap_drop: a
            .cap_drop
            .as_ref()
            .map(|caps| caps.iter().filter(|c| !c.is_empty()).cloned().collect()),
        egress: a.egress,
        egress_allow: a.egress_allow.clone().map(|r| r.0),
        readiness_probe: a.probes.readiness(),
        liveness_probe: a.probes.liveness(),
        autoscaling: a.scaling.patch(),
        secrets: if a.clear_secrets {
            Some(Vec::new())
        } else {
            a.set_secrets.clone()
        },
        update_secrets: a.update_secrets.clone(),
        remove_secrets: a.remove_secrets.clone(),
        allow_unauthenticated: (a.allow_unauthenticated || a.no_allow_unauthenticated)
            .then_some(a.allow_unauthenticated),
        allowed_callers: a
            .allowed_callers
            .as_ref()
            .map(|all| all.iter().filter(|c| !c.is_empty()).cloned().collect()),
        host_users: (a.host_users || a.no_host_users).then_some(a.host_users),
        delivery: a.delivery.delivery(),
    }
}

pub fn deploy(client: &Client, format: Format, a: DeployArgs) -> anyhow::Result<()> {
    let request = UpdateRequest {
        patch: patch(&a),
        no_traffic: a.no_traffic,
        tag: a.tag.clone(),
    };
    let deployed: Deployed = client.call(
        Method::PATCH,
        &format!("/v1/services/{}", a.name),
        Some(serde_json::to_value(&request)?),
    )?;
    match format {
        Format::Json => output::json(&serde_json::to_value(&deployed)?),
        Format::Table if deployed.percent == 0 => println!(
            "Service {} revision {} is deployed and gets no traffic (traffic is pinned: \
             skiff traffic {} --to-latest moves it there)",
            deployed.service, deployed.revision, deployed.service
        ),
        Format::Table => println!(
            "Service {} revision {} is serving {}% of the traffic at {}",
            deployed.service, deployed.revision, deployed.percent, deployed.url
        ),
    }
    if let (Format::Table, Some(url)) = (format, &deployed.tag_url) {
        println!("Tagged: {url}");
    }
    Ok(())
}

/// A row of `skiff ls` read in place from the daemon's answer (its strings borrowed,
/// unless escaped): at ten thousand services, owned ones were forty thousand strings
/// allocated, copied into the table and freed.
#[derive(serde::Deserialize)]
struct ListedService<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
    #[serde(borrow)]
    serving_revision: Option<Cow<'a, str>>,
    ready_instances: u32,
    in_flight: u32,
    queued: u32,
}

pub fn list(client: &Client, format: Format) -> anyhow::Result<()> {
    let body = client.get_bytes("/v1/services")?;
    if format == Format::Json {
        let services: Vec<ServiceSummary> =
            serde_json::from_slice(&body).context("reading the daemon's answer")?;
        output::json(&serde_json::to_value(&services)?);
        return Ok(());
    }
    let services: Vec<ListedService<'_>> =
        serde_json::from_slice(&body).context("reading the daemon's answer")?;
    let rows: Vec<[Cow<'_, str>; 6]> = services
        .into_iter()
        .map(|s| {
            [
                s.name,
                s.url,
                s.serving_revision.unwrap_or(Cow::Borrowed("-")),
                s.ready_instances.to_string().into(),
                s.in_flight.to_string().into(),
                s.queued.to_string().into(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "URL", "REVISION", "READY", "IN-FLIGHT", "QUEUED"],
        &rows,
    );
    Ok(())
}

pub(crate) fn ago(unix: i64) -> String {
    let secs = skiff_control::unix_now().saturating_sub(unix).max(0);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

pub fn describe(client: &Client, format: Format, name: &str) -> anyhow::Result<()> {
    let d: ServiceDetail = client.call(Method::GET, &format!("/v1/services/{name}"), None)?;
    if format == Format::Json {
        output::json(&serde_json::to_value(&d)?);
        return Ok(());
    }
    println!("Service:   {}", d.name);
    println!("URL:       {}", d.url);
    println!(
        "Latest:    {}",
        d.serving_revision
            .as_deref()
            .unwrap_or("(nothing ready yet)")
    );
    let serving = d
        .revisions
        .iter()
        .find(|r| d.serving_revision.as_deref() == Some(r.name.as_str()));
    if let Some(r) = serving {
        println!("Access:    {}", access_text(&r.spec));
    }
    if let Some(c) = &d.invocations {
        let oldest = c
            .oldest_open_ms
            .map(|ms| format!(" (oldest accepted {})", ago(ms.div_euclid(1000))))
            .unwrap_or_default();
        println!(
            "Async:     {} pending, {} delivering{oldest}, {} delivered, {} dead",
            c.pending, c.delivering, c.delivered, c.dead
        );
    }
    let t = &d.triggers;
    if !t.schedules.is_empty() || !t.subscriptions.is_empty() {
        let mut all: Vec<String> = t
            .schedules
            .iter()
            .map(|s| format!("schedule/{s}"))
            .collect();
        all.extend(t.subscriptions.iter().map(|s| format!("subscription/{s}")));
        println!("Triggers:  {}", all.join(", "));
    }
    if !d.traffic.is_empty() {
        println!();
        super::traffic::table(&d.traffic);
    }
    println!();
    let rows: Vec<Vec<String>> = d
        .revisions
        .iter()
        .map(|r| {
            let s = &r.spec;
            vec![
                r.name.clone(),
                if r.percent > 0 || !r.tags.is_empty() {
                    let tags = r.tags.iter().map(|t| format!(" @{t}")).collect::<String>();
                    format!("{}%{tags}", r.percent)
                } else {
                    "-".into()
                },
                s.image.clone(),
                format!("{}Mi/{}m", s.memory_bytes >> 20, s.cpu_millis),
                s.concurrency.to_string(),
                format!("{}-{}", s.min_instances, s.max_instances),
                ago(r.created_at),
            ]
        })
        .collect();
    output::table(
        &[
            "REVISION",
            "TRAFFIC",
            "IMAGE",
            "MEM/CPU",
            "CONCURRENCY",
            "SCALE",
            "CREATED",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = d
        .instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.revision.clone(),
                i.state.clone(),
                ago(i.started_at),
                i.exit.clone().unwrap_or_else(|| match i.oom_kills {
                    Some(n) if n > 0 => format!("{n} process(es) killed for memory"),
                    _ => String::new(),
                }),
            ]
        })
        .collect();
    output::table(&["INSTANCE", "REVISION", "STATE", "STARTED", "EXIT"], &rows);
    for r in &d.revisions {
        if let Some(a) = &r.autoscaler {
            println!();
            println!(
                "Autoscaler ({}, {}): {} instances wanted, {} ready{}",
                r.name,
                ago(a.at),
                a.desired,
                a.ready,
                if a.panicking { ", panicking" } else { "" }
            );
            println!("  {}", a.reason);
        }
    }
    if let Some(f) = &d.last_failure {
        println!();
        println!("Last failure ({}, {}): {}", f.revision, ago(f.at), f.reason);
        for line in f.log_tail.lines() {
            println!("  | {line}");
        }
    }
    Ok(())
}

/// Who may call a service, as `describe` says it.
fn access_text(spec: &skiff_core::ServiceSpec) -> String {
    if spec.allow_unauthenticated {
        return "public (anyone may call)".into();
    }
    let callers = match spec.allowed_callers.as_slice() {
        [] => "no service".to_owned(),
        [all] if all == "*" => "every service".to_owned(),
        names => format!("services {}", names.join(", ")),
    };
    format!("private (invoker tokens, and {callers})")
}

pub fn remove(client: &Client, format: Format, name: &str) -> anyhow::Result<()> {
    let v: serde_json::Value =
        client.call(Method::DELETE, &format!("/v1/services/{name}"), None)?;
    match format {
        Format::Json => output::json(&v),
        Format::Table => println!("Service {name} removed"),
    }
    Ok(())
}

#[derive(Args)]
pub struct LogsArgs {
    /// Service name.
    name: String,
    /// Keep printing new lines as they are written.
    #[arg(long, short)]
    follow: bool,
    /// Only lines since this long ago (e.g. 10m, 30s) or this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
}

/// `--since` as an RFC 3339 UTC time.
fn since_time(s: &str) -> anyhow::Result<String> {
    if s.contains('T') {
        anyhow::ensure!(
            s.ends_with('Z'),
            "--since {s:?}: give a UTC time ending in Z, or a duration like 10m"
        );
        return Ok(s.to_owned());
    }
    let d = parse_duration(s).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = now.saturating_sub(d);
    Ok(skiff_sandbox::rfc3339(t.as_secs() as i64, t.subsec_nanos()))
}

pub fn logs(client: &Client, format: Format, a: LogsArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/services/{}/logs?follow={}", a.name, a.follow);
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={}", since_time(s)?));
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    client.lines(&path, |line| {
        if format == Format::Json {
            writeln!(out, "{line}")?;
        } else {
            let l: LogLine = serde_json::from_str(line)?;
            writeln!(out, "{} {} {}", l.time, l.instance, l.message)?;
        }
        out.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ListedService` names `ServiceSummary`'s fields again: a rename on either side
    /// must fail here, not in `skiff ls`.
    #[test]
    fn a_listed_service_reads_what_the_daemon_writes_and_borrows_its_strings() {
        let sent = vec![ServiceSummary {
            name: "web".into(),
            url: "http://web.localhost:8080/".into(),
            serving_revision: Some("web-00002".into()),
            latest_revision: Some("web-00003".into()),
            ready_instances: 2,
            in_flight: 5,
            queued: 1,
        }];
        let body = serde_json::to_vec(&sent).unwrap();
        let read: Vec<ListedService<'_>> = serde_json::from_slice(&body).unwrap();
        let s = &read[0];
        assert_eq!(
            (&*s.name, &*s.url, s.serving_revision.as_deref()),
            ("web", "http://web.localhost:8080/", Some("web-00002"))
        );
        assert_eq!((s.ready_instances, s.in_flight, s.queued), (2, 5, 1));
        assert!(matches!(s.name, Cow::Borrowed(_)), "read in place");
        // A string the daemon had to escape still reads, as a copy.
        let escaped = br#"[{"name":"a\"b","url":"u","serving_revision":null,"ready_instances":0,"in_flight":0,"queued":0}]"#;
        let read: Vec<ListedService<'_>> = serde_json::from_slice(escaped).unwrap();
        assert_eq!(
            (&*read[0].name, read[0].serving_revision.is_none()),
            ("a\"b", true)
        );
    }
}
