//! The writer thread: the one connection that writes invocations. What the router hands
//! over, what the dispatcher claims and the outcomes it reports all wait in one queue;
//! the thread takes all that waits (up to a batch) and does it under one commit, then
//! answers each. One writer means no two of them wait on SQLite's lock (whose busy
//! handler sleeps in steps of milliseconds), and a burst costs one commit, not one each.

use super::deliver::Dispatcher;
use skiff_router::AsyncRequest;
use skiff_store::{InvocationOutcome, InvocationRecord, NewInvocation, Store};
use std::sync::mpsc;
use std::sync::Weak;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The most requests done under one commit.
const BATCH: usize = 1024;
/// The shortest time from one commit to the next: under load each commit takes what
/// came meanwhile. Every commit writes whole pages of the table and its indexes to the
/// log, so a commit per few invocations wrote ~5 KB each (bench/events: a 64 MiB log
/// filled every ~1.5 s, and its checkpoints stalled the writer); idle, the first job
/// after a pause is not held.
const COMMIT_GAP: Duration = Duration::from_millis(1);

/// Invocations to store together (all or none), and where to say how it went: each
/// one's id (its own, or an earlier one's with the same idempotency key, and `true`).
pub(crate) struct Add {
    pub invocations: Vec<NewInvocation>,
    pub reply: oneshot::Sender<Result<Vec<(String, bool)>, String>>,
}

/// What the writer is asked.
pub(crate) enum Job {
    Add(Add),
    /// How an attempt ended (id, outcome, when).
    Outcome(String, InvocationOutcome, i64),
    /// What is due at `now_ms`, up to `limit`, marked `delivering`.
    Claim {
        now_ms: i64,
        limit: u32,
        reply: oneshot::Sender<Result<Vec<InvocationRecord>, String>>,
    },
}

/// Starts the thread on `rx`; it wakes `dispatcher` after each turn that stored new
/// invocations or outcomes (something may be due, a slot is free) — never after claims
/// alone, which the dispatcher itself asked for: it would be woken by its own asking.
pub(crate) fn start(
    mut store: Store,
    rx: mpsc::Receiver<Job>,
    dispatcher: Weak<Dispatcher>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("skiff-invocations".into())
        .spawn(move || {
            let mut committed = Instant::now() - COMMIT_GAP;
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                // Under load, what comes within the gap goes in the same commit.
                let since = committed.elapsed();
                if since < COMMIT_GAP {
                    std::thread::sleep(COMMIT_GAP - since);
                }
                while jobs.len() < BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let news = jobs.iter().any(|j| !matches!(j, Job::Claim { .. }));
                let live = dispatcher.upgrade();
                let room = live.as_ref().map_or(0, |d| d.room());
                let handed = turn(&mut store, jobs, room);
                committed = Instant::now();
                bound_log(&store, live.as_deref());
                if let Some(d) = live {
                    if !handed.is_empty() {
                        d.hand(handed);
                    } else if news {
                        d.wake();
                    }
                }
            }
        })?;
    Ok(())
}

/// Starts the write-ahead log over once it has outgrown [`skiff_store::WAL_LIMIT`]: the
/// dispatcher's passive checkpoints never catch up with a writer that does not pause,
/// so under a steady load the log would grow as long as the load lasts. Done between
/// turns, so nothing is appended meanwhile; readers get a moment to move on.
/// (Measured by bench/events: the log stays at the limit instead of growing by about
/// 20 MB a second.)
fn bound_log(store: &Store, dispatcher: Option<&Dispatcher>) {
    if store.wal_bytes() <= skiff_store::WAL_LIMIT {
        return;
    }
    // While the dispatcher's connection keeps still: a passive checkpoint of its under
    // way would make this one wait in SQLite's busy handler, which sleeps in steps.
    let restart = || store.checkpoint_restart(std::time::Duration::from_millis(200));
    let restarted = match dispatcher {
        Some(d) => d.while_still(restart),
        None => restart(),
    };
    match restarted {
        Ok(true) => tracing::debug!("the write-ahead log starts over"),
        Ok(false) => tracing::debug!("the write-ahead log is in use; starting it over later"),
        Err(e) => tracing::warn!("starting the write-ahead log over: {e}"),
    }
}

