//! Async invocations: requests accepted with `Prefer: respond-async`, kept until
//! delivered or given up on. A row is written (and committed) before the caller gets its
//! 202; a delivery is marked before it starts and its outcome written after, so a crash
//! in between leaves it `delivering`, which the next start makes `pending` again: at
//! least once, duplicates only after a crash.

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// Where an invocation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvocationState {
    Pending,
    Delivering,
    Delivered,
    /// Given up on: in the dead-letter queue.
    Dead,
}

impl InvocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationState::Pending => "pending",
            InvocationState::Delivering => "delivering",
            InvocationState::Delivered => "delivered",
            InvocationState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        s.parse().map_err(|_| StoreError::Corrupt {
            what: "invocation state",
            value: s.to_owned(),
        })
    }
}

impl std::str::FromStr for InvocationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => InvocationState::Pending,
            "delivering" => InvocationState::Delivering,
            "delivered" => InvocationState::Delivered,
            "dead" => InvocationState::Dead,
            other => {
                return Err(format!(
                    "{other:?}: want pending, delivering, delivered or dead"
                ))
            }
        })
    }
}

/// A request to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvocation {
    pub id: String,
    pub service: String,
    /// The caller's `Idempotency-Key`: a second request with it gets the first's id.
    pub idempotency_key: Option<String>,
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The request's end-to-end fields, `name: value\r\n` each.
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// What made it: `None` for an async request, `schedule/NAME`, `subscription/NAME`.
    pub origin: Option<String>,
    /// Stored as taken for delivery already (its first attempt begun), so the
    /// dispatcher need not claim it: what a crash cuts short goes out again at start.
    pub delivering: bool,
}

/// Which invocations to list (every condition set must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvocationQuery {
    pub service: Option<String>,
    pub origin: Option<String>,
    pub state: Option<InvocationState>,
    /// Only those a trigger made (not async requests).
    pub events_only: bool,
}

/// How many of a service's invocations are in each state, and when the oldest not yet
/// settled was made (Unix milliseconds).
pub type InvocationCounts = (Vec<(InvocationState, u64)>, Option<i64>);

/// A stored invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvocationRecord {
    pub id: String,
    pub service: String,
    pub idempotency_key: Option<String>,
    pub method: String,
    pub target: String,
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
    pub state: InvocationState,
    pub attempts: u32,
    /// Unix milliseconds: made, next due, ended.
    pub created_ms: i64,
    pub next_ms: i64,
    pub finished_ms: Option<i64>,
    /// The last attempt's status, or why it failed.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub origin: Option<String>,
}

/// How an attempt's outcome is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvocationOutcome {
    Delivered {
        status: u16,
    },
    /// Tried again at `next_ms`.
    Retry {
        next_ms: i64,
        status: Option<u16>,
        error: String,
    },
    /// Not attempted after all (a limit of its target held it back): pending again at
    /// `next_ms`, the claim's attempt not counted.
    Deferred {
        next_ms: i64,
    },
    Dead {
        status: Option<u16>,
        error: String,
        /// A copy for a dead-letter service, stored with the outcome (one commit: the
        /// outcome is never written without it).
        forward: Option<Box<NewInvocation>>,
    },
}

const COLUMNS: &str = "id, service, idempotency_key, method, target, fields, body, state, \
                       attempts, created_ms, next_ms, finished_ms, last_status, last_error, origin";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(InvocationRecord, String)> {
    Ok((
        InvocationRecord {
            id: r.get(0)?,
            service: r.get(1)?,
            idempotency_key: r.get(2)?,
            method: r.get(3)?,
            target: r.get(4)?,
            fields: r.get(5)?,
            body: r.get(6)?,
            state: InvocationState::Pending,
            attempts: r.get(8)?,
            created_ms: r.get(9)?,
            next_ms: r.get(10)?,
            finished_ms: r.get(11)?,
            last_status: r.get(12)?,
            last_error: r.get(13)?,
            origin: r.get(14)?,
        },
        r.get(7)?,
    ))
}

