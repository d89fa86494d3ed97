//! Instance rows: which sandboxes exist, who supervises them, which network slot each
//! holds, and how each ended. Slots are unique among running instances across every
//! process that opens the database, so two `skiff run`s never share an address.

use crate::{now_unix, Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use skiff_core::Digest;

/// Lifecycle of an instance row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Started and not yet reported as ended.
    Running,
    /// Ended with an exit report.
    Exited,
    /// Its supervisor died without reporting; resources were reclaimed.
    Lost,
}

impl InstanceState {
    fn as_str(self) -> &'static str {
        match self {
            InstanceState::Running => "running",
            InstanceState::Exited => "exited",
            InstanceState::Lost => "lost",
        }
    }

    fn parse(s: String) -> Result<Self, StoreError> {
        match s.as_str() {
            "running" => Ok(InstanceState::Running),
            "exited" => Ok(InstanceState::Exited),
            "lost" => Ok(InstanceState::Lost),
            _ => Err(StoreError::Corrupt {
                what: "instance state",
                value: s,
            }),
        }
    }
}

/// An instance about to start.
#[derive(Clone, Debug)]
pub struct NewInstance {
    /// Instance id (validated by `skiff_core::validate_instance_id`).
    pub id: String,
    /// The image it runs.
    pub image_digest: Digest,
    /// PID of the process that supervises it (reaps it and records its exit).
    pub supervisor_pid: u32,
    /// The supervisor's start time (`/proc/PID/stat` field 22), telling it from a later
    /// process that reuses its PID.
    pub supervisor_start: u64,
    /// Where its stdout/stderr go.
    pub log_path: String,
    /// The service and revision it serves, if it is a service's instance.
    pub service: Option<(String, String)>,
}

/// How an instance ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    /// Exit status, if it exited.
    pub code: Option<i32>,
    /// Terminating signal, if it was killed.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// A stored instance.
#[derive(Clone, Debug)]
pub struct InstanceRecord {
    /// Instance id.
    pub id: String,
    /// Image manifest digest.
    pub image_digest: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Supervising process.
    pub supervisor_pid: u32,
    /// Its start time, when recorded.
    pub supervisor_start: Option<u64>,
    /// PID of the instance's first process (host PID namespace), once started.
    pub pid: Option<u32>,
    /// Network slot held while running.
    pub net_slot: Option<u32>,
    /// Log file.
    pub log_path: String,
    /// Unix time created.
    pub created_at: i64,
    /// Exit report, once exited.
    pub exit: Option<ExitRecord>,
    /// The service it serves, if any.
    pub service: Option<String>,
    /// The revision it runs, if any.
    pub revision: Option<String>,
    /// Unix time it ended.
    pub finished_at: Option<i64>,
}

