//! Path walking inside a root directory that never follows a symlink and never leaves the
//! root: every lookup goes component by component from a directory fd with `O_NOFOLLOW`.
//!
//! This is what makes unpacking hostile layers safe: an entry's parent is opened this way,
//! so a symlink planted by an earlier entry (`evil -> /etc`) cannot redirect a later write
//! (`evil/passwd`). It must not resolve symlinks, even ones that stay inside the root:
//! layer diffs never write through symlinks, so doing so only ever serves an attack.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a path could not be walked.
#[derive(Debug)]
pub enum WalkError {
    /// A component is `..` or the path is absolute.
    Escapes,
    /// A component on the way is a symlink (to `target`, as stored).
    ThroughSymlink {
        /// The symlink, relative to the root.
        at: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// A component on the way is not a directory.
    NotADirectory(PathBuf),
    /// Another error from the kernel.
    Io(std::io::Error),
}

/// Splits a relative, tar-style path into normal components. `./a//b/.` → `[a, b]`.
/// Absolute paths and `..` are refused: in an image they only ever mean an escape.
pub fn normal_components(path: &Path) -> Result<Vec<OsString>, WalkError> {
    if path.as_os_str().as_bytes().first() == Some(&b'/') {
        return Err(WalkError::Escapes);
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(WalkError::Escapes)
            }
        }
    }
    Ok(out)
}

fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// Opens a directory by absolute host path (used only for roots skiff itself created).
pub fn open_root(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `name` in `dir` as a directory, without following a symlink.
pub fn open_dir_at(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// How to fill in a missing directory on the way.
pub trait MakeDir {
    /// Creates directory `name` in `parent`; `path` is its path from the root.
    fn make_dir(&mut self, parent: &OwnedFd, name: &OsStr, path: &[OsString]) -> Result<(), Errno>;
}

/// Walk without creating anything.
pub struct NoCreate;

impl MakeDir for NoCreate {
    fn make_dir(&mut self, _: &OwnedFd, _: &OsStr, _: &[OsString]) -> Result<(), Errno> {
        Err(Errno::NOENT)
    }
}

/// Opens the directory at `components` below `root`, creating missing ones with `make`.
pub fn walk_dirs(
    root: &OwnedFd,
    components: &[OsString],
    make: &mut dyn MakeDir,
) -> Result<OwnedFd, WalkError> {
    let mut cur = fs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| WalkError::Io(e.into()))?;
    for (i, name) in components.iter().enumerate() {
        let here = &components[..=i];
        let next = match open_dir_at(&cur, name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match make.make_dir(&cur, name, here) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(WalkError::Io(e.into())),
                }
                open_dir_at(&cur, name).map_err(|e| classify(&cur, name, here, e))?
            }
            Err(e) => return Err(classify(&cur, name, here, e)),
        };
        cur = next;
    }
    Ok(cur)
}

fn classify(dir: &OwnedFd, name: &OsStr, here: &[OsString], e: Errno) -> WalkError {
    if matches!(e, Errno::LOOP | Errno::NOTDIR) {
        if let Ok(target) = fs::readlinkat(dir, name, Vec::new()) {
            return WalkError::ThroughSymlink {
                at: join(here),
                target: PathBuf::from(OsStr::from_bytes(target.as_bytes())),
            };
        }
        return WalkError::NotADirectory(join(here));
    }
    WalkError::Io(e.into())
}

/// Whether a symlink stored at `link` (relative to the root) with `target` resolves
/// outside the root, judged lexically as the kernel would inside a chroot-less walk.
pub fn symlink_escapes(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

/// Removes `name` from `dir`, recursively if it is a directory, never following symlinks.
pub fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    match fs::unlinkat(dir, name, fs::AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let sub = open_dir_at(dir, name)?;
    let mut names = Vec::new();
    {
        let mut d = fs::Dir::read_from(&sub)?;
        while let Some(entry) = d.read() {
            let entry = entry?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_owned());
            }
        }
    }
    for n in names {
        remove_all_at(&sub, &n)?;
    }
    fs::unlinkat(dir, name, fs::AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert!(matches!(
            normal_components(Path::new("/etc/passwd")),
            Err(WalkError::Escapes)
        ));
        assert!(matches!(
            normal_components(Path::new("a/../../b")),
            Err(WalkError::Escapes)
        ));
        let ok = normal_components(Path::new("./a//b/.")).unwrap();
        assert_eq!(ok, vec![OsString::from("a"), OsString::from("b")]);
    }

    #[test]
    fn symlink_escape_is_lexical() {
        assert!(symlink_escapes(Path::new("a/l"), Path::new("/etc")));
        assert!(symlink_escapes(Path::new("a/l"), Path::new("../../x")));
        assert!(!symlink_escapes(Path::new("a/l"), Path::new("../x")));
        assert!(!symlink_escapes(Path::new("l"), Path::new("usr/lib")));
    }

    #[test]
    fn walk_refuses_symlinked_parent() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("evil")).unwrap();
        let root = open_root(dir.path()).unwrap();
        let comps = normal_components(Path::new("evil")).unwrap();
        match walk_dirs(&root, &comps, &mut NoCreate) {
            Err(WalkError::ThroughSymlink { at, target }) => {
                assert_eq!(at, Path::new("evil"));
                assert_eq!(target, Path::new("/etc"));
            }
            other => panic!("walked through symlink: {:?}", other.map(|_| ())),
        }
    }
}
