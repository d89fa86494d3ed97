//! Captures an instance's stdout and stderr into its log file, one line per record in the
//! CRI format (`<RFC 3339 time> <stream> <F|P> <text>`), so logs survive the instance and
//! can be read back by time. Optionally copies the raw bytes to this process's own
//! stdout/stderr (`skiff run` in the foreground).
//!
//! Three limits keep one instance's output from costing the host:
//! - the file is capped: past the cap it is rotated to `<log>.1` (replacing an older one);
//! - a rate ([`LogRate`]): past its burst the pump stops reading the instance's pipes
//!   for as long as the rate asks, so the app blocks on a full pipe: a flood is paid for
//!   by the app's own time, not by the daemon's CPU;
//! - a budget shared by every instance ([`LogBudget`]): when all logs together hold
//!   it, records are dropped, and the log says how many bytes were, once it can.

use rustix::fd::OwnedFd;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Longest line kept whole; longer ones are split into partial (`P`) records.
const MAX_LINE: usize = 16 * 1024;

/// Where records go: each record arrives in pieces, written without joining them.
trait Records {
    fn append(&mut self, parts: &[&[u8]]);
}

impl Records for Vec<u8> {
    fn append(&mut self, parts: &[&[u8]]) {
        parts.iter().for_each(|p| self.extend_from_slice(p));
    }
}

/// How fast an instance's output may reach its log: `bytes_per_sec` sustained, after a
/// burst of `burst` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRate {
    /// Sustained bytes per second.
    pub bytes_per_sec: u64,
    /// Bytes that may come at once.
    pub burst: u64,
}

/// A token bucket for [`LogRate`], on a clock the caller gives.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    rate: LogRate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: LogRate, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate.burst as f64,
            at: now,
        }
    }

    /// Takes `n` bytes; returns how long to wait before taking more.
    pub(crate) fn take(&mut self, n: usize, now: Instant) -> Duration {
        let per_sec = self.rate.bytes_per_sec.max(1) as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * per_sec).min(self.rate.burst as f64);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / per_sec)
        }
    }
}

/// What every instance's logs may hold together (bytes), shared by their pumps. The
/// daemon sets what is used from the files now and then (deleted logs free it); pumps
/// add what they write in between.
#[derive(Debug)]
pub struct LogBudget {
    used: AtomicU64,
    limit: u64,
}

impl LogBudget {
    /// A budget of `limit` bytes, `used` of them taken.
    pub fn new(limit: u64, used: u64) -> LogBudget {
        LogBudget {
            used: AtomicU64::new(used),
            limit,
        }
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes taken.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Sets what the log files hold now (after a count of them).
    pub fn set_used(&self, bytes: u64) {
        self.used.store(bytes, Ordering::Relaxed);
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u.saturating_add(n) <= self.limit).then_some(u + n)
            })
            .is_ok()
    }
}

/// The limits of one instance's log beyond its file cap.
#[derive(Clone, Debug, Default)]
pub struct LogLimits {
    /// How fast its output may be logged (`None`: as fast as it comes).
    pub rate: Option<LogRate>,
    /// The budget all logs share (`None`: only the file cap).
    pub budget: Option<Arc<LogBudget>>,
}

/// The log file, rotated to `<path>.1` when a record would take it past `max` bytes.
/// It may be closed while its instance is quiet and is opened again by the next record,
/// so a quiet instance holds no descriptor for its log.
pub struct LogFile {
    path: PathBuf,
    out: Option<io::BufWriter<File>>,
    written: u64,
    max: u64,
    budget: Option<Arc<LogBudget>>,
    /// Bytes of records dropped for the budget and not yet reported in the log.
    dropped: u64,
}

