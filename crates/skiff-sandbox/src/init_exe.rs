//! The init executable (built from `init/main.rs` by the build script) and the sealed
//! memory file the zygote executes it from: each sandbox's init executes it (see
//! `app_fork`) instead of staying a clone of the zygote.
//!
//! The file is made once per zygote, read-only and sealed (no write, grow or shrink; its
//! execute bits fixed), so a sandbox that reaches it through `/proc/1/exe` cannot change
//! what other sandboxes' inits execute; its pages are shared by every init.

use rustix::fs::{MemfdFlags, SealFlags};
use std::io;
use std::os::fd::OwnedFd;

/// The executable's bytes, where the build script could make it.
#[cfg(skiff_init_executable)]
const EXECUTABLE: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/skiff-init")));
#[cfg(not(skiff_init_executable))]
const EXECUTABLE: Option<&[u8]> = None;

/// A sealed, executable memory file holding the init executable; `None` where there is
/// none for this target.
pub(crate) fn sealed_file() -> io::Result<Option<OwnedFd>> {
    let Some(bytes) = EXECUTABLE else {
        return Ok(None);
    };
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Since 6.3 a memory file says whether it may be executed; before, EINVAL: all may.
    let fd = match rustix::fs::memfd_create("skiff-init", base | MemfdFlags::EXEC) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create("skiff-init", base)?,
        other => other?,
    };
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o555))?;
    // Its execute bits sealed too (since 6.3); its content is by the rest.
    crate::reentry::fill_and_seal(&fd, bytes, SealFlags::EXEC)?;
    Ok(Some(fd))
}

#[cfg(all(test, skiff_init_executable))]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn the_init_file_holds_the_executable_and_nothing_can_change_it() {
        let fd = sealed_file()
            .unwrap()
            .expect("an init executable for this target");
        let mut head = [0u8; 4];
        rustix::io::pread(&fd, &mut head, 0).unwrap();
        assert_eq!(&head, b"\x7fELF");
        let mode = rustix::fs::fstat(&fd).unwrap().st_mode & 0o7777;
        assert_eq!(mode, 0o555);
        assert_eq!(
            rustix::io::pwrite(&fd, b"x", 0),
            Err(Errno::PERM),
            "a write"
        );
        assert_eq!(rustix::fs::ftruncate(&fd, 1), Err(Errno::PERM), "a shrink");
        let not_executable = rustix::fs::Mode::from_raw_mode(0o444);
        assert_eq!(
            rustix::fs::fchmod(&fd, not_executable),
            Err(Errno::PERM),
            "a mode"
        );
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::SEAL), "{seals:?}");
    }
}
