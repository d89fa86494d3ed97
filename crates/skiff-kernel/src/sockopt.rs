//! `SO_MARK` on sockets: the mark that tells the upstream shortcut's programs which
//! connections are the router's.
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd};
use std::io;

/// Sets `socket`'s `SO_MARK` (needs `CAP_NET_ADMIN`).
pub fn set_mark(socket: impl AsFd, mark: u32) -> io::Result<()> {
    let fd = socket.as_fd();
    // SAFETY: a valid socket, and a `u32` value of the size passed, as SO_MARK takes.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `socket`'s `SO_MARK`.
pub fn mark(socket: impl AsFd) -> io::Result<u32> {
    let fd = socket.as_fd();
    let mut mark = 0u32;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: a valid socket, and a `u32` buffer of the size passed, as SO_MARK fills.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mut mark as *mut u32).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_set_reads_back() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(mark(&socket).unwrap(), 0);
        match set_mark(&socket, 0x1234) {
            Ok(()) => assert_eq!(mark(&socket).unwrap(), 0x1234),
            // Without CAP_NET_ADMIN the kernel refuses, and says so.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
        }
    }
}
