//! `skiff registry login|logout|ls`: credentials and settings for the registries images
//! are pulled from, kept root-only in `$SKIFF_HOME/registries.json` (Docker's flags:
//! `-u USER --password-stdin`; the password is never an argument and never printed).

use super::output::{self, Format};
use crate::home::Home;
use anyhow::Context;
use clap::{Args, Subcommand};
use skiff_registry::{Login, Registries};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Store credentials (and settings) for a registry.
    Login(LoginArgs),
    /// Forget a registry's stored credentials and settings.
    Logout {
        /// The registry, HOST[:PORT].
        registry: String,
    },
    /// List the registries skiff has credentials or settings for (not the secrets).
    Ls,
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry, HOST[:PORT].
    registry: String,
    /// User name.
    #[arg(long, short = 'u', requires = "password_stdin")]
    username: Option<String>,
    /// Read the password (or token) from stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Allow plain HTTP to it (a registry on loopback is allowed it anyway).
    #[arg(long)]
    insecure: bool,
    /// A CA certificate (PEM) to trust for it, kept as certs.d/REGISTRY/ca.crt.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// Reads a password from stdin, without its line ending.
pub fn password_from_stdin() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
        .context("reading the password from stdin")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}

pub fn run(home: &Home, format: Format, cmd: RegistryCommand) -> anyhow::Result<()> {
    home.ensure()?;
    match cmd {
        RegistryCommand::Login(a) => login(home, a),
        RegistryCommand::Logout { registry } => {
            let found = Registries::remove_login(&home.root, &registry)?;
            let ca = home.root.join("certs.d").join(&registry);
            let _ = std::fs::remove_dir_all(&ca);
            if !found {
                anyhow::bail!("not logged in to {registry}");
            }
            println!("logged out of {registry}");
            Ok(())
        }
        RegistryCommand::Ls => {
            let all = Registries::load(&home.root)?;
            let names: Vec<&str> = all.registries().collect();
            match format {
                Format::Json => output::json(&serde_json::json!(names)),
                Format::Table => {
                    let rows: Vec<Vec<String>> =
                        names.iter().map(|n| vec![n.to_string()]).collect();
                    output::table(&["REGISTRY"], &rows);
                }
            }
            Ok(())
        }
    }
}

fn login(home: &Home, a: LoginArgs) -> anyhow::Result<()> {
    if a.registry.is_empty() || a.registry.contains(['/', ' ']) || a.registry.starts_with('.') {
        anyhow::bail!("{:?} is not a registry (HOST[:PORT])", a.registry);
    }
    let password = if a.password_stdin {
        Some(password_from_stdin()?)
    } else {
        None
    };
    if let Some(file) = &a.ca_file {
        let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let dir = home.root.join("certs.d").join(&a.registry);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("ca.crt"), pem)
            .with_context(|| format!("writing {}", dir.join("ca.crt").display()))?;
    }
    let login = Login {
        username: a.username,
        password,
        insecure: a.insecure,
    };
    Registries::save_login(&home.root, &a.registry, login)?;
    println!("stored settings for {}", a.registry);
    Ok(())
}
