//! Per-instance cgroups with memory, CPU and pids limits, on cgroup v2 (unified) hosts and
//! on v1 hosts, behind one type. On a hybrid host (v1 controllers plus an empty v2 mount)
//! v1 is used, because that is where the controllers are.
//!
//! Instances go under `<parent>/skiff/<scope>/<id>`, the scope naming one data directory
//! (so a daemon, on start, can remove whatever under its scope no live instance owns,
//! without touching another daemon's). On v1 the parent is, per controller, the cgroup
//! skiff itself runs in, so instances stay inside whatever limits skiff was given; on v2
//! it is the root (`/skiff`), because a v2 cgroup holding processes may not have children
//! with controllers. `SKIFF_CGROUP_PARENT` overrides both.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Limits applied to an instance's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (swap is not allowed on top).
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicores (1000 = one full CPU).
    pub cpu_millis: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

const CPU_PERIOD_US: u64 = 100_000;
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "freezer"];

/// Which cgroup layout the host has.
#[derive(Clone, Debug)]
pub enum Hierarchy {
    /// Unified hierarchy mounted at the path.
    V2(PathBuf),
    /// Per-controller mounts under the path (`<root>/memory`, `<root>/cpu`, …).
    V1(PathBuf),
}

impl Hierarchy {
    /// Detects the host's layout from `/sys/fs/cgroup`.
    pub fn detect() -> io::Result<Hierarchy> {
        let root = Path::new("/sys/fs/cgroup");
        let st = rustix::fs::statfs(root)?;
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        if st.f_type as i64 == CGROUP2_SUPER_MAGIC {
            Ok(Hierarchy::V2(root.to_owned()))
        } else if root.join("memory").is_dir() {
            Ok(Hierarchy::V1(root.to_owned()))
        } else {
            Err(io::Error::other(
                "no usable cgroup hierarchy at /sys/fs/cgroup",
            ))
        }
    }
}

/// An instance's cgroup (one directory on v2, one per controller on v1).
#[derive(Debug)]
pub struct Cgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

/// The `oom_kill` count in a cgroup's OOM events file (0 when it cannot be read).
pub fn oom_kills_in(file: &Path) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == "oom_kill")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// v1 `cpu.shares` for a CPU allowance in millicores, as Kubernetes turns a CPU request
/// into shares: 1024 a core, within the kernel's 2..=262144.
fn cpu_shares(millis: u64) -> u64 {
    (millis * 1024 / 1000).clamp(2, 262_144)
}

/// v2 `cpu.weight` for the same allowance: the shares mapped onto 1..=10000, as runc,
/// crun and systemd convert them.
fn cpu_weight(millis: u64) -> u64 {
    1 + (cpu_shares(millis) - 2) * 9999 / 262_142
}

/// The cgroup path (relative to the hierarchy root) that `/proc/self/cgroup` text `text`
/// gives for `controller` (`""` for the v2 line); `/` when it names none.
fn own_path(text: &str, controller: &str) -> String {
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("/"),
        );
        let matches = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        if matches {
            return path.to_owned();
        }
    }
    "/".to_owned()
}

