//! Waiting for a process to exit without a thread per process: its pidfd turns readable
//! when it exits, and tokio's reactor watches it like a socket.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Resolves once the process behind `pidfd` has exited. Must be called within a tokio
/// runtime. An error means the pidfd could not be watched.
pub async fn exited(pidfd: OwnedFd) -> io::Result<()> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and unchanged
    // for its whole life, as `register_with_interest` requires.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }?;
    let _ready = fd.readable().await?;
    Ok(())
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
        let fd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
        let waiting = tokio::spawn(exited(fd));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "sleep 0.3 is still running");
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the exit is seen")
            .unwrap()
            .unwrap();
        child.wait().unwrap();
    }
}
