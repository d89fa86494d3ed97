//! Watching a directory's files with inotify, awaited on tokio's reactor: which names
//! were written, created, renamed in or closed by a writer.
#![allow(unsafe_code)]

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What happened to a file of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirEvent {
    /// The file of this name was written, created or renamed into the directory.
    Written(String),
    /// The file of this name was closed by a writer.
    Closed(String),
    /// The kernel's queue overflowed: events were lost.
    Overflow,
}

/// An inotify watch on one directory.
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<MaybeUninit<u8>>,
}

impl DirWatch {
    /// Watches `dir`, which must be a directory. Must be called within a tokio runtime.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            WatchFlags::MODIFY
                | WatchFlags::CREATE
                | WatchFlags::MOVED_TO
                | WatchFlags::CLOSE_WRITE
                | WatchFlags::ONLYDIR,
        )?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
        // for its whole life, as `register_with_interest` requires.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(DirWatch {
            fd,
            buf: vec![MaybeUninit::uninit(); 64 << 10],
        })
    }

    /// Waits for events and appends those queued to `out` (at least one), a run of the
    /// same event told once.
    pub async fn next_events(&mut self, out: &mut Vec<DirEvent>) -> io::Result<()> {
        let start = out.len();
        loop {
            let mut guard = self.fd.readable().await?;
            let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut self.buf);
            loop {
                let event = match reader.next() {
                    Ok(event) => classify(event.events(), event.file_name()),
                    Err(Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                };
                if let Some(event) = event {
                    if out.len() == start || out.last() != Some(&event) {
                        out.push(event);
                    }
                }
            }
            if out.len() > start {
                return Ok(());
            }
        }
    }
}

fn classify(events: ReadFlags, name: Option<&std::ffi::CStr>) -> Option<DirEvent> {
    if events.contains(ReadFlags::QUEUE_OVERFLOW) {
        return Some(DirEvent::Overflow);
    }
    let name = name?.to_str().ok()?.to_owned();
    if events.contains(ReadFlags::CLOSE_WRITE) {
        Some(DirEvent::Closed(name))
    } else {
        Some(DirEvent::Written(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next(w: &mut DirWatch) -> Vec<DirEvent> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), w.next_events(&mut out))
            .await
            .expect("no event within 10 s")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn writes_creations_renames_and_closes_are_told_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DirWatch::new(dir.path()).unwrap();
        let path = dir.path().join("a.log");
        let mut f = std::fs::File::create(&path).unwrap();
        assert_eq!(next(&mut w).await, [DirEvent::Written("a.log".into())]);
        std::io::Write::write_all(&mut f, b"x\n").unwrap();
        assert_eq!(next(&mut w).await, [DirEvent::Written("a.log".into())]);
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        assert_eq!(next(&mut w).await, [DirEvent::Written("a.log.1".into())]);
        drop(f);
        assert_eq!(next(&mut w).await, [DirEvent::Closed("a.log.1".into())]);
        // Reading a file is no event.
        std::fs::read(dir.path().join("a.log.1")).unwrap();
        std::fs::write(dir.path().join("b.log"), "y\n").unwrap();
        let got = next(&mut w).await;
        assert_eq!(got[0], DirEvent::Written("b.log".into()), "{got:?}");
    }

    #[tokio::test]
    async fn only_a_directory_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(DirWatch::new(&file).is_err());
        assert!(DirWatch::new(&dir.path().join("missing")).is_err());
    }
}
