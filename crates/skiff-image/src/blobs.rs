//! The content-addressed blob store: `blobs/sha256/<hex>`, each file's name its digest.
//! A blob only appears under its name after its content was hashed and matched, so a
//! reader of `blobs/` never sees an unverified or half-written file.

use crate::error::ImageError;
use sha2::{Digest as _, Sha256};
use skiff_core::Digest;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What a blob is expected to be, from the descriptor that names it.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes, when the descriptor gives one.
    pub size: Option<u64>,
}

/// Hashes everything read through it.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) hash: Sha256,
    pub(crate) count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes everything written through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hash: Sha256,
    pub(crate) count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn finish(hash: Sha256) -> Digest {
    let bytes: [u8; 32] = hash.finalize().into();
    Digest::from_sha256_bytes(&bytes)
}

/// The blob directory of an image store.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        Blobs { dir, tmp }
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Opens a stored blob.
    pub fn open(&self, digest: &Digest) -> Result<File, ImageError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| ImageError::io(path, e))
    }

    /// Reads a stored blob whole (manifests and configs; capped at 4 MiB, as registries do).
    pub fn read_small(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        const MAX: u64 = 4 << 20;
        let mut buf = Vec::new();
        self.open(digest)?
            .take(MAX + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ImageError::io(self.path(digest), e))?;
        if buf.len() as u64 > MAX {
            return Err(ImageError::Blob {
                digest: digest.clone(),
                problem: format!("larger than {MAX} bytes, too large for a manifest or config"),
            });
        }
        Ok(buf)
    }

    /// Stores the blob read from `src`, verifying it against `expected`. Returns whether
    /// it was newly added (false when an identical blob was already there).
    pub fn ingest(&self, src: impl Read, expected: &Expected) -> Result<bool, ImageError> {
        if self.contains(&expected.digest) {
            return Ok(false);
        }
        let tmp =
            tempfile::NamedTempFile::new_in(&self.tmp).map_err(|e| ImageError::io(&self.tmp, e))?;
        let mut reader = HashingReader {
            inner: src,
            hash: Sha256::new(),
            count: 0,
        };
        let mut out = io::BufWriter::new(tmp.as_file());
        io::copy(&mut reader, &mut out).map_err(|e| ImageError::Blob {
            digest: expected.digest.clone(),
            problem: format!("copying: {e}"),
        })?;
        out.flush().map_err(|e| ImageError::io(tmp.path(), e))?;
        drop(out);
        verify(expected, finish(reader.hash), reader.count)?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| ImageError::io(tmp.path(), e))?;
        self.place(tmp, &expected.digest)
    }

    /// Stores a file already written under the store's tmp directory, by renaming it into
    /// place after verification (no copy).
    pub(crate) fn ingest_staged(
        &self,
        staged: &Path,
        expected: &Expected,
    ) -> Result<bool, ImageError> {
        if self.contains(&expected.digest) {
            return Ok(false);
        }
        let file = File::open(staged).map_err(|e| ImageError::io(staged, e))?;
        let mut reader = HashingReader {
            inner: io::BufReader::with_capacity(256 * 1024, file),
            hash: Sha256::new(),
            count: 0,
        };
        io::copy(&mut reader, &mut io::sink()).map_err(|e| ImageError::io(staged, e))?;
        verify(expected, finish(reader.hash), reader.count)?;
        self.rename_into_place(staged, &expected.digest)
    }

    fn place(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<bool, ImageError> {
        let target = self.path(digest);
        tmp.persist(&target)
            .map_err(|e| ImageError::io(&target, e.error))?;
        Ok(true)
    }

    /// Renames a file the caller verified (under the store's tmp directory) into place.
    pub(crate) fn adopt(&self, staged: &Path, digest: &Digest) -> Result<bool, ImageError> {
        self.rename_into_place(staged, digest)
    }

    fn rename_into_place(&self, staged: &Path, digest: &Digest) -> Result<bool, ImageError> {
        let target = self.path(digest);
        std::fs::rename(staged, &target).map_err(|e| ImageError::io(&target, e))?;
        Ok(true)
    }

    /// Removes a blob (after the database stopped referencing it).
    pub fn remove(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}

fn verify(expected: &Expected, actual: Digest, size: u64) -> Result<(), ImageError> {
    if actual != expected.digest {
        return Err(ImageError::Blob {
            digest: expected.digest.clone(),
            problem: format!("content has digest {actual}: corrupt or tampered"),
        });
    }
    if let Some(want) = expected.size {
        if want != size {
            return Err(ImageError::Blob {
                digest: expected.digest.clone(),
                problem: format!("size is {size} bytes, but its descriptor says {want}"),
            });
        }
    }
    Ok(())
}
