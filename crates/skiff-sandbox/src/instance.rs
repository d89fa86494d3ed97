//! A running instance: signal it, wait for it, stop it (SIGTERM, a grace period, then
//! SIGKILL of everything in its cgroup), and learn how it ended, including OOM kills.
//! Once it has ended, nothing of it is left: its cgroup is removed, its scratch files
//! deleted, and its namespaces (with their mounts and veth) died with its processes.
//! Dropping an instance that is still running kills it.

#![allow(unsafe_code)]

use crate::cgroup::Cgroup;
use crate::log_pump::PumpHandle;
use crate::net::NetworkSlot;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How an instance ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// Exit status, if its first process exited.
    pub code: Option<i32>,
    /// Signal that killed its first process, if any.
    pub signal: Option<i32>,
    /// Whether the kernel OOM-killed a process of the instance.
    pub oom_killed: bool,
}

impl Exit {
    /// The shell convention: the exit status, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 1,
        }
    }
}

/// A started instance.
pub struct Instance {
    id: String,
    pid: i32,
    pidfd: std::sync::Arc<OwnedFd>,
    cgroup: Option<Cgroup>,
    network: Option<NetworkSlot>,
    scratch: crate::shared_scratch::ScratchDir,
    log_path: PathBuf,
    pump: Option<PumpHandle>,
    exit: Option<Exit>,
    /// The signal `stop` sends first.
    stop_signal: i32,
    /// Where exec probes are sent (to the init), when it has one.
    probe: Option<std::sync::Arc<crate::ProbeChannel>>,
}

impl Instance {
    /// The same instance, stopped with `signal` first instead of SIGTERM.
    pub(crate) fn stopping_with(mut self, signal: i32) -> Instance {
        self.stop_signal = signal;
        self
    }

    /// The same instance, with exec probes going through `channel`.
    pub(crate) fn probed_through(mut self, channel: Option<crate::ProbeChannel>) -> Instance {
        self.probe = channel.map(std::sync::Arc::new);
        self
    }

    /// Where exec probes go (to its init); `None` without an init.
    pub fn probe_channel(&self) -> Option<std::sync::Arc<crate::ProbeChannel>> {
        self.probe.clone()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        pid: i32,
        pidfd: OwnedFd,
        cgroup: Cgroup,
        network: Option<NetworkSlot>,
        scratch: crate::shared_scratch::ScratchDir,
        log_path: PathBuf,
        pump: PumpHandle,
    ) -> Instance {
        Instance {
            id,
            pid,
            pidfd: std::sync::Arc::new(pidfd),
            cgroup: Some(cgroup),
            network,
            scratch,
            log_path,
            pump: Some(pump),
            stop_signal: libc::SIGTERM,
            exit: None,
            probe: None,
        }
    }

    /// Instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// PID of its first process, in the host's PID namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its address, when it has a network slot.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.network.map(|n| n.instance_addr())
    }

    /// Its network slot.
    pub fn network(&self) -> Option<NetworkSlot> {
        self.network
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A pidfd of its first process: readable once it has exited (for event loops).
    pub fn pidfd(&self) -> rustix::fd::BorrowedFd<'_> {
        rustix::fd::AsFd::as_fd(&*self.pidfd)
    }

    /// The same pidfd, shared rather than duplicated: an instance that lives for days
    /// should cost the daemon one descriptor, not one per party watching it. `setns`
    /// takes it for the instance's namespaces (Linux 5.8).
    pub fn shared_pidfd(&self) -> std::sync::Arc<OwnedFd> {
        std::sync::Arc::clone(&self.pidfd)
    }

    /// Its cgroup (until it has ended).
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Sends `signal` to its first process (race-free: through a pidfd).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal on our own pidfd with a null siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                rustix::fd::AsRawFd::as_raw_fd(&*self.pidfd),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` (forever with `None`) for it to end.
    pub fn wait_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<Option<Exit>> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = left.map(|l| Timespec {
                tv_sec: l.as_secs() as i64,
                tv_nsec: l.subsec_nanos() as i64,
            });
            let mut fds = [PollFd::new(&*self.pidfd, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Ok(None),
                Ok(_) => return self.reap().map(Some),
                Err(rustix::io::Errno::INTR) => {
                    if left == Some(Duration::ZERO) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> std::io::Result<Exit> {
        Ok(self.wait_timeout(None)?.expect("no timeout"))
    }

    /// Stops it: its stop signal (SIGTERM unless the image asks for another), up to
    /// `grace` to exit, then SIGKILL to every process it has.
    /// A frozen instance is thawed first, so it can act on the signal.
    pub fn stop(&mut self, grace: Duration) -> std::io::Result<Exit> {
        if let Some(cg) = &self.cgroup {
            cg.thaw();
        }
        self.signal(self.stop_signal)?;
        if let Some(exit) = self.wait_timeout(Some(grace))? {
            return Ok(exit);
        }
        self.kill()
    }

    /// SIGKILLs every process of the instance and waits for it.
    pub fn kill(&mut self) -> std::io::Result<Exit> {
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
        self.signal(libc::SIGKILL)?;
        self.wait()
    }

    fn reap(&mut self) -> std::io::Result<Exit> {
        let mut status = 0;
        loop {
            // SAFETY: reaping our own child; `status` is a valid out-pointer.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        let mut exit = Exit::default();
        if libc::WIFEXITED(status) {
            exit.code = Some(libc::WEXITSTATUS(status));
        } else if libc::WIFSIGNALED(status) {
            exit.signal = Some(libc::WTERMSIG(status));
        }
        self.finish(&mut exit);
        self.exit = Some(exit);
        Ok(exit)
    }

    /// Tears down what outlives the first process: stragglers, the cgroup, the scratch dir.
    fn finish(&mut self, exit: &mut Exit) {
        if let Some(cg) = self.cgroup.take() {
            exit.oom_killed = cg.oom_killed();
            if !cg.remove(Duration::from_secs(10)) {
                tracing::warn!(instance = %self.id, dirs = ?cg.dirs(), "cgroup could not be removed");
            }
        }
        if let Some(pump) = self.pump.take() {
            pump.join();
        }
        if let Some(slot) = &self.network {
            crate::net::await_link_gone(slot, Duration::from_secs(2));
        }
        self.scratch.remove();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.kill();
        }
    }
}
