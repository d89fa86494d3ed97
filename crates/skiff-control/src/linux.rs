//! The Linux sandbox as a [`Runtime`]: namespaces, cgroups, mounts and seccomp from
//! `skiff-sandbox`, reached through the instance's network namespace, paused through its
//! cgroup's freezer, watched through its pidfd.
//!
//! Sandboxes are prepared on threads that live as long as the daemon, for two reasons:
//! preparing blocks (clone, cgroup, mounts), and an instance's parent-death signal fires
//! when the *thread* that cloned it exits, so that thread must never be a pool worker
//! that may retire.

use crate::revision::Revision;
use crate::runtime::{
    BoxFuture, ExecProbe, ExitCheck, ExitStatus, InstancePlan, ListenersCheck, OomCounter,
    PreparedInstance, RunningInstance, Runtime, RuntimeError,
};
use skiff_kernel::descriptors;
use skiff_net::ServiceNetwork;
use skiff_router::{Target, Throttle};
use skiff_sandbox::{
    Exit, Freezer, Instance, Limits, LogLimits, NetworkSlot, Prepared, Sandbox, SandboxSpec,
};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Cap on each instance's log file.
const LOG_MAX_BYTES: u64 = 64 << 20;

/// One sandbox to prepare, with the egress policy to set first when it has a network.
struct Job {
    spec: SandboxSpec,
    /// Descriptors that must stay free after it (more for a sandbox prepared ahead).
    reserve: u64,
    policy: Option<Policy>,
    reply: oneshot::Sender<Result<Prepared, String>>,
}

struct Policy {
    network: Arc<ServiceNetwork>,
    instance: std::net::Ipv4Addr,
    mode: skiff_core::EgressMode,
    rules: Vec<skiff_core::EgressRule>,
}

impl Job {
    fn run(self, sandbox: &Sandbox) {
        // Checked again here: preparations run side by side.
        if let Err(e) = descriptors::check_headroom(self.reserve) {
            let _ = self
                .reply
                .send(Err(format!("instance {}: {e}", self.spec.id)));
            return;
        }
        if let Some(p) = &self.policy {
            if let Err(e) = p.network.set_policy(p.instance, p.mode, &p.rules) {
                let _ = self
                    .reply
                    .send(Err(format!("instance {}: {e}", self.spec.id)));
                return;
            }
        }
        // If the asker is gone, dropping the sandbox removes it again.
        let _ = self
            .reply
            .send(sandbox.prepare(&self.spec).map_err(|e| explained(&e)));
    }
}

/// Runs instances in Linux sandboxes.
pub struct LinuxRuntime {
    jobs: mpsc::Sender<Job>,
    run_dir: PathBuf,
    network: Option<Arc<ServiceNetwork>>,
    log_limits: LogLimits,
    /// Instances get user namespaces of their own (unless their spec asks for host ids).
    user_namespaces: bool,
}

impl LinuxRuntime {
    /// Starts `threads` spawner threads sharing `sandbox`; instances' scratch mount points
    /// go under `run_dir`, their logs are held to `log_limits`.
    pub fn new(
        sandbox: Arc<Sandbox>,
        threads: usize,
        run_dir: PathBuf,
        network: Option<Arc<ServiceNetwork>>,
        log_limits: LogLimits,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let sandbox = Arc::clone(&sandbox);
            std::thread::Builder::new()
                .name(format!("skiff-spawn-{n}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(job) = job else { return };
                    job.run(&sandbox);
                })?;
        }
        Ok(LinuxRuntime {
            jobs: tx,
            run_dir,
            network,
            log_limits,
            user_namespaces: false,
        })
    }

    /// Gives instances user namespaces of their own from now on (the kernel and the
    /// layers' file system must allow it: `skiff_sandbox::userns::check_support`).
    pub fn with_user_namespaces(mut self, on: bool) -> Self {
        self.user_namespaces = on;
        self
    }

    /// The first host id of an instance's user namespace, if it has one: its range is
    /// its slot's place in the subnet, so no two live instances share one, nor do
    /// instances of daemons on other /24s of the same /16.
    fn user_namespace(&self, slot: u32, spec: &skiff_core::ServiceSpec) -> Option<u32> {
        if !self.user_namespaces || spec.host_users {
            return None;
        }
        let index = match &self.network {
            Some(net) => {
                u32::from(NetworkSlot::routed(net.subnet().base, slot).instance_addr()) >> 2
            }
            None => slot,
        };
        Some(skiff_sandbox::userns::host_base(index))
    }

    /// The instance's slot of the service network, when there is one.
    fn slot(&self, plan: &InstancePlan) -> Option<NetworkSlot> {
        let net = self.network.as_ref()?;
        Some(NetworkSlot::routed(net.subnet().base, plan.slot))
    }

    fn sandbox_spec(&self, plan: &InstancePlan) -> SandboxSpec {
        let r: &Revision = &plan.revision;
        SandboxSpec {
            id: plan.id.clone(),
            layers: r.rootfs.clone(),
            read_only: r.read_only,
            args: r.process.args.clone(),
            env: r
                .process
                .env
                .iter()
                .chain(&plan.secrets.env)
                .cloned()
                .collect(),
            cwd: r.process.cwd.clone(),
            uid: r.process.uid,
            gid: r.process.gid,
            groups: r.process.groups.clone(),
            limits: Limits {
                memory_bytes: Some(r.limits.memory_bytes),
                cpu_millis: Some(r.limits.cpu_millis),
                pids: Some(r.limits.pids),
            },
            network: self.slot(plan),
            resolv_conf: self.network.as_ref().map(|n| n.resolv_conf()),
            drop_caps: skiff_core::capability_mask(&r.spec.cap_drop),
            log_path: plan.log_path.clone(),
            log_max_bytes: LOG_MAX_BYTES,
            log_limits: self.log_limits.clone(),
            run_dir: self.run_dir.clone(),
            scratch_bytes: r.limits.memory_bytes,
            tee_output: false,
            secret_mounts: plan.secrets.mounts.clone(),
            user_namespace: self.user_namespace(plan.slot, &r.spec),
            init: r.spec.init,
            exec_probes: [&r.spec.readiness_probe, &r.spec.liveness_probe]
                .iter()
                .any(|p| p.as_ref().is_some_and(skiff_core::Probe::is_exec)),
            stop_signal: r.process.stop_signal,
        }
    }
}

