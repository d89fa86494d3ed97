//! skiff's example app: a small HTTP/1.1 server on `$PORT` that answers with the id of the
//! instance it runs in (its hostname), plus a few routes the end-to-end tests and
//! benchmarks use. On SIGTERM it stops accepting, finishes the requests in flight, and
//! exits 0, as Cloud Run asks of its apps.
//!
//! Routes:
//! - `GET /` → `hello from INSTANCE`
//! - `GET /sleep?ms=N` → answers after N ms
//! - `GET /stream?n=N&ms=M` → N chunks, M ms apart (chunked encoding)
//! - `POST /echo` → the request body, streamed back as it arrives
//! - `POST /hold?ms=N` → reads nothing of the body for N ms, then reads it and answers
//! - `GET /headers` → the request's headers, one per line
//! - `GET /env` → the environment, one per line
//! - `GET /ws` with `Upgrade: websocket` → echoes WebSocket text/binary messages
//! - `GET /healthz` → 200 `ok`, or 503 after `GET /sick` (for `?ms=N` ms, or until
//!   `GET /well`)
//! - `GET /ticks` → how often a background thread, started by the first `/ticks`, has
//!   woken up on its 10 ms timer (it stops counting while the instance is frozen)
//!
//! - `GET /hog` → runs a child process that takes memory until the OOM killer ends it,
//!   and answers with how it ended (the app itself serves on)
//! - `GET /connections` → connections accepted so far, and how many were open when the
//!   first passing `/healthz` ran (a probe should find only its own)
//!
//! `hello --crash MESSAGE` prints MESSAGE to stderr and exits 3 (a broken image);
//! `hello --listen-after MS` waits before listening (a slow starter);
//! `hello --listen-port N` listens on N whatever `$PORT` says (a misconfigured app);
//! `hello --sick-for MS` fails `/healthz` for its first MS milliseconds (a slow warm-up).

mod ws;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

static STOPPING: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Unix time in ms until which `/healthz` fails (0: healthy).
static SICK_UNTIL: AtomicU64 = AtomicU64::new(0);
/// Wake-ups of the `/ticks` thread.
static TICKS: AtomicU64 = AtomicU64::new(0);
static TICKING: std::sync::Once = std::sync::Once::new();
/// Connections accepted, and open now.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Connections open when the first passing `/healthz` ran (0: none has passed yet).
static OPEN_AT_FIRST_PASS: AtomicUsize = AtomicUsize::new(0);
/// The state of `/flaky`'s pseudo-random draws (xorshift; seeded from the clock).
static DRAW: AtomicU64 = AtomicU64::new(0);

/// A number in 0..100, different each call.
fn draw_percent() -> u64 {
    let mut seen = DRAW.load(Ordering::Relaxed);
    loop {
        // The first draw seeds from the clock (xorshift must not start at 0).
        let mut next = if seen == 0 { unix_ms() | 1 } else { seen };
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        match DRAW.compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next % 100,
            Err(now) => seen = now,
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--hog") {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            kept.push(vec![1u8; 1 << 20]);
        }
    }
    if args.first().map(String::as_str) == Some("--check") {
        // An exec probe: GET the path from the app beside it; 0 when it answers 200.
        let port = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8080);
        let path = args.get(1).map_or("/", String::as_str);
        let ok = call("127.0.0.1", port, path).is_ok_and(|a| a.starts_with("HTTP/1.1 200"));
        std::process::exit(if ok { 0 } else { 1 });
    }
    if args.first().map(String::as_str) == Some("--crash") {
        eprintln!(
            "hello: {}",
            args.get(1).map_or("crashing on purpose", |s| s)
        );
        std::process::exit(3);
    }
    if args.first().map(String::as_str) == Some("--sick-for") {
        let ms: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
        SICK_UNTIL.store(unix_ms() + ms, Ordering::SeqCst);
    }
    if args.first().map(String::as_str) == Some("--listen-after") {
        let ms = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
        std::thread::sleep(Duration::from_millis(ms));
    }
    let port: u16 = match args.first().map(String::as_str) {
        Some("--listen-port") => args.get(1).and_then(|p| p.parse().ok()).unwrap_or(3000),
        _ => std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8080),
    };
    let id = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    block_termination_signals();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("hello: listening on :{port} as {id}");
    let listen_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    std::thread::spawn(move || wait_for_termination(listen_fd));
    let id = Arc::new(id);
    for conn in listener.incoming() {
        if STOPPING.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let id = Arc::clone(&id);
        ACCEPTED.fetch_add(1, Ordering::SeqCst);
        OPEN.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let _ = serve(conn, &id);
            OPEN.fetch_sub(1, Ordering::SeqCst);
        });
    }
    let draining = IN_FLIGHT.load(Ordering::SeqCst);
    eprintln!("hello: SIGTERM: finishing {draining} request(s) in flight");
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("hello: bye");
    std::process::exit(0);
}

