//! What runs in the new process between `clone` and `execve`. The parent may be
//! multi-threaded, so this code must not allocate, lock, or touch anything but the
//! prepared [`ChildPlan`] and raw system calls: every string here was built before the
//! clone. On failure it writes `(step, errno)` to the error pipe and exits; on success
//! `execve` closes that pipe (it is close-on-exec) and the parent reads EOF.
//!
//! Order matters: the image root is pivoted to *before* `/proc`, `/dev`, `/sys` and `/tmp`
//! are mounted, so a symlink planted by the image can only redirect those mounts inside
//! the sandbox, never onto the host.

#![allow(unsafe_code)]

use libc::{c_char, c_int, c_ulong, c_void};
use std::ffi::{CStr, CString};

use crate::scratch;

/// Steps of the child setup, reported to the parent by number on failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    PrivateMounts = 1,
    Scratch,
    Overlay,
    PivotRoot,
    Proc,
    Dev,
    Tmp,
    MaskPaths,
    ReadOnlyRoot,
    WaitParent,
    CgroupNamespace,
    Network,
    Hostname,
    Stdio,
    Workdir,
    NoNewPrivs,
    DropBounding,
    SetIds,
    Capabilities,
    Seccomp,
    Exec,
    SecretMounts,
    IdmapLayers,
    UserNamespace,
    Scheduling,
}

impl Step {
    /// Human wording of the step, for error messages.
    pub fn describe(n: u32) -> &'static str {
        const NAMES: [&str; 26] = [
            "unknown step",
            "making mounts private",
            "mounting the scratch tmpfs",
            "mounting the overlay root filesystem",
            "pivoting into the root filesystem",
            "mounting /proc",
            "setting up /dev",
            "mounting /tmp",
            "masking /proc and /sys paths",
            "making the root filesystem read-only",
            "waiting for the parent",
            "entering a new cgroup namespace",
            "configuring the network",
            "setting the hostname",
            "setting up stdin/stdout/stderr",
            "changing to the working directory",
            "setting no_new_privs",
            "dropping capabilities from the bounding set",
            "switching user and groups",
            "setting capabilities",
            "loading the seccomp filter",
            "executing the command",
            "attaching a secret's files",
            "showing the image's layers through the user namespace (an idmapped mount)",
            "entering the instance's user namespace",
            "setting the scheduling policy (SCHED_BATCH)",
        ];
        NAMES.get(n as usize).copied().unwrap_or("unknown step")
    }
}

/// Network settings for the child's side of its veth pair.
pub struct NetPlan {
    pub addr: [u8; 4],
    pub mask: [u8; 4],
    /// The default route's gateway (the host end), for a routed slot.
    pub gateway: Option<[u8; 4]>,
}

/// Most secret mounts one instance has (their descriptors are kept in a fixed array).
pub const MAX_SECRET_MOUNTS: usize = 8;

/// A secret's files to attach inside the sandbox.
pub struct SecretMountPlan {
    /// A detached mount (from `SecretFs`), inherited across the clone.
    pub fd: c_int,
    /// The directory it goes on, inside the new root.
    pub target: CString,
    /// `target` and each directory above it, outermost first, made if missing.
    pub dirs: Vec<CString>,
}

