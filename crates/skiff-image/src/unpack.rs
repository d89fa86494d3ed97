//! Unpacks one layer blob into a snapshot directory in overlayfs format: OCI whiteouts
//! (`.wh.NAME`) become overlay whiteouts (a 0:0 character device) and opaque markers
//! (`.wh..wh..opq`) become the `trusted.overlay.opaque` xattr, so a stack of snapshots
//! mounted as overlay lowerdirs is the image's root filesystem.
//!
//! Every entry is hostile until proven otherwise: paths are walked with [`crate::safe_fs`]
//! (no `..`, no absolute paths, no writing through symlinks), device nodes are skipped
//! (every debootstrap or mmdebstrap rootfs carries `/dev/console`, `/dev/null`…; an
//! instance gets its `/dev` from the sandbox, and nothing here creates a device node on
//! disk) and named in the result, and the uncompressed stream is capped to stop
//! decompression bombs. This module must not follow a symlink from the archive, ever.

use crate::error::LayerError;
use crate::safe_fs::{self, MakeDir, NoCreate, WalkError};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use skiff_core::Digest;
use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Compression of a layer blob, told by its first bytes (media types lie more often).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Detects compression from magic bytes.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Counts and hashes the uncompressed stream, failing once it passes `limit`.
struct Metered<R> {
    inner: R,
    hash: Sha256,
    total: u64,
    limit: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.limit {
            self.over.set(true);
            return Err(io::Error::other("uncompressed size limit exceeded"));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// What unpacking a layer gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// The digest of the uncompressed tar (the layer's diff id).
    pub diff_id: Digest,
    /// Entries left out: device nodes, with their kind (`character` or `block`).
    pub skipped: Vec<(String, &'static str)>,
}

/// Unpacks the layer blob read from `blob` into the empty directory `dest`. `lowers` are
/// the snapshot directories below this layer, top first (hardlinks may point into them).
pub fn unpack_layer(
    blob: impl Read,
    dest: &Path,
    lowers: &[PathBuf],
    limit: u64,
) -> Result<Unpacked, LayerError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered.fill_buf().map_err(LayerError::Tar)?;
    let decoded: Box<dyn Read> = match sniff(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(LayerError::Tar)?)
        }
    };
    let over = Rc::new(Cell::new(false));
    let mut metered = Metered {
        inner: decoded,
        hash: Sha256::new(),
        total: 0,
        limit,
        over: over.clone(),
    };
    let too_large = |e: io::Error| {
        if over.get() {
            LayerError::TooLarge { limit }
        } else {
            LayerError::Tar(e)
        }
    };
    let root = safe_fs::open_root(dest).map_err(|e| LayerError::Write {
        entry: ".".into(),
        source: e,
    })?;
    let lower_roots = lowers
        .iter()
        .map(|p| safe_fs::open_root(p))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| LayerError::Write {
            entry: "(lower layer)".into(),
            source: e,
        })?;
    let mut unpacker = Unpacker {
        root,
        lowers: lower_roots,
        dir_times: Vec::new(),
        skipped: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut metered);
        for entry in archive.entries().map_err(too_large)? {
            let entry = entry.map_err(too_large)?;
            unpacker.entry(entry).map_err(|e| match e {
                LayerError::Tar(io) | LayerError::Write { source: io, .. } if over.get() => {
                    drop(io);
                    LayerError::TooLarge { limit }
                }
                other => other,
            })?;
        }
    }
    unpacker.restore_dir_times()?;
    // The diff id covers the whole stream, including the end-of-archive padding.
    io::copy(&mut metered, &mut io::sink()).map_err(too_large)?;
    let hash: [u8; 32] = metered.hash.finalize().into();
    Ok(Unpacked {
        diff_id: Digest::from_sha256_bytes(&hash),
        skipped: unpacker.skipped,
    })
}

