//! The last step of a sandbox's setup under an init: fork the app into a process group of
//! its own, and make the rest the sandbox's init (`init`): by executing the init
//! executable (`init_exe`) when the zygote has one, so the init keeps nothing of the
//! zygote's memory (its page tables, the heap and stack pages the clone copied), else by
//! running the same init loop in this process.
//!
//! It runs in the freshly cloned sandbox process, just before the app's exec: raw system
//! calls only, nothing allocates.
#![allow(unsafe_code)]

use libc::{c_char, c_int};

/// Forks the app: returns in the child (to go on and exec it), never in the init.
///
/// # Safety
///
/// Only in the freshly cloned sandbox process, just before its exec, with `err_fd` the
/// setup-report pipe (the init closes its copy, so the parent sees the app's exec),
/// `probe_fd` the probe socket or -1, `envp` the app's environment, and `init_exe` the
/// init executable or -1.
pub unsafe fn fork_app(
    err_fd: c_int,
    probe_fd: c_int,
    envp: *const *const c_char,
    init_exe: c_int,
) {
    // SAFETY: signal-mask, fork, setpgid and close calls on local data; the parent side
    // never returns (it executes the init, or serves as it and exits).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut before: libc::sigset_t = std::mem::zeroed();
        // Blocked before the fork, so no signal falls between it and the init's wait
        // (the mask and pending signals outlive the init's exec).
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before);
        let pid = crate::init_sys::fork();
        if pid == 0 {
            libc::setpgid(0, 0);
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            if probe_fd >= 0 {
                libc::close(probe_fd);
            }
            if init_exe >= 0 {
                libc::close(init_exe);
            }
            return;
        }
        libc::close(err_fd);
        if pid < 0 {
            libc::_exit(127);
        }
        // The app's group exists before any signal is forwarded to it.
        libc::setpgid(pid, pid);
        if init_exe >= 0 {
            exec_init(init_exe, pid, probe_fd, &before, envp);
        }
        crate::init::serve(pid, probe_fd, envp, before)
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