fn with_state(
    rows: impl Iterator<Item = rusqlite::Result<(InvocationRecord, String)>>,
) -> Result<Vec<InvocationRecord>, StoreError> {
    rows.map(|r| {
        let (mut rec, state) = r?;
        rec.state = InvocationState::parse(&state)?;
        Ok(rec)
    })
    .collect()
}

fn add(
    tx: &rusqlite::Connection,
    batch: &[NewInvocation],
) -> Result<Vec<(String, bool)>, StoreError> {
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO invocations (id, service, idempotency_key, method, target, fields,
                     body, state, attempts, created_ms, next_ms, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                         CASE WHEN ?10 THEN 'delivering' ELSE 'pending' END,
                         ?10, ?8, ?8, ?9)
                 ON CONFLICT DO NOTHING",
        )?;
        let mut earlier = tx.prepare_cached(
            "SELECT id FROM invocations WHERE service = ?1 AND idempotency_key = ?2",
        )?;
        for inv in batch {
            let made = insert.execute(params![
                inv.id,
                inv.service,
                inv.idempotency_key,
                inv.method,
                inv.target,
                inv.fields,
                inv.body,
                inv.created_ms,
                inv.origin,
                inv.delivering
            ])?;
            if made == 1 {
                out.push((inv.id.clone(), false));
                continue;
            }
            let first: Option<String> = earlier
                .query_row(params![inv.service, inv.idempotency_key], |r| r.get(0))
                .optional()?;
            match first {
                Some(id) => out.push((id, true)),
                None => {
                    return Err(StoreError::Corrupt {
                        what: "invocation id (taken twice)",
                        value: inv.id.clone(),
                    })
                }
            }
        }
    }
    Ok(out)
}