struct Unpacker {
    root: OwnedFd,
    lowers: Vec<OwnedFd>,
    /// Directories' mtimes from the archive, set once no later entry can change them.
    dir_times: Vec<(Vec<OsString>, u64)>,
    /// Device nodes left out, with their kind.
    skipped: Vec<(String, &'static str)>,
}

/// Creates missing directories in a layer with the owner and mode the same directory has
/// in a lower layer, so that an implied parent does not mask the lower one's metadata.
struct CopyLowerMeta<'a> {
    lowers: &'a [OwnedFd],
}

impl MakeDir for CopyLowerMeta<'_> {
    fn make_dir(&mut self, parent: &OwnedFd, name: &OsStr, path: &[OsString]) -> Result<(), Errno> {
        let (mode, uid, gid) = find_in_lowers(self.lowers, path)
            .and_then(|(dir, name)| fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).ok())
            .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            .map(|st| (st.st_mode & 0o7777, st.st_uid, st.st_gid))
            .unwrap_or((0o755, 0, 0));
        fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
        chown_nofollow(parent, name, uid, gid)?;
        fs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
    }
}

/// Finds `path` in the lower layers, top first: returns its parent directory and name.
/// Stops at a whiteout or below an opaque directory, as overlayfs would.
fn find_in_lowers(lowers: &[OwnedFd], path: &[OsString]) -> Option<(OwnedFd, OsString)> {
    let (name, parents) = path.split_last()?;
    for lower in lowers {
        let Ok(dir) = safe_fs::walk_dirs(lower, parents, &mut NoCreate) else {
            continue;
        };
        match fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_whiteout(&st) => return None,
            Ok(_) => return Some((dir, name.clone())),
            Err(_) => {
                if is_opaque(&dir) {
                    return None;
                }
            }
        }
    }
    None
}

fn is_whiteout(st: &fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut buf = [0u8; 1];
    matches!(fs::fgetxattr(dir, OPAQUE_XATTR, &mut buf), Ok(1) if buf[0] == b'y')
}

