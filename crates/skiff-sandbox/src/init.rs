//! A minimal init for PID 1 of a sandbox (the idea of tini or catatonit, written here):
//! the app runs in a process group of its own (`app_fork` forks it), and the init stays
//! behind to forward every signal it gets to that whole group (so an app started through
//! `sh -c` without `exec` still gets SIGTERM), to reap whatever is re-parented to it
//! (zombies), and to exit with the app's status: its code, or 128+N when signal N ended
//! it.
//!
//! It also runs exec probes: the daemon sends a command on the probe socket, the init
//! forks it as the app's user (it already is: credentials, capabilities and seccomp were
//! applied before the fork) in a group of its own, kills it at its deadline, and answers
//! with its status. The wire format is in [`crate::probe_wire`].
//!
//! This code runs in two builds: the init executable (`init_exe`, a few KiB without the
//! standard library, which each sandbox's init executes so it keeps no copy of the
//! zygote's memory), and the daemon's binary (when there is no such executable). So it
//! uses `core` and [`crate::init_sys`] only: raw system calls, nothing allocates.
#![allow(unsafe_code)]

use crate::init_sys as sys;
use crate::probe_wire::{self, TIMED_OUT};
use sys::{c_char, c_int};

/// Probes running at once; past it a request is answered [`probe_wire::BUSY`].
const MAX_PROBES: usize = 4;

/// Serves as the init of `app` (the app's pid, the leader of its own process group)
/// until the app ends, then exits with its status. `probe_fd` is the probe socket or -1,
/// `envp` the app's environment (for probes), `before` the signal mask probes run with.
///
/// # Safety
///
/// Only in the sandbox's first process, once the app is forked, with every signal
/// blocked (so none is lost: the loop reads them from a signalfd).
pub unsafe fn serve(
    app: c_int,
    probe_fd: c_int,
    envp: *const *const c_char,
    before: sys::sigset_t,
) -> ! {
    // SAFETY: naming this process and filling a local signal set.
    unsafe {
        sys::prctl(sys::PR_SET_NAME, c"skiff-init".as_ptr());
        let mut all: sys::sigset_t = core::mem::zeroed();
        sys::sigfillset(&mut all);
        let init = Init {
            app,
            probe_fd,
            envp,
            before,
            probes: [Running::NONE; MAX_PROBES],
        };
        init.serve(&all)
    }
}

