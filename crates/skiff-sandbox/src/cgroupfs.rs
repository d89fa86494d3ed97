//! What an instance sees at `/sys/fs/cgroup`: its own cgroup, read-only, as runc and
//! crun show it, so that runtimes which size themselves from their limits (Node's heap,
//! the JVM, Go's GOMAXPROCS, .NET) find them. On cgroup v2 that is the instance's cgroup
//! directory at `/sys/fs/cgroup`; on v1, a small tmpfs holding the instance's directory
//! of each hierarchy it has (memory, cpu, pids, freezer) under the host's names, and the
//! host's symlinks to them (`cpuacct -> cpu,cpuacct`).
//!
//! The directories are bind mounts, cloned (`open_tree`) before `pivot_root` and attached
//! after it: a fresh v1 cgroup mount costs 0.4–2.4 ms each, a bind tens of microseconds.
//! With the cgroup namespace, `/proc/self/cgroup` and `mountinfo` name them `/`, as a
//! cgroup mount of the namespace would.
//!
//! This module plans the mounts in the parent (where allocating is allowed); the child
//! makes them.

use crate::cgroup::{Cgroup, Hierarchy};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// At most this many directories in an instance's view (v1 has four hierarchies).
pub(crate) const MAX_BINDS: usize = 8;

/// The host's part of the view: its hierarchy root and its symlinks there.
#[derive(Clone, Debug)]
pub(crate) struct HostCgroups {
    v2: bool,
    root: PathBuf,
    links: Vec<(String, String)>,
}

/// One instance's view: what to bind where, and the links to make.
#[derive(Clone, Debug, Default)]
pub(crate) struct CgroupView {
    /// v1: a tmpfs at /sys/fs/cgroup holds the binds.
    pub base_tmpfs: bool,
    /// (the instance's cgroup directory on the host, where it shows in the sandbox).
    pub binds: Vec<(CString, CString)>,
    /// (path of the link, what it points to).
    pub links: Vec<(CString, CString)>,
}

impl HostCgroups {
    /// This host's layout and symlinks, read once.
    pub fn read(h: &Hierarchy) -> HostCgroups {
        match h {
            Hierarchy::V2(root) => HostCgroups {
                v2: true,
                root: root.clone(),
                links: Vec::new(),
            },
            Hierarchy::V1(root) => HostCgroups {
                v2: false,
                root: root.clone(),
                links: links_in(root),
            },
        }
    }

    /// The view of `cgroup`, an instance's.
    pub fn view(&self, cgroup: &Cgroup) -> CgroupView {
        let cstr = |s: &str| CString::new(s).ok();
        if self.v2 {
            let binds = cgroup
                .dirs()
                .first()
                .and_then(|d| Some((cstr(d.to_str()?)?, c"/sys/fs/cgroup".into())))
                .into_iter()
                .collect();
            return CgroupView {
                base_tmpfs: false,
                binds,
                links: Vec::new(),
            };
        }
        let mut names = Vec::new();
        let binds = cgroup
            .dirs()
            .iter()
            .take(MAX_BINDS)
            .filter_map(|dir| {
                let name = hierarchy_of(&self.root, dir)?;
                let bind = (
                    cstr(dir.to_str()?)?,
                    cstr(&format!("/sys/fs/cgroup/{name}"))?,
                );
                names.push(name);
                Some(bind)
            })
            .collect();
        let links = self
            .links
            .iter()
            .filter(|(_, to)| names.contains(to))
            .filter_map(|(link, to)| Some((cstr(&format!("/sys/fs/cgroup/{link}"))?, cstr(to)?)))
            .collect();
        CgroupView {
            base_tmpfs: true,
            binds,
            links,
        }
    }
}

/// The name of the v1 hierarchy (`memory`, `cpu,cpuacct`) that `dir` is in under `root`.
pub(crate) fn hierarchy_of(root: &Path, dir: &Path) -> Option<String> {
    let first = dir.strip_prefix(root).ok()?.components().next()?;
    first.as_os_str().to_str().map(str::to_owned)
}

/// The symlinks directly under `root` (`cpuacct -> cpu,cpuacct`), by name and target.
fn links_in(root: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().into_string().ok()?,
                target.to_str()?.to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_named_by_its_hierarchy() {
        let root = Path::new("/sys/fs/cgroup");
        let at = |p: &str| hierarchy_of(root, Path::new(p));
        assert_eq!(
            at("/sys/fs/cgroup/memory/x/skiff/i1").as_deref(),
            Some("memory")
        );
        assert_eq!(
            at("/sys/fs/cgroup/cpu,cpuacct/skiff/i1").as_deref(),
            Some("cpu,cpuacct")
        );
        assert_eq!(at("/elsewhere/memory/i1"), None);
    }
}
