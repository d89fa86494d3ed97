//! skiff's ingress: HTTP/1.1 requests for `NAME.<domain>` go to an instance of service
//! NAME's revisions (split by percent, see [`Route`]; `TAG-NAME.<domain>` for a tagged
//! one) with a free concurrency slot; with none free they wait in that revision's
//! activator queue while the reconciler starts instances.
//!
//! The router owns the routing table, the per-revision pools and the proxying (headers,
//! streaming, upgrades, timeouts, keep-alive to instances). It must not start or stop
//! instances itself: it signals demand ([`RevisionPool::demand_changed`]) and serves what
//! the reconciler adds to the pools.
//!
//! The HTTP/1.1 forwarding path is written by hand (`h1`, `body`, `conn`,
//! `proxy`) rather than built on a general HTTP library: it is the hot path of every
//! request, and bench/proxy-hop showed a general client plus server costing skiff its
//! lead over nginx. Bodies pass through byte for byte; only heads are rewritten.
//!
//! It forbids unsafe code: the kernel interfaces it needs (the eBPF shortcut, socket
//! marks, reads into uninitialised buffers) live in `skiff-kernel`.
#![forbid(unsafe_code)]

pub mod accept;
pub mod access;
mod body;
mod buffers;
mod conn;
mod deadline;
mod deferred;
#[cfg(test)]
mod fuzz;
pub mod h1;
mod local;
mod pool;
mod proxy;
mod route;
mod stream;
pub mod upstream;

pub use access::{Callers, Gate, Private, TokenCheck};
pub use deferred::{Accepted, AsyncRequest, AsyncSink, PublishRequest, Refusal, MAX_ASYNC_BODY};
pub use local::LocalAnswer;
pub use pool::{BusyTime, Hold, Lease, Load, PoolConfig, PoolError, RevisionPool};
pub use route::Route;
pub use skiff_kernel::shortcut::{self, Shortcut, ShortcutError};
pub use upstream::{Target, Throttle, Upstream};

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// The ingress router. Cheap to clone; clones share the routing table.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

/// Host labels to routes, and which labels each service owns (its name and its tags).
#[derive(Default)]
struct Routes {
    by_label: HashMap<String, Arc<Route>>,
    labels_of: HashMap<String, Vec<String>>,
}

/// The route table as [`Router::with_routes`] lends it.
pub struct RouteTable<'a>(&'a HashMap<String, Arc<Route>>);

impl RouteTable<'_> {
    /// The route of a host label (a service's name, or `TAG-NAME`).
    pub fn get(&self, label: &str) -> Option<&Route> {
        self.0.get(label).map(|r| &**r)
    }
}

impl Routes {
    fn remove_service(&mut self, service: &str) -> Vec<Arc<Route>> {
        let labels = self.labels_of.remove(service).unwrap_or_default();
        labels
            .iter()
            .filter_map(|l| self.by_label.remove(l))
            .collect()
    }
}

/// How long a router thread keeps a connection to an instance that carries nothing
/// (nginx's upstream `keepalive_timeout`): past it, the connection is one of the
/// daemon's descriptors, and for a thread-per-connection app a thread of the
/// instance's, held for an instance nobody calls (docs/density.md).
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often each router thread looks for such connections.
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Pools a sweep looks at, or connections it closes, before it lets the thread's
/// requests run again: a close is a system call, and a sweep at ten thousand instances
/// called in turn finds hundreds to close (all at once, a stall of milliseconds).
const SWEEP_POOLS_AT_ONCE: usize = 128;
const SWEEP_CLOSES_AT_ONCE: usize = 16;

