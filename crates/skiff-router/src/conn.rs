//! One client connection: reads request heads (keep-alive, pipelined requests in order),
//! routes each by Host, answers what the router answers itself (404, 400, 431), and hands
//! the rest to [`crate::proxy`]. Buffers are per connection and reused for every request.
//!
//! This module must not talk to instances; that is the proxy's job.

use crate::access::{self, Verdict};
use crate::buffers::{self, READ_CHUNK};
use crate::deadline::extend_deadline;
use crate::h1::{self, BodyLen, Head, HeadError};
use crate::proxy;
use crate::route::Route;
use crate::stream::ClientStream;
use crate::Router;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// Longest a client may take to send a request head, idle keep-alive time included.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest the router waits for the whole of a request it takes itself (an event, an
/// asynchronous invocation), from its head on.
const TAKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a refused connection is read (and what it sends dropped) before it is closed.
const LINGER: Duration = Duration::from_millis(500);

/// Output buffers up to this size stay with an idle connection.
const SMALL_OUT: usize = 4096;

/// A client connection and its buffers.
pub(crate) struct ClientConn {
    pub stream: ClientStream,
    pub peer: IpAddr,
    pub client_ip: String,
    /// Bytes received; those before `start` are consumed.
    pub buf: Vec<u8>,
    pub start: usize,
    /// The head of the request being handled (spans into `buf[start..]`).
    pub head: Head,
    /// The head of the response being relayed.
    pub resp_head: Head,
    pub req_out: Vec<u8>,
    pub resp_out: Vec<u8>,
    pub request_id: Vec<u8>,
    /// What its partly read head holds of the router's head budget.
    head_charge: HeadCharge,
}

/// The read buffer of a partly read request head, counted against the router's head
/// budget until the head is read or the connection ends. A head that comes whole in its
/// first read is never charged: the budget is touched only by heads that wait.
struct HeadCharge {
    router: Router,
    bytes: usize,
}

impl HeadCharge {
    /// Charges for a buffer of `capacity` bytes; false when the budget has no room.
    fn set(&mut self, capacity: usize) -> bool {
        if capacity == self.bytes {
            return true;
        }
        if !self
            .router
            .charge_head(capacity as isize - self.bytes as isize)
        {
            return false;
        }
        self.bytes = capacity;
        true
    }
}

impl Drop for HeadCharge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Facts about the request being handled that outlive its head in the buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestInfo {
    pub head_len: usize,
    pub is_head: bool,
    pub keep_alive: bool,
    pub http10: bool,
    pub upgrade: bool,
    pub expect_continue: bool,
    /// Its method is idempotent (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// Longest pause allowed while the client sends the body.
    pub body_idle: Duration,
}

enum HeadRead {
    Ready,
    Closed,
    Refused(u16, String),
}

/// The last route a connection used, valid while the routing table is unchanged.
#[derive(Default)]
struct RouteCache {
    service: String,
    generation: u64,
    route: Option<Arc<Route>>,
}

impl ClientConn {
    fn new(router: Router, stream: TcpStream, remote: SocketAddr) -> ClientConn {
        ClientConn {
            head_charge: HeadCharge { router, bytes: 0 },
            stream: ClientStream::new(stream),
            peer: remote.ip(),
            client_ip: remote.ip().to_string(),
            buf: Vec::new(),
            start: 0,
            head: Head::default(),
            resp_head: Head::default(),
            req_out: Vec::new(),
            resp_out: Vec::new(),
            request_id: Vec::new(),
        }
    }

