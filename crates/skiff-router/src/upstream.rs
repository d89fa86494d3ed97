//! Reaching an instance: a TCP connection to its port, either at its own address (veth) or
//! on its loopback, by creating the socket inside the instance's network namespace. The
//! latter needs no veth, no address and no firewall rule: the instance has no network at
//! all, yet the router can talk to it. Each instance keeps its idle HTTP/1.1 connections
//! for reuse (keep-alive to instances).
//!
//! This module connects; it must not decide which instance serves a request.

#![allow(unsafe_code)]

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustix::fd::{AsFd, OwnedFd};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::net::{TcpSocket, TcpStream};

/// The connection's I/O future (hyper's upgradeable client connection, whose type is
/// not nameable).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One open HTTP/1.1 connection to an instance: the request sender and the connection's
/// I/O driver. The driver is polled by whichever task is using the connection (the one
/// proxying a request, then its response body), not by a task of its own, so a proxied
/// request crosses no task boundary and wakes no other thread.
pub struct Connection {
    sender: SendRequest<Incoming>,
    driver: Option<Driver>,
}

impl Connection {
    fn new(sender: SendRequest<Incoming>, driver: Driver) -> Connection {
        Connection {
            sender,
            driver: Some(driver),
        }
    }

    /// Drives the connection's I/O; false once it has closed.
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        if driver.as_mut().poll(cx).is_ready() {
            self.driver = None;
            return false;
        }
        true
    }

    /// Whether the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.driver.is_none() || self.sender.is_closed()
    }

    /// Waits until the connection can take a request (an error if it closed).
    pub async fn ready(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let open = self.poll_io(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(io::Error::other)),
                Poll::Pending if !open => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sends a request and waits for the response head, driving the connection meanwhile.
    /// When the request could not be sent at all, the error gives it back.
    pub async fn send(
        &mut self,
        req: hyper::Request<Incoming>,
    ) -> Result<
        hyper::Response<Incoming>,
        hyper::client::conn::TrySendError<hyper::Request<Incoming>>,
    > {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        let driver = &mut self.driver;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if let Some(d) = driver.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    *driver = None;
                    // The dispatcher is gone: the response future fails on its next poll.
                    cx.waker().wake_by_ref();
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Hands the I/O driver to a task of its own (an upgraded connection is about to
    /// leave HTTP, and the upgrade completes only while the driver runs).
    pub fn detach(mut self) {
        if let Some(driver) = self.driver.take() {
            tokio::spawn(async move {
                let _ = driver.await;
            });
        }
    }
}

/// Idle connections kept per instance and router thread; more are closed when returned.
const MAX_IDLE: usize = 64;

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
    /// A port on the loopback of a network namespace (an open `/proc/PID/ns/net`).
    Netns {
        /// The namespace.
        netns: Arc<OwnedFd>,
        /// The port.
        port: u16,
    },
}

/// One ready instance as the router sees it.
pub struct Upstream {
    /// Instance id.
    pub id: String,
    /// Where it listens.
    pub target: Target,
    /// Idle connections per router thread; the last slot holds those opened elsewhere.
    idle: Vec<Mutex<Vec<Connection>>>,
}

impl Upstream {
    /// An instance listening at `target`.
    pub fn new(id: impl Into<String>, target: Target) -> Upstream {
        Upstream {
            id: id.into(),
            target,
            idle: (0..=ROUTER_THREADS_MAX)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
        }
    }

    fn pop_idle(&self, shard: usize) -> Option<Connection> {
        self.idle[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    /// An idle connection that is still open (this thread's own first), or a new one.
    pub async fn connection(&self) -> io::Result<Connection> {
        let own = shard();
        for shard in [own, ROUTER_THREADS_MAX] {
            while let Some(mut conn) = self.pop_idle(shard) {
                if !conn.is_closed() && conn.ready().await.is_ok() {
                    return Ok(conn);
                }
            }
        }
        open(&self.target).await
    }

    /// Keeps a connection for the next request on this thread.
    pub fn put_idle(&self, conn: Connection) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle[shard()].lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Opens an HTTP/1.1 connection (upgrades allowed) to `target`.
pub async fn open(target: &Target) -> io::Result<Connection> {
    let stream = connect(target).await?;
    handshake_tokio(stream).await
}

async fn handshake_tokio(stream: TcpStream) -> io::Result<Connection> {
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    Ok(Connection::new(sender, Box::pin(conn.with_upgrades())))
}

/// A TCP connection to `target`.
pub async fn connect(target: &Target) -> io::Result<TcpStream> {
    let stream = match target {
        Target::Address(addr) => TcpStream::connect(addr).await?,
        Target::Netns { netns, port } => {
            let socket = TcpSocket::from_std_stream(socket_in(netns)?);
            socket
                .connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port).into())
                .await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A blocking TCP connection to `target` (for readiness checks off the async runtime,
/// where sleeps shorter than the runtime's 1 ms timer are wanted).
pub fn connect_blocking(target: &Target) -> io::Result<std::net::TcpStream> {
    let stream = match target {
        Target::Address(addr) => std::net::TcpStream::connect(addr)?,
        Target::Netns { netns, port } => {
            let stream = socket_in(netns)?;
            let addr = rustix::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port);
            match rustix::net::connect(&stream, &addr) {
                Ok(()) => {}
                Err(rustix::io::Errno::INPROGRESS) => wait_connected(&stream)?,
                Err(e) => return Err(e.into()),
            }
            stream
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
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

/// Wraps a connected stream from [`connect_blocking`] as an HTTP/1.1 connection.
pub async fn handshake(stream: std::net::TcpStream) -> io::Result<Connection> {
    stream.set_nonblocking(true)?;
    handshake_tokio(TcpStream::from_std(stream)?).await
}

/// `GET path` on a fresh connection; returns the status code.
pub async fn http_probe(target: &Target, path: &str) -> io::Result<u16> {
    let stream = connect(target).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .header("user-agent", "skiff-probe")
        .body(Empty::new())
        .map_err(io::Error::other)?;
    let status = sender
        .send_request(req)
        .await
        .map_err(io::Error::other)?
        .status()
        .as_u16();
    driver.abort();
    Ok(status)
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

/// A non-blocking TCP socket created inside `netns`. Sockets stay in the namespace they
/// were made in, so the calling thread switches there for the `socket` call only.
fn socket_in(netns: &OwnedFd) -> io::Result<std::net::TcpStream> {
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
    Ok(std::net::TcpStream::from(socket?))
}