fn claim(
    tx: &rusqlite::Connection,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<InvocationRecord>, StoreError> {
    let mut stmt = tx.prepare_cached(&format!(
        "UPDATE invocations SET state = 'delivering', attempts = attempts + 1
                 WHERE id IN (SELECT id FROM invocations
                              WHERE state = 'pending' AND next_ms <= ?1
                              ORDER BY next_ms LIMIT ?2)
                 RETURNING {COLUMNS}"
    ))?;
    let rows = stmt.query_map(params![now_ms, limit], row)?;
    let mut claimed = with_state(rows)?;
    // RETURNING keeps no order: oldest due first, as chosen.
    claimed.sort_by_key(|r| (r.next_ms, r.created_ms));
    Ok(claimed)
}

/// What one writer's turn gave back: each new invocation's id (and whether it was a
/// duplicate), and what each claim took.
pub type InvocationBatch = (Vec<(String, bool)>, Vec<Vec<InvocationRecord>>);

/// Writes how an attempt of `id` ended, at `now_ms`.
fn record(
    conn: &rusqlite::Connection,
    id: &str,
    outcome: &InvocationOutcome,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let InvocationOutcome::Deferred { next_ms } = outcome {
        conn.prepare_cached(
            "UPDATE invocations SET state = 'pending', next_ms = ?2,
                 attempts = max(attempts - 1, 0)
             WHERE id = ?1 AND state = 'delivering'",
        )?
        .execute(params![id, next_ms])?;
        return Ok(());
    }
    let (state, next, finished, status, error) = match outcome {
        InvocationOutcome::Delivered { status } => {
            ("delivered", None, Some(now_ms), Some(*status), None)
        }
        InvocationOutcome::Retry {
            next_ms,
            status,
            error,
        } => (
            "pending",
            Some(*next_ms),
            None,
            *status,
            Some(error.as_str()),
        ),
        InvocationOutcome::Dead {
            status,
            error,
            forward,
        } => {
            if let Some(copy) = forward {
                add(conn, std::slice::from_ref(copy))?;
            }
            ("dead", None, Some(now_ms), *status, Some(error.as_str()))
        }
        InvocationOutcome::Deferred { .. } => unreachable!("handled above"),
    };
    conn.prepare_cached(
        "UPDATE invocations SET state = ?2, next_ms = coalesce(?3, next_ms),
                 finished_ms = ?4, last_status = ?5, last_error = ?6
             WHERE id = ?1",
    )?
    .execute(params![id, state, next, finished, status, error])?;
    Ok(())
}

impl Store {
    /// Stores `batch` in one transaction (one commit for all: what makes many a second
    /// cheap). Each gets back its id: its own, or the earlier invocation's with the same
    /// service and idempotency key (and `true` for such a duplicate).
    pub fn add_invocations(
        &mut self,
        batch: &[NewInvocation],
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = add(&tx, batch)?;
        tx.commit()?;
        Ok(out)
    }

    /// Takes up to `limit` invocations due at `now_ms`, oldest due first, marking each
    /// `delivering` with one more attempt.
    pub fn claim_due_invocations(
        &mut self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = claim(&tx, now_ms, limit)?;
        tx.commit()?;
        Ok(claimed)
    }

    /// One writer's turn, under one commit: outcomes written, new invocations stored
    /// (their ids, as [`Store::add_invocations`] gives), then each claim taken (what is
    /// due at its time, up to its limit), in that order.
    pub fn invocation_batch(
        &mut self,
        adds: &[NewInvocation],
        outcomes: &[(String, InvocationOutcome, i64)],
        claims: &[(i64, u32)],
    ) -> Result<InvocationBatch, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (id, outcome, at) in outcomes {
            record(&tx, id, outcome, *at)?;
        }
        let added = add(&tx, adds)?;
        let claimed = claims
            .iter()
            .map(|(now, limit)| claim(&tx, *now, *limit))
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok((added, claimed))
    }

    /// Writes how an attempt of `id` ended, at `now_ms`.
    pub fn record_invocation(
        &mut self,
        id: &str,
        outcome: &InvocationOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        record(&self.conn, id, outcome, now_ms)
    }

    /// Makes every `delivering` invocation `pending` again (at start: their outcome was
    /// never written); how many.
    pub fn requeue_interrupted_invocations(&mut self) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE invocations SET state = 'pending' WHERE state = 'delivering'",
            [],
        )?)
    }

    /// Sends `service`'s dead invocations (those of `ids`, or all when empty) out again
    /// at `now_ms` with their attempts counted afresh; their ids.
    pub fn redrive_invocations(
        &mut self,
        service: &str,
        ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut redriven = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE invocations SET state = 'pending', attempts = 0, next_ms = ?3,
                     created_ms = ?3, finished_ms = NULL
                 WHERE service = ?1 AND state = 'dead' AND (?2 IS NULL OR id = ?2)
                 RETURNING id",
            )?;
            let all: [Option<&str>; 1] = [None];
            let wanted: Vec<Option<&str>> = if ids.is_empty() {
                all.to_vec()
            } else {
                ids.iter().map(|i| Some(i.as_str())).collect()
            };
            for id in wanted {
                let rows = stmt.query_map(params![service, id, now_ms], |r| r.get(0))?;
                for row in rows {
                    redriven.push(row?);
                }
            }
        }
        tx.commit()?;
        Ok(redriven)
    }

    /// How many of `service`'s invocations are in each state, and when the oldest
    /// pending one was made.
    pub fn invocation_counts(&self, service: &str) -> Result<InvocationCounts, StoreError> {
        self.counts_where("service", service)
    }

    /// The same for the invocations a trigger (`schedule/NAME`, `subscription/NAME`) made.
    pub fn origin_counts(&self, origin: &str) -> Result<InvocationCounts, StoreError> {
        self.counts_where("origin", origin)
    }

    fn counts_where(&self, column: &str, value: &str) -> Result<InvocationCounts, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT state, count(*) FROM invocations WHERE {column} = ?1 GROUP BY state"
        ))?;
        let rows = stmt.query_map([value], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?;
        let mut counts = Vec::new();
        for row in rows {
            let (state, n) = row?;
            counts.push((InvocationState::parse(&state)?, n));
        }
        let oldest = self.conn.query_row(
            &format!(
                "SELECT min(created_ms) FROM invocations
                 WHERE {column} = ?1 AND state IN ('pending', 'delivering')"
            ),
            [value],
            |r| r.get(0),
        )?;
        Ok((counts, oldest))
    }

    /// Forgets invocations delivered before `delivered_before_ms` and dead ones ended
    /// before `dead_before_ms`; how many.
    pub fn prune_invocations(
        &mut self,
        delivered_before_ms: i64,
        dead_before_ms: i64,
    ) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM invocations
             WHERE finished_ms < max(?1, ?2)
               AND ((state = 'delivered' AND finished_ms < ?1)
                 OR (state = 'dead' AND finished_ms < ?2))",
            params![delivered_before_ms, dead_before_ms],
        )?)
    }

    /// A service's newest `limit` invocations, newest first.
    pub fn invocations(
        &self,
        service: &str,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let only = InvocationQuery {
            service: Some(service.to_owned()),
            ..Default::default()
        };
        self.find_invocations(&only, limit)
    }

    /// The newest `limit` invocations that `query` lets through, newest first.
    pub fn find_invocations(
        &self,
        query: &InvocationQuery,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM invocations
             WHERE (?1 IS NULL OR service = ?1) AND (?2 IS NULL OR origin = ?2)
               AND (?3 IS NULL OR state = ?3) AND (?4 = 0 OR origin IS NOT NULL)
             ORDER BY created_ms DESC, id DESC LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![
                query.service,
                query.origin,
                query.state.map(InvocationState::as_str),
                query.events_only,
                limit
            ],
            row,
        )?;
        with_state(rows)
    }

    /// One invocation.
    pub fn invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM invocations WHERE id = ?1"))?;
        let rows = stmt.query_map([id], row)?;
        Ok(with_state(rows)?.pop())
    }

    /// When the next pending invocation is due, if any.
    pub fn next_invocation_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT min(next_ms) FROM invocations WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        (dir, s)
    }

    fn new(id: &str, key: Option<&str>, at: i64) -> NewInvocation {
        NewInvocation {
            id: id.into(),
            service: "svc".into(),
            idempotency_key: key.map(Into::into),
            method: "POST".into(),
            target: "/work?x=1".into(),
            fields: b"content-type: text/plain\r\n".to_vec(),
            body: vec![0, 1, 2, 255],
            created_ms: at,
            origin: None,
            delivering: false,
        }
    }

    #[test]
    fn a_batch_is_stored_and_a_repeated_key_gets_the_first_id() {
        let (_d, mut s) = store();
        let got = s
            .add_invocations(&[
                new("a", Some("k"), 1),
                new("b", None, 2),
                new("c", Some("k"), 3),
            ])
            .unwrap();
        assert_eq!(
            got,
            [("a".into(), false), ("b".into(), false), ("a".into(), true)]
        );
        let a = s.invocation("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.attempts, a.body.clone()),
            (InvocationState::Pending, 0, vec![0, 1, 2, 255])
        );
        assert!(s.invocation("c").unwrap().is_none());
        assert_eq!(s.invocations("svc", 10).unwrap().len(), 2);
        assert_eq!(s.next_invocation_due().unwrap(), Some(1));
    }

    #[test]
    fn claims_retries_and_outcomes_move_through_the_states() {
        let (_d, mut s) = store();
        s.add_invocations(&[new("a", None, 10), new("b", None, 20)])
            .unwrap();
        // Only what is due, and each once.
        let first = s.claim_due_invocations(15, 10).unwrap();
        assert_eq!(
            first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(first[0].attempts, 1);
        assert!(s.claim_due_invocations(15, 10).unwrap().is_empty());
        let retry = InvocationOutcome::Retry {
            next_ms: 100,
            status: Some(503),
            error: "busy".into(),
        };
        s.record_invocation("a", &retry, 16).unwrap();
        let a = s.invocation("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.next_ms, a.last_status),
            (InvocationState::Pending, 100, Some(503))
        );
        let due: Vec<String> = s
            .claim_due_invocations(100, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due, ["b", "a"]);
        s.record_invocation("a", &InvocationOutcome::Delivered { status: 200 }, 101)
            .unwrap();
        let dead = InvocationOutcome::Dead {
            status: Some(404),
            error: "refused".into(),
            forward: None,
        };
        s.record_invocation("b", &dead, 102).unwrap();
        let a = s.invocation("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.attempts, a.finished_ms),
            (InvocationState::Delivered, 2, Some(101))
        );
        assert_eq!(
            s.invocation("b").unwrap().unwrap().state,
            InvocationState::Dead
        );
        assert_eq!(s.next_invocation_due().unwrap(), None);
    }

    #[test]
    fn one_stored_as_delivering_is_not_claimed_and_goes_out_again_after_a_crash() {
        let (_d, mut s) = store();
        let taken = NewInvocation {
            delivering: true,
            ..new("a", None, 1)
        };
        s.add_invocations(&[taken, new("b", None, 1)]).unwrap();
        let a = s.invocation("a").unwrap().unwrap();
        assert_eq!((a.state, a.attempts), (InvocationState::Delivering, 1));
        let claimed: Vec<String> = s
            .claim_due_invocations(5, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(claimed, ["b"]);
        assert_eq!(s.requeue_interrupted_invocations().unwrap(), 2);
        assert_eq!(s.claim_due_invocations(5, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_restart_checkpoint_leaves_a_grown_log_to_start_over_at_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut writer = Store::open(&path).unwrap();
        writer.no_auto_checkpoints().unwrap();
        let reader = Store::open(&path).unwrap();
        let big = |i: usize| NewInvocation {
            body: vec![7; 64 << 10],
            ..new(&format!("i{i}"), None, i as i64)
        };
        // Under load passive checkpoints never catch up with the writer, and the log
        // never starts over by itself; here none runs at all.
        for batch in 0..40 {
            let adds: Vec<_> = (0..4).map(|i| big(batch * 4 + i)).collect();
            writer.add_invocations(&adds).unwrap();
        }
        let grown = writer.wal_bytes();
        assert!(grown > 8 << 20, "{grown}");
        assert!(writer
            .checkpoint_restart(Duration::from_millis(100))
            .unwrap());
        // The next write starts the log over from its beginning: a few frames in it.
        writer.add_invocations(&[new("after", None, 1)]).unwrap();
        let frames = |s: &Store| -> i64 {
            s.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap()
        };
        let after = frames(&reader);
        assert!((1..16).contains(&after), "{after} frames after the restart");
        assert_eq!(reader.invocations("svc", 1000).unwrap().len(), 161);
    }

    #[test]
    fn a_deferred_claim_is_pending_again_without_its_attempt() {
        let (_d, mut s) = store();
        s.add_invocations(&[new("a", None, 1)]).unwrap();
        assert_eq!(s.claim_due_invocations(1, 10).unwrap()[0].attempts, 1);
        s.record_invocation("a", &InvocationOutcome::Deferred { next_ms: 50 }, 2)
            .unwrap();
        let a = s.invocation("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.attempts, a.next_ms),
            (InvocationState::Pending, 0, 50)
        );
        assert!(s.claim_due_invocations(49, 10).unwrap().is_empty());
        assert_eq!(s.claim_due_invocations(50, 10).unwrap()[0].attempts, 1);
    }

    #[test]
    fn a_dead_one_with_a_dead_letter_service_leaves_one_copy_for_it() {
        let (_d, mut s) = store();
        s.add_invocations(&[new("a", None, 1)]).unwrap();
        s.claim_due_invocations(1, 10).unwrap();
        let copy = |id: &str| NewInvocation {
            service: "dlq".into(),
            idempotency_key: Some("deadletter/a".into()),
            origin: Some("deadletter/a".into()),
            ..new(id, None, 5)
        };
        let dead = |id: &str| InvocationOutcome::Dead {
            status: Some(500),
            error: "gave up".into(),
            forward: Some(Box::new(copy(id))),
        };
        // Written twice (a crash before the first was known to be written): one copy.
        s.invocation_batch(&[], &[("a".into(), dead("c1"), 5)], &[])
            .unwrap();
        s.invocation_batch(&[], &[("a".into(), dead("c2"), 6)], &[])
            .unwrap();
        let copies = s.invocations("dlq", 10).unwrap();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(
            (
                copies[0].id.as_str(),
                copies[0].state,
                copies[0].origin.as_deref()
            ),
            ("c1", InvocationState::Pending, Some("deadletter/a"))
        );
        assert_eq!(
            s.invocation("a").unwrap().unwrap().state,
            InvocationState::Dead
        );
    }

    #[test]
    fn dead_ones_are_sent_again_afresh_and_counted() {
        let (_d, mut s) = store();
        s.add_invocations(&[new("a", None, 1), new("b", None, 2), new("c", None, 3)])
            .unwrap();
        s.claim_due_invocations(10, 10).unwrap();
        let dead = InvocationOutcome::Dead {
            status: Some(500),
            error: "x".into(),
            forward: None,
        };
        for id in ["a", "b"] {
            s.record_invocation(id, &dead, 11).unwrap();
        }
        let (counts, oldest) = s.invocation_counts("svc").unwrap();
        assert!(counts.contains(&(InvocationState::Dead, 2)), "{counts:?}");
        assert!(
            counts.contains(&(InvocationState::Delivering, 1)),
            "{counts:?}"
        );
        assert_eq!(oldest, Some(3));
        assert_eq!(
            s.redrive_invocations("svc", &["a".into()], 20).unwrap(),
            ["a"]
        );
        let a = s.invocation("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.attempts, a.next_ms),
            (InvocationState::Pending, 0, 20)
        );
        // Not dead, or another service's: untouched.
        assert!(s
            .redrive_invocations("svc", &["c".into()], 20)
            .unwrap()
            .is_empty());
        assert!(s.redrive_invocations("other", &[], 20).unwrap().is_empty());
        assert_eq!(s.redrive_invocations("svc", &[], 21).unwrap(), ["b"]);
    }

    #[test]
    fn settled_ones_are_forgotten_after_their_time_open_ones_never() {
        let (_d, mut s) = store();
        s.add_invocations(&[
            new("a", None, 1),
            new("b", None, 2),
            new("c", None, 3),
            new("d", None, 4),
        ])
        .unwrap();
        s.claim_due_invocations(10, 3).unwrap();
        s.record_invocation("a", &InvocationOutcome::Delivered { status: 200 }, 100)
            .unwrap();
        let dead = InvocationOutcome::Dead {
            status: None,
            error: "x".into(),
            forward: None,
        };
        s.record_invocation("b", &dead, 100).unwrap();
        // Delivered before 101 go; dead ones are kept longer.
        assert_eq!(s.prune_invocations(101, 50).unwrap(), 1);
        assert!(s.invocation("a").unwrap().is_none());
        assert!(s.invocation("b").unwrap().is_some());
        assert_eq!(s.prune_invocations(101, 101).unwrap(), 1);
        // Still being delivered, or pending: never.
        assert_eq!(s.prune_invocations(i64::MAX, i64::MAX).unwrap(), 0);
        assert_eq!(s.invocations("svc", 10).unwrap().len(), 2);
    }

    #[test]
    fn a_delivery_cut_short_by_a_crash_is_made_again() {
        let (_d, mut s) = store();
        s.add_invocations(&[new("a", None, 1)]).unwrap();
        assert_eq!(s.claim_due_invocations(5, 10).unwrap().len(), 1);
        // The daemon dies here; the next one starts.
        assert_eq!(s.requeue_interrupted_invocations().unwrap(), 1);
        let again = s.claim_due_invocations(5, 10).unwrap();
        assert_eq!((again[0].id.as_str(), again[0].attempts), ("a", 2));
    }
}
