//! The names in a secret: the secret's own (a DNS subdomain, as a Kubernetes Secret's, so
//! Knative's `secretKeyRef` names map as they are) and its keys (as a Kubernetes Secret's
//! `data` keys), the limits on what one version holds, and a service's use of a secret
//! ([`SecretUse`], Cloud Run's `--set-secrets` grammar).

use std::fmt;
use std::str::FromStr;

/// Most keys in one version.
pub const MAX_SECRET_KEYS: usize = 100;
/// Most bytes of all values of one version together (Cloud Run's limit).
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Why a secret's name or key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretNameError(String);

/// A secret's name: up to 253 of `a-z`, `0-9`, `-` and `.`, starting and ending with a
/// letter or digit.
pub fn validate_secret_name(name: &str) -> Result<(), SecretNameError> {
    validate_data_name("secret", name)
}

/// The name of a `kind` of data (`secret`, `config map`): the rules of a secret's name.
pub fn validate_data_name(kind: &str, name: &str) -> Result<(), SecretNameError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > 253
        || !name.chars().all(ok_char)
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        return Err(SecretNameError(format!(
            "{kind} name {name:?} must be 1 to 253 of a-z, 0-9, '-' and '.', starting and \
             ending with a letter or digit"
        )));
    }
    Ok(())
}

/// A key in a secret: up to 253 of letters, digits, `-`, `_` and `.`, not `.` or `..`
/// (it may name a file of a secret volume).
pub fn validate_secret_key(key: &str) -> Result<(), SecretNameError> {
    validate_data_key("secret", key)
}

/// A key in a `kind` of data (`secret`, `config map`): the rules of a secret's key.
pub fn validate_data_key(kind: &str, key: &str) -> Result<(), SecretNameError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || key.len() > 253 || !key.chars().all(ok_char) || key == "." || key == ".." {
        return Err(SecretNameError(format!(
            "{kind} key {key:?} must be 1 to 253 of letters, digits, '-', '_' and '.', and \
             not '.' or '..'"
        )));
    }
    Ok(())
}

/// Which version of a secret a service takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretVersionRef {
    /// The newest enabled version when the instance starts (and, for files, as it moves).
    Latest,
    Number(u32),
}

/// Where an instance finds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretTarget {
    /// An environment variable holding one value.
    Env(String),
    /// A variable per key, named by the key after this prefix (Kubernetes' `envFrom`):
    /// `PREFIX*=SECRET:VERSION`, `*=SECRET:VERSION` for none.
    EnvAll(String),
    /// A file holding one value (`/secrets/db`), alone in a read-only directory.
    File(String),
    /// A read-only directory with a file per key (`/etc/tls/`).
    Dir(String),
}

/// One use of a secret by a service: `ENV=SECRET[/KEY]:VERSION`, `/PATH=SECRET[/KEY]:VERSION`
/// (one value in a file) or `/DIR/=SECRET:VERSION` (a file per key); `VERSION` is
/// `latest` or a number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretUse {
    pub target: SecretTarget,
    /// A secret, or a config map (`TARGET=configmap:NAME[/KEY]`: plain settings, no
    /// versions, always the current ones).
    pub from: UseSource,
    /// The secret's (or config map's) name.
    pub secret: String,
    /// The key whose value is taken; `None`: the secret's only key (or all, for a
    /// directory).
    pub key: Option<String>,
    pub version: SecretVersionRef,
}

/// Where a use's values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum UseSource {
    #[default]
    Secret,
    ConfigMap,
}

/// Paths a secret may not be put under: the kernel's and the runtime's.
const FORBIDDEN_ROOTS: &[&str] = &["/proc", "/sys", "/dev", "/etc/resolv.conf", "/etc/hostname"];