    /// Drops consumed bytes, keeping any that follow (a pipelined request).
    pub fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
    }

    async fn read_head(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        mut deadline: Pin<&mut Sleep>,
    ) -> HeadRead {
        loop {
            if self.start < self.buf.len() {
                match self.head.parse_request(&self.buf[self.start..]) {
                    Ok(true) => {
                        self.head_charge.set(0);
                        return HeadRead::Ready;
                    }
                    Ok(false) => {}
                    Err(e @ HeadError::TooLarge) => return HeadRead::Refused(431, e.to_string()),
                    Err(e) => return HeadRead::Refused(400, e.to_string()),
                }
            }
            self.compact();
            if self.buf.is_empty() {
                // Idle between requests: wait holding no buffer.
                self.release_buffers();
                tokio::select! {
                    biased;
                    ready = self.stream.get_ref().readable() => if ready.is_err() {
                        return HeadRead::Closed;
                    },
                    () = deadline.as_mut() => return HeadRead::Closed,
                    _ = stop.wait_for(|s| *s) => return HeadRead::Closed,
                }
                self.buf = buffers::take();
            }
            // Grown only when nearly full: a head waiting for its end keeps its one chunk.
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            // What is in the buffer now is a head that did not come whole.
            if !self.buf.is_empty() && !self.head_charge.set(self.buf.capacity()) {
                let why = "too many partly sent request heads at once; try again";
                return HeadRead::Refused(503, why.into());
            }
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return HeadRead::Closed,
                    Ok(_) => {}
                },
                () = deadline.as_mut() => {
                    return HeadRead::Refused(408, "the request head took too long".into());
                }
            }
        }
    }

    /// Gives the read buffer back to the thread's spares, and any response buffer that
    /// grew past a typical head.
    fn release_buffers(&mut self) {
        buffers::give(std::mem::take(&mut self.buf));
        if self.resp_out.capacity() > SMALL_OUT {
            buffers::give(std::mem::take(&mut self.resp_out));
        }
    }

    /// Closes after a refusal the way nginx's lingering close does: the client may still
    /// be sending what was refused, and closing with unread bytes resets the connection,
    /// which can destroy the answer before the client reads it. So: FIN, then read and
    /// drop what comes, for at most a moment and a few hundred KiB.
    async fn linger_close(&mut self) {
        let _ = self.stream.shutdown().await;
        let drain = async {
            let mut left: usize = 256 * 1024;
            while left > 0 {
                if self.stream.get_ref().readable().await.is_err() {
                    return;
                }
                // Read into the thread's one sink, not a buffer in each lingering
                // connection: thousands may linger at once.
                match buffers::with_sink(|sink| self.stream.get_ref().try_read(sink)) {
                    Ok(0) => return,
                    Ok(n) => left = left.saturating_sub(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Writes a response of the router's own; false when the connection ends here (the
    /// client is gone, or it is not kept: then it is closed lingering, as what the
    /// client still sends may be a body nobody read).
    pub async fn respond_local(
        &mut self,
        status: u16,
        text: &str,
        retry_after_secs: Option<u64>,
        keep_alive: bool,
    ) -> bool {
        self.resp_out.clear();
        h1::write_local_response(
            &mut self.resp_out,
            status,
            text,
            &self.request_id,
            retry_after_secs,
            keep_alive,
        );
        let written = self.stream.write_all(&self.resp_out).await.is_ok();
        if written && !keep_alive {
            self.linger_close().await;
        }
        written && keep_alive
    }
}

/// Serves one client connection until it closes, fails, or `stop` turns true while it is
/// idle (a request in flight is finished first).
pub(crate) async fn serve_connection(
    router: Router,
    stream: TcpStream,
    remote: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut c = ClientConn::new(router.clone(), stream, remote);
    let mut header_deadline = Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT));
    let mut request_deadline = Box::pin(tokio::time::sleep(HEADER_READ_TIMEOUT));
    let mut cache = RouteCache::default();
    loop {
        extend_deadline(
            header_deadline.as_mut(),
            Instant::now(),
            HEADER_READ_TIMEOUT,
        );
        match c.read_head(&mut stop, header_deadline.as_mut()).await {
            HeadRead::Ready => {}
            HeadRead::Closed => return,
            HeadRead::Refused(status, why) => {
                c.respond_local(status, &format!("skiff: {why}"), None, false)
                    .await;
                return;
            }
        }
        let keep = handle(&router, &mut c, &mut cache, request_deadline.as_mut()).await;
        if !keep || *stop.borrow() {
            return;
        }
    }
}

/// Handles the request whose head is parsed; returns whether the connection goes on.
async fn handle(
    router: &Router,
    c: &mut ClientConn,
    cache: &mut RouteCache,
    mut deadline: Pin<&mut Sleep>,
) -> bool {
    let req = &c.buf[c.start..];
    let head = &c.head;
    let info = RequestInfo {
        head_len: head.len,
        is_head: head.is_head(req),
        keep_alive: head.keeps_alive(),
        http10: head.minor_version == 0,
        upgrade: head.is_upgrade(),
        expect_continue: head.expects_continue(),
        idempotent: head.is_idempotent(req),
        body_idle: router.body_idle_timeout(),
    };
    c.request_id.clear();
    match head.request_id(req) {
        Some(given) => c.request_id.extend_from_slice(given),
        None => router.new_request_id(&mut c.request_id),
    }
    let body = match head.request_body(req) {
        Ok(body) => body,
        Err(e) => {
            let status = if e == HeadError::UnsupportedCoding {
                501
            } else {
                400
            };
            c.respond_local(status, &format!("skiff: {e}"), None, false)
                .await;
            return false;
        }
    };
    let host = head.host(req).unwrap_or_default();
    if let Some(topic) = std::str::from_utf8(host).ok().and_then(Router::topic_of) {
        extend_deadline(deadline.as_mut(), Instant::now(), TAKEN_REQUEST_TIMEOUT);
        return publish(c, router, topic, info, body, deadline).await;
    }
    let route = std::str::from_utf8(host)
        .ok()
        .and_then(|h| lookup(router, cache, h));
    // Past a body it did not read, the connection cannot go on.
    let keep = info.keep_alive && body == BodyLen::Empty;
    let Some(route) = route else {
        let text = format!(
            "skiff: no service serves host {:?}",
            String::from_utf8_lossy(host)
        );
        c.start += info.head_len;
        return c.respond_local(404, &text, None, keep).await;
    };
    let wants_async = head.prefers_async(req);
    let admitted = match route.private() {
        None => proxy::Admitted::default(),
        Some(private) => {
            match access::decide(router.gate(), private, c.peer, head.authorization(req)) {
                Verdict::Allowed { caller, token_used } => proxy::Admitted {
                    caller: Some(caller),
                    drop_authorization: token_used,
                },
                Verdict::Unauthenticated => {
                    c.start += info.head_len;
                    let text = "skiff: the token is not valid (unknown, revoked or malformed)";
                    return c.respond_local(401, text, None, keep).await;
                }
                Verdict::Forbidden(why) => {
                    c.start += info.head_len;
                    return c
                        .respond_local(403, &format!("skiff: {why}"), None, keep)
                        .await;
                }
            }
        }
    };
    if wants_async {
        extend_deadline(deadline.as_mut(), Instant::now(), TAKEN_REQUEST_TIMEOUT);
        let sink = router.async_sink();
        return crate::deferred::accept(c, sink, route.service(), info, body, admitted, deadline)
            .await;
    }
    proxy::forward(c, route.pick(), info, body, &admitted, deadline).await
}

/// An event for `topic`: checked like a call (an instance of a service, or a token that
/// may publish), then published.
async fn publish(
    c: &mut ClientConn,
    router: &Router,
    topic: String,
    info: RequestInfo,
    body: BodyLen,
    deadline: Pin<&mut Sleep>,
) -> bool {
    let keep = info.keep_alive && body == BodyLen::Empty;
    let req = &c.buf[c.start..];
    if !router.has_topic(&topic) {
        c.start += info.head_len;
        let text = format!("skiff: no such topic: {topic}");
        return c.respond_local(404, &text, None, keep).await;
    }
    let publisher = match access::decide_publisher(router.gate(), c.peer, c.head.authorization(req))
    {
        Ok((publisher, _)) => publisher,
        Err((status, why)) => {
            c.start += info.head_len;
            return c
                .respond_local(status, &format!("skiff: {why}"), None, keep)
                .await;
        }
    };
    let sink = router.async_sink();
    crate::deferred::publish(c, sink, topic, publisher, info, body, deadline).await
}

/// The route of `host`, from the connection's cache while the table is unchanged.
fn lookup<'c>(router: &Router, cache: &'c mut RouteCache, host: &str) -> Option<&'c Arc<Route>> {
    let service = router.service_of(host)?;
    let generation = router.generation();
    if generation != cache.generation || !cache.service.eq_ignore_ascii_case(service) {
        cache.service.clear();
        cache.service.push_str(service);
        cache.service.make_ascii_lowercase();
        cache.route = router.route(&cache.service);
        cache.generation = generation;
    }
    cache.route.as_ref()
}
