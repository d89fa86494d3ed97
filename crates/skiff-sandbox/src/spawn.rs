//! Starting an instance: prepares the child's plan (every string and table it will need),
//! creates the cgroup, clones into new namespaces, attaches the cgroup and network from
//! the parent while the child mounts its root, then releases the child to exec and waits
//! for the exec to succeed or the child to report the step that failed.

#![allow(unsafe_code)]

use crate::cgroup::Cgroup;
use crate::child::{self, ChildPlan, NetPlan, Step};
use crate::instance::Instance;
use crate::shared_scratch::ScratchDir;
use crate::{net, userns, Sandbox, SandboxError, SandboxSpec};
use rustix::fd::{AsRawFd, OwnedFd};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

/// Longest mount option string the kernel takes (one page).
const MAX_MOUNT_DATA: usize = 4095;

fn cstring(id: &str, what: &str, s: impl Into<Vec<u8>>) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Spec {
        id: id.to_owned(),
        why: format!("{what} contains a NUL byte"),
    })
}

fn path_cstring(id: &str, what: &str, p: &Path) -> Result<CString, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    cstring(id, what, p.as_os_str().as_bytes())
}

/// `items` as C strings (argv, envp).
fn cstrings(id: &str, what: &str, items: &[String]) -> Result<Vec<CString>, SandboxError> {
    items
        .iter()
        .map(|i| cstring(id, what, i.as_str()))
        .collect()
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Deletes the scratch directory and cgroup if starting fails midway.
struct Cleanup {
    scratch: Option<ScratchDir>,
    cgroup: Option<Cgroup>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            cg.remove(Duration::from_secs(5));
        }
        if let Some(scratch) = self.scratch.take() {
            scratch.remove();
        }
    }
}

/// The instance's `/etc/hosts`: loopback names, and its own name on its address.
fn hosts_file(id: &str, addr: Option<std::net::Ipv4Addr>) -> Vec<u8> {
    let own = addr.map_or_else(|| "127.0.1.1".to_owned(), |a| a.to_string());
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{id}\n")
        .into_bytes()
}

impl Sandbox {
    /// Starts an instance. Returns once its command is executing (or with the step that
    /// failed, after cleaning up everything it created).
    pub fn start(&self, spec: &SandboxSpec) -> Result<Instance, SandboxError> {
        self.prepare(spec)?.launch()
    }

