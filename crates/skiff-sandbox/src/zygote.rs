//! The zygote: a small process the daemon starts once (skiff's own binary executed again,
//! single-threaded, a few hundred KiB of its own) that clones every sandbox, so that a
//! sandbox is a copy of the zygote, not of the daemon.
//!
//! Why not clone from the daemon: the clone keeps a copy-on-write snapshot of the
//! daemon's address space for as long as it lives (the prepared sandbox, then the
//! instance's init), and each snapshot becomes its own as the daemon goes on writing
//! (~1 MiB of anonymous memory and ~200 KiB of page tables each). Why not execute skiff
//! again in each sandbox: the loader relocates ~1.6 MiB of skiff's data in every process
//! that executes it. The zygote pays that once; its clones share those pages, which
//! nothing writes after the relocation (docs/density.md).
//!
//! The daemon sends each request as one datagram: the clone flags, and as descriptors
//! the plan (a sealed memory file) and the plan's own descriptors in the order of
//! [`ChildPlan::descriptors`]. The zygote clones with `CLONE_PARENT`, so the sandbox is
//! the daemon's child (it waits for it, opens its pidfd), and answers its pid or
//! `-errno`. The zygote ends when the daemon's end of the socket closes.
#![allow(unsafe_code)]

use crate::child::{self, ChildPlan};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::sync::{mpsc, Mutex};

/// `argv[0]` of the zygote; the socket's descriptor follows.
pub(crate) const NAME: &str = "skiff-sandbox-zygote";

/// Most descriptors in one request: the plan and the plan's own.
const MAX_FDS: usize = 8 + child::MAX_SECRET_MOUNTS;

/// The daemon's side: the zygote process and the socket to it, and the thread that
/// starts it (again, when it died).
pub(crate) struct Zygote {
    current: Mutex<Running>,
    starter: mpsc::Sender<mpsc::Sender<io::Result<Running>>>,
}

/// One zygote process and the daemon's end of its socket.
struct Running {
    socket: OwnedFd,
    process: std::process::Child,
}

