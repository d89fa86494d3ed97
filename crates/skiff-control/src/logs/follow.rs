//! Following a service's logs as they grow: woken by the shared inotify watch of the
//! logs directory (never by a timer while the watch works), it reads what each instance's
//! file gained since the last [`Position`], through rotations, and picks up instances
//! that start meanwhile. No descriptor is held between reads: a position names its file
//! by device and inode, so a rotated file is found again at `<log>.1`.
//!
//! It reads and sends; which names changed is [`super::watch`]'s.

use super::history::{open_if_there, InstanceLog, Position};
use super::record::log_line;
use super::watch::{Change, LogWatch};
use crate::documents::LogLine;
use skiff_kernel::dirwatch::DirEvent;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Bytes read from one file before the others get a turn (and the lines are sent).
const READ_AT_ONCE: usize = 1 << 20;
/// How often the logs are looked at when the directory cannot be watched.
const POLL_WITHOUT_WATCH: Duration = Duration::from_secs(1);

/// One followed instance.
struct Followed {
    path: PathBuf,
    /// Where reading goes on; `None`: from the start of the current file.
    position: Option<Position>,
}

/// The instances followed and where each was left.
#[derive(Default)]
pub(crate) struct Follower {
    logs: HashMap<String, Followed>,
    /// File names (current and rotated) to instance ids.
    names: HashMap<String, String>,
}

impl Follower {
    pub(crate) fn new(positions: HashMap<String, Position>, logs: Vec<InstanceLog>) -> Self {
        let mut f = Follower::default();
        f.know(logs, &positions);
        f
    }

    /// Starts following the instances of `logs` not followed yet: from `positions` if
    /// they are there, else from the start.
    fn know(&mut self, logs: Vec<InstanceLog>, positions: &HashMap<String, Position>) {
        for log in logs {
            if self.logs.contains_key(&log.id) {
                continue;
            }
            if let Some(name) = log.path.file_name().and_then(|n| n.to_str()) {
                self.names.insert(name.to_owned(), log.id.clone());
                self.names.insert(format!("{name}.1"), log.id.clone());
            }
            let position = positions.get(&log.id).copied();
            self.logs.insert(
                log.id,
                Followed {
                    path: log.path,
                    position,
                },
            );
        }
    }

    fn ids(&self) -> impl Iterator<Item = &String> {
        self.logs.keys()
    }

    fn instance_of(&self, file_name: &str) -> Option<&String> {
        self.names.get(file_name)
    }

    /// Reads up to [`READ_AT_ONCE`] new bytes of instance `id` into `out`; true when
    /// there is more to read.
    fn catch_up(&mut self, id: &str, out: &mut Vec<LogLine>) -> bool {
        let Some(f) = self.logs.get_mut(id) else {
            return false;
        };
        match read_on(f, id, out) {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(log = %f.path.display(), "following a log: {e}");
                false
            }
        }
    }
}

/// Reads on from `f`'s position: the rest of its file if that was rotated away, then the
/// current file.
fn read_on(f: &mut Followed, id: &str, out: &mut Vec<LogLine>) -> io::Result<bool> {
    // The current file is looked at before the old one is read: once the path names
    // another file, the old one was renamed, and nothing is written to it any more.
    let current = open_if_there(&f.path)?;
    let current_meta = current.as_ref().map(File::metadata).transpose()?;
    if let Some(p) = f.position {
        let moved = !current_meta.as_ref().is_some_and(|m| p.is_file(m));
        if moved {
            let rotated_path = InstanceLog::rotated_path(&f.path);
            if let Some(mut rotated) = open_if_there(&rotated_path)? {
                if p.is_file(&rotated.metadata()?) {
                    let (offset, more) = read_lines(&mut rotated, p.offset, id, true, out)?;
                    f.position = Some(Position { offset, ..p });
                    if more {
                        return Ok(true);
                    }
                }
            }
            // The old file is read to its end, or gone (rotated twice over).
            f.position = None;
        }
    }
    let (Some(mut file), Some(meta)) = (current, current_meta) else {
        return Ok(false);
    };
    let start = match f.position {
        Some(p) if p.offset <= meta.len() => p.offset,
        _ => 0,
    };
    let (offset, more) = read_lines(&mut file, start, id, false, out)?;
    f.position = Some(Position::of(&file, offset)?);
    Ok(more)
}

