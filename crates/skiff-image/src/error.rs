//! Errors of the image store. Each names what it was working on, outermost first, so a
//! message reads like `import oci-archive:/x.tar: layer sha256:…: entry "../etc/passwd"
//! escapes the rootfs`.

use skiff_core::Digest;
use std::path::PathBuf;

/// An error of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// While importing from `origin` (e.g. `oci-archive:/x.tar`).
    #[error("import {origin}: {source}")]
    Import {
        /// The source as the user named it, with its kind.
        origin: String,
        /// What went wrong.
        source: Box<ImageError>,
    },
    /// While packing a directory.
    #[error("pack {dir}: {source}")]
    Pack {
        /// The directory packed.
        dir: PathBuf,
        /// What went wrong.
        source: Box<ImageError>,
    },
    /// While unpacking one layer.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer blob's digest.
        digest: Digest,
        /// What went wrong.
        source: LayerError,
    },
    /// A blob failed verification or could not be stored.
    #[error("blob {digest}: {problem}")]
    Blob {
        /// The digest it was supposed to have.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// The source is not a layout or archive skiff understands, or is malformed.
    #[error("{0}")]
    Format(String),
    /// No manifest for linux/amd64 in a multi-platform index.
    #[error("no linux/amd64 image in the index (found: {0})")]
    NoPlatform(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A layer's unpacked snapshot is gone from the store (removed outside skiff).
    #[error(
        "image {image}: the snapshot of layer {chain_id} is missing ({path}); remove the \
         image and import or pull it again"
    )]
    MissingSnapshot {
        /// The image's manifest digest.
        image: Digest,
        /// The layer's chain id.
        chain_id: Digest,
        /// Where the snapshot should be.
        path: PathBuf,
    },
    /// The database refused.
    #[error(transparent)]
    Store(#[from] skiff_store::StoreError),
}

/// A problem with one layer's contents.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// `..` or an absolute path.
    #[error("entry {0:?} escapes the rootfs")]
    Escapes(String),
    /// A parent of the entry is a symlink that leads out of the root.
    #[error("entry {entry:?} escapes the rootfs through symlink {link:?} -> {target:?}")]
    EscapesThroughSymlink {
        /// The entry's path.
        entry: String,
        /// The symlink on its way.
        link: String,
        /// Where that symlink points.
        target: String,
    },
    /// A parent of the entry is a symlink (inside the root); layers never write through one.
    #[error("entry {entry:?} is written through symlink {link:?} -> {target:?}")]
    ThroughSymlink {
        /// The entry's path.
        entry: String,
        /// The symlink on its way.
        link: String,
        /// Where that symlink points.
        target: String,
    },
    /// A hardlink whose target is outside the root.
    #[error("entry {entry:?} is a hardlink to {target:?}, which escapes the rootfs")]
    HardlinkEscapes {
        /// The entry's path.
        entry: String,
        /// The link's target.
        target: String,
    },
    /// A hardlink to a file that does not exist in this layer or below.
    #[error("entry {entry:?} is a hardlink to {target:?}, which does not exist")]
    HardlinkMissing {
        /// The entry's path.
        entry: String,
        /// The link's target.
        target: String,
    },
    /// A parent of the entry is a non-directory.
    #[error("entry {entry:?}: {parent:?} is not a directory")]
    NotADirectory {
        /// The entry's path.
        entry: String,
        /// The non-directory on its way.
        parent: String,
    },
    /// An entry type skiff does not unpack.
    #[error("entry {entry:?} has unsupported type {kind:?}")]
    Unsupported {
        /// The entry's path.
        entry: String,
        /// Its tar type byte.
        kind: char,
    },
    /// The uncompressed layer is larger than the configured limit.
    #[error("uncompressed size exceeds the limit of {limit} bytes (a decompression bomb?)")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The uncompressed digest differs from the image config's `rootfs.diff_ids`.
    #[error("uncompressed content has digest {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// From the config.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// The tar stream is corrupt or truncated.
    #[error("reading archive: {}", printable(.0))]
    Tar(std::io::Error),
    /// Writing an entry failed.
    #[error("entry {entry:?}: {source}")]
    Write {
        /// The entry's path.
        entry: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ImageError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// An error's text made safe to print: anything but printable ASCII becomes `.`, and it
/// is cut at 100 characters (a corrupt archive's error may quote garbage from it).
pub(crate) fn printable(e: &dyn std::fmt::Display) -> String {
    let text: String = e
        .to_string()
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '.'
            }
        })
        .collect();
    if text.len() > 100 {
        format!("{}...", &text[..100])
    } else {
        text
    }
}
