//! Image references as users type them: `name[:tag]` or `name@sha256:…`, normalised so
//! that `hello` and `hello:latest` name the same image.

use crate::Digest;
use std::fmt;
use std::str::FromStr;

/// A reference to a local image: a tagged name or a digest (full or a unique prefix is
/// resolved by the store, not here).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// `name:tag`, with the tag defaulting to `latest`.
    Tag {
        /// Repository name, e.g. `library/hello` or `hello`.
        name: String,
        /// Tag, e.g. `latest`.
        tag: String,
    },
    /// A manifest digest.
    Digest(Digest),
}

/// A reference that is neither a valid `name[:tag]` nor a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {value:?}: {why}")]
pub struct ReferenceError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

fn name_ok(name: &str) -> bool {
    // OCI distribution: path components of [a-z0-9] separated by [._-], joined by '/'.
    // A registry host with a port (`localhost:5000/x`) also appears in names.
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'.' | b'_' | b'-' | b':')
                })
                && part.as_bytes()[0].is_ascii_alphanumeric()
        })
}

fn tag_ok(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag.as_bytes()[0] != b'.'
        && tag.as_bytes()[0] != b'-'
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| ReferenceError {
            value: s.to_owned(),
            why,
        };
        if s.starts_with("sha256:") {
            return s
                .parse()
                .map(ImageRef::Digest)
                .map_err(|_| err("a digest is sha256: and 64 lowercase hex digits"));
        }
        if let Some((_, digest)) = s.split_once('@') {
            return digest
                .parse()
                .map(ImageRef::Digest)
                .map_err(|_| err("a digest is sha256: and 64 lowercase hex digits"));
        }
        // The tag is after the last ':' unless that ':' belongs to a registry port
        // (a '/' follows it).
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
        if !name_ok(name) {
            return Err(err(
                "names are lowercase letters, digits and . _ - separated by /",
            ));
        }
        if !tag_ok(tag) {
            return Err(err(
                "tags are 1-128 of letters, digits, . _ - and do not start with . or -",
            ));
        }
        Ok(ImageRef::Tag {
            name: name.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Tag { name, tag } => write!(f, "{name}:{tag}"),
            ImageRef::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_defaults_to_latest() {
        let r: ImageRef = "hello".parse().unwrap();
        assert_eq!(r.to_string(), "hello:latest");
        let r: ImageRef = "localhost:5000/team/app:v1.2".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/team/app:v1.2");
        let r: ImageRef = "localhost:5000/team/app".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/team/app:latest");
    }

    #[test]
    fn digests_parse() {
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(d.parse::<ImageRef>().unwrap().to_string(), d);
        let r: ImageRef = format!("app@{d}").parse().unwrap();
        assert!(matches!(r, ImageRef::Digest(_)));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "../x",
            "x:",
            "x:-tag",
            "/abs",
            "sha256:zz",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} accepted");
        }
    }
}