/// Closes this thread's idle connections to instances past [`UPSTREAM_IDLE_TIMEOUT`],
/// every [`IDLE_SWEEP_EVERY`], until `stop` turns true. Runs on the router thread whose
/// connections it closes (a router thread keeps its own), a little at a time, yielding
/// to the thread's requests in between. How many a thread keeps at most is bounded where
/// they are kept (`upstream::idle_cap`).
async fn sweep_idle_upstreams(router: Router, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(IDLE_SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = every.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            return;
        }
        let (mut looked, mut closed) = (0, 0);
        for pool in router.pools() {
            let now = std::time::Instant::now();
            closed += pool.close_idle_connections(UPSTREAM_IDLE_TIMEOUT, now);
            looked += 1;
            if looked >= SWEEP_POOLS_AT_ONCE || closed >= SWEEP_CLOSES_AT_ONCE {
                (looked, closed) = (0, 0);
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The zone under which instances find each other (`NAME.svc.skiff.internal`).
pub const SERVICE_SUFFIX: &str = ".svc.skiff.internal";
/// Where a topic takes events (`NAME.topics.skiff.internal`).
pub const TOPIC_SUFFIX: &str = ".topics.skiff.internal";

struct Inner {
    /// `.` + the domain, lowercase.
    suffix: String,
    routes: RwLock<Routes>,
    /// Bumped on every routing change, so connections can cache a route.
    generation: AtomicU64,
    id_prefix: String,
    next_id: AtomicU64,
    /// Longest a client may pause while sending a request body, in milliseconds.
    body_idle_ms: AtomicU64,
    /// Client connections open, and the most served at once.
    connections: AtomicUsize,
    max_connections: AtomicUsize,
    /// Bytes of request heads held past their first read chunk, across connections, and
    /// the most allowed (slow, large heads are what would take the memory).
    head_bytes: AtomicUsize,
    head_budget: AtomicUsize,
    /// What decides who may call private services; none: nobody may.
    gate: OnceLock<Arc<dyn Gate>>,
    /// What keeps async invocations; none: they are refused (501).
    async_sink: OnceLock<Arc<dyn AsyncSink>>,
    /// The topics that take events at `NAME.topics.skiff.internal`.
    topics: RwLock<std::collections::HashSet<String>>,
}

/// What the read buffers of all client connections' partly read request heads may hold
/// together.
pub const DEFAULT_HEAD_BUDGET: usize = 64 << 20;

/// The answer to a connection past the limit.
pub(crate) const TOO_MANY_CONNECTIONS_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 45\r\nretry-after: 1\r\n\
connection: close\r\n\r\nskiff serves too many connections; try again\n";

/// A client connection counted against the limit while it lives.
struct ConnectionSlot(Router);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a client may pause while sending a request body before the request is
/// abandoned (nginx's `client_body_timeout`).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Router {
    /// Sets how long a client may pause while sending a request body: past it the
    /// request is abandoned and its connection closed, so that a stalled upload does not
    /// hold an instance's slot for the whole request timeout.
    pub fn set_body_idle_timeout(&self, timeout: Duration) {
        let ms = timeout.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.inner.body_idle_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets the most client connections served at once (default: half the descriptor
    /// limit); past it a new connection is answered 503 and closed.
    pub fn set_max_connections(&self, max: usize) {
        self.inner
            .max_connections
            .store(max.max(1), Ordering::Relaxed);
    }

    /// Sets what the buffers of partly read request heads may hold together (a head that
    /// comes whole in one read is not counted); past it, the head that would take more
    /// is answered 503.
    pub fn set_head_budget(&self, bytes: usize) {
        self.inner.head_budget.store(bytes, Ordering::Relaxed);
    }

    /// Takes `more` bytes of the head budget (or gives back, when negative); false, and
    /// nothing taken, when they do not fit.
    pub(crate) fn charge_head(&self, more: isize) -> bool {
        if more <= 0 {
            self.inner
                .head_bytes
                .fetch_sub(more.unsigned_abs(), Ordering::Relaxed);
            return true;
        }
        let budget = self.inner.head_budget.load(Ordering::Relaxed);
        self.inner
            .head_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + more as usize <= budget).then_some(used + more as usize)
            })
            .is_ok()
    }

    /// Sets what decides who may call private services (once; later calls are ignored).
    /// Until it is set, private services answer every request 403.
    pub fn set_gate(&self, gate: Arc<dyn Gate>) {
        let _ = self.inner.gate.set(gate);
    }

    pub(crate) fn gate(&self) -> Option<&dyn Gate> {
        self.inner.gate.get().map(|g| &**g)
    }

    /// Sets what keeps async invocations (`Prefer: respond-async`); once.
    pub fn set_async_sink(&self, sink: Arc<dyn AsyncSink>) {
        let _ = self.inner.async_sink.set(sink);
    }

    pub(crate) fn async_sink(&self) -> Option<&dyn AsyncSink> {
        self.inner.async_sink.get().map(|s| &**s)
    }

    /// Counts a new client connection, unless the limit is reached.
    fn admit(&self) -> Option<ConnectionSlot> {
        let max = self.inner.max_connections.load(Ordering::Relaxed);
        self.inner
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.clone()))
    }

    pub(crate) fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.body_idle_ms.load(Ordering::Relaxed))
    }

    /// A router for hosts under `domain` (e.g. `localhost`), with no routes yet.
    pub fn new(domain: &str) -> Router {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        Router {
            inner: Arc::new(Inner {
                suffix: format!(".{}", domain.trim_matches('.').to_ascii_lowercase()),
                routes: RwLock::new(Routes::default()),
                generation: AtomicU64::new(1),
                id_prefix: b.iter().map(|x| format!("{x:02x}")).collect(),
                next_id: AtomicU64::new(1),
                body_idle_ms: AtomicU64::new(DEFAULT_BODY_IDLE_TIMEOUT.as_millis() as u64),
                connections: AtomicUsize::new(0),
                // A connection costs a descriptor, and one more to an instance.
                max_connections: AtomicUsize::new(
                    (skiff_kernel::descriptors::limit().soft / 2).clamp(64, 1 << 20) as usize,
                ),
                head_bytes: AtomicUsize::new(0),
                head_budget: AtomicUsize::new(DEFAULT_HEAD_BUDGET),
                gate: OnceLock::new(),
                async_sink: OnceLock::new(),
                topics: RwLock::default(),
            }),
        }
    }

    fn routes_mut(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.inner.routes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends every request for `service` to `pool` from now on (no split, no tags).
    pub fn set_route(&self, service: &str, pool: Arc<RevisionPool>) {
        let route = Route::single(pool).named(service);
        self.set_routes(service, vec![(service.to_owned(), route)]);
    }

    /// Replaces, in one step, every host label `service` answers at (its name, and
    /// `TAG-NAME` for each tag) with `routes`; returns the routes replaced.
    pub fn set_routes(&self, service: &str, routes: Vec<(String, Route)>) -> Vec<Arc<Route>> {
        let mut table = self.routes_mut();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let old = table.remove_service(service);
        let mut labels = Vec::new();
        for (label, route) in routes {
            let label = label.to_ascii_lowercase();
            // Named here too, so that a label's owner is its route's service.
            let route = if route.service() == service {
                route
            } else {
                route.named(service)
            };
            table.by_label.insert(label.clone(), Arc::new(route));
            labels.push(label);
        }
        table.labels_of.insert(service.to_owned(), labels);
        old
    }

    /// Stops routing `service` (and its tags); returns its routes.
    pub fn remove_routes(&self, service: &str) -> Vec<Arc<Route>> {
        let mut table = self.routes_mut();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        table.remove_service(service)
    }

    /// Changes whenever a route is set or removed.
    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The route of a host label (a service's name, or `TAG-NAME`).
    pub fn route(&self, label: &str) -> Option<Arc<Route>> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_label
            .get(label)
            .cloned()
    }

    /// Runs `f` over the route table read once: for many lookups together (a listing of
    /// every service), which would otherwise take the table's lock once each.
    pub fn with_routes<R>(&self, f: impl FnOnce(&RouteTable<'_>) -> R) -> R {
        let table = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        f(&RouteTable(&table.by_label))
    }

    /// The service that answers at host label `label` (as its name or a tag), if any.
    pub fn label_owner(&self, label: &str) -> Option<String> {
        self.route(label).map(|route| route.service().to_owned())
    }

    /// Serves connections from `listener` until `shutdown` resolves, then stops accepting,
    /// lets requests in flight finish, and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        // Each connection task holds a sender: when all are gone, every connection is done.
        let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        let mut acceptor = accept::Acceptor::new("ingress", accept::OUT_OF_DESCRIPTORS_503);
        let sweeper = tokio::spawn(sweep_idle_upstreams(self.clone(), stop_rx.clone()));
        loop {
            let (stream, remote) = tokio::select! {
                accepted = acceptor.next(&listener) => accepted,
                () = &mut shutdown => break,
            };
            let Some(slot) = self.admit() else {
                accept::refuse(&stream, TOO_MANY_CONNECTIONS_503);
                continue;
            };
            let router = self.clone();
            let alive = alive_tx.clone();
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let _alive = alive;
                let _slot = slot;
                conn::serve_connection(router, stream, remote, stop).await;
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        drop(alive_tx);
        let _ = alive_rx.recv().await;
        let _ = sweeper.await;
    }

    /// Every pool routed to now (one per revision that takes traffic).
    fn pools(&self) -> Vec<Arc<RevisionPool>> {
        let table = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        table
            .by_label
            .values()
            .flat_map(|route| route.pools().cloned())
            .collect()
    }

    /// Serves on `threads` threads, each with its own event loop and its own listening
    /// socket on `addr` (SO_REUSEPORT: the kernel spreads connections), like nginx's
    /// workers: a request is handled start to end on one thread, with no cross-thread
    /// wake-ups. Returns the bound address and a handle that resolves once every thread
    /// has drained after `shutdown` turns true.
    pub fn serve_threads(
        self,
        addr: SocketAddr,
        threads: usize,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Receiver<()>)> {
        let threads = threads.clamp(1, upstream::ROUTER_THREADS_MAX - 1);
        upstream::set_serving_threads(threads);
        ensure_port_free(addr)?;
        let first = reuseport_listener(addr)?;
        let bound = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(reuseport_listener(bound)?);
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let mut handles = Vec::new();
        for (n, listener) in listeners.into_iter().enumerate() {
            let router = self.clone();
            let mut stop = shutdown.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("skiff-router-{n}"))
                    .spawn(move || {
                        upstream::set_router_thread(n);
                        runtime.block_on(async move {
                            match TcpListener::from_std(listener) {
                                Ok(l) => {
                                    router
                                        .serve(l, async move {
                                            let _ = stop.wait_for(|s| *s).await;
                                        })
                                        .await
                                }
                                Err(e) => tracing::error!("router thread {n}: {e}"),
                            }
                        });
                    })?,
            );
        }
        std::thread::spawn(move || {
            for h in handles {
                let _ = h.join();
            }
            let _ = done_tx.send(());
        });
        Ok((bound, done_rx))
    }

    /// Appends a new request id (unique per daemon run) to `out`.
    fn new_request_id(&self, out: &mut Vec<u8>) {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}-{n:x}", self.inner.id_prefix);
    }

    /// The topics that take events from now on.
    pub fn set_topics(&self, topics: impl IntoIterator<Item = String>) {
        *self.inner.topics.write().unwrap_or_else(|p| p.into_inner()) =
            topics.into_iter().collect();
    }

    /// Whether `name` is a topic's.
    pub fn has_topic(&self, name: &str) -> bool {
        let topics = self.inner.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.contains(name)
    }

    /// The topic a Host header names (`NAME.topics.skiff.internal[:PORT]`), lowercase.
    pub(crate) fn topic_of(host: &str) -> Option<String> {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let cut = name.len().checked_sub(TOPIC_SUFFIX.len())?;
        if !name.is_char_boundary(cut) || !name[cut..].eq_ignore_ascii_case(TOPIC_SUFFIX) {
            return None;
        }
        let label = &name[..cut];
        (!label.is_empty() && !label.contains('.')).then(|| label.to_ascii_lowercase())
    }

    /// The service a Host header names: `NAME.<domain>`, and as instances call each
    /// other, `NAME.svc.skiff.internal` or a bare `NAME` (their resolver's search list).
    fn service_of<'h>(&self, host: &'h str) -> Option<&'h str> {
        let name = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if !name.is_empty() && !name.contains('.') {
            // The domain itself (`localhost`) names no service.
            return (!name.eq_ignore_ascii_case(&self.inner.suffix[1..])).then_some(name);
        }
        [self.inner.suffix.as_str(), SERVICE_SUFFIX]
            .into_iter()
            .find_map(|suffix| {
                if name.len() <= suffix.len() || !name.is_char_boundary(name.len() - suffix.len()) {
                    return None;
                }
                let (service, tail) = name.split_at(name.len() - suffix.len());
                (tail.eq_ignore_ascii_case(suffix) && !service.contains('.')).then_some(service)
            })
    }
}

