//! The dispatcher: takes the invocations that are due, delivers each through the ingress
//! (a request of its own, with the daemon's delivery token in `X-Skiff-Delivery`), and
//! writes what the delivery policy makes of the outcome. At most [`IN_FLIGHT`] at once;
//! idle, it sleeps until the next one is due or a new one comes.

use super::now_ms;
use crate::Control;
use http_body_util::Full;
use hyper::body::Bytes;
use skiff_events::{Attempt, Decision, DeliveryPolicy};
use skiff_store::{InvocationOutcome, InvocationRecord, Store};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// The most deliveries in flight at once.
const IN_FLIGHT: usize = 256;
/// The longest the dispatcher sleeps without looking.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Delivers async invocations.
pub struct Dispatcher {
    store: Mutex<Store>,
    ingress: SocketAddr,
    /// Proves a request is the daemon's own delivery (`X-Skiff-Delivery`).
    token: String,
    policy: DeliveryPolicy,
    wake: Notify,
    slots: Arc<Semaphore>,
}

impl Dispatcher {
    pub(crate) fn new(
        store: Store,
        ingress: SocketAddr,
        token: String,
        policy: DeliveryPolicy,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store: Mutex::new(store),
            ingress,
            token,
            policy,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        })
    }

    /// Something may be due now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn spawn(self: Arc<Self>, ctl: Arc<Control>) {
        tokio::spawn(async move { self.run(ctl).await });
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>, ctl: Arc<Control>) {
        while !ctl.is_shutting_down() {
            let room = self.slots.available_permits().clamp(1, 64) as u32;
            let me = Arc::clone(&self);
            let claimed = tokio::task::spawn_blocking(move || {
                me.store().claim_due_invocations(now_ms(), room)
            })
            .await;
            let claimed = match claimed {
                Ok(Ok(claimed)) => claimed,
                Ok(Err(e)) => {
                    tracing::error!("taking due async invocations: {e}");
                    tokio::time::sleep(IDLE_LOOK).await;
                    continue;
                }
                Err(_) => return,
            };
            if claimed.is_empty() {
                self.idle().await;
                continue;
            }
            for invocation in claimed {
                let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                    return;
                };
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    let outcome = me.attempt(&invocation).await;
                    me.record(&invocation, outcome).await;
                    drop(slot);
                    me.wake();
                });
            }
        }
    }

    /// Sleeps until the next invocation is due (at most a second) or one comes.
    async fn idle(&self) {
        let next = self.store().next_invocation_due().ok().flatten();
        let wait = next.map_or(IDLE_LOOK, |due| {
            Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64).min(IDLE_LOOK)
        });
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// One delivery, as the policy sees its end.
    async fn attempt(&self, invocation: &InvocationRecord) -> Attempt {
        match tokio::time::timeout(self.policy.timeout, self.send(invocation)).await {
            Err(_) => Attempt::TimedOut,
            Ok(Err(())) => Attempt::ConnectionFailed,
            Ok(Ok(attempt)) => attempt,
        }
    }

    async fn send(&self, invocation: &InvocationRecord) -> Result<Attempt, ()> {
        let stream = tokio::net::TcpStream::connect(self.ingress)
            .await
            .map_err(drop)?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
            .await
            .map_err(drop)?;
        tokio::spawn(conn);
        let request = self.request(invocation).map_err(drop)?;
        let response = sender.send_request(request).await.map_err(drop)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| skiff_events::parse_retry_after(v, std::time::SystemTime::now()));
        Ok(Attempt::Answered {
            status,
            retry_after,
        })
    }

    /// The kept request, with the daemon's claim (and the caller it was accepted from).
    fn request(
        &self,
        invocation: &InvocationRecord,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let mut builder = hyper::Request::builder()
            .method(invocation.method.as_str())
            .uri(invocation.target.as_str());
        let mut caller = None;
        for line in invocation.fields.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"x-skiff-caller") {
                caller = Some(String::from_utf8_lossy(value).into_owned());
                continue;
            }
            builder = builder.header(name, value);
        }
        let claim = match caller {
            Some(caller) => format!("{} {caller}", self.token),
            None => self.token.clone(),
        };
        builder
            .header("x-skiff-delivery", claim)
            .body(Full::new(Bytes::from(invocation.body.clone())))
            .map_err(|e| e.to_string())
    }

    async fn record(self: &Arc<Self>, invocation: &InvocationRecord, attempt: Attempt) {
        let age =
            Duration::from_millis(now_ms().saturating_sub(invocation.created_ms).max(0) as u64);
        let status = match attempt {
            Attempt::Answered { status, .. } => Some(status),
            _ => None,
        };
        let outcome = match self.policy.decide(invocation.attempts, age, attempt) {
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
                InvocationOutcome::Dead {
                    status,
                    error: why.to_string(),
                }
            }
        };
        let id = invocation.id.clone();
        let me = Arc::clone(self);
        let written = tokio::task::spawn_blocking(move || {
            me.store().record_invocation(&id, &outcome, now_ms())
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::error!(invocation = %invocation.id, "writing a delivery's outcome: {e}");
        }
    }
}

fn describe(attempt: Attempt) -> String {
    match attempt {
        Attempt::Answered { status, .. } => format!("status {status}"),
        Attempt::TimedOut => "timed out".into(),
        Attempt::ConnectionFailed => "could not connect to the ingress".into(),
    }
}
