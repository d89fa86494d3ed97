//! One `recv` straight into the unfilled part of a tokio [`ReadBuf`], without zeroing it
//! first: the proxy's read on every answer, where a memset of the buffer per read would
//! cost more than the read.
#![allow(unsafe_code)]

use rustix::net::RecvFlags;
use std::io;
use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;

/// Reads what `stream` holds now into `buf` (one `recv`, without waiting) and marks the
/// bytes filled. `WouldBlock` clears the readiness, so that the next poll waits for an
/// event.
pub fn recv_now_into(stream: &TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: `recv` only writes initialised bytes into the unfilled part and reports
    // how many; only those are marked filled below.
    let unfilled = unsafe { buf.unfilled_mut() };
    let n = stream.try_io(Interest::READABLE, || {
        Ok(rustix::net::recv(stream, &mut *unfilled, RecvFlags::empty())?.1)
    })?;
    // SAFETY: the kernel wrote `n` bytes at the start of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}
