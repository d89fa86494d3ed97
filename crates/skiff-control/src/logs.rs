//! Reading instances' logs back: a service's lines from every instance it ever had (the
//! files outlive the instances), merged by time, filtered by `since`, and followed as they
//! grow. The files are CRI-format (`TIME STREAM TAG MESSAGE`) as the sandbox writes them.

use crate::documents::LogLine;
use crate::{Control, ControlError};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often `--follow` looks for new lines and new instances.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Bytes read from the end of a log for a failure's tail.
const TAIL_BYTES: u64 = 16 << 10;

/// Splits a CRI log record into (time, stream, message).
fn parse(line: &str) -> Option<(&str, &str, &str)> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let _tag = parts.next()?;
    Some((time, stream, parts.next().unwrap_or("")))
}

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

fn lines_of(text: &str, instance: &str, since: Option<&str>, out: &mut Vec<LogLine>) {
    for l in text.lines() {
        if let Some((time, stream, message)) = parse(l) {
            if since.is_some_and(|s| time < s) {
                continue;
            }
            out.push(LogLine {
                time: time.to_owned(),
                instance: instance.to_owned(),
                stream: stream.to_owned(),
                message: message.to_owned(),
            });
        }
    }
}

/// Every line of the service's instances since `since` (an RFC 3339 time), oldest
/// first, with the byte offset reached in each instance's current log file.
pub fn collect(
    ctl: &Control,
    service: &str,
    since: Option<&str>,
) -> Result<(Vec<LogLine>, HashMap<String, u64>), ControlError> {
    if ctl.db().service(service)?.is_none() {
        return Err(ControlError::no_service(service));
    }
    let instances = ctl.db().service_instances(service)?;
    let mut out = Vec::new();
    let mut offsets = HashMap::new();
    for i in instances {
        let rotated = format!("{}.1", i.log_path);
        if let Ok(old) = std::fs::read(&rotated) {
            lines_of(&String::from_utf8_lossy(&old), &i.id, since, &mut out);
        }
        let current = std::fs::read(&i.log_path).unwrap_or_default();
        lines_of(&String::from_utf8_lossy(&current), &i.id, since, &mut out);
        offsets.insert(i.id.clone(), current.len() as u64);
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    Ok((out, offsets))
}

/// Sends new lines as they are written, until the receiver goes or the daemon stops.
pub async fn follow(
    ctl: Arc<Control>,
    service: String,
    mut offsets: HashMap<String, u64>,
    tx: mpsc::Sender<LogLine>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
            () = tx.closed() => return,
        }
        let Ok(instances) = ctl.db().service_instances(&service) else {
            continue;
        };
        let mut fresh = Vec::new();
        for i in instances {
            let offset = offsets.entry(i.id.clone()).or_insert(0);
            let Ok(mut f) = std::fs::File::open(&i.log_path) else {
                continue;
            };
            let len = f.metadata().map_or(0, |m| m.len());
            if len < *offset {
                *offset = 0; // rotated
            }
            if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            // Only whole lines; a line being written is picked up next time.
            let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            *offset += whole as u64;
            lines_of(
                &String::from_utf8_lossy(&buf[..whole]),
                &i.id,
                None,
                &mut fresh,
            );
        }
        fresh.sort_by(|a, b| a.time.cmp(&b.time));
        for line in fresh {
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }
}

impl Control {
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
    fn records_split_and_tails_keep_the_last_lines() {
        assert_eq!(
            parse("2026-01-01T00:00:00.000000000Z stderr F oops: a b"),
            Some(("2026-01-01T00:00:00.000000000Z", "stderr", "oops: a b"))
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (0..30)
            .map(|i| format!("2026-01-01T00:00:{i:02}.000000000Z stdout F line {i}\n"))
            .collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(tail_messages(&p, 2), "line 28\nline 29\n");
        let mut out = Vec::new();
        lines_of(
            &std::fs::read_to_string(&p).unwrap(),
            "i1",
            Some("2026-01-01T00:00:28"),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].message, "line 28");
    }
}
