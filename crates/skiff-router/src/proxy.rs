//! Forwarding one request to an instance: takes a slot from the revision's pool, writes
//! the request head (proxy fields set, hop-by-hop fields gone) with whatever body bytes
//! are already buffered in one write, streams the rest of the body while relaying the
//! response, and returns the connection to the instance's idle set only when both
//! messages ended exactly where their framing said. Upgrades (WebSocket) become a byte
//! pipe. Failures before the response starts become the status a client expects:
//! 429 (queue full), 502 (instance unreachable or broken), 503 (revision failing),
//! 504 (timeout); after it starts, the client connection is closed. The request timeout
//! bounds the whole exchange: a body still streaming, or an upgraded connection still
//! open, at the deadline is cut.
//!
//! This module must not route or parse request heads (see [`crate::conn`]).

use crate::body::{BodyTracker, ChunkError};
use crate::buffers::{self, READ_CHUNK};
use crate::conn::{ClientConn, RequestInfo};
use crate::h1::{self, BodyLen, Forwarding, Head, ResponseOut};
use crate::pool::RevisionPool;
use crate::upstream::{Connection, RequestSize, Upstream};
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

/// What a client that sent `Expect: 100-continue` waits for before sending its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How relaying a response went.
enum Relay {
    /// The response was relayed completely.
    Done {
        /// The instance's connection ended the exchange cleanly and may serve another.
        reusable: bool,
        /// The client connection may carry another request.
        keep_client: bool,
    },
    /// A 101 head went to the client: the connection is now a byte pipe.
    Upgraded,
    /// The instance closed a kept-alive connection before answering at all: before the
    /// request was written (`sent: false`, so it never got it), or after.
    Stale { sent: bool },
    /// Nothing reached the client yet; it gets 502 with this reason.
    Failed(String),
    /// Past the request timeout, before the response started.
    TimedOut,
    /// Broken after the response started: the client connection must close.
    Broken,
}

/// Why sending the rest of a request body stopped.
enum SendError {
    /// The client closed or sent a malformed chunked body.
    Client,
    /// The instance stopped reading (it may still answer).
    Upstream,
}

/// Bodies up to this size are read whole before an instance's slot is taken.
const SMALL_BODY: usize = 64 * 1024;

/// How reading a small body ended.
pub(crate) enum BodyRead {
    Whole,
    Closed,
    /// The client paused longer than the body idle timeout.
    Stalled,
    /// The request timeout passed.
    TimedOut,
}

/// Reads until the `len` bytes of body after the head are in `c.buf`, answering
/// `Expect: 100-continue` first (the router itself takes the body).
pub(crate) async fn read_small_body(
    c: &mut ClientConn,
    len: usize,
    info: RequestInfo,
    mut deadline: Pin<&mut Sleep>,
) -> BodyRead {
    if c.buf.len() - c.start >= len {
        return BodyRead::Whole;
    }
    if info.expect_continue && c.stream.write_all(CONTINUE).await.is_err() {
        return BodyRead::Closed;
    }
    while c.buf.len() - c.start < len {
        c.buf.reserve(len - (c.buf.len() - c.start));
        let read = tokio::select! {
            biased;
            read = tokio::time::timeout(info.body_idle, c.stream.read_buf(&mut c.buf)) => read,
            () = deadline.as_mut() => return BodyRead::TimedOut,
        };
        match read {
            Err(_) => return BodyRead::Stalled,
            Ok(Ok(0) | Err(_)) => return BodyRead::Closed,
            Ok(Ok(_)) => {}
        }
    }
    BodyRead::Whole
}

/// What letting a request in adds to it: nothing for a public service.
#[derive(Default)]
pub(crate) struct Admitted {
    /// Who called a private service (`X-Skiff-Caller`).
    pub caller: Option<String>,
    /// The Authorization field held the token that let it in.
    pub drop_authorization: bool,
}

