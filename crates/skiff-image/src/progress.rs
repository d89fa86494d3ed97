//! Progress of long image work (copying blobs, unpacking layers), reported through a
//! callback so the CLI can draw it and a daemon can log it. This module only describes
//! events; it must not print.

use skiff_core::Digest;
use std::sync::Arc;

/// One step of an import or pack.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// A blob was verified and stored (`bytes` long).
    BlobStored {
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        bytes: u64,
    },
    /// Layer `index` (1-based) of `total` is about to be unpacked, or was already.
    Layer {
        /// 1-based position, bottom first.
        index: usize,
        /// Number of layers.
        total: usize,
        /// The layer blob.
        digest: &'a Digest,
        /// Whether its snapshot already existed (shared with another image).
        cached: bool,
    },
    /// An entry of a layer was left out: a device node (`kind` is `character` or
    /// `block`). The sandbox gives every instance its own `/dev`.
    Skipped {
        /// The layer blob.
        digest: &'a Digest,
        /// The entry's path in the layer.
        entry: &'a str,
        /// What kind of device node it is.
        kind: &'static str,
    },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress<'_>) + Send + Sync>;
