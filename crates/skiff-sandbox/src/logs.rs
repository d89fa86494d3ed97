//! Captures an instance's stdout and stderr into its log file, one line per record in the
//! CRI format (`<RFC 3339 time> <stream> <F|P> <text>`), so logs survive the instance and
//! can be read back by time. The file is capped: past the cap it is rotated to `<log>.1`
//! (replacing an older one), so a chatty instance cannot fill the host's disk. Optionally
//! copies the raw bytes to this process's own stdout/stderr (`skiff run` in the foreground).

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Longest line kept whole; longer ones are split into partial (`P`) records.
const MAX_LINE: usize = 16 * 1024;

/// Where records go.
trait Records {
    fn append(&mut self, record: &[u8]);
}

impl Records for Vec<u8> {
    fn append(&mut self, record: &[u8]) {
        self.extend_from_slice(record);
    }
}

/// The log file, rotated to `<path>.1` when a record would take it past `max` bytes.
pub struct LogFile {
    path: PathBuf,
    out: io::BufWriter<File>,
    written: u64,
    max: u64,
}

impl LogFile {
    /// Wraps the already-open `file` at `path` (opened by the caller, so that a bad path
    /// fails the start instead of the pump thread), capped at `max` bytes (0 = no cap).
    pub fn new(path: PathBuf, file: File, max: u64) -> Self {
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        LogFile {
            path,
            out: io::BufWriter::new(file),
            written,
            max,
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = io::BufWriter::new(file);
        self.written = 0;
        Ok(())
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

impl Records for LogFile {
    fn append(&mut self, record: &[u8]) {
        if self.max > 0 && self.written > 0 && self.written + record.len() as u64 > self.max {
            if let Err(e) = self.rotate() {
                tracing::warn!(log = %self.path.display(), error = %e, "could not rotate log");
            }
        }
        if self.out.write_all(record).is_ok() {
            self.written += record.len() as u64;
        }
    }
}

/// Starts the pump thread; it ends when both pipes reach EOF.
pub fn spawn(
    stdout: OwnedFd,
    stderr: OwnedFd,
    log: LogFile,
    tee: bool,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("skiff-logs".into())
        .spawn(move || pump(stdout, stderr, log, tee))
}

struct Stream {
    fd: Option<OwnedFd>,
    name: &'static str,
    pending: Vec<u8>,
}

fn pump(stdout: OwnedFd, stderr: OwnedFd, mut log: LogFile, tee: bool) {
    let mut streams = [
        Stream {
            fd: Some(stdout),
            name: "stdout",
            pending: Vec::new(),
        },
        Stream {
            fd: Some(stderr),
            name: "stderr",
            pending: Vec::new(),
        },
    ];
    let mut buf = vec![0u8; 64 * 1024];
    while streams.iter().any(|s| s.fd.is_some()) {
        let ready: Vec<usize> = {
            let live: Vec<(usize, &OwnedFd)> = streams
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.fd.as_ref().map(|fd| (i, fd)))
                .collect();
            let mut fds: Vec<PollFd<'_>> = live
                .iter()
                .map(|(_, fd)| PollFd::new(*fd, PollFlags::IN))
                .collect();
            if poll(&mut fds, None).is_err() {
                continue;
            }
            fds.iter()
                .zip(&live)
                .filter(|(p, _)| !p.revents().is_empty())
                .map(|(_, (i, _))| *i)
                .collect()
        };
        for i in ready {
            let s = &mut streams[i];
            let Some(fd) = &s.fd else { continue };
            match rustix::io::read(fd, &mut buf) {
                Ok(0) | Err(_) => {
                    if !s.pending.is_empty() {
                        let rest = std::mem::take(&mut s.pending);
                        record(&mut log, s.name, "F", &rest);
                    }
                    s.fd = None;
                }
                Ok(n) => {
                    if tee {
                        let _ = if i == 0 {
                            io::stdout()
                                .write_all(&buf[..n])
                                .and_then(|_| io::stdout().flush())
                        } else {
                            io::stderr().write_all(&buf[..n])
                        };
                    }
                    s.pending.extend_from_slice(&buf[..n]);
                    drain_lines(&mut log, s);
                }
            }
        }
        log.flush();
    }
    log.flush();
}

fn drain_lines(log: &mut impl Records, s: &mut Stream) {
    let mut start = 0;
    while let Some(pos) = s.pending[start..].iter().position(|&b| b == b'\n') {
        record(log, s.name, "F", &s.pending[start..start + pos]);
        start += pos + 1;
    }
    while s.pending.len() - start > MAX_LINE {
        record(log, s.name, "P", &s.pending[start..start + MAX_LINE]);
        start += MAX_LINE;
    }
    s.pending.drain(..start);
}

fn record(log: &mut impl Records, stream: &str, tag: &str, line: &[u8]) {
    let mut rec = format!("{} {stream} {tag} ", rfc3339_now()).into_bytes();
    rec.extend_from_slice(line);
    rec.push(b'\n');
    log.append(&rec);
}

/// Current UTC time as RFC 3339 with nanoseconds.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
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
            record(&mut log, "stdout", "F", format!("line {i:02}").as_bytes());
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
