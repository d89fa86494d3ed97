//! The audit log: one row per control-plane write (who, what, when, with what result),
//! appended and never changed. Triggers refuse updates and deletes, so no code path of
//! skiff's (nor a stray `sqlite3` session through skiff's schema) rewrites history.

use crate::{now_unix, Store, StoreError};
use rusqlite::params;

/// One entry to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// Who asked: the identity the API knew them by.
    pub who: String,
    /// What was asked (`PUT /v1/services/api`).
    pub action: String,
    /// How it ended (`200`, or the status and the error's kind).
    pub result: String,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    /// Unix time.
    pub at: i64,
    pub who: String,
    pub action: String,
    pub result: String,
}

impl Store {
    /// Appends `entry`.
    pub fn append_audit(&mut self, entry: &NewAuditEntry) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit (at, who, action, result) VALUES (?1, ?2, ?3, ?4)",
            params![now_unix(), entry.who, entry.action, entry.result],
        )?;
        Ok(())
    }

    /// The newest `limit` entries, oldest first.
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, who, action, result FROM
                 (SELECT * FROM audit ORDER BY id DESC LIMIT ?1)
             ORDER BY id",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                who: r.get(2)?,
                action: r.get(3)?,
                result: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_and_never_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        for n in 0..3 {
            s.append_audit(&NewAuditEntry {
                who: "root".into(),
                action: format!("PUT /v1/services/s{n}"),
                result: "200".into(),
            })
            .unwrap();
        }
        let last_two = s.audit(2).unwrap();
        assert_eq!(last_two.len(), 2);
        assert_eq!(last_two[0].action, "PUT /v1/services/s1");
        assert_eq!(last_two[1].action, "PUT /v1/services/s2");
        let update = s.conn.execute("UPDATE audit SET who = 'someone else'", []);
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = s.conn.execute("DELETE FROM audit", []);
        assert!(delete.unwrap_err().to_string().contains("append-only"));
        assert_eq!(s.audit(10).unwrap().len(), 3);
    }
}
