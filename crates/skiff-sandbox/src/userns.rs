//! User namespaces for instances: each gets one whose ids 0–65535 are an unprivileged
//! range of host ids, so root inside is a uid outside that owns nothing of the host's.
//! A range belongs to an instance's network slot (unique among live instances), and the
//! namespace of each range is made once and kept as a descriptor: an instance joins it
//! with `setns` just before it drops privileges, after every mount is made, so making an
//! instance costs no extra round trip. The image's layers are shown to it through
//! idmapped mounts (host 0 appears as the range's first id), which keeps the layers
//! shared by every instance and every range.
//!
//! This module must not pick ranges for services; it makes namespaces for the ranges it
//! is asked for, and checks that the kernel can do all of it.

#![allow(unsafe_code)]

use crate::child_stack::{block_every_signal, ChildStack};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Ids per instance: 0–65535 inside.
pub const RANGE: u32 = 65536;
/// The first host id given to instances: 2^29, inside the span systemd leaves to
/// containers (524288–1879048191) and below 2^31, which some tools take as negative.
pub const BASE: u32 = 1 << 29;
/// Ranges there are room for below 2^31: one per slot of a /16.
pub const RANGES: u32 = 1 << 14;

/// The first host id of range `index` (taken modulo [`RANGES`]).
pub fn host_base(index: u32) -> u32 {
    BASE + (index % RANGES) * RANGE
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;

/// Makes the detached mount `fd` show ids through `userns`'s mapping.
///
/// # Safety
/// Raw system call on descriptors the caller owns; allocates nothing, so the sandbox's
/// child may call it.
pub(crate) unsafe fn idmap(fd: RawFd, userns: RawFd) -> libc::c_int {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns as u64,
    };
    // SAFETY: the path is a static empty string, `attr` lives for the call.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as libc::c_int
    }
}

/// A new user namespace mapping ids 0–65535 to host ids `base`… (groups too), as a
/// descriptor that keeps it alive.
///
/// A process is made in the namespace to write its maps and open it, sharing the
/// daemon's memory and descriptor table (`CLONE_VM | CLONE_FILES`) on a stack of its
/// own, and killed once it is open. A fork-style copy of a daemon with ten thousand
/// instances copied (and write-protected) hundreds of megabytes of page tables and
/// copied, then closed, thousands of descriptors for each namespace: ~20 ms, and every
/// page the daemon wrote next took a copy-on-write fault.
pub fn create(base: u32) -> io::Result<OwnedFd> {
    let mut stack = ChildStack::<HOLDER_STACK>::new();
    let pid = start_holder(&mut stack);
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let map = format!("0 {base} {RANGE}\n");
    let made = std::fs::write(format!("/proc/{pid}/uid_map"), &map)
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), &map))
        .and_then(|()| std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from));
    let mut status = 0;
    // SAFETY: ending and reaping the child this function made. Only then may `stack` go.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, libc::__WALL);
    }
    made
}

/// The size of the kernel's signal set (64 signals), which `rt_sigsuspend` is told.
const KERNEL_SIGSET_BYTES: usize = 8;

/// The holder's stack: it makes three system calls.
const HOLDER_STACK: usize = 16 * 1024;

/// Starts the holder in a new user namespace, sharing this memory and descriptor table,
/// running on `stack`; its pid, or -1 with `errno` set. The caller must reap it before
/// `stack` goes.
fn start_holder(stack: &mut ChildStack<HOLDER_STACK>) -> libc::pid_t {
    // Every signal is blocked across the clone, so the holder starts with all blocked:
    // no handler of the daemon's ever runs on its stack in this memory (SIGKILL still
    // ends it).
    let before = block_every_signal();
    // SAFETY: the holder's entry makes raw system calls that touch no memory but its own
    // stack; the mask call restores this thread's own.
    unsafe {
        let pid = libc::clone(
            holder_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_NEWUSER | libc::SIGCHLD,
            libc::getpid() as usize as *mut libc::c_void,
        );
        let clone_errno = *libc::__errno_location();
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        *libc::__errno_location() = clone_errno;
        pid
    }
}

/// The holder: keeps its namespace alive until it is killed, or its creator dies (it
/// shares the daemon's descriptors, listening sockets too: it must not outlive it).
extern "C" fn holder_entry(daemon: *mut libc::c_void) -> libc::c_int {
    // SAFETY: raw system calls (libc's `syscall` sets `errno`, the creating thread's,
    // only when one fails, and none can: valid arguments, every signal blocked). A
    // daemon gone before the death signal was asked for shows as another parent.
    unsafe {
        libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::syscall(libc::SYS_getppid) != daemon as usize as libc::c_long {
            return 0;
        }
        // Waits for a signal outside the mask, of which there is none but SIGKILL.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            libc::syscall(
                libc::SYS_rt_sigsuspend,
                &all as *const libc::sigset_t,
                KERNEL_SIGSET_BYTES,
            );
        }
    }
}

