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
use tokio::sync::oneshot;

/// The most requests done under one commit.
const BATCH: usize = 1024;

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
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                while jobs.len() < BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let news = jobs.iter().any(|j| !matches!(j, Job::Claim { .. }));
                turn(&mut store, jobs);
                if news {
                    if let Some(d) = dispatcher.upgrade() {
                        d.wake();
                    }
                }
            }
        })?;
    Ok(())
}

/// Does `jobs` under one commit and answers each.
fn turn(store: &mut Store, jobs: Vec<Job>) {
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
    let wanted: Vec<(i64, u32)> = claims.iter().map(|(n, l, _)| (*n, *l)).collect();
    match store.invocation_batch(&new, &outcomes, &wanted) {
        Ok((ids, claimed)) => {
            let mut ids = ids.into_iter();
            for (reply, n) in replies {
                let _ = reply.send(Ok(ids.by_ref().take(n).collect()));
            }
            for ((_, _, reply), taken) in claims.into_iter().zip(claimed) {
                let _ = reply.send(Ok(taken));
            }
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
        }
    }
}

/// An async request as it is kept.
pub(crate) fn new_invocation(id: String, request: AsyncRequest, created_ms: i64) -> NewInvocation {
    let fields = with_caller(&request);
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
    }
}

/// The kept fields, with who called a private service first (as `x-skiff-caller`, which
/// the delivery turns into its claim and the router into the field the app sees).
fn with_caller(request: &AsyncRequest) -> Vec<u8> {
    let mut fields = Vec::with_capacity(request.fields.len() + 64);
    if let Some(caller) = &request.caller {
        fields.extend_from_slice(b"x-skiff-caller: ");
        fields.extend_from_slice(caller.as_bytes());
        fields.extend_from_slice(b"\r\n");
    }
    fields.extend_from_slice(&request.fields);
    fields
}