/// Does `jobs` under one commit and answers each. Up to `room` new invocations due
/// now are stored as taken for delivery already and given back, to hand straight to
/// the dispatcher: no claim to write, no round trip for it.
fn turn(store: &mut Store, jobs: Vec<Job>, room: usize) -> Vec<InvocationRecord> {
    let mut adds = Vec::new();
    let mut outcomes = Vec::new();
    let mut claims = Vec::new();
    for job in jobs {
        match job {
            Job::Add(add) => adds.push(add),
            Job::Outcome(id, outcome, at) => outcomes.push((id, outcome, at)),
            Job::Claim {
                now_ms,
                limit,
                reply,
            } => claims.push((now_ms, limit, reply)),
        }
    }
    let mut new = Vec::new();
    let mut replies = Vec::with_capacity(adds.len());
    for add in adds {
        replies.push((add.reply, add.invocations.len()));
        new.extend(add.invocations);
    }
    for invocation in new.iter_mut().take(room) {
        invocation.delivering = true;
    }
    let wanted: Vec<(i64, u32)> = claims.iter().map(|(n, l, _)| (*n, *l)).collect();
    match store.invocation_batch(&new, &outcomes, &wanted) {
        Ok((ids, claimed)) => {
            let handed = new
                .into_iter()
                .zip(&ids)
                .filter(|(inv, (_, duplicate))| inv.delivering && !duplicate)
                .map(|(inv, _)| taken(inv))
                .collect();
            let mut ids = ids.into_iter();
            for (reply, n) in replies {
                let _ = reply.send(Ok(ids.by_ref().take(n).collect()));
            }
            for ((_, _, reply), taken) in claims.into_iter().zip(claimed) {
                let _ = reply.send(Ok(taken));
            }
            handed
        }
        Err(e) => {
            // Outcomes not written leave their invocations `delivering`: they go out
            // again at the next start. New ones are refused (the caller gets a 503).
            tracing::error!(
                "writing async invocations ({} new, {} outcomes): {e}",
                new.len(),
                outcomes.len()
            );
            for (reply, _) in replies {
                let _ = reply.send(Err(e.to_string()));
            }
            for (_, _, reply) in claims {
                let _ = reply.send(Err(e.to_string()));
            }
            Vec::new()
        }
    }
}

/// A new invocation stored as taken, as a claim would have given it.
fn taken(inv: NewInvocation) -> InvocationRecord {
    InvocationRecord {
        id: inv.id,
        service: inv.service,
        idempotency_key: inv.idempotency_key,
        method: inv.method,
        target: inv.target,
        fields: inv.fields,
        body: inv.body,
        state: skiff_store::InvocationState::Delivering,
        attempts: 1,
        created_ms: inv.created_ms,
        next_ms: inv.created_ms,
        finished_ms: None,
        last_status: None,
        last_error: None,
        origin: inv.origin,
    }
}

/// An async request as it is kept.
pub(crate) fn new_invocation(id: String, request: AsyncRequest, created_ms: i64) -> NewInvocation {
    let mut fields = with_caller(&request);
    add_event_attributes(&mut fields, &id, &request.service, created_ms);
    NewInvocation {
        id,
        service: request.service,
        idempotency_key: request.idempotency_key,
        method: request.method,
        target: request.target,
        fields,
        body: request.body,
        created_ms,
        origin: None,
        delivering: false,
    }
}

/// The CloudEvents attributes of an async invocation, in binary mode, so that the app
/// may read it as an event (the body is its data): its id, `/skiff/services/NAME`, type
/// `dev.skiff.invocation` and when it was accepted. Not for a request that already is
/// an event, in either mode.
fn add_event_attributes(fields: &mut Vec<u8>, id: &str, service: &str, created_ms: i64) {
    let structured = |value: &[u8]| {
        let lower = value.to_ascii_lowercase();
        let marker = b"application/cloudevents";
        lower.windows(marker.len()).any(|w| w == marker)
    };
    let is_event = super::fields::each(fields).any(|(name, value)| {
        name.eq_ignore_ascii_case(b"ce-specversion")
            || (name.eq_ignore_ascii_case(b"content-type") && structured(value))
    });
    if is_event {
        return;
    }
    let time = skiff_sandbox::rfc3339_ms(created_ms);
    fields.extend_from_slice(
        format!(
            "ce-specversion: 1.0\r\nce-id: {id}\r\nce-source: /skiff/services/{service}\r\n\
             ce-type: {INVOCATION_TYPE}\r\nce-time: {time}\r\n"
        )
        .as_bytes(),
    );
}

/// The CloudEvents type of an async invocation's delivery.
pub const INVOCATION_TYPE: &str = "dev.skiff.invocation";

/// The kept fields, with who called a private service first (as `x-skiff-caller`, which
/// the delivery turns into its claim and the router into the field the app sees).
fn with_caller(request: &AsyncRequest) -> Vec<u8> {
    let mut fields = Vec::with_capacity(request.fields.len() + 64);
    if let Some(caller) = &request.caller {
        super::fields::push(&mut fields, "x-skiff-caller", caller.as_bytes());
    }
    fields.extend_from_slice(&request.fields);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_async_request_goes_out_as_an_event_unless_it_is_one() {
        let mut plain = b"host: a.localhost\r\ncontent-type: application/json\r\n".to_vec();
        add_event_attributes(&mut plain, "inv-1", "a", 1_700_000_000_123);
        let text = String::from_utf8(plain).unwrap();
        for line in [
            "ce-specversion: 1.0\r\n",
            "ce-id: inv-1\r\n",
            "ce-source: /skiff/services/a\r\n",
            "ce-type: dev.skiff.invocation\r\n",
            "ce-time: 2023-11-14T22:13:20.123",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        for event in [
            &b"host: a\r\nCE-SpecVersion: 1.0\r\nce-id: x\r\n"[..],
            &b"host: a\r\nContent-Type: application/cloudevents+json\r\n"[..],
        ] {
            let mut fields = event.to_vec();
            add_event_attributes(&mut fields, "inv-1", "a", 0);
            assert_eq!(fields, event, "an event stays as it was sent");
        }
    }
}
