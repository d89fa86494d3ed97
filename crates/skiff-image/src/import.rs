//! Import from what image tools write: an OCI image layout directory (`skopeo copy …
//! oci:DIR`), an OCI archive (`oci-archive:`), or a docker archive (`docker save`,
//! `docker-archive:`). Every blob is verified by digest and size on the way into the
//! blob store; multi-platform indexes resolve to linux/amd64.

use crate::archive::{self, Staged};
use crate::blobs::{Expected, HashingReader};
use crate::error::ImageError;
use crate::install::Created;
use crate::ImageStore;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Deserialize;
use skiff_core::{Digest, ImageRef};
use skiff_store::{ImageRecord, Store};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Options of an import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Tag the imported image with this (replacing tags found in the source).
    pub tag: Option<ImageRef>,
    /// In a layout or archive holding several images, the one whose
    /// `org.opencontainers.image.ref.name` (or docker tag) is this.
    pub select: Option<String>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

enum Source {
    Layout(PathBuf),
    Staged(Staged),
}

impl Source {
    fn path(&self, rel: &str) -> Result<PathBuf, ImageError> {
        match self {
            Source::Layout(dir) => {
                let comps = crate::safe_fs::normal_components(Path::new(rel)).map_err(|_| {
                    ImageError::Format(format!("layout names {rel:?}, which escapes the layout"))
                })?;
                Ok(comps.iter().fold(dir.clone(), |p, c| p.join(c)))
            }
            Source::Staged(s) => s.resolve(rel),
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<T, ImageError> {
        let path = self.path(rel)?;
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(4 << 20).read_to_end(&mut bytes))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    ImageError::Format(format!("{rel} is missing (truncated or not an image?)"))
                }
                _ => ImageError::Format(format!("reading {rel}: {e}")),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Format(format!("{rel}: {e}")))
    }

    fn has(&self, rel: &str) -> bool {
        self.path(rel).is_ok_and(|p| p.is_file())
    }
}

/// One image found in a source, before its blobs are copied.
struct Found {
    manifest: Expected,
    names: Vec<String>,
}

impl ImageStore {
    /// Imports every image (or the selected one) from the layout or archive at `path`.
    pub fn import(
        &self,
        db: &mut Store,
        path: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let (kind, source) = match self.open_source(path) {
            Ok(ks) => ks,
            Err(e) => {
                return Err(ImageError::Import {
                    origin: path.display().to_string(),
                    source: Box::new(e),
                })
            }
        };
        let origin = format!("{kind}:{}", path.display());
        let mut created = Created::default();
        let result = self.import_from(db, &source, kind, opts, &origin, &mut created);
        if result.is_err() {
            created.undo(self, db);
        }
        result.map_err(|e| ImageError::Import {
            origin,
            source: Box::new(e),
        })
    }

    fn open_source(&self, path: &Path) -> Result<(&'static str, Source), ImageError> {
        let meta = std::fs::metadata(path).map_err(|e| ImageError::io(path, e))?;
        let source = if meta.is_dir() {
            Source::Layout(path.to_owned())
        } else {
            Source::Staged(archive::stage(path, &self.tmp(), self.max_unpacked)?)
        };
        let kind = if source.has("oci-layout") {
            if meta.is_dir() {
                "oci"
            } else {
                "oci-archive"
            }
        } else if source.has("manifest.json") {
            "docker-archive"
        } else {
            return Err(ImageError::Format(
                "not an OCI layout, OCI archive or docker archive (no oci-layout or manifest.json)"
                    .into(),
            ));
        };
        Ok((kind, source))
    }

