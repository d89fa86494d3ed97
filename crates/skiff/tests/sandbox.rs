//! End-to-end sandbox tests: real namespaces, cgroups, mounts, veths and processes, from
//! a busybox image packed by the image store. The isolation probe runs *inside* the
//! sandbox and reports what it can see and do.

use skiff_image::{ImageStore, PackOptions};
use skiff_sandbox::{Instance, Limits, NetworkSlot, Sandbox, SandboxSpec};
use skiff_store::{NewInstance, Store};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "grep", "id", "hostname", "mount", "touch", "nc", "unshare",
    "sleep", "awk", "head", "true", "wc", "tr", "seq", "mkdir", "ln",
];

/// One data directory for every test in this binary: network slots are allocated from its
/// database, so parallel tests never share an address.
struct World {
    home: PathBuf,
    images: ImageStore,
    image: skiff_store::ImageRecord,
    sandbox: Sandbox,
    db: Mutex<Store>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        remove_homes_of_finished_runs();
        let home = std::env::temp_dir().join(format!("skiff-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let root = home.join("rootfs-src");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("busybox-static is installed by scripts/deps");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        let images = ImageStore::open(&home).unwrap();
        let mut db = Store::open(&home.join("skiff.db")).unwrap();
        let opts = PackOptions {
            tag: Some("busybox:e2e".parse().unwrap()),
            entrypoint: vec!["/bin/sh".into()],
            ..Default::default()
        };
        let image = images.pack(&mut db, &root, &opts).unwrap();
        World {
            home,
            images,
            image,
            sandbox: zygote_runtime(),
            db: Mutex::new(db),
        }
    })
}

/// A runtime as the daemon's: sandboxes cloned by a zygote started from skiff's binary.
fn zygote_runtime() -> Sandbox {
    Sandbox::new("sandbox-tests")
        .unwrap()
        .with_zygote(&skiff_binary())
        .unwrap()
}

/// skiff's binary, as the daemon opens it to start its zygote.
fn skiff_binary() -> rustix::fd::OwnedFd {
    rustix::fs::open(
        env!("CARGO_BIN_EXE_skiff"),
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

/// Earlier runs of this test binary cannot remove their data directory (the shared world
/// lives until the process exits), so each run removes those of runs that are over.
fn remove_homes_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("skiff-e2e-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// This process's start time as `skiff run` records it, so a concurrent `skiff run`
/// sees this test process as the live supervisor of the instances it starts.
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn unique_id(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("t{}-{tag}-{n}", std::process::id())
}

fn spec(id: &str, script: &str, user: (u32, u32)) -> SandboxSpec {
    let w = world();
    let slot =
        w.db.lock()
            .unwrap()
            .create_instance(
                &NewInstance {
                    id: id.into(),
                    image_digest: w.image.digest.clone(),
                    supervisor_pid: std::process::id(),
                    supervisor_start: own_start_time(),
                    log_path: String::new(),
                    service: None,
                },
                0..skiff_sandbox::SLOTS,
            )
            .unwrap();
    SandboxSpec {
        id: id.into(),
        layers: w.images.rootfs_layers(&w.image),
        read_only: false,
        resolv_conf: None,
        drop_caps: 0,
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: user.0,
        gid: user.1,
        groups: vec![],
        limits: Limits {
            memory_bytes: Some(256 << 20),
            cpu_millis: Some(1000),
            pids: Some(256),
        },
        network: Some(NetworkSlot::new(slot)),
        log_path: w.home.join("logs").join(format!("{id}.log")),
        log_max_bytes: 1 << 20,
        log_limits: skiff_sandbox::LogLimits::default(),
        run_dir: w.home.join("run"),
        scratch_bytes: 64 << 20,
        tee_output: false,
        secret_mounts: Vec::new(),
        init: false,
        exec_probes: false,
        stop_signal: libc::SIGTERM,
        // As the daemon runs instances by default.
        user_namespace: Some(skiff_sandbox::userns::host_base(slot)),
    }
}

fn release(id: &str) {
    world()
        .db
        .lock()
        .unwrap()
        .finish_instance(id, None)
        .unwrap();
}

/// The instance's stdout lines from its log (the text after `<time> stdout F `).
fn stdout_of(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, t)| t.to_owned()))
        .collect()
}

fn run_to_end(spec: &SandboxSpec) -> (skiff_sandbox::Exit, Vec<String>) {
    let mut inst = world().sandbox.start(spec).unwrap();
    let exit = inst
        .wait_timeout(Some(Duration::from_secs(60)))
        .unwrap()
        .expect("instance finished in time");
    release(&spec.id);
    (exit, stdout_of(&spec.log_path))
}

fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("probe printed no {key}= line; output: {lines:?}"))
}

const PROBE: &str = r#"
echo pids=$(ls /proc | grep -c '^[0-9]')
echo pid1=$(cat /proc/1/comm)
if touch /probe-write 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi
if touch /tmp/probe-write 2>/dev/null; then echo tmp=writable; else echo tmp=readonly; fi
mkdir -p /tmp/m
if mount -t tmpfs none /tmp/m 2>/dev/null; then echo mount=allowed; else echo mount=denied; fi
if echo hi | nc -w 1 127.0.0.1 $HOST_PORT 2>/dev/null; then echo loopback=reached; else echo loopback=unreachable; fi
if echo hi | nc -w 1 $HOST_ADDR $HOST_PORT 2>/dev/null; then echo hostaddr=reached; else echo hostaddr=unreachable; fi
if echo hi | nc -w 1 $HOST_ADDR $WILD_PORT 2>/dev/null; then echo hostwild=reached; else echo hostwild=unreachable; fi
if unshare -n true 2>/dev/null; then echo unshare=allowed; else echo unshare=denied; fi
if unshare -U true 2>/dev/null; then echo userns=allowed; else echo userns=denied; fi
if echo 1 > /proc/sys/kernel/sysrq 2>/dev/null; then echo procsys=writable; else echo procsys=readonly; fi
echo hostname=$(hostname)
echo etchostname=$(cat /etc/hostname)
echo localhost=$(grep -w localhost /etc/hosts | head -n 1 | awk '{print $1}')
echo selfaddr=$(grep -w "$(hostname)" /etc/hosts | awk '{print $1}')
echo uid=$(id -u)
echo uidmap=$(cat /proc/self/uid_map)
grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs|SigIgn|SigBlk):' /proc/self/status | tr -d '\t' | tr ':' '='
echo filesystems=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") print $3, $(i + 1) }' /proc/self/mountinfo | grep -v cgroup | sort -u | wc -l)
if echo x > /dev/null && [ "$(head -c 5 /dev/zero | wc -c)" = 5 ]; then echo devices=usable; else echo devices=unusable; fi
if touch /dev/shm/probe 2>/dev/null; then echo shm=writable; else echo shm=readonly; fi
echo firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l)
echo policy=$(awk '{print $41}' /proc/self/stat)
if touch /sys/firmware/probe 2>/dev/null; then echo masked=writable; else echo masked=readonly; fi
"#;

