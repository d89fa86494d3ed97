//! The data directory (`$SKIFF_HOME`, default `/var/lib/skiff`) and what lives in it.

use anyhow::Context;
use skiff_image::ImageStore;
use skiff_store::Store;
use std::path::PathBuf;

/// Paths under the data directory, and handles opened from them.
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Self {
        Home { root }
    }

    pub fn ensure(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating data directory {}", self.root.display()))?;
        // The store holds other users' images and logs: root only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("securing data directory {}", self.root.display()))
    }

    pub fn db(&self) -> anyhow::Result<Store> {
        self.ensure()?;
        let path = self.root.join("skiff.db");
        Store::open(&path).with_context(|| format!("opening {}", path.display()))
    }

    /// The database for commands that only read: opened read-only, so they work on a
    /// full disk (where `skiff image ls` must still show what takes the space).
    pub fn db_read_only(&self) -> anyhow::Result<Store> {
        let path = self.root.join("skiff.db");
        if !path.exists() {
            return self.db();
        }
        Store::open_read_only(&path).with_context(|| format!("opening {} to read", path.display()))
    }

    pub fn images(&self) -> anyhow::Result<ImageStore> {
        self.ensure()?;
        ImageStore::open(&self.root)
            .with_context(|| format!("opening image store in {}", self.root.display()))
    }

    /// Claims the data directory for this daemon: an exclusive lock on `daemon.lock`
    /// (holding its pid), kept as long as the returned file lives. A second daemon on the
    /// same directory would share its database and its ports' traffic.
    pub fn lock_for_daemon(&self) -> anyhow::Result<std::fs::File> {
        use std::io::{Read, Seek, Write};
        self.ensure()?;
        let path = self.root.join("daemon.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                anyhow::bail!(
                    "data directory {} is used by another skiff daemon (pid {}, holding {})",
                    self.root.display(),
                    holder.trim(),
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(file)
    }

    /// Says so when the database knows nothing but image content lies beside it: a
    /// lost or replaced database, whose services are gone from skiff's view.
    pub fn warn_if_database_lost(&self, db: &Store) -> anyhow::Result<()> {
        if !db.is_empty()? {
            return Ok(());
        }
        let count = |sub: &str| {
            std::fs::read_dir(self.root.join(sub)).map_or(0, |d| d.filter_map(Result::ok).count())
        };
        let (blobs, snapshots) = (count("blobs/sha256"), count("snapshots"));
        if blobs + snapshots > 0 {
            eprintln!(
                "skiff server: warning: the database {} holds no image and no service, but \
                 {blobs} blobs and {snapshots} snapshots lie beside it: if it was lost or \
                 replaced, stop and restore a copy made with `skiff backup` before deploying",
                self.root.join("skiff.db").display()
            );
        }
        Ok(())
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// This data directory's name among others on the host (`h` and 12 hex digits of
    /// the SHA-256 of its canonical path): its instances' cgroups and scratch
    /// directories go under it, so a daemon reclaims only what is its own.
    pub fn scope(&self) -> String {
        use sha2::Digest as _;
        use std::os::unix::ffi::OsStrExt;
        let canonical = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let hash = sha2::Sha256::digest(canonical.as_os_str().as_bytes());
        let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("h{hex}")
    }

    /// Where this data directory's instances' scratch mount points go.
    pub fn run_dir(&self) -> PathBuf {
        std::path::Path::new(crate::launch::RUN_DIR).join(self.scope())
    }
}
