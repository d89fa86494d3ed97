//! API token rows: a name, a role, the services it is limited to, and the SHA-256 of its
//! secret (never the token itself); revoked tokens are kept, marked, for the record.

use crate::{now_unix, Store, StoreError};
use rusqlite::params;

/// A token to store.
#[derive(Clone, Debug)]
pub struct NewTokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub services: Vec<String>,
    pub hash: Vec<u8>,
}

/// A stored token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    /// Empty: every service.
    pub services: Vec<String>,
    pub hash: Vec<u8>,
    /// Unix times.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Stores a token; `false` if a token (revoked or not) has its name.
    pub fn create_token(&mut self, t: &NewTokenRecord) -> Result<bool, StoreError> {
        let services = serde_json::to_string(&t.services).unwrap_or_else(|_| "[]".into());
        Ok(self.conn.execute(
            "INSERT INTO tokens (id, name, role, services_json, hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![t.id, t.name, t.role, services, t.hash, now_unix()],
        )? > 0)
    }

    /// The token of id `id`, revoked or not.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.tokens_where("WHERE id = ?1", [id])?.pop())
    }

    /// Every token, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tokens_where("", [])
    }

    fn tokens_where<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, name, role, services_json, hash, created_at, revoked_at
             FROM tokens {filter} ORDER BY name"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, role, services, hash, created_at, revoked_at) = row?;
            let services = serde_json::from_str(&services).map_err(|_| StoreError::Corrupt {
                what: "token's service list",
                value: name.clone(),
            })?;
            out.push(TokenRecord {
                id,
                name,
                role,
                services,
                hash,
                created_at,
                revoked_at,
            });
        }
        Ok(out)
    }

    /// Revokes token `name`; `false` if there is no such token, or it was revoked.
    pub fn revoke_token(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, now_unix()],
        )? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_by_hash_named_once_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let t = NewTokenRecord {
            id: "0123456789ab".into(),
            name: "ci".into(),
            role: "developer".into(),
            services: vec!["api".into()],
            hash: vec![1, 2, 3],
        };
        assert!(s.create_token(&t).unwrap());
        assert!(!s
            .create_token(&NewTokenRecord {
                id: "ffffffffffff".into(),
                ..t.clone()
            })
            .unwrap());
        let stored = s.token("0123456789ab").unwrap().unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.services.as_slice()),
            ("ci", &["api".to_owned()][..])
        );
        assert_eq!(stored.hash, [1, 2, 3]);
        assert!(s.revoke_token("ci").unwrap());
        assert!(!s.revoke_token("ci").unwrap());
        assert!(s
            .token("0123456789ab")
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
        assert_eq!(s.tokens().unwrap().len(), 1);
    }
}
