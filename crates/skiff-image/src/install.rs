//! Turns verified blobs into a listed image: reads the manifest and config from the blob
//! store, unpacks each missing layer into its snapshot (verifying its diff id), and only
//! then inserts the image row. On any error, blobs and snapshots this import created are
//! removed again, so a failed import leaves neither a listed image nor stray files.

use crate::error::{ImageError, LayerError};
use crate::unpack::unpack_layer;
use crate::ImageStore;
use crate::Progress;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use sha2::{Digest as _, Sha256};
use skiff_core::{Digest, ImageRef};
use skiff_store::{ImageRecord, LayerRecord, NewImage, Store};
use std::path::{Path, PathBuf};

/// What an import created so far, to undo on failure.
#[derive(Default)]
pub(crate) struct Created {
    pub(crate) blobs: Vec<Digest>,
    pub(crate) snapshots: Vec<Digest>,
}

impl Created {
    pub(crate) fn undo(&self, store: &ImageStore, db: &Store) {
        for chain in &self.snapshots {
            if !db.snapshot_in_use(chain).unwrap_or(true) {
                remove_snapshot(&store.snapshot_dir(chain), &store.tmp());
            }
        }
        for blob in &self.blobs {
            if db.resolve_image(&blob.to_string()).is_err() {
                store.blobs.remove(blob);
            }
        }
    }
}

/// Removes a snapshot by first renaming it into `tmp` so no reader sees it half-deleted.
pub(crate) fn remove_snapshot(dir: &Path, tmp: &Path) {
    let doomed = tmp.join(format!("doomed-{}", random_suffix()));
    if std::fs::rename(dir, &doomed).is_ok() {
        let _ = std::fs::remove_dir_all(&doomed);
    }
}

pub(crate) fn random_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Chain ids per the OCI image spec: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Sha256::new();
                h.update(format!("{prev} {d}").as_bytes());
                crate::blobs::finish(h)
            }
        };
        out.push(next);
    }
    out
}

fn parse_digest(s: &str, what: &str) -> Result<Digest, ImageError> {
    s.parse()
        .map_err(|_| ImageError::Format(format!("{what} has an invalid digest {s:?}")))
}

impl ImageStore {
    /// Installs the image whose manifest blob is stored as `manifest`: unpacks its layers
    /// and lists it with `tags`. `created` accumulates what to undo if anything fails.
    pub(crate) fn install(
        &self,
        db: &mut Store,
        manifest: &Digest,
        tags: &[ImageRef],
        origin: &str,
        created: &mut Created,
    ) -> Result<ImageRecord, ImageError> {
        let manifest_bytes = self.blobs.read_small(manifest)?;
        let parsed: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| ImageError::Format(format!("manifest {manifest}: {e}")))?;
        let config_digest = parse_digest(parsed.config().digest().as_ref(), "manifest config")?;
        let config_bytes = self.blobs.read_small(&config_digest)?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::Format(format!("config {config_digest}: {e}")))?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| parse_digest(d, "config rootfs.diff_ids"))
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != parsed.layers().len() {
            return Err(ImageError::Format(format!(
                "manifest {manifest} has {} layers but its config lists {} diff ids",
                parsed.layers().len(),
                diff_ids.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        let mut below: Vec<PathBuf> = Vec::new();
        let mut size = manifest_bytes.len() as u64 + config_bytes.len() as u64;
        for (i, desc) in parsed.layers().iter().enumerate() {
            let blob = parse_digest(desc.digest().as_ref(), "manifest layer")?;
            size += desc.size();
            let snapshot = self.snapshot_dir(&chains[i]);
            self.report(crate::Progress::Layer {
                index: i + 1,
                total: parsed.layers().len(),
                digest: &blob,
                cached: snapshot.is_dir(),
            });
            if !snapshot.is_dir() {
                self.unpack_snapshot(&blob, &diff_ids[i], &snapshot, &below)?;
                created.snapshots.push(chains[i].clone());
            }
            below.insert(0, snapshot);
            layers.push(LayerRecord {
                blob_digest: blob,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
            });
        }
        let new = NewImage {
            digest: manifest.clone(),
            config_digest,
            config_json: String::from_utf8_lossy(&config_bytes).into_owned(),
            source: origin.to_owned(),
            size,
            layers,
        };
        db.insert_image(&new, tags)?;
        Ok(db.resolve_image(&manifest.to_string())?)
    }

    pub(crate) fn unpack_snapshot(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        snapshot: &Path,
        below: &[PathBuf],
    ) -> Result<(), ImageError> {
        let layer_err = |source| ImageError::Layer {
            digest: blob.clone(),
            source,
        };
        let staging = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(self.tmp())
            .map_err(|e| ImageError::io(self.tmp(), e))?;
        let fs_dir = staging.path().join("fs");
        std::fs::create_dir(&fs_dir).map_err(|e| ImageError::io(&fs_dir, e))?;
        let file = self.blobs.open(blob)?;
        let unpacked = unpack_layer(file, &fs_dir, below, self.max_unpacked).map_err(layer_err)?;
        if &unpacked.diff_id != diff_id {
            return Err(layer_err(LayerError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual: unpacked.diff_id,
            }));
        }
        for (entry, kind) in &unpacked.skipped {
            tracing::warn!(layer = %blob, "skipped {entry}: a {kind} device node");
            self.report(Progress::Skipped {
                digest: blob,
                entry,
                kind,
            });
        }
        match std::fs::rename(&fs_dir, snapshot) {
            Ok(()) => Ok(()),
            // Another import unpacked the same layer meanwhile: theirs is as good as ours.
            Err(_) if snapshot.is_dir() => Ok(()),
            Err(e) => Err(ImageError::io(snapshot, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_follows_the_spec() {
        let a = Digest::from_sha256_bytes(&[1; 32]);
        let b = Digest::from_sha256_bytes(&[2; 32]);
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        let mut h = Sha256::new();
        h.update(format!("{a} {b}"));
        assert_eq!(chains[1], crate::blobs::finish(h));
    }
}
