//! A connection to an instance as the proxy reads and writes it: a tokio `TcpStream` whose
//! reads wait for the next readiness event only after the socket said `EAGAIN`.
//!
//! Tokio takes a read shorter than the buffer to mean the socket is drained and waits for
//! the next event. A socket in the upstream shortcut's map breaks that rule: one read
//! returns what was redirected, the next what came by TCP (once the sender's budget was
//! spent), and the event for the latter may have come before the first read. Waiting
//! would then hang the exchange. This module must not do anything else differently.

#![allow(unsafe_code)]

use rustix::fd::AsRawFd;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// An instance connection's socket.
#[derive(Debug)]
pub struct UpstreamStream(TcpStream);

/// One direction of an [`UpstreamStream`], for reading and writing at once.
#[derive(Debug)]
pub struct Half<'a>(&'a TcpStream);

impl UpstreamStream {
    /// Wraps a connected socket.
    pub fn new(stream: TcpStream) -> UpstreamStream {
        UpstreamStream(stream)
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }

    /// A reading and a writing half.
    pub fn split(&mut self) -> (Half<'_>, Half<'_>) {
        (Half(&self.0), Half(&self.0))
    }
}

fn poll_read_until_eagain(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        // SAFETY: `recv` only writes initialised bytes into the unfilled part, and
        // reports how many; only those are marked filled.
        let unfilled = unsafe { buf.unfilled_mut() };
        let read = stream.try_io(Interest::READABLE, || {
            // SAFETY: the pointer and length describe `unfilled`, which outlives the call.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    unfilled.as_mut_ptr().cast(),
                    unfilled.len(),
                    0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match read {
            Ok(n) => {
                // SAFETY: the kernel wrote `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            // `try_io` cleared the readiness: the next poll waits for an event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

fn poll_write_until_eagain(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(buf) {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
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
        poll_read_until_eagain(&self.0, cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_until_eagain(&self.0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(&self.0)
    }
}

impl AsyncRead for Half<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_until_eagain(self.0, cx, buf)
    }
}

impl AsyncWrite for Half<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_until_eagain(self.0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(self.0)
    }
}
