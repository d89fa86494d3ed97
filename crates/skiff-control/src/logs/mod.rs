//! Reading instances' logs back: a service's lines from every instance it ever had (the
//! files outlive the instances), merged by time from `since` ([`history`]), then followed
//! as they grow ([`follow`]); a failure's tail; and the logs' share of the disk.
//!
//! It reads the files the sandbox writes; it must not write them.

mod follow;
mod history;
mod record;
mod watch;

pub use history::{History, InstanceLog, Position};
pub use record::canonical_time;
pub use watch::LogWatch;

use crate::documents::LogLine;
use crate::{Control, ControlError};
use record::parse;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch as signal};

/// Bytes read from the end of a log for a failure's tail.
const TAIL_BYTES: u64 = 16 << 10;

/// The messages of the last `lines` records of a log, one per line.
pub fn tail_messages(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let records: Vec<&str> = text.lines().filter_map(|l| parse(l).map(|p| p.2)).collect();
    let mut out = records[records.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The instances of `service` whose logs there may be.
fn instance_logs(ctl: &Control, service: &str) -> Result<Vec<InstanceLog>, ControlError> {
    Ok(ctl
        .db()
        .service_instances(service)?
        .into_iter()
        .map(|i| InstanceLog {
            id: i.id,
            path: PathBuf::from(i.log_path),
            not_before: skiff_sandbox::rfc3339(i.created_at, 0),
        })
        .collect())
}

/// The lines of the service's instances from `since` (an RFC 3339 time, see
/// [`canonical_time`]), oldest first, read as they are taken. Fails at once if there is
/// no such service or `since` is not a time; reading blocks on the file system.
pub fn history(ctl: &Control, service: &str, since: Option<&str>) -> Result<History, ControlError> {
    let since = since
        .map(|s| {
            canonical_time(s).ok_or_else(|| {
                ControlError::invalid_request(format!(
                    "since={s:?} is not an RFC 3339 UTC time (e.g. 2026-01-02T15:04:05Z)"
                ))
            })
        })
        .transpose()?;
    if ctl.db().service(service)?.is_none() {
        return Err(ControlError::no_service(service));
    }
    Ok(History::new(instance_logs(ctl, service)?, since))
}

/// Sends the lines the service's instances write from `positions` on (where
/// [`History`] stopped), those of instances that start meanwhile included, until the
/// receiver goes or the daemon stops.
pub async fn follow(
    ctl: Arc<Control>,
    service: String,
    positions: HashMap<String, Position>,
    tx: mpsc::Sender<LogLine>,
    stop: signal::Receiver<bool>,
) {
    let watch = match ctl.log_watch() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                dir = %ctl.config.logs_dir.display(),
                "cannot watch the logs directory ({e}); following by looking every second"
            );
            None
        }
    };
    let list =
        move || instance_logs(&ctl, &service).map_err(|e| std::io::Error::other(e.to_string()));
    follow::follow_with(list, watch, positions, tx, stop).await;
}

impl Control {
    /// The shared watch of the logs directory, started by the first follower and ended
    /// with the last.
    pub(crate) fn log_watch(&self) -> std::io::Result<Arc<LogWatch>> {
        let mut shared = self.log_watch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = shared.upgrade() {
            return Ok(w);
        }
        let w = Arc::new(LogWatch::start(&self.config.logs_dir)?);
        *shared = Arc::downgrade(&w);
        Ok(w)
    }

    /// Counts what the log files hold into `budget`; past it, deletes the oldest files
    /// of instances that no longer run (rotated ones first) until they fit in nine
    /// tenths of it. Returns the bytes the files hold afterwards. Blocks (file system).
    pub fn enforce_log_budget(&self, budget: &skiff_sandbox::LogBudget) -> u64 {
        let running: std::collections::HashSet<String> = match self.db().running_instances() {
            Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
            Err(e) => {
                tracing::warn!("counting the logs: {e}");
                return budget.used();
            }
        };
        // (may go, rotated, modified, bytes, path) of each log file.
        let mut files: Vec<(bool, bool, std::time::SystemTime, u64, std::path::PathBuf)> =
            std::fs::read_dir(&self.config.logs_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    let name = e.file_name().into_string().ok()?;
                    let rotated = name.ends_with(".log.1");
                    let id = name.strip_suffix(".log.1").or(name.strip_suffix(".log"))?;
                    let deletable = rotated || !running.contains(id);
                    Some((
                        deletable,
                        rotated,
                        meta.modified().ok()?,
                        meta.len(),
                        e.path(),
                    ))
                })
                .collect();
        let mut used: u64 = files.iter().map(|f| f.3).sum();
        if used > budget.limit() {
            let target = budget.limit() / 10 * 9;
            // Oldest first; among them, rotated files before current ones.
            files.retain(|f| f.0);
            files.sort_by_key(|f| (f.2, !f.1));
            for (_, _, _, len, path) in files {
                if used <= target {
                    break;
                }
                if std::fs::remove_file(&path).is_ok() {
                    used = used.saturating_sub(len);
                    tracing::info!(log = %path.display(), "deleted to keep the logs within their budget");
                }
            }
        }
        budget.set_used(used);
        used
    }
}

/// Deletes an instance's log file and its rotated predecessor (`<log>.1`).
pub(crate) fn delete(log: &Path) {
    let mut older = log.as_os_str().to_owned();
    older.push(".1");
    for path in [log, Path::new(&older)] {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(log = %path.display(), "deleting a removed service's log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (0..30)
            .map(|i| format!("2026-01-01T00:00:{i:02}.000000000Z stdout F line {i}\n"))
            .collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(tail_messages(&p, 2), "line 28\nline 29\n");
    }
}
