//! A service's log history as a stream: each instance's rotated and current files read
//! line by line from the first record at or after `since` (found by bisecting the file,
//! not by reading it), merged by time across instances. An instance's files are opened
//! only when the merge reaches the instance's start, so the descriptors held are those of
//! the instances that overlap in time, and memory is a buffer and a line per open one.
//!
//! It reads what the files hold when it opens them; what is written later is for
//! [`super::follow`], which starts from the [`Position`]s this leaves.

use super::record::{log_line, time_of};
use crate::documents::LogLine;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes buffered per open file.
const READ_BUFFER: usize = 16 << 10;
/// Below this span, bisection gives way to reading forward.
const BISECT_UNTIL: u64 = 8 << 10;

/// Where the history stopped in an instance's current log file: the file (which may be
/// renamed to `<log>.1` since) and the offset reached in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) offset: u64,
}

impl Position {
    pub(crate) fn of(file: &File, offset: u64) -> io::Result<Position> {
        let meta = file.metadata()?;
        Ok(Position {
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
        })
    }

    pub(crate) fn is_file(&self, meta: &std::fs::Metadata) -> bool {
        meta.dev() == self.dev && meta.ino() == self.ino
    }
}

/// An instance's log to read: its id and its current file's path.
#[derive(Clone, Debug)]
pub struct InstanceLog {
    pub id: String,
    pub path: PathBuf,
    /// A time no record of the instance is older than (its creation), in the records'
    /// form: the merge opens the instance's files once it reaches this time.
    pub not_before: String,
}

impl InstanceLog {
    /// `<log>.1`, where the current file goes when it is rotated.
    pub(crate) fn rotated_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".1");
        PathBuf::from(p)
    }
}

/// The lines of one instance, from its files in order.
struct Cursor {
    id: String,
    segments: VecDeque<BufReader<io::Take<File>>>,
    since: Option<String>,
    buf: Vec<u8>,
}

impl Cursor {
    /// Opens the files of `log`. The current file is opened first: if it is rotated in
    /// between, the rotated file then opened is an older one, read first, and the
    /// position left is in the file now at `<log>.1`, where [`super::follow`] looks.
    fn open(log: &InstanceLog, since: Option<&str>) -> io::Result<(Cursor, Option<Position>)> {
        let current = open_if_there(&log.path)?;
        let rotated = open_if_there(&InstanceLog::rotated_path(&log.path))?;
        let mut segments = VecDeque::new();
        let mut position = None;
        for (file, is_current) in [(rotated, false), (current, true)] {
            let Some(mut file) = file else { continue };
            // Whole records only: the file may be growing, and a record being written
            // is read by the follower, from its start, once it is whole.
            let len = whole_records_end(&mut file)?;
            if is_current {
                position = Some(Position::of(&file, len)?);
            }
            let start = match since {
                Some(since) => first_record_from(&mut file, len, since)?,
                None => 0,
            };
            file.seek(SeekFrom::Start(start))?;
            segments.push_back(BufReader::with_capacity(
                READ_BUFFER,
                file.take(len - start),
            ));
        }
        let cursor = Cursor {
            id: log.id.clone(),
            segments,
            since: since.map(str::to_owned),
            buf: Vec::new(),
        };
        Ok((cursor, position))
    }

    /// The next line at or after `since`; `None` at the end of the last file.
    fn next_line(&mut self) -> io::Result<Option<LogLine>> {
        while let Some(segment) = self.segments.front_mut() {
            self.buf.clear();
            if segment.read_until(b'\n', &mut self.buf)? == 0 {
                self.segments.pop_front();
                continue;
            }
            let record = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let Some(line) = log_line(record, &self.id) else {
                continue;
            };
            if self
                .since
                .as_deref()
                .is_some_and(|s| line.time.as_str() < s)
            {
                continue;
            }
            return Ok(Some(line));
        }
        Ok(None)
    }
}

