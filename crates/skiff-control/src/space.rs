//! A few megabytes held in reserve in the data directory and let go when the disk is
//! full, so that the writes that free space can still be made: removing a service,
//! recording that its instances stopped. Without it, a disk filled by one instance would
//! keep the operator from stopping that very instance.

use skiff_store::{Store, StoreError};
use std::path::PathBuf;

/// Bytes held in reserve.
const RESERVE_BYTES: u64 = 8 << 20;

/// The reserve file (`<data dir>/space.reserve`).
pub(crate) struct SpaceReserve {
    path: PathBuf,
    /// Held while the reserve is let go: the file's name leaves the directory before its
    /// blocks are freed, so a second writer that found no file could otherwise try again
    /// while the disk still shows no room.
    releasing: std::sync::Mutex<()>,
}

impl SpaceReserve {
    pub(crate) fn new(home: &std::path::Path) -> SpaceReserve {
        SpaceReserve {
            path: home.join("space.reserve"),
            releasing: std::sync::Mutex::new(()),
        }
    }

    /// Makes the reserve again if it is gone and the disk has room (blocks; allocates
    /// the blocks for real, a sparse file would reserve nothing).
    pub(crate) fn ensure(&self) {
        if self.path.exists() {
            return;
        }
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)
            .and_then(|f| {
                rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)
                    .map_err(std::io::Error::from)
            });
        if made.is_err() {
            // Not enough room yet: a half-made reserve would only take what is left.
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Lets the reserve go; whether there was one.
    fn release(&self) -> bool {
        let _one_at_a_time = self
            .releasing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// Whether `e` says the disk is full.
fn is_disk_full(e: &StoreError) -> bool {
    let sql = match e {
        StoreError::Sql(e) | StoreError::Open { source: e, .. } => e,
        _ => return false,
    };
    sql.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

impl crate::Control {
    /// Runs the write `f`; when the disk is full, lets the reserve go and runs it once
    /// more. It runs it again also when the reserve is gone already: another write may
    /// have just let it go, and the space is there for this one too.
    pub(crate) fn write_freeing_space<T>(
        &self,
        mut f: impl FnMut(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // The store's lock is let go before a second try takes it again.
        let first = f(&mut self.db());
        match first {
            Err(e) if is_disk_full(&e) => {
                if self.reserve.release() {
                    tracing::warn!(
                        "the disk of {} is full: released the space reserve to write",
                        self.config.home.display()
                    );
                }
                f(&mut self.db())
            }
            other => other,
        }
    }

    /// Makes the space reserve again, once the disk has room (called now and then).
    pub fn ensure_space_reserve(&self) {
        self.reserve.ensure();
    }
}