/// Opens the log at `path` for appending, never through a symbolic link.
pub fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl LogFile {
    /// Wraps the already-open `file` at `path` (opened by the caller, so that a bad path
    /// fails the start instead of the pump thread), capped at `max` bytes (0 = no cap).
    pub fn new(path: PathBuf, file: File, max: u64) -> Self {
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        LogFile {
            path,
            out: Some(io::BufWriter::new(file)),
            written,
            max,
            budget: None,
            dropped: 0,
        }
    }

    /// Counts what it writes against `budget`, dropping records that do not fit.
    pub fn within(mut self, budget: Option<Arc<LogBudget>>) -> Self {
        self.budget = budget;
        self
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.close();
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.written = 0;
        Ok(())
    }

    pub(crate) fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            let _ = out.flush();
        }
    }

    /// Writes out what is buffered and lets the file go; the next record opens it again.
    pub(crate) fn close(&mut self) {
        self.flush();
        self.out = None;
    }

    /// Whether the file is open now.
    pub(crate) fn is_open(&self) -> bool {
        self.out.is_some()
    }

    /// The open file, opened again if it was let go (its size read anew: the file may
    /// have been removed or rotated meanwhile).
    fn opened(&mut self) -> io::Result<&mut io::BufWriter<File>> {
        if self.out.is_none() {
            let file = open_log(&self.path)?;
            self.written = file.metadata()?.len();
            self.out = Some(io::BufWriter::new(file));
        }
        Ok(self.out.as_mut().expect("opened above"))
    }

    /// Whether `len` more bytes fit the shared budget.
    fn fits(&self, len: usize) -> bool {
        self.budget.as_ref().is_none_or(|b| b.try_take(len as u64))
    }

    fn write_parts(&mut self, parts: &[&[u8]], len: usize) {
        if self.max > 0 && self.written > 0 && self.written + len as u64 > self.max {
            if let Err(e) = self.rotate() {
                tracing::warn!(log = %self.path.display(), error = %e, "could not rotate log");
            }
        }
        let out = match self.opened() {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(log = %self.path.display(), error = %e, "could not open log");
                return;
            }
        };
        if parts.iter().all(|p| out.write_all(p).is_ok()) {
            self.written += len as u64;
        }
    }
}

impl Records for LogFile {
    fn append(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.dropped > 0 {
            // The gap is told before the next record, if the two fit.
            let note = format!(
                "{} stderr F [skiff: {} bytes of output dropped: the logs of all instances \
                 are at their budget]\n",
                rfc3339_now(),
                self.dropped
            );
            if !self.fits(note.len() + len) {
                self.dropped += len as u64;
                return;
            }
            self.write_parts(&[note.as_bytes()], note.len());
            self.dropped = 0;
        } else if !self.fits(len) {
            self.dropped += len as u64;
            return;
        }
        self.write_parts(parts, len);
    }
}

/// One of an instance's output pipes, and what it sent of a line not yet ended.
pub(crate) struct Stream {
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) name: &'static str,
    pending: Vec<u8>,
}

impl Stream {
    pub(crate) fn new(fd: OwnedFd, name: &'static str) -> Stream {
        Stream {
            fd: Some(fd),
            name,
            pending: Vec::new(),
        }
    }

    /// Logs the complete lines (and long partial ones) that `bytes` ends.
    pub(crate) fn take(&mut self, bytes: &[u8], log: &mut LogFile) {
        self.pending.extend_from_slice(bytes);
        drain_lines(log, self);
    }

    /// Logs what is left of a line the pipe ended in the middle of.
    pub(crate) fn flush_rest(&mut self, log: &mut LogFile) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            record(log, &rfc3339_now(), self.name, "F", &rest);
        }
    }
}

/// Copies raw output to this process's own stdout (`which` 0) or stderr.
pub(crate) fn tee(which: usize, bytes: &[u8]) {
    let _ = if which == 0 {
        io::stdout()
            .write_all(bytes)
            .and_then(|_| io::stdout().flush())
    } else {
        io::stderr().write_all(bytes)
    };
}

/// Records the complete lines of `s.pending` (and long partial ones), all stamped with
/// one time: they were read at once, and the clock is read once per read, not per line.
fn drain_lines(log: &mut impl Records, s: &mut Stream) {
    let stamp = rfc3339_now();
    let mut start = 0;
    while let Some(pos) = s.pending[start..].iter().position(|&b| b == b'\n') {
        record(log, &stamp, s.name, "F", &s.pending[start..start + pos]);
        start += pos + 1;
    }
    while s.pending.len() - start > MAX_LINE {
        record(
            log,
            &stamp,
            s.name,
            "P",
            &s.pending[start..start + MAX_LINE],
        );
        start += MAX_LINE;
    }
    s.pending.drain(..start);
}