/// Reads whole records of `file` from `offset` (all of what is left when `to_end`, a
/// last record without its newline included) into `out`: the offset reached, and
/// whether more is left.
fn read_lines(
    file: &mut File,
    offset: u64,
    id: &str,
    to_end: bool,
    out: &mut Vec<LogLine>,
) -> io::Result<(u64, bool)> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    (&mut *file)
        .take(READ_AT_ONCE as u64)
        .read_to_end(&mut buf)?;
    let full = buf.len() == READ_AT_ONCE;
    let whole = match buf.iter().rposition(|&b| b == b'\n') {
        Some(p) => p + 1,
        // A record as long as a whole read cannot wait for its end.
        None if full => buf.len(),
        None if to_end => buf.len(),
        None => 0,
    };
    let used = if to_end && !full { buf.len() } else { whole };
    for record in buf[..used].split(|&b| b == b'\n') {
        if let Some(line) = log_line(record, id) {
            out.push(line);
        }
    }
    Ok((offset + used as u64, full))
}

/// What the follow loop needs besides the files: the service's instances, now.
pub(crate) trait InstanceList: Send {
    fn list(&mut self) -> io::Result<Vec<InstanceLog>>;
}

impl<F: FnMut() -> io::Result<Vec<InstanceLog>> + Send> InstanceList for F {
    fn list(&mut self) -> io::Result<Vec<InstanceLog>> {
        self()
    }
}