/// Forwards the request whose head is in `c.head` to an instance of `pool`; returns
/// whether the client connection goes on.
pub(crate) async fn forward(
    c: &mut ClientConn,
    pool: &Arc<RevisionPool>,
    info: RequestInfo,
    body: BodyLen,
    admitted: &Admitted,
    mut deadline: Pin<&mut Sleep>,
) -> bool {
    let timeout = pool.config().timeout;
    crate::deadline::extend_deadline(deadline.as_mut(), Instant::now(), timeout);
    // The forwarded head is written now, so the request head leaves the buffer in one
    // place whatever happens next.
    c.req_out.clear();
    let fwd = Forwarding {
        client_ip: &c.client_ip,
        request_id: &c.request_id,
        body,
        caller: admitted.caller.as_deref().map(str::as_bytes),
        drop_authorization: admitted.drop_authorization,
    };
    h1::write_request_head(&mut c.req_out, &c.buf[c.start..], &c.head, &fwd);
    c.start += info.head_len;
    let size = request_size(info, body, c.req_out.len());
    let has_body = !matches!(body, BodyLen::Empty | BodyLen::Length(0));
    let keep_on_error = info.keep_alive && !has_body;
    // A small body is read whole before an instance's slot is taken: a client that
    // stalls sending it then holds no slot (and starts no instance) while it stalls.
    if let BodyLen::Length(n) = body {
        if n <= SMALL_BODY as u64 && !info.upgrade {
            match read_small_body(c, n as usize, info, deadline.as_mut()).await {
                BodyRead::Whole => {}
                BodyRead::Closed => return false,
                BodyRead::Stalled => {
                    let why = format!("skiff: the request body stalled for {:?}", info.body_idle);
                    return c.respond_local(408, &why, None, false).await;
                }
                BodyRead::TimedOut => return timed_out(c, pool, false).await,
            }
        }
    }
    let acquired = tokio::select! {
        biased;
        lease = pool.acquire() => lease,
        () = deadline.as_mut() => return timed_out(c, pool, keep_on_error).await,
    };
    let lease = match acquired {
        Ok(lease) => lease,
        Err(e) => {
            let (status, retry) = e.status();
            return c
                .respond_local(status, &format!("skiff: {e}"), retry, keep_on_error)
                .await;
        }
    };
    let upstream = lease.upstream();
    let connected = tokio::select! {
        biased;
        conn = upstream.connection(size) => conn,
        () = deadline.as_mut() => return timed_out(c, pool, keep_on_error).await,
    };
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(e) => {
            return bad_gateway(c, upstream, &format!("connecting: {e}"), keep_on_error).await;
        }
    };

    let mut sending = BodyTracker::new(body);
    let buffered = &c.buf[c.start..];
    let Ok(used) = sending.take(buffered, |_| {}) else {
        let text = "skiff: malformed chunked request body";
        return c.respond_local(400, text, None, false).await;
    };
    c.req_out.extend_from_slice(&buffered[..used]);
    c.start += used;
    c.compact();
    let wants_continue = info.expect_continue && !sending.is_done() && used == 0;
    if wants_continue && c.stream.write_all(CONTINUE).await.is_err() {
        return false;
    }
    // Sent again on a fresh connection only when the app cannot have acted on it: it
    // never got it, or it is idempotent and whole in hand (RFC 9110 §9.2.2). A POST the
    // app read before closing must not run twice.
    let replayable = |sent: bool| !sent || (info.idempotent && matches!(body, BodyLen::Empty));

    let mut retried = false;
    let relay = loop {
        let relay = exchange(c, &mut conn, &mut sending, info, deadline.as_mut()).await;
        match relay {
            Relay::Stale { sent } if conn.reused && replayable(sent) && !retried => {
                retried = true;
                match upstream.open(size).await {
                    Ok(fresh) => conn = fresh,
                    Err(e) => {
                        let why = format!("connecting: {e}");
                        return bad_gateway(c, upstream, &why, keep_on_error).await;
                    }
                }
            }
            relay => break relay,
        }
    };
    match relay {
        Relay::Done {
            reusable,
            keep_client,
        } => {
            if reusable {
                upstream.put_idle(conn);
            }
            keep_client
        }
        Relay::Upgraded => {
            tunnel(c, conn, deadline).await;
            false
        }
        Relay::Stale { .. } => {
            let why = "the instance closed the connection without answering";
            bad_gateway(c, upstream, why, keep_on_error).await
        }
        Relay::Failed(why) => bad_gateway(c, upstream, &why, keep_on_error).await,
        Relay::TimedOut => timed_out(c, pool, false).await,
        Relay::Broken => false,
    }
}