/// Whether `name` is an environment variable name: a letter or `_`, then letters, digits
/// and `_`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An absolute path of plain components: no `.`, `..` or empty ones, not `/`.
fn path_ok(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty()
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

fn parse_target(target: &str) -> Result<SecretTarget, SecretNameError> {
    if let Some(prefix) = target.strip_suffix('*') {
        if !prefix.is_empty() && !is_env_name(prefix) {
            return Err(SecretNameError(format!(
                "{target:?}: the prefix must start an environment variable name"
            )));
        }
        return Ok(SecretTarget::EnvAll(prefix.to_owned()));
    }
    if !target.starts_with('/') {
        if !is_env_name(target) {
            return Err(SecretNameError(format!(
                "{target:?} is neither an environment variable name nor an absolute path"
            )));
        }
        return Ok(SecretTarget::Env(target.to_owned()));
    }
    let (path, dir) = match target.strip_suffix('/') {
        Some(p) => (p, true),
        None => (target, false),
    };
    if !path_ok(path) {
        return Err(SecretNameError(format!(
            "{target:?} must be an absolute path without '.', '..' or empty parts"
        )));
    }
    let under = |root: &str| path == root || path.starts_with(&format!("{root}/"));
    if let Some(root) = FORBIDDEN_ROOTS.iter().find(|r| under(r)) {
        return Err(SecretNameError(format!(
            "{target:?} is under {root}, which the sandbox provides"
        )));
    }
    Ok(if dir {
        SecretTarget::Dir(path.to_owned())
    } else {
        SecretTarget::File(path.to_owned())
    })
}

impl FromStr for SecretUse {
    type Err = SecretNameError;

    fn from_str(s: &str) -> Result<SecretUse, SecretNameError> {
        let shape = || {
            SecretNameError(format!(
                "{s:?} is not TARGET=SECRET[/KEY]:VERSION (TARGET an environment variable or \
                 an absolute path, VERSION latest or a number)"
            ))
        };
        let (target, source) = s.split_once('=').ok_or_else(shape)?;
        let (from, name, version) = match source.strip_prefix("configmap:") {
            Some(name) => (UseSource::ConfigMap, name, SecretVersionRef::Latest),
            None => {
                let (name, version) = source.rsplit_once(':').ok_or_else(shape)?;
                let version = match version {
                    "latest" => SecretVersionRef::Latest,
                    n => match n.parse::<u32>() {
                        Ok(n) if n > 0 && n.to_string() == version => SecretVersionRef::Number(n),
                        _ => return Err(shape()),
                    },
                };
                (UseSource::Secret, name, version)
            }
        };
        let (secret, key) = match name.split_once('/') {
            Some((secret, key)) => (secret, Some(key)),
            None => (name, None),
        };
        validate_secret_name(secret)?;
        if let Some(key) = key {
            validate_secret_key(key)?;
        }
        let target = parse_target(target)?;
        if matches!(target, SecretTarget::EnvAll(_)) && key.is_some() {
            return Err(SecretNameError(format!(
                "{s:?}: PREFIX* gets a variable for every key; name the variable instead"
            )));
        }
        if matches!(target, SecretTarget::Dir(_)) && key.is_some() {
            return Err(SecretNameError(format!(
                "{s:?}: a directory gets a file for every key; pick a key for a file path \
                 instead"
            )));
        }
        Ok(SecretUse {
            target,
            from,
            secret: secret.to_owned(),
            key: key.map(str::to_owned),
            version,
        })
    }
}

impl fmt::Display for SecretUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            SecretTarget::Env(name) | SecretTarget::File(name) => write!(f, "{name}=")?,
            SecretTarget::EnvAll(prefix) => write!(f, "{prefix}*=")?,
            SecretTarget::Dir(path) => write!(f, "{path}/=")?,
        }
        if self.from == UseSource::ConfigMap {
            write!(f, "configmap:")?;
        }
        write!(f, "{}", self.secret)?;
        if let Some(key) = &self.key {
            write!(f, "/{key}")?;
        }
        match (self.from, self.version) {
            (UseSource::ConfigMap, _) => Ok(()),
            (_, SecretVersionRef::Latest) => write!(f, ":latest"),
            (_, SecretVersionRef::Number(n)) => write!(f, ":{n}"),
        }
    }
}

