//! skiff's image store: OCI images kept by content digest under `$SKIFF_HOME`, imported
//! from OCI layouts and archives or packed from a directory, with each layer unpacked once
//! into an overlayfs-ready snapshot.
//!
//! Layout on disk: `blobs/sha256/<hex>` (manifests, configs, layer blobs),
//! `snapshots/<chain-id hex>/` (one unpacked layer, keyed by its chain id so shared base
//! layers are unpacked once) and `tmp/` (staging; nothing there is ever referenced). The
//! index of images lives in the skiff database.
//!
//! This crate must not start processes: it hands the sandbox a list of snapshot
//! directories and a resolved process config, nothing more.
#![forbid(unsafe_code)]

mod archive;
mod blobs;
mod config;
mod error;
mod fetched;
mod import;
mod install;
mod pack;
mod progress;
mod rootfs;
mod safe_fs;
mod unpack;

pub use blobs::{Blobs, Expected};
pub use config::{parse_signal, ProcessConfig, ResolvedUser};
pub use error::{ImageError, LayerError};
pub use fetched::Fetched;
pub use import::{is_manifest, pick_platform, ImportOptions};
pub use install::chain_ids;
pub use pack::PackOptions;
pub use progress::{Progress, ProgressFn};
pub use unpack::{sniff, unpack_layer, Compression, Unpacked};

use skiff_core::Digest;
use skiff_store::{ImageRecord, Store};
use std::path::{Path, PathBuf};

/// Default cap on one layer's (or one archive's) uncompressed size: 16 GiB.
pub const DEFAULT_MAX_UNPACKED: u64 = 16 << 30;

/// The on-disk image store.
#[derive(Clone)]
pub struct ImageStore {
    root: PathBuf,
    blobs: Blobs,
    max_unpacked: u64,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .field("max_unpacked", &self.max_unpacked)
            .finish()
    }
}

impl ImageStore {
    /// Opens (creating) the store under `home`.
    pub fn open(home: &Path) -> Result<Self, ImageError> {
        let root = home.to_owned();
        for sub in ["blobs/sha256", "snapshots", "tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::io(&p, e))?;
        }
        let blobs = Blobs::new(root.join("blobs/sha256"), root.join("tmp"));
        Ok(ImageStore {
            root,
            blobs,
            max_unpacked: DEFAULT_MAX_UNPACKED,
            progress: None,
        })
    }

    /// Sets the cap on uncompressed bytes per layer and per archive.
    pub fn with_max_unpacked(mut self, bytes: u64) -> Self {
        self.max_unpacked = bytes;
        self
    }

    /// Reports progress of imports and packs to `f`.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    pub(crate) fn report(&self, event: Progress<'_>) {
        if let Some(f) = &self.progress {
            f(event);
        }
    }

    /// The blob store.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The directory holding every snapshot.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The directory holding the snapshot with this chain id.
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain_id.hex())
    }

    /// The snapshot directories of an image, top layer first (overlayfs `lowerdir` order).
    pub fn rootfs_layers(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| self.snapshot_dir(&l.chain_id))
            .collect()
    }

    /// The layers of `image` whose snapshot directory is gone (removed outside skiff), as
    /// (chain id, where it should be).
    pub fn missing_snapshots(&self, image: &ImageRecord) -> Vec<(Digest, PathBuf)> {
        image
            .layers
            .iter()
            .map(|l| (l.chain_id.clone(), self.snapshot_dir(&l.chain_id)))
            .filter(|(_, dir)| !dir.is_dir())
            .collect()
    }

    /// An error naming the first missing snapshot of `image`, if one is missing: what
    /// would otherwise fail later as a missing `/etc/passwd` or a mount error.
    pub fn check_snapshots(&self, image: &ImageRecord) -> Result<(), ImageError> {
        match self.missing_snapshots(image).into_iter().next() {
            None => Ok(()),
            Some((chain_id, path)) => Err(ImageError::MissingSnapshot {
                image: image.digest.clone(),
                chain_id,
                path,
            }),
        }
    }

    /// Removes what `reference` names (see [`Store::remove_image`]) and deletes the blobs
    /// and snapshots nothing else uses.
    pub fn remove(&self, db: &mut Store, reference: &str) -> Result<Option<Digest>, ImageError> {
        let removed = db.remove_image(reference)?;
        for blob in &removed.orphan_blobs {
            self.blobs.remove(blob);
        }
        for chain in &removed.orphan_snapshots {
            install::remove_snapshot(&self.snapshot_dir(chain), &self.tmp());
        }
        Ok(removed.digest)
    }
}
