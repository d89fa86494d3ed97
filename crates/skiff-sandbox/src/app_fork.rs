//! The last step of a sandbox's setup under an init: fork the app into a process group of
//! its own, and make the rest the sandbox's init (`init`): by executing the init
//! executable (`init_exe`) when the zygote has one, so the init keeps nothing of the
//! zygote's memory (its page tables, the heap and stack pages the clone copied), else by
//! running the same init loop in this process.
//!
//! It runs in the freshly cloned sandbox process, just before the app's exec: raw system
//! calls only, nothing allocates. The app's process shares this one's memory until it
//! executes (a `vfork`), so starting it copies nothing.
#![allow(unsafe_code)]

use crate::child_stack::{block_every_signal, ChildStack};
use libc::{c_char, c_int, c_void};

/// What the app's process runs once it is set apart: its exec (and the setup report if
/// that fails). It never returns; `arg` is what [`fork_app`] was given.
pub type AppExec = unsafe fn(arg: *const c_void) -> !;

/// Starts the app in a process of its own and makes this one the sandbox's init; never
/// returns.
///
/// The app's process shares this one's memory until it executes (`CLONE_VM |
/// CLONE_VFORK`, as `posix_spawn` does), on a stack of its own in this frame: no page
/// tables are copied, nothing is copied on write, and the app's exec has no copy of
/// this memory to tear down on its way. This process waits meanwhile, then executes the
/// init (or serves as it).
///
/// # Safety
///
/// Only in the freshly cloned sandbox process, just before its exec, with every signal
/// at its default action (no handler may run in the app's process while it shares this
/// memory), `err_fd` the setup-report pipe (the init closes its copy, so the parent sees
/// the app's exec), `probe_fd` the probe socket or -1, `envp` the app's environment,
/// `init_exe` the init executable or -1, and `exec(arg)` making raw system calls only.
pub unsafe fn fork_app(
    err_fd: c_int,
    probe_fd: c_int,
    envp: *const *const c_char,
    init_exe: c_int,
    exec: AppExec,
    arg: *const c_void,
) -> ! {
    // Not zeroed: writing 16 KiB would copy up to four of the clone's stack pages.
    let mut stack = ChildStack::<APP_STACK>::new();
    // Blocked before the clone, so no signal falls between it and the init's wait
    // (the mask and pending signals outlive the init's exec).
    let before = block_every_signal();
    // SAFETY: clone, setpgid and close calls on local data. The app's
    // process runs `app_entry` on `stack` with `app` (both in this frame, which lives
    // on: this function never returns) and this process is suspended until it executes
    // or exits, so nothing here runs while it uses the shared memory.
    unsafe {
        let mut app = AppStart {
            before,
            probe_fd,
            init_exe,
            exec,
            arg,
        };
        let pid = libc::clone(
            app_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut app).cast::<c_void>(),
        );
        libc::close(err_fd);
        if pid < 0 {
            libc::_exit(127);
        }
        // The app's group exists before any signal is forwarded to it.
        libc::setpgid(pid, pid);
        if init_exe >= 0 {
            exec_init(init_exe, pid, probe_fd, &app.before, envp);
        }
        crate::init::serve(pid, probe_fd, envp, app.before)
    }
}

/// Room for the app's process until it executes: it makes a few raw system calls.
const APP_STACK: usize = 16 * 1024;

/// What the app's process needs from this one.
struct AppStart {
    /// The signal mask before every signal was blocked: the app's.
    before: libc::sigset_t,
    probe_fd: c_int,
    init_exe: c_int,
    exec: AppExec,
    arg: *const c_void,
}

/// The app's process: its own group, none of the init's descriptors, the mask it had,
/// then its exec.
extern "C" fn app_entry(start: *mut c_void) -> c_int {
    // SAFETY: `start` is the `AppStart` in `fork_app`'s frame, alive (that process is
    // suspended until this one executes or exits); the calls are raw system calls.
    unsafe {
        let start = &*start.cast::<AppStart>();
        libc::setpgid(0, 0);
        if start.probe_fd >= 0 {
            libc::close(start.probe_fd);
        }
        if start.init_exe >= 0 {
            libc::close(start.init_exe);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &start.before, std::ptr::null_mut());
        (start.exec)(start.arg)
    }
}

/// Executes the init executable as `skiff-init APP PROBE_FD MASK` (decimal; the mask's
/// bit N-1 is signal N) with the app's environment; returns only if that failed.
///
/// # Safety
///
/// In the sandbox's first process after the app's fork; `envp` NULL-terminated.
unsafe fn exec_init(
    exe: c_int,
    app: c_int,
    probe_fd: c_int,
    before: &libc::sigset_t,
    envp: *const *const c_char,
) {
    let mut mask: u64 = 0;
    for sig in 1..=64 {
        // SAFETY: a query of a local signal set.
        if unsafe { libc::sigismember(before, sig) } == 1 {
            mask |= 1 << (sig - 1);
        }
    }
    let mut app_text = [0u8; DECIMAL];
    let mut probe_text = [0u8; DECIMAL];
    let mut mask_text = [0u8; DECIMAL];
    let argv = [
        c"skiff-init".as_ptr(),
        decimal(i64::from(app), &mut app_text),
        decimal(i64::from(probe_fd), &mut probe_text),
        decimal(mask as i64, &mut mask_text),
        std::ptr::null(),
    ];
    // SAFETY: fcntl and execveat on descriptors this process owns; the strings are
    // NUL-terminated locals and `envp` is the caller's.
    unsafe {
        // Everything from 3 up was made close-on-exec for the app; the init keeps this.
        if probe_fd >= 0 {
            libc::fcntl(probe_fd, libc::F_SETFD, 0);
        }
        libc::syscall(
            libc::SYS_execveat,
            exe,
            c"".as_ptr(),
            argv.as_ptr(),
            envp,
            libc::AT_EMPTY_PATH,
        );
    }
}

/// Room for an `i64` in decimal with its sign and NUL.
const DECIMAL: usize = 21;

/// Writes `value` in decimal, NUL-terminated, at the end of `buf`; a pointer to it.
fn decimal(value: i64, buf: &mut [u8; DECIMAL]) -> *const c_char {
    let mut at = DECIMAL - 1;
    buf[at] = 0;
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    buf[at..].as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_written_here_are_read_back_by_the_init() {
        for value in [0, 7, -1, 1 << 40, i64::MIN, i64::MAX, u64::MAX as i64] {
            let mut buf = [0u8; DECIMAL];
            let text = decimal(value, &mut buf);
            // SAFETY: `decimal` NUL-terminates within `buf`, alive here.
            let bytes = unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes();
            assert_eq!(crate::init::parse_decimal(bytes), Some(value), "{bytes:?}");
        }
    }

    #[test]
    fn the_init_refuses_what_is_not_a_decimal() {
        for text in [
            &b""[..],
            b"-",
            b"12a",
            b" 1",
            b"99999999999999999999",
            b"+1",
        ] {
            assert_eq!(crate::init::parse_decimal(text), None, "{text:?}");
        }
    }
}