/// Where the file's last whole record ends: after its last newline (0 without one).
fn whole_records_end(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// `path` opened for reading, or `None` when there is no such file.
pub(super) fn open_if_there(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The offset of the first record of `file` (`len` bytes, records in time order) whose
/// time is at or after `since`, or near before it: the reader skips the older ones left.
fn first_record_from(file: &mut File, len: u64, since: &str) -> io::Result<u64> {
    // Every record starting before `lo` is older than `since`; the first record starting
    // at or after `hi` is not (or `hi` is the end).
    let (mut lo, mut hi) = (0, len);
    while hi - lo > BISECT_UNTIL {
        let mid = lo + (hi - lo) / 2;
        match record_at_or_after(file, mid, hi)? {
            Some((start, time)) if time.as_deref().is_some_and(|t| t < since) => lo = start + 1,
            _ => hi = mid,
        }
    }
    Ok(record_at_or_after(file, lo, len)?.map_or(len, |(start, _)| start))
}

/// The first record starting at or after `from` and before `end`, with its time (`None`
/// when it has none).
fn record_at_or_after(
    file: &mut File,
    from: u64,
    end: u64,
) -> io::Result<Option<(u64, Option<String>)>> {
    let start = if from == 0 {
        0
    } else {
        // A record starts after the newline at or after `from - 1`.
        file.seek(SeekFrom::Start(from - 1))?;
        let mut reader = BufReader::with_capacity(4096, (&mut *file).take(end - (from - 1)));
        let mut skipped = Vec::new();
        let n = reader.read_until(b'\n', &mut skipped)?;
        if skipped.last() != Some(&b'\n') {
            return Ok(None);
        }
        from - 1 + n as u64
    };
    if start >= end {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(start))?;
    let mut head = [0u8; 48];
    let n = read_up_to(file, &mut head)?;
    Ok(Some((start, time_of(&head[..n]).map(str::to_owned))))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A line waiting in the merge, ordered by its time (then by when it was read, so
/// equal times keep their instance order).
struct Head {
    line: LogLine,
    seq: u64,
    cursor: Cursor,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.line.time.as_str(), self.seq).cmp(&(other.line.time.as_str(), other.seq))
    }
}

/// The merged lines of a service's instances, oldest first; an iterator that blocks on
/// the file system.
pub struct History {
    waiting: VecDeque<InstanceLog>,
    open: BinaryHeap<Reverse<Head>>,
    since: Option<String>,
    seq: u64,
    positions: HashMap<String, Position>,
}

impl History {
    /// The history of `logs` (in any order) from `since` (in the records' form).
    pub fn new(mut logs: Vec<InstanceLog>, since: Option<String>) -> History {
        logs.sort_by(|a, b| a.not_before.cmp(&b.not_before));
        History {
            waiting: logs.into(),
            open: BinaryHeap::new(),
            since,
            seq: 0,
            positions: HashMap::new(),
        }
    }

    /// Where the history stopped in each instance's current file (for those read).
    pub fn into_positions(self) -> HashMap<String, Position> {
        self.positions
    }

    /// Opens the instances whose first records may come before the oldest line open.
    fn open_due(&mut self) {
        while let Some(next) = self.waiting.front() {
            let due = match self.open.peek() {
                Some(Reverse(head)) => next.not_before <= head.line.time,
                None => true,
            };
            if !due {
                break;
            }
            let Some(log) = self.waiting.pop_front() else {
                break;
            };
            match Cursor::open(&log, self.since.as_deref()) {
                Ok((cursor, position)) => {
                    if let Some(p) = position {
                        self.positions.insert(log.id.clone(), p);
                    }
                    self.push(cursor);
                }
                Err(e) => tracing::warn!(log = %log.path.display(), "reading a log: {e}"),
            }
        }
    }

    fn push(&mut self, mut cursor: Cursor) {
        match cursor.next_line() {
            Ok(Some(line)) => {
                self.seq += 1;
                self.open.push(Reverse(Head {
                    line,
                    seq: self.seq,
                    cursor,
                }));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(instance = %cursor.id, "reading a log: {e}"),
        }
    }
}

impl Iterator for History {
    type Item = LogLine;

    fn next(&mut self) -> Option<LogLine> {
        self.open_due();
        let Reverse(head) = self.open.pop()?;
        self.push(head.cursor);
        Some(head.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(second: u32, nanos: u32, text: &str) -> String {
        // Hours past 23 keep the order of the strings, which is all that is compared.
        let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
        format!("2026-01-01T{h:02}:{m:02}:{s:02}.{nanos:09}Z stdout F {text}\n")
    }

    fn log(dir: &Path, id: &str, not_before: u32, records: &[(u32, &str)]) -> InstanceLog {
        let path = dir.join(format!("{id}.log"));
        let mut f = File::create(&path).unwrap();
        for (s, text) in records {
            f.write_all(record(*s, 0, text).as_bytes()).unwrap();
        }
        InstanceLog {
            id: id.to_owned(),
            path,
            not_before: record(not_before, 0, "")[..30].to_owned(),
        }
    }

    fn messages(h: History) -> Vec<String> {
        h.map(|l| format!("{}:{}", l.instance, l.message)).collect()
    }

    #[test]
    fn instances_merge_by_time_and_rotated_files_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path(), "a", 1, &[(3, "a3"), (5, "a5")]);
        std::fs::write(
            InstanceLog::rotated_path(&a.path),
            record(1, 0, "a1") + &record(2, 0, "a2"),
        )
        .unwrap();
        let b = log(dir.path(), "b", 2, &[(2, "b2"), (4, "b4"), (6, "b6")]);
        let h = History::new(vec![b, a], None);
        assert_eq!(
            messages(h),
            ["a:a1", "a:a2", "b:b2", "a:a3", "b:b4", "a:a5", "b:b6"]
        );
    }

    #[test]
    fn files_open_only_when_the_merge_reaches_their_instance() {
        let dir = tempfile::tempdir().unwrap();
        let logs: Vec<InstanceLog> = (0..50)
            .map(|i| {
                log(
                    dir.path(),
                    &format!("i{i}"),
                    i * 10,
                    &[(i * 10, "x"), (i * 10 + 5, "y")],
                )
            })
            .collect();
        let mut h = History::new(logs, None);
        let mut most_open = 0;
        let mut count = 0;
        while h.next().is_some() {
            most_open = most_open.max(h.open.len());
            count += 1;
        }
        assert_eq!(count, 100);
        assert!(most_open <= 2, "{most_open} instances open at once");
    }

    #[test]
    fn since_starts_at_the_first_record_at_or_after_it() {
        let dir = tempfile::tempdir().unwrap();
        // Enough records that the bisection runs: 3,000 seconds of ~60-byte records.
        let records: Vec<(u32, String)> = (0..3000).map(|s| (s, format!("line {s}"))).collect();
        let refs: Vec<(u32, &str)> = records.iter().map(|(s, t)| (*s, t.as_str())).collect();
        let a = log(dir.path(), "a", 0, &refs);
        for from in [0u32, 1, 1234, 2999] {
            let since = record(from, 0, "")[..30].to_owned();
            let got = messages(History::new(vec![a.clone()], Some(since)));
            assert_eq!(got.len() as u32, 3000 - from, "from {from}");
            assert_eq!(got[0], format!("a:line {from}"));
        }
        let after = record(3000, 0, "")[..30].to_owned();
        assert!(messages(History::new(vec![a.clone()], Some(after))).is_empty());
        // Between two records: the later one comes first.
        let between = record(1234, 500, "")[..30].to_owned();
        let got = messages(History::new(vec![a], Some(between)));
        assert_eq!(got[0], "a:line 1235");
    }

    #[test]
    fn bisection_reads_a_sliver_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut f = io::BufWriter::new(File::create(&path).unwrap());
        for s in 0..100_000u32 {
            f.write_all(record(s, 0, "some words to make a record").as_bytes())
                .unwrap();
        }
        drop(f);
        let mut file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let since = record(77_777, 0, "")[..30].to_owned();
        let start = first_record_from(&mut file, len, &since).unwrap();
        let mut rest = String::new();
        file.seek(SeekFrom::Start(start)).unwrap();
        file.take(2 * BISECT_UNTIL)
            .read_to_string(&mut rest)
            .unwrap();
        // The start is within the bisection window (and a record) of the record itself.
        let exact = rest.find(&since).map(|i| i as u64);
        assert!(exact.is_some_and(|e| e <= BISECT_UNTIL + 100), "{exact:?}");
        assert!(start > 0);
    }

    #[test]
    fn a_record_being_written_is_left_to_the_follower_whole() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path(), "a", 1, &[(1, "one"), (2, "two")]);
        let whole = std::fs::metadata(&a.path).unwrap().len();
        let partial = record(3, 0, "three");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&a.path)
            .unwrap()
            .write_all(&partial.as_bytes()[..20])
            .unwrap();
        let mut h = History::new(vec![a], None);
        let got: Vec<String> = h.by_ref().map(|l| l.message).collect();
        assert_eq!(got, ["one", "two"]);
        assert_eq!(h.into_positions()["a"].offset, whole);
        let mut f = std::fs::File::open(dir.path().join("a.log")).unwrap();
        assert_eq!(whole_records_end(&mut f).unwrap(), whole);
        std::fs::write(dir.path().join("none.log"), "no newline at all").unwrap();
        let mut f = std::fs::File::open(dir.path().join("none.log")).unwrap();
        assert_eq!(whole_records_end(&mut f).unwrap(), 0);
    }

    #[test]
    fn garbled_records_are_skipped_and_unreadable_files_do_not_stop_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path(), "a", 1, &[(1, "a1")]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&a.path)
            .unwrap()
            .write_all(b"no-time-here\n\xff\xfe\n")
            .unwrap();
        let missing = InstanceLog {
            id: "gone".into(),
            path: dir.path().join("gone.log"),
            not_before: a.not_before.clone(),
        };
        let dir_as_log = InstanceLog {
            id: "dir".into(),
            path: dir.path().to_owned(),
            not_before: a.not_before.clone(),
        };
        let h = History::new(vec![a, missing, dir_as_log], None);
        assert_eq!(messages(h), ["a:a1"]);
    }
}