/// Sends the lines the instances of `instances` write from `positions` on, until the
/// receiver goes or `stop` is set. With no `watch`, it looks every second instead.
pub(crate) async fn follow_with(
    mut instances: impl InstanceList,
    watch: Option<Arc<LogWatch>>,
    positions: HashMap<String, Position>,
    tx: mpsc::Sender<LogLine>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = watch.as_ref().map(|w| w.subscribe());
    let mut follower = Follower::new(HashMap::new(), Vec::new());
    let mut positions = Some(positions);
    let mut relist = true;
    let mut due: HashSet<String> = HashSet::new();
    loop {
        if relist {
            relist = false;
            match instances.list() {
                Ok(logs) => follower.know(logs, &positions.take().unwrap_or_default()),
                Err(e) => tracing::warn!("listing the instances to follow: {e}"),
            }
            due.extend(follower.ids().cloned());
        }
        let mut out = Vec::new();
        due.retain(|id| follower.catch_up(id, &mut out));
        out.sort_by(|a, b| a.time.cmp(&b.time));
        for line in out {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if *stop.borrow() {
            return;
        }
        if !due.is_empty() {
            continue;
        }
        let change = tokio::select! {
            c = next_change(&mut changes) => c,
            _ = stop.wait_for(|s| *s) => return,
            () = tx.closed() => return,
        };
        let mut change = Some(change);
        while let Some(c) = change.take() {
            match c {
                Ok(DirEvent::Written(name) | DirEvent::Closed(name)) => {
                    match follower.instance_of(&name) {
                        Some(id) => {
                            due.insert(id.clone());
                        }
                        None => relist |= name.ends_with(".log"),
                    }
                }
                Ok(DirEvent::Overflow) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    relist = true
                }
                Err(broadcast::error::RecvError::Closed) => {
                    tracing::warn!("the logs directory's watch ended; following by polling");
                    changes = None;
                    relist = true;
                }
            }
            change = changes.as_mut().and_then(|rx| match rx.try_recv() {
                Ok(c) => Some(Ok(c)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Some(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(_) => None,
            });
        }
    }
}

/// The next change; without a watch, an overflow every [`POLL_WITHOUT_WATCH`].
async fn next_change(
    changes: &mut Option<broadcast::Receiver<Change>>,
) -> Result<Change, broadcast::error::RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => {
            tokio::time::sleep(POLL_WITHOUT_WATCH).await;
            Ok(DirEvent::Overflow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::sync::Mutex;

    fn record(n: u32, text: &str) -> String {
        format!("2026-01-01T00:00:00.{n:09}Z stdout F {text}\n")
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn instance(dir: &Path, id: &str) -> InstanceLog {
        InstanceLog {
            id: id.to_owned(),
            path: dir.join(format!("{id}.log")),
            not_before: String::new(),
        }
    }

    async fn expect(rx: &mut mpsc::Receiver<LogLine>, messages: &[&str]) {
        for m in messages {
            let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{m:?} not followed within 10 s"))
                .unwrap();
            assert_eq!(line.message, *m);
        }
    }

    /// Nothing but the watch wakes the follower here (it has no timer while watching):
    /// each line arriving shows that a change was told and acted on.
    #[tokio::test]
    async fn follows_writes_rotations_and_new_instances_from_the_watch_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = instance(dir.path(), "a");
        append(&a.path, &record(1, "seen by the history"));
        let history_end = {
            let f = File::open(&a.path).unwrap();
            Position::of(&f, f.metadata().unwrap().len()).unwrap()
        };
        append(&a.path, &record(2, "after the history"));
        let listed = Arc::new(Mutex::new(vec![a.clone()]));
        let list = {
            let listed = Arc::clone(&listed);
            move || Ok(listed.lock().unwrap().clone())
        };
        let watch = Arc::new(LogWatch::start(dir.path()).unwrap());
        let (tx, mut rx) = mpsc::channel(16);
        let (_stop_tx, stop) = watch::channel(false);
        let positions = HashMap::from([("a".to_owned(), history_end)]);
        let task = tokio::spawn(follow_with(list, Some(watch), positions, tx, stop));
        expect(&mut rx, &["after the history"]).await;

        append(&a.path, &record(3, "written"));
        expect(&mut rx, &["written"]).await;

        // Rotated as the sandbox does it: the old file gets one more record, is renamed,
        // and a new one is started.
        append(&a.path, &record(4, "last of the old file"));
        std::fs::rename(&a.path, InstanceLog::rotated_path(&a.path)).unwrap();
        append(&a.path, &record(5, "first of the new file"));
        expect(&mut rx, &["last of the old file", "first of the new file"]).await;

        let b = instance(dir.path(), "b");
        listed.lock().unwrap().push(b.clone());
        append(&b.path, &record(6, "a new instance"));
        expect(&mut rx, &["a new instance"]).await;

        // A partly written record waits for its end.
        append(&a.path, "2026-01-01T00:00:00.000000007Z stdout F half");
        append(&a.path, " and the rest\n");
        expect(&mut rx, &["half and the rest"]).await;

        drop(rx);
        append(&a.path, &record(8, "after the reader left"));
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the follower did not end when its reader left")
            .unwrap();
    }

    #[test]
    fn a_large_backlog_is_read_in_turns() {
        let dir = tempfile::tempdir().unwrap();
        let a = instance(dir.path(), "a");
        let text: String = (0..40_000)
            .map(|n| record(n, "some backlog text"))
            .collect();
        append(&a.path, &text);
        let mut f = Follower::new(HashMap::new(), vec![a]);
        let mut turns = 0;
        let mut lines = Vec::new();
        loop {
            let mut out = Vec::new();
            let more = f.catch_up("a", &mut out);
            assert!(
                out.len() * 58 <= READ_AT_ONCE,
                "{} lines in a turn",
                out.len()
            );
            lines.extend(out);
            turns += 1;
            if !more {
                break;
            }
        }
        assert!(turns > 1);
        assert_eq!(lines.len(), 40_000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(n, l)| l.time == record(n as u32, "")[..30]));
    }

    #[test]
    fn a_position_in_a_file_rotated_twice_over_starts_the_current_file_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let a = instance(dir.path(), "a");
        append(&a.path, &record(1, "gone"));
        let lost = {
            let f = File::open(&a.path).unwrap();
            Position::of(&f, 0).unwrap()
        };
        std::fs::rename(&a.path, InstanceLog::rotated_path(&a.path)).unwrap();
        append(&a.path, &record(2, "middle"));
        std::fs::rename(&a.path, InstanceLog::rotated_path(&a.path)).unwrap();
        append(&a.path, &record(3, "now"));
        let mut f = Follower::new(HashMap::from([("a".to_owned(), lost)]), vec![a]);
        let mut out = Vec::new();
        assert!(!f.catch_up("a", &mut out));
        let got: Vec<&str> = out.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(got, ["now"]);
    }
}
