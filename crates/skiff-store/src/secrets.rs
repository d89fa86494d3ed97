//! Secret rows: a secret (its name and incarnation, a random id made at creation so a
//! secret made again under an old name shares nothing with the old one) and its numbered
//! versions, each enabled or disabled, holding the names of its keys and the sealed
//! bytes. This module never sees a value: sealing and opening are `skiff-secrets`'.

use crate::{now_unix, Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// A version's sealed data, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRecord {
    /// The master key's id it was sealed under.
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A version to store.
#[derive(Clone, Debug)]
pub struct NewSecretVersion {
    /// Its number: one more than the last (see [`Store::next_secret_version`]).
    pub version: u32,
    /// The names of its keys (not secret: shown by `versions`).
    pub keys: Vec<String>,
    pub sealed: SealedRecord,
}

/// A stored version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersionRecord {
    pub version: u32,
    /// Disabled versions are kept but not given to instances.
    pub enabled: bool,
    pub keys: Vec<String>,
    /// Unix time created.
    pub created_at: i64,
    pub sealed: SealedRecord,
}

/// A stored secret with its versions, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    /// A random id made at creation, bound into every version's ciphertext.
    pub incarnation: String,
    /// Unix time created.
    pub created_at: i64,
    /// The services it may be given to; empty: any.
    pub services: Vec<String>,
    pub versions: Vec<SecretVersionRecord>,
}

impl SecretRecord {
    /// The newest enabled version.
    pub fn latest_enabled(&self) -> Option<&SecretVersionRecord> {
        self.versions.iter().rev().find(|v| v.enabled)
    }

    /// Version `n`.
    pub fn version(&self, n: u32) -> Option<&SecretVersionRecord> {
        self.versions.iter().find(|v| v.version == n)
    }
}

impl Store {
    /// Makes secret `name` with its first version; `false` if the name is taken.
    pub fn create_secret(
        &mut self,
        name: &str,
        incarnation: &str,
        services: &[String],
        first: &NewSecretVersion,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let made = tx.execute(
            "INSERT INTO secrets (name, incarnation, created_at, services_json)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
            params![
                name,
                incarnation,
                now_unix(),
                serde_json::to_string(services).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        if made == 0 {
            return Ok(false);
        }
        insert_version(&tx, name, first)?;
        tx.commit()?;
        Ok(true)
    }

    /// The number the next version of `name` takes; `None` if there is no such secret.
    pub fn next_secret_version(&self, name: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT (SELECT coalesce(max(version), 0) + 1 FROM secret_versions
                         WHERE secret = ?1)
                 FROM secrets WHERE name = ?1",
                [name],
                |r| r.get::<_, u32>(0),
            )
            .optional()?)
    }

    /// Adds a version to secret `name`; `false` if there is no such secret.
    pub fn add_secret_version(
        &mut self,
        name: &str,
        version: &NewSecretVersion,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Ok(false);
        }
        insert_version(&tx, name, version)?;
        tx.commit()?;
        Ok(true)
    }

    /// Secret `name` with its versions.
    pub fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        Ok(self.secrets_where("WHERE name = ?1", [name])?.pop())
    }

    /// Every secret, by name.
    pub fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.secrets_where("", [])
    }

    fn secrets_where<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<SecretRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT name, incarnation, created_at, services_json FROM secrets {filter} ORDER BY name"
        ))?;
        let rows: Vec<(SecretRecord, String)> = stmt
            .query_map(params, |r| {
                let record = SecretRecord {
                    name: r.get(0)?,
                    incarnation: r.get(1)?,
                    created_at: r.get(2)?,
                    services: Vec::new(),
                    versions: Vec::new(),
                };
                Ok((record, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut secrets = Vec::with_capacity(rows.len());
        for (mut record, services) in rows {
            record.services = serde_json::from_str(&services).map_err(|_| StoreError::Corrupt {
                what: "secret's service list",
                value: services.clone(),
            })?;
            secrets.push(record);
        }
        let mut versions = self.conn.prepare(
            "SELECT version, enabled, keys_json, created_at, key_id, nonce, ciphertext
             FROM secret_versions WHERE secret = ?1 ORDER BY version",
        )?;
        for s in &mut secrets {
            let rows = versions.query_map([&s.name], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    SealedRecord {
                        key_id: r.get(4)?,
                        nonce: r.get(5)?,
                        ciphertext: r.get(6)?,
                    },
                ))
            })?;
            for row in rows {
                let (version, enabled, keys_json, created_at, sealed) = row?;
                let keys = serde_json::from_str(&keys_json).map_err(|_| StoreError::Corrupt {
                    what: "secret version's key list",
                    value: keys_json.clone(),
                })?;
                s.versions.push(SecretVersionRecord {
                    version,
                    enabled,
                    keys,
                    created_at,
                    sealed,
                });
            }
        }
        Ok(secrets)
    }

    /// Enables or disables version `version` of `name`; `false` if there is no such
    /// version.
    pub fn set_secret_version_enabled(
        &mut self,
        name: &str,
        version: u32,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE secret_versions SET enabled = ?3 WHERE secret = ?1 AND version = ?2",
            params![name, version, enabled],
        )?;
        Ok(changed > 0)
    }

    /// Deletes secret `name` and every version of it; `false` if there was none.
    pub fn delete_secret(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM secret_versions WHERE secret = ?1", [name])?;
        let gone = tx.execute("DELETE FROM secrets WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(gone > 0)
    }
}

