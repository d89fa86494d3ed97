//! The system interface of the init executable: the names `init_sys` takes from libc in
//! the daemon's build, here over raw x86-64 system calls (there is no libc to link).
//! Each function returns what the kernel does (`-errno` on failure), which the init only
//! ever tests for `< 0`.
#![allow(non_camel_case_types, non_snake_case, clippy::missing_safety_doc)]

use core::arch::asm;

pub type c_char = i8;
pub type c_int = i32;

/// The kernel's signal set (64 signals), not glibc's 1,024-bit one.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct sigset_t(pub u64);

#[repr(C)]
pub struct pollfd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
pub struct signalfd_siginfo {
    pub ssi_signo: u32,
    rest: [u8; 124],
}

#[repr(C)]
pub struct timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

pub const SIG_SETMASK: c_int = 2;
pub const SIGKILL: c_int = 9;
pub const SIGCHLD: c_int = 17;
pub const PR_SET_NAME: c_int = 15;
pub const POLLIN: i16 = 0x1;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;
pub const SFD_CLOEXEC: c_int = 0o2000000;
pub const WNOHANG: c_int = 1;
pub const MSG_DONTWAIT: c_int = 0x40;
pub const MSG_NOSIGNAL: c_int = 0x4000;
pub const O_RDWR: c_int = 2;
pub const CLOCK_MONOTONIC: c_int = 1;
const AT_FDCWD: c_int = -100;

mod nr {
    pub const READ: usize = 0;
    pub const POLL: usize = 7;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const DUP2: usize = 33;
    pub const SENDTO: usize = 44;
    pub const RECVFROM: usize = 45;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const SETPGID: usize = 109;
    pub const PRCTL: usize = 157;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const SIGNALFD4: usize = 289;
    pub const CLOSE_RANGE: usize = 436;
}

/// One system call with up to six arguments.
///
/// # Safety
/// The arguments must be what system call `n` expects (pointers valid for it).
pub unsafe fn syscall(n: usize, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 system call convention; the kernel clobbers rcx and r11 only.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn int(ret: isize) -> c_int {
    ret as c_int
}

pub unsafe fn sigfillset(set: *mut sigset_t) -> c_int {
    // SAFETY: the caller's set.
    unsafe { *set = sigset_t(!0) };
    0
}

pub unsafe fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int {
    let args = [how as usize, set as usize, old as usize, 8, 0, 0];
    // SAFETY: rt_sigprocmask with the kernel's set size.
    int(unsafe { syscall(nr::RT_SIGPROCMASK, args) })
}

pub unsafe fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int {
    let args = [fd as usize, mask as usize, 8, flags as usize, 0, 0];
    // SAFETY: signalfd4 with the kernel's set size.
    int(unsafe { syscall(nr::SIGNALFD4, args) })
}

pub unsafe fn poll(fds: *mut pollfd, n: u64, timeout_ms: c_int) -> c_int {
    // SAFETY: the caller's array of `n`.
    int(unsafe {
        syscall(
            nr::POLL,
            [fds as usize, n as usize, timeout_ms as usize, 0, 0, 0],
        )
    })
}

pub unsafe fn read(fd: c_int, buf: *mut u8, len: usize) -> isize {
    // SAFETY: the caller's buffer of `len`.
    unsafe { syscall(nr::READ, [fd as usize, buf as usize, len, 0, 0, 0]) }
}

pub unsafe fn recv(fd: c_int, buf: *mut u8, len: usize, flags: c_int) -> isize {
    let args = [fd as usize, buf as usize, len, flags as usize, 0, 0];
    // SAFETY: the caller's buffer of `len`; no address wanted.
    unsafe { syscall(nr::RECVFROM, args) }
}

pub unsafe fn send(fd: c_int, buf: *const u8, len: usize, flags: c_int) -> isize {
    let args = [fd as usize, buf as usize, len, flags as usize, 0, 0];
    // SAFETY: the caller's buffer of `len`; a connected socket.
    unsafe { syscall(nr::SENDTO, args) }
}

pub fn close_from(first: u32) {
    // SAFETY: close_range on this process's own table.
    unsafe {
        syscall(
            nr::CLOSE_RANGE,
            [first as usize, u32::MAX as usize, 0, 0, 0, 0],
        )
    };
}

pub unsafe fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: duplicating a descriptor.
    int(unsafe { syscall(nr::DUP2, [old as usize, new as usize, 0, 0, 0, 0]) })
}

pub unsafe fn open(path: *const c_char, flags: c_int) -> c_int {
    let args = [AT_FDCWD as usize, path as usize, flags as usize, 0, 0, 0];
    // SAFETY: a NUL-terminated path of the caller's.
    int(unsafe { syscall(nr::OPENAT, args) })
}

pub unsafe fn kill(pid: c_int, sig: c_int) -> c_int {
    // SAFETY: sending a signal.
    int(unsafe { syscall(nr::KILL, [pid as usize, sig as usize, 0, 0, 0, 0]) })
}

pub unsafe fn setpgid(pid: c_int, group: c_int) -> c_int {
    // SAFETY: moving a process to a group.
    int(unsafe { syscall(nr::SETPGID, [pid as usize, group as usize, 0, 0, 0, 0]) })
}

pub unsafe fn prctl(option: c_int, arg: *const c_char) -> c_int {
    // SAFETY: prctl with one pointer argument of the caller's.
    int(unsafe { syscall(nr::PRCTL, [option as usize, arg as usize, 0, 0, 0, 0]) })
}

pub unsafe fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int {
    let args = [pid as usize, status as usize, options as usize, 0, 0, 0];
    // SAFETY: wait4 into the caller's status, no usage wanted.
    int(unsafe { syscall(nr::WAIT4, args) })
}

pub unsafe fn clock_gettime(clock: c_int, ts: *mut timespec) -> c_int {
    // SAFETY: the caller's timespec.
    int(unsafe { syscall(nr::CLOCK_GETTIME, [clock as usize, ts as usize, 0, 0, 0, 0]) })
}

pub unsafe fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let args = [path as usize, argv as usize, envp as usize, 0, 0, 0];
    // SAFETY: NUL-terminated path and NULL-terminated lists of the caller's.
    int(unsafe { syscall(nr::EXECVE, args) })
}

/// A fork (`clone` with nothing shared): 0 in the child, its pid, or < 0.
pub unsafe fn fork() -> c_int {
    // SAFETY: a child with a copy of everything, on its own copy of the stack.
    int(unsafe { syscall(nr::CLONE, [SIGCHLD as usize, 0, 0, 0, 0, 0]) })
}

pub unsafe fn exit(code: c_int) -> ! {
    // SAFETY: exit_group ends the process: it does not return.
    unsafe {
        asm!(
            "syscall",
            in("rax") nr::EXIT_GROUP,
            in("rdi") code as usize,
            options(noreturn, nostack),
        )
    }
}

pub fn WIFSIGNALED(status: c_int) -> bool {
    ((status & 0x7f) + 1) as i8 >= 2
}

pub fn WTERMSIG(status: c_int) -> c_int {
    status & 0x7f
}

pub fn WEXITSTATUS(status: c_int) -> c_int {
    (status >> 8) & 0xff
}
