//! skiff's sandbox runtime: starts an instance of an unpacked image as an isolated process
//! tree and supervises it to the end.
//!
//! An instance gets new PID, mount, UTS, IPC, network and cgroup namespaces, and a user
//! namespace of its own (see [`userns`]: root inside is an unprivileged host uid); an overlay
//! root (the image's snapshots, read-only, under a throw-away tmpfs upper layer); a minimal
//! `/dev` and a `/tmp` in that same tmpfs, a fresh `/proc`; cgroup limits (memory, CPU, pids, on v1 or v2);
//! a small capability set, `no_new_privs` and a seccomp filter; its image's user; its own
//! veth address; and its stdout/stderr captured to a log file that outlives it.
//!
//! This crate must not know about services, revisions or HTTP: it runs one process tree
//! from a [`SandboxSpec`] and reports how it ended.
//!
//! Sandboxes are cloned by a zygote, a small process started once from the daemon's
//! own binary (`zygote`, [`reentry`]), so none keeps the daemon's memory; a sandbox's
//! writable directories (its upper layer, `/dev`, `/tmp` …) are binds of its directory
//! in one tmpfs all sandboxes share (`scratch`, `shared_scratch`), since every file
//! system costs every memory cgroup on the host (docs/density.md).
//!
//! Each instance's init is a small executable of its own (`init_exe`, built from
//! `init/` by the build script), so it keeps no copy of the zygote's memory either.
//!
//! Unsafe code is denied but in the modules that make raw system calls (`child`,
//! `spawn`, `instance`, `netlink`, `userns`, `reentry`, `scratch`, `zygote`, `init`,
//! `app_fork`, `probe`, `probe_wire`, `init_sys`, `log_pump`), each of which allows it
//! for itself and says why each block is sound.
#![deny(unsafe_code)]

mod app_fork;
mod cgroup;
mod cgroupfs;
mod child;
mod child_stack;
mod freezer;
mod init;
mod init_exe;
mod init_sys;
mod instance;
mod log_pump;
mod logs;
mod net;
mod netlink;
mod probe;
mod probe_wire;
pub mod reentry;
mod scratch;
mod seccomp;
pub mod secretfs;
mod shared_scratch;
mod spawn;
pub mod userns;
mod zygote;

pub use cgroup::{oom_kills_in, Cgroup, Hierarchy, Limits, Placement};
pub use freezer::Freezer;
pub use instance::{Exit, Instance};
pub use logs::{rfc3339, rfc3339_ms, rfc3339_now, LogBudget, LogLimits, LogRate};
pub use net::{host_link_exists, NetworkSlot, ROUTED_PREFIX, SLOTS};
pub use probe::{ProbeChannel, ProbeStatus};
pub use seccomp::DENIED as SECCOMP_DENIED;
pub use spawn::Prepared;

use std::path::PathBuf;

/// Capabilities an instance keeps (when it runs as root): enough to own files, switch
/// users and bind low ports; none of the administrative ones.
pub const DEFAULT_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
];

/// The default capability set as a bit mask.
pub fn default_capability_mask() -> u64 {
    DEFAULT_CAPABILITIES
        .iter()
        .fold(0, |m, (n, _)| m | (1u64 << n))
}

/// Everything needed to start one instance. `Debug` shows the environment's keys, not
/// its values (secrets are among them).
#[derive(Clone)]
pub struct SandboxSpec {
    /// Instance id: hostname, cgroup name and scratch directory name.
    pub id: String,
    /// The image's snapshot directories, top layer first.
    pub layers: Vec<PathBuf>,
    /// Mount the whole root read-only (only `/tmp`, `/dev/shm` stay writable).
    pub read_only: bool,
    /// argv; `args[0]` is looked up in the image's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// User id to run as.
    pub uid: u32,
    /// Group id to run as.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// cgroup limits.
    pub limits: Limits,
    /// Network slot, or `None` for loopback only.
    pub network: Option<NetworkSlot>,
    /// Capabilities taken from the default set (a bit mask, bit N for capability N).
    pub drop_caps: u64,
    /// Contents of the instance's `/etc/resolv.conf` (mode 0644), when it has a resolver.
    pub resolv_conf: Option<String>,
    /// Where stdout/stderr are recorded.
    pub log_path: PathBuf,
    /// Cap on the log file; past it the log rotates to `<log_path>.1` (0 = no cap).
    pub log_max_bytes: u64,
    /// The log's rate and the budget it shares with other instances' logs.
    pub log_limits: LogLimits,
    /// Directory for per-instance scratch mount points (e.g. `/run/skiff/instances`).
    pub run_dir: PathBuf,
    /// Size of the writable layer and of `/tmp` where the sandbox mounts a tmpfs of its
    /// own (kernels without the shared one); in the shared tmpfs, the memory limit alone
    /// bounds them (their pages are charged to it either way).
    pub scratch_bytes: u64,
    /// The signal that asks the app to stop (the image's `StopSignal`; SIGTERM is 15);
    /// SIGKILL follows after the grace period.
    pub stop_signal: i32,
    /// Run a minimal init as PID 1 that forwards signals to the app's process group,
    /// reaps zombies and exits with the app's status (128+N for signal N).
    pub init: bool,
    /// Whether the daemon will send the init exec probes: only then does the instance get
    /// a probe socket (one of the daemon's descriptors for the instance's whole life).
    pub exec_probes: bool,
    /// Also copy the instance's output to this process's stdout/stderr.
    pub tee_output: bool,
    /// Secrets' files, each attached read-only at its directory.
    pub secret_mounts: Vec<SecretMount>,
    /// The first host id of the instance's user namespace (ids 0–65535 inside; see
    /// [`userns`]); `None`: it runs with host ids.
    pub user_namespace: Option<u32>,
}

