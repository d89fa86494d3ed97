//! `skiff configmap`: plain settings beside secrets (Kubernetes' ConfigMap), given to
//! instances with `--set-secrets TARGET=configmap:NAME[/KEY]`. Values are shown: they
//! are not secret.

use super::client::Client;
use super::output::{self, Format};
use anyhow::Context;
use clap::{Args, Subcommand};
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

#[derive(Args)]
pub struct DataArgs {
    /// Config map name (a-z, 0-9, '-' and '.').
    name: String,
    /// A key and its value.
    #[arg(long, value_name = "KEY=VALUE")]
    from_literal: Vec<String>,
    /// A key and the file holding its value (text); without `KEY=`, the key is the
    /// file's name.
    #[arg(long, value_name = "[KEY=]PATH")]
    from_file: Vec<String>,
}

impl DataArgs {
    fn write(&self) -> anyhow::Result<ConfigMapWrite> {
        let mut write = ConfigMapWrite::default();
        let mut add = |key: &str, value: String| -> anyhow::Result<()> {
            if write.data.insert(key.to_owned(), value).is_some() {
                anyhow::bail!("key {key} is given twice");
            }
            Ok(())
        };
        for literal in &self.from_literal {
            let (key, value) = literal
                .split_once('=')
                .with_context(|| format!("--from-literal {literal:?}: give KEY=VALUE"))?;
            add(key, value.to_owned())?;
        }
        for spec in &self.from_file {
            let (key, path) = match spec.split_once('=') {
                Some((k, p)) => (k.to_owned(), p),
                None => {
                    let name = std::path::Path::new(spec)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .with_context(|| format!("--from-file {spec}: give KEY={spec}"))?;
                    (name.to_owned(), spec.as_str())
                }
            };
            let value = std::fs::read_to_string(path)
                .with_context(|| format!("reading {path} (a config map holds text)"))?;
            add(&key, value)?;
        }
        Ok(write)
    }
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
        ConfigMapCommand::Create(a) | ConfigMapCommand::Update(a)
            if a.from_literal.is_empty() && a.from_file.is_empty() =>
        {
            anyhow::bail!(
                "give config map {}'s data: --from-literal KEY=VALUE or --from-file [KEY=]PATH",
                a.name
            )
        }
        ConfigMapCommand::Create(a) => {
            let body = serde_json::to_value(a.write()?)?;
            let d: ConfigMapDetail = client.call(
                Method::PUT,
                &format!("{}?create=true", path(&a.name)),
                Some(body),
            )?;
            show(&d)
        }
        ConfigMapCommand::Update(a) => {
            let body = serde_json::to_value(a.write()?)?;
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
