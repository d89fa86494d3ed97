//! `skiff configmap`: plain settings beside secrets (Kubernetes' ConfigMap), given to
//! instances with `--set-secrets TARGET=configmap:NAME[/KEY]`. Values are shown: they
//! are not secret.

use super::client::Client;
use super::data::DataArgs;
use super::output::{self, Format};
use clap::Subcommand;
use hyper::Method;
use skiff_control::documents::{ConfigMapDetail, ConfigMapWrite};

#[derive(Subcommand)]
pub enum ConfigMapCommand {
    /// Make a config map.
    Create(DataArgs),
    /// Replace a config map's whole data (new instances, and running instances' files,
    /// get it).
    Update(DataArgs),
    /// Show a config map, values included.
    Describe { name: String },
    /// List config maps.
    Ls,
    /// Remove a config map.
    Rm { name: String },
}

/// The data as the API takes it: text values.
fn write(a: &DataArgs) -> anyhow::Result<ConfigMapWrite> {
    let mut data = std::collections::BTreeMap::new();
    for (key, value) in a.entries()? {
        let text = String::from_utf8(value)
            .map_err(|_| anyhow::anyhow!("{key}: a config map holds text, and this is not"))?;
        data.insert(key, text);
    }
    Ok(ConfigMapWrite { data })
}

fn path(name: &str) -> String {
    format!("/v1/configmaps/{name}")
}

pub fn run(client: &Client, format: Format, command: ConfigMapCommand) -> anyhow::Result<()> {
    let show = |d: &ConfigMapDetail| -> anyhow::Result<()> {
        if format == Format::Json {
            output::json(&serde_json::to_value(d)?);
        } else {
            let rows: Vec<Vec<String>> = d
                .data
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect();
            output::table(&["KEY", "VALUE"], &rows);
        }
        Ok(())
    };
    match command {
        ConfigMapCommand::Create(a) => {
            let body = serde_json::to_value(write(&a)?)?;
            let d: ConfigMapDetail = client.call(
                Method::PUT,
                &format!("{}?create=true", path(&a.name)),
                Some(body),
            )?;
            show(&d)
        }
        ConfigMapCommand::Update(a) => {
            let body = serde_json::to_value(write(&a)?)?;
            let d: ConfigMapDetail = client.call(Method::PUT, &path(&a.name), Some(body))?;
            show(&d)
        }
        ConfigMapCommand::Describe { name } => {
            let d: ConfigMapDetail = client.call(Method::GET, &path(&name), None)?;
            show(&d)
        }
        ConfigMapCommand::Ls => {
            let list: Vec<ConfigMapDetail> = client.call(Method::GET, "/v1/configmaps", None)?;
            if format == Format::Json {
                output::json(&serde_json::to_value(&list)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.data.keys().cloned().collect::<Vec<_>>().join(","),
                        super::service::ago(c.updated_at),
                    ]
                })
                .collect();
            output::table(&["NAME", "KEYS", "UPDATED"], &rows);
            Ok(())
        }
        ConfigMapCommand::Rm { name } => {
            let _: serde_json::Value = client.call(Method::DELETE, &path(&name), None)?;
            if format == Format::Json {
                output::json(&serde_json::json!({ "removed": name }));
            } else {
                println!("removed config map {name}");
            }
            Ok(())
        }
    }
}
