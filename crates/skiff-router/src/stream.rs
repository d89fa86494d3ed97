//! The router's connections as the proxy reads and writes them: tokio `TcpStream`s whose
//! writes are one system call each (rustix's), not the C library's `send`, which makes
//! each call a thread-cancellation point (switching cancellation on and off around it
//! was 0.6 % of the router's time at 32 connections, bench/proxy-hop). A connection to an instance also reads (the same way) until the
//! socket says `EAGAIN` before it waits for the next readiness event, and keeps its
//! writes within what the upstream shortcut may carry on it.
//!
//! Tokio takes a read shorter than the buffer to mean the socket is drained and waits for
//! the next event. A socket in the upstream shortcut's map breaks that rule: one read
//! returns what was redirected, the next what came by TCP (once the sender's budget was
//! spent), and the event for the latter may have come before the first read. Waiting
//! would then hang the exchange. Past these two, this module must not behave differently
//! from tokio's `TcpStream`.

use rustix::net::{RecvFlags, SendFlags};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// An instance connection's socket.
#[derive(Debug)]
pub struct UpstreamStream {
    stream: TcpStream,
    /// Bytes it may still send, when it is in the upstream shortcut (`None`: it is not,
    /// and its sends go by TCP, unbounded).
    sendable: Option<u64>,
}

/// A client's connection.
#[derive(Debug)]
pub struct ClientStream(TcpStream);

/// The reading side of a connection, for reading and writing at once.
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a TcpStream);

/// The writing side of a connection, for reading and writing at once.
#[derive(Debug)]
pub struct WriteHalf<'a> {
    stream: &'a TcpStream,
    /// What an instance connection in the shortcut may still send (`None`: unbounded).
    sendable: Option<&'a mut u64>,
}

impl UpstreamStream {
    /// Wraps a connected socket that may send `sendable` bytes more (`None`: unbounded).
    pub fn new(stream: TcpStream, sendable: Option<u64>) -> UpstreamStream {
        UpstreamStream { stream, sendable }
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes it may still send (`None`: unbounded).
    pub fn sendable(&self) -> Option<u64> {
        self.sendable
    }

    /// Whether the instance has neither closed the connection nor sent anything: the
    /// event loop's readiness first, which costs no system call; readiness left from the
    /// last answer (reads stop at the answer's end, not at `EAGAIN`) is checked with a
    /// peek, which also clears it.
    pub fn has_nothing_to_read(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut byte = [std::mem::MaybeUninit::uninit()];
        let peek = recv_now(
            &self.stream,
            &mut byte,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        );
        matches!(peek, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// A reading and a writing half.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        let writer = WriteHalf {
            stream: &self.stream,
            sendable: self.sendable.as_mut(),
        };
        (ReadHalf(&self.stream), writer)
    }
}

impl ClientStream {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream) -> ClientStream {
        ClientStream(stream)
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }

    /// A reading and a writing half.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        let writer = WriteHalf {
            stream: &self.0,
            sendable: None,
        };
        (ReadHalf(&self.0), writer)
    }
}

/// One `recv` now, without waiting; `WouldBlock` clears the readiness, so that the next
/// poll waits for an event.
fn recv_now(
    stream: &TcpStream,
    buf: &mut [std::mem::MaybeUninit<u8>],
    flags: RecvFlags,
) -> io::Result<usize> {
    stream.try_io(Interest::READABLE, || {
        Ok(rustix::net::recv(stream, &mut *buf, flags)?.1)
    })
}

fn poll_read_until_eagain(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        match skiff_kernel::recv::recv_now_into(stream, buf) {
            Ok(_) => return Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

fn poll_write_within(
    stream: &TcpStream,
    sendable: Option<&mut u64>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    if sendable
        .as_deref()
        .is_some_and(|left| buf.len() as u64 > *left)
    {
        return Poll::Ready(Err(io::Error::other(
            "the request is larger than the upstream shortcut may still carry on this connection",
        )));
    }
    let n = ready!(poll_send(stream, cx, buf))?;
    if let Some(left) = sendable {
        *left -= n as u64;
    }
    Poll::Ready(Ok(n))
}

/// Sends what of `buf` the socket takes, once it is writable.
fn poll_send(stream: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        // `WouldBlock` clears the readiness, so that the next poll waits for an event.
        let sent = stream.try_io(Interest::WRITABLE, || {
            Ok(rustix::net::send(stream, buf, SendFlags::NOSIGNAL)?)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => return Poll::Ready(sent),
        }
    }
}

fn shutdown_write(stream: &TcpStream) -> Poll<io::Result<()>> {
    Poll::Ready(rustix::net::shutdown(stream, rustix::net::Shutdown::Write).map_err(Into::into))
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_until_eagain(&self.stream, cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_within(&this.stream, this.sendable.as_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(&self.stream)
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_until_eagain(self.0, cx, buf)
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_within(this.stream, this.sendable.as_deref_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(self.stream)
    }
}

/// tokio's read: a client's connection is never in the shortcut, so a read shorter than
/// the room it had means the socket is drained, and tokio then waits for the next event
/// rather than asking the kernel for an `EAGAIN` first.
impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_send(&self.0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(&self.0)
    }
}
