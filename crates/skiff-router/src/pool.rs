//! One revision's ready instances, their free concurrency slots, and the activator queue
//! of requests waiting for a slot.
//!
//! A request takes a [`Lease`] on the least-loaded instance with a free slot; with none
//! free it queues (bounded) and wakes whoever watches [`RevisionPool::demand_changed`] —
//! the reconciler, which starts instances. Slots are handed to queued requests in arrival
//! order as leases end or instances join. An instance leaves the pool only when it has no
//! request in flight ([`RevisionPool::retire_if_idle`]), so scaling down never cuts one.
//!
//! This module never starts or stops anything: it counts, queues and hands out.

use crate::upstream::Upstream;
pub use skiff_core::BusyTime;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// How a revision's pool behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The revision's name (for errors and logs).
    pub revision: String,
    /// Requests one instance serves at once; 0 = no limit.
    pub concurrency: u32,
    /// Requests that may wait for a slot; past this they get 429.
    pub queue_limit: usize,
    /// Time a request may take until its response starts (queueing included).
    pub timeout: Duration,
}

/// Why a request got no slot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The queue is full.
    #[error("too many requests are waiting for revision {0}")]
    Overloaded(String),
    /// Instances fail to start; retry after the given time.
    #[error("revision {revision} is unavailable: {reason}")]
    Unavailable {
        /// The revision.
        revision: String,
        /// Why (the last start failure).
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The revision no longer serves (its service was removed).
    #[error("revision {0} was removed")]
    Closed(String),
}

impl PoolError {
    /// The status a client gets for it, and its Retry-After in seconds if any.
    pub(crate) fn status(&self) -> (u16, Option<u64>) {
        match self {
            PoolError::Overloaded(_) => (429, Some(1)),
            PoolError::Unavailable { retry_after, .. } => {
                (503, Some(retry_after.as_secs_f64().ceil().max(1.0) as u64))
            }
            PoolError::Closed(_) => (503, None),
        }
    }
}

/// What the pool holds now, for the reconciler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Ready instances (in the rotation).
    pub ready: u32,
    /// Requests being served.
    pub in_flight: u32,
    /// Requests waiting for a slot.
    pub queued: u32,
    /// Requests received since the pool was made (a running count, for rates).
    pub requests_total: u64,
    /// Requests in flight and queued, integrated over time.
    pub busy: BusyTime,
}

struct Member {
    upstream: Arc<Upstream>,
    in_flight: u32,
    idle_since: Instant,
    /// False while its readiness probe fails: it gets no new requests.
    serving: bool,
    /// Probes and checks that need it running, besides requests.
    holds: u32,
    /// Whether its throttle has paused it (it has no work).
    paused: bool,
}

impl Member {
    fn new(upstream: Arc<Upstream>) -> Member {
        Member {
            upstream,
            in_flight: 0,
            idle_since: now(),
            serving: true,
            holds: 0,
            paused: false,
        }
    }

    fn has_work(&self) -> bool {
        self.in_flight + self.holds > 0
    }

    /// Lets a paused instance run again, before work reaches it.
    fn wake(&mut self) {
        if self.paused {
            self.paused = false;
            if let Some(t) = self.upstream.throttle() {
                t.resume();
            }
        }
    }

    /// Pauses an instance that has no work left (when it has a throttle).
    fn settle(&mut self) {
        if !self.paused && !self.has_work() {
            if let Some(t) = self.upstream.throttle() {
                self.paused = true;
                t.pause();
            }
        }
    }
}

/// The pool's clock: tokio's, so that tests which pause tokio's time move the pool's idle
/// and back-off times with the reconciler's. Outside such tests it is `Instant::now()`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

type Waiter = oneshot::Sender<Result<Lease, PoolError>>;

struct State {
    members: Vec<Member>,
    /// The members' requests in flight, summed.
    in_flight: u32,
    queue: VecDeque<Waiter>,
    unavailable: Option<(String, Instant)>,
    closed: bool,
    requests_total: u64,
    /// Concurrency × nanoseconds up to `busy_at`.
    request_nanos: u128,
    busy_at: Instant,
    busy_from: Option<Instant>,
}

