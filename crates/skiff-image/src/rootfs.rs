//! Reads files of an image's root filesystem straight from its snapshot stack, the way
//! overlayfs would see them (whiteouts and opaque directories honoured, no symlinks
//! followed), without mounting anything.

use crate::safe_fs::{self, NoCreate};
use rustix::fs::{self, AtFlags, FileType, Mode, OFlags};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads `path` (relative to the image root) from `layers` (top first); `None` if absent,
/// not a regular file, or larger than 1 MiB.
pub fn read_file(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    let comps = safe_fs::normal_components(Path::new(path)).ok()?;
    let (name, parents) = comps.split_last()?;
    for layer in layers {
        let root = safe_fs::open_root(layer).ok()?;
        let dir = match safe_fs::walk_dirs(&root, parents, &mut NoCreate) {
            Ok(dir) => dir,
            // A whiteout or file in place of a parent hides everything below it.
            Err(safe_fs::WalkError::NotADirectory(_)) => return None,
            Err(_) => continue,
        };
        match fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                let fd = fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()?;
                let mut buf = Vec::new();
                std::fs::File::from(fd)
                    .take(1 << 20)
                    .read_to_end(&mut buf)
                    .ok()?;
                return Some(buf);
            }
            Ok(_) => return None,
            Err(_) => {
                let mut b = [0u8; 1];
                if matches!(fs::fgetxattr(&dir, "trusted.overlay.opaque", &mut b), Ok(1) if b[0] == b'y')
                {
                    return None;
                }
            }
        }
    }
    None
}