impl Store {
    /// Records a new running instance and gives it the lowest free network slot in
    /// `slots`.
    ///
    /// The search starts at the lowest slot this handle may have seen freed (every slot
    /// below it was taken when last looked at), so a start among thousands of running
    /// instances reads a few index entries, not all of them; a slot taken meanwhile by
    /// another process is skipped as the search reads the table, and one freed by another
    /// process below that point is only reused once this handle frees one below it too.
    pub fn create_instance(
        &mut self,
        new: &NewInstance,
        slots: std::ops::Range<u32>,
    ) -> Result<u32, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut slot = i64::from(self.lowest_free_slot.max(slots.start));
        {
            let mut stmt = tx.prepare_cached(
                "SELECT net_slot FROM instances WHERE state = 'running' AND net_slot >= ?1
                 ORDER BY net_slot",
            )?;
            let mut taken = stmt.query([slot])?;
            while let Some(row) = taken.next()? {
                if row.get::<_, i64>(0)? != slot {
                    break;
                }
                slot += 1;
            }
        }
        if slot >= i64::from(slots.end) {
            return Err(StoreError::NoNetworkSlot(slots.len() as u32));
        }
        tx.execute(
            "INSERT INTO instances (id, image_digest, state, supervisor_pid, supervisor_start, net_slot,
                                    log_path, created_at, service, revision)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.id,
                new.image_digest.to_string(),
                new.supervisor_pid,
                new.supervisor_start as i64,
                slot,
                new.log_path,
                now_unix(),
                new.service.as_ref().map(|s| &s.0),
                new.service.as_ref().map(|s| &s.1),
            ],
        )?;
        tx.commit()?;
        let slot = slot as u32;
        self.lowest_free_slot = slot + 1;
        Ok(slot)
    }

    /// Notes that `slot` (of an instance that ended or was discarded) may be free again.
    fn slot_freed(&mut self, slot: Option<i64>) {
        if let Some(slot) = slot.and_then(|s| u32::try_from(s).ok()) {
            self.lowest_free_slot = self.lowest_free_slot.min(slot);
        }
    }

    /// Records the PID of the instance's first process once it runs its command; its
    /// start time becomes now (it may have been prepared, unstarted, well before).
    pub fn set_instance_pid(&mut self, id: &str, pid: u32) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE instances SET pid = ?2, created_at = ?3 WHERE id = ?1",
            params![id, pid, now_unix()],
        )?;
        Ok(())
    }

    /// Forgets an instance that never ran its command (a prepared sandbox let go).
    pub fn discard_instance(&mut self, id: &str) -> Result<(), StoreError> {
        let slot = self
            .conn
            .query_row(
                "DELETE FROM instances WHERE id = ?1 AND pid IS NULL RETURNING net_slot",
                [id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?;
        self.slot_freed(slot.flatten());
        Ok(())
    }

    /// Forgets the ended instances of `service` (a removed one: a new service of the same
    /// name must not show them); returns their log files, for the caller to delete.
    pub fn forget_ended_instances(&mut self, service: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction()?;
        let logs = {
            let mut stmt = tx.prepare(
                "SELECT log_path FROM instances WHERE service = ?1 AND state != 'running'",
            )?;
            let rows = stmt.query_map([service], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        tx.execute(
            "DELETE FROM instances WHERE service = ?1 AND state != 'running'",
            [service],
        )?;
        tx.commit()?;
        Ok(logs)
    }

    /// Marks an instance ended, with its exit report (`None` when it was lost), freeing
    /// its network slot.
    pub fn finish_instance(
        &mut self,
        id: &str,
        exit: Option<ExitRecord>,
    ) -> Result<(), StoreError> {
        let state = if exit.is_some() {
            InstanceState::Exited
        } else {
            InstanceState::Lost
        };
        let e = exit.unwrap_or_default();
        let slot = self
            .conn
            .query_row(
                "UPDATE instances SET state = ?2, finished_at = ?3, exit_code = ?4, exit_signal = ?5,
                     oom_killed = ?6
                 WHERE id = ?1 RETURNING net_slot",
                params![
                    id,
                    state.as_str(),
                    now_unix(),
                    e.code,
                    e.signal,
                    e.oom_killed
                ],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?;
        self.slot_freed(slot.flatten());
        Ok(())
    }

    /// Instances still marked running.
    pub fn running_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.query_instances("WHERE state = 'running' ORDER BY created_at, id", [])
    }

    /// Every instance a service ever had, running or ended, oldest first.
    pub fn service_instances(&self, service: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.query_instances("WHERE service = ?1 ORDER BY created_at, rowid", [service])
    }

    /// One instance by id.
    pub fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let exists: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM instances WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        Ok(self.query_instances("WHERE id = ?1", [id])?.pop())
    }

    fn query_instances<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let sql = format!(
            "SELECT id, image_digest, state, supervisor_pid, pid, net_slot, log_path, created_at,
                    exit_code, exit_signal, oom_killed, supervisor_start, service, revision,
                    finished_at FROM instances {filter}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, Option<u32>>(4)?,
                    r.get::<_, Option<u32>>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i32>>(8)?,
                    r.get::<_, Option<i32>>(9)?,
                    r.get::<_, bool>(10)?,
                    r.get::<_, Option<i64>>(11)?,
                    (
                        r.get::<_, Option<String>>(12)?,
                        r.get::<_, Option<String>>(13)?,
                        r.get::<_, Option<i64>>(14)?,
                    ),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(
                |(
                    id,
                    image,
                    state,
                    sup,
                    pid,
                    slot,
                    log,
                    created,
                    code,
                    signal,
                    oom,
                    sup_start,
                    (service, revision, finished_at),
                )| {
                    let state = InstanceState::parse(state)?;
                    Ok(InstanceRecord {
                        id,
                        image_digest: image,
                        state,
                        supervisor_pid: sup,
                        supervisor_start: sup_start.map(|s| s as u64),
                        pid,
                        net_slot: slot,
                        log_path: log,
                        created_at: created,
                        exit: (state == InstanceState::Exited).then_some(ExitRecord {
                            code,
                            signal,
                            oom_killed: oom,
                        }),
                        service,
                        revision,
                        finished_at,
                    })
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str) -> NewInstance {
        NewInstance {
            id: id.into(),
            image_digest: Digest::from_sha256_bytes(&[1; 32]),
            supervisor_pid: 1,
            supervisor_start: 42,
            log_path: format!("/logs/{id}"),
            service: None,
        }
    }

    #[test]
    fn slots_are_unique_and_reused_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(s.create_instance(&new("a"), 0..4).unwrap(), 0);
        assert_eq!(s.create_instance(&new("b"), 0..4).unwrap(), 1);
        assert_eq!(s.create_instance(&new("c"), 0..4).unwrap(), 2);
        s.finish_instance(
            "b",
            Some(ExitRecord {
                code: Some(0),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(s.create_instance(&new("d"), 0..4).unwrap(), 1);
        assert_eq!(s.create_instance(&new("e"), 0..4).unwrap(), 3);
        assert!(matches!(
            s.create_instance(&new("f"), 0..4),
            Err(StoreError::NoNetworkSlot(4))
        ));
        s.finish_instance("a", None).unwrap();
        assert_eq!(s.instance("a").unwrap().unwrap().state, InstanceState::Lost);
        let b = s.instance("b").unwrap().unwrap();
        assert_eq!(b.exit.unwrap().code, Some(0));
        assert_eq!(b.supervisor_start, Some(42));
        assert_eq!(s.running_instances().unwrap().len(), 3);
    }

    #[test]
    fn slots_taken_or_freed_through_another_handle_are_respected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut daemon = Store::open(&path).unwrap();
        let mut other = Store::open(&path).unwrap();
        assert_eq!(daemon.create_instance(&new("a"), 0..8).unwrap(), 0);
        assert_eq!(daemon.create_instance(&new("b"), 0..8).unwrap(), 1);
        // Taken by another process where this handle would look next: skipped.
        assert_eq!(other.create_instance(&new("c"), 0..8).unwrap(), 2);
        assert_eq!(daemon.create_instance(&new("d"), 0..8).unwrap(), 3);
        // A prepared sandbox let go, and an instance that ended: their slots come back,
        // lowest first.
        daemon.discard_instance("b").unwrap();
        daemon.finish_instance("a", None).unwrap();
        assert_eq!(daemon.create_instance(&new("e"), 0..8).unwrap(), 0);
        assert_eq!(daemon.create_instance(&new("f"), 0..8).unwrap(), 1);
        assert_eq!(daemon.create_instance(&new("g"), 0..8).unwrap(), 4);
        // Freed by the other handle: reused by it; never given twice.
        other.finish_instance("c", None).unwrap();
        assert_eq!(other.create_instance(&new("h"), 0..8).unwrap(), 2);
        assert_eq!(daemon.create_instance(&new("i"), 0..8).unwrap(), 5);
        let mut slots: Vec<u32> = daemon
            .running_instances()
            .unwrap()
            .iter()
            .filter_map(|i| i.net_slot)
            .collect();
        slots.sort_unstable();
        assert_eq!(slots, [0, 1, 2, 3, 4, 5]);
    }
}
