//! End-to-end: a real `skiff server`, real sandboxes running the hello example, real HTTP
//! through the ingress. Each test has its own daemon, data directory and port.

mod daemon;

use daemon::{eventually, http, stderr, Daemon};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn instance_of(answer: &str) -> String {
    answer
        .split_whitespace()
        .find(|w| w.starts_with("hello-") || w.starts_with("crash-") || w.starts_with("slow-"))
        .unwrap_or_else(|| panic!("no instance id in {answer:?}"))
        .to_owned()
}

#[test]
fn first_request_from_zero_gets_the_apps_answer_with_proxy_headers() {
    let d = Daemon::start(&[]);
    // Without the first instance a deploy starts to prove the revision.
    let out = d.ok(&[
        "deploy",
        "hello",
        "--image",
        "hello",
        "--initial-instances",
        "0",
    ]);
    assert!(out.contains("hello-00001"), "{out}");
    assert_eq!(d.ready("hello"), 0, "nothing runs before the first request");

    let r = d.get("hello", "/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello from hello-"), "{}", r.text());
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert_eq!(d.ready("hello"), 1);

    let h = d.get("hello", "/headers").text();
    assert!(h.contains("x-forwarded-for: 127.0.0.1\n"), "{h}");
    assert!(h.contains("x-forwarded-proto: http\n"), "{h}");
    assert!(h.contains("x-forwarded-host: hello.localhost\n"), "{h}");
    assert!(
        h.contains("forwarded: for=127.0.0.1;host=hello.localhost;proto=http\n"),
        "{h}"
    );
    assert!(h.contains("x-request-id: "), "{h}");

    let env = d.get("hello", "/env").text();
    for want in [
        "PORT=8080",
        "K_SERVICE=hello",
        "K_REVISION=hello-00001",
        "K_CONFIGURATION=hello",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in {env}");
    }

    let r = http(d.port, "nope.localhost", "GET", "/", &[], b"");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nope.localhost"), "{}", r.text());

    // The answer is the app's logs too: they outlive nothing yet, but are readable.
    let logs = d.ok(&["logs", "hello"]);
    assert!(logs.contains("hello: listening on :8080"), "{logs}");
}

#[test]
fn concurrent_requests_with_concurrency_one_start_one_instance_each_up_to_max() {
    let d = Arc::new(Daemon::start(&[]));
    d.deploy_hello("hello", &["--concurrency", "1", "--max-instances", "3"]);
    let threads: Vec<_> = (0..5)
        .map(|_| {
            let d = Arc::clone(&d);
            std::thread::spawn(move || d.get("hello", "/sleep?ms=1500"))
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let ids: HashSet<String> = answers.iter().map(|a| instance_of(&a.text())).collect();
    assert_eq!(ids.len(), 3, "5 requests, concurrency 1, max 3: {ids:?}");
    let detail = d.json(&["describe", "hello"]);
    let all: HashSet<&str> = detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 3, "never more than max-instances: {all:?}");
}

#[test]
fn idle_instances_scale_to_zero_without_cutting_a_request_in_flight() {
    let d = Arc::new(Daemon::start(&[]));
    // The autoscaler's shortest stable window, and instances filled to their target.
    let scaling = ["--window", "6s", "--target-utilization", "100"];
    let mut flags = vec!["--concurrency", "1", "--idle-timeout", "1s"];
    flags.extend(scaling);
    d.deploy_hello("hello", &flags);
    // Two instances: one long request keeps one busy while the other goes idle.
    let long = {
        let d = Arc::clone(&d);
        std::thread::spawn(move || d.get("hello", "/sleep?ms=12000"))
    };
    eventually(
        Duration::from_secs(10),
        "the long request's instance",
        || d.json(&["ls"])[0]["in_flight"] == 1,
    );
    let short = d.get("hello", "/");
    assert_eq!(short.status, 200);
    let second = instance_of(&short.text());
    // Demand is back to the one long request, so the second instance stops while the
    // long one is still in flight, and the long one is not cut. How soon is the
    // autoscaler's to say (its window may hold samples from before the long request, so
    // it can be ~0.1 s after the short answer): this waits, it does not time it.
    eventually(
        Duration::from_secs(10),
        "scale-down to one instance with the long request in flight",
        || {
            let ls = d.json(&["ls"]);
            ls[0]["ready_instances"] == 1 && ls[0]["in_flight"] == 1
        },
    );
    let long = long.join().unwrap();
    assert_eq!(long.status, 200, "{}", long.text());
    assert!(long.text().starts_with("slept 12000 ms"), "{}", long.text());
    assert_ne!(
        instance_of(&long.text()),
        second,
        "concurrency 1: the short request had an instance of its own"
    );
    eventually(Duration::from_secs(5), "scale to zero", || {
        d.ready("hello") == 0
    });
    // Out of the rotation at once; exited once the stop (and its veth) is done.
    let states = || -> Vec<String> {
        d.json(&["describe", "hello"])["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["state"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(Duration::from_secs(10), "both instances exited", || {
        states().iter().all(|s| s == "exited")
    });
    let detail = d.json(&["describe", "hello"]);
    let decision = &detail["revisions"][0]["autoscaler"];
    assert_eq!(decision["desired"], 0, "{detail}");
    assert!(
        decision["reason"]
            .as_str()
            .is_some_and(|r| r.contains("scaled to zero")),
        "{decision}"
    );
    let states: Vec<&str> = detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["exited", "exited"], "{detail}");
    // The app saw SIGTERM and exited cleanly.
    for i in detail["instances"].as_array().unwrap() {
        assert_eq!(i["exit"], "exited with code 0", "{i}");
    }
    // And from zero again.
    assert_eq!(d.get("hello", "/").status, 200);
}