/// The error as people read it; when the kernel said the daemon is out of descriptors
/// (the headroom check raced with other work), with which limit and what to do.
fn explained(e: &skiff_sandbox::SandboxError) -> String {
    let exhausted = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(descriptors::is_exhaustion);
    if !exhausted {
        return e.to_string();
    }
    let limit = descriptors::limit().soft;
    format!(
        "{e}: the daemon is out of file descriptors (RLIMIT_NOFILE {limit}); {}",
        descriptors::ADVICE
    )
}

/// Descriptors an instance must leave free. An instance holds a few while it starts and
/// one (its pidfd) once idle: never the last ones, which accepting connections and
/// opening the database need. Sandboxes prepared ahead stop at half the limit, so that
/// they never crowd out instances that serve.
fn descriptor_reserve(ahead: bool) -> u64 {
    let limit = descriptors::limit().soft;
    if ahead {
        limit / 2
    } else {
        descriptors::reserve_for(limit)
    }
}

impl Runtime for LinuxRuntime {
    fn room_for_one(&self, ahead: bool) -> Result<(), RuntimeError> {
        descriptors::check_headroom(descriptor_reserve(ahead))
            .map_err(|e| RuntimeError::Failed(e.to_string()))
    }

    fn prepare(
        &self,
        plan: InstancePlan,
    ) -> BoxFuture<'_, Result<Box<dyn PreparedInstance>, RuntimeError>> {
        let spec = self.sandbox_spec(&plan);
        let reserve = descriptor_reserve(plan.ahead);
        // The address the sandbox gives eth0, so the firewall names that very one.
        let policy = self
            .network
            .as_ref()
            .zip(spec.network)
            .map(|(network, slot)| Policy {
                network: Arc::clone(network),
                instance: slot.instance_addr(),
                mode: plan.revision.spec.egress,
                rules: plan.revision.spec.egress_allow.clone(),
            });
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let gone = || {
                RuntimeError::Failed(format!(
                    "instance {}: the spawner threads are gone",
                    plan.id
                ))
            };
            let job = Job {
                spec,
                reserve,
                policy,
                reply,
            };
            self.jobs.send(job).map_err(|_| gone())?;
            let prepared = rx
                .await
                .map_err(|_| gone())?
                .map_err(RuntimeError::Failed)?;
            Ok(Box::new(LinuxPrepared(prepared)) as Box<dyn PreparedInstance>)
        })
    }

    fn host_id_base(&self, slot: u32, revision: &Revision) -> u32 {
        self.user_namespace(slot, &revision.spec).unwrap_or(0)
    }

    fn instance_address(&self, slot: u32) -> Option<std::net::IpAddr> {
        let net = self.network.as_ref()?;
        Some(
            NetworkSlot::routed(net.subnet().base, slot)
                .instance_addr()
                .into(),
        )
    }

    fn network_slots(&self) -> std::ops::Range<u32> {
        match &self.network {
            // Slot 0 holds skiff's own addresses.
            Some(net) => 1..net.subnet().slot_count(),
            None => 0..skiff_sandbox::SLOTS,
        }
    }
}

struct LinuxPrepared(Prepared);

impl PreparedInstance for LinuxPrepared {
    fn id(&self) -> &str {
        self.0.id()
    }