fn record(log: &mut impl Records, stamp: &str, stream: &str, tag: &str, line: &[u8]) {
    log.append(&[
        stamp.as_bytes(),
        b" ",
        stream.as_bytes(),
        b" ",
        tag.as_bytes(),
        b" ",
        line,
        b"\n",
    ]);
}

/// Current UTC time as RFC 3339 with nanoseconds.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339(
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) * 1_000_000) as u32,
    )
}

/// Formats a Unix time as RFC 3339 UTC.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap_keeping_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut log = LogFile::new(path.clone(), file, 200);
        for i in 0..20 {
            record(
                &mut log,
                &rfc3339_now(),
                "stdout",
                "F",
                format!("line {i:02}").as_bytes(),
            );
        }
        log.flush();
        let current = std::fs::read_to_string(&path).unwrap();
        let older = std::fs::read_to_string(dir.path().join("i.log.1")).unwrap();
        assert!(
            current.len() <= 200 && older.len() <= 200,
            "{} {}",
            current.len(),
            older.len()
        );
        assert!(current.ends_with("stdout F line 19\n"), "{current}");
        for text in [&current, &older] {
            assert!(
                text.lines().all(|l| l.contains(" stdout F line ")),
                "a record was split: {text}"
            );
        }
    }

    #[test]
    fn the_rate_lets_a_burst_through_then_asks_to_wait() {
        let t0 = Instant::now();
        let rate = LogRate {
            bytes_per_sec: 1000,
            burst: 2000,
        };
        let mut b = Bucket::new(rate, t0);
        assert_eq!(b.take(2000, t0), Duration::ZERO, "the burst");
        assert_eq!(b.take(1000, t0), Duration::from_secs(1));
        // Two seconds on, the debt is paid and 1000 bytes are back.
        assert_eq!(b.take(500, t0 + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(b.take(500, t0 + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(
            b.take(500, t0 + Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        // Idle time refills no further than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(2000, later), Duration::ZERO);
        assert!(!b.take(1, later).is_zero());
    }

    #[test]
    fn past_the_budget_records_are_dropped_and_the_gap_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.log");
        let file = std::fs::File::create(&path).unwrap();
        let budget = Arc::new(LogBudget::new(400, 0));
        let mut log = LogFile::new(path.clone(), file, 0).within(Some(Arc::clone(&budget)));
        let stamp = rfc3339_now();
        for i in 0..20 {
            record(
                &mut log,
                &stamp,
                "stdout",
                "F",
                format!("line {i:02}").as_bytes(),
            );
        }
        log.flush();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(kept.len() <= 400, "{}", kept.len());
        assert!(
            kept.contains("line 00") && !kept.contains("line 19"),
            "{kept}"
        );
        assert_eq!(budget.used(), kept.len() as u64);
        // Logs deleted elsewhere free the budget: the gap is told, then output goes on.
        budget.set_used(0);
        record(&mut log, &stamp, "stdout", "F", b"after");
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let tail: Vec<&str> = text.lines().rev().take(2).collect();
        assert!(tail[0].ends_with("stdout F after"), "{text}");
        assert!(
            tail[1].contains("stderr F [skiff: ") && tail[1].contains("bytes of output dropped"),
            "{text}"
        );
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_500_000, 0), "2026-11-24T06:00:00.000000000Z");
    }

    #[test]
    fn splits_lines_and_long_partials() {
        let mut out = Vec::new();
        let mut s = Stream {
            fd: None,
            name: "stdout",
            pending: b"a\nbb\ncc".to_vec(),
        };
        drain_lines(&mut out, &mut s);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F a") && lines[1].ends_with(" stdout F bb"));
        assert_eq!(s.pending, b"cc");
        let mut out = Vec::new();
        s.pending = vec![b'x'; MAX_LINE * 2 + 3];
        drain_lines(&mut out, &mut s);
        assert_eq!(
            String::from_utf8(out)
                .unwrap()
                .matches(" stdout P ")
                .count(),
            2
        );
        assert_eq!(s.pending.len(), 3);
    }
}