/// What a request sends to the instance: its head as forwarded and its body, or no
/// bound when its body is chunked or it asks for an upgrade (then a byte pipe).
fn request_size(info: RequestInfo, body: BodyLen, head_len: usize) -> RequestSize {
    let head_len = head_len as u64;
    match body {
        _ if info.upgrade => RequestSize::Unbounded,
        BodyLen::Empty => RequestSize::Known(head_len),
        BodyLen::Length(n) => RequestSize::Known(head_len.saturating_add(n)),
        BodyLen::Chunked | BodyLen::UntilClose => RequestSize::Unbounded,
    }
}

/// Sends the request (head and buffered body in `c.req_out`, then the rest of the body)
/// and relays the response.
async fn exchange(
    c: &mut ClientConn,
    conn: &mut Connection,
    sending: &mut BodyTracker,
    info: RequestInfo,
    deadline: Pin<&mut Sleep>,
) -> Relay {
    if let Err(e) = conn.stream.write_all(&c.req_out).await {
        return if conn.reused {
            Relay::Stale { sent: false }
        } else {
            Relay::Failed(format!("sending the request: {e}"))
        };
    }
    if sending.is_done() {
        return relay_response(
            &mut conn.stream,
            &mut conn.buf,
            &mut c.stream,
            &mut c.resp_out,
            &mut c.resp_head,
            info,
            &c.request_id,
            conn.reused,
            deadline,
        )
        .await;
    }
    // The rest of the body streams while the response is awaited: an instance may
    // answer (or start answering) before it has read the whole body.
    let (mut client_rx, mut client_tx) = c.stream.split();
    let (mut up_rx, mut up_tx) = conn.stream.split();
    let send = send_body(
        &mut client_rx,
        &mut c.buf,
        &mut c.start,
        &mut up_tx,
        sending,
        info.body_idle,
    );
    let relay = relay_response(
        &mut up_rx,
        &mut conn.buf,
        &mut client_tx,
        &mut c.resp_out,
        &mut c.resp_head,
        info,
        &c.request_id,
        false,
        deadline,
    );
    tokio::pin!(send, relay);
    let mut sent = None;
    let relay = loop {
        tokio::select! {
            biased;
            result = &mut send, if sent.is_none() => match result {
                Ok(()) => sent = Some(true),
                Err(SendError::Upstream) => sent = Some(false),
                Err(SendError::Client) => return Relay::Broken,
            },
            relay = &mut relay => break relay,
        }
    };
    match relay {
        // A response that ended before its request did: neither connection knows where
        // the next message would start.
        Relay::Done { .. } if sent != Some(true) => Relay::Done {
            reusable: false,
            keep_client: false,
        },
        relay => relay,
    }
}

/// Copies the rest of a request body from the client to the instance.
async fn send_body<R, W>(
    client: &mut R,
    buf: &mut Vec<u8>,
    start: &mut usize,
    upstream: &mut W,
    sending: &mut BodyTracker,
    idle: Duration,
) -> Result<(), SendError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while !sending.is_done() {
        buf.clear();
        *start = 0;
        buf.reserve(READ_CHUNK);
        // A client that stops sending gives up its slot after `idle`, not the whole
        // request timeout: the exchange ends and both connections close.
        match tokio::time::timeout(idle, client.read_buf(buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return Err(SendError::Client),
            Ok(Ok(_)) => {}
        }
        let used = sending
            .take(buf, |_| {})
            .map_err(|_: ChunkError| SendError::Client)?;
        upstream
            .write_all(&buf[..used])
            .await
            .map_err(|_| SendError::Upstream)?;
        *start = used;
    }
    Ok(())
}

