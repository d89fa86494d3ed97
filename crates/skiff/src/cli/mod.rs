//! Command-line parsing and dispatch. Exit codes: 0 success, 1 failure, 2 usage error
//! (clap's), and for `skiff run` the instance's own exit code (128+N for signal N).

mod image;
mod output;
mod progress;
mod run;

use crate::home::Home;
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
    /// Run one instance of an image in the foreground.
    Run(run::RunArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let home = Home::new(cli.home);
    match cli.command {
        Command::Image(cmd) => image::run(&home, cli.output, cmd).map(|()| 0),
        Command::Run(args) => run::run(&home, args),
    }
}
