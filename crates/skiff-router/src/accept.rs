//! Accepting connections through failures: an `accept(2)` that fails (above all for want
//! of descriptors) backs off exponentially instead of spinning, logs each new step of a
//! run of failures once, and, when descriptors are what is missing, lets go of a spare
//! one to take the waiting connection and refuse it at once, so that clients get an
//! answer instead of waiting in the backlog until they time out.

use skiff_core::Backoff;
use skiff_kernel::descriptors::{self, Spare};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The answer to a connection taken only to be refused: the server is out of descriptors.
pub const OUT_OF_DESCRIPTORS_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 52\r\nretry-after: 1\r\n\
connection: close\r\n\r\nskiff is out of file descriptors; try again shortly\n";

/// A listener's accept loop state.
pub struct Acceptor {
    what: &'static str,
    refusal: &'static [u8],
    spare: Spare,
    backoff: Backoff,
}

impl Acceptor {
    /// An accept loop for `what` (named in logs) that answers connections it must refuse
    /// with `refusal` (empty: just close them, as for TLS).
    pub fn new(what: &'static str, refusal: &'static [u8]) -> Acceptor {
        Acceptor {
            what,
            refusal,
            spare: Spare::new(),
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_secs(1)),
        }
    }

    /// The next connection. Failures are handled here (refused, backed off, logged); it
    /// returns only with a connection, so cancel it (`select!`) to stop.
    pub async fn next(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            let e = match listener.accept().await {
                Ok(conn) => {
                    self.backoff.succeed();
                    return conn;
                }
                Err(e) => e,
            };
            let refused = descriptors::is_exhaustion(&e) && self.refuse_one(listener).await;
            let step = self.backoff.fail();
            if step.log {
                tracing::warn!(
                    "{}: accepting a connection: {e}{}; next try in {:?} ({} failures in a row)",
                    self.what,
                    if refused {
                        " (refused one with 503)"
                    } else {
                        ""
                    },
                    step.wait,
                    step.failures
                );
            }
            tokio::time::sleep(step.wait).await;
        }
    }

    /// Frees the spare descriptor, accepts the connection waiting, answers it with the
    /// refusal and closes it, then takes the spare again. Whether one was refused.
    async fn refuse_one(&mut self, listener: &TcpListener) -> bool {
        if !self.spare.release() {
            // Lost to another thread after the last refusal: take one for next time.
            self.spare.retake();
            return false;
        }
        // Polled once: a connection is waiting, or there is nothing to refuse.
        let taken = tokio::time::timeout(Duration::ZERO, listener.accept()).await;
        let refused = match taken {
            Ok(Ok((stream, _))) => {
                refuse(&stream, self.refusal);
                true
            }
            _ => false,
        };
        self.spare.retake();
        refused
    }
}

/// Answers `stream` with `refusal` if its buffer takes it, without waiting, and closes it.
/// What the client sent already is read first: closing a socket with unread data resets
/// the connection, and the client might never see the answer.
pub(crate) fn refuse(stream: &TcpStream, refusal: &[u8]) {
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    if !refusal.is_empty() {
        let _ = stream.try_write(refusal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_say_their_length_right() {
        check_length(OUT_OF_DESCRIPTORS_503);
        check_length(crate::TOO_MANY_CONNECTIONS_503);
    }

    fn check_length(answer: &[u8]) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
    }
}
