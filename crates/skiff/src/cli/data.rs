//! The data of a secret version or a config map as the command line gives it: keys with
//! values from the command line or from files (`-`: standard input). An error names the
//! key or file, never a value.

use anyhow::Context;
use clap::Args;
use std::io::Read;

#[derive(Args)]
pub struct DataArgs {
    /// Its name (a-z, 0-9, '-' and '.').
    pub name: String,
    /// A key and its value (the value shows in the process list while this runs: prefer
    /// --from-file for secrets).
    #[arg(long, value_name = "KEY=VALUE")]
    from_literal: Vec<String>,
    /// A key and the file holding its value (`-`: standard input); without `KEY=`, the
    /// key is the file's name.
    #[arg(long, value_name = "[KEY=]PATH")]
    from_file: Vec<String>,
}

impl DataArgs {
    /// Each key with its value, in the order given; refused when a key comes twice or
    /// nothing is given.
    pub fn entries(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for literal in &self.from_literal {
            let (key, value) = literal
                .split_once('=')
                .context("--from-literal: an entry has no '='; give KEY=VALUE")?;
            out.push((key.to_owned(), value.as_bytes().to_vec()));
        }
        for spec in &self.from_file {
            let (key, path) = match spec.split_once('=') {
                Some((k, p)) => (k.to_owned(), p),
                None if spec == "-" => {
                    anyhow::bail!("--from-file -: give KEY=- for standard input")
                }
                None => {
                    let name = std::path::Path::new(spec)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .with_context(|| format!("--from-file {spec}: give KEY={spec}"))?;
                    (name.to_owned(), spec.as_str())
                }
            };
            let value = if path == "-" {
                let mut v = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut v)
                    .context("reading standard input")?;
                v
            } else {
                std::fs::read(path).with_context(|| format!("reading {path}"))?
            };
            out.push((key, value));
        }
        if out.is_empty() {
            anyhow::bail!(
                "give {}'s data: --from-literal KEY=VALUE or --from-file [KEY=]PATH",
                self.name
            );
        }
        let mut seen = std::collections::HashSet::new();
        if let Some((key, _)) = out.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            anyhow::bail!("key {key} is given twice");
        }
        Ok(out)
    }
}