/// Everything the child needs, prepared by the parent.
pub struct ChildPlan {
    pub sync_fd: c_int,
    pub err_fd: c_int,
    pub stdout_fd: c_int,
    pub stderr_fd: c_int,
    /// The init's end of the exec-probe socket, or -1.
    pub probe_fd: c_int,
    pub scratch: CString,
    pub scratch_opts: CString,
    pub upper: CString,
    pub work: CString,
    pub merged: CString,
    pub layers_dir: CString,
    /// Relative to `layers_dir` without a user namespace, else to `scratch`, where
    /// `idmapped_layers` puts the layers.
    pub overlay_opts: CString,
    /// The user namespace to join before dropping privileges, or -1: host ids.
    pub userns_fd: c_int,
    /// The host id that is 0 in the user namespace (0 without one).
    pub id_base: u32,
    /// Each layer (its name in `layers_dir`) and where its idmapped mount goes.
    pub idmapped_layers: Vec<(CString, CString)>,
    /// Contents of `/etc/hosts` (localhost and the instance's own name).
    pub hosts: Vec<u8>,
    /// Contents of `/etc/resolv.conf`; empty: the image's file is left alone.
    pub resolv_conf: Vec<u8>,
    pub read_only: bool,
    pub hostname: CString,
    pub net: Option<NetPlan>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub keep_caps: u64,
    pub last_cap: u32,
    pub seccomp: Vec<libc::sock_filter>,
    /// Fork the app under a minimal init (see `init`).
    pub init: bool,
    /// The instance's view of its own cgroup at /sys/fs/cgroup.
    pub cgroups: crate::cgroupfs::CgroupView,
    pub cwd: CString,
    /// The command's arguments and environment; `argv` and `envp` point into them.
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    pub exec_paths: Vec<CString>,
    /// Secrets' files, at most [`MAX_SECRET_MOUNTS`].
    pub secret_mounts: Vec<SecretMountPlan>,
    /// A detached bind of the sandbox's directory in the shared scratch tmpfs (see
    /// `shared_scratch`) to attach at `scratch`, or -1: the sandbox mounts a tmpfs there.
    pub scratch_tree: c_int,
    /// A detached sysfs shared by every sandbox (the zygote's, from an empty network
    /// namespace), or -1: the sandbox mounts its own.
    pub shared_sysfs: c_int,
    /// The init executable (the zygote's sealed memory file, see `init_exe`), or -1: the
    /// init runs in this process.
    pub init_exe: c_int,
}

const NULL: *const c_char = std::ptr::null();

impl ChildPlan {
    /// The plan with `argv` and `envp` pointing into its `args` and `env`, NULL-ended
    /// (the strings' buffers do not move with the plan).
    pub fn with_pointers(mut self) -> ChildPlan {
        let pointers = |list: &[CString]| {
            list.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(NULL))
                .collect()
        };
        self.argv = pointers(&self.args);
        self.envp = pointers(&self.env);
        self
    }

    /// The descriptors the plan names (the pipes, the probe socket, the user namespace,
    /// the secrets' mounts), in the order [`Self::descriptors_mut`] gives them.
    pub fn descriptors(&self) -> Vec<c_int> {
        let mut fds = vec![
            self.sync_fd,
            self.err_fd,
            self.stdout_fd,
            self.stderr_fd,
            self.probe_fd,
            self.userns_fd,
            self.scratch_tree,
        ];
        fds.extend(self.secret_mounts.iter().map(|m| m.fd));
        fds.retain(|fd| *fd >= 0);
        fds
    }

    /// The places of [`Self::descriptors`], to renumber them in another process.
    pub fn descriptors_mut(&mut self) -> Vec<&mut c_int> {
        let mut fds = vec![
            &mut self.sync_fd,
            &mut self.err_fd,
            &mut self.stdout_fd,
            &mut self.stderr_fd,
            &mut self.probe_fd,
            &mut self.userns_fd,
            &mut self.scratch_tree,
        ];
        fds.extend(self.secret_mounts.iter_mut().map(|m| &mut m.fd));
        fds.retain(|fd| **fd >= 0);
        fds
    }
}

fn fail(plan: &ChildPlan, step: Step, errno: c_int) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writing a stack buffer to our own pipe, then exiting without running any
    // destructors or atexit handlers (which could allocate or take locks).
    unsafe {
        libc::write(plan.err_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(plan: &ChildPlan, step: Step, rc: c_int) {
    if rc < 0 {
        fail(plan, step, errno());
    }
}

fn mount(src: &CStr, target: &CStr, fstype: &CStr, flags: c_ulong, data: &CStr) -> c_int {
    let data_ptr: *const c_void = if data.is_empty() {
        std::ptr::null()
    } else {
        data.as_ptr().cast()
    };
    let fstype_ptr = if fstype.is_empty() {
        NULL
    } else {
        fstype.as_ptr()
    };
    // SAFETY: all pointers are NUL-terminated strings that outlive the call (or null).
    unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype_ptr, flags, data_ptr) }
}

