//! One tmpfs holding every sandbox's scratch directory (its upper layer, `/dev`, `/tmp`
//! …), mounted nowhere: the daemon keeps it as a detached mount, makes a directory in it
//! per sandbox and hands the sandbox a detached bind of that directory alone, which the
//! sandbox attaches in its own mount namespace. It goes with the daemon: nothing of it is
//! left on the host if the daemon dies.
//!
//! Why: each sandbox mounting a tmpfs of its own added a superblock per instance, and
//! every superblock costs every memory cgroup on the host a slot (docs/density.md): at
//! 10,000 instances, ~156 KiB in each instance's cgroup. A directory costs nothing of the
//! kind. What changes for the app: its files are charged to its memory cgroup as before
//! (tmpfs pages go to the writer's cgroup), but no longer also bounded by a size of their
//! own, so an app that fills `/tmp` meets its memory limit, as on Cloud Run, rather than
//! `ENOSPC`; and the file system it reports is the host's shared one.
//!
//! The price is removal: a tmpfs of its own vanished with the sandbox's mount namespace,
//! a directory must be emptied. An app decides its tree's shape, so [`SharedScratch::remove`]
//! never follows a symlink, holds two descriptors whatever the depth, and costs one
//! rename and one unlink per entry however deep or wide the tree.
//!
//! This module must not touch anything outside the detached tmpfs.

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, OpenTreeFlags};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// The detached tmpfs and what names its entries.
pub(crate) struct SharedScratch {
    root: OwnedFd,
    /// Names the entries a removal moves up (see [`SharedScratch::remove`]).
    moved: AtomicU64,
}