#[test]
fn a_broken_first_deploy_fails_with_the_reason_and_nothing_claims_to_serve() {
    let d = Daemon::start(&[]);
    let out = d.cli(&[
        "deploy",
        "crash",
        "--image",
        "hello",
        "--",
        "--crash",
        "no database",
    ]);
    assert!(!out.status.success(), "a broken first revision deployed");
    let err = daemon::stderr(&out);
    assert!(
        err.contains("revision crash-00001 failed to start") && err.contains("exited with code 3"),
        "{err}"
    );
    assert!(err.contains("no database"), "the log tail is shown: {err}");
    assert!(!err.contains("serving"), "{err}");
    let detail = d.json(&["describe", "crash"]);
    assert_eq!(
        detail["serving_revision"],
        serde_json::Value::Null,
        "{detail}"
    );
    // Fixed, the next deploy serves.
    let out = d.ok(&["deploy", "crash", "--", "--listen-port", "8080"]);
    assert!(out.contains("crash-00002"), "{out}");
    assert_eq!(d.get("crash", "/").status, 200);
}

#[test]
fn a_crashing_image_answers_503_with_its_reason_and_backs_off() {
    let d = Daemon::start(&[]);
    // Served without proof (a first deploy would fail), so that requests meet it.
    d.deploy_hello(
        "crash",
        &[
            "--initial-instances",
            "0",
            "--",
            "--crash",
            "cannot open the database",
        ],
    );
    let r = d.get("crash", "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("exited with code 3"), "{}", r.text());
    assert!(r.header("retry-after").is_some());

    let detail = d.json(&["describe", "crash"]);
    let failure = &detail["last_failure"];
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{detail}"
    );
    assert!(
        failure["log_tail"]
            .as_str()
            .unwrap()
            .contains("hello: cannot open the database"),
        "{detail}"
    );
    let human = d.ok(&["describe", "crash"]);
    assert!(human.contains("cannot open the database"), "{human}");

    // Hammer it for 2.5 s: every answer is a quick 503, and the backoff (1 s, then 2 s)
    // allows at most two more starts.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut answers = 0;
    while Instant::now() < until {
        let r = d.get("crash", "/");
        assert_eq!(r.status, 503);
        answers += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answers > 20, "503s are immediate during backoff: {answers}");
    let starts = d.json(&["describe", "crash"])["instances"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        (2..=3).contains(&starts),
        "{starts} starts in 2.5 s: not a hot loop, but retried"
    );
}

#[test]
fn a_request_past_the_timeout_gets_504() {
    let d = Daemon::start(&[]);
    d.deploy_hello("hello", &["--timeout", "1s"]);
    let t = Instant::now();
    let r = d.get("hello", "/sleep?ms=5000");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(d.get("hello", "/sleep?ms=10").status, 200);
}

