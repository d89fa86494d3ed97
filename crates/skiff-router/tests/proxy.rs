//! The forwarding path over real sockets: a router on a loopback port in front of a
//! scripted instance that reads raw requests and writes raw answers, so framing edge
//! cases and hostile input can be exercised byte for byte.

use skiff_router::h1::{BodyLen, Head};
use skiff_router::{PoolConfig, RevisionPool, Router, Target, Upstream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);

/// What the scripted instance does with each request it reads.
#[derive(Clone, Copy)]
enum Script {
    /// Answers `200` with the request's raw bytes as the body, keeps the connection.
    Echo,
    /// Answers with these raw bytes, keeps the connection.
    Raw(&'static str),
    /// Answers with these raw bytes, then closes.
    RawThenClose(&'static str),
    /// Answers with these raw bytes, then resets the connection (an app that crashed).
    RawThenReset(&'static str),
    /// Answers a connection's first request with these raw bytes and keeps it; reads
    /// the second and closes without a word (an app that acted on it, then died).
    OnceThenReadAndClose(&'static str),
}

struct Instance {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
}

/// Reads one request: the head, then a Content-Length body, or a chunked one up to its
/// final empty line. `None` at end of stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let total = if head.contains("transfer-encoding: chunked") {
                chunked_end(buf, end + 2)
            } else {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                (buf.len() >= end + 4 + len).then_some(end + 4 + len)
            };
            if let Some(total) = total {
                return Some(buf.drain(..total).collect());
            }
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Where a chunked body whose line before starts at `from` ends (trailers included).
fn chunked_end(buf: &[u8], from: usize) -> Option<usize> {
    let last = from + find(&buf[from..], b"\r\n0\r\n")? + 5;
    if buf[last..].starts_with(b"\r\n") {
        return Some(last + 2);
    }
    Some(last + find(&buf[last..], b"\r\n\r\n")? + 4)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn instance(script: Script) -> Instance {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (reqs, conns) = (Arc::clone(&requests), Arc::clone(&connections));
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = Arc::clone(&reqs);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut served = 0;
                while let Some(req) = read_request(&mut s, &mut buf).await {
                    reqs.lock().unwrap().push(req.clone());
                    served += 1;
                    let answer = match script {
                        Script::OnceThenReadAndClose(_) if served > 1 => return,
                        Script::OnceThenReadAndClose(a) => a.as_bytes().to_vec(),
                        Script::Echo => {
                            let mut a =
                                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", req.len())
                                    .into_bytes();
                            a.extend_from_slice(&req);
                            a
                        }
                        Script::Raw(a) | Script::RawThenClose(a) | Script::RawThenReset(a) => {
                            a.as_bytes().to_vec()
                        }
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                    if let Script::RawThenClose(_) = script {
                        return;
                    }
                    if let Script::RawThenReset(_) = script {
                        // Linger 0: closing sends RST, not FIN.
                        s.set_zero_linger().unwrap();
                        return;
                    }
                }
            });
        }
    });
    Instance {
        addr,
        requests,
        connections,
    }
}

/// A router serving service `svc` from `instance`; returns its address.
async fn router_for(instance: &Instance, timeout: Duration) -> SocketAddr {
    router_to(Target::Address(instance.addr), timeout).await
}

/// A router serving service `svc` from an instance at `target`; returns its address.
async fn router_to(target: Target, timeout: Duration) -> SocketAddr {
    router_with(target, timeout, skiff_router::DEFAULT_BODY_IDLE_TIMEOUT).await
}

/// As [`router_to`], with `body_idle` as the longest pause in a request body.
async fn router_with(target: Target, timeout: Duration, body_idle: Duration) -> SocketAddr {
    router_tuned(target, timeout, |r| r.set_body_idle_timeout(body_idle)).await
}

/// As [`router_to`], with the router's settings changed by `tune`.
async fn router_tuned(target: Target, timeout: Duration, tune: impl FnOnce(&Router)) -> SocketAddr {
    let router = Router::new("localhost");
    tune(&router);
    let pool = RevisionPool::new(PoolConfig {
        revision: "svc-00001".into(),
        concurrency: 0,
        queue_limit: 10,
        timeout,
    });
    pool.add_instance(Upstream::new("fake", target));
    router.set_route("svc", pool);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve(listener, std::future::pending()));
    addr
}

