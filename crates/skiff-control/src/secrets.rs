//! Secrets: made, given new versions, listed, disabled and removed through typed
//! [`SecretCommand`]s; each version sealed under the daemon's master key before it
//! reaches the store, and opened only for an instance that uses it.
//!
//! Nothing here returns, logs or puts in an error a value: answers carry names, version
//! numbers and keys.

use crate::documents::{SecretDetail, SecretSummary, SecretVersionInfo};
use crate::{Control, ControlError};
use skiff_core::{
    validate_secret_key, validate_secret_name, SecretTarget, SecretUse, SecretVersionRef,
    UseSource, MAX_SECRET_BYTES, MAX_SECRET_KEYS,
};
use skiff_sandbox::secretfs::SecretFs;
use skiff_secrets::{Place, Sealed, SecretData};
use skiff_store::{NewSecretVersion, SealedRecord, SecretRecord};

/// What is asked of secrets.
#[derive(Debug)]
pub enum SecretCommand {
    List,
    Describe {
        name: String,
    },
    /// A new secret with its first version.
    Create {
        name: String,
        data: SecretData,
        /// The services it may be given to; empty: any. Fixed for its life.
        services: Vec<String>,
    },
    /// The secret's next version.
    AddVersion {
        name: String,
        data: SecretData,
    },
    /// A version enabled or disabled (disabled ones are kept, but no instance gets them).
    SetEnabled {
        name: String,
        version: u32,
        enabled: bool,
    },
    Remove {
        name: String,
    },
}

/// What a secret command answers.
#[derive(Debug)]
pub enum SecretAnswer {
    Secrets(Vec<SecretSummary>),
    Secret(SecretDetail),
    Removed(String),
}

/// Which version of a secret: a number, or the newest enabled one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretVersion {
    Latest,
    Number(u32),
}

/// What an instance gets from its revision's secrets, resolved when it is prepared.
/// `Debug` shows names only.
#[derive(Clone, Default)]
pub struct InstanceSecrets {
    /// `NAME=VALUE` entries for the environment.
    pub env: Vec<String>,
    /// Secrets' files, each a mount to attach read-only at its directory.
    pub mounts: Vec<skiff_sandbox::SecretMount>,
}

impl std::fmt::Debug for InstanceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .env
            .iter()
            .map(|kv| kv.split('=').next().unwrap_or_default())
            .collect();
        f.debug_struct("InstanceSecrets")
            .field("env", &names)
            .field(
                "mounts",
                &self.mounts.iter().map(|m| &m.target).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The files of a secret use an instance has, kept to write new versions into.
pub(crate) struct LiveSecretFiles {
    pub(crate) used: SecretUse,
    pub(crate) fs: SecretFs,
}

/// The directory a file or directory target is mounted on, and for a file target, the
/// file's name.
fn mount_point(target: &SecretTarget) -> Option<(&str, Option<&str>)> {
    match target {
        SecretTarget::Env(_) | SecretTarget::EnvAll(_) => None,
        SecretTarget::File(path) => path.rsplit_once('/').map(|(dir, file)| (dir, Some(file))),
        SecretTarget::Dir(dir) => Some((dir.as_str(), None)),
    }
}

/// Writes what `u` takes from `data` into `fs`: one file, or a file per key (and no
/// other).
fn write_files(
    fs: &SecretFs,
    u: &SecretUse,
    version: u32,
    data: &SecretData,
) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("writing the files of {u}: {e}");
    match mount_point(&u.target) {
        Some((_, Some(file))) => {
            let value = one_value(u, version, data)?;
            fs.write(file, value).map_err(failed)?;
            fs.retain(&[file]).map_err(failed)
        }
        Some((_, None)) => {
            for (key, value) in data.iter() {
                fs.write(key, value).map_err(failed)?;
            }
            fs.retain(&data.keys().collect::<Vec<_>>()).map_err(failed)
        }
        None => Ok(()),
    }
}