    fn import_from(
        &self,
        db: &mut Store,
        source: &Source,
        kind: &str,
        opts: &ImportOptions,
        origin: &str,
        created: &mut Created,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let found = if kind == "docker-archive" {
            self.docker_images(source, created)?
        } else {
            self.oci_images(source, created)?
        };
        let chosen: Vec<Found> = match &opts.select {
            Some(want) => {
                let names: Vec<String> = found.iter().flat_map(|f| f.names.clone()).collect();
                let hit: Vec<Found> = found
                    .into_iter()
                    .filter(|f| {
                        f.names
                            .iter()
                            .any(|n| n == want || n.ends_with(&format!(":{want}")))
                    })
                    .collect();
                if hit.is_empty() {
                    return Err(ImageError::Format(format!(
                        "no image named {want:?} in it (found: {})",
                        if names.is_empty() {
                            "no names".into()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
                hit
            }
            None => found,
        };
        if chosen.len() > 1 && opts.tag.is_some() {
            let names: Vec<String> = chosen.iter().flat_map(|f| f.names.clone()).collect();
            return Err(ImageError::Format(format!(
                "it holds {} images ({}); --tag names one: choose it with --ref",
                chosen.len(),
                names.join(", ")
            )));
        }
        let mut out = Vec::new();
        for f in chosen {
            self.copy_blob_tree(source, &f.manifest, created)?;
            let tags: Vec<ImageRef> = match &opts.tag {
                Some(t) => vec![t.clone()],
                None => f.names.iter().filter_map(|n| full_reference(n)).collect(),
            };
            out.push(self.install(db, &f.manifest.digest, &tags, origin, created)?);
        }
        Ok(out)
    }

    fn ingest_from(
        &self,
        source: &Source,
        rel: &str,
        expected: &Expected,
        created: &mut Created,
    ) -> Result<(), ImageError> {
        let path = self.path_of_blob(source, rel, &expected.digest)?;
        let added = match source {
            Source::Staged(_) => self.blobs.ingest_staged(&path, expected)?,
            Source::Layout(_) => {
                let f = File::open(&path).map_err(|e| ImageError::io(&path, e))?;
                self.blobs
                    .ingest(std::io::BufReader::with_capacity(256 * 1024, f), expected)?
            }
        };
        if added {
            created.blobs.push(expected.digest.clone());
            self.report(crate::Progress::BlobStored {
                digest: &expected.digest,
                bytes: expected.size.unwrap_or(0),
            });
        }
        Ok(())
    }

    fn path_of_blob(
        &self,
        source: &Source,
        rel: &str,
        digest: &Digest,
    ) -> Result<PathBuf, ImageError> {
        let path = source.path(rel)?;
        if !path.is_file() && !self.blobs.contains(digest) {
            return Err(ImageError::Blob {
                digest: digest.clone(),
                problem: format!("missing from the source (looked for {rel})"),
            });
        }
        Ok(path)
    }

    // --- OCI layouts and archives -------------------------------------------------------

    fn oci_images(&self, source: &Source, created: &mut Created) -> Result<Vec<Found>, ImageError> {
        #[derive(Deserialize)]
        struct LayoutFile {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let layout: LayoutFile = source.read_json("oci-layout")?;
        if !layout.version.starts_with("1.") {
            return Err(ImageError::Format(format!(
                "oci-layout version {:?} is not supported (want 1.x)",
                layout.version
            )));
        }
        let index: ImageIndex = source.read_json("index.json")?;
        let mut found = Vec::new();
        // Top-level entries that carry a platform are alternatives of one image.
        let (platformed, plain): (Vec<&Descriptor>, Vec<&Descriptor>) = index
            .manifests()
            .iter()
            .partition(|d| d.platform().is_some() && is_manifest(d));
        if !platformed.is_empty() {
            let pick = pick_platform(&platformed)?;
            found.push(self.resolve_descriptor(source, pick, created, 0)?);
        }
        for d in plain {
            found.push(self.resolve_descriptor(source, d, created, 0)?);
        }
        if found.is_empty() {
            return Err(ImageError::Format("index.json lists no images".into()));
        }
        Ok(found)
    }

    fn resolve_descriptor(
        &self,
        source: &Source,
        d: &Descriptor,
        created: &mut Created,
        depth: u8,
    ) -> Result<Found, ImageError> {
        let digest = descriptor_digest(d)?;
        let mut names: Vec<String> = Vec::new();
        if let Some(ann) = d.annotations() {
            for key in [CONTAINERD_NAME, REF_NAME] {
                if let Some(v) = ann.get(key) {
                    names.push(v.clone());
                }
            }
        }
        let expected = Expected {
            digest: digest.clone(),
            size: Some(d.size()),
        };
        if is_manifest(d) {
            return Ok(Found {
                manifest: expected,
                names,
            });
        }
        if !is_index(d) || depth > 2 {
            return Err(ImageError::Format(format!(
                "descriptor {digest} has media type {}, not an image manifest or index",
                d.media_type()
            )));
        }
        self.ingest_from(source, &blob_rel(&digest), &expected, created)?;
        let nested: ImageIndex = serde_json::from_slice(&self.blobs.read_small(&digest)?)
            .map_err(|e| ImageError::Format(format!("index {digest}: {e}")))?;
        let candidates: Vec<&Descriptor> = nested
            .manifests()
            .iter()
            .filter(|d| is_manifest(d))
            .collect();
        let pick = pick_platform(&candidates)?;
        let mut inner = self.resolve_descriptor(source, pick, created, depth + 1)?;
        inner.names.extend(names);
        Ok(inner)
    }

    /// Copies a manifest and everything it references (config, layers) into the store.
    fn copy_blob_tree(
        &self,
        source: &Source,
        manifest: &Expected,
        created: &mut Created,
    ) -> Result<(), ImageError> {
        self.ingest_from(source, &blob_rel(&manifest.digest), manifest, created)?;
        let parsed: oci_spec::image::ImageManifest =
            serde_json::from_slice(&self.blobs.read_small(&manifest.digest)?)
                .map_err(|e| ImageError::Format(format!("manifest {}: {e}", manifest.digest)))?;
        let mut all = vec![parsed.config().clone()];
        all.extend(parsed.layers().iter().cloned());
        for d in &all {
            let digest = descriptor_digest(d)?;
            let exp = Expected {
                digest: digest.clone(),
                size: Some(d.size()),
            };
            self.ingest_from(source, &blob_rel(&digest), &exp, created)?;
        }
        Ok(())
    }

    // --- docker archives ----------------------------------------------------------------

    fn docker_images(
        &self,
        source: &Source,
        created: &mut Created,
    ) -> Result<Vec<Found>, ImageError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = source.read_json("manifest.json")?;
        if entries.is_empty() {
            return Err(ImageError::Format("manifest.json lists no images".into()));
        }
        let mut found = Vec::new();
        // `docker save a b` names a shared layer (or config) from several entries; the
        // first ingest moves the staged file into the store, so later ones reuse it.
        let mut ingested: HashMap<PathBuf, (Digest, u64)> = HashMap::new();
        let mut ingest = |rel: &str, created: &mut Created| -> Result<(Digest, u64), ImageError> {
            let key = source.path(rel)?;
            if let Some(done) = ingested.get(&key) {
                return Ok(done.clone());
            }
            let done = self.ingest_unnamed(source, rel, created)?;
            ingested.insert(key, done.clone());
            Ok(done)
        };
        for e in entries {
            let config = ingest(&e.config, created)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (digest, size) = ingest(l, created)?;
                let head = {
                    let mut buf = [0u8; 4];
                    let n = self.blobs.open(&digest)?.read(&mut buf).unwrap_or(0);
                    buf[..n].to_vec()
                };
                let media_type = match crate::sniff(&head) {
                    crate::Compression::Gzip => MediaType::ImageLayerGzip,
                    crate::Compression::Zstd => MediaType::ImageLayerZstd,
                    crate::Compression::None => MediaType::ImageLayer,
                };
                layers.push(serde_json::json!({
                    "mediaType": media_type.to_string(),
                    "digest": digest.to_string(),
                    "size": size,
                }));
            }
            // A docker archive has no manifest of its own: write the OCI manifest it implies.
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MediaType::ImageManifest.to_string(),
                "config": {
                    "mediaType": MediaType::ImageConfig.to_string(),
                    "digest": config.0.to_string(),
                    "size": config.1,
                },
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest).expect("json values serialize");
            let digest = self.ingest_bytes(&bytes, created)?;
            found.push(Found {
                manifest: Expected {
                    digest,
                    size: Some(bytes.len() as u64),
                },
                names: e.repo_tags.unwrap_or_default(),
            });
        }
        Ok(found)
    }

    /// Ingests a file whose digest nothing states (docker archives name files by path);
    /// its integrity is checked later against the config's diff ids.
    fn ingest_unnamed(
        &self,
        source: &Source,
        rel: &str,
        created: &mut Created,
    ) -> Result<(Digest, u64), ImageError> {
        let path = source.path(rel)?;
        let f = File::open(&path).map_err(|e| ImageError::Format(format!("{rel}: {e}")))?;
        let mut r = HashingReader {
            inner: std::io::BufReader::with_capacity(256 * 1024, f),
            hash: sha2::Sha256::new(),
            count: 0,
        };
        std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| ImageError::io(&path, e))?;
        let expected = Expected {
            digest: crate::blobs::finish(r.hash),
            size: Some(r.count),
        };
        self.ingest_from(source, rel, &expected, created)?;
        Ok((expected.digest, r.count))
    }

    pub(crate) fn ingest_bytes(
        &self,
        bytes: &[u8],
        created: &mut Created,
    ) -> Result<Digest, ImageError> {
        use sha2::Digest as _;
        let digest = crate::blobs::finish(sha2::Sha256::new_with_prefix(bytes));
        let expected = Expected {
            digest: digest.clone(),
            size: Some(bytes.len() as u64),
        };
        if self.blobs.ingest(bytes, &expected)? {
            created.blobs.push(digest.clone());
        }
        Ok(digest)
    }
}

use sha2::Digest as _;

fn blob_rel(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest, ImageError> {
    let s = d.digest().to_string();
    s.parse().map_err(|_| {
        ImageError::Format(format!(
            "descriptor has unsupported digest {s:?} (only sha256)"
        ))
    })
}

/// Whether a descriptor names an image manifest (OCI or Docker v2 schema 2).
pub fn is_manifest(d: &Descriptor) -> bool {
    matches!(d.media_type(), MediaType::ImageManifest)
        || d.media_type().to_string() == "application/vnd.docker.distribution.manifest.v2+json"
}

fn is_index(d: &Descriptor) -> bool {
    matches!(d.media_type(), MediaType::ImageIndex)
        || d.media_type().to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The manifest to use from an index: linux/amd64, or the only one when it names no
/// platform; otherwise an error listing what the index has.
pub fn pick_platform<'a>(candidates: &[&'a Descriptor]) -> Result<&'a Descriptor, ImageError> {
    let label = |d: &Descriptor| {
        d.platform()
            .as_ref()
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .unwrap_or_else(|| "unknown".into())
    };
    if let [only] = candidates {
        if only.platform().is_none() {
            return Ok(only);
        }
    }
    candidates
        .iter()
        .copied()
        .find(|d| label(d) == "linux/amd64")
        .ok_or_else(|| {
            ImageError::NoPlatform(
                candidates
                    .iter()
                    .map(|d| label(d))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// A source name that is a whole reference (`name:tag`), not just a tag.
fn full_reference(name: &str) -> Option<ImageRef> {
    if !name.contains(':') && !name.contains('/') {
        return None;
    }
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    name.parse().ok()
}
