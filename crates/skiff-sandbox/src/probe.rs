//! Exec probes, the daemon's end: encoding a request for an instance's init and waiting
//! for its reply over a SOCK_SEQPACKET socket pair (one message per request or reply).
//! The wire format and the init's side of it are in `probe_wire`.
#![allow(unsafe_code)]

use crate::probe_wire::{BUSY, FORK_FAILED, MAX_ARGS, MAX_MESSAGE, MAX_PATHS, TIMED_OUT};
use libc::c_int;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

// The init executable cannot depend on skiff-core: its copy of the limit must agree.
const _: () = assert!(MAX_ARGS == skiff_core::MAX_EXEC_ARGS);

fn encode(id: u32, timeout_ms: u32, paths: &[CString], args: &[CString]) -> io::Result<Vec<u8>> {
    let too_long = || io::Error::new(io::ErrorKind::InvalidInput, "the command is too long");
    if paths.len() > MAX_PATHS || args.is_empty() || args.len() > MAX_ARGS {
        return Err(too_long());
    }
    let mut msg = Vec::with_capacity(256);
    msg.extend_from_slice(&id.to_ne_bytes());
    msg.extend_from_slice(&timeout_ms.to_ne_bytes());
    msg.extend_from_slice(&(paths.len() as u16).to_ne_bytes());
    msg.extend_from_slice(&(args.len() as u16).to_ne_bytes());
    for s in paths.iter().chain(args) {
        msg.extend_from_slice(s.as_bytes_with_nul());
    }
    if msg.len() > MAX_MESSAGE {
        return Err(too_long());
    }
    Ok(msg)
}

/// How an exec probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStatus {
    /// Exit code (128+N for signal N; 127: not found or not executable).
    Exited(i32),
    TimedOut,
    /// Too many probes at once, or the init could not fork.
    NotRun,
}

/// The daemon's end of an instance's probe socket.
pub struct ProbeChannel {
    fd: Mutex<(OwnedFd, u32)>,
    /// The app's `PATH`, where a command without a `/` is looked up.
    path: String,
}

impl ProbeChannel {
    pub(crate) fn new(fd: OwnedFd, path: String) -> ProbeChannel {
        ProbeChannel {
            fd: Mutex::new((fd, 0)),
            path,
        }
    }

    /// Where the init looks for `exe` (as execvp would).
    fn candidates(&self, exe: &str) -> io::Result<Vec<CString>> {
        let bad = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command");
        if exe.contains('/') {
            return Ok(vec![CString::new(exe).map_err(bad)?]);
        }
        self.path
            .split(':')
            .filter(|d| !d.is_empty())
            .take(MAX_PATHS)
            .map(|d| CString::new(format!("{}/{exe}", d.trim_end_matches('/'))).map_err(bad))
            .collect()
    }

    /// Runs `argv` in the instance and waits for its status, at most `timeout` (and a
    /// second for the answer). Blocks: call it off the async threads. One at a time per
    /// instance.
    pub fn run(&self, argv: &[String], timeout: Duration) -> io::Result<ProbeStatus> {
        let exe = argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command"))?;
        let paths = self.candidates(exe)?;
        let args = argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command")
            })?;
        let mut guard = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = guard.1.wrapping_add(1);
        let id = guard.1;
        let fd = guard.0.as_raw_fd();
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let msg = encode(id, timeout_ms, &paths, &args)?;
        // SAFETY: send of an owned buffer on a socket we own.
        if unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = std::time::Instant::now() + timeout + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the init did not answer",
                ));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one local pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as c_int) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                continue;
            }
            let mut reply = [0u8; 8];
            // SAFETY: recv into a local buffer on a socket we own.
            let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the instance's init is gone",
                ));
            }
            if n != 8 {
                return Err(io::Error::last_os_error());
            }
            let got = u32::from_ne_bytes(reply[..4].try_into().expect("4 bytes"));
            let status = i32::from_ne_bytes(reply[4..].try_into().expect("4 bytes"));
            // An answer to an earlier request that we gave up on: skip it.
            if got != id {
                continue;
            }
            return Ok(match status {
                TIMED_OUT => ProbeStatus::TimedOut,
                BUSY | FORK_FAILED => ProbeStatus::NotRun,
                code => ProbeStatus::Exited(code),
            });
        }
    }
}

/// A SOCK_SEQPACKET pair: (the daemon's end, the init's end).
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe_wire::Request;
    use libc::c_char;

    #[test]
    fn a_request_encodes_and_parses_back_without_allocating() {
        let paths = [
            CString::new("/bin/cat").unwrap(),
            CString::new("/usr/bin/cat").unwrap(),
        ];
        let args = [
            CString::new("cat").unwrap(),
            CString::new("/tmp/ok").unwrap(),
        ];
        let mut msg = encode(7, 1500, &paths, &args).unwrap();
        let req = Request::parse(&mut msg).unwrap();
        assert_eq!((req.id, req.timeout_ms, req.n_paths), (7, 1500, 2));
        // SAFETY: the pointers point into `msg`, alive here, at NUL-terminated strings.
        let text = |p: *const c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap();
        assert_eq!(text(req.paths[1]), "/usr/bin/cat");
        assert_eq!(text(req.argv[1]), "/tmp/ok");
        assert!(req.argv[2].is_null(), "argv ends with NULL");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let paths = [CString::new("/x").unwrap()];
        let args = [CString::new("x").unwrap()];
        let msg = encode(1, 1, &paths, &args).unwrap();
        // Cut before the last NUL: the strings run off the end.
        assert!(Request::parse(&mut msg[..msg.len() - 1].to_vec()).is_none());
        assert!(Request::parse(&mut [0u8; 5]).is_none());
        let mut zero_args = msg.clone();
        zero_args[10] = 0;
        zero_args[11] = 0;
        assert!(Request::parse(&mut zero_args).is_none());
        let many: Vec<CString> = (0..40).map(|_| CString::new("a").unwrap()).collect();
        assert!(encode(1, 1, &paths, &many).is_err());
    }
}
