//! The dispatcher: takes the invocations that are due, delivers each through the router
//! (in memory: routed, split and queued for a slot as the ingress would, see
//! [`skiff_router::Router::send_local`]), and hands what the delivery policy makes of
//! the outcome to the writer thread, which writes many under one commit (claims go
//! through it too: it is the one writer). At most [`IN_FLIGHT`] at once; idle, it
//! sleeps until the next one is due or a new one comes. An outcome not yet written when the daemon
//! dies leaves its invocation `delivering`, so it goes out again: at least once.

use super::now_ms;
use super::writer::Job;
use crate::Control;
use skiff_events::{Attempt, Decision};
use skiff_store::{InvocationOutcome, InvocationRecord, Store};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// The most deliveries in flight at once.
const IN_FLIGHT: usize = 256;
/// The longest the dispatcher sleeps without looking.
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// Delivered invocations are kept this long for `skiff invocations`, dead ones longer
/// (for a redrive), then forgotten; checked every [`PRUNE_EVERY`].
const KEEP_DELIVERED: Duration = Duration::from_secs(24 * 3600);
const KEEP_DEAD: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the write-ahead log is checkpointed (the writer's connection does not).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How much nicer checkpoints run: copying the log can wait for requests and deliveries.
const CHECKPOINT_NICE: i32 = 10;

/// Delivers async invocations.
pub struct Dispatcher {
    /// For reads (what is due next) and the minutely pruning.
    store: Mutex<Store>,
    /// The writer thread: claims and outcomes.
    writer: mpsc::Sender<Job>,
    router: skiff_router::Router,
    policies: super::Policies,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Each target's concurrency and rate limits.
    limits: super::limits::Limits,
    /// The limits' clock.
    started: std::time::Instant,
    /// New invocations the writer stored as taken and handed over, not yet started.
    handed: Mutex<Vec<InvocationRecord>>,
}

impl Dispatcher {
    pub(crate) fn new(
        store: Store,
        writer: mpsc::Sender<Job>,
        router: skiff_router::Router,
        policies: super::Policies,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store: Mutex::new(store),
            writer,
            router,
            policies,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            limits: Default::default(),
            started: std::time::Instant::now(),
            handed: Mutex::new(Vec::new()),
        })
    }

    /// What is due now, up to `limit`, taken by the writer.
    async fn claim(&self, limit: u32) -> Result<Vec<InvocationRecord>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job::Claim {
            now_ms: now_ms(),
            limit,
            reply,
        };
        self.writer
            .send(job)
            .map_err(|_| "the invocation writer is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "the invocation writer stopped".to_owned())?
    }

    /// Something may be due now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// How many more new invocations the writer may hand over now.
    pub(crate) fn room(&self) -> usize {
        let waiting = self.handed.lock().map_or(0, |h| h.len());
        self.slots.available_permits().saturating_sub(waiting)
    }

    /// Takes new invocations stored as taken, to deliver at once.
    pub(crate) fn hand(&self, taken: Vec<InvocationRecord>) {
        self.handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(taken);
        self.wake();
    }

    pub(crate) fn spawn(self: Arc<Self>, ctl: Arc<Control>) {
        tokio::spawn(async move { self.run(ctl).await });
    }

    /// Runs `f` while this dispatcher's connection does nothing (no checkpoint, no read).
    pub(crate) fn while_still<R>(&self, f: impl FnOnce() -> R) -> R {
        let _still = self.store();
        f()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>, ctl: Arc<Control>) {
        let mut pruned_at = tokio::time::Instant::now();
        let mut checkpointed_at = tokio::time::Instant::now();
        while !ctl.is_shutting_down() {
            if checkpointed_at.elapsed() >= CHECKPOINT_EVERY {
                checkpointed_at = tokio::time::Instant::now();
                let me = Arc::clone(&self);
                // In the background: deliveries go on meanwhile.
                tokio::task::spawn_blocking(move || {
                    // Below the hot path's priority (nice is per thread on Linux), and
                    // back after: the pool's thread goes on to other work.
                    let was = rustix::process::getpriority_process(None).unwrap_or(0);
                    let _ = rustix::process::setpriority_process(None, was + CHECKPOINT_NICE);
                    if let Err(e) = me.store().checkpoint_passive() {
                        tracing::warn!("checkpointing the database: {e}");
                    }
                    let _ = rustix::process::setpriority_process(None, was);
                });
            }
            if pruned_at.elapsed() >= PRUNE_EVERY {
                pruned_at = tokio::time::Instant::now();
                let me = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || me.prune()).await;
            }
            let handed =
                std::mem::take(&mut *self.handed.lock().unwrap_or_else(|p| p.into_inner()));
            let room = self.slots.available_permits().clamp(1, IN_FLIGHT) as u32;
            let claimed = match handed.is_empty() {
                false => Ok(handed),
                true => self.claim(room).await,
            };
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!("taking due async invocations: {e}");
                    tokio::time::sleep(IDLE_LOOK).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                self.idle().await;
                continue;
            }
            for invocation in claimed {
                let (key, target) = self.target(&invocation);
                let admitted = self.limits.admit(&key, &target, self.started.elapsed());
                if let super::limits::Admit::Later(wait) = admitted {
                    self.defer(&invocation, wait);
                    continue;
                }
                let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                    return;
                };
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    let outcome = me.attempt(&invocation, &target).await;
                    me.record(&invocation, &target, outcome);
                    me.limits.done(&key);
                    drop(slot);
                });
            }
        }
    }

    /// Forgets invocations settled long enough ago.
    fn prune(&self) {
        let now = now_ms();
        let ago = |keep: Duration| now.saturating_sub(keep.as_millis() as i64);
        match self
            .store()
            .prune_invocations(ago(KEEP_DELIVERED), ago(KEEP_DEAD))
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "forgot async invocations settled long ago"),
            Err(e) => tracing::warn!("forgetting old async invocations: {e}"),
        }
    }

    /// Sleeps until the next invocation is due (at most a second) or one comes.
    async fn idle(&self) {
        // Not while a checkpoint holds the connection: this runs on the event loop.
        let next = match self.store.try_lock() {
            Ok(store) => store.next_invocation_due().ok().flatten(),
            Err(_) => Some(now_ms() + 50),
        };
        let wait = next.map_or(IDLE_LOOK, |due| {
            Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64).min(IDLE_LOOK)
        });
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// How deliveries of `invocation` go, and the key its limits are kept under: what
    /// made it (a trigger's own), else its service's (skiff's default until it is
    /// routed).
    fn target(&self, invocation: &InvocationRecord) -> (String, super::Target) {
        let all = self.policies.read().unwrap_or_else(|p| p.into_inner());
        let by_origin = invocation
            .origin
            .as_deref()
            .and_then(|o| all.get_key_value(o));
        match by_origin.or_else(|| all.get_key_value(&invocation.service)) {
            Some((key, target)) => (key.clone(), target.clone()),
            None => (invocation.service.clone(), Default::default()),
        }
    }

    /// Puts back a claimed invocation a limit held back, due `wait` from now.
    fn defer(&self, invocation: &InvocationRecord, wait: Duration) {
        let next_ms = now_ms() + wait.as_millis().max(1) as i64;
        let _ = self.writer.send(Job::Outcome(
            invocation.id.clone(),
            InvocationOutcome::Deferred { next_ms },
            now_ms(),
        ));
    }

    /// One delivery, as the policy sees its end.
    async fn attempt(&self, invocation: &InvocationRecord, target: &super::Target) -> Attempt {
        let timeout = target.policy.timeout;
        match tokio::time::timeout(timeout, self.send(invocation)).await {
            Err(_) => Attempt::TimedOut,
            Ok(attempt) => attempt,
        }
    }

    async fn send(&self, invocation: &InvocationRecord) -> Attempt {
        let (head, caller) = request_head(invocation);
        let answer = self
            .router
            .send_local(&invocation.service, &head, &invocation.body, &caller)
            .await;
        let retry_after = answer
            .retry_after
            .as_deref()
            .and_then(|v| skiff_events::parse_retry_after(v, std::time::SystemTime::now()));
        Attempt::Answered {
            status: answer.status,
            retry_after,
        }
    }

    /// Hands what the policy makes of `attempt` to the recorder.
    fn record(&self, invocation: &InvocationRecord, target: &super::Target, attempt: Attempt) {
        let age =
            Duration::from_millis(now_ms().saturating_sub(invocation.created_ms).max(0) as u64);
        let status = match attempt {
            Attempt::Answered { status, .. } => Some(status),
            _ => None,
        };
        let outcome = match target.policy.decide(invocation.attempts, age, attempt) {
            Decision::Delivered => InvocationOutcome::Delivered {
                status: status.unwrap_or(200),
            },
            Decision::Retry(wait) => InvocationOutcome::Retry {
                next_ms: now_ms() + wait.as_millis() as i64,
                status,
                error: describe(attempt),
            },
            Decision::DeadLetter(why) => {
                tracing::warn!(invocation = %invocation.id, service = %invocation.service, "async invocation dead: {why}");
                let why = why.to_string();
                let forward = target
                    .dead_letter
                    .as_ref()
                    .and_then(|sink| super::dead_letter::copy(invocation, sink, &why, status))
                    .map(Box::new);
                InvocationOutcome::Dead {
                    status,
                    error: why,
                    forward,
                }
            }
        };
        let _ = self
            .writer
            .send(Job::Outcome(invocation.id.clone(), outcome, now_ms()));
    }
}

/// The kept request's head as a client would send it, and who it speaks for: the caller
/// it was accepted from, else skiff's own deliveries.
fn request_head(invocation: &InvocationRecord) -> (Vec<u8>, String) {
    let mut head = Vec::with_capacity(invocation.fields.len() + invocation.target.len() + 32);
    head.extend_from_slice(invocation.method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(invocation.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut caller = None;
    for (name, value) in super::fields::each(&invocation.fields) {
        if name.eq_ignore_ascii_case(b"x-skiff-caller") {
            caller = Some(String::from_utf8_lossy(value).into_owned());
            continue;
        }
        for part in [name, b": ", value, b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    head.extend_from_slice(b"\r\n");
    (head, caller.unwrap_or_else(|| DELIVERY_CALLER.to_owned()))
}

/// Who a private service is told calls it for deliveries no caller made (schedules,
/// topics' subscriptions from the API).
const DELIVERY_CALLER: &str = "skiff/async";

fn describe(attempt: Attempt) -> String {
    match attempt {
        Attempt::Answered { status, .. } => format!("status {status}"),
        Attempt::TimedOut => "timed out".into(),
        Attempt::ConnectionFailed => "could not connect".into(),
    }
}