/// Reads the response head (until the deadline), writes the client's version of it with
/// the body bytes already read, then streams the rest of the body.
#[allow(clippy::too_many_arguments)]
async fn relay_response<R, W>(
    upstream: &mut R,
    ubuf: &mut Vec<u8>,
    client: &mut W,
    out: &mut Vec<u8>,
    head: &mut Head,
    info: RequestInfo,
    request_id: &[u8],
    stale_possible: bool,
    mut deadline: Pin<&mut Sleep>,
) -> Relay
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    ubuf.clear();
    if ubuf.capacity() == 0 {
        *ubuf = buffers::take();
    }
    let mut got_any = false;
    loop {
        if !ubuf.is_empty() {
            match head.parse_response(ubuf) {
                Ok(true) if head.status >= 200 || head.status == 101 => break,
                // Interim answers (103 Early Hints…) go on to HTTP/1.1 clients (RFC 9110
                // §15.2); 100 Continue is the router's to send, and HTTP/1.0 has none.
                Ok(true) => {
                    if head.status != 100 && !info.http10 {
                        out.clear();
                        h1::write_interim_head(out, ubuf, head);
                        if client.write_all(out).await.is_err() {
                            return Relay::Broken;
                        }
                    }
                    let informational = head.len;
                    ubuf.drain(..informational);
                    continue;
                }
                Ok(false) => {}
                Err(e) => return Relay::Failed(format!("invalid answer: {e}")),
            }
        }
        ubuf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            read = upstream.read_buf(ubuf) => read,
            () = deadline.as_mut() => return Relay::TimedOut,
        };
        let stale = stale_possible && !got_any;
        match read {
            Ok(0) if stale => return Relay::Stale { sent: true },
            Err(e) if stale && is_reset(&e) => return Relay::Stale { sent: true },
            Ok(0) => return Relay::Failed("the instance closed the connection mid-answer".into()),
            Err(e) => return Relay::Failed(format!("reading the answer: {e}")),
            Ok(_) => got_any = true,
        }
    }
    if head.status == 101 {
        if !info.upgrade {
            return Relay::Failed("the instance switched protocols unasked".into());
        }
        out.clear();
        let resp = ResponseOut {
            request_id,
            body: BodyLen::Empty,
            keep_alive: false,
            http10_client: info.http10,
        };
        h1::write_response_head(out, ubuf, head, &resp);
        out.extend_from_slice(&ubuf[head.len..]);
        return match client.write_all(out).await {
            Ok(()) => Relay::Upgraded,
            Err(_) => Relay::Broken,
        };
    }
    let framing = match head.response_body(info.is_head) {
        Ok(framing) => framing,
        Err(e) => return Relay::Failed(format!("invalid answer: {e}")),
    };
    let (client_framing, reframe) = reframe(framing, info.http10, head.has_other_coding());
    let keep_client = info.keep_alive && client_framing != BodyLen::UntilClose;
    let reusable = head.keeps_alive() && framing != BodyLen::UntilClose;
    out.clear();
    let resp = ResponseOut {
        request_id,
        body: client_framing,
        keep_alive: keep_client,
        http10_client: info.http10,
    };
    h1::write_response_head(out, ubuf, head, &resp);
    let body = BodyRelay {
        receiving: BodyTracker::new(framing),
        pending: head.len..ubuf.len(),
        reframe,
        reusable,
        keep_client,
    };
    // The request timeout bounds the whole answer, as on Cloud Run: a body still
    // streaming at the deadline is cut. (Polled first, so an answer that is already
    // complete never looks at the timer.)
    tokio::select! {
        biased;
        relay = body.run(upstream, ubuf, client, out) => relay,
        () = deadline.as_mut() => {
            tracing::debug!("request timeout mid-answer: the client connection is cut");
            Relay::Broken
        }
    }
}

/// How an answer's body is framed for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reframe {
    /// Byte for byte, as the instance framed it.
    Pass,
    /// Chunks decoded, for an HTTP/1.0 client (which cannot read them).
    Dechunk,
    /// A body the instance delimits by closing goes to an HTTP/1.1 client in chunks, so
    /// that an answer cut short (a reset, the timeout) lacks its last chunk and shows as
    /// cut, instead of looking complete; and the client connection may stay open.
    Rechunk,
}

