//! `skiff image import|pull|pack|ls|inspect|rm`.

use super::output::{self, Format};
use crate::home::Home;
use anyhow::Context;
use clap::{Args, Subcommand};
use skiff_core::ImageRef;
use skiff_image::{ImportOptions, PackOptions};
use skiff_store::ImageRecord;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout directory, an OCI archive or a docker archive.
    Import(ImportArgs),
    /// Pull an image from a registry (OCI distribution API).
    Pull(PullArgs),
    /// Pack a directory into a single-layer image.
    Pack(PackArgs),
    /// List images.
    Ls,
    /// Show an image's manifest digest, config and layers (JSON).
    Inspect {
        /// Image reference: name[:tag], digest, or digest prefix.
        reference: String,
    },
    /// Remove images (untag, and delete when no tag is left).
    Rm {
        /// Image references.
        #[arg(required = true)]
        references: Vec<String>,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// The layout directory or archive file.
    path: PathBuf,
    /// Tag the image NAME[:TAG].
    #[arg(long)]
    tag: Option<ImageRef>,
    /// In a source holding several images, import the one with this name or tag.
    #[arg(long = "ref")]
    select: Option<String>,
    /// Refuse layers that unpack to more than this (e.g. 4Gi).
    #[arg(long, env = "SKIFF_MAX_UNPACKED", value_parser = parse_size)]
    max_unpacked: Option<u64>,
}

#[derive(Args)]
pub struct PullArgs {
    /// [REGISTRY/]REPOSITORY[:TAG|@sha256:DIGEST]; it is listed under this name.
    reference: String,
    /// Allow plain HTTP to this registry (a registry on loopback is allowed it anyway).
    #[arg(long)]
    insecure: bool,
    /// A CA certificate (PEM) to trust for this registry, besides the system's.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// User name for HTTP basic auth (or the registry's token service).
    #[arg(long, short = 'u', requires = "password_stdin")]
    username: Option<String>,
    /// Read the password from stdin (it is never taken as an argument).
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

#[derive(Args)]
pub struct PackArgs {
    /// The directory to pack (it becomes the image's root).
    dir: PathBuf,
    /// Tag the image NAME[:TAG].
    #[arg(long, required = true)]
    tag: ImageRef,
    /// Entrypoint: a JSON array, or words split on spaces.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Cmd: a JSON array, or words split on spaces.
    #[arg(long)]
    cmd: Option<String>,
    /// Environment KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    workdir: Option<String>,
    /// User (name, uid or uid:gid).
    #[arg(long)]
    user: Option<String>,
}

fn pull(
    home: &Home,
    format: Format,
    a: PullArgs,
    store: &skiff_image::ImageStore,
) -> anyhow::Result<()> {
    use skiff_registry::{Registries, RegistryAuth};
    // What `skiff registry login` stored (or an auth file has), then the flags over it.
    let registries = Registries::load(&home.root)?;
    let mut opts = registries.options_for(&skiff_registry::registry_of(&a.reference)?);
    if let Some(user) = &a.username {
        opts.auth = RegistryAuth::Basic(user.clone(), super::registry::password_from_stdin()?);
    }
    if let Some(f) = &a.ca_file {
        opts.ca_pem
            .push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    opts.insecure |= a.insecure;
    opts.progress = Some(super::progress::pull_callback(matches!(
        format,
        Format::Json
    )));
    let mut db = home.db()?;
    // Several threads: each layer's download hashes as it goes, one core each.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pulled = runtime
        .block_on(skiff_registry::pull(store, &mut db, &a.reference, &opts))
        .with_context(|| format!("pulling {}", a.reference))?;
    print_images(format, store, &[pulled.image]);
    Ok(())
}

fn parse_size(s: &str) -> Result<u64, String> {
    skiff_core::parse_memory_bytes(s).map_err(|e| e.to_string())
}

fn argv(s: &str) -> anyhow::Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s).with_context(|| format!("{s:?} is not a JSON array of strings"))
    } else {
        Ok(s.split_whitespace().map(str::to_owned).collect())
    }
}

pub fn run(home: &Home, format: Format, cmd: ImageCommand) -> anyhow::Result<()> {
    let store = home.images()?.with_progress(super::progress::callback());
    let result = run_with(home, format, cmd, store);
    if result.is_err() {
        super::progress::finish();
    }
    result
}

