//! The init executable: what each sandbox's init executes (from a sealed memory file the
//! zygote makes, see `init_exe`), so that an idle instance's init is a few KiB of its own
//! instead of a clone of the zygote (whose page tables and copied heap and stack pages
//! cost ~130 KiB per instance, docs/density.md).
//!
//! `skiff-init APP PROBE_FD MASK` (decimal): serves as the init of the app (pid APP, the
//! leader of its own group) with the probe socket PROBE_FD (-1: none), running probes
//! with the signal mask MASK (bit N-1: signal N), in the app's environment. The loop is
//! the crate's `init` module, compiled here against raw system calls (`sys`).
//!
//! Built by the crate's build script with rustc alone: no standard library, no libc, no
//! start files, a static executable of a few KiB that nothing relocates.
#![no_std]
#![no_main]
#![allow(dead_code)]

#[path = "../src/init.rs"]
mod init;
#[path = "sys.rs"]
mod init_sys;
#[path = "../src/probe_wire.rs"]
mod probe_wire;

use init_sys::c_char;

// The kernel starts the process here with the stack holding argc, argv[], NULL, envp[].
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call start",
    "ud2",
);

/// # Safety
/// Called once, by `_start`, with the stack the kernel set up.
#[unsafe(no_mangle)]
unsafe extern "C" fn start(stack: *const usize) -> ! {
    // SAFETY: the System V layout of the initial stack: argc, then argc pointers and a
    // NULL, then the environment.
    unsafe {
        let argc = *stack;
        let argv = stack.add(1).cast::<*const c_char>();
        let envp = argv.add(argc + 1);
        let arg = |i: usize| {
            if i < argc {
                init::parse_decimal(c_bytes(*argv.add(i)))
            } else {
                None
            }
        };
        let (Some(app), Some(probe_fd), Some(mask)) = (arg(1), arg(2), arg(3)) else {
            init_sys::exit(127)
        };
        let before = init_sys::sigset_t(mask as u64);
        init::serve(app as i32, probe_fd as i32, envp, before)
    }
}

/// The bytes of a NUL-terminated string.
///
/// # Safety
/// `s` points at a NUL-terminated string that lives as long as the process.
unsafe fn c_bytes(s: *const c_char) -> &'static [u8] {
    let mut len = 0;
    // SAFETY: as the caller promises.
    unsafe {
        // Volatile: a plain loop would be turned into a call to strlen, which is not here.
        while core::ptr::read_volatile(s.add(len)) != 0 {
            len += 1;
        }
        core::slice::from_raw_parts(s.cast(), len)
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: ending the process (the init's end takes the app's namespace with it).
    unsafe { init_sys::exit(127) }
}

/// The precompiled `core` names an unwinding personality in its unwind tables; nothing
/// unwinds here (panics abort through `panic`), so it is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

// The compiler lowers copies and fills to these; without libc they are ours. Written a
// byte at a time through volatile accesses, which the compiler cannot turn back into a
// call to themselves.

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dst: *mut u8, byte: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's `n` bytes at `dst`.
        unsafe { core::ptr::write_volatile(dst.add(i), byte as u8) };
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's `n` bytes at each, not overlapping.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) {
        // SAFETY: forwards, each byte is read before anything overwrites it.
        return unsafe { memcpy(dst, src, n) };
    }
    for i in (0..n).rev() {
        // SAFETY: the caller's `n` bytes at each; backwards, as `dst` is above `src`.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's `n` bytes at each.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as memcmp.
    unsafe { memcmp(a, b, n) }
}
