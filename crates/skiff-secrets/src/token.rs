//! API tokens: `skiff_<ID>_<SECRET>`, where the id (12 hex digits) names the token in
//! the store and the secret (64 hex digits, 256 random bits) is kept only as its SHA-256.
//! A fast hash is enough for a secret of that strength; it is compared in constant time.

use crate::hex;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const PREFIX: &str = "skiff_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;

/// A token just made: the text to hand out once, and what the store keeps.
pub struct NewToken {
    /// The whole token, shown once.
    pub text: Zeroizing<String>,
    pub id: String,
    /// SHA-256 of the secret part.
    pub hash: Vec<u8>,
}

fn digest(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Makes a token.
pub fn new_token() -> NewToken {
    let mut bytes = Zeroizing::new([0u8; ID_HEX / 2 + SECRET_HEX / 2]);
    SystemRandom::new()
        .fill(&mut bytes[..])
        .unwrap_or_else(|_| panic!("the system gave no random bytes for a token"));
    let id = hex(&bytes[..ID_HEX / 2]);
    let secret = Zeroizing::new(hex(&bytes[ID_HEX / 2..]));
    NewToken {
        text: Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str())),
        hash: digest(&secret),
        id,
    }
}

/// The id and secret of a token's text; `None` when it is not one (a token's text is
/// never put in an error).
pub fn split_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(id, ID_HEX) && is_hex(secret, SECRET_HEX)).then_some((id, secret))
}

/// Whether `secret` is the one whose hash is `hash`, compared in constant time.
pub fn secret_matches(secret: &str, hash: &[u8]) -> bool {
    same_bytes(&digest(secret), hash)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_splits_into_its_id_and_a_secret_that_matches_its_hash_only() {
        let t = new_token();
        let (id, secret) = split_token(&t.text).unwrap();
        assert_eq!(id, t.id);
        assert!(secret_matches(secret, &t.hash));
        let other = new_token();
        assert_ne!(other.id, t.id);
        assert!(!secret_matches(
            split_token(&other.text).unwrap().1,
            &t.hash
        ));
        assert!(!t
            .hash
            .windows(8)
            .any(|w| t.text.as_bytes().windows(8).any(|x| x == w)));
    }

    #[test]
    fn anything_else_is_not_a_token() {
        let t = new_token();
        let text = t.text.as_str();
        for bad in [
            "",
            "skiff_",
            &text[1..],
            &text[..text.len() - 1],
            &text.replace('_', "-"),
            &format!("{text}0"),
            "Bearer skiff_x",
        ] {
            assert!(split_token(bad).is_none(), "{bad}");
        }
    }
}
