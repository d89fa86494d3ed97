//! `skiff run`: one instance of an image in the foreground. Output streams to the terminal
//! (and to the instance log); SIGINT/SIGTERM/SIGHUP are forwarded to the instance, which
//! then has the grace period to exit before everything in it is killed. Exits with the
//! instance's own code (128+N when killed by signal N).

use crate::home::Home;
use crate::launch::{
    parse_cpu, parse_duration, parse_memory, process_start_time, random_id, reclaim_lost,
};
use anyhow::Context;
use clap::Args;
use skiff_image::ProcessConfig;
use skiff_sandbox::{Limits, NetworkSlot, SandboxSpec};
use skiff_store::{ExitRecord, NewInstance};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct RunArgs {
    /// Image reference: name[:tag], digest, or digest prefix.
    image: String,
    /// Memory limit (e.g. 256Mi, 1G).
    #[arg(long, default_value = "512Mi", value_parser = parse_memory)]
    memory: u64,
    /// CPU limit in cores (e.g. 1, 0.5, 250m).
    #[arg(long, default_value = "1", value_parser = parse_cpu)]
    cpu: u64,
    /// Maximum number of processes and threads.
    #[arg(long, default_value_t = 4096)]
    pids: u64,
    /// Environment KEY=VALUE (repeatable; overrides the image's).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Value of $PORT in the instance.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Run as this user instead of the image's (name, uid or uid:gid, from the image).
    #[arg(long)]
    user: Option<String>,
    /// Working directory instead of the image's.
    #[arg(long)]
    workdir: Option<String>,
    /// Mount the root filesystem read-only (only /tmp and /dev/shm writable).
    #[arg(long)]
    read_only: bool,
    /// Network: `veth` (own address, reachable from the host) or `none` (loopback only).
    #[arg(long, default_value = "veth", value_parser = ["veth", "none"])]
    network: String,
    /// Grace period between SIGTERM and SIGKILL when stopping.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stop_timeout: Duration,
    /// Cap on the instance's log file; past it the log rotates to <log>.1.
    #[arg(long, default_value = "64Mi", value_parser = parse_memory)]
    log_max: u64,
    /// Instance id (default: random).
    #[arg(long)]
    id: Option<String>,
    /// Run the command itself as PID 1, without skiff's minimal init (which forwards
    /// signals to its process group and reaps zombies).
    #[arg(long)]
    no_init: bool,
    /// Command replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

pub fn run(home: &Home, a: RunArgs) -> anyhow::Result<i32> {
    let images = home.images()?;
    let mut db = home.db()?;
    let image = db
        .resolve_image(&a.image)
        .with_context(|| format!("run {}", a.image))?;
    let process = if a.command.is_empty() {
        ProcessConfig::from_image(&image)
    } else {
        ProcessConfig::with_command(&image, a.command.clone())
    }
    .with_context(|| format!("image {}", a.image))?;
    let user_spec = a.user.clone().unwrap_or_else(|| process.user.clone());
    let user = images
        .resolve_user(&image, &user_spec)
        .with_context(|| format!("image {}", a.image))?;
    let env = skiff_control::merged_env(&process.env, &a.env, a.port, &user)
        .map_err(anyhow::Error::msg)?;
    let id = match a.id {
        Some(id) => {
            skiff_core::validate_instance_id(&id)?;
            id
        }
        None => random_id("r"),
    };
    let sandbox = crate::launch::sandbox(home)?;
    reclaim_lost(&mut db, &sandbox, &home.run_dir())?;
    let log_path = home.logs_dir().join(format!("{id}.log"));
    let slot = db
        .create_instance(
            &NewInstance {
                id: id.clone(),
                image_digest: image.digest.clone(),
                supervisor_pid: std::process::id(),
                supervisor_start: process_start_time(std::process::id()).unwrap_or(0),
                log_path: log_path.display().to_string(),
                service: None,
            },
            0..skiff_sandbox::SLOTS,
        )
        .with_context(|| format!("registering instance {id}"))?;
    let spec = SandboxSpec {
        id: id.clone(),
        layers: images.rootfs_layers(&image),
        read_only: a.read_only,
        resolv_conf: None,
        drop_caps: 0,
        args: process.args,
        env,
        cwd: a.workdir.unwrap_or(process.cwd),
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        limits: Limits {
            memory_bytes: Some(a.memory),
            cpu_millis: Some(a.cpu),
            pids: Some(a.pids),
        },
        network: (a.network == "veth").then(|| NetworkSlot::new(slot)),
        log_path,
        log_max_bytes: a.log_max,
        log_limits: skiff_sandbox::LogLimits::default(),
        run_dir: home.run_dir(),
        scratch_bytes: a.memory,
        tee_output: true,
        secret_mounts: Vec::new(),
        init: !a.no_init,
        exec_probes: false,
        stop_signal: process.stop_signal,
        // A one-off run keeps host ids, as `docker run` does.
        user_namespace: None,
    };
    install_signal_handlers();
    let mut instance = match sandbox.start(&spec) {
        Ok(i) => i,
        Err(e) => {
            db.finish_instance(
                &id,
                Some(ExitRecord {
                    code: Some(127),
                    signal: None,
                    oom_killed: false,
                }),
            )?;
            return Err(e).with_context(|| format!("run {}", a.image));
        }
    };
    db.set_instance_pid(&id, instance.pid() as u32)?;
    if let Some(addr) = instance.address() {
        tracing::info!(instance = %id, %addr, "started");
    }
    let exit = supervise(&mut instance, a.stop_timeout)?;
    // Its cgroup and scratch directory go with it; then the scope's, if no other
    // instance of this data directory is using them.
    drop(instance);
    sandbox.remove_scope(&home.run_dir());
    db.finish_instance(
        &id,
        Some(ExitRecord {
            code: exit.code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
        }),
    )?;
    if exit.oom_killed {
        eprintln!(
            "skiff: instance {id} was killed: out of memory (limit {})",
            a.memory
        );
    }
    Ok(if exit.oom_killed {
        137
    } else {
        exit.shell_code()
    })
}

/// Waits for the instance, forwarding signals; a second signal, or the grace period
/// running out, kills it.
fn supervise(
    instance: &mut skiff_sandbox::Instance,
    grace: Duration,
) -> anyhow::Result<skiff_sandbox::Exit> {
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(exit) = instance.wait_timeout(Some(Duration::from_millis(100)))? {
            return Ok(exit);
        }
        let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            if stopping.is_some() {
                return Ok(instance.kill()?);
            }
            instance.signal(sig)?;
            stopping = Some(Instant::now());
        }
        if stopping.is_some_and(|t| t.elapsed() >= grace) {
            return Ok(instance.kill()?);
        }
    }
}