/// Opens a detached copy of the directory `dir` (a mount of its own) shown through
/// `userns`'s mapping.
fn idmapped_tree(dir: &Path, userns: &OwnedFd) -> io::Result<OwnedFd> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: open_tree on a path that lives for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree just returned it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // SAFETY: both descriptors are owned here.
    if unsafe { idmap(tree.as_raw_fd(), userns.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Whether instances can have user namespaces here: one can be made, and the layers in
/// `layers_dir` can be shown through it (an idmapped mount of their file system).
pub fn check_support(layers_dir: &Path) -> Result<(), String> {
    let userns = create(BASE).map_err(|e| format!("making a user namespace: {e}"))?;
    idmapped_tree(layers_dir, &userns).map(drop).map_err(|e| {
        format!(
            "an idmapped mount of {} (its file system or this kernel cannot): {e}",
            layers_dir.display()
        )
    })
}

/// User namespaces kept after their last instance ended. A live instance keeps its own
/// alive; a kept one saves the next instance of its range the round trip of making it.
/// Bounded, because each is one of the daemon's descriptors: at ten thousand instances
/// a descriptor per range would take half of a 20,000 limit.
pub const KEPT: usize = 256;

/// The user namespace of each range, made on first use; the [`KEPT`] used last are kept.
#[derive(Default)]
pub struct UserNamespaces {
    by_base: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_base: HashMap<u32, (Arc<OwnedFd>, u64)>,
    uses: u64,
}

impl UserNamespaces {
    /// The namespace whose ids start at host id `base`.
    pub fn get(&self, base: u32) -> io::Result<Arc<OwnedFd>> {
        let mut kept = self.by_base.lock().unwrap_or_else(|p| p.into_inner());
        kept.uses += 1;
        let now = kept.uses;
        if let Some((fd, used)) = kept.by_base.get_mut(&base) {
            *used = now;
            return Ok(Arc::clone(fd));
        }
        let fd = Arc::new(create(base)?);
        if kept.by_base.len() >= KEPT {
            let oldest = kept.by_base.iter().min_by_key(|(_, (_, used))| *used);
            if let Some(&oldest) = oldest.map(|(base, _)| base) {
                kept.by_base.remove(&oldest);
            }
        }
        kept.by_base.insert(base, (Arc::clone(&fd), now));
        Ok(fd)
    }

    /// How many namespaces are kept now.
    pub fn kept(&self) -> usize {
        let kept = self.by_base.lock().unwrap_or_else(|p| p.into_inner());
        kept.by_base.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn ranges_are_disjoint_and_below_2_31() {
        assert_eq!(host_base(0), BASE);
        assert_eq!(host_base(1), BASE + RANGE);
        assert_eq!(host_base(RANGES), BASE);
        assert!(u64::from(host_base(RANGES - 1)) + u64::from(RANGE) <= 1 << 31);
    }

    #[test]
    fn a_namespace_maps_its_range_and_is_kept_per_range() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let all = UserNamespaces::default();
        let a = all.get(host_base(7)).unwrap();
        let again = all.get(host_base(7)).unwrap();
        assert_eq!(a.as_raw_fd(), again.as_raw_fd());
        let b = all.get(host_base(8)).unwrap();
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
        // The namespace lives on without its first process.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", a.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        check_support(Path::new("/tmp")).unwrap();
    }

    fn minor_faults_of_this_thread() -> i64 {
        // SAFETY: getrusage fills the struct it is given.
        unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
            usage.ru_minflt
        }
    }

    /// Making a namespace copies nothing of the maker's memory: its pages stay writable
    /// (a fork-style copy write-protects every one, and each write after it faults).
    #[test]
    fn making_a_namespace_leaves_the_makers_memory_writable() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        const PAGES: usize = 2048;
        let mut memory = vec![1u8; PAGES * 4096];
        let ns = create(host_base(11)).unwrap();
        let before = minor_faults_of_this_thread();
        for page in memory.chunks_mut(4096) {
            page[0] = 2;
        }
        let faults = minor_faults_of_this_thread() - before;
        assert!(
            faults < PAGES as i64 / 8,
            "{faults} faults writing {PAGES} pages after making a namespace"
        );
        let link = std::fs::read_link(format!("/proc/self/fd/{}", ns.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
        assert_eq!(std::hint::black_box(&memory)[4096], 2);
    }

    #[test]
    fn only_the_namespaces_used_last_are_kept() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let all = UserNamespaces::default();
        let made: Vec<_> = (0..KEPT as u32)
            .map(|i| all.get(host_base(i)).unwrap())
            .collect();
        // Range 0 used again: range 1 is now the least recently used.
        all.get(host_base(0)).unwrap();
        all.get(host_base(KEPT as u32)).unwrap();
        assert_eq!(all.kept(), KEPT);
        assert!(Arc::ptr_eq(&made[0], &all.get(host_base(0)).unwrap()));
        assert!(Arc::ptr_eq(&made[2], &all.get(host_base(2)).unwrap()));
        let one = all.get(host_base(1)).unwrap();
        assert!(
            !Arc::ptr_eq(&made[1], &one),
            "range 1 was let go and made anew"
        );
        assert_eq!(all.kept(), KEPT);
    }
}
