//! Reads an image archive (an `oci-archive` or `docker-archive` tarball, optionally
//! gzip-compressed) into a staging directory so it can be read like a layout.
//!
//! The outer archive is as hostile as a layer: only plain files and directories are
//! written, every path is checked to stay inside the staging directory, and symlinks
//! (which `docker save` uses for repeated layers) are recorded, not created.

use crate::error::ImageError;
use crate::safe_fs;
use crate::unpack::{sniff, Compression};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// An archive unpacked into a staging directory.
pub struct Staged {
    /// The staging directory (removed with `tmp`).
    pub dir: PathBuf,
    /// Symlinks in the archive: path → target path, both relative to `dir`.
    links: HashMap<PathBuf, PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Staged {
    /// Resolves a path named by the archive's own metadata to a staged file, following the
    /// archive's symlinks (at most 8 deep), never leaving the staging directory.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, ImageError> {
        let mut cur = normalize(Path::new(rel)).ok_or_else(|| {
            ImageError::Format(format!("archive names {rel:?}, which escapes the archive"))
        })?;
        for _ in 0..8 {
            match self.links.get(&cur) {
                Some(next) => cur = next.clone(),
                None => return Ok(self.dir.join(cur)),
            }
        }
        Err(ImageError::Format(format!(
            "archive path {rel:?}: too many symlinks"
        )))
    }
}

fn normalize(p: &Path) -> Option<PathBuf> {
    safe_fs::normal_components(p)
        .ok()
        .map(|c| c.iter().collect())
}

/// Unpacks `archive` into a new directory under `tmp_root`; total size capped at `limit`.
pub fn stage(archive: &Path, tmp_root: &Path, limit: u64) -> Result<Staged, ImageError> {
    let tmp = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(tmp_root)
        .map_err(|e| ImageError::io(tmp_root, e))?;
    let file = File::open(archive).map_err(|e| ImageError::io(archive, e))?;
    let mut buffered = BufReader::with_capacity(256 * 1024, file);
    let head = buffered
        .fill_buf()
        .map_err(|e| ImageError::io(archive, e))?;
    let reader: Box<dyn Read> = match sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| ImageError::io(archive, e))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut reader = reader.take(limit.saturating_add(1));
    let dir = tmp.path().to_owned();
    let mut links = HashMap::new();
    let corrupt = |e: io::Error| {
        ImageError::Format(format!("reading archive: {}", crate::error::printable(&e)))
    };
    for entry in tar::Archive::new(&mut reader).entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let rel = normalize(&raw).ok_or_else(|| {
            ImageError::Format(format!(
                "archive entry {:?} escapes the archive",
                raw.display().to_string()
            ))
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = dir.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest).map_err(|e| ImageError::io(&dest, e))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
                }
                // create_new: a second entry with the same name cannot be used to write
                // through whatever the first one left.
                let mut out = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(|e| ImageError::io(&dest, e))?;
                io::copy(&mut entry, &mut out).map_err(corrupt)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().map_err(corrupt)?.ok_or_else(|| {
                    ImageError::Format(format!("archive link {rel:?} has no target"))
                })?;
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    rel.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.into_owned()
                };
                let resolved = normalize_lexically(&base).ok_or_else(|| {
                    ImageError::Format(format!("archive link {rel:?} points outside the archive"))
                })?;
                links.insert(rel, resolved);
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(ImageError::Format(format!(
                    "archive entry {rel:?} has type {:?}, which image archives do not contain",
                    other.as_byte() as char
                )))
            }
        }
    }
    if reader.limit() == 0 {
        return Err(ImageError::Format(format!(
            "archive expands past the limit of {limit} bytes"
        )));
    }
    Ok(Staged {
        dir,
        links,
        _tmp: tmp,
    })
}

/// Resolves `.` and `..` lexically; `None` if it climbs above the start.
fn normalize_lexically(p: &Path) -> Option<PathBuf> {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop()?;
            }
            _ => return None,
        }
    }
    Some(out.iter().collect())
}