impl serde::Serialize for SecretUse {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SecretUse {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks that `uses` do not collide: an environment variable set twice, two secrets in
/// one directory (each file target owns its directory, as on Cloud Run), or one target
/// inside another's directory.
pub fn check_secret_uses(uses: &[SecretUse]) -> Result<(), SecretNameError> {
    let mut envs = std::collections::HashSet::new();
    let mut dirs: Vec<(&str, &SecretUse)> = Vec::new();
    for u in uses {
        match &u.target {
            SecretTarget::Env(name) => {
                if !envs.insert(name.as_str()) {
                    return Err(SecretNameError(format!("{name} is given two secrets")));
                }
            }
            SecretTarget::File(path) => {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                if dir.is_empty() {
                    return Err(SecretNameError(format!(
                        "{path}: a secret file needs a directory of its own, not /"
                    )));
                }
                dirs.push((dir, u));
            }
            SecretTarget::Dir(path) => dirs.push((path, u)),
            SecretTarget::EnvAll(_) => {}
        }
    }
    for (i, (a, ua)) in dirs.iter().enumerate() {
        for (b, ub) in &dirs[i + 1..] {
            let nested =
                a == b || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"));
            if nested {
                return Err(SecretNameError(format!(
                    "{ua} and {ub} share a directory: each secret mount needs its own"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_parse_from_the_set_secrets_grammar_and_print_back() {
        for (text, target, secret, key, version) in [
            (
                "DB_PASS=db-pass:latest",
                SecretTarget::Env("DB_PASS".into()),
                "db-pass",
                None,
                SecretVersionRef::Latest,
            ),
            (
                "DB_PASS=db-pass/password:3",
                SecretTarget::Env("DB_PASS".into()),
                "db-pass",
                Some("password"),
                SecretVersionRef::Number(3),
            ),
            (
                "/secrets/db=db-pass:latest",
                SecretTarget::File("/secrets/db".into()),
                "db-pass",
                None,
                SecretVersionRef::Latest,
            ),
            (
                "/etc/tls/=tls:2",
                SecretTarget::Dir("/etc/tls".into()),
                "tls",
                None,
                SecretVersionRef::Number(2),
            ),
            (
                "DB_*=db:latest",
                SecretTarget::EnvAll("DB_".into()),
                "db",
                None,
                SecretVersionRef::Latest,
            ),
            (
                "*=db:1",
                SecretTarget::EnvAll(String::new()),
                "db",
                None,
                SecretVersionRef::Number(1),
            ),
        ] {
            let u: SecretUse = text.parse().unwrap();
            assert_eq!(u.target, target, "{text}");
            assert_eq!(u.from, UseSource::Secret);
            assert_eq!(
                (u.secret.as_str(), u.key.as_deref(), u.version),
                (secret, key, version)
            );
            assert_eq!(u.to_string(), text);
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(serde_json::from_str::<SecretUse>(&json).unwrap(), u);
        }
    }

    #[test]
    fn config_map_uses_have_no_version() {
        for text in [
            "HOST=configmap:app/host",
            "/etc/app/=configmap:app",
            "APP_*=configmap:app",
        ] {
            let u: SecretUse = text.parse().unwrap();
            assert_eq!(
                (u.from, u.version),
                (UseSource::ConfigMap, SecretVersionRef::Latest)
            );
            assert_eq!(u.secret, "app");
            assert_eq!(u.to_string(), text);
        }
        assert!("HOST=configmap:app/host:1".parse::<SecretUse>().is_err());
    }

    #[test]
    fn malformed_uses_are_refused_with_what_is_wrong() {
        for (bad, says) in [
            ("DB_PASS", "is not TARGET="),
            ("DB_PASS=db-pass", "is not TARGET="),
            ("DB_PASS=db-pass:0", "is not TARGET="),
            ("DB_PASS=db-pass:03", "is not TARGET="),
            ("DB_PASS=db-pass:newest", "is not TARGET="),
            ("1DB=db:latest", "neither an environment variable"),
            ("DB-PASS=db:latest", "neither an environment variable"),
            ("DB=Db:latest", "secret name"),
            ("DB=db/../x:latest", "secret key"),
            ("relative/path=db:1", "neither an environment variable"),
            ("/=db:1", "absolute path without"),
            ("/a/../b=db:1", "absolute path without"),
            ("/a//b=db:1", "absolute path without"),
            ("/proc/x=db:1", "under /proc"),
            ("/dev=db:1", "under /dev"),
            (
                "/etc/tls/=tls/key:1",
                "a directory gets a file for every key",
            ),
            ("DB_*=db/k:1", "gets a variable for every key"),
            ("1*=db:1", "the prefix must start"),
        ] {
            let e = bad.parse::<SecretUse>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn colliding_uses_are_refused() {
        let uses =
            |list: &[&str]| -> Vec<SecretUse> { list.iter().map(|u| u.parse().unwrap()).collect() };
        assert!(check_secret_uses(&uses(&["A=a:1", "B=a:1", "/s/a=a:1", "/t/=b:1"])).is_ok());
        for bad in [
            &["A=a:1", "A=b:1"][..],
            &["/s/a=a:1", "/s/b=b:1"],
            &["/s/=a:1", "/s/x/y=b:1"],
            &["/s/a=a:1", "/s/=b:1"],
            &["/top=a:1"],
        ] {
            assert!(check_secret_uses(&uses(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        for good in ["db", "db-pass", "a.b-c.0", "0"] {
            assert!(validate_secret_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "DB",
            "-db",
            "db-",
            "db_pass",
            "db/pass",
            "a b",
            ".a",
            long.as_str(),
        ] {
            assert!(validate_secret_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_keys_may_name_files_but_not_climb() {
        for good in ["password", "DB_PASS", "tls.crt", ".hidden", "a-b"] {
            assert!(validate_secret_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(validate_secret_key(bad).is_err(), "{bad}");
        }
    }
}
