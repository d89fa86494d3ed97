//! Waiting for a process to exit without a thread per process: its pidfd turns readable
//! when it exits, and tokio's reactor watches it like a socket.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A pidfd shared with its other users, as the reactor watches it.
struct Shared(Arc<OwnedFd>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Resolves once the process behind `pidfd` has exited. Must be called within a tokio
/// runtime. An error means the pidfd could not be watched.
///
/// The descriptor is watched itself, not a copy, so that a process watched for days
/// costs one descriptor. One descriptor can be in the reactor once: while another
/// watch of it is pending, this one watches a copy.
pub async fn exited(pidfd: Arc<OwnedFd>) -> io::Result<()> {
    let watched = match register(Shared(Arc::clone(&pidfd))) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            register(Shared(Arc::new(pidfd.try_clone()?)))?
        }
        other => other?,
    };
    let _ready = watched.readable().await?;
    Ok(())
}

fn register(fd: Shared) -> io::Result<AsyncFd<Shared>> {
    // SAFETY: the Arc moved into the AsyncFd keeps the descriptor open for the AsyncFd's
    // whole life, and nothing closes or replaces it while any Arc holds it, as
    // `register_with_interest` requires.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    use std::time::Duration;

    #[tokio::test]
    async fn resolves_when_the_process_exits_and_not_before() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        let fd = Arc::new(pidfd_open(pid, PidfdFlags::empty()).unwrap());
        // Two watches of the one descriptor at once: both resolve at the exit.
        let waiting = tokio::spawn(exited(Arc::clone(&fd)));
        let also = tokio::spawn(exited(Arc::clone(&fd)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "sleep 0.3 is still running");
        assert!(!also.is_finished(), "sleep 0.3 is still running");
        for watch in [waiting, also] {
            tokio::time::timeout(Duration::from_secs(10), watch)
                .await
                .expect("the exit is seen")
                .unwrap()
                .unwrap();
        }
        child.wait().unwrap();
    }
}