    /// Does all of starting an instance but the exec: the process is cloned into its
    /// namespaces, attached to its cgroup and network, and has its root mounted; it waits
    /// for [`Prepared::launch`]. The slow kernel work (a cgroup migration can wait for an
    /// RCU grace period) is done here, ahead of demand, so a launch costs well under a
    /// millisecond. Dropping the result kills the child and removes what it had.
    pub fn prepare(&self, spec: &SandboxSpec) -> Result<Prepared, SandboxError> {
        let id = spec.id.as_str();
        let spec_err = |why: String| SandboxError::Spec {
            id: id.to_owned(),
            why,
        };
        skiff_core::validate_instance_id(id).map_err(|e| spec_err(e.to_string()))?;
        if spec.args.is_empty() {
            return Err(spec_err(
                "no command: the image has no Entrypoint or Cmd and none was given".into(),
            ));
        }
        if spec.layers.is_empty() {
            return Err(spec_err("the image has no layers".into()));
        }
        let prep = |what: &'static str| {
            move |source| SandboxError::Prepare {
                id: id.to_owned(),
                what,
                source,
            }
        };
        // Routed slots belong to the daemon's network, whose own firewall stands already.
        let firewall = match spec.network {
            Some(slot) if !slot.routed => self.begin_firewall()?,
            _ => None,
        };

        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&spec.run_dir)
            .map_err(prep("creating the run directory"))?;
        let scratch = spec.run_dir.join(id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch)
            .map_err(prep("creating the scratch directory"))?;
        let mut cleanup = Cleanup {
            scratch: Some(ScratchDir {
                path: scratch.clone(),
                shared: None,
            }),
            cgroup: None,
        };
        // Kept until the clone has its copy of the descriptor.
        let scratch_tree = match &self.shared_scratch {
            Some(shared) => {
                let tree = shared
                    .make(id)
                    .map_err(prep("making the scratch directory"))?;
                if let Some(dir) = &mut cleanup.scratch {
                    dir.shared = Some((shared.clone(), id.to_owned()));
                }
                Some(tree)
            }
            None => None,
        };

        let plan_parts = self.plan_strings(spec, &scratch)?;
        // Kept until the clone has its copy of the descriptor.
        let userns = spec
            .user_namespace
            .map(|base| self.user_namespaces.get(base))
            .transpose()
            .map_err(prep("making the user namespace"))?;
        let cgroup = Cgroup::create(&self.placement, id, &spec.limits)
            .map_err(prep("creating the cgroup"))?;
        cleanup.cgroup = Some(cgroup);

        if let Some(dir) = spec.log_path.parent() {
            fs::create_dir_all(dir).map_err(prep("creating the log directory"))?;
        }
        let log = crate::logs::open_log(&spec.log_path).map_err(prep("opening the log file"))?;

        let (sync_r, sync_w) = pipe().map_err(prep("creating pipes"))?;
        let (err_r, err_w) = pipe().map_err(prep("creating pipes"))?;
        let (out_r, out_w) = pipe().map_err(prep("creating pipes"))?;
        let (errout_r, errout_w) = pipe().map_err(prep("creating pipes"))?;
        // The init runs exec probes sent on this socket.
        let probe_pair = if spec.init && spec.exec_probes {
            Some(crate::probe::socket_pair().map_err(prep("creating the probe socket"))?)
        } else {
            None
        };

        let plan = ChildPlan {
            sync_fd: sync_r.as_raw_fd(),
            err_fd: err_w.as_raw_fd(),
            stdout_fd: out_w.as_raw_fd(),
            stderr_fd: errout_w.as_raw_fd(),
            probe_fd: probe_pair.as_ref().map_or(-1, |(_, init)| init.as_raw_fd()),
            net: spec.network.map(|slot| NetPlan {
                addr: slot.instance_addr().octets(),
                mask: net::NetworkSlot::NETMASK.octets(),
                gateway: slot.routed.then(|| slot.host_addr().octets()),
            }),
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            keep_caps: crate::default_capability_mask() & !spec.drop_caps,
            last_cap: self.last_cap,
            seccomp: self.seccomp.clone(),
            init: spec.init,
            cgroups: self
                .host_cgroups
                .view(cleanup.cgroup.as_ref().expect("set above")),
            read_only: spec.read_only,
            userns_fd: userns.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
            scratch_tree: scratch_tree.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
            id_base: spec.user_namespace.unwrap_or(0),
            hosts: hosts_file(id, spec.network.map(|n| n.instance_addr())),
            resolv_conf: spec.resolv_conf.clone().unwrap_or_default().into_bytes(),
            ..plan_parts
        };

        let flags = libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        let pid = match &self.zygote {
            Some(zygote) => crate::reentry::plan_file(&plan)
                .and_then(|file| {
                    zygote.clone_sandbox(flags as u64, rustix::fd::AsFd::as_fd(&file), &plan)
                })
                .map_err(prep("cloning the sandbox process (through the zygote)"))?,
            None => child::clone_and_run((flags | libc::SIGCHLD) as u64, &plan.with_pointers())
                .map_err(prep("cloning the sandbox process"))?,
        };
        drop((sync_r, err_w, out_w, errout_w, scratch_tree));
        let probe = probe_pair.map(|(daemon, _init)| {
            let path = spec
                .env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or(skiff_core::DEFAULT_PATH);
            crate::ProbeChannel::new(daemon, path.to_owned())
        });
        let prepared = Prepared {
            id: id.to_owned(),
            pid,
            sync_w: Some(sync_w),
            err_r,
            output: Some((out_r, errout_r, log)),
            cgroup: cleanup.cgroup.take(),
            scratch: cleanup.scratch.take().expect("set above"),
            network: spec.network,
            log_path: spec.log_path.clone(),
            log_max_bytes: spec.log_max_bytes,
            log_limits: spec.log_limits.clone(),
            tee_output: spec.tee_output,
            stop_signal: spec.stop_signal,
            exe: spec.args[0].clone(),
            armed: true,
            probe,
        };
        drop(cleanup);
        let attach = prepared
            .cgroup
            .as_ref()
            .expect("set above")
            .add(pid)
            .map_err(prep("joining the cgroup"))
            .and_then(|()| match &spec.network {
                Some(slot) => net::create_veth(slot, pid).map_err(prep("creating the veth pair")),
                None => Ok(()),
            })
            // The instance may not send a packet before the firewall stands.
            .and_then(|()| self.end_firewall(firewall))
            // It is in its cgroup now: it may enter its cgroup namespace and mount its
            // view of it, still before the exec (`launch` sends the second byte).
            .and_then(|()| {
                let sync = prepared.sync_w.as_ref().expect("set above");
                rustix::io::write(sync, &[1])
                    .map(drop)
                    .map_err(|e| prep("telling the sandbox it joined its cgroup")(e.into()))
            });
        // On failure, dropping `prepared` kills the child and removes what it had.
        attach.map(|()| prepared)
    }

    /// Builds the strings of the child's plan (paths, mount options, argv, env).
    fn plan_strings(&self, spec: &SandboxSpec, scratch: &Path) -> Result<ChildPlan, SandboxError> {
        let id = spec.id.as_str();
        let spec_err = |why: String| SandboxError::Spec {
            id: id.to_owned(),
            why,
        };
        let layers_dir = spec.layers[0].parent().unwrap_or(Path::new("/")).to_owned();
        let mut names = Vec::new();
        for l in &spec.layers {
            if l.parent() != Some(layers_dir.as_path()) {
                return Err(spec_err(format!(
                    "layer {} is not in {}",
                    l.display(),
                    layers_dir.display()
                )));
            }
            let name = l.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.is_empty() || name.contains([':', ',', '\\']) {
                return Err(spec_err(format!(
                    "layer directory {} has an unusable name",
                    l.display()
                )));
            }
            names.push(name.to_owned());
        }
        if spec.user_namespace.is_some() {
            let inside = userns::RANGE - 1;
            if spec.uid > inside || spec.gid > inside || spec.groups.iter().any(|g| *g > inside) {
                return Err(spec_err(format!(
                    "user {}:{} (groups {:?}) is outside the user namespace's ids \
                     (0-{inside}); run it with host ids",
                    spec.uid, spec.gid, spec.groups
                )));
            }
        }
        let upper = scratch.join("upper");
        let work = scratch.join("work");
        // With a user namespace, the layers are idmapped mounts in the scratch directory
        // (l0, l1…), named relative to it.
        let mut idmapped_layers = Vec::new();
        let lower: Vec<String> = match spec.user_namespace {
            None => names.clone(),
            Some(_) => (0..names.len()).map(|i| format!("l{i}")).collect(),
        };
        if spec.user_namespace.is_some() {
            for (name, l) in names.iter().zip(&lower) {
                idmapped_layers.push((
                    cstring(id, "a layer's name", name.as_str())?,
                    path_cstring(id, "the run directory", &scratch.join(l))?,
                ));
            }
        }
        let overlay_opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        if overlay_opts.len() > MAX_MOUNT_DATA {
            return Err(spec_err(format!(
                "too many layers ({}) for one overlay mount",
                names.len()
            )));
        }
        let args = cstrings(id, "an argument", &spec.args)?;
        let env = cstrings(id, "an environment entry", &spec.env)?;
        let exe = &spec.args[0];
        let exec_paths = if exe.contains('/') {
            vec![cstring(id, "the command", exe.as_str())?]
        } else {
            let path = spec
                .env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or(skiff_core::DEFAULT_PATH);
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstring(id, "PATH", format!("{}/{exe}", d.trim_end_matches('/'))))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(ChildPlan {
            hosts: Vec::new(),
            resolv_conf: Vec::new(),
            sync_fd: -1,
            err_fd: -1,
            stdout_fd: -1,
            stderr_fd: -1,
            probe_fd: -1,
            scratch: path_cstring(id, "the run directory", scratch)?,
            scratch_opts: cstring(
                id,
                "scratch size",
                format!("size={},mode=0700", spec.scratch_bytes),
            )?,
            upper: path_cstring(id, "the run directory", &upper)?,
            work: path_cstring(id, "the run directory", &work)?,
            merged: path_cstring(id, "the run directory", &scratch.join("merged"))?,
            layers_dir: path_cstring(id, "the layer directory", &layers_dir)?,
            overlay_opts: cstring(id, "layer paths", overlay_opts)?,
            userns_fd: -1,
            scratch_tree: -1,
            id_base: 0,
            idmapped_layers,
            read_only: false,
            hostname: cstring(id, "the id", id)?,
            net: None,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            keep_caps: 0,
            last_cap: 0,
            seccomp: Vec::new(),
            init: false,
            cgroups: Default::default(),
            cwd: cstring(id, "the working directory", spec.cwd.as_str())?,
            args,
            env,
            argv: Vec::new(),
            envp: Vec::new(),
            exec_paths,
            secret_mounts: secret_mount_plans(spec)?,
            shared_sysfs: -1,
            init_exe: -1,
        })
    }
}

