//! The init executable (built from `init/main.rs` by the build script) and the sealed
//! memory file the zygote executes it from: each sandbox's init executes it (see
//! `app_fork`) instead of staying a clone of the zygote.
//!
//! The file is made once per zygote, read-only and sealed (no write, grow, shrink or
//! mode change), so a sandbox that reaches it through `/proc/1/exe` cannot change what
//! other sandboxes' inits execute; its pages are shared by every init.

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
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::write(&fd, &bytes[done..])?;
    }
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o555))?;
    let seals = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
    match rustix::fs::fcntl_add_seals(&fd, seals | SealFlags::EXEC) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::fcntl_add_seals(&fd, seals)?,
        other => other?,
    }
    Ok(Some(fd))
}
