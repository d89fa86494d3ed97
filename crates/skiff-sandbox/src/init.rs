//! A minimal init for PID 1 of a sandbox (the idea of tini or catatonit, written here):
//! the sandbox's first process forks the app into a process group of its own and stays
//! behind to forward every signal it gets to that whole group (so an app started through
//! `sh -c` without `exec` still gets SIGTERM), to reap whatever is re-parented to it
//! (zombies), and to exit with the app's status: its code, or 128+N when signal N ended
//! it.
//!
//! It runs in the freshly cloned child, after the sandbox is set up (user, capabilities
//! and seccomp already applied): raw system calls only, nothing allocates.
#![allow(unsafe_code)]

use libc::c_int;

/// Forks the app: returns in the child (to go on and exec it), never in the init.
///
/// # Safety
///
/// Only in the freshly cloned sandbox process, just before its exec, with `err_fd` the
/// setup-report pipe (the init closes its copy, so the parent sees the app's exec).
pub unsafe fn fork_app(err_fd: c_int) {
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
            return;
        }
        libc::close(err_fd);
        if pid < 0 {
            libc::_exit(127);
        }
        // The app's group exists before any signal is forwarded to it.
        libc::setpgid(pid, pid);
        libc::prctl(libc::PR_SET_NAME, c"skiff-init".as_ptr());
        serve(pid, &all)
    }
}

/// The init's loop: forwards, reaps, and exits with the app's status.
unsafe fn serve(app: c_int, all: &libc::sigset_t) -> ! {
    // SAFETY: sigwaitinfo, waitpid, kill and _exit on local data.
    unsafe {
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(all, &mut info);
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                // To the whole group: a shell that did not exec passes it on to no one.
                libc::kill(-app, sig);
                continue;
            }
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == app {
                    let code = if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        libc::WEXITSTATUS(status)
                    };
                    // What is left of the app's group goes with it, as with tini -g.
                    libc::kill(-app, libc::SIGKILL);
                    libc::_exit(code);
                }
            }
        }
    }
}