fn probe(read_only: bool, user: (u32, u32)) -> (Vec<String>, String, usize, std::net::Ipv4Addr) {
    // A server on the host's loopback that the sandbox must not reach.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // And one on every host address: only the host firewall keeps instances from it.
    let wild = TcpListener::bind("0.0.0.0:0").unwrap();
    let wild_port = wild.local_addr().unwrap().port();
    wild.set_nonblocking(true).unwrap();
    let id = unique_id("probe");
    let mut s = spec(&id, PROBE, user);
    s.read_only = read_only;
    let host_addr = s.network.unwrap().host_addr();
    let addr = s.network.unwrap().instance_addr();
    s.env.push(format!("HOST_PORT={port}"));
    s.env.push(format!("HOST_ADDR={host_addr}"));
    s.env.push(format!("WILD_PORT={wild_port}"));
    let (exit, lines) = run_to_end(&s);
    assert_eq!(exit.code, Some(0), "probe failed: {lines:?}");
    let mut accepted = 0;
    for l in [&listener, &wild] {
        while let Ok((mut c, _)) = l.accept() {
            let mut b = [0u8; 8];
            let _ = c.read(&mut b);
            accepted += 1;
        }
    }
    (lines, id, accepted, addr)
}

#[test]
fn isolation_probe_as_root_read_only() {
    let (lines, id, accepted, addr) = probe(true, (0, 0));
    let pids: u32 = value(&lines, "pids").parse().unwrap();
    assert!(pids <= 4, "sees {pids} pids: {lines:?}");
    assert_eq!(
        value(&lines, "pid1"),
        "sh",
        "pid 1 is the instance's own command"
    );
    assert_eq!(value(&lines, "rootfs"), "readonly");
    assert_eq!(value(&lines, "tmp"), "writable");
    assert_eq!(value(&lines, "mount"), "denied");
    assert_eq!(value(&lines, "loopback"), "unreachable");
    assert_eq!(value(&lines, "hostaddr"), "unreachable");
    assert_eq!(
        value(&lines, "hostwild"),
        "unreachable",
        "a host service on 0.0.0.0 was reached"
    );
    assert_eq!(accepted, 0, "a host server was reached");
    assert_eq!(value(&lines, "unshare"), "denied");
    // Creating a user namespace needs no capability, so only the seccomp filter stops it;
    // the control shows it works outside the sandbox on this host.
    let control = Command::new("/bin/busybox")
        .args(["unshare", "-U", "true"])
        .status()
        .unwrap();
    assert!(
        control.success(),
        "host cannot create user namespaces: the check below proves nothing"
    );
    assert_eq!(
        value(&lines, "userns"),
        "denied",
        "seccomp did not stop unshare(CLONE_NEWUSER)"
    );
    assert_eq!(value(&lines, "procsys"), "readonly");
    // Every file system a sandbox mounts costs a slot in every memory cgroup on the host
    // (docs/density.md): its own are the overlay root and /proc; the scratch tmpfs (the
    // upper layer, /dev, /tmp, /dev/shm, the masks) and /sys are shared by all sandboxes
    // (tests below), and the cgroup view binds the host's.
    let filesystems: u32 = value(&lines, "filesystems").parse().unwrap();
    assert!(filesystems <= 4, "{filesystems} file systems: {lines:?}");
    assert_eq!(value(&lines, "devices"), "usable");
    assert_eq!(
        value(&lines, "shm"),
        "writable",
        "/dev/shm under a read-only root"
    );
    assert_eq!(
        value(&lines, "firmware"),
        "0",
        "/sys/firmware is not masked"
    );
    assert_eq!(value(&lines, "masked"), "readonly");
    assert_eq!(value(&lines, "hostname"), id);
    assert_eq!(value(&lines, "etchostname"), id);
    assert_eq!(value(&lines, "localhost"), "127.0.0.1");
    assert_eq!(
        value(&lines, "selfaddr"),
        addr.to_string(),
        "own name resolves to own address"
    );
    assert_eq!(value(&lines, "uid"), "0");
    // Root here is an unprivileged uid of the host's (its user namespace's first).
    let map: Vec<&str> = value(&lines, "uidmap").split_whitespace().collect();
    assert_eq!(map[0], "0");
    assert!(map[1].parse::<u32>().unwrap() >= 1 << 29, "{map:?}");
    let mask = format!("{:016x}", skiff_sandbox::default_capability_mask());
    assert_eq!(value(&lines, "CapEff"), mask);
    assert_eq!(value(&lines, "CapBnd"), mask);
    assert_eq!(value(&lines, "Seccomp"), "2", "seccomp filter mode");
    assert_eq!(value(&lines, "NoNewPrivs"), "1");
    // No signal ignored or blocked from the daemon (a Rust program ignores SIGPIPE).
    assert_eq!(value(&lines, "SigIgn"), "0000000000000000");
    assert_eq!(value(&lines, "SigBlk"), "0000000000000000");
    // SCHED_BATCH (3): an instance woken by a request does not preempt the router.
    assert_eq!(value(&lines, "policy"), "3", "scheduling policy");
}

