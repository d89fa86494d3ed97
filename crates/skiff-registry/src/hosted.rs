//! The registry skiff serves itself: the storage side of the OCI distribution API over
//! the image store. Pushed blobs land in the store itself (no second copy), uploads are
//! checked against their digest before they count, and a pushed image manifest is
//! installed at once, listed as `ADDRESS/REPO:TAG` and `REPO:TAG`, so it can be deployed
//! by either name.
//!
//! HTTP is the daemon's job (`skiff/src/server/registry.rs`); this module speaks in
//! repositories, digests and typed errors, each with its distribution-spec code.

use sha2::{Digest as _, Sha256};
use skiff_core::{Digest, ImageRef};
use skiff_image::{Expected, Fetched, ImageStore};
use skiff_store::Store;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Uploads in progress at once; past it new ones are refused.
const MAX_UPLOADS: usize = 64;
/// An upload nobody touched for this long is dropped.
const UPLOAD_IDLE: Duration = Duration::from_secs(3600);
/// Largest manifest taken.
const MAX_MANIFEST: usize = 4 << 20;

/// A refusal, with its distribution-spec error code.
#[derive(Debug, thiserror::Error)]
pub enum HostedError {
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    #[error("blob unknown: {0}")]
    BlobUnknown(String),
    #[error("upload unknown: {0}")]
    UploadUnknown(String),
    #[error("digest invalid: {0}")]
    DigestInvalid(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("too many uploads at once; try again later")]
    TooMany,
    #[error("{0}")]
    Internal(String),
}

impl HostedError {
    /// The error code of the distribution spec.
    pub fn code(&self) -> &'static str {
        match self {
            HostedError::NameInvalid(_) => "NAME_INVALID",
            HostedError::BlobUnknown(_) => "BLOB_UNKNOWN",
            HostedError::UploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            HostedError::DigestInvalid(_) => "DIGEST_INVALID",
            HostedError::ManifestInvalid(_) => "MANIFEST_INVALID",
            HostedError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            HostedError::Unsupported(_) => "UNSUPPORTED",
            HostedError::TooMany => "TOOMANYREQUESTS",
            HostedError::Internal(_) => "UNKNOWN",
        }
    }
}

struct Upload {
    file: tempfile::NamedTempFile,
    hash: Sha256,
    size: u64,
    touched: Instant,
}

/// A manifest as stored: its bytes, media type and digest.
pub struct StoredManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// The registry's storage, shared by its request handlers.
pub struct Hosted {
    store: ImageStore,
    db: Mutex<Store>,
    uploads: Mutex<HashMap<String, Upload>>,
    /// `host:port` clients push to; pushed images are listed under it too.
    address: String,
}

/// Whether `name` is a repository name of the distribution spec.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.split(['.', '_', '-']).all(|w| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
}

fn check_repo(name: &str) -> Result<(), HostedError> {
    if valid_repository(name) {
        Ok(())
    } else {
        Err(HostedError::NameInvalid(name.to_owned()))
    }
}

fn parse_digest(text: &str) -> Result<Digest, HostedError> {
    text.parse()
        .map_err(|_| HostedError::DigestInvalid(format!("{text:?} is not a sha256 digest")))
}

fn internal(e: impl std::fmt::Display) -> HostedError {
    HostedError::Internal(e.to_string())
}

impl Hosted {
    /// A registry over `store` and `db`, reached by clients at `address`.
    pub fn new(store: ImageStore, db: Store, address: String) -> Hosted {
        Hosted {
            store,
            db: Mutex::new(db),
            uploads: Mutex::new(HashMap::new()),
            address,
        }
    }

    /// The address clients push to.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Store> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The size of a stored blob, if the store has it.
    pub fn blob_size(&self, digest: &str) -> Result<Option<u64>, HostedError> {
        let digest = parse_digest(digest)?;
        let path = self.store.blobs().path(&digest);
        Ok(std::fs::metadata(path).ok().map(|m| m.len()))
    }