    fn launch(self: Box<Self>) -> Result<Box<dyn RunningInstance>, RuntimeError> {
        let instance = self
            .0
            .launch()
            .map_err(|e| RuntimeError::Failed(explained(&e)))?;
        Ok(Box::new(LinuxRunning(instance)))
    }
}

struct LinuxRunning(Instance);

fn status(exit: Exit) -> ExitStatus {
    ExitStatus {
        code: exit.code,
        signal: exit.signal,
        oom_killed: exit.oom_killed,
    }
}

impl RunningInstance for LinuxRunning {
    fn id(&self) -> &str {
        self.0.id()
    }

    fn pid(&self) -> Option<u32> {
        Some(self.0.pid() as u32)
    }

    fn target(&self, port: u16) -> Result<Target, RuntimeError> {
        // The pidfd rather than an open `/proc/PID/ns/net`: one descriptor per instance
        // fewer. Once the init has exited, `setns` on it fails and so does the connect.
        if exited_within(self.0.pidfd(), Duration::ZERO) {
            return Err(RuntimeError::Exited);
        }
        Ok(Target::Netns {
            netns: self.0.shared_pidfd(),
            port,
        })
    }

    fn exit_check(&self) -> ExitCheck {
        let pidfd = self.0.shared_pidfd();
        Box::new(move |wait| exited_within(pidfd.as_fd(), wait))
    }

    fn listeners_check(&self) -> ListenersCheck {
        let dir = format!("/proc/{}/net", self.0.pid());
        Box::new(move || {
            // Gone, or no IPv6: an empty table.
            let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}"));
            crate::listening::listeners(
                &read("tcp").unwrap_or_default(),
                &read("tcp6").unwrap_or_default(),
            )
            .iter()
            .map(ToString::to_string)
            .collect()
        })
    }

    fn exited(&self) -> BoxFuture<'static, ()> {
        let pidfd = self.0.shared_pidfd();
        Box::pin(async move {
            let _ = skiff_kernel::pidfd::exited(pidfd).await;
        })
    }

    fn exec_probe(&self) -> Option<ExecProbe> {
        let channel = self.0.probe_channel()?;
        Some(Arc::new(move |argv: &[String], timeout: Duration| {
            use skiff_sandbox::ProbeStatus;
            match channel.run(argv, timeout) {
                Ok(ProbeStatus::Exited(0)) => Ok(()),
                Ok(ProbeStatus::Exited(127)) => Err(format!(
                    "{:?} could not be run (not found in the image's PATH, or not executable)",
                    argv[0]
                )),
                Ok(ProbeStatus::Exited(code)) => Err(format!("exited with code {code}")),
                Ok(ProbeStatus::TimedOut) => Err(format!("no answer within {timeout:?}")),
                Ok(ProbeStatus::NotRun) => Err("could not start it in the instance".into()),
                Err(e) => Err(format!("running it: {e}")),
            }
        }))
    }

    fn oom_counter(&self) -> Option<OomCounter> {
        let file = self.0.cgroup()?.oom_events()?;
        Some(Box::new(move || skiff_sandbox::oom_kills_in(&file)))
    }

    fn throttle(&self) -> Result<Box<dyn Throttle>, RuntimeError> {
        let cgroup = self.0.cgroup().ok_or_else(|| {
            RuntimeError::Failed(
                "CPU throttling needs the instance's cgroup, and it has none".into(),
            )
        })?;
        let freezer = Freezer::open(cgroup).map_err(|e| {
            RuntimeError::Failed(format!("CPU throttling needs the cgroup freezer: {e}"))
        })?;
        Ok(Box::new(FreezeThrottle {
            id: self.0.id().to_owned(),
            freezer,
        }))
    }

    fn stop(&mut self, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        self.0
            .stop(grace)
            .map(status)
            .map_err(|e| RuntimeError::Failed(format!("stopping instance {}: {e}", self.0.id())))
    }

    fn wait(&mut self) -> Result<ExitStatus, RuntimeError> {
        self.0
            .wait()
            .map(status)
            .map_err(|e| RuntimeError::Failed(format!("reaping instance {}: {e}", self.0.id())))
    }
}

/// Waits up to `wait` for the process behind `pidfd` to exit; whether it did.
fn exited_within(pidfd: BorrowedFd<'_>, wait: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: wait.subsec_nanos() as i64,
    };
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// CPU only while serving: the router's [`Throttle`] for one instance, backed by its
/// cgroup's freezer. When to freeze is the pool's decision.
struct FreezeThrottle {
    id: String,
    freezer: Freezer,
}

impl Throttle for FreezeThrottle {
    fn resume(&self) {
        if let Err(e) = self.freezer.thaw() {
            // The request will wait for its timeout: say why.
            tracing::error!(instance = %self.id, "thawing: {e}");
        }
    }

    fn pause(&self) {
        if let Err(e) = self.freezer.freeze() {
            tracing::warn!(instance = %self.id, "freezing: {e}");
        }
    }
}