impl Running {
    /// Starts a zygote from `binary` (a descriptor of skiff's own binary).
    fn start(binary: BorrowedFd<'_>) -> io::Result<Running> {
        use std::os::unix::process::CommandExt;
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let their_fd = theirs.as_raw_fd();
        let mut command =
            std::process::Command::new(format!("/proc/self/fd/{}", binary.as_raw_fd()));
        command
            .arg0(NAME)
            .arg(their_fd.to_string())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: between fork and exec, one fcntl on a descriptor the child holds.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(their_fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let process = command.spawn()?;
        Ok(Running {
            socket: ours,
            process,
        })
    }

    /// Sends one request; false when the zygote is gone (nothing was delivered).
    fn send(&self, flags: u64, control: &mut SendAncillaryBuffer<'_, '_, '_>) -> io::Result<bool> {
        let bytes = flags.to_le_bytes();
        match rustix::net::sendmsg(
            &self.socket,
            &[IoSlice::new(&bytes)],
            control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Names a zygote that stopped answering (with its exit, when it has one).
    fn gone(&mut self, e: io::Error) -> io::Error {
        match self.process.try_wait() {
            Ok(Some(status)) => io::Error::other(format!("the sandbox zygote ended ({status})")),
            _ => e,
        }
    }

    /// Kills the zygote (if it still runs) and reaps it.
    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Zygote {
    /// Starts the zygote from `binary` (a descriptor of skiff's own binary).
    ///
    /// Zygotes are started from a thread that never ends: a sandbox's parent-death signal
    /// follows the thread that started the zygote it was cloned by (its clones take the
    /// zygote's parent), and must mean that the daemon died, not that some thread of it
    /// ended. The same thread starts a new zygote when one died (killed by someone, or
    /// by the OOM killer), so that sandboxes can still be made.
    pub(crate) fn start(binary: &OwnedFd) -> io::Result<Zygote> {
        let binary = binary.try_clone()?;
        let (requests, asked) = mpsc::channel::<mpsc::Sender<io::Result<Running>>>();
        std::thread::Builder::new()
            .name("skiff-zygote".into())
            .spawn(move || {
                for reply in asked {
                    let _ = reply.send(Running::start(binary.as_fd()));
                }
                // The daemon dropped its zygote; the sandboxes it cloned live on.
                loop {
                    std::thread::park();
                }
            })?;
        let first = Self::ask(&requests)?;
        Ok(Zygote {
            current: Mutex::new(first),
            starter: requests,
        })
    }

    /// A new zygote, started by the starter thread.
    fn ask(starter: &mpsc::Sender<mpsc::Sender<io::Result<Running>>>) -> io::Result<Running> {
        let (reply, answer) = mpsc::channel();
        starter
            .send(reply)
            .map_err(|_| io::Error::other("the zygote's thread ended"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the zygote's thread ended"))?
    }

    /// Has the zygote clone a sandbox into the namespaces of `flags` from the plan in
    /// `plan_file`; the sandbox's pid. A zygote found gone before it took the request is
    /// replaced and asked again; one that goes after it took it fails this request (it
    /// may have cloned a sandbox already, which holds the plan's descriptors), and is
    /// replaced on the next.
    pub(crate) fn clone_sandbox(
        &self,
        flags: u64,
        plan_file: BorrowedFd<'_>,
        plan: &ChildPlan,
    ) -> io::Result<i32> {
        let mut fds = vec![plan_file];
        for fd in plan.descriptors() {
            // SAFETY: the plan's descriptors are open for as long as the plan is.
            fds.push(unsafe { BorrowedFd::borrow_raw(fd) });
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("too many descriptors for the zygote"));
        }
        let mut zygote = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if !zygote.send(flags, &mut control)? {
            self.replace(&mut zygote)?;
            if !zygote.send(flags, &mut control)? {
                let e = io::Error::from(io::ErrorKind::BrokenPipe);
                return Err(zygote.gone(e));
            }
        }
        let mut answer = [0u8; 4];
        let got = match rustix::io::read(&zygote.socket, &mut answer) {
            Ok(got) => got,
            Err(e) => return Err(zygote.gone(e.into())),
        };
        if got != 4 {
            return Err(zygote.gone(io::Error::from(io::ErrorKind::UnexpectedEof)));
        }
        match i32::from_le_bytes(answer) {
            pid if pid > 0 => Ok(pid),
            errno => Err(io::Error::from_raw_os_error(-errno)),
        }
    }

    /// Replaces a zygote that is gone (reaping it) with a new one.
    fn replace(&self, zygote: &mut Running) -> io::Result<()> {
        let new = Self::ask(&self.starter)?;
        let mut old = std::mem::replace(zygote, new);
        let status = old.process.try_wait().ok().flatten();
        tracing::warn!(
            "the sandbox zygote (pid {}) was gone{}; started another (pid {})",
            old.process.id(),
            status.map_or(String::new(), |s| format!(" ({s})")),
            zygote.process.id()
        );
        old.stop();
        Ok(())
    }

    /// The zygote's pid now.
    pub(crate) fn pid(&self) -> u32 {
        let zygote = self.current.lock().unwrap_or_else(|p| p.into_inner());
        zygote.process.id()
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.current
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .stop();
    }
}

/// The zygote's loop (in the process executed as [`NAME`]): clones a sandbox per
/// request until the daemon closes its end.
pub(crate) fn serve(socket: OwnedFd) -> ! {
    // SAFETY: naming this process; a static string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"skiff-zygote".as_ptr()) };
    let sysfs = shared_sysfs().ok();
    // None where the kernel refuses executable memory files (vm.memfd_noexec = 2): the
    // inits then run in their clones of this process.
    let init_exe = crate::init_exe::sealed_file().ok().flatten();
    let shared = Shared {
        sysfs: sysfs.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        init_exe: init_exe.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
    };
    loop {
        let (flags, mut fds) = match receive(socket.as_fd()) {
            Ok(Some(request)) => request,
            Ok(None) => std::process::exit(0),
            Err(_) => std::process::exit(1),
        };
        let pid = match clone_one(flags, &mut fds, &shared) {
            Ok(pid) => pid,
            Err(errno) => -errno,
        };
        drop(fds);
        if rustix::io::write(&socket, &pid.to_le_bytes()).is_err() {
            std::process::exit(1);
        }
    }
}

/// A detached sysfs every sandbox shows a copy of at `/sys`, made in a network namespace
/// of the zygote's own with nothing but `lo` (a sysfs shows its network namespace's
/// devices; the sandbox's `eth0` is not among them). One file system for all sandboxes
/// instead of one each: each costs every memory cgroup a slot (docs/density.md).
fn shared_sysfs() -> io::Result<OwnedFd> {
    use rustix::mount::MountAttrFlags;
    use rustix::mount::{fsconfig_create, fsmount, fsopen, FsMountFlags, FsOpenFlags};
    // SAFETY: this process is single-threaded, and only its network namespace changes
    // (no other thread could share state the unshare would split).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)? };
    let fs = fsopen("sysfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&fs)?;
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    Ok(fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
}

/// One request: the clone flags and its descriptors; `None` once the daemon is gone.
fn receive(socket: BorrowedFd<'_>) -> io::Result<Option<(u64, Vec<OwnedFd>)>> {
    let mut bytes = [0u8; 8];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    Ok(Some((u64::from_le_bytes(bytes), fds)))
}

/// What the zygote made once for every sandbox it clones.
struct Shared {
    /// See [`ChildPlan::shared_sysfs`].
    sysfs: i32,
    /// See [`ChildPlan::init_exe`].
    init_exe: i32,
}

/// Clones the sandbox a request asks for; its pid, or the errno.
fn clone_one(flags: u64, fds: &mut [OwnedFd], shared: &Shared) -> Result<i32, i32> {
    let (plan_file, own) = fds.split_first().ok_or(libc::EINVAL)?;
    let bytes = crate::reentry::read_file(plan_file)?;
    let mut plan = crate::reentry::decode(&bytes).ok_or(libc::EINVAL)?;
    let slots = plan.descriptors_mut();
    if slots.len() != own.len() {
        return Err(libc::EINVAL);
    }
    for (slot, fd) in slots.into_iter().zip(own.iter()) {
        *slot = fd.as_raw_fd();
    }
    plan.shared_sysfs = shared.sysfs;
    plan.init_exe = shared.init_exe;
    let plan = plan.with_pointers();
    let flags = flags & CLONE_NAMESPACES | libc::CLONE_PARENT as u64 | libc::SIGCHLD as u64;
    child::clone_and_run(flags, &plan).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The clone flags a request may ask for: new namespaces, nothing else.
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;
