//! A minimal init for PID 1 of a sandbox (the idea of tini or catatonit, written here):
//! the sandbox's first process forks the app into a process group of its own and stays
//! behind to forward every signal it gets to that whole group (so an app started through
//! `sh -c` without `exec` still gets SIGTERM), to reap whatever is re-parented to it
//! (zombies), and to exit with the app's status: its code, or 128+N when signal N ended
//! it.
//!
//! It also runs exec probes: the daemon sends a command on the probe socket, the init
//! forks it as the app's user (it already is: credentials, capabilities and seccomp were
//! applied before the fork) in a group of its own, kills it at its deadline, and answers
//! with its status. The wire format is in [`crate::probe`].
//!
//! It runs in the freshly cloned child, after the sandbox is set up: raw system calls
//! only, nothing allocates.
#![allow(unsafe_code)]

use crate::probe::{self, TIMED_OUT};
use libc::{c_char, c_int};

/// Probes running at once; past it a request is answered [`probe::BUSY`].
const MAX_PROBES: usize = 4;

/// Forks the app: returns in the child (to go on and exec it), never in the init.
///
/// # Safety
///
/// Only in the freshly cloned sandbox process, just before its exec, with `err_fd` the
/// setup-report pipe (the init closes its copy, so the parent sees the app's exec),
/// `probe_fd` the probe socket or -1, and `envp` the app's environment.
pub unsafe fn fork_app(err_fd: c_int, probe_fd: c_int, envp: *const *const c_char) {
    // SAFETY: signal-mask, fork, setpgid and close calls on local data; the parent side
    // never returns (it ends in `serve`, which exits).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut before: libc::sigset_t = std::mem::zeroed();
        // Blocked before the fork, so no signal falls between it and the init's wait.
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before);
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize) as c_int;
        if pid == 0 {
            libc::setpgid(0, 0);
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            if probe_fd >= 0 {
                libc::close(probe_fd);
            }
            return;
        }
        libc::close(err_fd);
        if pid < 0 {
            libc::_exit(127);
        }
        // The app's group exists before any signal is forwarded to it.
        libc::setpgid(pid, pid);
        libc::prctl(libc::PR_SET_NAME, c"skiff-init".as_ptr());
        let init = Init {
            app: pid,
            probe_fd,
            envp,
            before,
            probes: [Running::NONE; MAX_PROBES],
        };
        init.serve(&all)
    }
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
    before: libc::sigset_t,
    probes: [Running; MAX_PROBES],
}

fn now_ms() -> i64 {
    // SAFETY: clock_gettime into a local struct.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }
}

impl Init {
    /// The init's loop: forwards, reaps, runs probes, and exits with the app's status.
    unsafe fn serve(mut self, all: &libc::sigset_t) -> ! {
        // SAFETY: signalfd, poll, read and the calls below on local data.
        unsafe {
            let sfd = libc::signalfd(-1, all, libc::SFD_CLOEXEC);
            loop {
                let mut fds = [
                    libc::pollfd {
                        fd: sfd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: self.probe_fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                let n = libc::poll(fds.as_mut_ptr(), 2, self.next_deadline());
                if n < 0 {
                    continue;
                }
                if fds[0].revents & libc::POLLIN != 0 {
                    self.on_signals(sfd);
                }
                if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
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
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            while libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size)
                == size as isize
            {
                let sig = info.ssi_signo as c_int;
                if sig != libc::SIGCHLD {
                    // To the whole group: a shell that did not exec passes it on to no one.
                    libc::kill(-self.app, sig);
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
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    return;
                }
                let code = if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    libc::WEXITSTATUS(status)
                };
                if pid == self.app {
                    // What is left of the app's group goes with it, as with tini -g.
                    libc::kill(-self.app, libc::SIGKILL);
                    libc::_exit(code);
                }
                if let Some(p) = self.probes.iter_mut().find(|p| p.pid == pid) {
                    let answer = if p.timed_out { TIMED_OUT } else { code };
                    probe::send_reply(self.probe_fd, p.id, answer);
                    // Whatever the probe left in its group goes too.
                    libc::kill(-pid, libc::SIGKILL);
                    *p = Running::NONE;
                }
            }
        }
    }

    unsafe fn on_request(&mut self) {
        let mut buf = [0u8; probe::MAX_MESSAGE];
        // SAFETY: recv into a local buffer.
        let n = unsafe {
            libc::recv(
                self.probe_fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
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
        let Some(req) = probe::Request::parse(&mut buf[..n as usize]) else {
            return;
        };
        let Some(slot) = self.probes.iter().position(|p| p.pid == 0) else {
            probe::send_reply(self.probe_fd, req.id, probe::BUSY);
            return;
        };
        // SAFETY: a fork of this single-threaded init; the child only makes raw calls
        // and ends in execve or _exit.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize) }
            as c_int;
        if pid == 0 {
            // SAFETY: in the fresh child.
            unsafe { self.exec_probe(&req) }
        }
        if pid < 0 {
            probe::send_reply(self.probe_fd, req.id, probe::FORK_FAILED);
            return;
        }
        // SAFETY: setpgid on our own child (also done by the child: whichever is first).
        unsafe { libc::setpgid(pid, pid) };
        self.probes[slot] = Running {
            pid,
            id: req.id,
            deadline_ms: now_ms() + i64::from(req.timeout_ms),
            timed_out: false,
        };
    }

    /// In the probe's process: its own group, the app's signal mask, stdio on /dev/null.
    unsafe fn exec_probe(&self, req: &probe::Request) -> ! {
        // SAFETY: raw calls in the freshly forked child; the pointers point into the
        // request buffer and the app's environment, both alive in this copy.
        unsafe {
            libc::setpgid(0, 0);
            libc::sigprocmask(libc::SIG_SETMASK, &self.before, std::ptr::null_mut());
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            for path in &req.paths[..req.n_paths] {
                libc::execve(*path, req.argv.as_ptr(), self.envp);
            }
            libc::_exit(127)
        }
    }

    /// Kills the probes past their deadline (answered when reaped).
    fn expire(&mut self) {
        let now = now_ms();
        for p in self.probes.iter_mut() {
            if p.pid > 0 && !p.timed_out && p.deadline_ms <= now {
                p.timed_out = true;
                // SAFETY: signalling our own child's group.
                unsafe { libc::kill(-p.pid, libc::SIGKILL) };
            }
        }
    }
}