    /// Where a stored blob's bytes are (for a GET).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, HostedError> {
        let parsed = parse_digest(digest)?;
        if !self.store.blobs().contains(&parsed) {
            return Err(HostedError::BlobUnknown(digest.to_owned()));
        }
        Ok(self.store.blobs().path(&parsed))
    }

    /// Starts an upload into `repo`; its id.
    pub fn start_upload(&self, repo: &str) -> Result<String, HostedError> {
        check_repo(repo)?;
        let mut uploads = self.uploads();
        uploads.retain(|_, u| u.touched.elapsed() < UPLOAD_IDLE);
        if uploads.len() >= MAX_UPLOADS {
            return Err(HostedError::TooMany);
        }
        let file = tempfile::NamedTempFile::new_in(self.store.scratch_dir()).map_err(internal)?;
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(internal)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        uploads.insert(
            id.clone(),
            Upload {
                file,
                hash: Sha256::new(),
                size: 0,
                touched: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Appends `bytes` to upload `id`; its size so far.
    pub fn append(&self, id: &str, bytes: &[u8]) -> Result<u64, HostedError> {
        let mut uploads = self.uploads();
        let upload = uploads
            .get_mut(id)
            .ok_or_else(|| HostedError::UploadUnknown(id.to_owned()))?;
        upload.file.write_all(bytes).map_err(internal)?;
        upload.hash.update(bytes);
        upload.size += bytes.len() as u64;
        upload.touched = Instant::now();
        Ok(upload.size)
    }

    /// The size of upload `id` so far.
    pub fn upload_size(&self, id: &str) -> Result<u64, HostedError> {
        self.uploads()
            .get(id)
            .map(|u| u.size)
            .ok_or_else(|| HostedError::UploadUnknown(id.to_owned()))
    }

    /// Drops upload `id`.
    pub fn cancel(&self, id: &str) -> Result<(), HostedError> {
        self.uploads()
            .remove(id)
            .map(drop)
            .ok_or_else(|| HostedError::UploadUnknown(id.to_owned()))
    }

    /// Ends upload `id`: its content must hash to `digest`; then it is a blob of the
    /// store. A mismatch drops the upload.
    pub fn finish(&self, id: &str, digest: &str) -> Result<Digest, HostedError> {
        let expected = parse_digest(digest)?;
        let upload = self
            .uploads()
            .remove(id)
            .ok_or_else(|| HostedError::UploadUnknown(id.to_owned()))?;
        let got: Digest = Digest::from_sha256_bytes(&upload.hash.finalize().into());
        if got != expected {
            return Err(HostedError::DigestInvalid(format!(
                "the upload hashes to {got}, not {expected}"
            )));
        }
        let mut fetched = Fetched::default();
        self.store
            .keep_fetched_hashed(
                &mut fetched,
                upload.file.path(),
                &Expected {
                    digest: expected.clone(),
                    size: Some(upload.size),
                },
            )
            .map_err(internal)?;
        Ok(expected)
    }

    /// Stores an image manifest pushed to `repo` as `reference` (a tag or its digest)
    /// and installs the image; its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
    ) -> Result<Digest, HostedError> {
        check_repo(repo)?;
        if bytes.len() > MAX_MANIFEST {
            return Err(HostedError::ManifestInvalid("larger than 4 MiB".into()));
        }
        let digest: Digest = Digest::from_sha256_bytes(&Sha256::digest(bytes).into());
        let tags = if reference.starts_with("sha256:") {
            if parse_digest(reference)? != digest {
                return Err(HostedError::DigestInvalid(format!(
                    "the manifest hashes to {digest}, not {reference}"
                )));
            }
            Vec::new()
        } else {
            [
                format!("{}/{repo}:{reference}", self.address),
                format!("{repo}:{reference}"),
            ]
            .iter()
            .map(|t| t.parse::<ImageRef>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HostedError::ManifestInvalid(format!("tag {reference:?}: {e}")))?
        };
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| HostedError::ManifestInvalid(e.to_string()))?;
        if value.get("manifests").is_some() {
            return Err(HostedError::Unsupported(
                "skiff's registry takes image manifests, not indexes: push one platform".into(),
            ));
        }
        let manifest: oci_spec::image::ImageManifest = serde_json::from_value(value)
            .map_err(|e| HostedError::ManifestInvalid(e.to_string()))?;
        for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
            let blob = parse_digest(d.digest().as_ref())?;
            if !self.store.blobs().contains(&blob) {
                return Err(HostedError::BlobUnknown(blob.to_string()));
            }
        }
        let mut fetched = Fetched::default();
        let expected = Expected {
            digest: digest.clone(),
            size: Some(bytes.len() as u64),
        };
        self.store
            .keep_fetched_bytes(&mut fetched, bytes, &expected)
            .map_err(internal)?;
        let origin = format!("push:{}/{repo}:{reference}", self.address);
        self.store
            .install_fetched(&mut self.db(), fetched, &digest, &tags, &origin)
            .map_err(|e| HostedError::ManifestInvalid(e.to_string()))?;
        Ok(digest)
    }

    /// The manifest `repo:reference` names (a tag pushed here, or a digest).
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<StoredManifest, HostedError> {
        check_repo(repo)?;
        let unknown = || HostedError::ManifestUnknown(format!("{repo}:{reference}"));
        let record = if reference.starts_with("sha256:") {
            self.db().resolve_image(reference)
        } else {
            self.db()
                .resolve_image(&format!("{}/{repo}:{reference}", self.address))
                .or_else(|_| self.db().resolve_image(&format!("{repo}:{reference}")))
        }
        .map_err(|_| unknown())?;
        let bytes = self
            .store
            .blobs()
            .read_small(&record.digest)
            .map_err(|_| unknown())?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned());
        Ok(StoredManifest {
            bytes,
            media_type,
            digest: record.digest,
        })
    }

    /// The tags of `repo`.
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, HostedError> {
        check_repo(repo)?;
        let prefixes = [format!("{}/{repo}:", self.address), format!("{repo}:")];
        let mut tags: Vec<String> = self
            .db()
            .list_images()
            .map_err(internal)?
            .into_iter()
            .flat_map(|i| i.tags)
            .filter_map(|t| {
                prefixes
                    .iter()
                    .find_map(|p| t.strip_prefix(p.as_str()).map(str::to_owned))
            })
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Removes a tag of `repo` (or, by digest, the image), as `skiff image rm` would.
    pub fn delete_manifest(&self, repo: &str, reference: &str) -> Result<(), HostedError> {
        check_repo(repo)?;
        let names = if reference.starts_with("sha256:") {
            vec![reference.to_owned()]
        } else {
            vec![
                format!("{}/{repo}:{reference}", self.address),
                format!("{repo}:{reference}"),
            ]
        };
        let mut removed = false;
        for name in names {
            if self
                .store
                .remove(&mut self.db(), &name)
                .map_err(internal)?
                .is_some()
            {
                removed = true;
            }
        }
        if removed {
            Ok(())
        } else {
            Err(HostedError::ManifestUnknown(format!("{repo}:{reference}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_distribution_spec() {
        for ok in ["app", "team/app", "a.b_c-d/e2", "x/y/z"] {
            assert!(valid_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "App",
            "a//b",
            "-a",
            "a-",
            "../etc",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
    }
}
