//! Async invocations: the router hands over requests sent with `Prefer: respond-async`;
//! they are written to the store (many to one commit) before the router answers 202, and
//! delivered later through the router itself (so scale from zero, concurrency and traffic
//! splits apply) under the delivery policy (`skiff_events`): retried on 5xx, 429,
//! timeouts and failed connections, dead after their retries or on another 4xx.
//!
//! Delivery is at least once: an attempt is marked in the store before it starts and its
//! outcome written after, and the attempts a crash cut short are made again at start.
//! This module owns the writer thread and the dispatcher; it must not speak SQL (the
//! store does) or HTTP framing beyond what hyper does for it.

mod dead_letter;
mod deliver;
pub(crate) mod fields;
mod limits;
mod writer;

use crate::{Control, ControlError};
use skiff_events::DeliveryPolicy;
use skiff_router::{Accepted, AsyncRequest, AsyncSink, PublishRequest, Refusal};
use skiff_store::{InvocationRecord, NewInvocation, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::oneshot;

pub use deliver::Dispatcher;

/// How deliveries to one target (a service, or a trigger's) go: the policy, and the
/// service (and path) dead ones are also sent to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
    pub policy: DeliveryPolicy,
    pub dead_letter: Option<(String, String)>,
    pub max_in_flight: Option<u32>,
    pub max_per_second: Option<u32>,
}

/// Each target's delivery, by service name or trigger origin; shared by the control
/// plane (which sets it when it routes a service or writes a trigger) and the
/// dispatcher (which reads it).
pub(crate) type Policies = Arc<std::sync::RwLock<std::collections::HashMap<String, Target>>>;

fn target_of(d: &skiff_core::Delivery) -> Target {
    Target {
        policy: policy_of(d),
        dead_letter: d
            .dead_letter_sink()
            .map(|(service, path)| (service.to_owned(), path.to_owned())),
        max_in_flight: d.max_in_flight,
        max_per_second: d.max_per_second,
    }
}

