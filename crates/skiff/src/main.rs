//! The `skiff` binary: the command-line interface and `skiff server`, the daemon. Each
//! verb lives in its own small file under `cli/` and only wires arguments to the crates;
//! the daemon (`server/`) is the REST API over `skiff-control` and the wiring of the
//! store, the image store, the Linux runtime and the router. The logic belongs to the
//! crates.

mod cli;
mod home;
mod launch;
mod server;

use clap::Parser;

fn main() {
    // A sandbox's process starts here (skiff_sandbox::reentry) and never returns.
    skiff_sandbox::reentry::enter_if_asked();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    if !matches!(args.command, cli::Command::Server(_)) {
        end_quietly_on_a_closed_pipe();
    }
    match cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("skiff: {}", error_chain(&e));
            std::process::exit(cli::EXIT_FAILURE);
        }
    }
}

/// A command whose output goes into a pipe whose reader is gone (`skiff ls | head`) ends
/// quietly, by SIGPIPE, as command-line tools do, rather than panicking in `println!`:
/// every Rust program starts with SIGPIPE ignored. The daemon keeps it ignored (a peer
/// that closed its socket is an error to handle there, not a reason to die).
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restoring a signal's default disposition; no handler runs, nothing is shared.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// The error and its causes joined by ": ", skipping a cause whose text its parent's
/// message already includes (the crates' errors name their cause in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