/// The request timeout bounds the whole exchange, as on Cloud Run: an answer still
/// streaming at the deadline is cut (its end never comes), and so is an upgraded
/// connection still open.
#[test]
fn the_timeout_cuts_a_streaming_answer_and_an_upgraded_connection() {
    let d = Daemon::start(&[]);
    d.deploy_hello("hello", &["--timeout", "1s"]);
    // 400 ms in all: well within the timeout, and whole.
    let whole = d.get("hello", "/stream?n=5&ms=100");
    assert_eq!(whole.status, 200);
    assert!(whole.text().contains("chunk 4 from"), "{}", whole.text());

    // 30 chunks 100 ms apart need 2.9 s: the timeout ends it after about 1 s.
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /stream?n=30&ms=100 HTTP/1.1\r\nhost: hello.localhost\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("the router closes the connection");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("chunk 0 from"), "{text}");
    assert!(
        !text.contains("chunk 29 from"),
        "the whole answer came: {text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the answer was not cut: {text}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );

    // A WebSocket left open is closed at the deadline too.
    let mut ws = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nhost: hello.localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let t = Instant::now();
    let mut raw = Vec::new();
    ws.read_to_end(&mut raw)
        .expect("the router closes the upgraded connection");
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_full_queue_answers_429() {
    let d = Arc::new(Daemon::start(&["--queue-depth", "1"]));
    d.deploy_hello("hello", &["--concurrency", "1", "--max-instances", "1"]);
    assert_eq!(d.get("hello", "/").status, 200);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let d = Arc::clone(&d);
            let t = std::thread::spawn(move || d.get("hello", "/sleep?ms=2000").status);
            std::thread::sleep(Duration::from_millis(200));
            t
        })
        .collect();
    eventually(Duration::from_secs(5), "one in flight, one queued", || {
        let s = &d.json(&["ls"])[0];
        s["in_flight"] == 1 && s["queued"] == 1
    });
    let r = d.get("hello", "/");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    for t in busy {
        assert_eq!(t.join().unwrap(), 200);
    }
}