fn write_err(entry: &str) -> impl Fn(Errno) -> LayerError + '_ {
    move |e| LayerError::Write {
        entry: entry.to_owned(),
        source: e.into(),
    }
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw_path = entry.path_bytes().into_owned();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let comps = safe_fs::normal_components(Path::new(OsStr::from_bytes(&raw_path)))
            .map_err(|_| LayerError::Escapes(display.clone()))?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(()); // the root directory itself
        };
        let parent = self.parent_dir(parents, &display)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER {
            return fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", fs::XattrFlags::empty())
                .map_err(write_err(&display));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(LayerError::Escapes(display));
            }
            safe_fs::remove_all_at(&parent, hidden).map_err(write_err(&display))?;
            return fs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(write_err(&display));
        }
        let header = entry.header();
        let mode = header.mode().map_err(LayerError::Tar)? & 0o7777;
        let uid = header.uid().map_err(LayerError::Tar)? as u32;
        let gid = header.gid().map_err(LayerError::Tar)? as u32;
        let mtime = header.mtime().unwrap_or(0);
        let xattrs = read_xattrs(&mut entry, &display)?;
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };
        match kind {
            tar::EntryType::Directory => {
                self.dir(&parent, name, &meta, &display)?;
                self.dir_times.push((comps.clone(), meta.mtime));
                Ok(())
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.replace(&parent, name, &display)?;
                self.file(&parent, name, &mut entry, &meta, &display)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::Tar(io::Error::other("symlink without target")))?
                    .into_owned();
                self.replace(&parent, name, &display)?;
                fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(write_err(&display))?;
                chown_nofollow(&parent, name, meta.uid, meta.gid).map_err(write_err(&display))
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| LayerError::Tar(io::Error::other("hardlink without target")))?
                    .into_owned();
                self.hardlink(&parent, name, &target, &display)
            }
            tar::EntryType::Fifo => {
                self.replace(&parent, name, &display)?;
                fs::mknodat(&parent, name, FileType::Fifo, Mode::from_raw_mode(mode), 0)
                    .map_err(write_err(&display))?;
                chown_nofollow(&parent, name, meta.uid, meta.gid).map_err(write_err(&display))?;
                fs::chmodat(&parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(write_err(&display))
            }
            tar::EntryType::Char => {
                self.skipped.push((display, "character"));
                Ok(())
            }
            tar::EntryType::Block => {
                self.skipped.push((display, "block"));
                Ok(())
            }
            other => Err(LayerError::Unsupported {
                entry: display,
                kind: other.as_byte() as char,
            }),
        }
    }

    fn restore_dir_times(&self) -> Result<(), LayerError> {
        for (comps, mtime) in self.dir_times.iter().rev() {
            // A later entry may have replaced the directory with something else: then
            // there is no directory left to date.
            let Ok(fd) = safe_fs::walk_dirs(&self.root, comps, &mut NoCreate) else {
                continue;
            };
            let t = fs::Timespec {
                tv_sec: *mtime as i64,
                tv_nsec: 0,
            };
            let entry = comps
                .iter()
                .collect::<PathBuf>()
                .to_string_lossy()
                .into_owned();
            fs::futimens(
                &fd,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .map_err(write_err(&entry))?;
        }
        Ok(())
    }

    fn parent_dir(&self, parents: &[OsString], entry: &str) -> Result<OwnedFd, LayerError> {
        let mut maker = CopyLowerMeta {
            lowers: &self.lowers,
        };
        safe_fs::walk_dirs(&self.root, parents, &mut maker).map_err(|e| walk_error(e, entry))
    }

    /// Makes room for a non-directory entry: whatever this layer already has there goes.
    fn replace(&self, parent: &OwnedFd, name: &OsStr, entry: &str) -> Result<(), LayerError> {
        safe_fs::remove_all_at(parent, name).map_err(write_err(entry))
    }

    fn dir(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        entry: &str,
    ) -> Result<(), LayerError> {
        match fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) => {
                self.replace(parent, name, entry)?;
                fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(write_err(entry))?;
            }
            Err(_) => {
                fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(write_err(entry))?
            }
        }
        let fd = safe_fs::open_dir_at(parent, name).map_err(write_err(entry))?;
        apply_meta(&fd, meta, false, entry)
    }

    fn file<R: Read>(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        data: &mut tar::Entry<'_, R>,
        meta: &Meta,
        entry: &str,
    ) -> Result<(), LayerError> {
        let fd = fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(write_err(entry))?;
        let mut file = std::fs::File::from(fd);
        io::copy(data, &mut file).map_err(|e| match e.kind() {
            io::ErrorKind::Other | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
                LayerError::Tar(e)
            }
            _ => LayerError::Write {
                entry: entry.to_owned(),
                source: e,
            },
        })?;
        apply_meta(&OwnedFd::from(file), meta, true, entry)
    }

    fn hardlink(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        target: &[u8],
        entry: &str,
    ) -> Result<(), LayerError> {
        let escapes = || LayerError::HardlinkEscapes {
            entry: entry.to_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
        };
        let comps = safe_fs::normal_components(Path::new(OsStr::from_bytes(target)))
            .map_err(|_| escapes())?;
        let Some((target_name, target_parents)) = comps.split_last() else {
            return Err(escapes());
        };
        let target_dir = match safe_fs::walk_dirs(&self.root, target_parents, &mut NoCreate) {
            Ok(fd) => Some(fd),
            Err(WalkError::Io(e)) if e.kind() == io::ErrorKind::NotFound => None,
            Err(WalkError::ThroughSymlink { at, target: t })
                if safe_fs::symlink_escapes(&at, &t) =>
            {
                return Err(escapes())
            }
            Err(e) => return Err(walk_error(e, entry)),
        };
        let present = target_dir
            .as_ref()
            .is_some_and(|d| fs::statat(d, target_name, AtFlags::SYMLINK_NOFOLLOW).is_ok());
        let target_dir = if present {
            target_dir.expect("checked above")
        } else {
            self.copy_up(&comps, entry, target)?
        };
        self.replace(parent, name, entry)?;
        fs::linkat(&target_dir, target_name, parent, name, AtFlags::empty())
            .map_err(write_err(entry))
    }

    /// Copies a regular file from a lower layer into this one so a hardlink can point at it.
    fn copy_up(
        &self,
        comps: &[OsString],
        entry: &str,
        target: &[u8],
    ) -> Result<OwnedFd, LayerError> {
        let missing = || LayerError::HardlinkMissing {
            entry: entry.to_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
        };
        let (lower_dir, name) = find_in_lowers(&self.lowers, comps).ok_or_else(missing)?;
        let st = fs::statat(&lower_dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(|_| missing())?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(missing());
        }
        let src = fs::openat(
            &lower_dir,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(write_err(entry))?;
        let dir = self.parent_dir(&comps[..comps.len() - 1], entry)?;
        let dst = fs::openat(
            &dir,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(write_err(entry))?;
        let (mut src, mut dst) = (std::fs::File::from(src), std::fs::File::from(dst));
        io::copy(&mut src, &mut dst).map_err(|e| LayerError::Write {
            entry: entry.to_owned(),
            source: e,
        })?;
        let meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime as u64,
            xattrs: Vec::new(),
        };
        apply_meta(&OwnedFd::from(dst), &meta, true, entry)?;
        Ok(dir)
    }
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    entry_name: &str,
) -> Result<Vec<(String, Vec<u8>)>, LayerError> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(LayerError::Tar)? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(LayerError::Tar)?;
        let Ok(key) = ext.key() else { continue };
        let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        // trusted.* belongs to the host (overlayfs keeps its own state there); an image
        // that sets it is trying to steer the kernel, not describing a file.
        if name.starts_with("trusted.") {
            tracing::warn!(
                entry = entry_name,
                xattr = name,
                "ignoring trusted.* xattr from image"
            );
            continue;
        }
        out.push((name.to_owned(), ext.value_bytes().to_vec()));
    }
    Ok(out)
}

