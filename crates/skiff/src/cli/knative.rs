//! `skiff apply -f FILE` and `skiff export NAME`: Knative Service documents in and out,
//! through the daemon's API. Applying a document whose revision template matches the
//! service's latest revision makes no new revision (as Knative does); only a changed
//! traffic block is then sent.

use super::client::Client;
use super::output::{self, Format};
use anyhow::Context;
use clap::Args;
use hyper::Method;
use skiff_control::documents::{
    Deployed, ServiceDetail, SubscriptionDetail, TopicDetail, TriggerWrite,
};
use skiff_core::knative;
use skiff_core::knative::eventing::{self, Eventing};
use std::path::PathBuf;

#[derive(Args)]
pub struct ApplyArgs {
    /// A YAML file of Knative documents (`-` for standard input): Services, and
    /// PingSources, Brokers and Triggers.
    #[arg(long = "filename", short = 'f')]
    file: PathBuf,
}

/// What applying one document did.
#[derive(serde::Serialize)]
struct Applied {
    service: String,
    /// The revision created, if the template changed.
    revision: Option<String>,
    traffic_changed: bool,
    warnings: Vec<String>,
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading standard input");
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// One document, converted.
enum Doc {
    Service(Box<knative::Imported>),
    Eventing(Box<eventing::ImportedTrigger>),
}

/// Converts every document of `text` before anything is applied: Knative Services, and
/// the eventing kinds (PingSource, Broker, Trigger).
fn convert(shown: &str, text: &str) -> anyhow::Result<Vec<Doc>> {
    let values = knative::parse_values(text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    anyhow::ensure!(!values.is_empty(), "{shown}: no documents");
    let iso = |t: &str| -> Result<u64, String> {
        skiff_events::parse_duration(t)
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
            .map_err(|e| e.to_string())
    };
    let eventing =
        eventing::import_all(&values, &iso).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let all_services = eventing.iter().all(Option::is_none);
    // Services alone are read typed from the text, so errors keep their line numbers.
    let services: Vec<knative::model::Service> = if all_services {
        knative::parse(text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?
    } else {
        values
            .iter()
            .zip(&eventing)
            .filter(|(_, e)| e.is_none())
            .map(|(v, _)| serde_json::from_value(v.clone()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{shown}: a Service: {e}"))?
    };
    let mut services = services.into_iter();
    let mut docs = Vec::new();
    for (i, converted) in eventing.into_iter().enumerate() {
        match converted {
            Some(e) => docs.push(Doc::Eventing(Box::new(e))),
            None => {
                let doc = services.next().expect("one Service per such document");
                let name = doc.metadata.name.clone();
                let one = knative::import(doc).map_err(|e| {
                    anyhow::anyhow!("{shown}: document {} (service {name}): {e}", i + 1)
                })?;
                docs.push(Doc::Service(Box::new(one)));
            }
        }
    }
    Ok(docs)
}

pub fn apply(client: &Client, format: Format, a: ApplyArgs) -> anyhow::Result<()> {
    let shown = a.file.display().to_string();
    let text = read(&a.file)?;
    let docs = convert(&shown, &text)?;
    // Topics first, then services, then what delivers to them.
    let rank = |d: &Doc| match d {
        Doc::Eventing(e) if matches!(e.what, Eventing::Topic { .. }) => 0,
        Doc::Service(_) => 1,
        Doc::Eventing(_) => 2,
    };
    let mut docs = docs;
    docs.sort_by_key(rank);
    let mut results = Vec::new();
    let mut lines = Vec::new();
    for doc in docs {
        match doc {
            Doc::Service(one) => {
                for w in &one.warnings {
                    eprintln!("warning: {shown}: service {}: {w}", one.name);
                }
                let r = apply_one(client, &one)
                    .with_context(|| format!("{shown}: service {}", one.name))?;
                lines.push(match (&r.revision, r.traffic_changed) {
                    (Some(rev), _) => format!("service {}: revision {rev} created", r.service),
                    (None, true) => format!("service {}: traffic updated", r.service),
                    (None, false) => format!("service {}: unchanged", r.service),
                });
                results.push(serde_json::to_value(&r)?);
            }
            Doc::Eventing(e) => {
                let (kind, name) = e.what.label();
                for w in &e.warnings {
                    eprintln!("warning: {shown}: {kind} {name}: {w}");
                }
                let changed = apply_eventing(client, &e.what)
                    .with_context(|| format!("{shown}: {kind} {name}"))?;
                let verb = if changed { "applied" } else { "unchanged" };
                lines.push(format!("{kind} {name}: {verb}"));
                results.push(serde_json::json!({
                    "kind": kind, "name": name, "changed": changed, "warnings": e.warnings,
                }));
            }
        }
    }
    match format {
        Format::Json => output::json(&serde_json::Value::Array(results)),
        Format::Table => lines.iter().for_each(|l| println!("{l}")),
    }
    Ok(())
}

/// Makes or replaces a topic, schedule or subscription; whether it changed.
fn apply_eventing(client: &Client, what: &Eventing) -> anyhow::Result<bool> {
    let existing = |path: &str| -> anyhow::Result<Option<serde_json::Value>> {
        match client.call::<serde_json::Value>(Method::GET, path, None) {
            Ok(v) => Ok(Some(v)),
            Err(e) if super::client::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    };
    match what {
        Eventing::Topic { name } => {
            let topics: Vec<TopicDetail> = client.call(Method::GET, "/v1/topics", None)?;
            if topics.iter().any(|t| t.name == *name) {
                return Ok(false);
            }
            let _: TopicDetail = client.call(Method::PUT, &format!("/v1/topics/{name}"), None)?;
            Ok(true)
        }
        Eventing::Schedule { name, spec } => {
            let path = format!("/v1/schedules/{name}");
            let now = existing(&path)?;
            if now.is_some_and(|d| d["spec"] == serde_json::to_value(spec).unwrap_or_default()) {
                return Ok(false);
            }
            let body = serde_json::to_value(TriggerWrite { spec: spec.clone() })?;
            let _: serde_json::Value = client.call(Method::PUT, &path, Some(body))?;
            Ok(true)
        }
        Eventing::Subscription { name, spec } => {
            let list: Vec<SubscriptionDetail> =
                client.call(Method::GET, "/v1/subscriptions", None)?;
            if list.iter().any(|s| s.name == *name && s.spec == *spec) {
                return Ok(false);
            }
            let body = serde_json::to_value(TriggerWrite { spec: spec.clone() })?;
            let _: serde_json::Value = client.call(
                Method::PUT,
                &format!("/v1/subscriptions/{name}"),
                Some(body),
            )?;
            Ok(true)
        }
    }
}

fn apply_one(client: &Client, one: &knative::Imported) -> anyhow::Result<Applied> {
    let path = format!("/v1/services/{}", one.name);
    let existing = match client.call::<ServiceDetail>(Method::GET, &path, None) {
        Ok(d) => Some(d),
        Err(e) if super::client::is_not_found(&e) => None,
        Err(e) => return Err(e),
    };
    let mut applied = Applied {
        service: one.name.clone(),
        revision: None,
        traffic_changed: false,
        warnings: one.warnings.clone(),
    };
    if let Some(d) = existing.as_ref() {
        let same_name = |r: &skiff_control::documents::RevisionDetail| {
            one.revision_name.as_ref().is_none_or(|n| *n == r.name)
        };
        if d.revisions
            .first()
            .is_some_and(|r| r.spec == one.spec && same_name(r))
        {
            if super::traffic::current(d) != one.traffic {
                let _: ServiceDetail = client.call_at(
                    Method::PUT,
                    &format!("{path}/traffic"),
                    Some(serde_json::json!({ "traffic": one.traffic })),
                    Some(d.version),
                )?;
                applied.traffic_changed = true;
            }
            return Ok(applied);
        }
    }
    // The write holds only if the service is still as it was read: one changed or
    // removed since is refused with 409 (apply again), never silently overwritten or
    // brought back.
    let deployed: Deployed = client.call_at(
        Method::PUT,
        &path,
        Some(serde_json::json!({
            "spec": one.spec,
            "traffic": one.traffic,
            "revision_name": one.revision_name,
        })),
        existing.as_ref().map(|d| d.version),
    )?;
    applied.revision = Some(deployed.revision);
    applied.traffic_changed = existing.is_none_or(|d| super::traffic::current(&d) != one.traffic);
    Ok(applied)
}

pub fn export(client: &Client, format: Format, name: &str) -> anyhow::Result<()> {
    let d: ServiceDetail = client.call(Method::GET, &format!("/v1/services/{name}"), None)?;
    let latest = d
        .revisions
        .first()
        .ok_or_else(|| anyhow::anyhow!("service {name} has no revision"))?;
    let (mut doc, notes) = knative::document(name, &latest.spec, &super::traffic::current(&d));
    // What its tag resolved to, beside the tag (the image field keeps what was deployed).
    doc.spec.template.metadata.annotations.insert(
        knative::annotation::IMAGE_DIGEST.to_owned(),
        latest.image_digest.clone(),
    );
    // A name the user chose goes back into the template; a generated one does not.
    if latest.name != skiff_core::revision_name(name, latest.generation) {
        doc.spec.template.metadata.name = Some(latest.name.clone());
    }
    for n in notes {
        eprintln!("note: service {name}: {n}");
    }
    match format {
        Format::Json => output::json(&serde_json::to_value(&doc)?),
        Format::Table => print!(
            "{}",
            knative::to_yaml(&doc)
                .map_err(anyhow::Error::msg)
                .context("writing the service as YAML")?
        ),
    }
    Ok(())
}
