//! The writer thread: what the router hands over waits in a queue; the thread takes all
//! that waits (up to a batch), stores it under one commit, and only then answers each,
//! so a burst costs one commit, not one each.

use super::deliver::Dispatcher;
use skiff_router::{Accepted, AsyncRequest};
use skiff_store::{NewInvocation, Store};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The most invocations stored under one commit.
const BATCH: usize = 1024;

/// One invocation to store, and where to say how it went.
pub(crate) struct Job {
    pub id: String,
    pub request: AsyncRequest,
    pub created_ms: i64,
    pub reply: oneshot::Sender<Result<Accepted, String>>,
}

/// Starts the thread; returns its queue.
pub(crate) fn start(
    mut store: Store,
    dispatcher: Arc<Dispatcher>,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
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
                store_batch(&mut store, jobs);
                dispatcher.wake();
            }
        })?;
    Ok(tx)
}

fn store_batch(store: &mut Store, jobs: Vec<Job>) {
    let batch: Vec<NewInvocation> = jobs
        .iter()
        .map(|j| NewInvocation {
            id: j.id.clone(),
            service: j.request.service.clone(),
            idempotency_key: j.request.idempotency_key.clone(),
            method: j.request.method.clone(),
            target: j.request.target.clone(),
            fields: with_caller(&j.request),
            body: j.request.body.clone(),
            created_ms: j.created_ms,
        })
        .collect();
    match store.add_invocations(&batch) {
        Ok(ids) => {
            for (job, (id, duplicate)) in jobs.into_iter().zip(ids) {
                let _ = job.reply.send(Ok(Accepted { id, duplicate }));
            }
        }
        Err(e) => {
            tracing::error!("storing {} async invocations: {e}", jobs.len());
            for job in jobs {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
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