/// The child's plan for each of the spec's secret mounts: the descriptor, and the
/// target with every directory above it.
fn secret_mount_plans(
    spec: &SandboxSpec,
) -> Result<Vec<crate::child::SecretMountPlan>, SandboxError> {
    let id = spec.id.as_str();
    if spec.secret_mounts.len() > crate::child::MAX_SECRET_MOUNTS {
        return Err(SandboxError::Spec {
            id: id.to_owned(),
            why: format!(
                "{} secret mounts: at most {}",
                spec.secret_mounts.len(),
                crate::child::MAX_SECRET_MOUNTS
            ),
        });
    }
    spec.secret_mounts
        .iter()
        .map(|m| {
            let mut dirs = Vec::new();
            let mut at = String::new();
            for part in m.target.split('/').filter(|p| !p.is_empty()) {
                at.push('/');
                at.push_str(part);
                dirs.push(cstring(id, "a secret mount's path", at.as_str())?);
            }
            Ok(crate::child::SecretMountPlan {
                fd: std::os::fd::AsRawFd::as_raw_fd(&*m.mount),
                target: cstring(id, "a secret mount's path", m.target.as_str())?,
                dirs,
            })
        })
        .collect()
}

/// A sandbox ready to exec its command (see [`Sandbox::prepare`]).
pub struct Prepared {
    id: String,
    pid: i32,
    sync_w: Option<OwnedFd>,
    err_r: OwnedFd,
    /// The stdout and stderr pipes and the log file, handed to the log pump at launch.
    output: Option<(OwnedFd, OwnedFd, std::fs::File)>,
    cgroup: Option<Cgroup>,
    scratch: ScratchDir,
    network: Option<net::NetworkSlot>,
    log_path: std::path::PathBuf,
    log_max_bytes: u64,
    log_limits: crate::logs::LogLimits,
    tee_output: bool,
    exe: String,
    armed: bool,
    stop_signal: i32,
    probe: Option<crate::ProbeChannel>,
}

