//! The master key: 32 random bytes in a root-only file (64 hex digits), made at the
//! daemon's first start or supplied by the operator, and what it seals and opens.

use crate::{SecretData, SecretError};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Bytes of a master key.
pub const KEY_LEN: usize = 32;

/// A version's data as stored: the key it was sealed under, its nonce, and the
/// ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Where a sealed version belongs, which its ciphertext is bound to: the secret's name
/// and incarnation (made anew when a secret is made again under an old name) and the
/// version's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    pub secret: &'a str,
    pub incarnation: &'a str,
    pub version: u32,
}

impl Place<'_> {
    fn associated(&self) -> Vec<u8> {
        format!(
            "skiff secret v1\0{}\0{}\0{}",
            self.secret, self.incarnation, self.version
        )
        .into_bytes()
    }
}

/// The key secrets are sealed under.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

fn bad(path: &Path, problem: impl Into<String>) -> SecretError {
    SecretError::BadKeyFile {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::KeyFile {
        path: path.to_owned(),
        source,
    }
}

impl MasterKey {
    /// A key of these bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a ChaCha20-Poly1305 key is 32 bytes"));
        let mut named = b"skiff secrets key id\0".to_vec();
        named.extend_from_slice(bytes);
        let digest = ring::digest::digest(&ring::digest::SHA256, &named);
        MasterKey {
            key: LessSafeKey::new(unbound),
            id: format!("k{}", crate::hex(&digest.as_ref()[..6])),
        }
    }

    /// A name for the key that says nothing of it (`k` and 12 hex digits), stored with
    /// what it seals so that a wrong key file is told from tampering.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the key at `path`: a regular file of the daemon's user that nobody else
    /// may read or write, holding 64 hex digits (or 32 raw bytes).
    pub fn load(path: &Path) -> Result<MasterKey, SecretError> {
        let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
        if !meta.file_type().is_file() {
            return Err(bad(path, "is not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(
                path,
                format!("may be read or written by others than its owner (mode {mode:03o}): chmod 600 it"),
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(bad(
                path,
                format!(
                    "belongs to uid {}, not to the daemon's uid {me}",
                    meta.uid()
                ),
            ));
        }
        let text = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if text.len() == KEY_LEN {
            bytes.copy_from_slice(&text);
        } else {
            let hex = text.strip_suffix(b"\n").unwrap_or(&text);
            if hex.len() != 2 * KEY_LEN || !decode_hex(hex, &mut bytes[..]) {
                return Err(bad(
                    path,
                    format!(
                        "holds {} bytes: a key is 64 hex digits (or 32 raw bytes)",
                        text.len()
                    ),
                ));
            }
        }
        Ok(MasterKey::from_bytes(&bytes))
    }

    /// Reads the key at `path`, or makes a new one there when there is none: whether it
    /// was made. Made whole under another name first, so a crash leaves no half key.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), SecretError> {
        match MasterKey::load(path) {
            Err(SecretError::KeyFile { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other.map(|k| (k, false)),
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| bad(path, "no random bytes from the system to make it"))?;
        let mut hex = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
        for b in bytes.iter() {
            hex.push_str(&format!("{b:02x}"));
        }
        hex.push('\n');
        let partial = partial_path(path);
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)?;
            f.write_all(hex.as_bytes())?;
            f.sync_all()?;
            // Never over a key that appeared meanwhile: a link fails if `path` exists.
            std::fs::hard_link(&partial, path)
        })();
        let _ = std::fs::remove_file(&partial);
        match written {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io(path))?;
                }
                Ok((MasterKey::from_bytes(&bytes), true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                MasterKey::load(path).map(|k| (k, false))
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Seals `data` for `place`.
    pub fn seal(&self, place: Place<'_>, data: &SecretData) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .unwrap_or_else(|_| panic!("the system gave no random bytes for a nonce"));
        let mut in_out = data.encode().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.associated()),
                &mut in_out,
            )
            .unwrap_or_else(|_| unreachable!("sealing fails only past 256 GiB"));
        Sealed {
            key_id: self.id.clone(),
            nonce,
            ciphertext: in_out,
        }
    }

    /// Opens what [`seal`](Self::seal) made for `place`.
    pub fn open(&self, place: Place<'_>, sealed: &Sealed) -> Result<SecretData, SecretError> {
        if sealed.key_id != self.id {
            return Err(SecretError::OtherKey {
                secret: place.secret.to_owned(),
                version: place.version,
                sealed_with: sealed.key_id.clone(),
                current: self.id.clone(),
            });
        }
        let tampered = || SecretError::Tampered {
            secret: place.secret.to_owned(),
            version: place.version,
        };
        let mut in_out = Zeroizing::new(sealed.ciphertext.clone());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(place.associated()),
                &mut in_out,
            )
            .map_err(|_| tampered())?;
        SecretData::decode(plain).ok_or_else(tampered)
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".part-{}", std::process::id()));
    PathBuf::from(p)
}

fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (pair, byte) in hex.chunks(2).zip(out.iter_mut()) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => *byte = h << 4 | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secret: &'static str, incarnation: &'static str, version: u32) -> Place<'static> {
        Place {
            secret,
            incarnation,
            version,
        }
    }

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        let mut d = SecretData::new();
        for (k, v) in pairs {
            d.insert(k, v.as_bytes().to_vec());
        }
        d
    }

    #[test]
    fn a_sealed_version_opens_only_as_itself() {
        let key = MasterKey::from_bytes(&[7; KEY_LEN]);
        let d = data(&[("password", "hunter2"), ("user", "app")]);
        let sealed = key.seal(at("db", "i", 3), &d);
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(at("db", "i", 3), &sealed).unwrap(), d);
        // Moved to another version, secret or incarnation, it does not open.
        for place in [
            at("db", "i", 2),
            at("db", "i", 4),
            at("dc", "i", 3),
            at("db", "j", 3),
            at("db\0i", "", 3),
        ] {
            let e = key.open(place, &sealed).unwrap_err();
            assert!(matches!(e, SecretError::Tampered { .. }), "{e}");
        }
        // Nor with a flipped bit, or another nonce.
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(key.open(at("db", "i", 3), &flipped).is_err());
        let mut renonced = sealed.clone();
        renonced.nonce[0] ^= 1;
        assert!(key.open(at("db", "i", 3), &renonced).is_err());
        // Two seals of the same data differ (a fresh nonce each).
        assert_ne!(key.seal(at("db", "i", 3), &d).ciphertext, sealed.ciphertext);
    }

    #[test]
    fn another_key_is_named_not_taken_for_tampering() {
        let sealed =
            MasterKey::from_bytes(&[1; KEY_LEN]).seal(at("db", "i", 1), &data(&[("k", "v")]));
        let other = MasterKey::from_bytes(&[2; KEY_LEN]);
        let e = other.open(at("db", "i", 1), &sealed).unwrap_err();
        assert!(matches!(e, SecretError::OtherKey { .. }), "{e}");
        assert!(e.to_string().contains(other.id()), "{e}");
    }

    #[test]
    fn the_key_file_is_made_once_root_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (made, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 65);
        let (again, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(made.id(), again.id());
        let sealed = made.seal(at("s", "i", 1), &data(&[("k", "v")]));
        assert!(again.open(at("s", "i", 1), &sealed).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a partial file was left"
        );
    }

    #[test]
    fn key_files_others_may_read_or_that_hold_no_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(MasterKey::load(&path).is_ok());
        for wrong in ["ab".repeat(31), "zz".repeat(32), String::new()] {
            std::fs::write(&path, wrong).unwrap();
            let e = MasterKey::load(&path).unwrap_err().to_string();
            assert!(e.contains("64 hex digits"), "{e}");
        }
        std::fs::write(&path, [9u8; KEY_LEN]).unwrap();
        assert!(MasterKey::load(&path).is_ok());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = MasterKey::load(&link).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A file that is there but unreadable as a key is never replaced by a new one.
        std::fs::write(&path, "short").unwrap();
        assert!(MasterKey::load_or_create(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }
}