/// Reads one response; returns its head and body (Content-Length, chunked raw, or until
/// close).
async fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> (String, Vec<u8>) {
    let mut head = Head::default();
    loop {
        if !buf.is_empty() && head.parse_response(buf).unwrap() && head.status >= 200 {
            break;
        }
        assert_ne!(
            s.read_buf(buf).await.unwrap(),
            0,
            "closed before a response head"
        );
    }
    let text = String::from_utf8_lossy(&buf[..head.len]).into_owned();
    let framing = head.response_body(head_request).unwrap();
    buf.drain(..head.len);
    let body_len = loop {
        let done = match framing {
            BodyLen::Empty => Some(0),
            BodyLen::Length(n) => (buf.len() as u64 >= n).then_some(n as usize),
            BodyLen::Chunked => find(buf, b"0\r\n\r\n").map(|i| i + 5),
            BodyLen::UntilClose => None,
        };
        if let Some(n) = done {
            break n;
        }
        if s.read_buf(buf).await.unwrap() == 0 {
            assert_eq!(framing, BodyLen::UntilClose, "body cut short");
            break buf.len();
        }
    };
    (text, buf.drain(..body_len).collect())
}

async fn exchange(addr: SocketAddr, raw: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    read_response(&mut s, &mut Vec::new(), raw.starts_with("HEAD")).await
}

