//! The data of one secret version: keys to values. Values are wiped from memory when
//! dropped and never printed; `Debug` shows the keys only.

use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// Keys to values, as a Kubernetes Secret's `data`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData {
    entries: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretData {
    pub fn new() -> SecretData {
        SecretData::default()
    }

    /// Sets `key` to `value`; false (and nothing changed) when the key is there already.
    pub fn insert(&mut self, key: &str, value: Vec<u8>) -> bool {
        if self.entries.contains_key(key) {
            return false;
        }
        self.entries.insert(key.to_owned(), Zeroizing::new(value));
        true
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|v| v.as_slice())
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of all values together.
    pub fn value_bytes(&self) -> usize {
        self.entries.values().map(|v| v.len()).sum()
    }

    /// As bytes to seal: a count, then each key and value with its length (big-endian
    /// u32s).
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            4 + self
                .entries
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>(),
        ));
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (k, v) in &self.entries {
            for part in [k.as_bytes(), v.as_slice()] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    /// What [`encode`](Self::encode) made; `None` for anything else.
    pub(crate) fn decode(mut bytes: &[u8]) -> Option<SecretData> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if bytes.len() < n {
                return None;
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Some(head)
        }
        fn length(bytes: &mut &[u8]) -> Option<usize> {
            let b = take(bytes, 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let count = length(&mut bytes)?;
        let mut data = SecretData::new();
        for _ in 0..count {
            let klen = length(&mut bytes)?;
            let key = std::str::from_utf8(take(&mut bytes, klen)?).ok()?;
            let vlen = length(&mut bytes)?;
            let value = take(&mut bytes, vlen)?.to_vec();
            if !data.insert(key, value) {
                return None;
            }
        }
        bytes.is_empty().then_some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_every_key_and_value() {
        let mut d = SecretData::new();
        assert!(d.insert("user", b"app".to_vec()));
        assert!(d.insert("password", b"s3cr\0t\xff".to_vec()));
        assert!(d.insert("empty", Vec::new()));
        assert!(!d.insert("user", b"other".to_vec()));
        let back = SecretData::decode(&d.encode()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.get("password"), Some(&b"s3cr\0t\xff"[..]));
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            ["empty", "password", "user"]
        );
    }

    #[test]
    fn anything_but_an_encoding_is_refused() {
        let mut d = SecretData::new();
        d.insert("k", b"v".to_vec());
        let good = d.encode().to_vec();
        let mut longer = good.clone();
        longer.push(0);
        for bad in [
            &good[..good.len() - 1],
            &longer[..],
            &[][..],
            &[0, 0, 0, 9][..],
        ] {
            assert!(SecretData::decode(bad).is_none(), "{bad:?}");
        }
        // Two entries of one key.
        let mut twice = 2u32.to_be_bytes().to_vec();
        twice.extend_from_slice(&good[4..]);
        twice.extend_from_slice(&good[4..]);
        assert!(SecretData::decode(&twice).is_none());
    }

    #[test]
    fn debug_shows_keys_and_never_values() {
        let mut d = SecretData::new();
        d.insert("password", b"hunter2".to_vec());
        let shown = format!("{d:?}");
        assert!(
            shown.contains("password") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
