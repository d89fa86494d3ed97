//! skiff's durable state in one SQLite database: images with their tags and layers, and
//! sandbox instances with their network slots and exit reports, services with their
//! immutable revisions, and secrets with their sealed versions.
//!
//! This crate is the only place SQL lives. It must not know about HTTP, the filesystem
//! layout of the image store, or how sandboxes are started: callers hand it records and
//! get records back.
#![forbid(unsafe_code)]

mod audit;
mod configmaps;
mod events;
mod images;
mod instances;
mod invocations;
mod migrations;
mod secrets;
mod services;
mod tokens;

pub use audit::{AuditRecord, NewAuditEntry};
pub use configmaps::ConfigMapRecord;
pub use events::{ScheduleRecord, SubscriptionRecord, TopicRecord};
pub use images::{ImageRecord, LayerRecord, NewImage, RemovedImage};
pub use instances::{ExitRecord, InstanceRecord, InstanceState, NewInstance};
pub use invocations::{
    InvocationCounts, InvocationOutcome, InvocationQuery, InvocationRecord, InvocationState,
    NewInvocation,
};
pub use secrets::{NewSecretVersion, SealedRecord, SecretRecord, SecretVersionRecord};
pub use services::{FailureRecord, RevisionRecord, ServiceLine, ServiceRecord};
pub use tokens::{NewTokenRecord, TokenRecord};

use rusqlite::Connection;

/// How long a connection waits for another's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The size (bytes) a write-ahead log that outgrew it is cut back to when it starts over.
/// Starting over stalls the one writer for its checkpoint's copy and fsyncs (10-17 ms
/// measured by bench/events), so the bound sets how often a steady load pays that:
/// at ~11k invocations/s (~30 MB of log a second) every ~8 s at 256 MiB, against every
/// ~2 s at 64 MiB, which put enqueue p99 at 4-5 ms instead of under 4.3 ms. The cost: a
/// log file this large kept on disk, and read through once after a crash.
pub const WAL_LIMIT: u64 = 256 << 20;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors from the store, each naming the database or object involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("opening database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A file beside the database could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database was written by a newer skiff.
    #[error("database {path} has schema version {found}, newer than this skiff knows ({known}); upgrade skiff")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version found on disk.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A read-only open found a schema older than this build's (it migrates only when
    /// opened for writing).
    #[error("database {path} has an older schema; run a skiff command that writes (or the daemon) once to bring it up to date")]
    Outdated {
        /// The database file.
        path: PathBuf,
    },
    /// SQLite's own check found the database damaged.
    #[error(
        "database {path} is damaged ({findings}); stop here and restore a copy made with \
         `skiff backup` (copy it over {path} and delete {path}-wal and {path}-shm), or \
         move the damaged file aside to start empty"
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// The first findings of `PRAGMA quick_check`.
        findings: String,
    },
    /// No image matches a reference.
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// A digest prefix matches more than one image.
    #[error("image reference {0} is ambiguous: it matches more than one image")]
    AmbiguousImage(String),
    /// The image is used by running instances and may not be removed.
    #[error("image {image} is in use by running instance(s) {instances}")]
    ImageInUse {
        /// The image's manifest digest.
        image: String,
        /// Comma-separated instance ids.
        instances: String,
    },
    /// The image is what revisions of services run, and may not be removed.
    #[error("image {image} is used by revision(s) {revisions}: remove their services first")]
    ImageInRevisions {
        /// The image's manifest digest.
        image: String,
        /// Comma-separated revision names.
        revisions: String,
    },
    /// No service has this name.
    #[error("no such service: {0}")]
    NoSuchService(String),
    /// A revision of some service already has this name.
    #[error("revision name {name} is taken by a revision of service {service}")]
    RevisionNameTaken {
        /// The name.
        name: String,
        /// The service whose revision has it.
        service: String,
    },
    /// Every network slot is taken.
    #[error("no free network slot: all {0} instance addresses are in use")]
    NoNetworkSlot(u32),
    /// A stored value does not parse (a corrupted or hand-edited database).
    #[error("database holds an invalid {what}: {value:?}")]
    Corrupt {
        /// What kind of value.
        what: &'static str,
        /// The value found.
        value: String,
    },
}