/// Sends `raw` on a new connection and reads everything until the router closes it.
async fn until_closed(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut all))
        .await
        .expect("closed before the limit")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(LIMIT, s.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_kept_connection() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: svc.localhost\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: svc.localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for (path, body) in [("/one", ""), ("/two", "abc"), ("/three", "")] {
        let (head, echoed) = read_response(&mut s, &mut buf, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let echoed = String::from_utf8(echoed).unwrap();
        assert!(
            echoed.starts_with(&format!("GET {path} "))
                || echoed.starts_with(&format!("POST {path} ")),
            "{echoed}"
        );
        assert!(echoed.ends_with(&format!("\r\n\r\n{body}")), "{echoed}");
    }
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "one kept connection to the instance"
    );
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_never_reach_the_instance() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    for (raw, status) in [
        ("POST / HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", "400"),
        ("POST / HTTP/1.1\r\nHost: svc.localhost\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n", "501"),
        ("GET / HTTP/1.1\r\nHost: svc.localhost\r\nHost: other.localhost\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nHost: svc.localhost\r\nBad Header: x\r\n\r\n", "400"),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s, &mut Vec::new(), false).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{raw:?} got {head}");
        assert!(String::from_utf8_lossy(&body).starts_with("skiff: "), "a reason: {body:?}");
        assert!(closed(&mut s).await, "the connection closes after {raw:?}");
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_malformed_chunked_body_is_cut_off_at_the_bad_byte() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A bare LF after the chunk size: the instance's parser might read it differently.
    s.write_all(b"POST / HTTP/1.1\r\nHost: svc.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s, &mut Vec::new(), false).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(app.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: svc.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let (head, _) = exchange(addr, &big).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

#[tokio::test]
async fn a_chunked_request_body_passes_through_byte_for_byte() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    let body = "4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n";
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Head and body in separate writes, so the body streams after the head.
    s.write_all(b"POST /c HTTP/1.1\r\nHost: svc.localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    tokio::task::yield_now().await;
    s.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (head, echoed) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed = String::from_utf8(echoed).unwrap();
    assert!(
        echoed.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{echoed}"
    );
    assert!(echoed.ends_with(&format!("\r\n\r\n{body}")), "{echoed}");
    // The connection is still in step for the next request.
    s.write_all(b"GET /next HTTP/1.1\r\nHost: svc.localhost\r\n\r\n")
        .await
        .unwrap();
    let (_, echoed) = read_response(&mut s, &mut buf, false).await;
    assert!(echoed.starts_with(b"GET /next "));
}

#[tokio::test]
async fn an_http10_client_gets_chunked_answers_as_plain_data_then_a_close() {
    let app = instance(Script::Raw(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ))
    .await;
    let addr = router_for(&app, LIMIT).await;
    let (head, body) = exchange(addr, "GET / HTTP/1.0\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"hello world");
    // A 1.1 client gets the chunks as the instance sent them.
    let (head, body) = exchange(addr, "GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
}

#[tokio::test]
async fn head_answers_carry_their_length_but_no_body() {
    let app = instance(Script::Raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")).await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"HEAD / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf, true).await;
        assert!(head.contains("Content-Length: 5"), "{head}");
        assert!(body.is_empty());
    }
}

#[tokio::test]
async fn a_kept_connection_the_instance_closed_is_retried_on_a_new_one() {
    let app = instance(Script::RawThenClose(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"ok");
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_the_app_may_have_acted_on_is_sent_again_only_if_idempotent() {
    let app = instance(Script::OnceThenReadAndClose(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let get = b"GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n";
    let post = b"POST /pay HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 3\r\n\r\n$10";
    // A first exchange leaves the instance's connection kept.
    s.write_all(get).await.unwrap();
    let (head, _) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The app reads the POST on it and closes: it may have paid. Not sent again: 502.
    s.write_all(post).await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("without answering"));
    let posts = |app: &Instance| {
        let reqs = app.requests.lock().unwrap();
        reqs.iter().filter(|r| r.starts_with(b"POST")).count()
    };
    assert_eq!(posts(&app), 1, "the POST reached the app more than once");

    // A GET in the same spot is sent again on a new connection (RFC 9110 §9.2.2).
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(get).await.unwrap();
    let (head, _) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(get).await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
}

#[tokio::test]
async fn an_answer_delimited_by_close_goes_to_http11_clients_in_chunks() {
    let app = instance(Script::RawThenClose("HTTP/1.1 200 OK\r\n\r\nuntil the end")).await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf, false).await;
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        assert_eq!(body, b"d\r\nuntil the end\r\n0\r\n\r\n");
    }
    // An HTTP/1.0 client gets it as it came, delimited by the close.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: svc.localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut Vec::new(), false).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"until the end");
}

#[tokio::test]
async fn an_answer_delimited_by_close_and_cut_short_shows_as_cut() {
    let app = instance(Script::RawThenReset("HTTP/1.1 200 OK\r\n\r\nhalf of it")).await;
    let addr = router_for(&app, LIMIT).await;
    let text = until_closed(addr, b"GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut answer looks complete: {text:?}"
    );
}

#[tokio::test]
async fn a_stalled_small_body_takes_no_slot_and_gets_408() {
    let app = instance(Script::Echo).await;
    let addr = router_with(Target::Address(app.addr), LIMIT, Duration::from_millis(300)).await;
    let raw = b"POST / HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 100\r\n\r\n0123456789";
    let text = until_closed(addr, raw).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        0,
        "an instance got it"
    );
    // Sent whole, the same request goes through.
    let (head, body) = exchange(
        addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(100)
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).ends_with(&"x".repeat(100)));
}

#[tokio::test]
async fn a_stalled_large_upload_gives_its_slot_back_after_the_idle_timeout() {
    let app = instance(Script::Echo).await;
    let addr = router_with(Target::Address(app.addr), LIMIT, Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let raw = b"POST / HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: 100000\r\n\r\n0123456789";
    until_closed(addr, raw).await;
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        1,
        "streamed to the instance"
    );
    assert!(
        started.elapsed() < LIMIT / 2,
        "held for {:?}: the request timeout, not the idle one",
        started.elapsed()
    );
}

#[tokio::test]
async fn early_hints_reach_http11_clients_only() {
    let app = instance(Script::Raw(
        "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await;
    let addr = router_for(&app, LIMIT).await;
    let read_all = |version: &'static str| async move {
        let req = format!("GET / {version}\r\nHost: svc.localhost\r\nConnection: close\r\n\r\n");
        until_closed(addr, req.as_bytes()).await
    };
    let text = read_all("HTTP/1.1").await;
    assert!(
        text.starts_with(
            "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
    let text = read_all("HTTP/1.0").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
}

#[tokio::test]
async fn past_the_connection_limit_a_new_client_gets_503() {
    let app = instance(Script::Echo).await;
    let addr = router_tuned(Target::Address(app.addr), LIMIT, |r| {
        r.set_max_connections(2)
    })
    .await;
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    let text = until_closed(addr, b"GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(
        text.starts_with("HTTP/1.1 503 ") && text.contains("too many connections"),
        "{text}"
    );
    // One closes: the next client is served.
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        let (head, _) = exchange(addr, "GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
        if head.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no client served after the held ones closed");
}

#[tokio::test]
async fn past_the_head_budget_a_large_slow_head_gets_503() {
    let app = instance(Script::Echo).await;
    let addr = router_tuned(Target::Address(app.addr), LIMIT, |r| {
        r.set_head_budget(8 << 10)
    })
    .await;
    // 30 KB of head without its end, over an 8 KiB budget.
    let mut big = b"GET / HTTP/1.1\r\nHost: svc.localhost\r\n".to_vec();
    while big.len() < 30_000 {
        big.extend_from_slice(format!("X-Pad: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    let text = until_closed(addr, &big).await;
    assert!(
        text.starts_with("HTTP/1.1 503 ") && text.contains("partly sent request heads"),
        "{text}"
    );
    // Heads that come whole in one read are not held to it.
    let (head, _) = exchange(addr, "GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn small_partial_heads_count_their_buffers_against_the_budget() {
    let app = instance(Script::Echo).await;
    // Room for four read buffers (16 KiB each) of heads that wait for their end.
    let addr = router_tuned(Target::Address(app.addr), LIMIT, |r| {
        r.set_head_budget(64 << 10)
    })
    .await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: svc.localhost\r\nX-Slow: ")
            .await
            .unwrap();
        let mut got = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut got)).await {
            Ok(Ok(_)) if &got == b"HTTP/1.1 503" => refused += 1,
            Ok(other) => panic!("{other:?}: {:?}", String::from_utf8_lossy(&got)),
            Err(_) => held.push(s),
        }
    }
    assert_eq!((held.len(), refused), (4, 4));
    // A head that comes whole is served while the budget is taken.
    let (head, _) = exchange(addr, "GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn expect_continue_is_answered_by_the_router() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PUT / HTTP/1.1\r\nHost: svc.localhost\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 25];
    tokio::time::timeout(LIMIT, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"body").await.unwrap();
    let (head, echoed) = read_response(&mut s, &mut Vec::new(), false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed = String::from_utf8(echoed).unwrap();
    assert!(!echoed.to_ascii_lowercase().contains("expect:"), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\nbody"), "{echoed}");
}

#[tokio::test]
async fn garbage_from_the_instance_is_a_502() {
    let app = instance(Script::RawThenClose("SSH-2.0-OpenSSH\r\n\r\n")).await;
    let addr = router_for(&app, LIMIT).await;
    let (head, body) = exchange(addr, "GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("instance fake"),
        "{body:?}"
    );
}

#[tokio::test]
async fn unknown_hosts_get_404_and_the_connection_goes_on() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: nope.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    let (head, _) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// A refusal that ends the connection before the body was read closes it lingering
/// (RFC 9112 §9.6): closing with the unread body in the socket would reset the
/// connection and could destroy the answer before the client reads it (CI: a 403 to an
/// async invocation read as "connection reset by peer").
#[tokio::test]
async fn a_refused_request_with_a_body_gets_its_answer_before_the_close() {
    let app = instance(Script::Echo).await;
    let addr = router_for(&app, LIMIT).await;
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = vec![b'x'; 64 * 1024];
        let head = format!(
            "POST / HTTP/1.1\r\nHost: nope.localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // More than the router reads with the head: the rest is still in its socket
        // when it answers.
        let mut request = head.into_bytes();
        request.extend_from_slice(&body);
        s.write_all(&request).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .expect("the answer, then the close");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }
}

/// The only test here that installs the upstream shortcut (one per process): the others'
/// connections, to an address, are not marked and stay out of it.
#[tokio::test]
async fn through_the_shortcut_an_event_loop_app_gets_every_request_byte() {
    let _shortcut = skiff_router::Shortcut::install()
        .expect("installing the upstream shortcut (needs root, cgroup2, Linux 5.15)");
    // The scripted instance is a tokio app: it takes a short read for "drained", so a
    // request falling back to TCP behind redirected bytes would hang it.
    let app = instance(Script::Echo).await;
    let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
    let target = Target::Netns {
        netns: Arc::new(netns.into()),
        port: app.addr.port(),
    };
    let addr = router_to(target, LIMIT).await;
    let exchanges = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        // 24 × 256 KiB on one client connection: three times a connection's 2 MiB
        // request budget.
        for i in 0..24u8 {
            let body = vec![b'a' + i; 256 << 10];
            let head = format!(
                "POST /{i} HTTP/1.1\r\nHost: svc.localhost\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&body).await.unwrap();
            let (head, echoed) = read_response(&mut s, &mut buf, false).await;
            assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
            assert!(echoed.starts_with(format!("POST /{i} ").as_bytes()));
            assert!(echoed.ends_with(&body), "request {i}: its body differs");
        }
    };
    tokio::time::timeout(LIMIT, exchanges)
        .await
        .expect("every exchange done within 10 s");
    let connections = app.connections.load(Ordering::SeqCst);
    assert!(
        connections >= 3,
        "{connections} connections: a fresh one each time a budget ran out"
    );
}

/// Instances at 127.0.0.2 belong to service `front`; token `good` may invoke `svc`.
struct TestGate;

impl skiff_router::Gate for TestGate {
    fn service_at(&self, addr: std::net::IpAddr) -> Option<Arc<str>> {
        (addr.to_string() == "127.0.0.2").then(|| "front".into())
    }
    fn check_token(&self, text: &str, service: &str) -> skiff_router::TokenCheck {
        match (text, service) {
            ("good", "svc") => skiff_router::TokenCheck::Allowed("ci".into()),
            ("good", _) => skiff_router::TokenCheck::Denied,
            _ => skiff_router::TokenCheck::Invalid,
        }
    }
}

/// Sends `raw` from `from` and reads the answer.
async fn exchange_from(from: &str, addr: SocketAddr, raw: &str) -> (String, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    read_response(&mut s, &mut Vec::new(), false).await
}

#[tokio::test]
async fn a_private_service_lets_in_named_callers_and_invoker_tokens_only() {
    let app = instance(Script::Echo).await;
    let router = Router::new("localhost");
    router.set_gate(Arc::new(TestGate));
    let pool = RevisionPool::new(PoolConfig {
        revision: "svc-00001".into(),
        concurrency: 0,
        queue_limit: 10,
        timeout: LIMIT,
    });
    pool.add_instance(Upstream::new("fake", Target::Address(app.addr)));
    let private = Arc::new(skiff_router::Private {
        service: "svc".into(),
        callers: skiff_router::Callers::Only(vec!["front".into()]),
    });
    let route = skiff_router::Route::single(pool).with_access(Some(private));
    router.set_routes("svc", vec![("svc".into(), route)]);
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(router.serve(listener, std::future::pending()));

    let get = |auth: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: svc.localhost\r\nX-Skiff-Caller: service/front\r\n{auth}\r\n"
        )
    };
    let (head, _) = exchange(addr, &get("")).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (head, _) = exchange(addr, &get("Authorization: Bearer nope\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    assert_eq!(
        app.requests.lock().unwrap().len(),
        0,
        "refused requests reached the app"
    );

    let (head, body) = exchange(addr, &get("Authorization: Bearer good\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let seen = String::from_utf8(body).unwrap();
    assert!(seen.contains("x-skiff-caller: token/ci\r\n"), "{seen}");
    assert!(
        !seen.contains("service/front"),
        "the client's caller field went on: {seen}"
    );
    assert!(
        !seen.to_ascii_lowercase().contains("authorization"),
        "{seen}"
    );

    // From an instance of `front`: in without a token, and named.
    let (head, body) = exchange_from("127.0.0.2", addr, &get("")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let seen = String::from_utf8(body).unwrap();
    assert_eq!(
        seen.matches("x-skiff-caller: service/front\r\n").count(),
        1,
        "{seen}"
    );
    // A service's own Authorization is the app's business: it goes on.
    let (_, body) = exchange_from("127.0.0.2", addr, &get("Authorization: Basic eDp5\r\n")).await;
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("Authorization: Basic eDp5"));
}

/// Keeps what it is given; ids `inv-N`.
#[derive(Default)]
struct KeepAll(Mutex<Vec<skiff_router::AsyncRequest>>);

impl skiff_router::AsyncSink for KeepAll {
    fn enqueue(
        &self,
        request: skiff_router::AsyncRequest,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<skiff_router::Accepted, String>> + Send>,
    > {
        let mut kept = self.0.lock().unwrap();
        let earlier = kept.iter().position(|r| {
            r.idempotency_key.is_some() && r.idempotency_key == request.idempotency_key
        });
        let accepted = match earlier {
            Some(n) => skiff_router::Accepted {
                id: format!("inv-{n}"),
                duplicate: true,
            },
            None => {
                kept.push(request);
                skiff_router::Accepted {
                    id: format!("inv-{}", kept.len() - 1),
                    duplicate: false,
                }
            }
        };
        Box::pin(async move { Ok(accepted) })
    }
}

#[tokio::test]
async fn an_async_request_is_kept_whole_and_answered_202_without_reaching_the_app() {
    let app = instance(Script::Echo).await;
    let sink = Arc::new(KeepAll::default());
    let kept = Arc::clone(&sink);
    let addr = router_tuned(Target::Address(app.addr), LIMIT, move |r| {
        r.set_async_sink(kept);
    })
    .await;
    let raw = "POST /jobs?n=1 HTTP/1.1\r\nHost: svc.localhost\r\nPrefer: wait=5, respond-async\r\n\
               Idempotency-Key: job-1\r\nX-App: yes\r\nContent-Length: 5\r\n\r\nhello";
    let (head, body) = exchange(addr, raw).await;
    assert!(head.starts_with("HTTP/1.1 202 Accepted\r\n"), "{head}");
    assert!(head.contains("x-skiff-invocation-id: inv-0\r\n"), "{head}");
    assert!(
        head.contains("location: /v1/services/svc/invocations/inv-0\r\n"),
        "{head}"
    );
    assert_eq!(body, b"accepted inv-0\n");
    // The same key again: the same id, nothing more kept.
    let (head, _) = exchange(addr, raw).await;
    assert!(head.contains("x-skiff-invocation-id: inv-0\r\n"), "{head}");
    assert_eq!(
        app.requests.lock().unwrap().len(),
        0,
        "the app got it at once"
    );
    {
        let kept = sink.0.lock().unwrap();
        assert_eq!(kept.len(), 1);
        let r = &kept[0];
        assert_eq!((r.service.as_str(), r.method.as_str()), ("svc", "POST"));
        assert_eq!(r.target, "/jobs?n=1");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.idempotency_key.as_deref(), Some("job-1"));
        let fields = String::from_utf8(r.fields.clone()).unwrap();
        assert_eq!(fields, "host: svc.localhost\r\nX-App: yes\r\n");
    }
    // What cannot be kept is refused, and says why.
    let chunked = "POST / HTTP/1.1\r\nHost: svc.localhost\r\nPrefer: respond-async\r\n\
                   Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(until_closed(addr, chunked.as_bytes())
        .await
        .starts_with("HTTP/1.1 411 "));
    let big = format!(
        "POST / HTTP/1.1\r\nHost: svc.localhost\r\nPrefer: respond-async\r\nContent-Length: {}\r\n\r\n",
        skiff_router::MAX_ASYNC_BODY + 1
    );
    assert!(until_closed(addr, big.as_bytes())
        .await
        .starts_with("HTTP/1.1 413 "));
    let bad_key = "GET / HTTP/1.1\r\nHost: svc.localhost\r\nPrefer: respond-async\r\nIdempotency-Key: a b\r\n\r\n";
    let (head, _) = exchange(addr, bad_key).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    // Without Prefer: respond-async, a request goes through as ever.
    let (head, _) = exchange(addr, "GET / HTTP/1.1\r\nHost: svc.localhost\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // A router with nothing to keep them in says so.
    let plain = router_for(&app, LIMIT).await;
    let (head, _) = exchange(
        plain,
        "GET / HTTP/1.1\r\nHost: svc.localhost\r\nPrefer: respond-async\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 501 "), "{head}");
}

/// A router (not listening) with service `svc` served by the instance at `addr`,
/// private to `front` when `private`.
fn local_router(addr: SocketAddr, private: bool) -> Router {
    let router = Router::new("localhost");
    let pool = RevisionPool::new(PoolConfig {
        revision: "svc-00001".into(),
        concurrency: 0,
        queue_limit: 10,
        timeout: LIMIT,
    });
    pool.add_instance(Upstream::new("fake", Target::Address(addr)));
    let access = private.then(|| {
        Arc::new(skiff_router::Private {
            service: "svc".into(),
            callers: skiff_router::Callers::Only(vec!["front".into()]),
        })
    });
    let route = skiff_router::Route::single(pool).with_access(access);
    router.set_routes("svc", vec![("svc".into(), route)]);
    router
}

#[tokio::test]
async fn a_local_delivery_goes_out_as_the_ingress_would_forward_it_on_a_kept_connection() {
    let app = instance(Script::Echo).await;
    let router = local_router(app.addr, false);
    let head = b"POST /jobs?x=1 HTTP/1.1\r\nhost: svc.svc.skiff.internal\r\nce-id: e1\r\n\
                 x-skiff-caller: forged\r\n\r\n";
    for _ in 0..2 {
        let answer = router.send_local("svc", head, b"hello", "token/ci").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.retry_after, None);
    }
    let requests = app.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let text = String::from_utf8_lossy(&requests[0]).to_ascii_lowercase();
    assert!(text.starts_with("post /jobs?x=1 http/1.1\r\n"), "{text}");
    for line in [
        "host: svc.svc.skiff.internal\r\n",
        "ce-id: e1\r\n",
        "x-forwarded-for: 127.0.0.1\r\n",
        "content-length: 5\r\n",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    // A public service is told no caller, and a stored one is never passed on.
    assert!(!text.contains("x-skiff-caller"), "{text}");
    // The echoed answer was read through, so the second delivery reused the connection.
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_local_delivery_names_its_caller_to_a_private_service_only() {
    let app = instance(Script::Echo).await;
    let router = local_router(app.addr, true);
    let head = b"POST / HTTP/1.1\r\nhost: svc.localhost\r\n\r\n";
    let answer = router.send_local("svc", head, b"", "service/front").await;
    assert_eq!(answer.status, 200);
    let text = String::from_utf8_lossy(&app.requests.lock().unwrap()[0]).to_ascii_lowercase();
    assert!(text.contains("x-skiff-caller: service/front\r\n"), "{text}");
}

#[tokio::test]
async fn a_local_delivery_gets_the_apps_status_and_retry_after_or_the_routers() {
    let busy = "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy";
    let app = instance(Script::Raw(busy)).await;
    let router = local_router(app.addr, false);
    let head = b"POST / HTTP/1.1\r\nhost: svc.localhost\r\n\r\n";
    let answer = router.send_local("svc", head, b"x", "c").await;
    assert_eq!(
        (answer.status, answer.retry_after.as_deref()),
        (503, Some("7"))
    );
    // A host no service has, and no service of that name either: what the ingress says.
    let nowhere = b"POST / HTTP/1.1\r\nhost: gone.localhost\r\n\r\n";
    assert_eq!(
        router.send_local("gone", nowhere, b"", "c").await.status,
        404
    );
    // An instance that answers garbage: 502, as through the ingress.
    let broken = instance(Script::RawThenClose("SPDY/9 ???\r\n\r\n")).await;
    let router = local_router(broken.addr, false);
    assert_eq!(router.send_local("svc", head, b"", "c").await.status, 502);
    // A malformed stored head never reaches an instance.
    assert_eq!(
        router
            .send_local("svc", b"POST /\r\n\r\n", b"", "c")
            .await
            .status,
        400
    );
    assert!(broken.requests.lock().unwrap().len() == 1);
}