impl Prepared {
    /// The instance id it was prepared for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sandbox's process (its init once launched).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lets the child exec its command; returns once it runs (or with the failed step).
    pub fn launch(mut self) -> Result<Instance, SandboxError> {
        let id = self.id.clone();
        let prep = |what: &'static str| {
            let id = id.clone();
            move |source| SandboxError::Prepare { id, what, source }
        };
        // Opened while the sandbox is still armed: if this fails, dropping it kills the
        // child and removes its cgroup; after the app runs, nothing could.
        let pidfd = rustix::process::Pid::from_raw(self.pid)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()))
            .map_err(|e| prep("opening a pidfd")(std::io::Error::from(e)))?;
        // The child may already have failed and exited; its report is read below.
        if let Some(sync_w) = self.sync_w.take() {
            let _ = rustix::io::write(&sync_w, &[1]);
        }
        let mut report = [0u8; 8];
        let mut got = 0;
        while got < report.len() {
            match rustix::io::read(&self.err_r, &mut report[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        if got > 0 {
            let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
            let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
            let mut source = std::io::Error::from_raw_os_error(errno);
            if step == Step::Exec as u32 && errno == libc::ENOENT {
                source = std::io::Error::new(
                    source.kind(),
                    format!("{:?} not found in the image (PATH searched)", self.exe),
                );
            }
            return Err(SandboxError::Setup {
                id: id.clone(),
                step: Step::describe(step),
                source,
            });
        }
        let (out_r, errout_r, log) = self
            .output
            .take()
            .expect("a prepared sandbox has its output pipes");
        let log = crate::logs::LogFile::new(self.log_path.clone(), log, self.log_max_bytes)
            .within(self.log_limits.budget.clone());
        let pump =
            crate::log_pump::spawn(out_r, errout_r, log, self.log_limits.rate, self.tee_output)
                .map_err(prep("starting the log pump"))?;
        let cgroup = self
            .cgroup
            .take()
            .expect("a prepared sandbox has its cgroup");
        self.armed = false;
        Ok(Instance::new(
            id.clone(),
            self.pid,
            pidfd,
            cgroup,
            self.network,
            self.scratch.clone(),
            self.log_path.clone(),
            pump,
        )
        .stopping_with(self.stop_signal)
        .probed_through(self.probe.take()))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, 0) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
        }
        // Its namespace is dying: the slot is free only once the veth is gone too.
        if let Some(slot) = &self.network {
            net::await_link_gone(slot, Duration::from_secs(2));
        }
        if let Some(cg) = self.cgroup.take() {
            cg.remove(Duration::from_secs(5));
        }
        self.scratch.remove();
    }
}
