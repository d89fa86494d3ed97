//! The exec-probe wire format, the part the init reads and writes: constants, parsing a
//! request in place, sending a reply. The daemon's end (encoding, waiting) is in `probe`.
//!
//! A request is `id: u32, timeout_ms: u32, paths: u16, args: u16` (native endian), then
//! that many NUL-terminated candidate paths of the command and arguments. A reply is
//! `id: u32, status: i32`: the exit code, 128+N for signal N, or one of the negative
//! codes below.
//!
//! Also compiled into the init executable (`init_exe`, no standard library): `core` and
//! [`crate::init_sys`] only, nothing allocates.
#![allow(unsafe_code)]

use crate::init_sys as sys;
use sys::{c_char, c_int};

/// The largest message; the command must fit in it.
pub const MAX_MESSAGE: usize = 4096;
/// The init could not fork the probe.
pub const FORK_FAILED: i32 = -1;
/// Too many probes running at once in the instance.
pub const BUSY: i32 = -2;
/// The probe ran past its timeout and was killed.
pub const TIMED_OUT: i32 = -3;
/// Candidate paths of the command (as execvp tries `PATH`).
pub const MAX_PATHS: usize = 16;
/// Arguments of the command (`skiff_core::MAX_EXEC_ARGS`, checked in `probe`).
pub const MAX_ARGS: usize = 32;
/// Bytes before the strings.
pub const HEADER: usize = 12;

/// A request as the init reads it: pointers into the message buffer.
pub struct Request {
    pub id: u32,
    pub timeout_ms: u32,
    pub paths: [*const c_char; MAX_PATHS],
    pub n_paths: usize,
    /// NULL-terminated, for execve.
    pub argv: [*const c_char; MAX_ARGS + 1],
}

impl Request {
    /// Reads a request from `buf` (which must outlive the result's use); `None` if it is
    /// malformed. Allocates nothing.
    pub fn parse(buf: &mut [u8]) -> Option<Request> {
        if buf.len() < HEADER {
            return None;
        }
        let u32_at =
            |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let id = u32_at(0);
        let timeout_ms = u32_at(4);
        let n_paths = usize::from(u16::from_ne_bytes([buf[8], buf[9]]));
        let n_args = usize::from(u16::from_ne_bytes([buf[10], buf[11]]));
        if n_paths == 0 || n_paths > MAX_PATHS || n_args == 0 || n_args > MAX_ARGS {
            return None;
        }
        let mut req = Request {
            id,
            timeout_ms,
            paths: [core::ptr::null(); MAX_PATHS],
            n_paths,
            argv: [core::ptr::null(); MAX_ARGS + 1],
        };
        let mut at = HEADER;
        for i in 0..n_paths + n_args {
            let len = buf[at..].iter().position(|b| *b == 0)?;
            let ptr = buf[at..].as_ptr().cast::<c_char>();
            if i < n_paths {
                req.paths[i] = ptr;
            } else {
                req.argv[i - n_paths] = ptr;
            }
            at += len + 1;
        }
        Some(req)
    }
}

/// Sends a reply (the init's side).
pub fn send_reply(fd: c_int, id: u32, status: i32) {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&id.to_ne_bytes());
    msg[4..].copy_from_slice(&status.to_ne_bytes());
    // SAFETY: send of a local buffer; a daemon that is gone loses nothing it waits for.
    unsafe { sys::send(fd, msg.as_ptr().cast(), msg.len(), sys::MSG_NOSIGNAL) };
}