fn apply_meta(fd: &OwnedFd, meta: &Meta, set_mtime: bool, entry: &str) -> Result<(), LayerError> {
    let uid = rustix::process::Uid::from_raw(meta.uid);
    let gid = rustix::process::Gid::from_raw(meta.gid);
    fs::fchown(fd, Some(uid), Some(gid)).map_err(write_err(entry))?;
    // chown clears set-id bits, so the mode goes after it.
    fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(write_err(entry))?;
    for (name, value) in &meta.xattrs {
        if let Err(e) = fs::fsetxattr(fd, name.as_str(), value, fs::XattrFlags::empty()) {
            // "as far as the host allows": a filesystem without that namespace loses it.
            tracing::warn!(entry, xattr = %name, error = %e, "could not keep xattr");
        }
    }
    if set_mtime {
        let t = fs::Timespec {
            tv_sec: meta.mtime as i64,
            tv_nsec: 0,
        };
        fs::futimens(
            fd,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )
        .map_err(write_err(entry))?;
    }
    Ok(())
}

fn chown_nofollow(parent: &impl AsFd, name: &OsStr, uid: u32, gid: u32) -> Result<(), Errno> {
    let uid = rustix::process::Uid::from_raw(uid);
    let gid = rustix::process::Gid::from_raw(gid);
    fs::chownat(
        parent,
        name,
        Some(uid),
        Some(gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

fn walk_error(e: WalkError, entry: &str) -> LayerError {
    let lossy = |p: &Path| p.to_string_lossy().into_owned();
    match e {
        WalkError::Escapes => LayerError::Escapes(entry.to_owned()),
        WalkError::ThroughSymlink { at, target } if safe_fs::symlink_escapes(&at, &target) => {
            LayerError::EscapesThroughSymlink {
                entry: entry.to_owned(),
                link: lossy(&at),
                target: lossy(&target),
            }
        }
        WalkError::ThroughSymlink { at, target } => LayerError::ThroughSymlink {
            entry: entry.to_owned(),
            link: lossy(&at),
            target: lossy(&target),
        },
        WalkError::NotADirectory(p) => LayerError::NotADirectory {
            entry: entry.to_owned(),
            parent: lossy(&p),
        },
        WalkError::Io(source) => LayerError::Write {
            entry: entry.to_owned(),
            source,
        },
    }
}