/// Blocks SIGTERM and SIGINT in every thread, so that only `wait_for_termination` sees
/// them.
fn block_termination_signals() {
    // SAFETY: plain signal-mask calls on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM/SIGINT, then wakes the accept loop by shutting the listener down.
fn wait_for_termination(listen_fd: i32) {
    // SAFETY: sigwait on a local set; shutdown on the listener's fd, which outlives this
    // thread's use of it (the process exits after draining).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        STOPPING.store(true, Ordering::SeqCst);
        libc::shutdown(listen_fd, libc::SHUT_RDWR);
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    fn param(&self, name: &str) -> Option<u64> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    }
}

/// Reads the next request head; `None` when the client closed the connection. An idle
/// connection blocks here without waking (an idle instance costs no CPU); at SIGTERM the
/// process exits once the requests in flight are done, idle connections with it.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if read_line_retrying(reader, &mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_owned(), t.to_owned()),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad request line",
            ))
        }
    };
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Some(Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    }))
}

fn serve(conn: TcpStream, id: &str) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_head(&mut reader)? {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        let keep = handle(&req, &mut reader, &mut out, id);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        if !keep? || STOPPING.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(())
}

/// Answers one request; returns whether the connection may be reused.
fn handle(
    req: &Request,
    reader: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
    id: &str,
) -> io::Result<bool> {
    let close = req
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"));
    match (req.method.as_str(), req.path.as_str()) {
        (_, "/ws") if req.header("upgrade").is_some() => {
            ws::serve(req.header("sec-websocket-key").unwrap_or(""), reader, out)?;
            return Ok(false);
        }
        ("POST", "/echo") => {
            echo(req, reader, out)?;
            return Ok(!close);
        }
        ("POST", "/record") => {
            record(req, reader)?;
            respond(out, 200, "recorded\n", close)?;
            return Ok(!close);
        }
        ("POST", "/hold") => {
            // A reader that stops: the body waits in the sockets until the sleep ends.
            let ms = req.param("ms").unwrap_or(1000);
            std::thread::sleep(Duration::from_millis(ms));
        }
        _ => {}
    }
    discard_body(req, reader)?;
    match req.path.as_str() {
        "/" => respond(out, 200, &format!("hello from {id}\n"), close)?,
        "/hold" => respond(out, 200, &format!("held on {id}\n"), close)?,
        // Fails `percent` percent of requests, at random (a target for retries), after
        // `ms` milliseconds.
        "/flaky" => {
            std::thread::sleep(Duration::from_millis(req.param("ms").unwrap_or(0)));
            if draw_percent() < req.param("percent").unwrap_or(50) {
                respond(out, 500, "failed on purpose\n", close)?
            } else {
                respond(out, 200, &format!("served by {id}\n"), close)?
            }
        }
        "/sleep" => {
            let ms = req.param("ms").unwrap_or(1000);
            std::thread::sleep(Duration::from_millis(ms));
            respond(out, 200, &format!("slept {ms} ms on {id}\n"), close)?;
        }
        "/stream" => {
            let n = req.param("n").unwrap_or(3);
            let ms = req.param("ms").unwrap_or(100);
            out.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
            )?;
            for i in 0..n {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                write_chunk(out, format!("chunk {i} from {id}\n").as_bytes())?;
            }
            out.write_all(b"0\r\n\r\n")?;
        }
        "/headers" => {
            let body: String = req
                .headers
                .iter()
                .map(|(k, v)| format!("{}: {v}\n", k.to_ascii_lowercase()))
                .collect();
            respond(out, 200, &body, close)?;
        }
        "/flood" => {
            // Writes lines to stdout as fast as the pipe takes them: `lines` of them, or
            // until the instance stops (bench/log-flood).
            let lines = req.param("lines").unwrap_or(u64::MAX);
            std::thread::spawn(move || {
                let mut stdout = io::stdout().lock();
                for n in 0..lines {
                    if writeln!(
                        stdout,
                        "flood line {n}: the quick brown fox jumps over the lazy dog"
                    )
                    .is_err()
                    {
                        return;
                    }
                }
                let _ = stdout.flush();
            });
            respond(out, 200, &format!("flooding stdout on {id}\n"), close)?;
        }
        "/hog" => {
            let status = std::process::Command::new("/proc/self/exe")
                .arg("--hog")
                .status();
            let body = match status {
                Ok(s) => format!("hog ended: {s}\n"),
                Err(e) => format!("hog did not start: {e}\n"),
            };
            respond(out, 200, &body, close)?;
        }
        "/connections" => {
            let body = format!(
                "accepted {}, open during the first passing probe {}\n",
                ACCEPTED.load(Ordering::SeqCst),
                OPEN_AT_FIRST_PASS.load(Ordering::SeqCst)
            );
            respond(out, 200, &body, close)?;
        }
        "/healthz" if SICK_UNTIL.load(Ordering::SeqCst) > unix_ms() => {
            respond(out, 503, "sick\n", close)?
        }
        "/healthz" => {
            let _ = OPEN_AT_FIRST_PASS.compare_exchange(
                0,
                OPEN.load(Ordering::SeqCst),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            respond(out, 200, "ok\n", close)?
        }
        "/sick" => {
            let until = match req.param("ms") {
                Some(ms) => unix_ms() + ms,
                None => u64::MAX,
            };
            SICK_UNTIL.store(until, Ordering::SeqCst);
            respond(out, 200, &format!("sick on {id}\n"), close)?;
        }
        "/well" => {
            SICK_UNTIL.store(0, Ordering::SeqCst);
            respond(out, 200, &format!("well on {id}\n"), close)?;
        }
        "/ticks" => {
            TICKING.call_once(|| {
                std::thread::spawn(|| loop {
                    std::thread::sleep(Duration::from_millis(10));
                    TICKS.fetch_add(1, Ordering::SeqCst);
                });
            });
            respond(
                out,
                200,
                &format!("{}\n", TICKS.load(Ordering::SeqCst)),
                close,
            )?;
        }
        "/cwd" => {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|e| format!("no working directory: {e}"));
            respond(out, 200, &format!("{cwd}\n"), close)?;
        }
        "/file" => {
            let path = req.text("path").unwrap_or("");
            let (status, body) = match std::fs::read_to_string(path) {
                Ok(text) => (200, text),
                Err(e) => (502, format!("error: {e}\n")),
            };
            respond(out, status, &body, close)?;
        }
        "/resolve" => {
            let (status, body) = match resolve(req.text("name").unwrap_or(""), 0) {
                Ok(addrs) => (200, addrs.iter().map(|a| format!("{}\n", a.ip())).collect()),
                Err(e) => (502, format!("error: {e}\n")),
            };
            respond(out, status, &body, close)?;
        }
        "/connect" => {
            let port = req.param("port").unwrap_or(80) as u16;
            let (status, body) = match connect(req.text("to").unwrap_or(""), port) {
                Ok(_) => (200, "connected\n".to_owned()),
                Err(e) => (502, format!("error: {e}\n")),
            };
            respond(out, status, &body, close)?;
        }
        "/call" => {
            let port = req.param("port").unwrap_or(80) as u16;
            let host = req.text("to").unwrap_or("");
            let path = req.text("path").unwrap_or("/");
            let (status, body) = match call(host, port, path) {
                Ok(answer) => (200, answer),
                Err(e) => (502, format!("error: {e}\n")),
            };
            respond(out, status, &body, close)?;
        }
        "/env" => {
            let body: String = std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
            respond(out, 200, &body, close)?;
        }
        _ => respond(out, 404, "not found\n", close)?,
    }
    Ok(!close)
}