impl State {
    /// Requests in flight and queued.
    fn concurrency(&self) -> u32 {
        self.in_flight + self.queue.len() as u32
    }

    /// Integrates the concurrency up to `now`: called before every change of it, so the
    /// concurrency has held since the last call. Two threads may read the clock in one
    /// order and lock in the other; a `now` before the last is taken as the last.
    fn integrate(&mut self, now: Instant) {
        let since = self.busy_at;
        if now <= since {
            return;
        }
        let concurrency = self.concurrency();
        if concurrency > 0 {
            let nanos = (now - since).as_nanos();
            self.request_nanos += u128::from(concurrency) * nanos;
            self.busy_from.get_or_insert(since);
        }
        self.busy_at = now;
    }
}

/// A revision's instances and waiting requests.
pub struct RevisionPool {
    config: PoolConfig,
    /// When the pool was made: the origin of [`BusyTime`]'s instants.
    made: Instant,
    state: Mutex<State>,
    demand: Notify,
    /// Set by [`RevisionPool::wake_on_next_change`]; the next request or change of
    /// instances clears it.
    wake_on_change: AtomicBool,
}

impl RevisionPool {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Arc<RevisionPool> {
        let made = now();
        let state = State {
            members: Vec::new(),
            in_flight: 0,
            queue: VecDeque::new(),
            unavailable: None,
            closed: false,
            requests_total: 0,
            request_nanos: 0,
            busy_at: made,
            busy_from: None,
        };
        Arc::new(RevisionPool {
            config,
            made,
            state: Mutex::new(state),
            demand: Notify::new(),
            wake_on_change: AtomicBool::new(false),
        })
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock, taken to change the concurrency at `now` (read before locking, so the
    /// clock is not read with the lock held).
    fn lock_to_change(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        st.integrate(now);
        st
    }

    fn has_room(&self, m: &Member) -> bool {
        m.serving && (self.config.concurrency == 0 || m.in_flight < self.config.concurrency)
    }

    /// Takes a slot on the least-loaded instance, or waits in the queue for one (up to
    /// the request timeout, which the caller applies around this future).
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, PoolError> {
        self.wake_if_asked();
        let now = now();
        let rx = {
            let mut st = self.lock_to_change(now);
            if st.closed {
                return Err(PoolError::Closed(self.config.revision.clone()));
            }
            st.requests_total += 1;
            if let Some(lease) = self.grant_locked(&mut st) {
                return Ok(lease);
            }
            if st.members.is_empty() {
                if let Some((reason, until)) = &st.unavailable {
                    if *until > now {
                        return Err(PoolError::Unavailable {
                            revision: self.config.revision.clone(),
                            reason: reason.clone(),
                            retry_after: *until - now,
                        });
                    }
                }
            }
            st.queue.retain(|w| !w.is_closed());
            if st.queue.len() >= self.config.queue_limit {
                return Err(PoolError::Overloaded(self.config.revision.clone()));
            }
            let (tx, rx) = oneshot::channel();
            st.queue.push_back(tx);
            rx
        };
        self.demand.notify_one();
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(PoolError::Closed(self.config.revision.clone())),
        }
    }

    fn grant_locked(self: &Arc<Self>, st: &mut State) -> Option<Lease> {
        let idx = st
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| self.has_room(m))
            .min_by_key(|(_, m)| m.in_flight)
            .map(|(i, _)| i)?;
        let m = &mut st.members[idx];
        m.wake();
        m.in_flight += 1;
        st.in_flight += 1;
        Some(Lease {
            pool: Arc::clone(self),
            upstream: Arc::clone(&m.upstream),
            armed: true,
        })
    }

