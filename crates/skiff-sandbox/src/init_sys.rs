//! The system interface of the init (`init`, `probe_wire`) where it runs inside the
//! daemon's binary: libc's own items, and two raw calls libc has no wrapper for. The init
//! executable (`init_exe/sys.rs`) declares the same names over raw system calls, so the
//! same init code compiles into both.
#![allow(unsafe_code)]

pub use libc::_exit as exit;
pub use libc::{
    c_char, c_int, clock_gettime, dup2, execve, kill, open, poll, pollfd, prctl, read, recv, send,
    setpgid, sigfillset, signalfd, signalfd_siginfo, sigprocmask, sigset_t, timespec, waitpid,
    CLOCK_MONOTONIC, MSG_DONTWAIT, MSG_NOSIGNAL, O_RDWR, POLLERR, POLLHUP, POLLIN, PR_SET_NAME,
    SFD_CLOEXEC, SIGCHLD, SIGKILL, SIG_SETMASK, WEXITSTATUS, WIFSIGNALED, WNOHANG, WTERMSIG,
};

/// Forks with a raw `clone` (no `atfork` handlers: this runs in a clone of a process
/// whose other threads' locks it must not touch): 0 in the child, its pid, or < 0.
///
/// # Safety
/// The child must only make raw calls until it executes or exits.
pub unsafe fn fork() -> c_int {
    // SAFETY: as the caller promises.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0usize) as c_int }
}

/// Closes every descriptor from `first` up.
pub fn close_from(first: u32) {
    // SAFETY: close_range on this process's own table.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}