impl From<SecretVersionRef> for SecretVersion {
    fn from(v: SecretVersionRef) -> Self {
        match v {
            SecretVersionRef::Latest => SecretVersion::Latest,
            SecretVersionRef::Number(n) => SecretVersion::Number(n),
        }
    }
}

/// What `u` takes its values from, as messages name it: `secret S version N` or
/// `config map C`.
fn source_label(u: &SecretUse, version: u32) -> String {
    match u.from {
        UseSource::Secret => format!("secret {} version {version}", u.secret),
        UseSource::ConfigMap => format!("config map {}", u.secret),
    }
}

/// The one value `u` takes from `data` (version `version` of its secret): its key's, or
/// the only one there is.
fn one_value<'a>(u: &SecretUse, version: u32, data: &'a SecretData) -> Result<&'a [u8], String> {
    let keys = || data.keys().collect::<Vec<_>>().join(", ");
    let source = source_label(u, version);
    match &u.key {
        Some(key) => data
            .get(key)
            .ok_or_else(|| format!("{source} has no key {key} (its keys: {})", keys())),
        None => match data.iter().next() {
            Some((_, value)) if data.len() == 1 => Ok(value),
            _ => Err(format!(
                "{source} has keys {}: name one, as {}/KEY",
                keys(),
                u.secret
            )),
        },
    }
}

/// A value as an environment variable's: text without NUL bytes.
fn env_text(version: u32, value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value)
        .ok()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| {
            format!(
                "version {version}'s value is not text without NUL bytes, which an \
                 environment variable must be: give it as a file"
            )
        })
}

fn no_secret(name: &str) -> ControlError {
    ControlError::NotFound(format!("no such secret: {name}"))
}