    /// Hands free slots to waiting requests, first come first served, then pauses the
    /// members it took a slot back from that were left with no work.
    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        let mut given_back = Vec::new();
        while let Some(waiter) = st.queue.pop_front() {
            if waiter.is_closed() {
                continue;
            }
            let Some(lease) = self.grant_locked(st) else {
                st.queue.push_front(waiter);
                break;
            };
            if let Err(Ok(mut lease)) = waiter.send(Ok(lease)) {
                // The request gave up between the check and the send.
                lease.armed = false;
                given_back.extend(self.release_locked(st, &lease.upstream, now()));
            }
        }
        for i in given_back {
            st.members[i].settle();
        }
    }

    /// Frees a slot; returns the member's index (members do not move while the lock is
    /// held).
    fn release_locked(
        &self,
        st: &mut State,
        upstream: &Arc<Upstream>,
        now: Instant,
    ) -> Option<usize> {
        let i = st
            .members
            .iter()
            .position(|m| Arc::ptr_eq(&m.upstream, upstream))?;
        let m = &mut st.members[i];
        if m.in_flight > 0 {
            m.in_flight -= 1;
            st.in_flight -= 1;
        }
        if m.in_flight == 0 {
            m.idle_since = now;
        }
        Some(i)
    }

    fn release(self: &Arc<Self>, upstream: &Arc<Upstream>) {
        let now = now();
        let mut st = self.lock_to_change(now);
        let released = self.release_locked(&mut st, upstream, now);
        // Waiting requests first: a slot handed straight on is never paused in between.
        self.dispatch_locked(&mut st);
        if let Some(i) = released {
            st.members[i].settle();
        }
    }

    /// Adds a ready instance and serves waiting requests from it.
    pub fn add_instance(self: &Arc<Self>, upstream: Upstream) {
        let mut st = self.lock_to_change(now());
        st.unavailable = None;
        st.members.push(Member::new(Arc::new(upstream)));
        self.dispatch_locked(&mut st);
        if let Some(joined) = st.members.last_mut() {
            joined.settle();
        }
    }

    /// Keeps instance `id` running (not paused by its throttle) while the returned guard
    /// lives, without counting as a request: for probes. `None` if it is not in the pool.
    pub fn hold(self: &Arc<Self>, id: &str) -> Option<Hold> {
        let mut st = self.lock();
        let m = st.members.iter_mut().find(|m| m.upstream.id == id)?;
        m.wake();
        m.holds += 1;
        Some(Hold {
            pool: Arc::clone(self),
            upstream: Arc::clone(&m.upstream),
        })
    }

    /// Whether instance `id` is paused by its throttle now.
    pub fn is_paused(&self, id: &str) -> bool {
        self.lock()
            .members
            .iter()
            .any(|m| m.upstream.id == id && m.paused)
    }

    /// Takes an instance out of the rotation (its readiness probe fails) or puts it back.
    /// Requests it is serving finish; waiting requests go to it once it is back.
    pub fn set_serving(self: &Arc<Self>, id: &str, serving: bool) {
        let mut st = self.lock_to_change(now());
        if let Some(m) = st.members.iter_mut().find(|m| m.upstream.id == id) {
            m.serving = serving;
        }
        if serving {
            self.dispatch_locked(&mut st);
        }
        drop(st);
        self.wake_if_asked();
    }

    /// Drops an instance that died. Requests it was serving fail on their own connection.
    pub fn remove_instance(&self, id: &str) {
        let mut st = self.lock_to_change(now());
        let st = &mut *st;
        let before = st.members.len();
        let mut lost = 0;
        st.members.retain(|m| {
            let keep = m.upstream.id != id;
            if !keep {
                lost += m.in_flight;
            }
            keep
        });
        if st.members.len() != before {
            st.in_flight -= lost;
        }
        self.wake_if_asked();
    }

    /// Takes an instance out of the pool if it has served nothing for `idle_for` (and has
    /// nothing in flight), in one step with the lease accounting so no request can be
    /// handed to it afterwards. Returns whether it was taken out.
    pub fn retire_if_idle(&self, id: &str, idle_for: Duration, now: Instant) -> bool {
        let mut st = self.lock();
        let Some(i) = st.members.iter().position(|m| {
            m.upstream.id == id
                && m.in_flight == 0
                && now.saturating_duration_since(m.idle_since) >= idle_for
        }) else {
            return false;
        };
        st.members.remove(i);
        true
    }

    /// Closes the calling router thread's connections to this pool's instances that
    /// have been idle for `idle_for` at `now` (see [`Upstream::close_idle`]); how many.
    pub fn close_idle_connections(&self, idle_for: Duration, now: Instant) -> usize {
        let upstreams: Vec<Arc<Upstream>> = self
            .lock()
            .members
            .iter()
            .map(|m| Arc::clone(&m.upstream))
            .collect();
        upstreams.iter().map(|u| u.close_idle(idle_for, now)).sum()
    }

    /// Ids of the ready instances, with how long each has been idle (zero when busy).
    pub fn idle_times(&self, now: Instant) -> Vec<(String, Duration)> {
        self.lock()
            .members
            .iter()
            .map(|m| {
                let idle = if m.in_flight == 0 {
                    now.saturating_duration_since(m.idle_since)
                } else {
                    Duration::ZERO
                };
                (m.upstream.id.clone(), idle)
            })
            .collect()
    }

    /// Current load (its [`Load::busy`] as of the last change of concurrency).
    pub fn load(&self) -> Load {
        self.read_load(false)
    }

    /// Current load, for the autoscaler: as [`RevisionPool::load`], and the next reading's
    /// [`BusyTime::busy_from_nanos`] counts from this one. For one caller per pool.
    pub fn sample(&self) -> Load {
        self.read_load(true)
    }

    fn read_load(&self, sampled: bool) -> Load {
        // Only a sample reads the clock (a listing of every service reads every pool):
        // another reading gives the integral as of the last change, unless it drops
        // waiters that gave up, which changes the concurrency.
        let mut st = if sampled {
            self.lock_to_change(now())
        } else {
            self.lock()
        };
        if st.queue.iter().any(|w| w.is_closed()) {
            st.integrate(now());
            st.queue.retain(|w| !w.is_closed());
        }
        debug_assert_eq!(
            st.in_flight,
            st.members.iter().map(|m| m.in_flight).sum::<u32>()
        );
        let since_made = |at: Instant| {
            u64::try_from(at.saturating_duration_since(self.made).as_nanos()).unwrap_or(u64::MAX)
        };
        let busy = BusyTime {
            request_nanos: st.request_nanos,
            at_nanos: since_made(st.busy_at),
            busy_from_nanos: st.busy_from.map(since_made),
        };
        if sampled {
            st.busy_from = (st.concurrency() > 0).then_some(st.busy_at);
        }
        Load {
            ready: st.members.iter().filter(|m| m.serving).count() as u32,
            in_flight: st.in_flight,
            queued: st.queue.len() as u32,
            requests_total: st.requests_total,
            busy,
        }
    }

    /// Wakes the reconciler as a waiting request would (a deploy raised its floor).
    pub fn poke(&self) {
        self.demand.notify_one();
    }

    /// Makes the next request (even one a ready instance serves at once), or the next
    /// instance to leave the pool, or to leave or rejoin the rotation, wake whoever watches
    /// [`RevisionPool::demand_changed`]: the reconciler asks this before it stops
    /// sampling a quiet revision.
    pub fn wake_on_next_change(&self) {
        self.wake_on_change.store(true, Ordering::Relaxed);
    }

    fn wake_if_asked(&self) {
        // A load first: the common case (not asked) writes nothing to the shared line.
        if self.wake_on_change.load(Ordering::Relaxed)
            && self.wake_on_change.swap(false, Ordering::Relaxed)
        {
            self.demand.notify_one();
        }
    }

    /// Resolves when a request starts waiting for a slot (or, once asked, at the next
    /// request or change of instances).
    pub async fn demand_changed(&self) {
        self.demand.notified().await;
    }

    /// An instance failed to start: waiting requests get 503 with `reason`, and so does
    /// every request until `retry_after` has passed, unless an instance becomes ready.
    pub fn fail_waiters(&self, reason: &str, retry_after: Duration) {
        let mut st = self.lock_to_change(now());
        st.unavailable = Some((reason.to_owned(), now() + retry_after));
        if !st.members.is_empty() {
            return;
        }
        for waiter in st.queue.drain(..) {
            let _ = waiter.send(Err(PoolError::Unavailable {
                revision: self.config.revision.clone(),
                reason: reason.to_owned(),
                retry_after,
            }));
        }
    }

    /// Whether instances are failing to start and the back-off has not passed.
    pub fn in_backoff(&self, now: Instant) -> bool {
        self.lock()
            .unavailable
            .as_ref()
            .is_some_and(|(_, until)| *until > now)
    }

    /// Forgets a back-off (a deploy wants to try the revision now).
    pub fn clear_backoff(&self) {
        self.lock().unavailable = None;
    }

    /// Why the revision is (or was last) backing off.
    pub fn backoff_reason(&self) -> Option<String> {
        self.lock().unavailable.as_ref().map(|(r, _)| r.clone())
    }

    /// The revision stops serving: waiting requests fail, new ones are refused.
    pub fn close(&self) {
        let mut st = self.lock_to_change(now());
        st.closed = true;
        for waiter in st.queue.drain(..) {
            let _ = waiter.send(Err(PoolError::Closed(self.config.revision.clone())));
        }
    }
}