/// The number `digits` spell in decimal, with an optional leading `-`; `None` for
/// anything else (an empty string, another character, an overflow). The init
/// executable reads its arguments with it; the daemon's build only tests it.
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse_decimal(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// A probe command the init started.
#[derive(Clone, Copy)]
struct Running {
    pid: c_int,
    id: u32,
    deadline_ms: i64,
    timed_out: bool,
}

impl Running {
    const NONE: Running = Running {
        pid: 0,
        id: 0,
        deadline_ms: 0,
        timed_out: false,
    };
}

struct Init {
    app: c_int,
    probe_fd: c_int,
    envp: *const *const c_char,
    /// The signal mask before the init blocked everything (probes get it back).
    before: sys::sigset_t,
    probes: [Running; MAX_PROBES],
}

fn now_ms() -> i64 {
    // SAFETY: clock_gettime into a local struct.
    unsafe {
        let mut ts: sys::timespec = core::mem::zeroed();
        sys::clock_gettime(sys::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }
}

impl Init {
    /// The init's loop: forwards, reaps, runs probes, and exits with the app's status.
    unsafe fn serve(mut self, all: &sys::sigset_t) -> ! {
        // SAFETY: signalfd, poll, read and the calls below on local data.
        unsafe {
            let sfd = sys::signalfd(-1, all, sys::SFD_CLOEXEC);
            loop {
                let mut fds = [
                    sys::pollfd {
                        fd: sfd,
                        events: sys::POLLIN,
                        revents: 0,
                    },
                    sys::pollfd {
                        fd: self.probe_fd,
                        events: sys::POLLIN,
                        revents: 0,
                    },
                ];
                let n = sys::poll(fds.as_mut_ptr(), 2, self.next_deadline());
                if n < 0 {
                    continue;
                }
                if fds[0].revents & sys::POLLIN != 0 {
                    self.on_signals(sfd);
                }
                if fds[1].revents & (sys::POLLIN | sys::POLLHUP | sys::POLLERR) != 0 {
                    self.on_request();
                }
                self.expire();
            }
        }
    }

    /// Milliseconds until the nearest probe deadline, or -1 (none).
    fn next_deadline(&self) -> c_int {
        let now = now_ms();
        self.probes
            .iter()
            .filter(|p| p.pid > 0 && !p.timed_out)
            .map(|p| (p.deadline_ms - now).clamp(0, i64::from(c_int::MAX)) as c_int)
            .min()
            .unwrap_or(-1)
    }

    unsafe fn on_signals(&mut self, sfd: c_int) {
        // SAFETY: read into a local, properly sized signalfd_siginfo.
        unsafe {
            let mut info: sys::signalfd_siginfo = core::mem::zeroed();
            let size = core::mem::size_of::<sys::signalfd_siginfo>();
            while sys::read(sfd, (&mut info as *mut sys::signalfd_siginfo).cast(), size)
                == size as isize
            {
                let sig = info.ssi_signo as c_int;
                if sig != sys::SIGCHLD {
                    // To the whole group: a shell that did not exec passes it on to no one.
                    sys::kill(-self.app, sig);
                    continue;
                }
                self.reap();
                // Signalfd is not non-blocking: one read per wake-up is enough, as
                // SIGCHLDs coalesce and reap() takes every child that is done.
                break;
            }
        }
    }

    unsafe fn reap(&mut self) {
        // SAFETY: waitpid, kill and _exit on local data.
        unsafe {
            loop {
                let mut status = 0;
                let pid = sys::waitpid(-1, &mut status, sys::WNOHANG);
                if pid <= 0 {
                    return;
                }
                let code = if sys::WIFSIGNALED(status) {
                    128 + sys::WTERMSIG(status)
                } else {
                    sys::WEXITSTATUS(status)
                };
                if pid == self.app {
                    // What is left of the app's group goes with it, as with tini -g.
                    sys::kill(-self.app, sys::SIGKILL);
                    sys::exit(code);
                }
                if let Some(p) = self.probes.iter_mut().find(|p| p.pid == pid) {
                    let answer = if p.timed_out { TIMED_OUT } else { code };
                    probe_wire::send_reply(self.probe_fd, p.id, answer);
                    // Whatever the probe left in its group goes too.
                    sys::kill(-pid, sys::SIGKILL);
                    *p = Running::NONE;
                }
            }
        }
    }

    unsafe fn on_request(&mut self) {
        let mut buf = [0u8; probe_wire::MAX_MESSAGE];
        // SAFETY: recv into a local buffer.
        let n = unsafe {
            sys::recv(
                self.probe_fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                sys::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            // The daemon's end is gone: no more probes.
            self.probe_fd = -1;
            return;
        }
        if n < 0 {
            return;
        }
        let Some(req) = probe_wire::Request::parse(&mut buf[..n as usize]) else {
            return;
        };
        let Some(slot) = self.probes.iter().position(|p| p.pid == 0) else {
            probe_wire::send_reply(self.probe_fd, req.id, probe_wire::BUSY);
            return;
        };
        // SAFETY: a fork of this single-threaded init; the child only makes raw calls
        // and ends in execve or _exit.
        let pid = unsafe { sys::fork() };
        if pid == 0 {
            // SAFETY: in the fresh child.
            unsafe { self.exec_probe(&req) }
        }
        if pid < 0 {
            probe_wire::send_reply(self.probe_fd, req.id, probe_wire::FORK_FAILED);
            return;
        }
        // SAFETY: setpgid on our own child (also done by the child: whichever is first).
        unsafe { sys::setpgid(pid, pid) };
        self.probes[slot] = Running {
            pid,
            id: req.id,
            deadline_ms: now_ms() + i64::from(req.timeout_ms),
            timed_out: false,
        };
    }

    /// In the probe's process: its own group, the app's signal mask, stdio on /dev/null.
    unsafe fn exec_probe(&self, req: &probe_wire::Request) -> ! {
        // SAFETY: raw calls in the freshly forked child; the pointers point into the
        // request buffer and the app's environment, both alive in this copy.
        unsafe {
            sys::setpgid(0, 0);
            sys::sigprocmask(sys::SIG_SETMASK, &self.before, core::ptr::null_mut());
            let null = sys::open(c"/dev/null".as_ptr(), sys::O_RDWR);
            if null >= 0 {
                sys::dup2(null, 0);
                sys::dup2(null, 1);
                sys::dup2(null, 2);
            }
            sys::close_from(3);
            for path in &req.paths[..req.n_paths] {
                sys::execve(*path, req.argv.as_ptr(), self.envp);
            }
            sys::exit(127)
        }
    }

    /// Kills the probes past their deadline (answered when reaped).
    fn expire(&mut self) {
        let now = now_ms();
        for p in self.probes.iter_mut() {
            if p.pid > 0 && !p.timed_out && p.deadline_ms <= now {
                p.timed_out = true;
                // SAFETY: signalling our own child's group.
                unsafe { sys::kill(-p.pid, sys::SIGKILL) };
            }
        }
    }
}
