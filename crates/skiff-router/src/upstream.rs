//! Reaching an instance: a TCP connection to its port, either at its own address (veth) or
//! on its loopback, by creating the socket inside the instance's network namespace. The
//! latter needs no veth, no address and no firewall rule: the instance has no network at
//! all, yet the router can talk to it. Each instance keeps its idle HTTP/1.1 connections
//! for reuse (keep-alive to instances), per router thread, so that a connection stays
//! with the event loop it is registered with.
//!
//! This module connects; it must not decide which instance serves a request.

use crate::h1::Head;
use crate::stream::UpstreamStream;
use rustix::fd::{AsFd, OwnedFd};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One open HTTP/1.1 connection to an instance, with its read buffer (kept with the
/// connection, so a reused one allocates nothing).
pub struct Connection {
    /// The socket.
    pub stream: UpstreamStream,
    /// Bytes read from the instance and not yet relayed.
    pub buf: Vec<u8>,
    /// Whether it served a request before (so the instance may have closed it since).
    pub reused: bool,
    /// Exchanges it finished.
    exchanges: u32,
    /// When it was last put back idle.
    idle_since: Instant,
}

/// How many bytes a request sends to the instance (head and body), so that it gets a
/// connection that can carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestSize {
    /// Exactly this many.
    Known(u64),
    /// Not known before it ends: a chunked body, or an upgrade (a byte pipe after it).
    Unbounded,
}

impl RequestSize {
    /// Whether a fresh connection in the upstream shortcut could carry it.
    fn fits_shortcut(self) -> bool {
        matches!(self, RequestSize::Known(n) if n <= skiff_kernel::shortcut::REQUEST_BUDGET)
    }
}

/// Which way a new connection's bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// Through the upstream shortcut, if one is installed.
    Shortcut,
    /// By TCP only.
    Tcp,
}

impl Lane {
    /// The shortcut for a request that fits a fresh connection's budget, TCP otherwise.
    fn for_request(size: RequestSize) -> Lane {
        if size.fits_shortcut() {
            Lane::Shortcut
        } else {
            Lane::Tcp
        }
    }
}

impl Connection {
    /// A connection; `marked`: its socket carries the shortcut's mark.
    fn new(stream: TcpStream, marked: bool) -> Connection {
        let sendable = marked.then_some(skiff_kernel::shortcut::REQUEST_BUDGET);
        Connection {
            stream: UpstreamStream::new(stream, sendable),
            buf: Vec::new(),
            reused: false,
            exchanges: 0,
            idle_since: Instant::now(),
        }
    }

    /// Whether it can send a request of `size` without passing its shortcut budget.
    fn carries(&self, size: RequestSize) -> bool {
        match (self.stream.sendable(), size) {
            (None, _) => true,
            (Some(left), RequestSize::Known(n)) => n <= left,
            (Some(_), RequestSize::Unbounded) => false,
        }
    }

    /// Whether an idle connection can take a request: the instance has neither closed
    /// it nor sent anything unasked.
    fn is_usable(&self) -> bool {
        self.stream.has_nothing_to_read()
    }
}

/// Idle connections kept per instance and router thread; more are closed when returned.
/// Enough for every request an instance takes at once (Knative caps its concurrency at
/// 1000): with fewer, a load past the cap closes connections as requests end and opens
/// new ones for the next (bench/proxy-hop at 256 connections with 64: ~900 new
/// connections a second, each a thread for a thread-per-connection app, and a tail of
/// 100 ms and more).
const MAX_IDLE: usize = 1000;

/// Exchanges after which a connection in the upstream shortcut is closed rather than
/// kept: each connection's shortcut budget is for its lifetime, and a new connection has
/// a fresh one (nginx closes upstream connections after 1000 too).
const MAX_EXCHANGES: u32 = 1000;

/// Router threads that keep idle connections of their own (see [`set_router_thread`]).
pub const ROUTER_THREADS_MAX: usize = 16;

thread_local! {
    /// Which router thread this is; `ROUTER_THREADS_MAX` on any other thread.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(ROUTER_THREADS_MAX) };
}

/// Marks the calling thread as router thread `n`: connections it opens are registered
/// with its own event loop, so it keeps its idle ones apart from other threads'.
pub fn set_router_thread(n: usize) {
    SHARD.with(|s| s.set(n.min(ROUTER_THREADS_MAX - 1)));
}

