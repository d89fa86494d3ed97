//! Images whose blobs arrive from elsewhere (a registry): the fetcher writes each blob
//! into the store's scratch directory, the store verifies and keeps it, and once all are
//! in, installs the image. On failure, what this image brought is removed again, so an
//! interrupted or hostile fetch leaves no listed image and no stray blob.
//!
//! This module does no I/O beyond the store: fetching is the caller's.

use crate::install::Created;
use crate::{Expected, ImageError, ImageStore};
use skiff_core::{Digest, ImageRef};
use skiff_store::{ImageRecord, Store};
use std::path::{Path, PathBuf};

/// Blobs brought in for one image so far; undone unless the image gets installed.
#[derive(Default)]
pub struct Fetched {
    created: Created,
}

impl ImageStore {
    /// Where a fetcher writes blobs before [`ImageStore::keep_fetched`] (same filesystem
    /// as the store, so keeping one is a rename).
    pub fn scratch_dir(&self) -> PathBuf {
        self.tmp()
    }

    /// Verifies the file at `path` (under [`ImageStore::scratch_dir`]) against `expected`
    /// and moves it into the store; `false` when the store had it already.
    pub fn keep_fetched(
        &self,
        fetched: &mut Fetched,
        path: &Path,
        expected: &Expected,
    ) -> Result<bool, ImageError> {
        let added = self.blobs.ingest_staged(path, expected)?;
        if added {
            fetched.created.blobs.push(expected.digest.clone());
        }
        Ok(added)
    }

    /// Stores a small blob (a manifest or config) from memory, verified against `expected`.
    pub fn keep_fetched_bytes(
        &self,
        fetched: &mut Fetched,
        bytes: &[u8],
        expected: &Expected,
    ) -> Result<(), ImageError> {
        if self.blobs.ingest(bytes, expected)? {
            fetched.created.blobs.push(expected.digest.clone());
        }
        Ok(())
    }

    /// Installs the image whose manifest (and every blob it names) is stored, listing it
    /// as `tags`; on failure, removes what `fetched` brought.
    pub fn install_fetched(
        &self,
        db: &mut Store,
        mut fetched: Fetched,
        manifest: &Digest,
        tags: &[ImageRef],
        origin: &str,
    ) -> Result<ImageRecord, ImageError> {
        let result = self.install(db, manifest, tags, origin, &mut fetched.created);
        if result.is_err() {
            fetched.created.undo(self, db);
        }
        result
    }

    /// Gives up on an image being fetched: removes what it brought.
    pub fn abandon_fetched(&self, db: &Store, fetched: Fetched) {
        fetched.created.undo(self, db);
    }
}