fn check_data(data: &SecretData) -> Result<(), ControlError> {
    if data.is_empty() {
        return Err(ControlError::bad_field(
            "data",
            "a secret version needs at least one key",
        ));
    }
    if data.len() > MAX_SECRET_KEYS {
        return Err(ControlError::bad_field(
            "data",
            format!(
                "{} keys: a version holds at most {MAX_SECRET_KEYS}",
                data.len()
            ),
        ));
    }
    for key in data.keys() {
        validate_secret_key(key).map_err(|e| ControlError::bad_field("data", e.to_string()))?;
    }
    if data.value_bytes() > MAX_SECRET_BYTES {
        return Err(ControlError::TooLarge(format!(
            "the values hold {} bytes: a version holds at most {MAX_SECRET_BYTES}",
            data.value_bytes()
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ControlError> {
    validate_secret_name(name).map_err(|e| ControlError::bad_field("name", e.to_string()))
}

fn sealed_record(s: Sealed) -> SealedRecord {
    SealedRecord {
        key_id: s.key_id,
        nonce: s.nonce.to_vec(),
        ciphertext: s.ciphertext,
    }
}

fn detail(s: &SecretRecord) -> SecretDetail {
    SecretDetail {
        name: s.name.clone(),
        created_at: s.created_at,
        services: s.services.clone(),
        versions: s
            .versions
            .iter()
            .rev()
            .map(|v| SecretVersionInfo {
                version: v.version,
                state: if v.enabled { "enabled" } else { "disabled" }.to_owned(),
                keys: v.keys.clone(),
                created_at: v.created_at,
            })
            .collect(),
    }
}

fn summary(s: &SecretRecord) -> SecretSummary {
    let latest = s.latest_enabled();
    SecretSummary {
        name: s.name.clone(),
        created_at: s.created_at,
        services: s.services.clone(),
        versions: s.versions.len(),
        latest: latest.map(|v| v.version),
        keys: latest.map(|v| v.keys.clone()).unwrap_or_default(),
    }
}

fn new_incarnation() -> String {
    crate::supervisor::random_hex(8)
}

impl Control {
    /// Carries out a secret command; writes run one at a time with the other writes.
    pub async fn execute_secret(
        &self,
        command: SecretCommand,
    ) -> Result<SecretAnswer, ControlError> {
        let _serial = match command {
            SecretCommand::List | SecretCommand::Describe { .. } => None,
            _ => Some(self.write_lock.lock().await),
        };
        match command {
            SecretCommand::List => Ok(SecretAnswer::Secrets(
                self.db().secrets()?.iter().map(summary).collect(),
            )),
            SecretCommand::Describe { name } => self.secret_detail(&name),
            SecretCommand::Create {
                name,
                data,
                services,
            } => {
                check_name(&name)?;
                check_data(&data)?;
                for s in &services {
                    skiff_core::validate_service_name(s)
                        .map_err(|e| ControlError::bad_field("services", e.to_string()))?;
                }
                let incarnation = new_incarnation();
                let first = self.sealed_version(&name, &incarnation, 1, &data);
                if !self
                    .db()
                    .create_secret(&name, &incarnation, &services, &first)?
                {
                    return Err(ControlError::Conflict(format!(
                        "secret {name} exists already: add a version to it instead"
                    )));
                }
                tracing::info!(secret = %name, version = 1, "secret created");
                self.secret_detail(&name)
            }
            SecretCommand::AddVersion { name, data } => {
                check_data(&data)?;
                let record = self.db().secret(&name)?.ok_or_else(|| no_secret(&name))?;
                let number = self
                    .db()
                    .next_secret_version(&name)?
                    .ok_or_else(|| no_secret(&name))?;
                let version = self.sealed_version(&name, &record.incarnation, number, &data);
                if !self.db().add_secret_version(&name, &version)? {
                    return Err(no_secret(&name));
                }
                tracing::info!(secret = %name, version = number, "secret version added");
                self.refresh_prepared(UseSource::Secret, &name).await;
                self.secret_detail(&name)
            }
            SecretCommand::SetEnabled {
                name,
                version,
                enabled,
            } => {
                if !self
                    .db()
                    .set_secret_version_enabled(&name, version, enabled)?
                {
                    return Err(ControlError::NotFound(format!(
                        "secret {name} has no version {version}"
                    )));
                }
                let state = if enabled { "enabled" } else { "disabled" };
                tracing::info!(secret = %name, version, "secret version {state}");
                self.refresh_prepared(UseSource::Secret, &name).await;
                self.secret_detail(&name)
            }
            SecretCommand::Remove { name } => {
                self.refuse_if_used(UseSource::Secret, &name)?;
                if !self.db().delete_secret(&name)? {
                    return Err(no_secret(&name));
                }
                tracing::info!(secret = %name, "secret removed");
                Ok(SecretAnswer::Removed(name))
            }
        }
    }

    /// Refuses to remove secret (or config map) `name` while revisions at work use it.
    pub(crate) fn refuse_if_used(&self, from: UseSource, name: &str) -> Result<(), ControlError> {
        let users: Vec<String> = self
            .runners_using(from, name)
            .iter()
            .map(|r| r.name().to_owned())
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        let what = match from {
            UseSource::Secret => "secret",
            UseSource::ConfigMap => "config map",
        };
        Err(ControlError::Conflict(format!(
            "{what} {name} is used by revision(s) {}: deploy without it first",
            users.join(", ")
        )))
    }

    /// The revisions at work whose instances use secret (or config map) `name`.
    pub(crate) fn runners_using(
        &self,
        from: UseSource,
        name: &str,
    ) -> Vec<std::sync::Arc<crate::Runner>> {
        self.runners()
            .values()
            .filter(|r| {
                r.revision
                    .spec
                    .secrets
                    .iter()
                    .any(|u| u.from == from && u.secret == name)
            })
            .cloned()
            .collect()
    }

    /// Lets go of the sandboxes prepared for revisions using secret `name`, which hold
    /// what `latest` meant when they were made; the next ones resolve it again.
    pub(crate) async fn refresh_prepared(&self, from: UseSource, name: &str) {
        // First: a preparation that resolved before this write sees it when it ends.
        self.secrets_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.update_secret_files(from, name);
        for runner in self.runners_using(from, name) {
            runner.discard_prepared().await;
        }
    }

    /// Changes whenever a secret or config map changes what instances would get.
    pub(crate) fn secrets_generation(&self) -> u64 {
        self.secrets_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn secret_detail(&self, name: &str) -> Result<SecretAnswer, ControlError> {
        let record = self.db().secret(name)?.ok_or_else(|| no_secret(name))?;
        Ok(SecretAnswer::Secret(detail(&record)))
    }

    fn sealed_version(
        &self,
        name: &str,
        incarnation: &str,
        version: u32,
        data: &SecretData,
    ) -> NewSecretVersion {
        let place = Place {
            secret: name,
            incarnation,
            version,
        };
        NewSecretVersion {
            version,
            keys: data.keys().map(str::to_owned).collect(),
            sealed: sealed_record(self.config.secrets_key.seal(place, data)),
        }
    }

    /// Checks that every use opens now, with the keys it asks for (at deploy).
    pub(crate) fn check_secrets(
        &self,
        service: &str,
        uses: &[SecretUse],
    ) -> Result<(), ControlError> {
        self.resolve_secrets(service, uses, None).map(drop)
    }

    /// What an instance (`files_for`: its id and the uid and gid its files belong to)
    /// of a revision using `uses` gets, now: each secret opened at the version named (or
    /// the newest enabled one), its files written. The files are kept for updates until
    /// [`Control::forget_secret_files`]. An error names the secret, version and key at
    /// fault, never a value.
    pub(crate) fn resolve_secrets(
        &self,
        service: &str,
        uses: &[SecretUse],
        files_for: Option<(&str, u32, u32)>,
    ) -> Result<InstanceSecrets, ControlError> {
        let mut out = InstanceSecrets::default();
        let mut live = Vec::new();
        for u in uses {
            let (version, data) = self.open_use(service, u)?;
            let bad = |why: String| ControlError::invalid_spec("secrets", format!("{u}: {why}"));
            if let Some((dir, _)) = mount_point(&u.target) {
                let Some((_, uid, gid)) = files_for else {
                    if matches!(u.target, SecretTarget::File(_)) {
                        one_value(u, version, &data).map_err(bad)?;
                    }
                    continue;
                };
                let (fs, mount) = SecretFs::new(uid, gid)
                    .map_err(|e| bad(format!("making its file system: {e}")))?;
                write_files(&fs, u, version, &data).map_err(bad)?;
                out.mounts.push(skiff_sandbox::SecretMount {
                    target: dir.to_owned(),
                    mount: std::sync::Arc::new(mount),
                });
                live.push(LiveSecretFiles {
                    used: u.clone(),
                    fs,
                });
                continue;
            }
            match &u.target {
                SecretTarget::Env(name) => {
                    let value = one_value(u, version, &data).map_err(bad)?;
                    let text = env_text(version, value).map_err(bad)?;
                    out.env.push(format!("{name}={text}"));
                }
                SecretTarget::EnvAll(prefix) => {
                    for (key, value) in data.iter() {
                        let name = format!("{prefix}{key}");
                        if !skiff_core::is_env_name(&name)
                            || skiff_core::RESERVED_ENV.contains(&name.as_str())
                        {
                            return Err(bad(format!(
                                "version {version}'s key {key} makes {name:?}, which cannot be a \
                                 variable of the app's"
                            )));
                        }
                        let text = env_text(version, value).map_err(bad)?;
                        out.env.push(format!("{name}={text}"));
                    }
                }
                SecretTarget::File(_) | SecretTarget::Dir(_) => {}
            }
        }
        if let Some((id, _, _)) = files_for {
            if !live.is_empty() {
                self.live_secret_files().insert(id.to_owned(), live);
            }
        }
        Ok(out)
    }

    fn live_secret_files(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<LiveSecretFiles>>> {
        self.secret_files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets go of instance `id`'s secret files (it ended, or was never started).
    pub(crate) fn forget_secret_files(&self, id: &str) {
        self.live_secret_files().remove(id);
    }

    /// The values `u` takes for `service`: its secret's version (and number), or its
    /// config map's.
    fn open_use(&self, service: &str, u: &SecretUse) -> Result<(u32, SecretData), ControlError> {
        match u.from {
            UseSource::Secret => self.open_secret_for(&u.secret, u.version.into(), Some(service)),
            UseSource::ConfigMap => Ok((0, self.open_config_map(&u.secret)?)),
        }
    }

    /// Writes the newest enabled version of secret (or the current config map) `name`
    /// into the files of the instances that follow it: they see it without a redeploy.
    fn update_secret_files(&self, from: UseSource, name: &str) {
        let opened = match from {
            UseSource::Secret => self.open_secret(name, SecretVersion::Latest),
            UseSource::ConfigMap => self.open_config_map(name).map(|d| (0, d)),
        };
        let live = self.live_secret_files();
        for (id, files) in live.iter() {
            for f in files.iter().filter(|f| {
                f.used.from == from
                    && f.used.secret == name
                    && f.used.version == SecretVersionRef::Latest
            }) {
                let written = match &opened {
                    Ok((version, data)) => write_files(&f.fs, &f.used, *version, data),
                    Err(e) => Err(e.to_string()),
                };
                match written {
                    Ok(()) => {
                        tracing::info!(instance = %id, source = %name, "files updated")
                    }
                    Err(e) => tracing::warn!(instance = %id, "keeping the secret files: {e}"),
                }
            }
        }
    }

    /// Opens `version` of secret `name` (for an instance that uses it): its number and
    /// data. A disabled version, or one whose stored bytes do not open as this secret's
    /// version, is an error naming the secret and version.
    pub fn open_secret(
        &self,
        name: &str,
        version: SecretVersion,
    ) -> Result<(u32, SecretData), ControlError> {
        self.open_secret_for(name, version, None)
    }

    /// As [`Control::open_secret`], for `service` when it says which: refused (naming
    /// the services it may go to) unless the secret may be given to it.
    fn open_secret_for(
        &self,
        name: &str,
        version: SecretVersion,
        service: Option<&str>,
    ) -> Result<(u32, SecretData), ControlError> {
        let record = self.db().secret(name)?.ok_or_else(|| no_secret(name))?;
        if let Some(service) = service {
            if !record.services.is_empty() && !record.services.iter().any(|s| s == service) {
                return Err(ControlError::invalid_spec(
                    "secrets",
                    format!(
                        "secret {name} may be given to service{} {} only, not to {service}",
                        if record.services.len() == 1 { "" } else { "s" },
                        record.services.join(", ")
                    ),
                ));
            }
        }
        let stored = match version {
            SecretVersion::Latest => record.latest_enabled().ok_or_else(|| {
                ControlError::Conflict(format!("secret {name} has no enabled version"))
            })?,
            SecretVersion::Number(n) => record.version(n).ok_or_else(|| {
                ControlError::NotFound(format!("secret {name} has no version {n}"))
            })?,
        };
        if !stored.enabled {
            return Err(ControlError::Conflict(format!(
                "version {} of secret {name} is disabled",
                stored.version
            )));
        }
        let nonce = stored.sealed.nonce.as_slice().try_into().map_err(|_| {
            ControlError::internal(format!(
                "secret {name} version {}: its stored nonce is malformed",
                stored.version
            ))
        })?;
        let sealed = Sealed {
            key_id: stored.sealed.key_id.clone(),
            nonce,
            ciphertext: stored.sealed.ciphertext.clone(),
        };
        let place = Place {
            secret: name,
            incarnation: &record.incarnation,
            version: stored.version,
        };
        let data = self
            .config
            .secrets_key
            .open(place, &sealed)
            .map_err(ControlError::internal)?;
        Ok((stored.version, data))
    }
}
