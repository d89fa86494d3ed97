//! skiff's secrets at rest. A secret version's data (one or more keys, as a Kubernetes
//! Secret has) is sealed with ChaCha20-Poly1305 under the master key, which lives in a
//! root-only file outside the database, and is bound (as associated data) to the
//! secret's name and version number: a row copied over another secret's or version's
//! does not open.
//!
//! It also makes and checks API tokens (`token`): only their hashes are kept.
//!
//! It must not store anything (the store keeps the sealed bytes) nor show a value: the
//! types that hold values print only their keys, and errors name secrets and versions.
#![forbid(unsafe_code)]

mod data;
mod key;
pub mod token;

pub use data::SecretData;
pub use key::{MasterKey, Place, Sealed, KEY_LEN};

use std::path::PathBuf;

/// Lowercase hex digits of `bytes` (for ids; a secret's hex is built in a buffer that is
/// wiped instead).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What went wrong with the key or a sealed version; never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or written.
    #[error("secrets key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file is not one skiff can trust or use.
    #[error("secrets key file {path}: {problem}")]
    BadKeyFile { path: PathBuf, problem: String },
    /// The version was sealed under another master key than the one loaded.
    #[error(
        "secret {secret} version {version} was sealed under key {sealed_with}, but this \
         daemon has key {current}: start it with the key file the secret was made with"
    )]
    OtherKey {
        secret: String,
        version: u32,
        sealed_with: String,
        current: String,
    },
    /// The ciphertext does not open under the key with this secret's name and version.
    #[error(
        "secret {secret} version {version} does not open: its stored ciphertext was \
         altered, or belongs to another secret or version"
    )]
    Tampered { secret: String, version: u32 },
}