fn shard() -> usize {
    SHARD.with(|s| s.get())
}

/// Where an instance listens.
#[derive(Clone, Debug)]
pub enum Target {
    /// An address reachable from the host.
    Address(SocketAddr),
    /// A port on the loopback of a network namespace.
    Netns {
        /// The namespace: an open `/proc/PID/ns/net`, or a pidfd of a process in it
        /// (`setns` takes either).
        netns: Arc<OwnedFd>,
        /// The port.
        port: u16,
    },
}

/// One router thread's idle connections to an instance, on a cache line of its own so
/// that threads taking and returning connections do not contend for it.
#[derive(Default)]
#[repr(align(128))]
struct IdleShard(Mutex<Vec<Connection>>);

/// Idle connections each router thread keeps, over all instances (index: its shard).
/// Each is one of the daemon's descriptors: [`idle_held`] lets a thread close its oldest
/// when it keeps more than its share.
static IDLE_HELD: [AtomicUsize; ROUTER_THREADS_MAX + 1] =
    [const { AtomicUsize::new(0) }; ROUTER_THREADS_MAX + 1];

/// Idle connections the calling router thread keeps now, over all instances.
pub fn idle_held() -> usize {
    IDLE_HELD[shard()].load(Ordering::Relaxed)
}

/// [`idle_cap`] once worked out (0: not yet): it is read on every exchange, and the
/// descriptor limit it follows is a system call away.
static IDLE_CAP: AtomicUsize = AtomicUsize::new(0);

/// Records how many router threads serve, to split the descriptor budget between (see
/// [`idle_cap`]).
pub(crate) fn set_serving_threads(n: usize) {
    IDLE_CAP.store(work_out_idle_cap(n), Ordering::Relaxed);
}

/// Idle connections one router thread keeps at most, over all instances: a quarter of
/// the descriptor limit, split between the router threads. Past it, a connection that
/// finished its exchange is closed rather than kept, one at a time as exchanges end:
/// calling ten thousand idle instances in turn must not leave ten thousand descriptors
/// held for a minute, nor close them in bursts.
fn idle_cap() -> usize {
    match IDLE_CAP.load(Ordering::Relaxed) {
        0 => {
            let cap = work_out_idle_cap(1);
            IDLE_CAP.store(cap, Ordering::Relaxed);
            cap
        }
        cap => cap,
    }
}

