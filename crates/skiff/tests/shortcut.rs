//! End-to-end: the upstream shortcut (an eBPF sockmap between the router's sockets and the
//! instance's). It must carry requests and answers without the instance's TCP stack, keep
//! every byte in order when a large answer outgrows it, never let a request fall back to
//! TCP behind redirected bytes (the router moves to a fresh connection first, and sends
//! requests of unknown size by TCP), and never let a reader that stops make the kernel
//! queue without bound.

mod daemon;

use daemon::{http, instance_pid, parse_response, Daemon};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Data segments sent by TCP (not counting retransmissions) in the network namespace of
/// `pid`: the router's and the instance's, as both ends live there.
fn data_segments_sent(pid: i32) -> u64 {
    let netstat = std::fs::read_to_string(format!("/proc/{pid}/net/netstat")).unwrap();
    let mut tcp = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPOrigDataSent")
        .map(|(_, v)| v.parse().unwrap())
        .expect("TCPOrigDataSent in /proc/net/netstat")
}

#[test]
fn exchanges_skip_the_instances_tcp_stack() {
    for (flags, shortcut) in [(&[][..], true), (&["--no-upstream-shortcut"][..], false)] {
        let service = if shortcut { "segs-on" } else { "segs-off" };
        let d = Daemon::start(flags);
        d.deploy_hello(service, &["--min-instances", "1"]);
        for _ in 0..5 {
            assert_eq!(d.get(service, "/").status, 200);
        }
        let pid = instance_pid(service);
        let before = data_segments_sent(pid);
        for _ in 0..100 {
            assert_eq!(d.get(service, "/").status, 200);
        }
        let segments = data_segments_sent(pid) - before;
        // Through the shortcut, requests and answers go from socket to socket, without
        // any data segment (a connection whose first request raced its peer's admission
        // goes by TCP: a few at most).
        if shortcut {
            assert!(
                segments <= 10,
                "{segments} data segments for 100 exchanges with the shortcut"
            );
        } else {
            assert!(
                segments >= 200,
                "{segments} data segments for 100 exchanges over TCP"
            );
        }
    }
}

#[test]
fn requests_past_a_connections_budget_take_a_fresh_one_rather_than_tcp() {
    let d = Daemon::start(&[]);
    d.deploy_hello("budget", &["--min-instances", "1"]);
    assert_eq!(d.get("budget", "/").status, 200);
    let pid = instance_pid("budget");
    let before = data_segments_sent(pid);
    // 9 × 900 KiB: each fits a connection's 2 MiB request budget, every third does not
    // fit what two others left of it. Were one sent past the budget, the kernel would
    // carry its rest by TCP.
    let body = numbered(900 << 10);
    for i in 0..9 {
        let r = http(d.port, "budget.localhost", "POST", "/hold?ms=0", &[], &body);
        assert_eq!(r.status, 200, "upload {i}: {}", r.text());
    }
    let segments = data_segments_sent(pid) - before;
    assert!(
        segments <= 10,
        "{segments} data segments for 8 MiB of requests through the shortcut"
    );

    // A body of unknown length goes on a connection outside the shortcut, by TCP.
    let body = numbered(1 << 20);
    let before = data_segments_sent(pid);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let upload = {
        let body = body.clone();
        std::thread::spawn(move || {
            writer
                .write_all(
                    b"POST /echo HTTP/1.1\r\nhost: budget.localhost\r\n\
                      connection: close\r\ntransfer-encoding: chunked\r\n\r\n",
                )
                .unwrap();
            for chunk in body.chunks(100_000) {
                let size = format!("{:x}\r\n", chunk.len());
                writer.write_all(size.as_bytes()).unwrap();
                writer.write_all(chunk).unwrap();
                writer.write_all(b"\r\n").unwrap();
            }
            writer.write_all(b"0\r\n\r\n").unwrap();
        })
    };
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    upload.join().unwrap();
    assert!(body_of_200(&raw) == body, "the chunked echo differs");
    let segments = data_segments_sent(pid) - before;
    assert!(
        segments >= 16,
        "{segments} data segments for a 1 MiB chunked echo: not by TCP"
    );
}

/// Bytes that never repeat at a 4-byte boundary: a block moved or lost shows.
fn numbered(len: usize) -> Vec<u8> {
    (0..len / 4)
        .flat_map(|i| (i as u32).to_le_bytes())
        .collect()
}

#[test]
fn bodies_larger_than_the_shortcut_budget_arrive_whole_and_in_order() {
    let d = Daemon::start(&[]);
    d.deploy_hello("big", &[]);
    // 24 MiB each way: the request, larger than any connection's request budget, goes
    // by TCP; so does the answer, on that connection.
    let body = numbered(24 << 20);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: big.localhost\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = s.try_clone().unwrap();
    let upload = {
        let body = body.clone();
        std::thread::spawn(move || {
            writer.write_all(head.as_bytes()).unwrap();
            writer.write_all(&body).unwrap();
        })
    };
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    upload.join().unwrap();
    let echoed = body_of_200(&raw);
    assert_eq!(echoed.len(), body.len());
    if let Some(at) = echoed.iter().zip(&body).position(|(a, b)| a != b) {
        panic!("the echo differs from byte {at} on");
    }

    // A small request whose answer, streamed while the client does not read, outgrows
    // the instance's 4 MiB budget: the router stops reading too, the instance's writes go
    // by TCP once the budget is spent, and every chunk comes in order once the client
    // reads.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(
        b"GET /stream?n=300000&ms=0 HTTP/1.1\r\nhost: big.localhost\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // a client that reads late, on purpose
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(body_of_200(&raw)).unwrap();
    let numbers: Vec<usize> = text
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 300_000);
    assert!(
        numbers.iter().enumerate().all(|(i, &n)| i == n),
        "chunks out of order"
    );
}

/// The body of a raw `Connection: close` response, which must be a 200.
fn body_of_200(raw: &[u8]) -> Vec<u8> {
    let r = parse_response(raw);
    assert_eq!(r.status, 200, "{}", r.text());
    r.body
}

#[test]
fn an_app_that_stops_reading_holds_the_upload_back() {
    let d = Daemon::start(&[]);
    d.deploy_hello("hold", &["--min-instances", "1"]);
    assert_eq!(d.get("hold", "/").status, 200);
    // The app reads nothing of this body for 5 s. Redirected bytes are not held back by
    // the receiver's buffer: were a body this large redirected, the kernel would take all
    // 512 MiB into the app's queue.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(
        format!(
            "POST /hold?ms=5000 HTTP/1.1\r\nhost: hold.localhost\r\ncontent-length: {}\r\n\r\n",
            512u64 << 20
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_nonblocking(true).unwrap();
    let block = vec![7u8; 64 << 10];
    let (mut sent, start) = (0usize, Instant::now());
    let mut progress = Instant::now();
    // Until the path stops taking bytes for half a second (or 4 s pass: the hold is 5 s).
    while progress.elapsed() < Duration::from_millis(500)
        && start.elapsed() < Duration::from_secs(4)
    {
        match s.write(&block) {
            Ok(n) => {
                sent += n;
                progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("upload failed after {sent} bytes: {e}"),
        }
    }
    let mib = sent >> 20;
    assert!(
        mib < 64,
        "{mib} MiB taken in while the app read nothing (sockets and the shortcut hold < 64 MiB)"
    );
    assert!(
        progress.elapsed() >= Duration::from_millis(500),
        "still taking bytes after 4 s"
    );
    // The same daemon still serves.
    assert_eq!(
        http(d.port, "hold.localhost", "GET", "/", &[], b"").status,
        200
    );
}
