//! Command-line parsing and dispatch. Exit codes: 0 success, 1 failure, 2 usage error
//! (clap's), and for `skiff run` the instance's own exit code (128+N for signal N).

mod client;
mod configmap;
mod data;
mod delivery;
mod events;
mod image;
mod invocations;
mod knative;
mod output;
mod progress;
mod registry;
mod run;
mod secret;
mod service;
mod token;
mod traffic;

use crate::home::Home;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const EXIT_FAILURE: i32 = 1;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Run OCI images as isolated, on-demand sandboxes"
)]
pub struct Cli {
    /// Data directory (images, database, logs).
    #[arg(
        long,
        global = true,
        env = "SKIFF_HOME",
        default_value = "/var/lib/skiff"
    )]
    pub home: PathBuf,
    /// The daemon's control-plane socket.
    #[arg(long, global = true, env = "SKIFF_SOCKET", default_value = crate::server::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The daemon's TCP API (`https://HOST:PORT`, from `server --api-listen`) instead of
    /// its unix socket; needs --token and --ca-file.
    #[arg(long, global = true, env = "SKIFF_API", requires_all = ["token", "ca_file"])]
    pub api: Option<String>,
    /// An API token (`skiff token create`), for --api.
    #[arg(long, global = true, env = "SKIFF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The certificates to trust for --api: the daemon's `$SKIFF_HOME/api.crt`.
    #[arg(long, global = true, env = "SKIFF_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = output::Format::Table)]
    pub output: output::Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Write a consistent copy of the database to FILE (SQLite's online backup; safe
    /// while the daemon runs). Images and logs stay where they are.
    Backup {
        /// Where the copy goes (must not exist).
        file: PathBuf,
    },
    /// Credentials and settings for the registries images are pulled from.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Run one instance of an image in the foreground.
    Run(run::RunArgs),
    /// Run the daemon: control-plane API, ingress router, instances.
    Server(Box<crate::server::ServerArgs>),
    /// Deploy a service (a new revision of it, when it exists).
    Deploy(Box<service::DeployArgs>),
    /// List services.
    Ls,
    /// Show a service: revisions, instances, the last start failure.
    Describe {
        /// Service name.
        name: String,
    },
    /// Remove a service.
    Rm {
        /// Service name.
        name: String,
    },
    /// Print a service's logs (of all its instances, also those that are gone).
    Logs(service::LogsArgs),
    /// Split a service's traffic across revisions and name revisions with tags.
    Traffic(traffic::TrafficArgs),
    /// Send all of a service's traffic back to an earlier revision.
    Rollback(traffic::RollbackArgs),
    /// Create or update services from Knative Service YAML (serving.knative.dev/v1).
    Apply(knative::ApplyArgs),
    /// Print a service as Knative Service YAML that `apply` turns back into it.
    Export {
        /// Service name.
        name: String,
    },
    /// Secrets: values kept sealed, given to the instances that use them.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// API tokens: made for a role (and maybe some services), listed, revoked.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// A service's async invocations (requests sent with Prefer: respond-async).
    Invocations {
        /// The service.
        name: String,
        /// How many of the newest.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Send dead invocations again, attempts counted afresh: these ids, or every
        /// dead one when none is given.
        #[arg(long, num_args = 0.., value_name = "ID")]
        redrive: Option<Vec<String>>,
    },
    /// The audit log: every control-plane write, who asked, and how it ended.
    Audit {
        /// How many of the newest entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Config maps: plain settings, given to instances as secrets are.
    #[command(subcommand, name = "configmap")]
    ConfigMap(configmap::ConfigMapCommand),
    /// Schedules: a CloudEvent to a service at the times of a cron pattern.
    #[command(subcommand)]
    Schedule(events::ScheduleCommand),
    /// Topics and their push subscriptions (filtered by CloudEvents attributes).
    #[command(subcommand)]
    Topic(events::TopicCommand),
    /// Publish a CloudEvent to a topic.
    Publish(events::PublishArgs),
    /// What schedules and subscriptions delivered, and the dead-letter queue.
    #[command(subcommand)]
    Events(events::EventsCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let endpoint = Endpoint {
        socket: cli.socket.clone(),
        api: cli.api.clone(),
        token: cli.token.clone(),
        ca_file: cli.ca_file.clone(),
    };
    let home = Home::new(cli.home);
    match cli.command {
        Command::Image(cmd) => image::run(&home, cli.output, cmd).map(|()| 0),
        Command::Registry(cmd) => registry::run(&home, cli.output, cmd).map(|()| 0),
        Command::Backup { file } => {
            if file.exists() {
                anyhow::bail!("{} exists; give a new file", file.display());
            }
            home.db_read_only()?
                .backup_to(&file)
                .with_context(|| format!("backing up the database to {}", file.display()))?;
            println!("backed up the database to {}", file.display());
            Ok(0)
        }
        Command::Run(args) => run::run(&home, args),
        Command::Server(args) => crate::server::run(home, cli.socket, *args),
        Command::Deploy(a) => service::deploy(&client(&endpoint)?, cli.output, *a).map(|()| 0),
        Command::Ls => service::list(&client(&endpoint)?, cli.output).map(|()| 0),
        Command::Describe { name } => {
            service::describe(&client(&endpoint)?, cli.output, &name).map(|()| 0)
        }
        Command::Rm { name } => service::remove(&client(&endpoint)?, cli.output, &name).map(|()| 0),
        Command::Logs(a) => service::logs(&client(&endpoint)?, cli.output, a).map(|()| 0),
        Command::Traffic(a) => traffic::set(&client(&endpoint)?, cli.output, a).map(|()| 0),
        Command::Rollback(a) => traffic::rollback(&client(&endpoint)?, cli.output, a).map(|()| 0),
        Command::Apply(a) => knative::apply(&client(&endpoint)?, cli.output, a).map(|()| 0),
        Command::Export { name } => {
            knative::export(&client(&endpoint)?, cli.output, &name).map(|()| 0)
        }
        Command::Secret(cmd) => secret::run(&client(&endpoint)?, cli.output, cmd).map(|()| 0),
        Command::Token(cmd) => token::run(&client(&endpoint)?, cli.output, cmd).map(|()| 0),
        Command::Invocations {
            name,
            redrive: Some(ids),
            ..
        } => invocations::redrive(&client(&endpoint)?, cli.output, &name, ids).map(|()| 0),
        Command::Invocations {
            name,
            limit,
            redrive: None,
        } => invocations::run(&client(&endpoint)?, cli.output, &name, limit).map(|()| 0),
        Command::Audit { limit } => audit(&client(&endpoint)?, cli.output, limit).map(|()| 0),
        Command::ConfigMap(cmd) => configmap::run(&client(&endpoint)?, cli.output, cmd).map(|()| 0),
        Command::Schedule(cmd) => {
            events::schedule(&client(&endpoint)?, cli.output, cmd).map(|()| 0)
        }
        Command::Topic(cmd) => events::topic(&client(&endpoint)?, cli.output, cmd).map(|()| 0),
        Command::Publish(a) => events::publish(&client(&endpoint)?, cli.output, a).map(|()| 0),
        Command::Events(cmd) => events::events(&client(&endpoint)?, cli.output, cmd).map(|()| 0),
    }
}

fn audit(client: &client::Client, format: output::Format, limit: u32) -> anyhow::Result<()> {
    let entries: Vec<skiff_control::documents::AuditEntry> = client.call(
        hyper::Method::GET,
        &format!("/v1/audit?limit={limit}"),
        None,
    )?;
    if format == output::Format::Json {
        output::json(&serde_json::to_value(&entries)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                skiff_sandbox::rfc3339(e.at, 0),
                e.who.clone(),
                e.action.clone(),
                e.result.clone(),
            ]
        })
        .collect();
    output::table(&["TIME", "WHO", "ACTION", "RESULT"], &rows);
    Ok(())
}

/// Where the CLI reaches the daemon.
struct Endpoint {
    socket: PathBuf,
    api: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
}

fn client(e: &Endpoint) -> anyhow::Result<client::Client> {
    let remote = match (&e.api, &e.token, &e.ca_file) {
        (Some(url), Some(token), Some(ca)) => Some(client::Remote::new(url, token, ca)?),
        _ => None,
    };
    client::Client::new(&e.socket, remote)
}