/// Keeps one instance running while it lives (see [`RevisionPool::hold`]).
pub struct Hold {
    pool: Arc<RevisionPool>,
    upstream: Arc<Upstream>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(m) = st
            .members
            .iter_mut()
            .find(|m| Arc::ptr_eq(&m.upstream, &self.upstream))
        {
            m.holds = m.holds.saturating_sub(1);
            m.settle();
        }
    }
}

/// A slot on one instance, held while a request is in flight there (until its response
/// has been relayed). Dropping it frees the slot.
pub struct Lease {
    pool: Arc<RevisionPool>,
    upstream: Arc<Upstream>,
    armed: bool,
}

impl Lease {
    /// The instance.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(&self.upstream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Target;

    fn pool(concurrency: u32, queue_limit: usize) -> Arc<RevisionPool> {
        RevisionPool::new(PoolConfig {
            revision: "r-00001".into(),
            concurrency,
            queue_limit,
            timeout: Duration::from_secs(5),
        })
    }

    fn upstream(id: &str) -> Upstream {
        Upstream::new(id, Target::Address(([127, 0, 0, 1], 1).into()))
    }

    #[tokio::test]
    async fn least_loaded_instance_with_a_free_slot() {
        let p = pool(2, 10);
        p.add_instance(upstream("a"));
        p.add_instance(upstream("b"));
        let l1 = p.acquire().await.unwrap();
        let l2 = p.acquire().await.unwrap();
        assert_ne!(l1.upstream().id, l2.upstream().id, "spread over both");
        let l3 = p.acquire().await.unwrap();
        let l4 = p.acquire().await.unwrap();
        assert_eq!(p.load().in_flight, 4);
        // Both full: the next waits; a release hands it that slot.
        let waiting = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.acquire().await.map(|l| l.upstream().id.clone()) }
        });
        tokio::task::yield_now().await;
        while p.load().queued == 0 {
            tokio::task::yield_now().await;
        }
        let freed = l3.upstream().id.clone();
        drop(l3);
        assert_eq!(waiting.await.unwrap().unwrap(), freed);
        drop((l1, l2, l4));
        assert_eq!(p.load().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_integrated_over_time_between_samples() {
        let ms = |n: u64| Duration::from_millis(n);
        let nanos = |d: Duration| d.as_nanos() as u64;
        let p = pool(1, 10);
        p.add_instance(upstream("a"));
        tokio::time::advance(ms(100)).await;
        let quiet = p.sample().busy;
        assert_eq!((quiet.request_nanos, quiet.busy_from_nanos), (0, None));
        assert_eq!(quiet.at_nanos, nanos(ms(100)));
        // One in flight from 300 ms, a second queued from 400 ms, the first done at
        // 450 ms (the second takes its slot), the second done at 500 ms.
        tokio::time::advance(ms(200)).await;
        let first = p.acquire().await.unwrap();
        tokio::time::advance(ms(100)).await;
        let second = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.acquire().await }
        });
        while p.load().queued == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(ms(50)).await;
        drop(first);
        let second = second.await.unwrap().unwrap();
        tokio::time::advance(ms(50)).await;
        drop(second);
        tokio::time::advance(ms(500)).await;
        // Sampled at 1 s with nothing in flight: 100 + 2 × 50 + 50 request-milliseconds,
        // busy from 300 ms on.
        let busy = p.sample().busy;
        assert_eq!(busy.request_nanos, u128::from(nanos(ms(250))));
        assert_eq!(busy.at_nanos, nanos(ms(1000)));
        assert_eq!(busy.busy_from_nanos, Some(nanos(ms(300))));
        // Nothing since.
        tokio::time::advance(ms(100)).await;
        let busy = p.sample().busy;
        assert_eq!(busy.request_nanos, u128::from(nanos(ms(250))));
        assert_eq!(busy.busy_from_nanos, None);
        // In flight across a sample: busy from that sample on.
        let held = p.acquire().await.unwrap();
        tokio::time::advance(ms(100)).await;
        assert_eq!(p.sample().busy.busy_from_nanos, Some(nanos(ms(1100))));
        tokio::time::advance(ms(100)).await;
        let busy = p.sample().busy;
        assert_eq!(busy.busy_from_nanos, Some(nanos(ms(1200))));
        assert_eq!(busy.request_nanos, u128::from(nanos(ms(450))));
        drop(held);
        // A reading that is not a sample leaves the next sample's start alone.
        tokio::time::advance(ms(100)).await;
        assert_eq!(p.load().busy.busy_from_nanos, Some(nanos(ms(1300))));
        assert_eq!(p.sample().busy.busy_from_nanos, Some(nanos(ms(1300))));
    }

    #[tokio::test]
    async fn once_asked_the_next_request_or_change_of_instances_wakes_the_watcher() {
        let p = pool(2, 10);
        p.add_instance(upstream("a"));
        let woken = |p: &Arc<RevisionPool>| {
            let p = Arc::clone(p);
            async move {
                tokio::time::timeout(Duration::from_millis(50), p.demand_changed())
                    .await
                    .is_ok()
            }
        };
        // Served by a ready instance: nobody is woken unless asked.
        drop(p.acquire().await.unwrap());
        assert!(!woken(&p).await);
        p.wake_on_next_change();
        drop(p.acquire().await.unwrap());
        assert!(woken(&p).await);
        // Only the next one.
        drop(p.acquire().await.unwrap());
        assert!(!woken(&p).await);
        // An instance leaving the rotation, or the pool.
        p.wake_on_next_change();
        p.set_serving("a", false);
        assert!(woken(&p).await);
        p.wake_on_next_change();
        p.remove_instance("a");
        assert!(woken(&p).await);
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_when_an_instance_joins() {
        let p = pool(1, 10);
        let mut tasks = Vec::new();
        for i in 0..3 {
            let p2 = Arc::clone(&p);
            tasks.push(tokio::spawn(async move {
                let lease = p2.acquire().await.unwrap();
                (i, lease.upstream().id.clone())
            }));
            while p.load().queued < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        p.add_instance(upstream("a"));
        let (first, on) = tasks.remove(0).await.unwrap();
        assert_eq!((first, on.as_str()), (0, "a"));
        for (want, t) in (1..).zip(tasks) {
            assert_eq!(t.await.unwrap().0, want);
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses() {
        let p = pool(1, 1);
        let p2 = Arc::clone(&p);
        let _waiting = tokio::spawn(async move { p2.acquire().await.is_ok() });
        while p.load().queued == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(p.acquire().await, Err(PoolError::Overloaded(_))));
    }

    #[tokio::test]
    async fn busy_instances_are_never_retired() {
        let p = pool(1, 10);
        p.add_instance(upstream("a"));
        let lease = p.acquire().await.unwrap();
        let later = Instant::now() + Duration::from_secs(3600);
        assert!(!p.retire_if_idle("a", Duration::ZERO, later));
        drop(lease);
        assert!(!p.retire_if_idle("a", Duration::from_secs(60), Instant::now()));
        assert!(p.retire_if_idle("a", Duration::from_secs(60), later));
        assert_eq!(p.load().ready, 0);
    }

    #[tokio::test]
    async fn failures_answer_waiters_and_back_off() {
        let p = pool(1, 10);
        let p2 = Arc::clone(&p);
        let waiting = tokio::spawn(async move { p2.acquire().await.err() });
        while p.load().queued == 0 {
            tokio::task::yield_now().await;
        }
        p.fail_waiters("exited with code 3", Duration::from_secs(30));
        let err = waiting.await.unwrap().unwrap();
        assert!(err.to_string().contains("exited with code 3"), "{err}");
        assert!(matches!(
            p.acquire().await,
            Err(PoolError::Unavailable { .. })
        ));
        assert!(p.in_backoff(Instant::now()));
        p.add_instance(upstream("a"));
        assert!(!p.in_backoff(Instant::now()));
        assert!(p.acquire().await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_keep_a_slot() {
        let p = pool(1, 10);
        let p2 = Arc::clone(&p);
        let gave_up = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(1), p2.acquire())
                .await
                .is_err()
        });
        assert!(gave_up.await.unwrap());
        p.add_instance(upstream("a"));
        assert_eq!(p.load().in_flight, 0);
        assert!(p.acquire().await.is_ok());
    }

    /// Records the throttle's calls, in order.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<&'static str>>>);

    impl crate::Throttle for Recorder {
        fn resume(&self) {
            self.0.lock().unwrap().push("resume");
        }
        fn pause(&self) {
            self.0.lock().unwrap().push("pause");
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    #[tokio::test]
    async fn a_throttled_instance_runs_only_while_it_has_work() {
        let p = pool(2, 10);
        let calls = Recorder::default();
        p.add_instance(upstream("a").with_throttle(Box::new(calls.clone())));
        assert_eq!(calls.take(), ["pause"], "idle on joining");
        assert!(p.is_paused("a"));

        let l1 = p.acquire().await.unwrap();
        let l2 = p.acquire().await.unwrap();
        assert_eq!(
            calls.take(),
            ["resume"],
            "woken once, before the first request"
        );
        drop(l1);
        assert_eq!(
            calls.take(),
            Vec::<&str>::new(),
            "one request still in flight"
        );
        drop(l2);
        assert_eq!(calls.take(), ["pause"]);

        let hold = p.hold("a").unwrap();
        assert!(!p.is_paused("a"));
        let l3 = p.acquire().await.unwrap();
        drop(hold);
        assert_eq!(calls.take(), ["resume"], "the request keeps it running");
        drop(l3);
        assert_eq!(calls.take(), ["pause"]);
        assert!(p.hold("gone").is_none());
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_waiter_does_not_pause_in_between() {
        let p = pool(1, 10);
        let calls = Recorder::default();
        p.add_instance(upstream("a").with_throttle(Box::new(calls.clone())));
        let l1 = p.acquire().await.unwrap();
        assert_eq!(calls.take(), ["pause", "resume"]);
        let p2 = Arc::clone(&p);
        let waiting = tokio::spawn(async move { p2.acquire().await.unwrap() });
        while p.load().queued == 0 {
            tokio::task::yield_now().await;
        }
        drop(l1);
        let l2 = waiting.await.unwrap();
        assert_eq!(
            calls.take(),
            Vec::<&str>::new(),
            "handed over while running"
        );
        drop(l2);
        assert_eq!(calls.take(), ["pause"]);
    }
}