fn run_with(
    home: &Home,
    format: Format,
    cmd: ImageCommand,
    store: skiff_image::ImageStore,
) -> anyhow::Result<()> {
    let read_only = matches!(cmd, ImageCommand::Ls | ImageCommand::Inspect { .. });
    let mut db = if read_only {
        home.db_read_only()?
    } else {
        home.db()?
    };
    match cmd {
        ImageCommand::Import(a) => {
            let store = match a.max_unpacked {
                Some(limit) => store.with_max_unpacked(limit),
                None => store,
            };
            let opts = ImportOptions {
                tag: a.tag,
                select: a.select,
            };
            let images = store.import(&mut db, &a.path, &opts)?;
            print_images(format, &store, &images);
        }
        ImageCommand::Pull(a) => pull(home, format, a, &store)?,
        ImageCommand::Pack(a) => {
            let opts = PackOptions {
                tag: Some(a.tag),
                entrypoint: a
                    .entrypoint
                    .as_deref()
                    .map(argv)
                    .transpose()?
                    .unwrap_or_default(),
                cmd: a.cmd.as_deref().map(argv).transpose()?.unwrap_or_default(),
                env: a.env,
                workdir: a.workdir,
                user: a.user,
            };
            let image = store.pack(&mut db, &a.dir, &opts)?;
            print_images(format, &store, &[image]);
        }
        ImageCommand::Ls => print_images(format, &store, &db.list_images()?),
        ImageCommand::Inspect { reference } => {
            let image = db.resolve_image(&reference)?;
            output::json(&inspect_json(&image));
        }
        ImageCommand::Rm { references } => {
            let mut failed = None;
            for r in references {
                match store.remove(&mut db, &r) {
                    Ok(Some(d)) => println!("deleted {d}"),
                    Ok(None) => println!("untagged {r}"),
                    Err(e) => {
                        eprintln!("skiff: removing {r}: {e}");
                        failed = Some(r);
                    }
                }
            }
            if let Some(r) = failed {
                anyhow::bail!("could not remove {r}");
            }
        }
    }
    Ok(())
}

fn image_json(i: &ImageRecord) -> serde_json::Value {
    serde_json::json!({
        "digest": i.digest.to_string(),
        "tags": i.tags,
        "size": i.size,
        "layers": i.layers.len(),
        "created_at": i.created_at,
        "source": i.source,
    })
}

fn inspect_json(i: &ImageRecord) -> serde_json::Value {
    let config: serde_json::Value =
        serde_json::from_str(&i.config_json).unwrap_or(serde_json::Value::Null);
    let mut v = image_json(i);
    v["config_digest"] = serde_json::json!(i.config_digest.to_string());
    v["config"] = config;
    v["layers"] = serde_json::json!(i
        .layers
        .iter()
        .map(|l| serde_json::json!({
            "digest": l.blob_digest.to_string(),
            "media_type": l.media_type,
            "size": l.size,
            "diff_id": l.diff_id.to_string(),
            "chain_id": l.chain_id.to_string(),
        }))
        .collect::<Vec<_>>());
    v
}

fn print_images(format: Format, store: &skiff_image::ImageStore, images: &[ImageRecord]) {
    super::progress::finish();
    match format {
        Format::Json => output::json(&serde_json::json!(images
            .iter()
            .map(|i| {
                let mut v = image_json(i);
                v["missing_snapshots"] = serde_json::json!(store
                    .missing_snapshots(i)
                    .iter()
                    .map(|(_, path)| path.display().to_string())
                    .collect::<Vec<_>>());
                v
            })
            .collect::<Vec<_>>())),
        Format::Table => {
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    vec![
                        if i.tags.is_empty() {
                            "<none>".into()
                        } else {
                            i.tags.join(", ")
                        },
                        i.digest.short().to_owned(),
                        i.layers.len().to_string(),
                        output::human_size(i.size),
                        match store.missing_snapshots(i).len() {
                            0 => "ok".into(),
                            n => format!("{n} layer snapshot(s) missing"),
                        },
                    ]
                })
                .collect();
            output::table(&["TAG", "DIGEST", "LAYERS", "SIZE", "STATUS"], &rows);
        }
    }
}
