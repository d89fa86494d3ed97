//! `skiff run`: one instance in the foreground.

use crate::home::Home;
use clap::Args;

#[derive(Args)]
pub struct RunArgs {
    /// Image reference.
    image: String,
}

pub fn run(_home: &Home, args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!(
        "skiff run {}: the sandbox runtime is not built yet",
        args.image
    )
}
