//! The instance's writable directories besides its root's upper layer: `/dev`, `/tmp`,
//! `/dev/shm`, the base of its cgroup view, and the empty directory that masks kernel
//! interfaces. All are directories of the sandbox's scratch directory, which holds the
//! upper layer too, made before `pivot_root` and attached after it as bind mounts.
//!
//! Why not a tmpfs each, as runc and crun do: every mounted file system is a superblock,
//! and every superblock registers a shrinker that every memory cgroup on the host keeps
//! a slot for (1 KiB per 64 shrinkers, in each cgroup). A sandbox with a dozen file
//! systems made each instance's cgroup cost ~320 KiB at a thousand instances and would
//! grow with the square of their number (bench/density; `docs/density.md`). Binds add
//! no superblock. The scratch directory itself is a directory of one tmpfs shared by all
//! sandboxes (`shared_scratch`; a tmpfs of its own on older kernels), and so is `/sys`
//! (the zygote's); what the sandbox mounts fresh is what must be its own: the overlay
//! root and `/proc` (its PID namespace); the kernel adds an mqueue file system per IPC
//! namespace.
//!
//! It runs in the cloned child: raw system calls on static names only, no allocation.
#![allow(unsafe_code)]

use libc::c_int;
use std::ffi::CStr;

/// Directories of kernel interfaces hidden under an empty, read-only directory.
pub(crate) const MASKED_DIRS: [&CStr; 4] = [
    c"/proc/acpi",
    c"/proc/scsi",
    c"/sys/firmware",
    c"/sys/kernel/debug",
];

/// The harmless character devices an app expects (path in `dev`, major, minor).
const DEVICES: [(&CStr, u32, u32); 6] = [
    (c"null", 1, 3),
    (c"zero", 1, 5),
    (c"full", 1, 7),
    (c"random", 1, 8),
    (c"urandom", 1, 9),
    (c"tty", 5, 0),
];

/// The usual links of `/dev` (target, link in `dev`).
const LINKS: [(&CStr, &CStr); 4] = [
    (c"/proc/self/fd", c"fd"),
    (c"/proc/self/fd/0", c"stdin"),
    (c"/proc/self/fd/1", c"stdout"),
    (c"/proc/self/fd/2", c"stderr"),
];

/// Detached bind mounts of the scratch directories, to attach after `pivot_root`; -1
/// where none was taken.
pub(crate) struct ScratchTrees {
    pub dev: c_int,
    pub tmp: c_int,
    pub cgroup: c_int,
    /// One per entry of [`MASKED_DIRS`].
    pub empty: [c_int; MASKED_DIRS.len()],
}

/// `open_tree(2)`'s flag for a detached copy.
const OPEN_TREE_CLONE: c_int = 1;
/// `move_mount(2)`'s flag: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: c_int = 0x4;

/// A detached bind mount of `path` (relative to the working directory), or -1.
///
/// # Safety
/// Raw system call on a NUL-terminated path; returns a new descriptor.
pub(crate) unsafe fn clone_tree(path: &CStr) -> c_int {
    // SAFETY: see above.
    unsafe { open_tree_clone(libc::AT_FDCWD, path, 0) }
}

/// A detached copy of the mount `tree` (itself a descriptor of a mount, attached or
/// not), or -1.
///
/// # Safety
/// Raw system call on a descriptor this process holds; returns a new descriptor.
pub(crate) unsafe fn clone_tree_of(tree: c_int) -> c_int {
    // SAFETY: see above.
    unsafe { open_tree_clone(tree, c"", libc::AT_EMPTY_PATH) }
}

/// `open_tree(dir, path, OPEN_TREE_CLONE | O_CLOEXEC | flags)`.
unsafe fn open_tree_clone(dir: c_int, path: &CStr, flags: c_int) -> c_int {
    // SAFETY: a NUL-terminated path that outlives the call; the kernel returns a new
    // descriptor or -1.
    unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir,
            path.as_ptr(),
            (OPEN_TREE_CLONE | libc::O_CLOEXEC | flags) as libc::c_uint,
        ) as c_int
    }
}

/// Attaches the detached mount `tree` at `target` and closes it; the call's result.
///
/// # Safety
/// Raw system calls on a descriptor this process owns and a NUL-terminated path.
pub(crate) unsafe fn attach(tree: c_int, target: &CStr) -> c_int {
    // SAFETY: see above.
    unsafe {
        let rc = libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        ) as c_int;
        let errno = *libc::__errno_location();
        libc::close(tree);
        *libc::__errno_location() = errno;
        rc
    }
}

/// Makes the directories in the scratch tmpfs (the working directory) and takes a
/// detached bind mount of each; `None` when a call failed (`errno` says why).
///
/// # Safety
/// Only in the cloned child, with the scratch tmpfs as the working directory.
pub(crate) unsafe fn make(view_base: bool) -> Option<ScratchTrees> {
    let ok = |rc: c_int| (rc >= 0).then_some(rc);
    // SAFETY: mkdir, mknod, symlink, chdir and open_tree on static names relative to the
    // working directory, which is the fresh scratch tmpfs (no symlink in it yet).
    unsafe {
        ok(libc::mkdir(c"tmp".as_ptr(), 0o1777))?;
        ok(libc::mkdir(c"empty".as_ptr(), 0o555))?;
        ok(libc::mkdir(c"dev".as_ptr(), 0o755))?;
        ok(libc::chdir(c"dev".as_ptr()))?;
        for (name, major, minor) in DEVICES {
            let dev = libc::makedev(major, minor);
            ok(libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o666, dev))?;
        }
        for (target, link) in LINKS {
            ok(libc::symlink(target.as_ptr(), link.as_ptr()))?;
        }
        ok(libc::mkdir(c"shm".as_ptr(), 0o1777))?;
        ok(libc::chdir(c"..".as_ptr()))?;
        let mut trees = ScratchTrees {
            dev: ok(clone_tree(c"dev"))?,
            tmp: ok(clone_tree(c"tmp"))?,
            cgroup: -1,
            empty: [-1; MASKED_DIRS.len()],
        };
        if view_base {
            ok(libc::mkdir(c"cgroup".as_ptr(), 0o755))?;
            trees.cgroup = ok(clone_tree(c"cgroup"))?;
        }
        for fd in &mut trees.empty {
            *fd = ok(clone_tree(c"empty"))?;
        }
        Some(trees)
    }
}
