//! A secret's files for one instance: a small tmpfs that exists in no mount namespace
//! (made with `fsopen`/`fsmount`, so nothing reaches a disk or a host path, and nothing is
//! left to unmount), written by the daemon through its own mount of it, and shown to the
//! instance through a second mount of the same files, attached at the target inside the
//! sandbox and made read-only there. A new version written here shows inside at once.
//!
//! It holds files; which secret and version go in them is the control plane's.

use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, open_tree, FsMountFlags, FsOpenFlags,
    MountAttrFlags, OpenTreeFlags,
};
use std::io::{self, Write};
use std::os::fd::OwnedFd;

/// Bytes a secret mount holds at most (a version holds at most 64 KiB of values).
const SIZE: &str = "256k";

/// The daemon's side of one secret mount.
#[derive(Debug)]
pub struct SecretFs {
    root: OwnedFd,
    uid: u32,
    gid: u32,
}

impl SecretFs {
    /// A new, empty secret filesystem whose files belong to `uid`:`gid`; with the mount
    /// to attach inside the sandbox.
    pub fn new(uid: u32, gid: u32) -> io::Result<(SecretFs, OwnedFd)> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(&fs, "size", SIZE)?;
        fsconfig_set_string(&fs, "mode", "0500")?;
        fsconfig_set_string(&fs, "uid", uid.to_string())?;
        fsconfig_set_string(&fs, "gid", gid.to_string())?;
        fsconfig_create(&fs)?;
        let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        let root = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
        // A second mount of the same files: the sandbox makes its own read-only, which
        // leaves this one writable for updates.
        let shown = open_tree(
            &root,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )?;
        Ok((SecretFs { root, uid, gid }, shown))
    }

    /// Writes file `name` (a secret key: no `/`) whole, replacing any older one at once
    /// (a reader sees the old file or the new, never a part), readable by the owner only.
    pub fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a file name"),
            ));
        }
        let partial = format!(".{name}.partial");
        let fd = rustix::fs::openat(
            &self.root,
            partial.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::RUSR,
        )?;
        rustix::fs::fchown(&fd, Some(uid(self.uid)), Some(gid(self.gid)))?;
        std::fs::File::from(fd).write_all(bytes)?;
        rustix::fs::renameat(&self.root, partial.as_str(), &self.root, name)?;
        Ok(())
    }

    /// Removes the files not named in `keep` (keys a new version no longer has).
    pub fn retain(&self, keep: &[&str]) -> io::Result<()> {
        let dir = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let entries = rustix::fs::Dir::read_from(&dir)?;
        let mut gone = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." && !keep.contains(&name.as_str()) {
                gone.push(name);
            }
        }
        for name in gone {
            rustix::fs::unlinkat(&self.root, name.as_str(), rustix::fs::AtFlags::empty())?;
        }
        Ok(())
    }
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn read(fs: &SecretFs, name: &str) -> io::Result<Vec<u8>> {
        let fd = rustix::fs::openat(
            &fs.root,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut out)?;
        Ok(out)
    }

    #[test]
    fn files_are_written_whole_owned_and_replaced() {
        let (fs, shown) = SecretFs::new(1000, 1000).unwrap();
        assert!(shown.as_raw_fd() >= 0);
        fs.write("password", b"one").unwrap();
        fs.write("user", b"app").unwrap();
        fs.write("password", b"two").unwrap();
        assert_eq!(read(&fs, "password").unwrap(), b"two");
        let st = rustix::fs::statat(&fs.root, "password", rustix::fs::AtFlags::empty()).unwrap();
        assert_eq!(
            (st.st_uid, st.st_gid, st.st_mode & 0o777),
            (1000, 1000, 0o400)
        );
        fs.retain(&["user"]).unwrap();
        assert!(read(&fs, "password").is_err());
        assert_eq!(read(&fs, "user").unwrap(), b"app");
        for bad in ["", "a/b", "..", "."] {
            assert!(fs.write(bad, b"x").is_err(), "{bad:?}");
        }
    }
}
