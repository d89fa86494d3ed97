//! `skiff secret`: make secrets, give them versions, list, disable and remove them. Values
//! go to the daemon and never come back: what is printed is names, versions and keys.

use super::client::Client;
use super::data::DataArgs;
use super::output::{self, Format};
use base64::Engine;
use clap::Subcommand;
use hyper::Method;
use skiff_control::documents::{SecretDetail, SecretSummary, SecretValue, SecretWrite};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Make a secret with its first version.
    Create {
        #[command(flatten)]
        data: DataArgs,
        /// A service it may be given to (repeat for more); without any, every service
        /// may use it. Fixed for the secret's life.
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Give a secret its next version (instances that follow `latest` get it).
    AddVersion(DataArgs),
    /// A secret's versions, newest first: state and keys, never values.
    Versions { name: String },
    /// List secrets.
    Ls,
    /// Remove a secret and every version of it.
    Rm { name: String },
    /// Disable a version: kept, but given to no instance.
    Disable { name: String, version: u32 },
    /// Enable a disabled version again.
    Enable { name: String, version: u32 },
}

/// The version's data as the API takes it (every value base64, so bytes go as they are).
fn write(a: &DataArgs) -> anyhow::Result<SecretWrite> {
    let data = a
        .entries()?
        .into_iter()
        .map(|(key, value)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            (key, SecretValue(encoded))
        })
        .collect();
    Ok(SecretWrite {
        data,
        ..Default::default()
    })
}

pub fn run(client: &Client, format: Format, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Create { data: a, services } => {
            let body = serde_json::to_value(SecretWrite {
                services,
                ..write(&a)?
            })?;
            let d: SecretDetail = client.call(Method::PUT, &path(&a.name), Some(body))?;
            show_written(format, &d, "created secret")
        }
        SecretCommand::AddVersion(a) => {
            let body = serde_json::to_value(write(&a)?)?;
            let d: SecretDetail = client.call(
                Method::POST,
                &format!("{}/versions", path(&a.name)),
                Some(body),
            )?;
            show_written(format, &d, "added version")
        }
        SecretCommand::Versions { name } => {
            let d: SecretDetail = client.call(Method::GET, &path(&name), None)?;
            show_versions(format, &d)
        }
        SecretCommand::Ls => {
            let list: Vec<SecretSummary> = client.call(Method::GET, "/v1/secrets", None)?;
            if format == Format::Json {
                output::json(&serde_json::to_value(&list)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.latest.map_or("-".into(), |v| v.to_string()),
                        s.versions.to_string(),
                        s.keys.join(","),
                        if s.services.is_empty() {
                            "(any)".into()
                        } else {
                            s.services.join(",")
                        },
                        super::service::ago(s.created_at),
                    ]
                })
                .collect();
            output::table(
                &["NAME", "LATEST", "VERSIONS", "KEYS", "SERVICES", "CREATED"],
                &rows,
            );
            Ok(())
        }
        SecretCommand::Rm { name } => {
            let _: serde_json::Value = client.call(Method::DELETE, &path(&name), None)?;
            if format == Format::Json {
                output::json(&serde_json::json!({ "removed": name }));
            } else {
                println!("removed secret {name}");
            }
            Ok(())
        }
        SecretCommand::Disable { name, version } => {
            set_state(client, format, &name, version, "disabled")
        }
        SecretCommand::Enable { name, version } => {
            set_state(client, format, &name, version, "enabled")
        }
    }
}

fn path(name: &str) -> String {
    format!("/v1/secrets/{name}")
}

fn set_state(
    client: &Client,
    format: Format,
    name: &str,
    version: u32,
    state: &str,
) -> anyhow::Result<()> {
    let d: SecretDetail = client.call(
        Method::PATCH,
        &format!("{}/versions/{version}", path(name)),
        Some(serde_json::json!({ "state": state })),
    )?;
    if format == Format::Json {
        output::json(&serde_json::to_value(&d)?);
    } else {
        println!("version {version} of secret {name} is {state}");
    }
    Ok(())
}

fn show_written(format: Format, d: &SecretDetail, what: &str) -> anyhow::Result<()> {
    if format == Format::Json {
        output::json(&serde_json::to_value(d)?);
        return Ok(());
    }
    let newest = d.versions.first();
    println!(
        "{what} {} of secret {} (keys: {})",
        newest.map_or(0, |v| v.version),
        d.name,
        newest.map(|v| v.keys.join(", ")).unwrap_or_default()
    );
    Ok(())
}

fn show_versions(format: Format, d: &SecretDetail) -> anyhow::Result<()> {
    if format == Format::Json {
        output::json(&serde_json::to_value(d)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = d
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.state.clone(),
                v.keys.join(","),
                super::service::ago(v.created_at),
            ]
        })
        .collect();
    output::table(&["VERSION", "STATE", "KEYS", "CREATED"], &rows);
    Ok(())
}