/// Resolves `name` with the C library's resolver, as ordinary apps do.
fn resolve(name: &str, port: u16) -> io::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, port).to_socket_addrs()?.collect())
}

/// Connects to `host:port` (a name or an address), within three seconds.
fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
    for addr in resolve(host, port)? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// GETs `path` from `host:port` over HTTP/1.1; the answer's status line and body.
fn call(host: &str, port: u16, path: &str) -> io::Result<String> {
    let mut s = connect(host, port)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let status = answer.lines().next().unwrap_or("").to_owned();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(format!("{status}\n{body}"))
}

fn respond(out: &mut TcpStream, status: u16, body: &str, close: bool) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let conn = if close { "connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{conn}\r\n",
        body.len()
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body.as_bytes());
    out.write_all(&msg)
}

fn write_chunk(out: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let mut msg = format!("{:x}\r\n", data.len()).into_bytes();
    msg.extend_from_slice(data);
    msg.extend_from_slice(b"\r\n");
    out.write_all(&msg)
}

/// Streams the request body back as chunks as it arrives.
fn echo(req: &Request, reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    read_body(req, reader, |data| write_chunk(out, data))?;
    out.write_all(b"0\r\n\r\n")
}

/// Prints one line about a request (an event's delivery) for tests to find in the
/// logs: `recorded` and the CloudEvents fields, the content type and the body.
fn record(req: &Request, reader: &mut BufReader<TcpStream>) -> io::Result<()> {
    let mut body = Vec::new();
    read_body(req, reader, |data| {
        body.extend_from_slice(data);
        Ok(())
    })?;
    let field = |name: &str| req.header(name).unwrap_or("-").to_owned();
    println!(
        "recorded type={} source={} id={} time={} content-type={} dead-letter={} error-code={} body={}",
        field("ce-type"),
        field("ce-source"),
        field("ce-id"),
        field("ce-time"),
        field("content-type"),
        field("x-skiff-dead-letter-reason").replace(' ', "+"),
        field("ce-knativeerrorcode"),
        String::from_utf8_lossy(&body).replace('\n', " ")
    );
    Ok(())
}

