//! Registry credentials and settings: what `skiff registry login` stores (root-only, in
//! `$SKIFF_HOME/registries.json`), what Docker and podman/skopeo users already have
//! (`~/.docker/config.json`, `containers/auth.json`: base64 `user:password` under
//! `auths`), and per-registry CAs (`$SKIFF_HOME/certs.d/HOST/ca.crt`, as Docker's
//! `certs.d`). Secrets are never printed: `Debug` hides them.

use crate::{PullOptions, RegistryAuth};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One registry's settings as `skiff registry login` keeps them.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Login {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Plain HTTP allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Every registry's settings, read from skiff's own file and the usual auth files.
#[derive(Debug, Default)]
pub struct Registries {
    home: PathBuf,
    logins: BTreeMap<String, Login>,
}

/// Why the settings could not be read or written (naming the file).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct CredentialsError {
    pub path: String,
    pub why: String,
}

fn err(path: &Path, why: impl std::fmt::Display) -> CredentialsError {
    CredentialsError {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

const FILE: &str = "registries.json";

impl Registries {
    /// Reads skiff's file under `home`, then fills in registries it does not name from
    /// the Docker and containers auth files of this (root) user.
    pub fn load(home: &Path) -> Result<Registries, CredentialsError> {
        let mut logins = read_logins(&home.join(FILE))?;
        for file in auth_files() {
            for (host, login) in read_auth_file(&file) {
                logins.entry(host).or_insert(login);
            }
        }
        Ok(Registries {
            home: home.to_owned(),
            logins,
        })
    }

    /// Stores `login` for `registry` in skiff's file (mode 0600, written whole and
    /// renamed into place).
    pub fn save_login(home: &Path, registry: &str, login: Login) -> Result<(), CredentialsError> {
        Self::edit(home, |all| {
            all.insert(registry.to_owned(), login);
        })
    }

    /// Forgets `registry` in skiff's file; whether it was there.
    pub fn remove_login(home: &Path, registry: &str) -> Result<bool, CredentialsError> {
        let mut found = false;
        Self::edit(home, |all| found = all.remove(registry).is_some())?;
        Ok(found)
    }

    fn edit(
        home: &Path,
        change: impl FnOnce(&mut BTreeMap<String, Login>),
    ) -> Result<(), CredentialsError> {
        let path = home.join(FILE);
        let mut all = read_logins(&path)?;
        change(&mut all);
        let tmp = home.join(format!("{FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        // An old file's mode is not trusted: root-only whatever it was.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&tmp, e))?;
        let bytes = serde_json::to_vec_pretty(&all).expect("logins serialize");
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    /// How to pull from `registry` (`host[:port]`): its credentials, whether plain HTTP
    /// is allowed, and its CA from `certs.d`.
    pub fn options_for(&self, registry: &str) -> PullOptions {
        let login = self.logins.get(registry).cloned().unwrap_or_default();
        let auth = match (login.username, login.password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user, password),
            _ => RegistryAuth::Anonymous,
        };
        let ca = self.home.join("certs.d").join(registry).join("ca.crt");
        PullOptions {
            auth,
            insecure: login.insecure,
            ca_pem: std::fs::read(ca).into_iter().collect(),
            ..PullOptions::default()
        }
    }

    /// The registries skiff has settings for (names only).
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.logins.keys().map(String::as_str)
    }
}

/// skiff's own file of logins (none when it does not exist yet).
fn read_logins(path: &Path) -> Result<BTreeMap<String, Login>, CredentialsError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(err(path, e)),
    }
}

/// The auth files podman, skopeo and Docker read for root, in their order.
fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(dir) = std::env::var("XDG_RUNTIME_DIR") {
        files.push(Path::new(&dir).join("containers/auth.json"));
    }
    files.push(PathBuf::from("/run/containers/0/auth.json"));
    if let Ok(home) = std::env::var("HOME") {
        files.push(Path::new(&home).join(".docker/config.json"));
    }
    files
}

/// The `auths` of a Docker/containers auth file: `{"auths": {"HOST": {"auth":
/// base64("user:password")}}}`. Unreadable files and entries are skipped.
fn read_auth_file(path: &Path) -> Vec<(String, Login)> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
    }
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(file) = serde_json::from_slice::<File>(&bytes) else {
        tracing::warn!("{}: not a JSON auth file; skipped", path.display());
        return Vec::new();
    };
    file.auths
        .into_iter()
        .filter_map(|(host, entry)| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(entry.auth?.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            // Docker writes `https://index.docker.io/v1/` for Docker Hub.
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            Some((
                host,
                Login {
                    username: Some(user.to_owned()),
                    password: Some(password.to_owned()),
                    insecure: false,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_stored_root_only_and_read_back() {
        let home = tempfile::tempdir().unwrap();
        let login = Login {
            username: Some("ci".into()),
            password: Some("s3cret".into()),
            insecure: true,
        };
        Registries::save_login(home.path(), "127.0.0.1:5000", login).unwrap();
        let mode = std::fs::metadata(home.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let all = Registries::load(home.path()).unwrap();
        let opts = all.options_for("127.0.0.1:5000");
        assert!(opts.insecure);
        assert!(
            matches!(opts.auth, RegistryAuth::Basic(ref u, ref p) if u == "ci" && p == "s3cret")
        );
        assert!(matches!(
            all.options_for("other:5000").auth,
            RegistryAuth::Anonymous
        ));
        assert!(
            !format!("{all:?}").contains("s3cret"),
            "Debug shows no password"
        );
        assert!(Registries::remove_login(home.path(), "127.0.0.1:5000").unwrap());
        assert!(!Registries::remove_login(home.path(), "127.0.0.1:5000").unwrap());
    }

    #[test]
    fn docker_auth_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("me:pw:with:colons");
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"ghcr.io":{{}}}}}}"#),
        )
        .unwrap();
        let read = read_auth_file(&file);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, "index.docker.io");
        assert_eq!(read[0].1.password.as_deref(), Some("pw:with:colons"));
    }
}