impl SharedScratch {
    /// Mounts the tmpfs, detached; an error where this kernel cannot hand out binds of a
    /// detached mount (`open_tree(OPEN_TREE_CLONE)` on one: Linux 6.15), and sandboxes
    /// then mount a tmpfs each.
    pub(crate) fn new() -> io::Result<SharedScratch> {
        use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen};
        use rustix::mount::{FsMountFlags, FsOpenFlags};
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(&fs, "mode", "0700")?;
        // Every page and inode here is charged to the memory cgroup of the sandbox that
        // wrote it, which bounds it; the file system's own bounds are set past what the
        // host could hold (a page or an inode costs at least a KiB of memory), so that
        // one tenant's files never run another out of space, and statfs reports sizes
        // an app can check free space against.
        let memory = host_memory_bytes();
        fsconfig_set_string(&fs, "size", memory.to_string())?;
        fsconfig_set_string(&fs, "nr_inodes", (memory / 1024).max(1 << 20).to_string())?;
        fsconfig_create(&fs)?;
        let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
        let root = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
        let scratch = SharedScratch {
            root,
            moved: AtomicU64::new(0),
        };
        // Whether a bind of a directory of a detached mount may be taken here.
        drop(scratch.make("skiff-probe")?);
        scratch.remove("skiff-probe")?;
        Ok(scratch)
    }

    /// Makes the directory `id` (replacing a stale one) and returns a detached bind of it
    /// for the sandbox to attach.
    pub(crate) fn make(&self, id: &str) -> io::Result<OwnedFd> {
        let mode = Mode::from_raw_mode(0o700);
        match rustix::fs::mkdirat(&self.root, id, mode) {
            Err(Errno::EXIST) => {
                self.remove(id)?;
                rustix::fs::mkdirat(&self.root, id, mode)?;
            }
            other => other?,
        }
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
        match rustix::mount::open_tree(&self.root, id, flags) {
            Ok(tree) => Ok(tree),
            Err(e) => {
                let _ = self.remove(id);
                Err(e.into())
            }
        }
    }

    /// Removes the directory `id` and everything in it, if it is there.
    ///
    /// Depth-first removal would hold a descriptor (or a name) per level of a tree whose
    /// depth the app chose. Instead, each pass over `id` unlinks what is not a directory,
    /// removes empty directories, and moves the entries of each other directory up into
    /// `id` itself (`renameat2(RENAME_NOREPLACE)` under a fresh name) before removing it:
    /// every entry is moved at most once and unlinked once, a pass reads only what the
    /// last one moved up, and two descriptors are open at any time. Nothing else writes
    /// here: the sandbox's processes are gone before this runs.
    pub(crate) fn remove(&self, id: &str) -> io::Result<()> {
        let top = match open_dir(&self.root, id) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        loop {
            let (seen, done) = self.pass(&top)?;
            if seen == 0 {
                break;
            }
            if done == 0 {
                return Err(io::Error::other(format!(
                    "{seen} entries in the scratch directory of {id} could not be removed"
                )));
            }
        }
        drop(top);
        Ok(rustix::fs::unlinkat(&self.root, id, AtFlags::REMOVEDIR)?)
    }

    /// One pass over `top`: the entries seen, and how many were removed or emptied.
    fn pass(&self, top: &OwnedFd) -> io::Result<(usize, usize)> {
        let (mut seen, mut done) = (0, 0);
        for entry in rustix::fs::Dir::read_from(top)? {
            let entry = entry?;
            let name = entry.file_name();
            if is_dot(name) {
                continue;
            }
            seen += 1;
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => rustix::fs::statat(top, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
                _ => false,
            };
            let removed = if is_dir {
                rustix::fs::unlinkat(top, name, AtFlags::REMOVEDIR)
            } else {
                rustix::fs::unlinkat(top, name, AtFlags::empty())
            };
            match removed {
                Ok(()) => done += 1,
                Err(Errno::NOTEMPTY | Errno::EXIST) if is_dir => {
                    if self.move_up(top, name)? {
                        done += 1;
                    }
                    let _ = rustix::fs::unlinkat(top, name, AtFlags::REMOVEDIR);
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((seen, done))
    }

    /// Moves the entries of `top`'s directory `name` into `top`; whether any moved.
    fn move_up(&self, top: &OwnedFd, name: &std::ffi::CStr) -> io::Result<bool> {
        let dir = open_dir(top, name)?;
        let mut moved = false;
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let inner = entry.file_name();
            if is_dot(inner) {
                continue;
            }
            loop {
                let fresh = format!("~{}", self.moved.fetch_add(1, Ordering::Relaxed));
                match rustix::fs::renameat_with(&dir, inner, top, &fresh, RenameFlags::NOREPLACE) {
                    Ok(()) => break moved = true,
                    Err(Errno::EXIST) => continue,
                    Err(Errno::NOENT) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(moved)
    }

    /// [`Self::remove`], saying so in the log when it fails: what is left costs memory
    /// until the daemon stops but breaks nothing.
    pub(crate) fn remove_or_warn(&self, id: &str) {
        if let Err(e) = self.remove(id) {
            tracing::warn!(instance = %id, "removing its scratch files: {e}");
        }
    }

    /// How many directories the tmpfs holds: one per sandbox not yet removed.
    pub(crate) fn entries(&self) -> io::Result<usize> {
        let mut n = 0;
        // The mount's own descriptor is a path one (`O_PATH`): not one to read.
        for entry in rustix::fs::Dir::new(open_dir(&self.root, ".")?)? {
            n += usize::from(!is_dot(entry?.file_name()));
        }
        Ok(n)
    }

    /// The detached mount, for tests that look inside.
    #[cfg(test)]
    fn root(&self) -> rustix::fd::BorrowedFd<'_> {
        rustix::fd::AsFd::as_fd(&self.root)
    }
}

/// A directory under `at`, opened to read, never through a symlink.
fn open_dir<P: rustix::path::Arg>(at: &OwnedFd, name: P) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether a directory entry is `.` or `..`.
fn is_dot(name: &std::ffi::CStr) -> bool {
    name == c"." || name == c".."
}

/// The host's memory and swap, in bytes (a GiB if it cannot be read).
fn host_memory_bytes() -> u64 {
    let info = rustix::system::sysinfo();
    let unit = u64::from(info.mem_unit.max(1));
    ((info.totalram as u64).saturating_add(info.totalswap as u64))
        .saturating_mul(unit)
        .max(1 << 30)
}

/// A sandbox's scratch directory: the empty mount point under the run directory, and its
/// directory in the shared tmpfs when it has one. Removing it removes both.
#[derive(Clone)]
pub(crate) struct ScratchDir {
    pub(crate) path: std::path::PathBuf,
    pub(crate) shared: Option<(std::sync::Arc<SharedScratch>, String)>,
}

impl ScratchDir {
    /// Removes the mount point and the shared directory with its contents.
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_dir(&self.path);
        if let Some((shared, id)) = &self.shared {
            shared.remove_or_warn(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use std::os::unix::fs::symlink;

    fn dir_at(at: &impl AsFd, name: &str) -> OwnedFd {
        rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o755)).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::openat(at, name, flags, Mode::empty()).unwrap()
    }

    fn file_at(at: &impl AsFd, name: &str) {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(at, name, flags, Mode::from_raw_mode(0o600)).unwrap();
        rustix::io::write(&fd, b"data").unwrap();
    }

    #[test]
    fn a_deep_wide_hostile_tree_is_removed_and_nothing_outside_it() {
        let scratch = SharedScratch::new().expect(
            "this kernel hands out binds of a detached tmpfs (Linux 6.15): sandboxes share one",
        );
        // What an app could leave: links out of its tree (absolute, and climbing), a
        // chain of directories deeper than any path may name, a wide directory, files.
        let outside = tempfile::tempdir().unwrap();
        let canary = outside.path().join("canary");
        std::fs::write(&canary, b"keep").unwrap();
        drop(scratch.make("inst-a").unwrap());
        drop(scratch.make("inst-b").unwrap());
        let top = rustix::fs::openat(
            scratch.root(),
            "inst-a",
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let proc_path = |fd: &OwnedFd, name: &str| {
            use std::os::fd::AsRawFd;
            format!("/proc/self/fd/{}/{name}", fd.as_raw_fd())
        };
        symlink(outside.path(), proc_path(&top, "abs")).unwrap();
        symlink(&canary, proc_path(&top, "file-link")).unwrap();
        symlink("../../../../..", proc_path(&top, "up")).unwrap();
        let mut level = dir_at(&top, "deep");
        for _ in 0..3000 {
            file_at(&level, "f");
            level = dir_at(&level, "d");
        }
        symlink(outside.path(), proc_path(&level, "bottom-link")).unwrap();
        let wide = dir_at(&top, "wide");
        for i in 0..2000 {
            if i % 2 == 0 {
                file_at(&wide, &format!("{i}"));
            } else {
                drop(dir_at(&dir_at(&wide, &format!("{i}")), "inner"));
            }
        }
        drop((level, wide, top));
        assert_eq!(scratch.entries().unwrap(), 2);

        scratch.remove("inst-a").expect("removed");
        assert_eq!(
            scratch.entries().unwrap(),
            1,
            "inst-a's directory is gone, inst-b's kept"
        );
        assert_eq!(
            std::fs::read(&canary).unwrap(),
            b"keep",
            "a link was followed"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        // Removing what is not there is not an error; a stale directory is replaced.
        scratch.remove("inst-a").unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let b = rustix::fs::openat(scratch.root(), "inst-b", flags, Mode::empty()).unwrap();
        file_at(&b, "left-behind");
        drop(scratch.make("inst-b").unwrap());
        assert_eq!(scratch.entries().unwrap(), 1);
        let b = rustix::fs::openat(scratch.root(), "inst-b", flags, Mode::empty()).unwrap();
        let left = rustix::fs::Dir::read_from(&b).unwrap().count();
        assert_eq!(left, 2, "only . and .. in a remade directory");
    }
}