fn discard_body(req: &Request, reader: &mut BufReader<TcpStream>) -> io::Result<()> {
    read_body(req, reader, |_| Ok(()))
}

/// Reads a request body (content-length or chunked), handing each piece to `each`.
fn read_body(
    req: &Request,
    reader: &mut BufReader<TcpStream>,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let len: u64 = req
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        return copy_exact(reader, len, &mut each);
    }
    loop {
        let mut size = String::new();
        read_required_line(reader, &mut size)?;
        let size = u64::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            let mut trailer = String::new();
            read_required_line(reader, &mut trailer)?;
            return Ok(());
        }
        copy_exact(reader, size, &mut each)?;
        let mut crlf = String::new();
        read_required_line(reader, &mut crlf)?;
    }
}

fn read_required_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<()> {
    match read_line_retrying(reader, line)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Whether a read on a blocking socket failed only for now: a blocking read of a socket in
/// skiff's socket map (the upstream shortcut) can fail with `EAGAIN` when a freeze and thaw
/// of the instance's cgroup interrupts it with nothing read (cpu_throttling's test saw the
/// connection closed, a 502, in 3 of 6 runs without this retry).
fn is_spurious(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `read_line`, read again after a spurious `EAGAIN` (see [`is_spurious`]).
fn read_line_retrying(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<usize> {
    loop {
        match reader.read_line(line) {
            Err(e) if is_spurious(&e) => continue,
            read => return read,
        }
    }
}

fn copy_exact(
    reader: &mut BufReader<TcpStream>,
    mut left: u64,
    each: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = [0u8; 16384];
    while left > 0 {
        let want = buf.len().min(left as usize);
        match reader.read(&mut buf[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                each(&buf[..n])?;
                left -= n as u64;
            }
            Err(e) if is_spurious(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
