//! `skiff apply -f FILE` and `skiff export NAME`: Knative Service documents in and out,
//! through the daemon's API. Applying a document whose revision template matches the
//! service's latest revision makes no new revision (as Knative does); only a changed
//! traffic block is then sent.

use super::client::Client;
use super::output::{self, Format};
use anyhow::Context;
use clap::Args;
use hyper::Method;
use skiff_control::documents::{Deployed, ServiceDetail};
use skiff_core::knative;
use std::path::PathBuf;

#[derive(Args)]
pub struct ApplyArgs {
    /// A YAML file of Knative Service documents (`-` for standard input).
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

pub fn apply(client: &Client, format: Format, a: ApplyArgs) -> anyhow::Result<()> {
    let shown = a.file.display().to_string();
    let text = read(&a.file)?;
    let docs = knative::parse(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    anyhow::ensure!(!docs.is_empty(), "{shown}: no documents");
    // Every document is checked before anything is applied.
    let mut imported = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let name = doc.metadata.name.clone();
        let one = knative::import(doc)
            .map_err(|e| anyhow::anyhow!("{shown}: document {} (service {name}): {e}", i + 1))?;
        imported.push(one);
    }
    let mut results = Vec::new();
    for one in imported {
        for w in &one.warnings {
            eprintln!("warning: {shown}: service {}: {w}", one.name);
        }
        results.push(
            apply_one(client, &one).with_context(|| format!("{shown}: service {}", one.name))?,
        );
    }
    match format {
        Format::Json => output::json(&serde_json::to_value(&results)?),
        Format::Table => {
            for r in &results {
                match (&r.revision, r.traffic_changed) {
                    (Some(rev), _) => println!("service {}: revision {rev} created", r.service),
                    (None, true) => println!("service {}: traffic updated", r.service),
                    (None, false) => println!("service {}: unchanged", r.service),
                }
            }
        }
    }
    Ok(())
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
