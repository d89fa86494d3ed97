//! What an instance sees at `/sys/fs/cgroup`: its own cgroup as the root (through its
//! cgroup namespace), read-only, as runc and crun show it, so that runtimes which size
//! themselves from their limits (Node's heap, the JVM, Go's GOMAXPROCS, .NET) find them.
//! On cgroup v2 that is one `cgroup2` mount; on v1, a small tmpfs holding one mount per
//! controller hierarchy the host has, with the host's names and symlinks (`cpu ->
//! cpu,cpuacct`).
//!
//! This module plans the mounts in the parent (where allocating is allowed); the child
//! makes them.

use crate::cgroup::Hierarchy;
use std::ffi::CString;
use std::path::Path;

/// The mounts and links that make an instance's cgroup view.
#[derive(Clone, Debug, Default)]
pub(crate) struct CgroupView {
    /// v1: a tmpfs at /sys/fs/cgroup holds the per-hierarchy mounts.
    pub base_tmpfs: bool,
    /// (target, filesystem type, options) of each mount.
    pub mounts: Vec<(CString, CString, CString)>,
    /// (path of the link, what it points to).
    pub links: Vec<(CString, CString)>,
}

impl CgroupView {
    /// The view for this host's layout.
    pub fn for_host(h: &Hierarchy) -> CgroupView {
        match h {
            Hierarchy::V2(_) => CgroupView {
                base_tmpfs: false,
                mounts: vec![(c"/sys/fs/cgroup".into(), c"cgroup2".into(), c"".into())],
                links: Vec::new(),
            },
            Hierarchy::V1(root) => {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                let cstr = |s: String| CString::new(s).ok();
                let mounts = v1_hierarchies(&mountinfo, root)
                    .into_iter()
                    .filter_map(|(name, opts)| {
                        Some((
                            cstr(format!("/sys/fs/cgroup/{name}"))?,
                            c"cgroup".into(),
                            cstr(opts)?,
                        ))
                    })
                    .collect();
                CgroupView {
                    base_tmpfs: true,
                    mounts,
                    links: links_in(root),
                }
            }
        }
    }
}

/// The controllers cgroup v1 has; every other mount option (`rw`, `xattr`, `name=…`,
/// `noprefix`) is not one.
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The controllers that runtimes read their limits from (memory for Node's heap and the
/// JVM, cpu/cpuacct/cpuset for GOMAXPROCS, the JVM and .NET, pids for thread pools).
const SIZED_FROM: [&str; 5] = ["memory", "cpu", "cpuacct", "cpuset", "pids"];

/// The v1 hierarchies mounted directly under `root`, as (directory name, the controllers
/// to mount it with), from `/proc/self/mountinfo` text. Named hierarchies without a
/// controller (`name=systemd`) and those without a controller in [`SIZED_FROM`]
/// (devices, freezer, blkio…) are left out.
pub(crate) fn v1_hierarchies(mountinfo: &str, root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        let mut fs = after.split(' ');
        if fs.next() != Some("cgroup") {
            continue;
        }
        let opts = fs.nth(1).unwrap_or_default();
        let Some(name) = Path::new(mount_point)
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            continue;
        };
        let controllers: Vec<&str> = opts
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            .collect();
        // Each v1 mount costs a fraction of a millisecond: only the hierarchies that
        // runtimes size themselves from.
        if controllers.iter().any(|c| SIZED_FROM.contains(c)) {
            out.push((name.to_owned(), controllers.join(",")));
        }
    }
    out
}

/// The symlinks directly under `root` (`cpu -> cpu,cpuacct`), to make again in the view.
fn links_in(root: &Path) -> Vec<(CString, CString)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let name = e.file_name().into_string().ok()?;
            Some((
                CString::new(format!("/sys/fs/cgroup/{name}")).ok()?,
                CString::new(target.to_str()?).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_come_from_mountinfo_with_their_controllers() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:7 - cgroup cgroup rw,xattr,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:8 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
36 25 0:32 / /elsewhere/memory rw - cgroup cgroup rw,memory
";
        let found = v1_hierarchies(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            found,
            [
                ("cpu,cpuacct".to_owned(), "cpu,cpuacct".to_owned()),
                ("memory".to_owned(), "memory".to_owned()),
                ("pids".to_owned(), "pids".to_owned()),
            ]
        );
    }
}