/// A service's delivery settings over skiff's defaults.
pub(crate) fn policy_of(d: &skiff_core::Delivery) -> DeliveryPolicy {
    let mut p = DeliveryPolicy::default();
    if let Some(n) = d.retries {
        p.retries = n;
    }
    if let Some(b) = d.backoff_policy.as_deref().and_then(|b| b.parse().ok()) {
        p.backoff = b;
    }
    if let Some(ms) = d.backoff_delay_ms {
        p.backoff_delay = std::time::Duration::from_millis(ms);
        // A cap below the unit would cut every wait to it.
        p.backoff_max = p.backoff_max.map(|max| max.max(p.backoff_delay));
    }
    if let Some(ms) = d.timeout_ms {
        p.timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = d.max_age_ms {
        p.max_age = Some(std::time::Duration::from_millis(ms));
    }
    p
}

/// Counts by state as the API shows them; `None` when there are none.
pub(crate) fn counts_document(
    counts: Vec<(skiff_store::InvocationState, u64)>,
    oldest: Option<i64>,
) -> Option<crate::documents::InvocationCounts> {
    use skiff_store::InvocationState as S;
    if counts.is_empty() {
        return None;
    }
    let mut c = crate::documents::InvocationCounts {
        oldest_open_ms: oldest,
        ..Default::default()
    };
    for (state, n) in counts {
        *match state {
            S::Pending => &mut c.pending,
            S::Delivering => &mut c.delivering,
            S::Delivered => &mut c.delivered,
            S::Dead => &mut c.dead,
        } = n;
    }
    Some(c)
}

/// The longest the list of a service's invocations runs.
pub const MAX_LISTED: u32 = 1000;

/// A new invocation's id: `inv-`, the time in milliseconds (12 hex digits) and 8
/// random bytes. Ids that grow with time keep the store's index of them appended at
/// its end: a commit of many new ones writes a few pages of it, not one page each.
pub(crate) fn new_id() -> String {
    format!(
        "inv-{:012x}{}",
        now_ms().max(0),
        crate::supervisor::random_hex(8)
    )
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

/// A time as Unix milliseconds (0 before 1970).
pub(crate) fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where every source of events puts what it makes (async requests, schedules' runs,
/// topics' events): the writer thread's queue. What it stores is delivered the same way.
#[derive(Clone)]
pub struct Emitter {
    queue: std::sync::mpsc::Sender<writer::Job>,
}

impl Emitter {
    /// Stores `invocations` under one commit; each one's id (its own or, for a repeated
    /// idempotency key, the first's, with `true`), once they are on disk.
    pub fn emit(
        &self,
        invocations: Vec<NewInvocation>,
    ) -> impl Future<Output = Result<Vec<(String, bool)>, String>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .queue
            .send(writer::Job::Add(writer::Add { invocations, reply }));
        async move {
            sent.map_err(|_| "the invocation store is closed".to_owned())?;
            answer
                .await
                .map_err(|_| "the invocation store stopped".to_owned())?
        }
    }
}

/// What the router hands async invocations and published events to.
struct InvocationSink {
    emitter: Emitter,
    /// For topics' subscriptions (weak: the control plane owns the router, which owns this).
    ctl: std::sync::Weak<Control>,
}

impl AsyncSink for InvocationSink {
    fn enqueue(
        &self,
        request: AsyncRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Accepted, String>> + Send>> {
        let invocation = writer::new_invocation(new_id(), request, now_ms());
        let stored = self.emitter.emit(vec![invocation]);
        Box::pin(async move {
            let (id, duplicate) = stored
                .await?
                .pop()
                .ok_or_else(|| "the invocation store answered nothing".to_owned())?;
            Ok(Accepted { id, duplicate })
        })
    }

    fn publish(
        &self,
        request: PublishRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, Refusal>> + Send>> {
        let ctl = self.ctl.upgrade();
        Box::pin(async move {
            let ctl = ctl.ok_or((503, "skiff: the daemon is stopping".to_owned()))?;
            let headers = header_map(&request.fields);
            let event = skiff_events::read_event(&headers, request.body)
                .map_err(|e| (400, format!("skiff: {e}")))?;
            tracing::debug!(topic = %request.topic, publisher = %request.publisher, "event in");
            let published = ctl.publish(&request.topic, event).await.map_err(|e| {
                let status = match e {
                    ControlError::NotFound(_) => 404,
                    ControlError::InvalidRequest { .. } => 400,
                    _ => 503,
                };
                (status, format!("skiff: {e}"))
            })?;
            serde_json::to_vec(&published).map_err(|e| (500, e.to_string()))
        })
    }
}

/// Kept fields as a header map (a field that is not a valid one is left out: the
/// router wrote them).
fn header_map(kept: &[u8]) -> hyper::header::HeaderMap {
    let mut map = hyper::HeaderMap::new();
    for (name, value) in fields::each(kept) {
        let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name),
            hyper::header::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

impl Control {
    /// Takes async invocations from the router from now on and delivers them through
    /// it: two more connections to the store (one writes what comes
    /// in, one delivers), so neither waits on the control plane's.
    pub fn start_invocations(self: &Arc<Self>) -> Result<Arc<Dispatcher>, ControlError> {
        let path = self.db().path().to_owned();
        let mut delivering = Store::open(&path)?;
        let requeued = delivering.requeue_interrupted_invocations()?;
        if requeued > 0 {
            tracing::info!(
                count = requeued,
                "async invocations whose delivery a stop cut short go out again"
            );
        }
        let (queue, jobs) = std::sync::mpsc::channel();
        let dispatcher = Dispatcher::new(
            delivering,
            queue.clone(),
            self.router.clone(),
            Arc::clone(&self.delivery_policies),
        );
        let writing = Store::open(&path)?;
        // The dispatcher's connection checkpoints instead, off the writer's commits.
        writing.no_auto_checkpoints()?;
        writer::start(writing, jobs, Arc::downgrade(&dispatcher))
            .map_err(|e| ControlError::internal(format!("starting the invocation writer: {e}")))?;
        let emitter = Emitter { queue };
        let sink = InvocationSink {
            emitter: emitter.clone(),
            ctl: Arc::downgrade(self),
        };
        self.router
            .set_async_sink(Arc::new(sink) as Arc<dyn AsyncSink>);
        let _ = self.emitter.set(emitter.clone());
        self.load_triggers()?;
        crate::triggers::start_scheduler(Arc::clone(self), emitter);
        Arc::clone(&dispatcher).spawn(Arc::clone(self));
        let _ = self.dispatcher.set(Arc::clone(&dispatcher));
        Ok(dispatcher)
    }

    /// How many of `service`'s invocations are where; `None` when it has had none.
    pub(crate) fn invocation_counts(
        &self,
        service: &str,
    ) -> Result<Option<crate::documents::InvocationCounts>, ControlError> {
        let (counts, oldest) = self.db().invocation_counts(service)?;
        Ok(counts_document(counts, oldest))
    }

    /// Delivers what `key` (a trigger's origin) makes under skiff's defaults again.
    pub(crate) fn forget_delivery_policy(&self, key: &str) {
        let mut all = self
            .delivery_policies
            .write()
            .unwrap_or_else(|p| p.into_inner());
        all.remove(key);
    }

    /// Sends `service`'s dead invocations (`ids`, or all) out again, attempts afresh.
    pub fn redrive(&self, service: &str, ids: &[String]) -> Result<Vec<String>, ControlError> {
        let redriven = self.db().redrive_invocations(service, ids, now_ms())?;
        if let Some(d) = self.dispatcher.get() {
            d.wake();
        }
        tracing::info!(service = %service, count = redriven.len(), "dead invocations sent again");
        Ok(redriven)
    }

    /// Delivers what goes to `key` (a service, or a trigger's origin, which comes first)
    /// under `delivery` from now on.
    pub(crate) fn set_delivery_policy(&self, key: &str, delivery: &skiff_core::Delivery) {
        let mut all = self
            .delivery_policies
            .write()
            .unwrap_or_else(|p| p.into_inner());
        all.insert(key.to_owned(), target_of(delivery));
    }

    /// A service's newest invocations, newest first.
    pub fn invocations(
        &self,
        service: &str,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>, ControlError> {
        Ok(self.db().invocations(service, limit.min(MAX_LISTED))?)
    }

    /// The newest `limit` invocations triggers made (of `service`, of `origin`, in
    /// `state`); with a state, async requests too (`dead`: the dead-letter queue).
    pub fn events(
        &self,
        service: Option<String>,
        origin: Option<String>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>, ControlError> {
        let state = state
            .map(str::parse::<skiff_store::InvocationState>)
            .transpose()
            .map_err(|why| ControlError::bad_field("state", why))?;
        let query = skiff_store::InvocationQuery {
            events_only: state.is_none() && service.is_none() && origin.is_none(),
            service,
            origin,
            state,
        };
        Ok(self.db().find_invocations(&query, limit.min(MAX_LISTED))?)
    }

    /// One invocation of `service`.
    pub fn invocation(&self, service: &str, id: &str) -> Result<InvocationRecord, ControlError> {
        self.db()
            .invocation(id)?
            .filter(|r| r.service == service)
            .ok_or_else(|| {
                ControlError::NotFound(format!("service {service} has no invocation {id}"))
            })
    }
}
