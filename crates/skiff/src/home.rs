//! The data directory (`$SKIFF_HOME`, default `/var/lib/skiff`) and what lives in it.

use anyhow::Context;
use skiff_image::ImageStore;
use skiff_store::Store;
use std::path::PathBuf;

/// Paths under the data directory, and handles opened from them.
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Self {
        Home { root }
    }

    pub fn ensure(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating data directory {}", self.root.display()))?;
        // The store holds other users' images and logs: root only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("securing data directory {}", self.root.display()))
    }

    pub fn db(&self) -> anyhow::Result<Store> {
        self.ensure()?;
        let path = self.root.join("skiff.db");
        Store::open(&path).with_context(|| format!("opening {}", path.display()))
    }

    pub fn images(&self) -> anyhow::Result<ImageStore> {
        self.ensure()?;
        ImageStore::open(&self.root)
            .with_context(|| format!("opening image store in {}", self.root.display()))
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}