/// Whether process `pid` has exited (a zombie not yet reaped, or gone).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => true,
    }
}

#[test]
fn a_zygote_that_died_is_replaced_and_sandboxes_are_still_made() {
    // A runtime of its own: the shared one's zygote serves the other tests meanwhile.
    let sandbox = zygote_runtime();
    let first = sandbox.zygote_pid().unwrap();
    let id = unique_id("rezygote");
    let mut inst = sandbox.start(&spec(&id, "echo made", (0, 0))).unwrap();
    let exit = inst.wait_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(exit.expect("finished in time").code, Some(0));
    release(&id);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !has_exited(first) {
        assert!(
            std::time::Instant::now() < deadline,
            "zygote {first} lives on"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let again = spec(&unique_id("rezygote"), "echo made again", (0, 0));
    let mut inst = sandbox
        .start(&again)
        .expect("a sandbox after the zygote died");
    let exit = inst.wait_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(exit.expect("finished in time").code, Some(0));
    assert_eq!(stdout_of(&again.log_path), ["made again"]);
    release(&again.id);
    let second = sandbox.zygote_pid().unwrap();
    assert_ne!(second, first, "a new zygote");
    assert!(
        has_exited(first) && !Path::new(&format!("/proc/{first}")).exists(),
        "the dead one is reaped"
    );
}

#[test]
fn every_sandbox_shows_one_shared_read_only_sys() {
    let script = r#"
echo sysdev=$(awk '$5 == "/sys" {print $3}' /proc/self/mountinfo)
echo nets=$(ls /sys/class/net | tr '\n' ' ')
if touch /sys/probe 2>/dev/null; then echo sys=writable; else echo sys=readonly; fi
"#;
    let mut seen = Vec::new();
    for n in 0..2 {
        let id = unique_id(&format!("sys{n}"));
        let (exit, lines) = run_to_end(&spec(&id, script, (0, 0)));
        release(&id);
        assert_eq!(exit.code, Some(0), "{lines:?}");
        assert_eq!(value(&lines, "sys"), "readonly");
        // The zygote's empty network namespace: neither the host's devices nor eth0.
        assert_eq!(value(&lines, "nets").trim(), "lo", "{lines:?}");
        seen.push(value(&lines, "sysdev").to_owned());
    }
    assert!(!seen[0].is_empty());
    assert_eq!(seen[0], seen[1], "each sandbox mounted a sysfs of its own");
}

#[test]
fn sandboxes_keep_their_files_in_one_shared_tmpfs_apart_and_they_go_with_them() {
    // A runtime of its own, to count the shared tmpfs's directories while no other test's
    // sandboxes come and go in it.
    let sandbox = zygote_runtime();
    assert_eq!(
        sandbox.scratch_directories(),
        Some(0),
        "this kernel hands out binds of a detached tmpfs: sandboxes share one"
    );
    let tmp_device = r#"awk '$5 == "/tmp" {print $3}' /proc/self/mountinfo"#;
    // The first writes to /tmp, /dev/shm and its root (a deep tree, and links out of its
    // tree), then waits; the second looks for the first's files while it runs.
    let writer = format!(
        r#"echo secret > /tmp/first-was-here && echo x > /dev/shm/first && echo y > /first
d=/tmp/deep; for i in $(seq 1 300); do d=$d/d; done; mkdir -p $d && ln -s / $d/root-link
echo tmpdev=$({tmp_device}); echo ready; sleep 60"#
    );
    let reader = format!(
        r#"echo tmpdev=$({tmp_device}); echo tmp=$(ls -A /tmp | tr '\n' ' ')
echo shm=$(ls -A /dev/shm | tr '\n' ' '); ls /first 2>/dev/null && echo root=seen
cat /tmp/first-was-here 2>/dev/null; echo done"#
    );
    let first_spec = spec(&unique_id("scratch-a"), &writer, (0, 0));
    let mut first = sandbox.start(&first_spec).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stdout_of(&first_spec.log_path).contains(&"ready".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never got ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sandbox.scratch_directories(), Some(1));
    let second_spec = spec(&unique_id("scratch-b"), &reader, (0, 0));
    let mut second = sandbox.start(&second_spec).unwrap();
    let exit = second.wait_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(exit.expect("finished in time").code, Some(0));
    let (seen, written) = (
        stdout_of(&second_spec.log_path),
        stdout_of(&first_spec.log_path),
    );
    assert_eq!(value(&seen, "tmp").trim(), "", "{seen:?}");
    assert_eq!(value(&seen, "shm").trim(), "", "{seen:?}");
    assert!(
        !seen.iter().any(|l| l == "root=seen" || l == "secret"),
        "{seen:?}"
    );
    assert!(!value(&written, "tmpdev").is_empty(), "{written:?}");
    assert_eq!(
        value(&written, "tmpdev"),
        value(&seen, "tmpdev"),
        "each sandbox mounted a tmpfs of its own"
    );
    assert_eq!(
        sandbox.scratch_directories(),
        Some(1),
        "the reader's files went"
    );
    first.kill().unwrap();
    first.wait_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(
        sandbox.scratch_directories(),
        Some(0),
        "the writer's files went"
    );
    release(&first_spec.id);
    release(&second_spec.id);
}

#[test]
fn isolation_probe_as_image_user_with_writable_layer() {
    let (lines, _, _, _) = probe(false, (1000, 1000));
    assert_eq!(value(&lines, "uid"), "1000");
    assert_eq!(
        value(&lines, "CapEff"),
        "0000000000000000",
        "a non-root user has no capabilities"
    );
    assert_eq!(
        value(&lines, "rootfs"),
        "readonly",
        "uid 1000 cannot write root-owned /"
    );
    assert_eq!(value(&lines, "mount"), "denied");
}

#[test]
fn a_non_root_app_opens_dev_stdout_and_dev_stderr_and_binds_port_80() {
    let id = unique_id("nonroot");
    let script = r#"
if echo to-stdout > /dev/stdout; then echo stdout=ok; else echo stdout=denied; fi
if echo to-stderr > /dev/stderr; then echo stderr=ok; else echo stderr=denied; fi
nc -l -p 80 >/dev/null 2>&1 &
listening=no
for try in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  # busybox nc listens on IPv6's any address when it can: look in both tables.
  if grep -Eq ':0050 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6; then listening=yes; break; fi
  sleep 0.1
done
echo bind80=$listening
kill %1 2>/dev/null
echo uid=$(id -u)
"#;
    let (exit, lines) = run_to_end(&spec(&id, script, (1000, 1000)));
    assert_eq!(exit.code, Some(0), "{lines:?}");
    assert_eq!(value(&lines, "uid"), "1000");
    assert_eq!(value(&lines, "stdout"), "ok", "{lines:?}");
    assert_eq!(value(&lines, "stderr"), "ok", "{lines:?}");
    assert_eq!(value(&lines, "bind80"), "yes", "{lines:?}");
    assert!(lines.iter().any(|l| l == "to-stdout"), "{lines:?}");
}

#[test]
fn the_instance_sees_its_own_cgroup_and_limits_read_only() {
    let id = unique_id("cgview");
    let script = r#"
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo memory=$(cat /sys/fs/cgroup/memory.max)
  echo pids=$(cat /sys/fs/cgroup/pids.max)
  echo cpu=weight:$(cat /sys/fs/cgroup/cpu.weight)
  f=/sys/fs/cgroup/memory.max
else
  echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
  echo pids=$(cat /sys/fs/cgroup/pids/pids.max)
  echo cpu=shares:$(cat /sys/fs/cgroup/cpu/cpu.shares)
  f=/sys/fs/cgroup/memory/memory.limit_in_bytes
fi
if echo 1 > $f 2>/dev/null; then echo limits=writable; else echo limits=readonly; fi
if mkdir /sys/fs/cgroup/escape 2>/dev/null; then echo tree=writable; else echo tree=readonly; fi
echo own=$(grep -m1 -E 'memory|^0::' /proc/self/cgroup | cut -d: -f3)
"#;
    let mut half_a_core = spec(&id, script, (0, 0));
    half_a_core.limits.cpu_millis = Some(500);
    let (exit, lines) = run_to_end(&half_a_core);
    assert_eq!(exit.code, Some(0), "{lines:?}");
    assert_eq!(
        value(&lines, "memory"),
        (256u64 << 20).to_string(),
        "{lines:?}"
    );
    assert_eq!(value(&lines, "pids"), "256", "{lines:?}");
    // Half a CPU weighs as a 500m Kubernetes request: 512 shares, weight 20.
    assert!(
        ["weight:20", "shares:512"].contains(&value(&lines, "cpu")),
        "{lines:?}"
    );
    assert_eq!(value(&lines, "limits"), "readonly", "{lines:?}");
    assert_eq!(value(&lines, "tree"), "readonly", "{lines:?}");
    assert_eq!(
        value(&lines, "own"),
        "/",
        "its cgroup is its root: {lines:?}"
    );
}

#[test]
fn writes_land_in_a_throwaway_layer_not_the_image() {
    let id = unique_id("write");
    let s = spec(
        &id,
        "echo scribble > /bin/new-file && echo changed > /etc/passwd && cat /etc/passwd",
        (0, 0),
    );
    let (exit, lines) = run_to_end(&s);
    assert_eq!(exit.code, Some(0), "{lines:?}");
    assert_eq!(lines, vec!["changed"]);
    for layer in &s.layers {
        assert!(
            !layer.join("bin/new-file").exists(),
            "write reached the image layer"
        );
        let passwd = std::fs::read_to_string(layer.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:"), "image file modified");
    }
    // A second instance sees the pristine image.
    let id2 = unique_id("write2");
    let (_, lines) = run_to_end(&spec(&id2, "ls /bin/new-file 2>&1 || echo absent", (0, 0)));
    assert_eq!(lines.last().map(String::as_str), Some("absent"));
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let id = unique_id("oom");
    let mut s = spec(&id, "", (0, 0));
    s.limits.memory_bytes = Some(32 << 20);
    s.args = vec![
        "/bin/awk".into(),
        "BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (1) s = s s }".into(),
    ];
    let (exit, _) = run_to_end(&s);
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(exit.oom_killed, "OOM kill not reported: {exit:?}");
}

#[test]
fn fork_bomb_stops_at_pids_limit_and_host_stays_responsive() {
    let id = unique_id("bomb");
    // The first shell forks nothing once the bomb runs: a fork of its own failing at
    // the limit would end it (dash exits 2 on "Cannot fork") before it is stopped. So
    // the bomb starts in a subshell, and `wait` is a builtin.
    let mut s = spec(
        &id,
        "sleep 30 & (bomb() { bomb | bomb & }; bomb) & wait",
        (0, 0),
    );
    s.limits.pids = Some(32);
    let w = world();
    let mut inst = w.sandbox.start(&s).unwrap();
    let cg = inst
        .cgroup()
        .unwrap()
        .dirs()
        .iter()
        .find(|d| d.join("pids.current").exists())
        .cloned()
        .expect("a cgroup directory with the pids controller");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut peak = 0u64;
    while Instant::now() < deadline {
        let current: u64 = std::fs::read_to_string(cg.join("pids.current"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        peak = peak.max(current);
        // The host still forks and runs programs promptly.
        let t = Instant::now();
        assert!(Command::new("/bin/true").status().unwrap().success());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "host unresponsive: {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = std::fs::read_to_string(cg.join("pids.events")).unwrap_or_default();
    assert!(
        events.contains("max") && !events.contains("max 0"),
        "pids limit never hit: {events}"
    );
    assert!(peak <= 32, "{peak} tasks, above the limit");
    let exit = inst.stop(Duration::from_millis(200)).unwrap();
    release(&id);
    assert_eq!(
        exit.signal,
        Some(libc::SIGKILL),
        "the bomb's shell ended before it was stopped: {exit:?}"
    );
    assert_nothing_left(&inst, &s);
}

fn assert_nothing_left(inst: &Instance, s: &SandboxSpec) {
    assert!(
        !Path::new(&format!("/proc/{}", inst.pid())).exists(),
        "first process still exists"
    );
    assert!(inst.cgroup().is_none(), "cgroup handle kept");
    let cgroup_dirs = Command::new("find")
        .args(["/sys/fs/cgroup", "-name", &s.id])
        .output()
        .unwrap();
    assert!(
        cgroup_dirs.stdout.is_empty(),
        "cgroup left: {}",
        String::from_utf8_lossy(&cgroup_dirs.stdout)
    );
    assert!(
        !skiff_sandbox::host_link_exists(&s.network.unwrap()),
        "veth left"
    );
    assert!(!s.run_dir.join(&s.id).exists(), "scratch dir left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&s.id), "mount left in the host namespace");
    assert!(s.log_path.exists(), "the log must outlive the instance");
}

#[test]
fn stop_escalates_to_sigkill_and_leaves_nothing() {
    let id = unique_id("stop");
    let s = spec(
        &id,
        "trap '' TERM; sleep 1000 & sleep 1000 & echo ready; wait",
        (0, 0),
    );
    let mut inst = start_until_ready(&s);
    let t = Instant::now();
    let exit = inst.stop(Duration::from_millis(300)).unwrap();
    release(&id);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "did not wait the grace period"
    );
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert!(!exit.oom_killed);
    assert_nothing_left(&inst, &s);
}

#[test]
fn sigterm_lets_the_app_exit_gracefully() {
    let id = unique_id("term");
    let s = spec(
        &id,
        "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        (0, 0),
    );
    let mut inst = start_until_ready(&s);
    let exit = inst.stop(Duration::from_secs(10)).unwrap();
    release(&id);
    assert_eq!(exit.code, Some(3));
    assert!(stdout_of(&s.log_path).contains(&"got TERM".to_string()));
    assert_nothing_left(&inst, &s);
}

/// Starts `s` and waits for it to print `ready`.
fn start_until_ready(s: &SandboxSpec) -> Instance {
    let inst = world().sandbox.start(s).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stdout_of(&s.log_path).contains(&"ready".to_string()) {
        assert!(Instant::now() < deadline, "instance never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    inst
}

/// Starts `script` under the init and waits for it to print `ready`.
fn start_under_init(tag: &str, script: &str) -> (Instance, SandboxSpec) {
    let mut s = spec(&unique_id(tag), script, (0, 0));
    s.init = true;
    (start_until_ready(&s), s)
}

#[test]
fn under_the_init_a_shell_that_did_not_exec_stops_on_sigterm_at_once() {
    // `sh -c` with two commands cannot exec the first: sleep runs as its child, and
    // neither has a SIGTERM handler. As PID 1 the shell would ignore SIGTERM and wait
    // for the SIGKILL after the grace; the init sends it to the whole group.
    let (mut inst, s) = start_under_init("initterm", "echo ready; sleep 1000; echo never");
    let t0 = Instant::now();
    let exit = inst.stop(Duration::from_secs(20)).unwrap();
    let took = t0.elapsed();
    release(&s.id);
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    assert_eq!(exit.code, Some(128 + libc::SIGTERM), "{exit:?}");
    assert!(!stdout_of(&s.log_path).contains(&"never".to_string()));
    assert_nothing_left(&inst, &s);
}

#[test]
fn the_images_stop_signal_reaches_the_app_through_the_init() {
    // nginx asks for SIGQUIT (a graceful stop); SIGTERM would be its fast one.
    let id = unique_id("quit");
    let mut s = spec(
        &id,
        "trap 'echo got QUIT; exit 4' QUIT; trap 'echo got TERM; exit 5' TERM; echo ready; \
         while :; do sleep 0.05; done",
        (0, 0),
    );
    s.init = true;
    s.stop_signal = libc::SIGQUIT;
    let mut inst = start_until_ready(&s);
    let exit = inst.stop(Duration::from_secs(10)).unwrap();
    release(&id);
    assert_eq!(exit.code, Some(4), "{exit:?}");
    assert!(stdout_of(&s.log_path).contains(&"got QUIT".to_string()));
}

/// Runs a script under the init of a sandbox from `runtime` that leaves an orphan and
/// ends with status 7: how it ended, what it printed, and what the init executed.
fn run_orphaning_app_under_init(
    runtime: &Sandbox,
    tag: &str,
) -> (skiff_sandbox::Exit, Vec<String>, Option<PathBuf>) {
    // PID 1's name is read last: the sandbox's first process executes the init only once
    // the app has executed (app_fork.rs), so the app's first instants may still see it.
    let script = r#"
echo apppid=$$
sh -c 'sleep 0.2 & exit 0'
sleep 1
echo zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
echo pid1=$(cat /proc/1/comm)
exit 7
"#;
    let mut s = spec(&unique_id(tag), script, (0, 0));
    s.init = true;
    let mut inst = runtime.start(&s).unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", inst.pid())).ok();
    let exit = inst
        .wait_timeout(Some(Duration::from_secs(30)))
        .unwrap()
        .expect("the app ended");
    release(&s.id);
    (exit, stdout_of(&s.log_path), exe)
}

#[test]
fn under_the_init_orphans_are_reaped_and_the_apps_status_is_the_instances() {
    let (exit, lines, _) = run_orphaning_app_under_init(&world().sandbox, "initreap");
    assert_eq!(value(&lines, "pid1"), "skiff-init", "{lines:?}");
    assert_ne!(value(&lines, "apppid"), "1", "the app is not PID 1");
    assert_eq!(
        value(&lines, "zombies"),
        "0",
        "the orphaned sleep was reaped"
    );
    assert_eq!(exit.code, Some(7), "{exit:?}");
}

#[test]
fn the_init_is_the_small_init_executable_not_a_clone_of_the_zygote() {
    let (mut inst, s) = start_under_init("initexe", "echo ready; sleep 1000");
    let pid = inst.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    inst.stop(Duration::from_secs(5)).unwrap();
    release(&s.id);
    assert!(
        exe.to_string_lossy().starts_with("/memfd:skiff-init"),
        "the init executes {exe:?}"
    );
    assert_eq!(comm.trim(), "skiff-init");
    // Nothing of skiff's binary or its libraries, no heap: the executable's own pages,
    // its stack and the kernel's vDSO only.
    for line in maps.lines() {
        let name = line.split_whitespace().nth(5).unwrap_or("");
        assert!(
            name.is_empty()
                || name.starts_with("/memfd:skiff-init")
                || name.starts_with("[v")
                || name == "[stack]",
            "the init maps {line}"
        );
    }
    let anon_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(anon_kib <= 32, "the init holds {anon_kib} KiB of its own");
}

#[test]
fn without_a_zygote_the_init_runs_in_the_sandboxs_own_process() {
    // The runtime without a zygote (sandboxes cloned from this process) has no init
    // executable: the same init loop runs in the clone.
    let runtime = Sandbox::new("sandbox-tests-no-zygote").unwrap();
    let (exit, lines, exe) = run_orphaning_app_under_init(&runtime, "initinproc");
    assert_eq!(value(&lines, "pid1"), "skiff-init", "{lines:?}");
    assert_eq!(value(&lines, "zombies"), "0", "{lines:?}");
    assert_eq!(exit.code, Some(7), "{exit:?}");
    if let Some(exe) = exe {
        assert!(!exe.to_string_lossy().contains("memfd"), "{exe:?}");
    }
}

#[test]
fn host_reaches_the_instance_on_its_address() {
    let id = unique_id("serve");
    let s = spec(&id, "echo ready; echo pong | nc -l -p 8080", (0, 0));
    let addr = s.network.unwrap().instance_addr();
    let mut inst = world().sandbox.start(&s).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        if let Ok(mut c) =
            std::net::TcpStream::connect_timeout(&(addr, 8080).into(), Duration::from_millis(200))
        {
            let mut out = String::new();
            c.write_all(b"ping\n").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.read_to_string(&mut out);
            if !out.is_empty() {
                break out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "instance never answered on {addr}:8080"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    inst.stop(Duration::from_secs(1)).unwrap();
    release(&id);
    assert_eq!(reply.trim(), "pong");
}

#[test]
fn missing_command_is_reported_with_the_failing_step() {
    // Under the init too: there the app's process fails after it was set apart.
    for init in [false, true] {
        let id = unique_id("noexec");
        let mut s = spec(&id, "", (0, 0));
        s.args = vec!["no-such-binary".into()];
        s.init = init;
        let err = match world().sandbox.start(&s) {
            Ok(_) => panic!("started a missing binary (init {init})"),
            Err(e) => e.to_string(),
        };
        release(&id);
        assert!(
            err.contains(&id)
                && err.contains("executing the command")
                && err.contains("no-such-binary"),
            "init {init}: {err}"
        );
        assert!(
            !s.run_dir.join(&id).exists(),
            "scratch dir left after a failed start (init {init})"
        );
    }
}

#[test]
fn cli_run_forwards_exit_code_and_output() {
    let out = skiff(&[
        "run",
        "busybox:e2e",
        "--memory",
        "64Mi",
        "-e",
        "GREETING=hello",
        "--",
        "-c",
        "echo $GREETING $PORT; exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello 8080\n");
}

#[test]
fn cli_run_reports_oom_with_exit_137() {
    let out = skiff(&[
        "run",
        "busybox:e2e",
        "--memory",
        "32Mi",
        "--",
        "-c",
        "exec awk 'BEGIN { s = \"xxxxxxxx\"; while (1) s = s s }'",
    ]);
    assert_eq!(out.status.code(), Some(137));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out of memory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the skiff CLI against the shared data directory.
fn skiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .env("SKIFF_HOME", &world().home)
        .args(args)
        .output()
        .unwrap()
}

/// Starts `skiff run` with piped stdout and waits for the instance to print `ready`.
fn spawn_cli_until_ready(
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .env("SKIFF_HOME", &world().home)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "instance did not start");
    (child, out)
}

#[test]
fn cli_run_forwards_sigterm_to_the_instance() {
    let (mut child, mut out) = spawn_cli_until_ready(&[
        "run",
        "busybox:e2e",
        "--",
        "-c",
        "trap 'echo stopping; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    // SAFETY: signalling the skiff process this test started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(42));
    assert_eq!(rest.trim(), "stopping");
}

#[test]
fn image_in_use_cannot_be_removed() {
    let w = world();
    let (mut child, _out) = spawn_cli_until_ready(&[
        "run",
        "--stop-timeout",
        "200ms",
        "busybox:e2e",
        "--",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    let rm = skiff(&["image", "rm", &w.image.digest.to_string()]);
    // SAFETY: stopping the skiff process this test started, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert_eq!(rm.status.code(), Some(1));
    let err = String::from_utf8_lossy(&rm.stderr);
    assert!(err.contains("in use by running instance"), "{err}");
    assert!(
        w.images.rootfs_layers(&w.image).iter().all(|l| l.is_dir()),
        "layers removed while in use"
    );
}

#[test]
fn killed_supervisor_takes_its_instance_along_and_is_reclaimed() {
    let w = world();
    let id = unique_id("lost");
    let (mut child, _out) = spawn_cli_until_ready(&[
        "run",
        "--id",
        &id,
        "busybox:e2e",
        "--",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    // The app may print before `skiff run` records its pid: poll for it.
    let recorded = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let pid = w.db.lock().unwrap().instance(&id).unwrap().unwrap().pid;
        if let Some(pid) = pid {
            break pid;
        }
        assert!(Instant::now() < recorded, "no pid recorded for {id}");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL: skiff gets no chance to clean up
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "instance outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = Command::new("find")
        .args(["/sys/fs/cgroup", "-name", &id])
        .output()
        .unwrap();
    assert!(
        !left.stdout.is_empty(),
        "expected a leftover cgroup to reclaim"
    );
    // The next skiff run finds the lost instance and cleans up after it.
    let out = skiff(&[
        "run",
        "--network",
        "none",
        "busybox:e2e",
        "--",
        "-c",
        "true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = w.db.lock().unwrap().instance(&id).unwrap().unwrap();
    assert_eq!(record.state, skiff_store::InstanceState::Lost);
    let left = Command::new("find")
        .args(["/sys/fs/cgroup", "-name", &id])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "cgroup not reclaimed: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        !Path::new("/run/skiff/instances").join(&id).exists(),
        "scratch dir not reclaimed"
    );
}

#[test]
fn chatty_instance_log_is_capped_and_rotated() {
    let id = unique_id("chatty");
    let s = spec(
        &id,
        "i=0; while [ $i -lt 40000 ]; do echo \"line $i padding-padding-padding\"; i=$((i+1)); done; echo last",
        (0, 0),
    );
    let (exit, lines) = run_to_end(&s);
    assert_eq!(exit.code, Some(0));
    let current = std::fs::metadata(&s.log_path).unwrap().len();
    let mut older = s.log_path.clone().into_os_string();
    older.push(".1");
    let older = std::fs::metadata(&older).expect("rotated log exists").len();
    assert!(
        current <= s.log_max_bytes && older <= s.log_max_bytes,
        "{current} {older}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("last"),
        "newest output kept"
    );
}

#[test]
fn limits_are_applied_to_the_live_cgroup() {
    let id = unique_id("limits");
    let mut s = spec(&id, "echo ready; exec sleep 1000", (0, 0));
    s.limits = Limits {
        memory_bytes: Some(96 << 20),
        cpu_millis: Some(250),
        pids: Some(50),
    };
    let mut inst = world().sandbox.start(&s).unwrap();
    let read = |file: &str| -> String {
        let dirs = inst.cgroup().unwrap().dirs();
        let dir = dirs
            .iter()
            .find(|d| d.join(file).exists())
            .unwrap_or_else(|| panic!("no cgroup directory has {file}: {dirs:?}"));
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    let v2 = inst.cgroup().unwrap().dirs().len() == 1;
    let (memory, cpu) = if v2 {
        (read("memory.max"), read("cpu.max"))
    } else {
        (
            read("memory.limit_in_bytes"),
            format!("{} {}", read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")),
        )
    };
    let pids = read("pids.max");
    let procs = read("cgroup.procs");
    inst.stop(Duration::from_millis(100)).unwrap();
    release(&id);
    assert_eq!(memory, (96u64 << 20).to_string());
    assert_eq!(cpu, "25000 100000", "0.25 CPU = 25 ms per 100 ms period");
    assert_eq!(pids, "50");
    assert!(
        procs.lines().any(|p| p.trim() == inst.pid().to_string()),
        "instance not in its cgroup: {procs}"
    );
}

/// The child between clone and exec must take no lock the parent's other threads might
/// hold at the moment of the clone. glibc's setgroups/setresgid/setresuid take one (they
/// broadcast to every thread they believe exists); here another thread keeps creating
/// and joining threads, which takes that same lock, while instances start.
#[test]
fn starting_beside_busy_threads_never_deadlocks() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::spawn(|| {}).join().unwrap();
            }
        })
    };
    for i in 0..40 {
        let id = unique_id("churn");
        let mut s = spec(&id, "exit 0", (1000, 1000));
        s.network = None;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut inst = world().sandbox.start(&s).unwrap();
            let _ = tx.send(inst.wait().unwrap());
        });
        let exit = rx.recv_timeout(Duration::from_secs(20));
        release(&id);
        if exit.is_err() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("start {i} of instance {id} deadlocked between clone and exec");
        }
        assert_eq!(exit.unwrap().code, Some(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

#[test]
fn a_prepared_sandbox_holds_none_of_the_parents_descriptors() {
    let w = world();
    // A connected socket pair in this process, as the daemon holds client connections.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let id = unique_id("prep");
    let mut s = spec(&id, "echo launched", (0, 0));
    s.network = None;
    let prepared = w.sandbox.prepare(&s).unwrap();
    // The zygote cloned it, not this process: none of this process's memory is in it.
    let pid = prepared.pid();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "skiff-sandbox\n" {
        assert!(
            Instant::now() < deadline,
            "the sandbox never started its entry"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let me = std::env::current_exe().unwrap();
    assert!(
        !maps.contains(me.to_str().unwrap()),
        "the prepared sandbox maps this test's binary: {maps}"
    );
    // The clone copied our descriptors; closing ours must still close the connection.
    drop(server_side);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = client.read(&mut buf).expect("EOF, not a timeout");
    assert_eq!(
        n, 0,
        "the connection closed although a prepared sandbox exists"
    );
    // A second sandbox prepared meanwhile does not hold up the first one's launch or end.
    let id2 = unique_id("prep");
    let mut s2 = spec(&id2, "echo second", (0, 0));
    s2.network = None;
    let second = w.sandbox.prepare(&s2).unwrap();
    let t = Instant::now();
    let mut inst = prepared.launch().unwrap();
    let exit = inst.wait_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(exit.map(|e| e.code), Some(Some(0)));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(stdout_of(&s.log_path), ["launched"]);
    drop(second);
    release(&id);
    release(&id2);
}

/// A frozen instance does not run (its ticks stop reaching the log), runs again when
/// thawed, and still stops on request while frozen.
#[test]
fn a_frozen_instance_stops_running_until_thawed_and_still_stops() {
    let id = unique_id("freeze");
    let script = "trap 'exit 7' TERM; while :; do echo tick; sleep 0.05; done";
    let mut s = spec(&id, script, (0, 0));
    s.network = None;
    let mut inst = world().sandbox.start(&s).unwrap();
    let ticks = || stdout_of(&s.log_path).len();
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("the first ticks", &|| ticks() >= 3);
    let freezer = skiff_sandbox::Freezer::open(inst.cgroup().unwrap()).unwrap();
    freezer.freeze().unwrap();
    wait_for("the cgroup frozen", &|| freezer.is_frozen().unwrap());
    // The log pump (outside the cgroup) may still carry a tick written before the freeze.
    std::thread::sleep(Duration::from_millis(100));
    let frozen_at = ticks();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ticks(), frozen_at, "ticks while frozen");
    freezer.thaw().unwrap();
    assert!(!freezer.is_frozen().unwrap());
    wait_for("ticks after the thaw", &|| ticks() >= frozen_at + 3);
    freezer.freeze().unwrap();
    wait_for("the cgroup frozen again", &|| freezer.is_frozen().unwrap());
    let t = Instant::now();
    let exit = inst.stop(Duration::from_secs(5)).unwrap();
    release(&id);
    assert_eq!(
        exit.code,
        Some(7),
        "acted on SIGTERM, so it was thawed: {exit:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "stopped at once: {:?}",
        t.elapsed()
    );
}

#[test]
fn exec_probes_run_inside_as_the_apps_user_and_time_out() {
    let id = unique_id("execprobe");
    let mut s = spec(
        &id,
        "touch /tmp/healthy; echo ready; sleep 1000",
        (1000, 1000),
    );
    s.init = true;
    s.exec_probes = true;
    let mut inst = start_until_ready(&s);
    let probe = inst
        .probe_channel()
        .expect("an instance with an init and exec probes takes probes");
    let run = |argv: &[&str], ms: u64| {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        probe.run(&argv, Duration::from_millis(ms)).unwrap()
    };
    use skiff_sandbox::ProbeStatus::{Exited, TimedOut};
    // Inside the instance: its files, its user, looked up in its PATH.
    assert_eq!(run(&["cat", "/tmp/healthy"], 2000), Exited(0));
    assert_eq!(run(&["cat", "/tmp/missing"], 2000), Exited(1));
    assert_eq!(
        run(&["sh", "-c", "test $(id -u):$(id -g) = 1000:1000"], 2000),
        Exited(0)
    );
    assert_eq!(run(&["/no/such/command"], 2000), Exited(127));
    let t0 = Instant::now();
    assert_eq!(run(&["sleep", "30"], 300), TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // The probe's process is gone, not left running beside the app.
    let sleeps = "test $(cat /proc/[0-9]*/comm | grep -cx sleep) = 1";
    assert_eq!(run(&["sh", "-c", sleeps], 2000), Exited(0));
    inst.stop(Duration::from_secs(5)).unwrap();
    release(&id);
    assert!(
        probe
            .run(&["true".to_string()], Duration::from_secs(1))
            .is_err(),
        "the init is gone"
    );
}

/// The `Uid:` line of /proc/PID/status, as the host sees it: real, effective, saved, fs.
fn host_uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line[4..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn root_in_an_instance_is_an_unprivileged_host_uid_that_owns_its_own_files() {
    let script = r#"
echo made > /made-by-root
mkdir /data && chown 1000:1000 /data && echo chowned=$(stat -c %u:%g /data)
echo etc=$(stat -c %u /etc/passwd)
echo ready
exec sleep 30
"#;
    let s = spec(&unique_id("userns"), script, (0, 0));
    let base = s.user_namespace.unwrap();
    assert!(base >= 1 << 29, "{base}");
    let mut inst = start_until_ready(&s);
    let pid = inst.pid();
    // From the host: uid 0 inside is `base` outside.
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["0", &base.to_string(), "65536"], "{map}");
    let gid_map = std::fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap();
    assert_eq!(gid_map, map);
    assert_eq!(host_uids(pid), [base; 4]);
    // What it writes is owned by that uid on the host; the image's files show as its
    // root's inside (an idmapped mount), unchanged on disk.
    let made = std::fs::metadata(format!("/proc/{pid}/root/made-by-root")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(made.uid(), base);
    let data = std::fs::metadata(format!("/proc/{pid}/root/data")).unwrap();
    assert_eq!((data.uid(), data.gid()), (base + 1000, base + 1000));
    let lines = stdout_of(&s.log_path);
    assert_eq!(value(&lines, "chowned"), "1000:1000", "{lines:?}");
    assert_eq!(value(&lines, "etc"), "0", "{lines:?}");
    let layer_passwd = s
        .layers
        .iter()
        .find_map(|l| std::fs::metadata(l.join("etc/passwd")).ok());
    assert_eq!(
        layer_passwd.map(|m| m.uid()),
        Some(0),
        "the layer on disk changed owner"
    );
    // `sleep` as PID 1 ignores SIGTERM: no grace needed.
    inst.stop(Duration::from_millis(100)).unwrap();
    release(&s.id);
}

#[test]
fn with_host_ids_root_is_root() {
    let mut s = spec(&unique_id("hostids"), "echo ready; exec sleep 30", (0, 0));
    s.user_namespace = None;
    let mut inst = start_until_ready(&s);
    assert_eq!(host_uids(inst.pid()), [0; 4]);
    let map = std::fs::read_to_string(format!("/proc/{}/uid_map", inst.pid())).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    // `sleep` as PID 1 ignores SIGTERM: no grace needed.
    inst.stop(Duration::from_millis(100)).unwrap();
    release(&s.id);
}

#[test]
fn a_user_outside_the_namespace_is_refused_by_name() {
    let s = spec(&unique_id("bigid"), "true", (70000, 70000));
    let e = world()
        .sandbox
        .prepare(&s)
        .err()
        .expect("prepared with uid 70000")
        .to_string();
    assert!(e.contains("70000") && e.contains("user namespace"), "{e}");
    release(&s.id);
}
