//! The names in a secret: the secret's own (a DNS subdomain, as a Kubernetes Secret's, so
//! Knative's `secretKeyRef` names map as they are) and its keys (as a Kubernetes Secret's
//! `data` keys), and the limits on what one version holds.

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
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > 253
        || !name.chars().all(ok_char)
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        return Err(SecretNameError(format!(
            "secret name {name:?} must be 1 to 253 of a-z, 0-9, '-' and '.', starting and \
             ending with a letter or digit"
        )));
    }
    Ok(())
}

/// A key in a secret: up to 253 of letters, digits, `-`, `_` and `.`, not `.` or `..`
/// (it may name a file of a secret volume).
pub fn validate_secret_key(key: &str) -> Result<(), SecretNameError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || key.len() > 253 || !key.chars().all(ok_char) || key == "." || key == ".." {
        return Err(SecretNameError(format!(
            "secret key {key:?} must be 1 to 253 of letters, digits, '-', '_' and '.', and \
             not '.' or '..'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
