//! The audit log's control-plane side: what the API records for each write, and what
//! `skiff audit` reads. Entries name who asked and what for, never a request's body (a
//! secret's value is in one).

use crate::documents::AuditEntry;
use crate::{Control, ControlError};
use skiff_store::NewAuditEntry;

/// Most entries one read returns.
pub const MAX_AUDIT_READ: u32 = 10_000;

impl Control {
    /// Appends an entry; a failure to record is logged, not returned: the write it
    /// records has happened already.
    pub fn record_audit(&self, who: &str, action: &str, result: &str) {
        let entry = NewAuditEntry {
            who: who.to_owned(),
            action: action.to_owned(),
            result: result.to_owned(),
        };
        if let Err(e) = self.write_freeing_space(|db| db.append_audit(&entry)) {
            tracing::warn!(%action, "recording the write in the audit log: {e}");
        }
    }

    /// The newest `limit` entries (at most [`MAX_AUDIT_READ`]), oldest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, ControlError> {
        Ok(self
            .db()
            .audit(limit.min(MAX_AUDIT_READ))?
            .into_iter()
            .map(|r| AuditEntry {
                at: r.at,
                who: r.who,
                action: r.action,
                result: r.result,
            })
            .collect())
    }
}