/// Makes sure `path` is a real directory (creating it), refusing a symlink or file there.
fn ensure_dir(path: &CStr) -> c_int {
    // SAFETY: NUL-terminated path; `st` is a plain struct the kernel fills.
    unsafe {
        if libc::mkdir(path.as_ptr(), 0o755) == 0 {
            return 0;
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::lstat(path.as_ptr(), &mut st) < 0 {
            return -1;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            *libc::__errno_location() = libc::ENOTDIR;
            return -1;
        }
        0
    }
}

const MS_PRIVATE_REC: c_ulong = libc::MS_REC | libc::MS_PRIVATE;

/// Remount flags that make a bind mount read-only, without set-id, devices or exec.
const READ_ONLY_BIND: c_ulong = libc::MS_REMOUNT
    | libc::MS_BIND
    | libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC;

/// Closes every descriptor the clone copied from the parent but the plan's own pipes.
/// A prepared sandbox may wait a long time before exec; meanwhile it must not hold the
/// parent's other pipes (another instance's exec-report or log pipe would never see
/// EOF), client sockets (they would never close) or listeners.
///
/// # Safety
/// Raw system calls only; called in the child before anything else uses descriptors.
unsafe fn close_inherited(plan: &ChildPlan) {
    // Without a probe socket, keeping sync_fd twice changes nothing.
    let probe = if plan.probe_fd >= 0 {
        plan.probe_fd
    } else {
        plan.sync_fd
    };
    let mut keep = [-1; 9 + MAX_SECRET_MOUNTS];
    keep[..9].copy_from_slice(&[
        plan.sync_fd,
        plan.err_fd,
        plan.stdout_fd,
        plan.stderr_fd,
        probe,
        plan.userns_fd,
        plan.shared_sysfs,
        plan.scratch_tree,
        plan.init_exe,
    ]);
    for (slot, m) in keep[9..].iter_mut().zip(&plan.secret_mounts) {
        *slot = m.fd;
    }
    // Insertion sort: no allocation allowed here.
    for i in 1..keep.len() {
        let mut j = i;
        while j > 0 && keep[j - 1] > keep[j] {
            keep.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut next: u32 = 0;
    for fd in keep.into_iter().filter(|&fd| fd >= 0) {
        let fd = fd as u32;
        if fd > next {
            // SAFETY: close_range on descriptors this process owns.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0u32) };
        }
        next = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) };
}

/// Gives every signal its default action and unblocks them all: an ignored signal stays
/// ignored across `execve`, and the daemon (as every Rust program) ignores SIGPIPE, which
/// the app would otherwise inherit (a shell pipeline's writer would not end when its
/// reader did).
///
/// # Safety
/// Raw system calls on local data.
unsafe fn default_signals() {
    // The kernel's struct sigaction: handler, flags, restorer, mask.
    let default: [u64; 4] = [libc::SIG_DFL as u64, 0, 0, 0];
    // SAFETY: rt_sigaction and sigprocmask with structs on this stack. The raw call, not
    // glibc's wrapper, which refuses the real-time signals it keeps for itself (32, 33).
    unsafe {
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Clones this process with `flags` (fork-style: the clone goes on on a copy of this
/// stack) and runs [`run`] on `plan` in the clone; the clone's pid. `plan` has its
/// pointers set ([`ChildPlan::with_pointers`]).
pub(crate) fn clone_and_run(flags: u64, plan: &ChildPlan) -> std::io::Result<i32> {
    // SAFETY: a fork-style clone (no new stack). The clone only runs `run`, which makes
    // raw system calls on `plan`, allocates nothing (another thread of this process may
    // have held the allocator's lock at the clone) and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: this is the freshly cloned child, and nothing else has run in it.
        unsafe { run(plan) };
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// Puts the sandbox (init, the app and all they start) in `SCHED_BATCH`: the same CPU
/// share as `SCHED_OTHER`, but a thread that wakes up does not preempt the one running.
/// The router hands an instance its requests: woken by each, the app would preempt the
/// router thread on the spot (bench/proxy-hop: ~0.7 involuntary switches per request),
/// and the requests the router had read behind it would wait; in batch the router ends
/// its round of events first. An app may set `SCHED_OTHER` for itself again (lowering is
/// unprivileged, and the seccomp filter allows it). docs/services.md has the figures.
fn batch_scheduling(plan: &ChildPlan) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on this process with a struct on this stack.
    let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    check(plan, Step::Scheduling, set);
}

/// Runs in the cloned child; never returns.
///
/// # Safety
///
/// Only in a freshly cloned child (a fork-style `clone` of a multi-threaded process),
/// before anything else runs in it: it changes the process's mounts, credentials,
/// capabilities and descriptors with raw system calls, allocates nothing (the parent's
/// other threads may have held the allocator's lock at the clone), and ends in `execve`
/// or `_exit`.
pub unsafe fn run(plan: &ChildPlan) -> ! {
    // SAFETY: the caller runs this only in a fresh clone (see above); every call below is
    // a raw system call on data prepared before the clone; nothing allocates, and
    // failures end the process through `fail`.
    unsafe {
        libc::umask(0);
        libc::prctl(libc::PR_SET_NAME, c"skiff-sandbox".as_ptr());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        close_inherited(plan);
        default_signals();

        check(
            plan,
            Step::PrivateMounts,
            mount(c"", c"/", c"", MS_PRIVATE_REC, c""),
        );
        let scratch_mounted = if plan.scratch_tree >= 0 {
            scratch::attach(plan.scratch_tree, &plan.scratch)
        } else {
            mount(
                c"tmpfs",
                &plan.scratch,
                c"tmpfs",
                libc::MS_NOSUID | libc::MS_NODEV,
                &plan.scratch_opts,
            )
        };
        check(plan, Step::Scratch, scratch_mounted);
        for dir in [&plan.upper, &plan.work, &plan.merged] {
            check(plan, Step::Scratch, libc::mkdir(dir.as_ptr(), 0o755));
        }
        check(plan, Step::Scratch, libc::chdir(plan.scratch.as_ptr()));
        let Some(trees) = scratch::make(plan.cgroups.base_tmpfs) else {
            fail(plan, Step::Scratch, errno());
        };
        // lowerdir entries are relative (to the snapshots directory, or to the scratch
        // directory that holds their idmapped mounts), to fit more layers in the one
        // page the mount options may take.
        if plan.userns_fd >= 0 {
            idmap_layers(plan);
            check(plan, Step::Overlay, libc::chdir(plan.scratch.as_ptr()));
        } else {
            check(plan, Step::Overlay, libc::chdir(plan.layers_dir.as_ptr()));
        }
        check(
            plan,
            Step::Overlay,
            mount(c"overlay", &plan.merged, c"overlay", 0, &plan.overlay_opts),
        );

        let cgroup_trees = clone_cgroup_dirs(plan);
        check(plan, Step::PivotRoot, libc::chdir(plan.merged.as_ptr()));
        check(
            plan,
            Step::PivotRoot,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as c_int,
        );
        check(
            plan,
            Step::PivotRoot,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        );
        check(plan, Step::PivotRoot, libc::chdir(c"/".as_ptr()));

        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        check(plan, Step::Proc, ensure_dir(c"/proc"));
        check(
            plan,
            Step::Proc,
            mount(c"proc", c"/proc", c"proc", nosuid_nodev_noexec, c""),
        );
        attach_dev(plan, trees.dev);
        check(plan, Step::Tmp, ensure_dir(c"/tmp"));
        check(plan, Step::Tmp, scratch::attach(trees.tmp, c"/tmp"));
        if ensure_dir(c"/sys") == 0 {
            mount_sys(plan.shared_sysfs);
        }
        allow_low_ports();
        mask_paths(plan, &trees.empty);
        attach_secrets(plan);
        write_etc(plan);
        if plan.read_only {
            check(
                plan,
                Step::ReadOnlyRoot,
                mount(
                    c"",
                    c"/",
                    c"",
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    c"",
                ),
            );
        }

        // The parent writes one byte once this process is in its cgroup (the end of
        // the preparation), and one more to exec (the launch).
        let mut go = [0u8; 1];
        if libc::read(plan.sync_fd, go.as_mut_ptr().cast(), 1) != 1 {
            fail(plan, Step::WaitParent, libc::EPIPE);
        }
        // The veth exists now; configuring it here keeps it off the launch.
        configure_network(plan);
        check(
            plan,
            Step::CgroupNamespace,
            libc::unshare(libc::CLONE_NEWCGROUP),
        );
        mount_cgroup_view(plan, &cgroup_trees, trees.cgroup);
        if libc::read(plan.sync_fd, go.as_mut_ptr().cast(), 1) != 1 {
            fail(plan, Step::WaitParent, libc::EPIPE);
        }
        libc::close(plan.sync_fd);
        check(
            plan,
            Step::Hostname,
            libc::sethostname(plan.hostname.as_ptr(), plan.hostname.as_bytes().len()),
        );
        libc::setsid();
        libc::umask(0o022);
        batch_scheduling(plan);

        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        check(plan, Step::Stdio, devnull);
        check(plan, Step::Stdio, libc::dup2(devnull, 0));
        check(plan, Step::Stdio, libc::dup2(plan.stdout_fd, 1));
        check(plan, Step::Stdio, libc::dup2(plan.stderr_fd, 2));
        if plan.uid != 0 || plan.userns_fd >= 0 {
            // A non-root app opens /dev/stdout and /dev/stderr (nginx as www-data does):
            // they reopen the pipes through /proc/self/fd, which checks the pipes' owner.
            // runc gives them to the container's user too (as host ids: this is before
            // the user namespace, and root in it is no one to a host-owned pipe).
            let (uid, gid) = (plan.id_base + plan.uid, plan.id_base + plan.gid);
            check(plan, Step::Stdio, libc::fchown(1, uid, gid));
            check(plan, Step::Stdio, libc::fchown(2, uid, gid));
        }
        // Whatever else the parent had open must not reach the application.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );

        if plan.userns_fd >= 0 {
            // Last, after every mount: the namespaces made at the clone stay the host
            // root's, so root in here has no say over its mounts or network devices.
            check(
                plan,
                Step::UserNamespace,
                libc::setns(plan.userns_fd, libc::CLONE_NEWUSER),
            );
            libc::close(plan.userns_fd);
        }
        drop_privileges(plan);
        check(plan, Step::Workdir, libc::chdir(plan.cwd.as_ptr()));
        let prog = libc::sock_fprog {
            len: plan.seccomp.len() as u16,
            filter: plan.seccomp.as_ptr() as *mut libc::sock_filter,
        };
        check(
            plan,
            Step::Seccomp,
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const _ as c_ulong,
            ),
        );

        if plan.init {
            crate::app_fork::fork_app(
                plan.err_fd,
                plan.probe_fd,
                plan.envp.as_ptr(),
                plan.init_exe,
                exec_app,
                std::ptr::from_ref(plan).cast(),
            );
        }
        exec_app(std::ptr::from_ref(plan).cast())
    }
}

/// Executes the app (the first of its paths that exists), or reports why not and exits.
///
/// # Safety
/// `plan` is a `ChildPlan` with its pointers set; raw system calls only.
unsafe fn exec_app(plan: *const c_void) -> ! {
    // SAFETY: as the caller promises; execve on the plan's NUL-terminated strings.
    unsafe {
        let plan = &*plan.cast::<ChildPlan>();
        let mut last = libc::ENOENT;
        for path in &plan.exec_paths {
            libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            let e = errno();
            if e != libc::ENOENT && e != libc::ENOTDIR {
                last = e;
            }
        }
        fail(plan, Step::Exec, last)
    }
}

/// Attaches each secret's files at its target inside the new root (resolved there, so
/// an image's symlinks cannot point it outside; a symlink on the way is refused) and
/// makes that mount read-only.
///
/// # Safety
/// Raw system calls on the plan's strings and inherited descriptors.
unsafe fn attach_secrets(plan: &ChildPlan) {
    for m in &plan.secret_mounts {
        for dir in &m.dirs {
            check(plan, Step::SecretMounts, ensure_dir(dir));
        }
        // SAFETY: `m.fd` is a detached mount the parent made, used no more after this
        // (`attach` closes it); the path is NUL-terminated.
        let rc = unsafe { scratch::attach(m.fd, &m.target) };
        check(plan, Step::SecretMounts, rc);
        check(
            plan,
            Step::SecretMounts,
            mount(c"", &m.target, c"", READ_ONLY_BIND, c""),
        );
    }
}

/// `/dev`: the scratch tmpfs's `dev` directory (see `scratch`), with its devices usable
/// (the scratch tmpfs itself is `nodev`), not executable.
unsafe fn attach_dev(plan: &ChildPlan, tree: c_int) {
    // SAFETY: raw calls on static NUL-terminated paths and a descriptor this process owns.
    unsafe {
        check(plan, Step::Dev, ensure_dir(c"/dev"));
        check(plan, Step::Dev, scratch::attach(tree, c"/dev"));
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
        check(plan, Step::Dev, mount(c"", c"/dev", c"", flags, c""));
    }
}

/// Gives the instance an `/etc/hosts` (so `localhost` and its own name resolve without
/// DNS) and `/etc/hostname`, as container runtimes do. Skipped where the image has no
/// `/etc` directory or put a symlink there: the file is a convenience, never followed.
unsafe fn write_etc(plan: &ChildPlan) {
    // SAFETY: raw calls on static paths and buffers owned by the plan.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::lstat(c"/etc".as_ptr(), &mut st) < 0 || st.st_mode & libc::S_IFMT != libc::S_IFDIR
        {
            return;
        }
        let name = plan.hostname.as_bytes();
        for (path, content) in [
            (c"/etc/hosts", plan.hosts.as_slice()),
            (c"/etc/hostname", name),
            (c"/etc/resolv.conf", plan.resolv_conf.as_slice()),
        ] {
            if path == c"/etc/resolv.conf" {
                if content.is_empty() {
                    continue;
                }
                // Images often link it to a resolver's runtime file (systemd's stub):
                // the link goes, in the instance's own upper layer, and a file replaces it.
                if libc::lstat(path.as_ptr(), &mut st) == 0
                    && st.st_mode & libc::S_IFMT == libc::S_IFLNK
                {
                    libc::unlink(path.as_ptr());
                }
            }
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                continue;
            }
            // Readable by the app's user whatever the daemon's umask was, and root's in
            // the user namespace (a file made here is the host root's otherwise).
            libc::fchmod(fd, 0o644);
            if plan.userns_fd >= 0 {
                libc::fchown(fd, plan.id_base, plan.id_base);
            }
            libc::write(fd, content.as_ptr().cast(), content.len());
            if path == c"/etc/hostname" {
                libc::write(fd, b"\n".as_ptr().cast(), 1);
            }
            libc::close(fd);
        }
    }
}

/// Puts an idmapped mount of each layer in the scratch directory, where the overlay's
/// lowerdir names them, and gives the upper layer's root to root in the namespace (the
/// overlay's root directory is the upper one's).
///
/// # Safety
/// Raw system calls on the plan's strings and descriptors.
unsafe fn idmap_layers(plan: &ChildPlan) {
    // SAFETY: raw calls on the plan's strings; each tree descriptor is closed here.
    unsafe {
        check(
            plan,
            Step::IdmapLayers,
            libc::chdir(plan.layers_dir.as_ptr()),
        );
        for (name, target) in &plan.idmapped_layers {
            let tree = scratch::clone_tree(name);
            check(plan, Step::IdmapLayers, tree);
            check(
                plan,
                Step::IdmapLayers,
                crate::userns::idmap(tree, plan.userns_fd),
            );
            check(plan, Step::IdmapLayers, libc::mkdir(target.as_ptr(), 0o700));
            check(plan, Step::IdmapLayers, scratch::attach(tree, target));
        }
        check(
            plan,
            Step::IdmapLayers,
            libc::chown(plan.upper.as_ptr(), plan.id_base, plan.id_base),
        );
    }
}

/// Detached copies of the instance's cgroup directories, taken while the host's tree is
/// still in view (before `pivot_root`); -1 where one could not be taken.
unsafe fn clone_cgroup_dirs(plan: &ChildPlan) -> [c_int; crate::cgroupfs::MAX_BINDS] {
    let mut trees = [-1; crate::cgroupfs::MAX_BINDS];
    for (tree, (source, _)) in trees.iter_mut().zip(&plan.cgroups.binds) {
        // SAFETY: open_tree on a path prepared before the clone; it returns a new fd.
        *tree = unsafe { scratch::clone_tree(source) };
    }
    trees
}

/// Shows the instance's own cgroup, read-only, at /sys/fs/cgroup (see `cgroupfs`), on
/// v1 in the scratch tmpfs's `cgroup` directory (`base`). Best effort: without a sysfs
/// to mount on, or where a directory could not be cloned, the app sees less; its limits
/// hold either way.
unsafe fn mount_cgroup_view(plan: &ChildPlan, trees: &[c_int], base: c_int) {
    let view = &plan.cgroups;
    // SAFETY: mount, mkdir, move_mount, symlink and close on strings prepared before the
    // clone and on the descriptors `clone_cgroup_dirs` opened.
    unsafe {
        let usable = if libc::access(c"/sys/fs/cgroup".as_ptr(), libc::F_OK) < 0 {
            if base >= 0 {
                libc::close(base);
            }
            false
        } else {
            !view.base_tmpfs || base >= 0 && scratch::attach(base, c"/sys/fs/cgroup") == 0
        };
        for (&tree, (_, target)) in trees.iter().zip(&view.binds) {
            if tree < 0 {
                continue;
            }
            if usable {
                if view.base_tmpfs {
                    libc::mkdir(target.as_ptr(), 0o555);
                }
                if scratch::attach(tree, target) == 0 {
                    mount(c"", target, c"", READ_ONLY_BIND, c"");
                }
            } else {
                libc::close(tree);
            }
        }
        if usable && view.base_tmpfs {
            for (link, to) in &view.links {
                libc::symlink(to.as_ptr(), link.as_ptr());
            }
            // A bind's own flags: the scratch tmpfs under it stays writable.
            mount(c"", c"/sys/fs/cgroup", c"", READ_ONLY_BIND, c"");
        }
    }
}

/// `/sys`, read-only: a copy of the shared sysfs when there is one (a sysfs mount is a
/// file system of its own, and each costs every memory cgroup a slot: docs/density.md),
/// else a sysfs of the sandbox's own. Best effort: not every host lets a network
/// namespace mount its own sysfs, and apps rarely need it.
unsafe fn mount_sys(shared: c_int) {
    // SAFETY: open_tree on a descriptor this process holds, mount on static strings.
    unsafe {
        if shared >= 0 {
            let tree = scratch::clone_tree_of(shared);
            libc::close(shared);
            if tree >= 0 && scratch::attach(tree, c"/sys") == 0 {
                mount(c"", c"/sys", c"", READ_ONLY_BIND, c"");
                return;
            }
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
        mount(c"sysfs", c"/sys", c"sysfs", flags, c"");
    }
}

/// Lets a non-root app bind ports below 1024 (80, as it would in Docker): the setting
/// belongs to the instance's own network namespace, so nothing outside it changes. A
/// kernel without it (before 4.11) keeps the default; the app then needs its own port.
unsafe fn allow_low_ports() {
    // SAFETY: open, write and close on a path and a buffer that live for the call.
    unsafe {
        let fd = libc::open(
            c"/proc/sys/net/ipv4/ip_unprivileged_port_start".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// Hides kernel interfaces that root in the sandbox could otherwise read or write
/// (`/proc/sysrq-trigger`, `/proc/sys`, `/proc/kcore` …), as Docker and crun do.
unsafe fn mask_paths(plan: &ChildPlan, empty: &[c_int; scratch::MASKED_DIRS.len()]) {
    const MASK_FILES: [&CStr; 5] = [
        c"/proc/kcore",
        c"/proc/keys",
        c"/proc/timer_list",
        c"/proc/sched_debug",
        c"/proc/latency_stats",
    ];
    const READ_ONLY: [&CStr; 5] = [
        c"/proc/bus",
        c"/proc/fs",
        c"/proc/irq",
        c"/proc/sys",
        c"/proc/sysrq-trigger",
    ];
    let absent = || matches!(errno(), libc::ENOENT);
    for p in MASK_FILES {
        if mount(c"/dev/null", p, c"", libc::MS_BIND, c"") < 0 && !absent() {
            fail(plan, Step::MaskPaths, errno());
        }
    }
    for (p, &tree) in scratch::MASKED_DIRS.into_iter().zip(empty) {
        // SAFETY: the descriptor is this process's; `attach` closes it.
        if unsafe { scratch::attach(tree, p) } < 0 {
            if absent() {
                continue;
            }
            fail(plan, Step::MaskPaths, errno());
        }
        check(
            plan,
            Step::MaskPaths,
            mount(c"", p, c"", READ_ONLY_BIND, c""),
        );
    }
    for p in READ_ONLY {
        if mount(p, p, c"", libc::MS_BIND | libc::MS_REC, c"") < 0 {
            if absent() {
                continue;
            }
            fail(plan, Step::MaskPaths, errno());
        }
        check(
            plan,
            Step::MaskPaths,
            mount(c"", p, c"", READ_ONLY_BIND, c""),
        );
    }
}

/// Brings up `lo`, and `eth0` with its address. `netlink::configure` allocates nothing
/// on its way to success (static names, stack structs), so the child may call it.
fn configure_network(plan: &ChildPlan) {
    let errno_of = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    if let Err(e) = crate::netlink::configure("lo", None) {
        fail(plan, Step::Network, errno_of(e));
    }
    if let Some(net) = &plan.net {
        let addr = (
            std::net::Ipv4Addr::from(net.addr),
            std::net::Ipv4Addr::from(net.mask),
        );
        if let Err(e) = crate::netlink::configure("eth0", Some(addr)) {
            fail(plan, Step::Network, errno_of(e));
        }
        if let Some(gateway) = net.gateway {
            if let Err(e) = crate::netlink::add_default_route(std::net::Ipv4Addr::from(gateway)) {
                fail(plan, Step::Network, errno_of(e));
            }
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

unsafe fn drop_privileges(plan: &ChildPlan) {
    // SAFETY: prctl/setres*id/capset with values prepared by the parent.
    unsafe {
        check(
            plan,
            Step::NoNewPrivs,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        );
        for cap in 0..=plan.last_cap {
            if plan.keep_caps & (1u64 << cap) == 0 {
                check(
                    plan,
                    Step::DropBounding,
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0),
                );
            }
        }
        // Raw system calls, not glibc's wrappers: in a process glibc believes has other
        // threads (this one was cloned from a multi-threaded parent), the wrappers
        // broadcast the change to every thread under a lock another parent thread may
        // have held at the clone, and the child would wait for it forever.
        let rc = libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr());
        check(plan, Step::SetIds, rc as c_int);
        let rc = libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid);
        check(plan, Step::SetIds, rc as c_int);
        let rc = libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid);
        check(plan, Step::SetIds, rc as c_int);
        // A uid change clears the parent-death signal; ask for it again.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let keep = if plan.uid == 0 { plan.keep_caps } else { 0 };
        let lo = CapData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: 0,
        };
        let hi = CapData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: 0,
        };
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [lo, hi];
        check(
            plan,
            Step::Capabilities,
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as c_int,
        );
        check(
            plan,
            Step::Capabilities,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
        );
    }
}