/// Where one sandbox runtime's instances' cgroups go: `<parent>/skiff/<scope>/<id>`, one
/// scope directory per hierarchy (one on v2). Resolved once, when the runtime starts: a
/// failure to read `/proc/self/cgroup` later (out of descriptors) must not place
/// instances anywhere else, such as the root of the memory hierarchy.
#[derive(Clone, Debug)]
pub struct Placement {
    v2: bool,
    root: PathBuf,
    scopes: Vec<PathBuf>,
    /// Whether this process gave the scope its CPU weight already (see [`scope_cpu`]).
    weighed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The CPU weight of `skiff` and of a scope under it, as Kubernetes weighs `kubepods`:
/// all instances together count as many threads as the host has CPUs. Left at the
/// default, they would count as one: a cgroup competes with its siblings (on v1, with
/// each process of the daemon's own cgroup) as one thread of nice 0, so every instance
/// of the host would share one thread's due against the daemon, the load generator
/// or anything else busy beside them. Returns the file under a `cpu` directory and its
/// value: v1 `cpu.shares` (1024 per CPU), v2 `cpu.weight` (100, nice 0's, per CPU).
fn scope_cpu(v2: bool, cpus: u64) -> (&'static str, u64) {
    if v2 {
        ("cpu.weight", (cpus * 100).clamp(1, 10_000))
    } else {
        ("cpu.shares", (cpus * 1024).clamp(2, 262_144))
    }
}

impl Placement {
    /// The scope directories for `scope` (a name of `[a-z0-9-]`) on hierarchy `h`.
    pub fn resolve(h: &Hierarchy, scope: &str) -> io::Result<Placement> {
        if skiff_core::validate_instance_id(scope).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid cgroup scope {scope:?}: want 1-32 of [a-z0-9-]"),
            ));
        }
        let parent_override = std::env::var("SKIFF_CGROUP_PARENT").ok();
        let under = |dir: PathBuf, parent: &str| {
            dir.join(parent.trim_start_matches('/'))
                .join("skiff")
                .join(scope)
        };
        match h {
            Hierarchy::V2(root) => {
                let parent = parent_override.unwrap_or_else(|| "/".to_owned());
                Ok(Placement {
                    v2: true,
                    root: root.clone(),
                    scopes: vec![under(root.clone(), &parent)],
                    weighed: Default::default(),
                })
            }
            Hierarchy::V1(root) => {
                let own = match &parent_override {
                    Some(_) => String::new(),
                    None => fs::read_to_string("/proc/self/cgroup").map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("reading /proc/self/cgroup (where skiff runs): {e}"),
                        )
                    })?,
                };
                let scopes = V1_CONTROLLERS
                    .iter()
                    .filter(|c| root.join(c).is_dir())
                    .map(|c| {
                        let parent = parent_override.clone().unwrap_or_else(|| own_path(&own, c));
                        under(root.join(c), &parent)
                    })
                    .collect();
                Ok(Placement {
                    v2: false,
                    root: root.clone(),
                    scopes,
                    weighed: Default::default(),
                })
            }
        }
    }

    /// Gives `skiff` and the scope their CPU weight ([`scope_cpu`]): once per process,
    /// and again whenever the scope had to be made anew (it goes when it empties).
    fn weigh_scope(&self, made: bool) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        if self.weighed.swap(true, Ordering::Relaxed) && !made {
            return Ok(());
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let (file, value) = scope_cpu(self.v2, cpus);
        let cpu_scopes = self.scopes.iter().filter(|s| {
            self.v2
                || s.strip_prefix(&self.root)
                    .is_ok_and(|r| r.starts_with("cpu"))
        });
        for scope in cpu_scopes {
            for dir in [scope.parent(), Some(scope.as_path())]
                .into_iter()
                .flatten()
            {
                if dir.join(file).exists() {
                    write(&dir.join(file), &value.to_string())?;
                }
            }
        }
        Ok(())
    }

    fn dirs_of(&self, id: &str) -> Vec<PathBuf> {
        self.scopes.iter().map(|s| s.join(id)).collect()
    }

    /// Removes the scope directories that hold no instance cgroup any more.
    pub fn remove_if_empty(&self) {
        for s in &self.scopes {
            let _ = fs::remove_dir(s);
        }
    }

    /// The instance cgroups under the scope, in any hierarchy: what is there, whoever
    /// left it.
    pub fn instance_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .scopes
            .iter()
            .filter_map(|s| fs::read_dir(s).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| skiff_core::validate_instance_id(name).is_ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Cgroup {
    /// Creates the cgroup for instance `id` with `limits`.
    pub fn create(at: &Placement, id: &str, limits: &Limits) -> io::Result<Cgroup> {
        let (v2, dirs) = (at.v2, at.dirs_of(id));
        let made = at.scopes.iter().any(|s| !s.is_dir());
        if v2 {
            let scope = &at.scopes[0];
            fs::create_dir_all(scope)?;
            enable_v2_controllers(&at.root, scope)?;
            fs::create_dir(&dirs[0])?;
        } else {
            for d in &dirs {
                fs::create_dir_all(d)?;
            }
        }
        at.weigh_scope(made)?;
        let cg = Cgroup { v2, dirs };
        if let Err(e) = cg.apply(limits) {
            cg.remove(Duration::from_millis(100));
            return Err(e);
        }
        Ok(cg)
    }

    /// Whether this is a cgroup v2 (unified) cgroup.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The directory of `controller` (on v2, the one directory).
    pub fn dir_of(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(PathBuf::as_path);
        }
        self.dirs
            .iter()
            .find(|d| d.components().any(|c| c.as_os_str() == controller))
            .map(PathBuf::as_path)
    }

    fn apply(&self, l: &Limits) -> io::Result<()> {
        if self.v2 {
            let d = &self.dirs[0];
            if let Some(m) = l.memory_bytes {
                write(&d.join("memory.max"), &m.to_string())?;
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
            }
            if let Some(c) = l.cpu_millis {
                write(
                    &d.join("cpu.max"),
                    &format!("{} {CPU_PERIOD_US}", c * CPU_PERIOD_US / 1000),
                )?;
                write(&d.join("cpu.weight"), &cpu_weight(c).to_string())?;
            }
            if let Some(p) = l.pids {
                write(&d.join("pids.max"), &p.to_string())?;
            }
            return Ok(());
        }
        if let (Some(m), Some(d)) = (l.memory_bytes, self.dir_of("memory")) {
            write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
            let memsw = d.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &m.to_string())?;
            }
        }
        if let (Some(c), Some(d)) = (l.cpu_millis, self.dir_of("cpu")) {
            write(&d.join("cpu.shares"), &cpu_shares(c).to_string())?;
            write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(
                &d.join("cpu.cfs_quota_us"),
                &(c * CPU_PERIOD_US / 1000).to_string(),
            )?;
        }
        if let (Some(p), Some(d)) = (l.pids, self.dir_of("pids")) {
            write(&d.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    /// The cgroup instance `id` left behind, if any of its directories still exist (its
    /// supervisor died before cleaning up).
    pub fn open_existing(at: &Placement, id: &str) -> Option<Cgroup> {
        let dirs: Vec<PathBuf> = at.dirs_of(id).into_iter().filter(|d| d.is_dir()).collect();
        (!dirs.is_empty()).then_some(Cgroup { v2: at.v2, dirs })
    }

    /// Moves process `pid` into the cgroup (every controller's directory).
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// PIDs in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether the kernel OOM-killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        self.oom_events().is_some_and(|f| oom_kills_in(&f) > 0)
    }

    /// The file whose `oom_kill` line counts the processes the OOM killer ended in this
    /// cgroup (`memory.events` on v2, `memory.oom_control` on v1).
    pub fn oom_events(&self) -> Option<PathBuf> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        Some(self.dir_of("memory")?.join(file))
    }

    /// Reads the memory in use (bytes), if the controller reports it.
    pub fn memory_current(&self) -> Option<u64> {
        let d = self.dir_of("memory")?;
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        fs::read_to_string(d.join(file)).ok()?.trim().parse().ok()
    }

    /// Lets a frozen cgroup run again (nothing when it is not frozen, or cannot be).
    pub fn thaw(&self) {
        if self.v2 {
            let _ = write(&self.dirs[0].join("cgroup.freeze"), "0");
        } else if let Some(d) = self.dir_of("freezer") {
            let _ = write(&d.join("freezer.state"), "THAWED");
        }
    }

    /// SIGKILLs every process in the cgroup. On v2 through `cgroup.kill`; on v1 by freezing
    /// the cgroup first so nothing can fork between listing and killing.
    pub fn kill_all(&self) {
        if self.v2 {
            let kill = self.dirs[0].join("cgroup.kill");
            if kill.exists() && write(&kill, "1").is_ok() {
                return;
            }
        }
        let freezer = self.dir_of("freezer").map(|d| d.join("freezer.state"));
        if let Some(f) = &freezer {
            let _ = write(f, "FROZEN");
        }
        for pid in self.pids() {
            // A pid read from this instance's own cgroup.procs; one already gone is fine.
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Some(f) = &freezer {
            let _ = write(f, "THAWED");
        }
    }

    /// Removes the cgroup once it is empty, killing stragglers, waiting up to `timeout`.
    /// Returns whether every directory is gone.
    pub fn remove(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.pids().is_empty() {
                self.kill_all();
            }
            let mut all_gone = true;
            for d in &self.dirs {
                if d.exists() && fs::remove_dir(d).is_err() {
                    all_gone = false;
                }
            }
            if all_gone || Instant::now() >= deadline {
                return all_gone;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The cgroup directories (one on v2; one per controller on v1).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// Enables memory, cpu and pids for children of every cgroup from the root down to `dir`.
fn enable_v2_controllers(root: &Path, dir: &Path) -> io::Result<()> {
    let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let line = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut cur = root.to_owned();
    write(&cur.join("cgroup.subtree_control"), &line)?;
    for c in rel.components() {
        cur.push(c);
        write(&cur.join("cgroup.subtree_control"), &line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_together_weigh_as_many_threads_as_the_host_has_cpus() {
        assert_eq!(scope_cpu(false, 2), ("cpu.shares", 2048));
        assert_eq!(scope_cpu(true, 2), ("cpu.weight", 200));
        assert_eq!(
            scope_cpu(false, 1024),
            ("cpu.shares", 262_144),
            "v1's ceiling"
        );
        assert_eq!(scope_cpu(true, 512), ("cpu.weight", 10_000), "v2's ceiling");
        let root = tempfile::tempdir().unwrap();
        let scopes: Vec<PathBuf> = ["cpu", "memory"]
            .iter()
            .map(|c| root.path().join(c).join("skiff/s1"))
            .collect();
        for s in &scopes {
            fs::create_dir_all(s).unwrap();
            for d in [s.parent().unwrap(), s] {
                fs::write(d.join("cpu.shares"), "1024").unwrap();
            }
        }
        let at = Placement {
            v2: false,
            root: root.path().to_owned(),
            scopes: scopes.clone(),
            weighed: Default::default(),
        };
        at.weigh_scope(false).unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get() as u64;
        let want = scope_cpu(false, cpus).1.to_string();
        let cpu = &scopes[0];
        assert_eq!(fs::read_to_string(cpu.join("cpu.shares")).unwrap(), want);
        let skiff = cpu.parent().unwrap().join("cpu.shares");
        assert_eq!(fs::read_to_string(&skiff).unwrap(), want);
        let other = scopes[1].join("cpu.shares");
        assert_eq!(
            fs::read_to_string(&other).unwrap(),
            "1024",
            "not a cpu tree"
        );
        // Once per process, unless the scope was made anew.
        fs::write(cpu.join("cpu.shares"), "1024").unwrap();
        at.weigh_scope(false).unwrap();
        assert_eq!(fs::read_to_string(cpu.join("cpu.shares")).unwrap(), "1024");
        at.weigh_scope(true).unwrap();
        assert_eq!(fs::read_to_string(cpu.join("cpu.shares")).unwrap(), want);

        // v2: one tree, `cpu.weight` where the cpu controller is enabled.
        let scope = root.path().join("v2/skiff/s1");
        fs::create_dir_all(&scope).unwrap();
        for d in [scope.parent().unwrap(), &scope] {
            fs::write(d.join("cpu.weight"), "100").unwrap();
        }
        let at = Placement {
            v2: true,
            root: root.path().join("v2"),
            scopes: vec![scope.clone()],
            weighed: Default::default(),
        };
        at.weigh_scope(false).unwrap();
        let want = scope_cpu(true, cpus).1.to_string();
        for d in [scope.parent().unwrap(), &scope] {
            assert_eq!(fs::read_to_string(d.join("cpu.weight")).unwrap(), want);
        }
    }

    /// A fake v2 tree in a temporary directory: the files the kernel would create.
    #[test]
    fn v2_writes_limits_and_enables_controllers() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        let dir = root.path().join("skiff/abc");
        let cg = Cgroup {
            v2: true,
            dirs: vec![dir.clone()],
        };
        fs::create_dir_all(&dir).unwrap();
        cg.apply(&Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(500),
            pids: Some(32),
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            "67108864"
        );
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert_eq!(fs::read_to_string(dir.join("cpu.weight")).unwrap(), "20");
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "32");
        enable_v2_controllers(root.path(), &root.path().join("skiff")).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("skiff/cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
    }

    #[test]
    fn cpu_allowances_weigh_as_kubernetes_requests_do() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(250), 256);
        assert_eq!(cpu_shares(1), 2, "the kernel's floor");
        assert_eq!(cpu_shares(1_000_000), 262_144, "the kernel's ceiling");
        assert_eq!(cpu_weight(1000), 39);
        assert_eq!(cpu_weight(1), 1);
        assert_eq!(cpu_weight(1_000_000), 10_000);
    }

    #[test]
    fn own_path_finds_each_controller_line() {
        let text = "9:name=systemd:/\n4:memory:/jobs/a1\n2:cpu,cpuacct:/x\n0::/user.slice\n";
        assert_eq!(own_path(text, "memory"), "/jobs/a1");
        assert_eq!(own_path(text, "cpu"), "/x", "co-mounted controllers");
        assert_eq!(own_path(text, "cpuacct"), "/x");
        assert_eq!(own_path(text, ""), "/user.slice", "the v2 line");
        assert_eq!(own_path(text, "pids"), "/", "absent: the root");
    }
}