fn insert_version(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    v: &NewSecretVersion,
) -> Result<(), StoreError> {
    let keys = serde_json::to_string(&v.keys).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO secret_versions
             (secret, version, enabled, keys_json, created_at, key_id, nonce, ciphertext)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7)",
        params![
            name,
            v.version,
            keys,
            now_unix(),
            v.sealed.key_id,
            v.sealed.nonce,
            v.sealed.ciphertext
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u32, keys: &[&str]) -> NewSecretVersion {
        NewSecretVersion {
            version: n,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            sealed: SealedRecord {
                key_id: "k1".into(),
                nonce: vec![n as u8; 12],
                ciphertext: vec![0xAB, n as u8],
            },
        }
    }

    #[test]
    fn secrets_keep_numbered_versions_that_can_be_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        assert!(s
            .create_secret("db", "i1", &[], &version(1, &["password"]))
            .unwrap());
        assert!(!s
            .create_secret("db", "i2", &[], &version(1, &["x"]))
            .unwrap());
        assert_eq!(s.next_secret_version("db").unwrap(), Some(2));
        assert_eq!(s.next_secret_version("none").unwrap(), None);
        assert!(s
            .add_secret_version("db", &version(2, &["password", "user"]))
            .unwrap());
        assert!(!s.add_secret_version("none", &version(1, &["k"])).unwrap());
        // A version number is taken once.
        assert!(s.add_secret_version("db", &version(2, &["k"])).is_err());
        let db = s.secret("db").unwrap().unwrap();
        assert_eq!(db.incarnation, "i1");
        assert_eq!(db.versions.len(), 2);
        assert_eq!(db.versions[1].keys, ["password", "user"]);
        assert_eq!(db.versions[1].sealed.ciphertext, [0xAB, 2]);
        assert_eq!(db.latest_enabled().unwrap().version, 2);
        assert!(s.set_secret_version_enabled("db", 2, false).unwrap());
        assert!(!s.set_secret_version_enabled("db", 9, false).unwrap());
        let db = s.secret("db").unwrap().unwrap();
        assert_eq!(db.latest_enabled().unwrap().version, 1);
        assert!(!db.version(2).unwrap().enabled);
        assert!(s.delete_secret("db").unwrap());
        assert!(!s.delete_secret("db").unwrap());
        assert!(s.secret("db").unwrap().is_none());
        assert!(s.secrets().unwrap().is_empty());
        // Made again, it starts over, with a new incarnation.
        assert!(s
            .create_secret("db", "i3", &["web".into()], &version(1, &["k"]))
            .unwrap());
        assert_eq!(s.secret("db").unwrap().unwrap().services, ["web"]);
        assert_eq!(s.secret("db").unwrap().unwrap().incarnation, "i3");
    }
}