/// Fails when another socket listens on `addr`. The router's threads share their port
/// through SO_REUSEPORT, which the kernel grants to any process of the same user: without
/// this check a second daemon would join the group and take half the connections. A bind
/// without SO_REUSEPORT conflicts with any listener there (and tolerates TIME_WAIT).
fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    if addr.port() == 0 {
        return Ok(());
    }
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let probe = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&probe, true)?;
    rustix::net::bind(&probe, &addr).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{addr} is in use by another process ({e})"),
        )
    })
}

/// A non-blocking listening socket on `addr` with SO_REUSEADDR and SO_REUSEPORT.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_services() {
        let r = Router::new("localhost");
        assert_eq!(r.service_of("hello.localhost:8080"), Some("hello"));
        assert_eq!(r.service_of("hello.localhost"), Some("hello"));
        assert_eq!(r.service_of("Hello.LOCALHOST"), Some("Hello"));
        assert_eq!(r.service_of("localhost:8080"), None);
        assert_eq!(r.service_of(".localhost"), None);
        assert_eq!(r.service_of("a.b.localhost"), None);
        assert_eq!(r.service_of("hello.example.com"), None);
        assert_eq!(r.service_of("hellolocalhost"), Some("hellolocalhost"));
        assert_eq!(r.service_of("other"), Some("other"));
        assert_eq!(r.service_of("other.svc.skiff.internal"), Some("other"));
        assert_eq!(r.service_of("other.svc.skiff.internal:80"), Some("other"));
        assert_eq!(r.service_of("a.other.svc.skiff.internal"), None);
        assert_eq!(r.service_of(".svc.skiff.internal"), None);
        assert_eq!(
            Router::topic_of("Orders.topics.skiff.internal:80").as_deref(),
            Some("orders")
        );
        assert_eq!(Router::topic_of("a.b.topics.skiff.internal"), None);
        assert_eq!(Router::topic_of(".topics.skiff.internal"), None);
        assert_eq!(Router::topic_of("orders.svc.skiff.internal"), None);
        let r = Router::new("run.example.com.");
        assert_eq!(r.service_of("api.run.example.com"), Some("api"));
    }

    fn pool() -> Arc<RevisionPool> {
        RevisionPool::new(pool::PoolConfig {
            revision: "r-00001".into(),
            concurrency: 1,
            queue_limit: 1,
            timeout: Duration::from_secs(1),
        })
    }

    /// A label belongs to the service whose routes hold it (its name or a tag), named
    /// or not by the caller, until the service's routes are replaced or removed.
    #[test]
    fn a_label_is_owned_by_the_service_that_routes_it() {
        let r = Router::new("localhost");
        r.set_routes(
            "api",
            vec![
                ("api".into(), Route::single(pool())),
                ("Beta-api".into(), Route::single(pool()).named("api")),
            ],
        );
        r.set_route("web", pool());
        assert_eq!(r.label_owner("api").as_deref(), Some("api"));
        assert_eq!(r.label_owner("beta-api").as_deref(), Some("api"));
        assert_eq!(r.label_owner("web").as_deref(), Some("web"));
        assert_eq!(r.label_owner("nobody"), None);
        r.set_routes("api", vec![("api".into(), Route::single(pool()))]);
        assert_eq!(r.label_owner("beta-api"), None, "the tag was dropped");
        r.remove_routes("web");
        assert_eq!(r.label_owner("web"), None);
        assert_eq!(r.label_owner("api").as_deref(), Some("api"));
    }
}
