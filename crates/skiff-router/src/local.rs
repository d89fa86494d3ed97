//! Requests the daemon itself sends to a service (deliveries of async invocations and
//! events): routed by their Host, split among revisions, queued for a pool slot (so
//! scale from zero and concurrency apply) and forwarded with the head the ingress would
//! write, but handed over in memory. Sending them to the ingress over loopback cost a
//! general HTTP client, a second parse of every head and a round trip per delivery:
//! about a third of the CPU bench/events spent per event.
//!
//! Only the answer's status and Retry-After come back; its body is read and dropped, so
//! the connection can serve the next request. This module must not decide whether a
//! delivery is due or what its answer means (see skiff-events' delivery policy).

use crate::body::BodyTracker;
use crate::buffers::{self, READ_CHUNK};
use crate::h1::{self, BodyLen, Forwarding, Head};
use crate::upstream::{Connection, RequestSize};
use crate::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a delivery got: the status the app answered, or the one the ingress would have
/// answered for it (404 no such service, 429 queue full, 502 unreachable or broken, 503
/// failing, 504 past the revision's request timeout), with its Retry-After if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl LocalAnswer {
    fn router(status: u16, retry_after: Option<u64>) -> LocalAnswer {
        LocalAnswer {
            status,
            retry_after: retry_after.map(|s| s.to_string()),
        }
    }
}

/// The address deliveries come from, for the app's `Forwarded`/`X-Forwarded-For`: the
/// daemon on this host (as when they went through the ingress over loopback).
const DAEMON_ADDRESS: &str = "127.0.0.1";

impl Router {
    /// Sends `head` (a request head as a client would send it: request line, fields
    /// including Host, the empty line; no framing fields) with `body` to the service its
    /// Host names, or to `service` if it names none. `caller`: who a private service is
    /// told calls it (`X-Skiff-Caller`); a public one is told nothing.
    pub async fn send_local(
        &self,
        service: &str,
        head: &[u8],
        body: &[u8],
        caller: &str,
    ) -> LocalAnswer {
        let mut parsed = Head::default();
        match parsed.parse_request(head) {
            Ok(true) if parsed.len == head.len() => {}
            _ => return LocalAnswer::router(400, None),
        }
        let label = parsed
            .host(head)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| self.service_of(h))
            .map(str::to_ascii_lowercase);
        let route = label
            .and_then(|l| self.route(&l))
            .or_else(|| self.route(service));
        let Some(route) = route else {
            return LocalAnswer::router(404, None);
        };
        let pool = route.pick();
        let timeout = pool.config().timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut request_id = Vec::new();
        match parsed.request_id(head) {
            Some(given) => request_id.extend_from_slice(given),
            None => self.new_request_id(&mut request_id),
        }
        let framing = match body.len() {
            0 => BodyLen::Empty,
            n => BodyLen::Length(n as u64),
        };
        let fwd = Forwarding {
            client_ip: DAEMON_ADDRESS,
            request_id: &request_id,
            body: framing,
            caller: route.private().map(|_| caller.as_bytes()),
            drop_authorization: false,
        };
        let mut out = Vec::with_capacity(head.len() + 256 + body.len());
        h1::write_request_head(&mut out, head, &parsed, &fwd);
        out.extend_from_slice(body);
        let is_head = parsed.is_head(head);
        let replayable = parsed.is_idempotent(head) && body.is_empty();
        let lease = match tokio::time::timeout_at(deadline, pool.acquire()).await {
            Err(_) => return LocalAnswer::router(504, None),
            Ok(Err(e)) => {
                let (status, retry_after) = e.status();
                return LocalAnswer::router(status, retry_after);
            }
            Ok(Ok(lease)) => lease,
        };
        let upstream = lease.upstream();
        let size = RequestSize::Known(out.len() as u64);
        let exchange = async {
            let mut conn = upstream.connection(size).await.map_err(drop)?;
            let mut fresh_once = false;
            loop {
                match exchange(&mut conn, &out, is_head).await {
                    Ok((answer, reusable)) => {
                        if reusable {
                            upstream.put_idle(conn);
                        }
                        return Ok(answer);
                    }
                    // A kept-alive connection the instance closed meanwhile: once more
                    // on a new one, when the app cannot have acted on it.
                    Err(Stale { sent }) if conn.reused && !fresh_once && (!sent || replayable) => {
                        fresh_once = true;
                        conn = upstream.open(size).await.map_err(drop)?;
                    }
                    Err(_) => return Err(()),
                }
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => LocalAnswer::router(504, None),
            Ok(Err(_)) => LocalAnswer::router(502, None),
            Ok(Ok(answer)) => answer,
        }
    }
}

/// An exchange that failed; `sent`: the request had been written.
struct Stale {
    sent: bool,
}

/// Writes `request` and reads the answer through its body; the answer and whether the
/// connection may serve another.
async fn exchange(
    conn: &mut Connection,
    request: &[u8],
    is_head: bool,
) -> Result<(LocalAnswer, bool), Stale> {
    conn.stream
        .write_all(request)
        .await
        .map_err(|_| Stale { sent: false })?;
    conn.buf.clear();
    // A connection back from the idle set gave its buffer to the shared ones.
    if conn.buf.capacity() == 0 {
        conn.buf = buffers::take();
    }
    let mut head = Head::default();
    loop {
        if !conn.buf.is_empty() {
            match head.parse_response(&conn.buf) {
                Ok(true) if head.status >= 200 => break,
                // Interim answers (100, 103) come before the final one.
                Ok(true) => {
                    conn.buf.drain(..head.len);
                    continue;
                }
                Ok(false) => {}
                Err(_) => return Err(Stale { sent: true }),
            }
        }
        read_more(conn).await?;
    }
    let retry_after = head
        .field_named(&conn.buf, b"retry-after")
        .map(|v| String::from_utf8_lossy(v).trim().to_owned());
    let answer = LocalAnswer {
        status: head.status,
        retry_after,
    };
    let framing = head
        .response_body(is_head)
        .map_err(|_| Stale { sent: true })?;
    let reusable = head.keeps_alive() && framing != BodyLen::UntilClose;
    let mut body = BodyTracker::new(framing);
    let mut at = head.len;
    loop {
        let used = body
            .take(&conn.buf[at..], |_| {})
            .map_err(|_| Stale { sent: true })?;
        at += used;
        if body.is_done() {
            // Bytes past the answer: the instance sent more than one; do not reuse.
            return Ok((answer, reusable && at == conn.buf.len()));
        }
        conn.buf.clear();
        at = 0;
        match read_more(conn).await {
            Ok(()) => {}
            // A body delimited by the close has ended.
            Err(_) if matches!(body, BodyTracker::UntilClose) => return Ok((answer, false)),
            Err(e) => return Err(e),
        }
    }
}

/// Reads what the instance sent next; an error when it closed or failed.
async fn read_more(conn: &mut Connection) -> Result<(), Stale> {
    conn.buf.reserve(READ_CHUNK);
    match conn.stream.read_buf(&mut conn.buf).await {
        Ok(0) | Err(_) => Err(Stale { sent: true }),
        Ok(_) => Ok(()),
    }
}