/// An open connection to the skiff database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Every network slot below this was taken when this handle last looked (see
    /// [`Store::create_instance`]).
    lowest_free_slot: u32,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Several processes may open the same database: writes wait for each other.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                StoreError::Damaged {
                    path: path.to_owned(),
                    findings: source.to_string(),
                }
            }
            _ => StoreError::Open {
                path: path.to_owned(),
                source,
            },
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // A log grown under load is cut back to this when it starts over.
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT as i64)
            .map_err(open_err)?;
        migrations::migrate(&mut conn, path)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            lowest_free_slot: 0,
        })
    }

    /// The database's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the database at `path` for reading only (commands that only look): nothing
    /// is written, so it works on a full disk and beside a running daemon.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let version = migrations::version(&conn, path)?;
        if !migrations::is_current(version) {
            return Err(StoreError::Outdated {
                path: path.to_owned(),
            });
        }
        Ok(Store {
            conn,
            path: path.to_owned(),
            lowest_free_slot: 0,
        })
    }

    /// Leaves checkpoints of the write-ahead log to [`Store::checkpoint_passive`] on
    /// another connection: a commit on this one never waits for one (or its fsync).
    pub fn no_auto_checkpoints(&self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Copies what the write-ahead log holds into the database as far as readers allow,
    /// without blocking writers (a passive checkpoint).
    pub fn checkpoint_passive(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// How many bytes the write-ahead log file holds (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }

    /// Copies the whole write-ahead log into the database and starts it over (cut back
    /// to [`WAL_LIMIT`]), waiting at most `patience` for readers of older frames; whether
    /// it did. For the one writer, whose log passive checkpoints cannot finish while it
    /// writes without a pause: without it the log grows as long as the load lasts.
    pub fn checkpoint_restart(&self, patience: Duration) -> Result<bool, StoreError> {
        self.conn.busy_timeout(patience)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(busy? == 0)
    }

    /// Runs SQLite's `PRAGMA quick_check` (every page and index entry read once: for a
    /// daemon's start, not for every command); a damaged database is an error that says
    /// what to do, rather than services that answer 404 with the reason only in a log.
    pub fn check_integrity(&self) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check(5)")?;
        let findings = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>());
        let findings = match findings {
            Ok(f) if f == ["ok"] => return Ok(()),
            Ok(f) => f.join("; "),
            Err(e) => e.to_string(),
        };
        Err(StoreError::Damaged {
            path: self.path.clone(),
            findings,
        })
    }

    /// Whether the database knows no image and no service (a new one, or one lost).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let count: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) FROM images) + (SELECT count(*) FROM services)",
            [],
            |r| r.get(0),
        )?;
        Ok(count == 0)
    }

    /// Moves everything in the write-ahead log into the database file and empties the
    /// log, so the file alone is the whole state (a clean shutdown does this).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Writes a consistent copy of the database to `dest` with SQLite's online backup,
    /// while others keep using it; through a temporary file renamed into place, so a
    /// failure leaves no half-written copy.
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let tmp = dest.with_extension("part");
        let result = (|| {
            let mut out = Connection::open(&tmp)?;
            {
                let backup = rusqlite::backup::Backup::new(&self.conn, &mut out)?;
                backup.run_to_completion(256, Duration::ZERO, None)?;
            }
            // The copy is one self-contained file.
            out.pragma_update(None, "journal_mode", "DELETE")?;
            Ok::<(), rusqlite::Error>(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        std::fs::rename(&tmp, dest).map_err(|e| StoreError::Io {
            path: dest.to_owned(),
            source: e,
        })
    }
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
