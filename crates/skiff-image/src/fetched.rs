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

impl Fetched {
    /// Records a snapshot [`ImageStore::unpack_fetched_layer`] made, to undo on failure.
    pub fn record_snapshot(&mut self, chain_id: Digest) {
        self.created.snapshots.push(chain_id);
    }
}

impl ImageStore {
    /// Unpacks a stored layer blob into the snapshot for `chain_id`, over the snapshots
    /// `below` it (top first), unless that snapshot exists; whether it made it. A fetcher
    /// unpacks each layer as soon as it and those below it are in, while later ones still
    /// download; the install then finds them done.
    pub fn unpack_fetched_layer(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        chain_id: &Digest,
        below: &[PathBuf],
    ) -> Result<bool, ImageError> {
        let snapshot = self.snapshot_dir(chain_id);
        if snapshot.is_dir() {
            return Ok(false);
        }
        self.unpack_snapshot(blob, diff_id, &snapshot, below)?;
        Ok(true)
    }

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

    /// Moves the file at `path` (under [`ImageStore::scratch_dir`]) into the store as
    /// `expected`, trusting the digest the caller computed while writing it (the fetcher
    /// hashes as it streams; hashing again would read every byte twice). Only the size is
    /// checked again. `false` when the store had it already.
    pub fn keep_fetched_hashed(
        &self,
        fetched: &mut Fetched,
        path: &Path,
        expected: &Expected,
    ) -> Result<bool, ImageError> {
        if self.blobs.contains(&expected.digest) {
            return Ok(false);
        }
        let len = std::fs::metadata(path)
            .map_err(|e| ImageError::io(path, e))?
            .len();
        if expected.size.is_some_and(|size| size != len) {
            return Err(ImageError::Blob {
                digest: expected.digest.clone(),
                problem: format!("{len} bytes, not {}", expected.size.unwrap_or_default()),
            });
        }
        self.blobs.adopt(path, &expected.digest)?;
        fetched.created.blobs.push(expected.digest.clone());
        Ok(true)
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