fn work_out_idle_cap(router_threads: usize) -> usize {
    let soft = skiff_kernel::descriptors::limit().soft;
    let threads = router_threads.max(1) as u64;
    usize::try_from(soft / 4 / threads)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Takes an instance's CPU away while it has no work and gives it back when work arrives
/// (a cgroup freezer, for "CPU only while serving"). The pool calls it under its lock,
/// on each change between no work and some, so calls alternate and never race.
pub trait Throttle: Send + Sync {
    /// The instance has work again: let it run. Called before the work reaches it.
    fn resume(&self);
    /// The instance has no work left: it may be paused.
    fn pause(&self);
}

/// One ready instance as the router sees it.
pub struct Upstream {
    /// Instance id.
    pub id: String,
    /// Where it listens.
    pub target: Target,
    /// Idle connections per router thread; the last slot serves any other thread.
    idle: Vec<IdleShard>,
    /// Paused while the instance has no work, when its revision asks for that.
    throttle: Option<Box<dyn Throttle>>,
}

impl Upstream {
    /// An instance listening at `target`.
    pub fn new(id: impl Into<String>, target: Target) -> Upstream {
        Upstream {
            id: id.into(),
            target,
            idle: (0..=ROUTER_THREADS_MAX)
                .map(|_| IdleShard::default())
                .collect(),
            throttle: None,
        }
    }

    /// The same instance, paused by `throttle` while it has no work.
    pub fn with_throttle(mut self, throttle: Box<dyn Throttle>) -> Upstream {
        self.throttle = Some(throttle);
        self
    }

    pub(crate) fn throttle(&self) -> Option<&dyn Throttle> {
        self.throttle.as_deref()
    }

    /// The most recently idled of this thread's connections that `lane` allows (a
    /// shortcut request may take either kind, other requests only TCP ones).
    fn pop_idle(&self, lane: Lane) -> Option<Connection> {
        let mut idle = self.idle[shard()]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let conn = match lane {
            Lane::Shortcut => idle.pop(),
            Lane::Tcp => {
                let at = idle.iter().rposition(|c| c.stream.sendable().is_none())?;
                Some(idle.swap_remove(at))
            }
        };
        if conn.is_some() {
            IDLE_HELD[shard()].fetch_sub(1, Ordering::Relaxed);
        }
        conn
    }

    /// An idle connection (this thread's own) that is still usable and can carry a
    /// request of `size`, or a new one. Idle connections in the shortcut whose budget is
    /// too small for it are closed: they are near the end of their use.
    pub async fn connection(&self, size: RequestSize) -> io::Result<Connection> {
        let lane = Lane::for_request(size);
        while let Some(conn) = self.pop_idle(lane) {
            if conn.is_usable() && conn.carries(size) {
                return Ok(conn);
            }
        }
        self.open(size).await
    }

    /// A new connection that can carry a request of `size`.
    pub async fn open(&self, size: RequestSize) -> io::Result<Connection> {
        open(&self.target, Lane::for_request(size)).await
    }

    /// Keeps a connection that finished an exchange cleanly, for this thread's next one,
    /// unless the thread keeps its share of idle connections already (see [`idle_cap`]).
    pub fn put_idle(&self, conn: Connection) {
        self.put_idle_within(conn, idle_cap());
    }

    /// [`Self::put_idle`] with the thread's share given: `cap` idle connections.
    fn put_idle_within(&self, mut conn: Connection, cap: usize) {
        if idle_held() >= cap {
            return;
        }
        conn.reused = true;
        conn.exchanges += 1;
        if conn.exchanges >= MAX_EXCHANGES && conn.stream.sendable().is_some() {
            return;
        }
        conn.idle_since = Instant::now();
        crate::buffers::give(std::mem::take(&mut conn.buf));
        let mut idle = self.idle[shard()]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
            IDLE_HELD[shard()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes this thread's connections that have been idle for `idle_for` or longer at
    /// `now`; how many. Each is a descriptor of the daemon's, and for a
    /// thread-per-connection app a thread of the instance's, held by an instance nobody
    /// calls.
    pub fn close_idle(&self, idle_for: Duration, now: Instant) -> usize {
        // Threads that are not router threads (in-memory deliveries) share the last
        // shard and sweep nothing themselves: every router thread's sweep covers it too.
        let shared = ROUTER_THREADS_MAX;
        let own = shard();
        let mut closed = self.close_idle_in(own, idle_for, now);
        if own != shared {
            closed += self.close_idle_in(shared, idle_for, now);
        }
        closed
    }

    /// [`Self::close_idle`] for one shard's connections.
    fn close_idle_in(&self, shard: usize, idle_for: Duration, now: Instant) -> usize {
        let expired: Vec<Connection> = {
            let mut idle = self.idle[shard].0.lock().unwrap_or_else(|p| p.into_inner());
            // Pushed and popped at the end: the oldest are first.
            let cut = idle
                .iter()
                .position(|c| now.saturating_duration_since(c.idle_since) < idle_for)
                .unwrap_or(idle.len());
            idle.drain(..cut).collect()
        };
        IDLE_HELD[shard].fetch_sub(expired.len(), Ordering::Relaxed);
        expired.len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for (held, shard) in IDLE_HELD.iter().zip(&self.idle) {
            let idle = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            held.fetch_sub(idle.len(), Ordering::Relaxed);
        }
    }
}

/// Opens a connection to `target` whose bytes go by `lane`.
async fn open(target: &Target, lane: Lane) -> io::Result<Connection> {
    let (stream, marked) = connect_by(target, lane).await?;
    Ok(Connection::new(stream, marked))
}

/// A TCP connection to `target`, outside the upstream shortcut (for health checks).
pub async fn connect(target: &Target) -> io::Result<TcpStream> {
    Ok(connect_by(target, Lane::Tcp).await?.0)
}

/// How long a connection attempt may wait for its handshake before another is made in
/// its place; doubled on each retry.
const FIRST_HANDSHAKE_WAIT: Duration = Duration::from_millis(20);

/// Attempts cut short by [`FIRST_HANDSHAKE_WAIT`] (and its doublings) before one is left
/// to the kernel's own retransmissions.
const QUICK_ATTEMPTS: u32 = 5;

/// A TCP connection to `target`, and whether it is marked for the shortcut.
///
/// An instance's listening socket drops a SYN while its accept queue is full (an app's
/// backlog is often 128 or less, and a burst of requests after a scale from zero opens
/// that many connections at once); the kernel sends the SYN again only after a second.
/// A handshake to an instance takes microseconds when the SYN is taken, so an attempt
/// still waiting after [`FIRST_HANDSHAKE_WAIT`] was dropped: it is closed and a new one
/// made, at doubling intervals, as the app drains its queue.
async fn connect_by(target: &Target, lane: Lane) -> io::Result<(TcpStream, bool)> {
    let mut wait = FIRST_HANDSHAKE_WAIT;
    for _ in 0..QUICK_ATTEMPTS {
        if let Ok(connected) = tokio::time::timeout(wait, attempt(target, lane)).await {
            return connected;
        }
        wait *= 2;
    }
    attempt(target, lane).await
}

/// One connection attempt, waiting for its outcome.
async fn attempt(target: &Target, lane: Lane) -> io::Result<(TcpStream, bool)> {
    let (stream, marked) = match target {
        Target::Address(addr) => (TcpStream::connect(addr).await?, false),
        Target::Netns { netns, port } => {
            let (socket, marked) = socket_in(netns, lane)?;
            let socket = TcpSocket::from_std_stream(socket);
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port);
            (socket.connect(addr.into()).await?, marked)
        }
    };
    stream.set_nodelay(true)?;
    Ok((stream, marked))
}

/// A blocking TCP connection to `target` outside the upstream shortcut, for readiness
/// checks off the async runtime, where sleeps shorter than the runtime's 1 ms timer are
/// wanted. The caller closes it at once: a connection that proves the port and then
/// idles is a side effect some servers block on.
pub fn connect_blocking(target: &Target) -> io::Result<std::net::TcpStream> {
    match target {
        Target::Address(addr) => std::net::TcpStream::connect(addr),
        Target::Netns { netns, port } => {
            let (stream, _) = socket_in(netns, Lane::Tcp)?;
            let addr = rustix::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port);
            match rustix::net::connect(&stream, &addr) {
                Ok(()) => {}
                Err(rustix::io::Errno::INPROGRESS) => wait_connected(&stream)?,
                Err(e) => return Err(e.into()),
            }
            Ok(stream)
        }
    }
}

/// Waits for a non-blocking connect to finish and reports its outcome.
fn wait_connected(stream: &std::net::TcpStream) -> io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(stream, PollFlags::OUT)];
    poll(&mut fds, None)?;
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How long a startup probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How probes introduce themselves: Knative-style images answer a request whose
/// User-Agent starts with `kube-probe/`, or that carries `K-Kubelet-Probe`, as a probe
/// (without logging it, or without waking what a request would).
pub const PROBE_USER_AGENT: &str = "kube-probe/skiff";

