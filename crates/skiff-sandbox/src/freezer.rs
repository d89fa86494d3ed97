//! Freezing an instance's cgroup while it has no work and thawing it when work arrives
//! (Cloud Run's "CPU only during requests"). Owns the freezer file of one cgroup, kept
//! open so that a thaw on the request path is one write: `cgroup.freeze` on v2,
//! `freezer.state` on v1. Must not decide when to freeze; the router does.

use crate::Cgroup;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The freezer of one instance's cgroup.
#[derive(Debug)]
pub struct Freezer {
    control: File,
    v2: bool,
    /// Where the frozen state is read: `cgroup.events` on v2, `freezer.state` on v1.
    state: PathBuf,
}

impl Freezer {
    /// Opens the freezer of `cgroup`. Fails on a v1 host without the freezer controller.
    pub fn open(cgroup: &Cgroup) -> io::Result<Freezer> {
        let (v2, control, state) = if cgroup.is_v2() {
            let dir = &cgroup.dirs()[0];
            (true, dir.join("cgroup.freeze"), dir.join("cgroup.events"))
        } else {
            let dir = cgroup.dir_of("freezer").ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the host's cgroup v1 has no freezer controller",
                )
            })?;
            let f = dir.join("freezer.state");
            (false, f.clone(), f)
        };
        let file = OpenOptions::new()
            .write(true)
            .open(&control)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", control.display())))?;
        Ok(Freezer {
            control: file,
            v2,
            state,
        })
    }

    /// Stops every task of the cgroup from running. Returns once the kernel took the
    /// request; the tasks stop at their next return to user space.
    pub fn freeze(&self) -> io::Result<()> {
        self.control
            .write_at(if self.v2 { b"1" } else { b"FROZEN" }, 0)
            .map(drop)
    }

    /// Lets the cgroup's tasks run again.
    pub fn thaw(&self) -> io::Result<()> {
        self.control
            .write_at(if self.v2 { b"0" } else { b"THAWED" }, 0)
            .map(drop)
    }

    /// Whether every task of the cgroup is frozen now.
    pub fn is_frozen(&self) -> io::Result<bool> {
        let text = std::fs::read_to_string(&self.state)?;
        Ok(if self.v2 {
            text.lines().any(|l| l.trim() == "frozen 1")
        } else {
            text.trim() == "FROZEN"
        })
    }
}
