//! `skiff run`: one instance of an image in the foreground. Output streams to the terminal
//! (and to the instance log); SIGINT/SIGTERM/SIGHUP are forwarded to the instance, which
//! then has the grace period to exit before everything in it is killed. Exits with the
//! instance's own code (128+N when killed by signal N).

use crate::home::Home;
use anyhow::Context;
use clap::Args;
use skiff_image::{ProcessConfig, ResolvedUser};
use skiff_sandbox::{Limits, NetworkSlot, Sandbox, SandboxSpec};
use skiff_store::{ExitRecord, NewInstance, Store};
use std::path::{Path, PathBuf};
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
    /// Command replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_memory(s: &str) -> Result<u64, String> {
    skiff_core::parse_memory_bytes(s).map_err(|e| e.to_string())
}

fn parse_cpu(s: &str) -> Result<u64, String> {
    skiff_core::parse_cpu_millis(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: want e.g. 10s, 500ms, 1m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration {s:?}: unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
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

fn random_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the kernel's random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("r{hex}")
}

/// Cleans up after instances whose supervisor died (their processes died with it, by the
/// parent-death signal) and marks them lost, freeing their network slots.
fn reclaim_lost(db: &mut Store, sandbox: &Sandbox, run_dir: &Path) -> anyhow::Result<()> {
    for inst in db.running_instances()? {
        let alive = match (
            process_start_time(inst.supervisor_pid),
            inst.supervisor_start,
        ) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !alive {
            if sandbox.reclaim(&inst.id, run_dir, inst.net_slot.map(NetworkSlot::new)) {
                tracing::warn!(instance = %inst.id, "reclaimed the leftovers of a lost instance");
            }
            db.finish_instance(&inst.id, None)?;
        }
    }
    Ok(())
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22), or
/// `None` if there is no such process.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Where instances' scratch mount points live.
const RUN_DIR: &str = "/run/skiff/instances";

fn merged_env(
    image_env: &[String],
    extra: &[String],
    port: u16,
    user: &ResolvedUser,
) -> anyhow::Result<Vec<String>> {
    let mut env: Vec<String> = image_env.to_vec();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    if !image_env.iter().any(|e| e.starts_with("HOME=")) {
        set(format!("HOME={}", user.home));
    }
    set(format!("PORT={port}"));
    for kv in extra {
        anyhow::ensure!(
            kv.contains('=') && !kv.starts_with('='),
            "environment entry {kv:?} is not KEY=VALUE"
        );
        set(kv.clone());
    }
    Ok(env)
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
    let env = merged_env(&process.env, &a.env, a.port, &user)?;
    let id = match a.id {
        Some(id) => {
            skiff_core::validate_instance_id(&id)?;
            id
        }
        None => random_id(),
    };
    let sandbox = Sandbox::new().context("preparing the sandbox runtime")?;
    reclaim_lost(&mut db, &sandbox, Path::new(RUN_DIR))?;
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
        run_dir: PathBuf::from(RUN_DIR),
        scratch_bytes: a.memory,
        tee_output: true,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_tells_processes_apart() {
        let me = process_start_time(std::process::id()).expect("this process exists");
        assert_eq!(process_start_time(std::process::id()), Some(me));
        assert!(process_start_time(1).is_some_and(|init| init <= me));
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5h").is_err() && parse_duration("x").is_err());
    }

    #[test]
    fn env_overrides_and_port() {
        let user = ResolvedUser {
            uid: 0,
            gid: 0,
            groups: vec![],
            home: "/root".into(),
        };
        let env = merged_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into()],
            9000,
            &user,
        )
        .unwrap();
        assert_eq!(env, vec!["PATH=/bin", "HOME=/root", "PORT=9000", "A=2"]);
        assert!(merged_env(&[], &["NOEQUALS".into()], 1, &user).is_err());
    }
}