#[test]
fn daemon_restart_keeps_services_and_serves_again() {
    let mut d = Daemon::start(&[]);
    d.deploy_hello("hello", &["-e", "GREETING=kept"]);
    assert_eq!(d.get("hello", "/").status, 200);
    let before = d.json(&["describe", "hello"]);
    let first = before["instances"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(d.stop(), Some(0), "clean exit on SIGTERM");
    // Nothing is left running or prepared: no live rows, no scratch directories.
    let db = skiff_store::Store::open(&d.home.path().join("skiff.db")).unwrap();
    let left = db.running_instances().unwrap();
    assert!(left.is_empty(), "instances left behind: {left:?}");
    for i in db.service_instances("hello").unwrap() {
        let scratch = std::path::Path::new("/run/skiff/instances").join(&i.id);
        assert!(!scratch.exists(), "{} left behind", scratch.display());
    }
    drop(db);
    d.launch();
    let ls = d.json(&["ls"]);
    assert_eq!(ls[0]["name"], "hello");
    assert_eq!(ls[0]["serving_revision"], "hello-00001");
    let r = d.get("hello", "/env");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("GREETING=kept"), "{}", r.text());
    let after = d.json(&["describe", "hello"]);
    let old = after["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == first.as_str())
        .expect("the first instance is remembered");
    assert_eq!(old["state"], "exited");
    assert_eq!(
        old["exit"], "exited with code 0",
        "stopped gracefully: {old}"
    );
}

#[test]
fn a_new_revision_takes_traffic_without_a_failed_request() {
    let d = Arc::new(Daemon::start(&[]));
    d.deploy_hello("hello", &["-e", "VERSION=1"]);
    assert_eq!(d.get("hello", "/").status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let (d, stop, failures) = (Arc::clone(&d), Arc::clone(&stop), Arc::clone(&failures));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = d.get("hello", "/env");
                    if r.status != 200 {
                        failures.fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed during the switch: {} {}", r.status, r.text());
                        continue;
                    }
                    let v = r
                        .text()
                        .lines()
                        .find_map(|l| l.strip_prefix("VERSION=").map(str::to_owned))
                        .unwrap();
                    if seen.last() != Some(&v) {
                        seen.push(v);
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = d.ok(&["deploy", "hello", "-e", "VERSION=2"]);
    assert!(out.contains("hello-00002"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        assert_eq!(
            l.join().unwrap(),
            ["1", "2"],
            "traffic moved once, for good"
        );
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    // The old revision's instance stops once idle.
    eventually(
        Duration::from_secs(10),
        "the old revision to scale to zero",
        || {
            let detail = d.json(&["describe", "hello"]);
            detail["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["revision"] == "hello-00001")
                .all(|i| i["state"] == "exited")
        },
    );
}

#[test]
fn bodies_stream_both_ways_and_websockets_pass_through() {
    let d = Daemon::start(&[]);
    d.ok(&["deploy", "hello", "--image", "hello"]);
    // A response streamed in three chunks 400 ms apart: the first arrives long before
    // the last is written.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let t = Instant::now();
    s.write_all(
        b"GET /stream?n=3&ms=400 HTTP/1.1\r\nhost: hello.localhost\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("chunk 0") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let first = t.elapsed();
    s.read_to_end(&mut got).unwrap();
    let all = t.elapsed();
    assert!(String::from_utf8_lossy(&got).contains("chunk 2"));
    assert!(all >= Duration::from_millis(800), "{all:?}");
    assert!(
        all - first >= Duration::from_millis(700),
        "first {first:?}, all {all:?}"
    );

    // A 4 MiB upload comes back byte for byte.
    let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let r = http(d.port, "hello.localhost", "POST", "/echo", &[], &body);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echo differs ({} bytes back)", r.body.len());

    // WebSocket: the upgrade and then frames both ways.
    let mut ws = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nhost: hello.localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let head = String::from_utf8_lossy(&daemon::read_head(&mut ws)).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let msg = b"ping through skiff";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | msg.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(msg.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).unwrap();
    let mut reply = vec![0u8; 2 + msg.len()];
    ws.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 0x81);
    assert_eq!(&reply[2..], msg);
}

#[test]
fn bad_deploys_are_refused_with_what_was_wrong_and_change_nothing() {
    let d = Daemon::start(&[]);
    let cases: [(&[&str], &str); 7] = [
        (
            &["deploy", "hello", "--image", "hello", "--memory", "1Ki"],
            "memory",
        ),
        (
            &["deploy", "hello", "--image", "nosuchimage"],
            "no such image",
        ),
        (
            &["deploy", "Bad_Name", "--image", "hello"],
            "not a service name",
        ),
        (&["deploy", "hello"], "--image is required"),
        (
            &["deploy", "hello", "--image", "hello", "-e", "PORT=1"],
            "PORT is set by skiff",
        ),
        (
            &["deploy", "hello", "--image", "hello", "--window", "2s"],
            "window: 2000ms is outside 6s–1h",
        ),
        (
            &[
                "deploy",
                "hello",
                "--image",
                "hello",
                "--target-utilization",
                "0",
            ],
            "target-utilization",
        ),
    ];
    for (args, want) in cases {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        d.json(&["ls"]),
        serde_json::json!([]),
        "no service was created"
    );

    // The raw API names an unknown field.
    let body = r#"{"spec":{"image":"hello","replicas":2}}"#;
    let answer = d.api("PUT", "/v1/services/x", "", body);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("replicas"), "{answer}");
    assert!(answer.contains("\"kind\":\"invalid_request\""), "{answer}");
}

#[test]
fn a_stale_update_after_rm_is_refused_and_the_service_stays_removed() {
    let d = Daemon::start(&[]);
    d.deploy_hello("stale", &[]);
    let described = d.api("GET", "/v1/services/stale", "", "");
    let etag = described
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_else(|| panic!("describe carries an ETag: {described}"))
        .trim()
        .to_owned();
    d.ok(&["rm", "stale"]);
    // The writer read the service before the removal and writes back what it read.
    let body = r#"{"spec":{"image":"hello","env":["LATE=1"]}}"#;
    let put = d.api(
        "PUT",
        "/v1/services/stale",
        &format!("if-match: {etag}\r\n"),
        body,
    );
    assert!(put.starts_with("HTTP/1.1 409"), "{put}");
    assert!(put.contains("no longer exists"), "{put}");
    let patch = d.api(
        "PATCH",
        "/v1/services/stale",
        &format!("if-match: {etag}\r\n"),
        r#"{"patch":{"env":["LATE=1"]}}"#,
    );
    assert!(patch.starts_with("HTTP/1.1 409"), "{patch}");
    // `skiff deploy` without --image after a removal no longer brings it back.
    let out = d.cli(&["deploy", "stale", "-e", "LATE=1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not exist yet"),
        "{}",
        stderr(&out)
    );
    let gone = d.api("GET", "/v1/services/stale", "", "");
    assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
    assert_eq!(d.json(&["ls"]), serde_json::json!([]));
}

#[test]
fn deploy_edits_the_environment_key_by_key_and_sets_the_working_dir() {
    let d = Daemon::start(&[]);
    d.deploy_hello("envs", &["-e", "DATABASE_URL=pg://db", "-e", "MODE=a"]);
    d.ok(&["deploy", "envs", "-e", "MODE=b"]);
    let env = d.get("envs", "/env").text();
    assert!(
        env.contains("\nDATABASE_URL=pg://db\n"),
        "-e keeps other keys: {env}"
    );
    assert!(env.contains("\nMODE=b\n"), "{env}");
    d.ok(&[
        "deploy",
        "envs",
        "--remove-env-vars",
        "DATABASE_URL",
        "--update-env-vars",
        "A=1,B=2",
        "--working-dir",
        "/tmp",
    ]);
    let env = d.get("envs", "/env").text();
    assert!(!env.contains("DATABASE_URL="), "{env}");
    assert!(
        env.contains("\nA=1\n") && env.contains("\nB=2\n") && env.contains("\nMODE=b\n"),
        "{env}"
    );
    assert_eq!(d.get("envs", "/cwd").text(), "/tmp\n");
    d.ok(&["deploy", "envs", "--set-env-vars", "ONLY=1"]);
    let env = d.get("envs", "/env").text();
    assert!(
        env.contains("\nONLY=1\n") && !env.contains("MODE="),
        "{env}"
    );
    let both = d.cli(&["deploy", "envs", "--set-env-vars", "X=1", "-e", "Y=2"]);
    assert!(!both.status.success());
    assert!(
        stderr(&both).contains("--set-env-vars replaces the whole environment"),
        "{}",
        stderr(&both)
    );
    let relative = d.cli(&["deploy", "envs", "--working-dir", "srv"]);
    assert!(
        stderr(&relative).contains("\"srv\" is not an absolute path"),
        "{}",
        stderr(&relative)
    );
    assert_eq!(
        d.get("envs", "/cwd").text(),
        "/tmp\n",
        "a refused deploy changes nothing"
    );
}

#[test]
fn an_app_listening_on_another_port_gets_a_503_naming_it_soon() {
    let d = Daemon::start(&[]);
    d.deploy_hello(
        "astray",
        &["--initial-instances", "0", "--", "--listen-port", "3000"],
    );
    let t0 = Instant::now();
    let r = d.get("astray", "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text()
            .contains("the app listens on 0.0.0.0:3000 but not on port 8080 ($PORT)"),
        "{}",
        r.text()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "told after {:?}, long before the 240 s startup deadline",
        t0.elapsed()
    );
    let failure = &d.json(&["describe", "astray"])["last_failure"]["reason"];
    assert!(
        failure.as_str().unwrap().contains("0.0.0.0:3000"),
        "{failure}"
    );
}

#[test]
fn deploy_user_runs_the_app_as_another_user_of_the_image() {
    let d = Daemon::start(&[]);
    d.deploy_hello("who", &[]);
    assert!(
        d.get("who", "/env").text().contains("\nHOME=/tmp\n"),
        "the image's user: app"
    );
    d.ok(&["deploy", "who", "--user", "root"]);
    assert!(d.get("who", "/env").text().contains("\nHOME=/root\n"));
    let out = d.cli(&["deploy", "who", "--user", "nobody-here"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no user \"nobody-here\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_worker_killed_for_memory_shows_on_its_serving_instance() {
    let d = Daemon::start(&[]);
    d.deploy_hello("hungry", &["--memory", "64Mi", "--min-instances", "1"]);
    let hog = d.get("hungry", "/hog");
    assert_eq!(hog.status, 200);
    assert!(hog.text().contains("signal: 9"), "{}", hog.text());
    // The app serves on, and describe counts the kill on its live instance.
    assert_eq!(d.get("hungry", "/").status, 200);
    let detail = d.json(&["describe", "hungry"]);
    let live = detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["state"] == "ready")
        .cloned()
        .unwrap_or_else(|| panic!("a ready instance: {detail}"));
    assert_eq!(live["oom_kills"], 1, "{detail}");
    let table = d.ok(&["describe", "hungry"]);
    assert!(table.contains("1 process(es) killed for memory"), "{table}");
}

#[test]
fn a_clean_stop_leaves_the_whole_state_in_the_database_file_and_backup_copies_it_live() {
    let mut d = Daemon::start(&[]);
    d.deploy_hello("kept", &[]);
    // A backup while the daemon runs is a complete database on its own.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    d.ok(&["backup", copy.to_str().unwrap()]);
    let names = |db: &std::path::Path| -> Vec<String> {
        skiff_store::Store::open(db)
            .unwrap()
            .services()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names(&copy), ["kept"]);
    assert!(
        !d.cli(&["backup", copy.to_str().unwrap()]).status.success(),
        "overwrote a file"
    );
    // After a clean stop the WAL is empty: the .db file alone holds the service.
    d.stop();
    let wal = d.home.path().join("skiff.db-wal");
    assert_eq!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()),
        0,
        "WAL left full"
    );
    let alone = dir.path().join("alone.db");
    std::fs::copy(d.home.path().join("skiff.db"), &alone).unwrap();
    assert_eq!(names(&alone), ["kept"]);
}

#[test]
fn sigterm_cuts_an_idle_websocket_at_the_drain_deadline() {
    let mut d = Daemon::start(&["--drain-timeout", "2s"]);
    d.deploy_hello("hello", &[]);
    let mut ws = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nhost: hello.localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut answer = [0u8; 12];
    ws.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
    // Idle, for as long as the service's 300 s timeout would allow: the drain ends it
    // after 2 s; the instance then gets its stop grace (5 s in these tests).
    let t = Instant::now();
    assert_eq!(d.stop(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stopped after {:?}",
        t.elapsed()
    );
}

#[test]
fn specs_that_could_never_run_are_refused_at_deploy() {
    let d = Daemon::start(&[]);
    for (flags, says) in [
        (&["--cpu", "1m"][..], "the kernel's smallest quota"),
        (&["--memory", "1Ti"][..], "more than this host has"),
    ] {
        let mut args = vec!["deploy", "never", "--image", "hello"];
        args.extend_from_slice(flags);
        let out = d.cli(&args);
        assert!(!out.status.success(), "{flags:?} deployed");
        assert!(stderr(&out).contains(says), "{flags:?}: {}", stderr(&out));
    }
    assert_eq!(d.json(&["ls"]), serde_json::json!([]), "nothing half-made");
}

/// Context switches (voluntary and not) of every thread of `pid`, and how many threads
/// it has.
fn context_switches(pid: u32) -> (u64, usize) {
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    let switches = tasks
        .iter()
        .filter_map(|t| std::fs::read_to_string(t.join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum();
    (switches, tasks.len())
}

#[test]
fn an_idle_instance_holding_a_kept_connection_is_not_woken() {
    let d = Daemon::start(&[]);
    d.deploy_hello("asleep", &["--min-instances", "1"]);
    assert_eq!(d.get("asleep", "/").status, 200);
    let app = u32::try_from(daemon::instance_pid("asleep")).unwrap();
    let init = daemon::parent_pid(app);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap(),
        "skiff-init\n"
    );
    let count = || {
        let (app_switches, app_threads) = context_switches(app);
        (app_switches + context_switches(init).0, app_threads)
    };
    let (before, threads) = count();
    // hello's accept loop, its signal waiter, and the thread of the connection the
    // router keeps for the next request.
    assert_eq!(threads, 3, "hello's threads");
    // A window to count wake-ups in, not a wait for anything: an idle instance's tasks
    // stay asleep however long it lasts (an app that polled its connections, as hello
    // once did every 100 ms, woke here ten times per connection).
    std::thread::sleep(Duration::from_secs(1));
    let (after, threads_after) = count();
    assert_eq!(threads_after, threads, "the kept connection is still open");
    // The connection's thread may still be on its way back to read when counting starts.
    assert!(
        after - before <= 2,
        "{} context switches in a second of idleness",
        after - before
    );
}