/// The framing the client gets for an answer framed as `framing`, and how to get there.
/// A body under a transfer coding other than chunked is passed as it is, with it.
pub(crate) fn reframe(framing: BodyLen, http10: bool, other_coding: bool) -> (BodyLen, Reframe) {
    match framing {
        BodyLen::Chunked if http10 => (BodyLen::UntilClose, Reframe::Dechunk),
        BodyLen::UntilClose if !http10 && !other_coding => (BodyLen::Chunked, Reframe::Rechunk),
        other => (other, Reframe::Pass),
    }
}

/// Writes `data` as one chunk (nothing for no data: an empty chunk ends the body).
fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The body of an answer being relayed: what is left of it and how it goes out.
struct BodyRelay {
    receiving: BodyTracker,
    /// Bytes of `ubuf` read and not yet relayed.
    pending: std::ops::Range<usize>,
    reframe: Reframe,
    reusable: bool,
    keep_client: bool,
}

impl BodyRelay {
    /// Writes the head in `out` with the body bytes already read, then streams the rest
    /// of the body.
    async fn run<R, W>(
        self,
        upstream: &mut R,
        ubuf: &mut Vec<u8>,
        client: &mut W,
        out: &mut Vec<u8>,
    ) -> Relay
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let BodyRelay {
            mut receiving,
            mut pending,
            reframe,
            mut reusable,
            keep_client,
        } = self;
        loop {
            let input = &ubuf[pending.clone()];
            let used = match reframe {
                Reframe::Dechunk => receiving.take(input, |r| out.extend_from_slice(&input[r])),
                Reframe::Rechunk => receiving.take(input, |_| {}).inspect(|&n| {
                    write_chunk(out, &input[..n]);
                }),
                Reframe::Pass => receiving.take(input, |_| {}).inspect(|&n| {
                    out.extend_from_slice(&input[..n]);
                }),
            };
            let Ok(used) = used else {
                return Relay::Broken;
            };
            if used < input.len() {
                // Bytes past the end of the answer: the instance is out of step.
                reusable = false;
            }
            if !out.is_empty() && client.write_all(out).await.is_err() {
                return Relay::Broken;
            }
            out.clear();
            if receiving.is_done() {
                return Relay::Done {
                    reusable,
                    keep_client,
                };
            }
            ubuf.clear();
            ubuf.reserve(READ_CHUNK);
            match upstream.read_buf(ubuf).await {
                Ok(0) if receiving.end_of_stream() => {
                    if reframe == Reframe::Rechunk && client.write_all(b"0\r\n\r\n").await.is_err()
                    {
                        return Relay::Broken;
                    }
                    return Relay::Done {
                        reusable: false,
                        keep_client,
                    };
                }
                Ok(0) | Err(_) => return Relay::Broken,
                Ok(n) => pending = 0..n,
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// After a 101: bytes either side had already sent go across, then both directions are
/// copied until either side closes or the request timeout ends the connection (an
/// upgraded connection is one long request, as on Cloud Run).
async fn tunnel(c: &mut ClientConn, mut conn: Connection, deadline: Pin<&mut Sleep>) {
    let pipe = async {
        let early = &c.buf[c.start..];
        if !early.is_empty() && conn.stream.write_all(early).await.is_err() {
            return;
        }
        c.buf.clear();
        c.start = 0;
        let _ = tokio::io::copy_bidirectional(&mut c.stream, &mut conn.stream).await;
    };
    tokio::select! {
        () = pipe => {}
        () = deadline => tracing::debug!("request timeout: an upgraded connection is closed"),
    }
}

async fn bad_gateway(c: &mut ClientConn, upstream: &Upstream, why: &str, keep: bool) -> bool {
    let text = format!("skiff: instance {} failed the request: {why}", upstream.id);
    c.respond_local(502, &text, None, keep).await
}

async fn timed_out(c: &mut ClientConn, pool: &RevisionPool, keep: bool) -> bool {
    let config = pool.config();
    let text = format!(
        "skiff: revision {} did not answer within {:?}",
        config.revision, config.timeout
    );
    c.respond_local(504, &text, None, keep).await
}
