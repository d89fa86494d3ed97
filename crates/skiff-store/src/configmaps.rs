//! Config map rows: plain settings kept beside secrets (Kubernetes' ConfigMap), a name
//! and its keys' text values, replaced whole; no versions and no sealing.

use crate::{now_unix, Store, StoreError};
use rusqlite::params;
use std::collections::BTreeMap;

/// A stored config map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapRecord {
    pub name: String,
    pub data: BTreeMap<String, String>,
    /// Unix times.
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// Stores config map `name`: made, or (unless `create_only`) replaced. Whether it
    /// was written (`false`: `create_only` and it exists).
    pub fn put_config_map(
        &mut self,
        name: &str,
        data: &BTreeMap<String, String>,
        create_only: bool,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let now = now_unix();
        let sql = if create_only {
            "INSERT INTO config_maps (name, data_json, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING"
        } else {
            "INSERT INTO config_maps (name, data_json, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET data_json = ?2, updated_at = ?3"
        };
        Ok(self.conn.execute(sql, params![name, json, now])? > 0)
    }

    /// Config map `name`.
    pub fn config_map(&self, name: &str) -> Result<Option<ConfigMapRecord>, StoreError> {
        Ok(self.config_maps_where("WHERE name = ?1", [name])?.pop())
    }

    /// Every config map, by name.
    pub fn config_maps(&self) -> Result<Vec<ConfigMapRecord>, StoreError> {
        self.config_maps_where("", [])
    }

    fn config_maps_where<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<ConfigMapRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT name, data_json, created_at, updated_at FROM config_maps {filter} ORDER BY name"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json, created_at, updated_at) = row?;
            let data = serde_json::from_str(&json).map_err(|_| StoreError::Corrupt {
                what: "config map's data",
                value: name.clone(),
            })?;
            out.push(ConfigMapRecord {
                name,
                data,
                created_at,
                updated_at,
            });
        }
        Ok(out)
    }

    /// Deletes config map `name`; `false` if there was none.
    pub fn delete_config_map(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM config_maps WHERE name = ?1", [name])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_are_made_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let one: BTreeMap<String, String> = [("host".into(), "db".into())].into();
        let two: BTreeMap<String, String> = [("port".into(), "5432".into())].into();
        assert!(s.put_config_map("app", &one, true).unwrap());
        assert!(!s.put_config_map("app", &two, true).unwrap());
        assert_eq!(s.config_map("app").unwrap().unwrap().data, one);
        assert!(s.put_config_map("app", &two, false).unwrap());
        assert_eq!(s.config_map("app").unwrap().unwrap().data, two);
        assert_eq!(s.config_maps().unwrap().len(), 1);
        assert!(s.delete_config_map("app").unwrap());
        assert!(!s.delete_config_map("app").unwrap());
        assert!(s.config_map("app").unwrap().is_none());
    }
}