/// `GET path` on a fresh connection, as Kubernetes' and Knative's probes send it;
/// returns the status code.
pub async fn http_probe(target: &Target, path: &str) -> io::Result<u16> {
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("probe path {path:?} is not an absolute path of visible ASCII"),
        ));
    }
    let mut stream = UpstreamStream::new(connect(target).await?, None);
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nuser-agent: {PROBE_USER_AGENT}\r\n\
         k-kubelet-probe: queue\r\nconnection: close\r\n\r\n"
    );
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut head = Head::default();
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the app closed the connection before answering",
                ));
            }
            match head.parse_response(&buf) {
                Ok(true) if head.status >= 200 => return Ok(head.status),
                Ok(true) => {
                    let informational = head.len;
                    buf.drain(..informational);
                }
                Ok(false) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 5s"))?
}

/// This process's own network namespace, to return to after making a socket elsewhere.
fn host_netns() -> io::Result<&'static OwnedFd> {
    static HOST: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();
    HOST.get_or_init(|| {
        rustix::fs::open(
            "/proc/self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| e.raw_os_error())
    })
    .as_ref()
    .map_err(|&e| io::Error::from_raw_os_error(e))
}

/// A non-blocking TCP socket created inside `netns`, and whether it is marked for the
/// upstream shortcut (when `lane` asks for it and one is installed). Sockets stay in the
/// namespace they were made in, so the calling thread switches there for the `socket`
/// call only.
fn socket_in(netns: &OwnedFd, lane: Lane) -> io::Result<(std::net::TcpStream, bool)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    let home = host_netns()?;
    move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
    let socket = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    );
    if let Err(e) = move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network)) {
        // This thread would go on serving inside an instance's namespace: never.
        eprintln!("skiff: cannot return to the host network namespace: {e}");
        std::process::abort();
    }
    let socket = socket?;
    let mark = skiff_kernel::shortcut::upstream_mark().filter(|_| lane == Lane::Shortcut);
    if let Some(mark) = mark {
        skiff_kernel::sockopt::set_mark(&socket, mark)?;
    }
    Ok((std::net::TcpStream::from(socket), mark.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An app whose accept queue is full (backlog 0, one connection waiting) and that
    /// starts accepting 100 ms later: the kernel drops the first SYN and would send it
    /// again only after a second.
    #[tokio::test]
    async fn a_dropped_syn_is_tried_again_before_the_kernel_would() {
        use rustix::net::{AddressFamily, SocketType};
        let listener = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        rustix::net::bind(&listener, &any).unwrap();
        rustix::net::listen(&listener, 0).unwrap();
        let listener = std::net::TcpListener::from(listener);
        let addr = listener.local_addr().unwrap();
        let _waiting = std::net::TcpStream::connect(addr).unwrap();
        let app = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut accepted = Vec::new();
            for _ in 0..2 {
                accepted.push(listener.accept().unwrap().0);
            }
            accepted
        });
        let started = std::time::Instant::now();
        let conn = connect(&Target::Address(addr)).await.unwrap();
        let took = started.elapsed();
        let accepted = app.join().unwrap();
        assert_eq!(
            accepted[1].peer_addr().unwrap(),
            conn.local_addr().unwrap(),
            "the app accepted this connection"
        );
        assert!(
            took < Duration::from_millis(900),
            "connected after {took:?}"
        );
    }

    /// An app on the loopback that accepts `n` connections: its address, and the
    /// connections once all `n` came.
    fn app_accepting(
        n: usize,
    ) -> (
        SocketAddr,
        std::thread::JoinHandle<Vec<std::net::TcpStream>>,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = std::thread::spawn(move || {
            (0..n)
                .map(|_| listener.accept().unwrap().0)
                .collect::<Vec<_>>()
        });
        (addr, app)
    }

    /// Whether the router closed its end of `conn`, as the app sees it within `wait`.
    fn ended_by_router(conn: &std::net::TcpStream, wait: Duration) -> bool {
        conn.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        matches!(std::io::Read::read(&mut &*conn, &mut byte), Ok(0))
    }

    /// What a router thread keeps idle is counted over all instances: up as connections
    /// are put back, down as they are taken, closed, or dropped with their instance.
    #[tokio::test]
    async fn idle_connections_are_counted_per_thread_over_all_instances() {
        // A thread number no other test uses: the count is per router thread.
        set_router_thread(ROUTER_THREADS_MAX - 2);
        let (addr, app) = app_accepting(3);
        let a = Upstream::new("a", Target::Address(addr));
        let b = Upstream::new("b", Target::Address(addr));
        let size = RequestSize::Known(0);
        let (a1, a2) = (
            a.connection(size).await.unwrap(),
            a.connection(size).await.unwrap(),
        );
        let b1 = b.connection(size).await.unwrap();
        let _accepted = app.join().unwrap();
        assert_eq!(idle_held(), 0);
        a.put_idle(a1);
        a.put_idle(a2);
        b.put_idle(b1);
        assert_eq!(idle_held(), 3);
        let again = a.connection(size).await.unwrap();
        assert_eq!(idle_held(), 2, "taken for a request");
        a.put_idle(again);
        assert_eq!(a.close_idle(Duration::ZERO, Instant::now()), 2);
        assert_eq!(idle_held(), 1, "closed");
        drop(b);
        assert_eq!(idle_held(), 0, "dropped with its instance");
    }

    /// Connections kept by threads that are not router threads (in-memory deliveries)
    /// are closed by a router thread's sweep: they have none of their own.
    #[tokio::test]
    async fn a_router_thread_sweeps_the_connections_other_threads_keep() {
        let (addr, app) = app_accepting(1);
        let up = Arc::new(Upstream::new("delivered", Target::Address(addr)));
        // This test's thread is no router thread: it keeps its connection in the shared
        // shard.
        let conn = up.connection(RequestSize::Known(0)).await.unwrap();
        let accepted = app.join().unwrap().remove(0);
        up.put_idle(conn);
        let sweeper = Arc::clone(&up);
        let closed = std::thread::spawn(move || {
            set_router_thread(ROUTER_THREADS_MAX - 4);
            sweeper.close_idle(Duration::ZERO, Instant::now())
        })
        .join()
        .unwrap();
        assert_eq!(closed, 1, "the router thread's sweep closed it");
        assert!(
            ended_by_router(&accepted, Duration::from_secs(5)),
            "the app sees it closed"
        );
    }

    /// Past its share of idle connections, a thread closes a connection as its exchange
    /// ends (the app sees it end) instead of keeping it.
    #[tokio::test]
    async fn past_its_share_a_thread_closes_connections_instead_of_keeping_them() {
        // A thread number no other test uses: the count is per router thread.
        set_router_thread(ROUTER_THREADS_MAX - 3);
        let (addr, app) = app_accepting(2);
        let up = Upstream::new("capped", Target::Address(addr));
        let size = RequestSize::Known(0);
        let kept = up.connection(size).await.unwrap();
        let over = up.connection(size).await.unwrap();
        let over_port = over.stream.get_ref().local_addr().unwrap().port();
        let accepted = app.join().unwrap();
        up.put_idle_within(kept, 1);
        up.put_idle_within(over, 1);
        assert_eq!(idle_held(), 1, "one kept, at the cap");
        let closed = accepted
            .into_iter()
            .find(|s| s.peer_addr().unwrap().port() == over_port)
            .unwrap();
        assert!(
            ended_by_router(&closed, Duration::from_secs(5)),
            "the app sees it closed"
        );
        drop(up);
        assert_eq!(idle_held(), 0);
    }

    /// Connections idle past the timeout are closed (the app sees them end); younger
    /// ones stay.
    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed_and_younger_ones_kept() {
        let (addr, app) = app_accepting(2);
        let up = Upstream::new("i1", Target::Address(addr));
        let older = up.connection(RequestSize::Known(0)).await.unwrap();
        let younger = up.connection(RequestSize::Known(0)).await.unwrap();
        let younger_port = younger.stream.get_ref().local_addr().unwrap().port();
        up.put_idle(older);
        up.put_idle(younger);
        let now = Instant::now();
        {
            let mut idle = up.idle[shard()].0.lock().unwrap();
            idle[0].idle_since = now - Duration::from_secs(120);
            idle[1].idle_since = now - Duration::from_secs(10);
        }
        assert_eq!(up.close_idle(Duration::from_secs(60), now), 1);
        let accepted = app.join().unwrap();
        let ended: Vec<bool> = accepted
            .iter()
            .map(|conn| ended_by_router(conn, Duration::from_millis(200)))
            .collect();
        let kept: Vec<u16> = accepted
            .iter()
            .zip(&ended)
            .filter(|(_, ended)| !**ended)
            .map(|(c, _)| c.peer_addr().unwrap().port())
            .collect();
        assert_eq!(kept, [younger_port], "ended: {ended:?}");
        let left = up.idle[shard()].0.lock().unwrap().len();
        assert_eq!(left, 1);
        assert_eq!(up.close_idle(Duration::from_secs(60), now), 0);
    }

    #[tokio::test]
    async fn probes_say_they_are_probes_as_knative_images_expect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the probe closed early");
                head.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let status = http_probe(&Target::Address(addr), "/healthz")
            .await
            .unwrap();
        assert_eq!(status, 204);
        let head = app.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /healthz http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nuser-agent: kube-probe/"), "{head}");
        assert!(head.contains("\r\nk-kubelet-probe: queue\r\n"), "{head}");
    }
}