/// A secret's files to attach inside a sandbox (see [`secretfs::SecretFs`]).
#[derive(Clone, Debug)]
pub struct SecretMount {
    /// The directory inside the sandbox (absolute, plain components).
    pub target: String,
    /// The detached mount holding the files.
    pub mount: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for SandboxSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_keys: Vec<&str> = self
            .env
            .iter()
            .map(|kv| kv.split('=').next().unwrap_or_default())
            .collect();
        f.debug_struct("SandboxSpec")
            .field("id", &self.id)
            .field("layers", &self.layers)
            .field("read_only", &self.read_only)
            .field("args", &self.args)
            .field("env_keys", &env_keys)
            .field("cwd", &self.cwd)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("groups", &self.groups)
            .field("limits", &self.limits)
            .field("network", &self.network)
            .field("drop_caps", &self.drop_caps)
            .field("log_path", &self.log_path)
            .field("run_dir", &self.run_dir)
            .field("scratch_bytes", &self.scratch_bytes)
            .field("stop_signal", &self.stop_signal)
            .field("init", &self.init)
            .field("secret_mounts", &self.secret_mounts)
            .finish_non_exhaustive()
    }
}

/// Errors of the sandbox runtime, naming the instance.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The host lacks something the sandbox needs.
    #[error("sandbox host setup: {0}")]
    Host(String),
    /// The spec cannot be run.
    #[error("instance {id}: invalid spec: {why}")]
    Spec {
        /// Instance id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// Preparing the instance failed before its process existed.
    #[error("instance {id}: {what}: {source}")]
    Prepare {
        /// Instance id.
        id: String,
        /// The step.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The instance's process failed during setup, before running the command.
    #[error("instance {id}: {step}: {source}")]
    Setup {
        /// Instance id.
        id: String,
        /// The failed step.
        step: &'static str,
        /// The kernel's error.
        source: std::io::Error,
    },
}

fn firewall_error(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Host(format!("installing the host firewall: {e}"))
}

/// The runtime: host facts discovered once (cgroup layout, the compiled seccomp filter).
pub struct Sandbox {
    hierarchy: Hierarchy,
    /// Where instances' cgroups go, resolved once.
    placement: Placement,
    /// The host's side of what instances see at /sys/fs/cgroup, read once.
    host_cgroups: cgroupfs::HostCgroups,
    firewall: std::sync::OnceLock<Result<(), String>>,
    seccomp: Vec<libc::sock_filter>,
    last_cap: u32,
    /// Instances' user namespaces, one per id range.
    user_namespaces: userns::UserNamespaces,
    /// The process that clones sandboxes (see `zygote`); without one, they are clones
    /// of this process.
    zygote: Option<zygote::Zygote>,
    /// The one tmpfs holding every sandbox's scratch directory; without it (an older
    /// kernel), each sandbox mounts a tmpfs of its own.
    shared_scratch: Option<std::sync::Arc<shared_scratch::SharedScratch>>,
}

impl Sandbox {
    /// Discovers the host's cgroup layout and compiles the seccomp filter. Instances'
    /// cgroups go in `scope` (one per data directory, `[a-z0-9-]`): see [`Placement`].
    pub fn new(scope: &str) -> Result<Sandbox, SandboxError> {
        let hierarchy = Hierarchy::detect().map_err(|e| SandboxError::Host(e.to_string()))?;
        let placement = Placement::resolve(&hierarchy, scope)
            .map_err(|e| SandboxError::Host(format!("placing instances' cgroups: {e}")))?;
        let bytes = seccomp::default_filter_bpf().map_err(SandboxError::Host)?;
        let size = std::mem::size_of::<libc::sock_filter>();
        let seccomp = bytes
            .chunks_exact(size)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        Ok(Sandbox {
            host_cgroups: cgroupfs::HostCgroups::read(&hierarchy),
            hierarchy,
            placement,
            firewall: std::sync::OnceLock::new(),
            seccomp,
            last_cap,
            user_namespaces: userns::UserNamespaces::default(),
            zygote: None,
            shared_scratch: shared_scratch::SharedScratch::new()
                .map(std::sync::Arc::new)
                .inspect_err(|e| {
                    tracing::info!("sandboxes mount a scratch tmpfs each (no shared one: {e})")
                })
                .ok(),
        })
    }

    /// How many sandboxes' directories the shared scratch tmpfs holds (`None` without
    /// one): each sandbox's until it ended and its files were removed.
    pub fn scratch_directories(&self) -> Option<usize> {
        self.shared_scratch.as_ref()?.entries().ok()
    }

    /// The pid of the zygote that clones this runtime's sandboxes now, if it has one.
    pub fn zygote_pid(&self) -> Option<u32> {
        self.zygote.as_ref().map(zygote::Zygote::pid)
    }

    /// Has sandboxes cloned by a zygote started from `binary` (opened with
    /// [`reentry::own_binary`], or another binary whose `main` calls
    /// [`reentry::enter_if_asked`] first), so that none holds this process's memory.
    pub fn with_zygote(mut self, binary: &std::os::fd::OwnedFd) -> Result<Sandbox, SandboxError> {
        let zygote = zygote::Zygote::start(binary)
            .map_err(|e| SandboxError::Host(format!("starting the sandbox zygote: {e}")))?;
        self.zygote = Some(zygote);
        Ok(self)
    }

    /// Starts installing the host firewall unless this runtime already did.
    pub(crate) fn begin_firewall(&self) -> Result<Option<net::PendingScript>, SandboxError> {
        match self.firewall.get() {
            Some(Ok(())) => Ok(None),
            Some(Err(e)) => Err(firewall_error(e)),
            None => net::spawn_host_firewall().map(Some).map_err(firewall_error),
        }
    }

    /// Waits for the firewall started by [`Self::begin_firewall`]. Instances with a network
    /// refuse to start without it rather than run with the host's services exposed.
    pub(crate) fn end_firewall(
        &self,
        pending: Option<net::PendingScript>,
    ) -> Result<(), SandboxError> {
        if let Some(script) = pending {
            let verdict = script.wait().map_err(|e| e.to_string());
            let _ = self.firewall.set(verdict.clone());
            verdict.map_err(firewall_error)?;
        }
        Ok(())
    }

    /// Cleans up after an instance whose supervisor died without doing so: kills whatever
    /// is left in its cgroup, removes the cgroup and its scratch directory, and waits for
    /// its veth to go. Returns whether anything was found.
    pub fn reclaim(
        &self,
        id: &str,
        run_dir: &std::path::Path,
        network: Option<NetworkSlot>,
    ) -> bool {
        if skiff_core::validate_instance_id(id).is_err() {
            return false;
        }
        let mut found = false;
        if let Some(cg) = Cgroup::open_existing(&self.placement, id) {
            found = true;
            cg.remove(std::time::Duration::from_secs(10));
        }
        let scratch = run_dir.join(id);
        if scratch.exists() {
            found = true;
            // What was mounted on it belonged to the instance's mount namespace, which
            // died with its processes: what is left is an empty directory tree.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        if let Some(shared) = &self.shared_scratch {
            shared.remove_or_warn(id);
        }
        if let Some(slot) = network {
            net::await_link_gone(&slot, std::time::Duration::from_secs(2));
        }
        found
    }

    /// The cgroup layout in use.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Where this runtime's instances' cgroups go.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Removes the scope's directories (cgroups, and the scratch directory `run_dir`) if
    /// they are empty: a daemon that stopped cleanly leaves nothing in the cgroup tree.
    pub fn remove_scope(&self, run_dir: &std::path::Path) {
        self.placement.remove_if_empty();
        let _ = std::fs::remove_dir(run_dir);
    }

    /// Reclaims every instance under this runtime's scope (cgroups) and in `run_dir`
    /// (scratch directories) that `owned` does not name: the leftovers of a daemon that
    /// died, whatever its rows say. Returns the ids reclaimed.
    pub fn reclaim_unowned(
        &self,
        run_dir: &std::path::Path,
        owned: &std::collections::HashSet<String>,
    ) -> Vec<String> {
        let mut ids = self.placement.instance_ids();
        if let Ok(entries) = std::fs::read_dir(run_dir) {
            ids.extend(
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| !owned.contains(id));
        ids.retain(|id| self.reclaim(id, run_dir, None));
        ids
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_capabilities_are_the_ones_specs_are_checked_against() {
        let here: Vec<&str> = super::DEFAULT_CAPABILITIES
            .iter()
            .map(|(_, name)| name.strip_prefix("CAP_").unwrap())
            .collect();
        assert_eq!(here, skiff_core::DEFAULT_CAPABILITIES);
        for (bit, name) in super::DEFAULT_CAPABILITIES {
            let bare = name.strip_prefix("CAP_").unwrap().to_owned();
            assert_eq!(skiff_core::capability_mask(&[bare]), 1 << bit, "{name}");
        }
    }
}
