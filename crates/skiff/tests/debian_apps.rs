//! Real apps from Debian's packages, as users run them: an image made by mmdebstrap
//! (device nodes and all) imported as it is, with Flask under gunicorn's default sync
//! worker behind an HTTP readiness probe, Express on Debian's nodejs with a SIGTERM
//! handler, and nginx as www-data on port 80 logging to /dev/stderr. Each reaches a
//! Redis server: one in a network namespace of its own ("the outside", by address,
//! through NAT) and one on the host (as `host.skiff.internal`, on the allowed port).
//!
//! One daemon and one import for all of it: the import of a 400 MB rootfs is the slow
//! part, and a daemon cannot outlive the test thread that started it.

mod daemon;

use daemon::outside::Outside;
use daemon::Daemon;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image archive, built (or taken from the cache) by scripts/debian-apps-image,
/// once for all the tests here.
fn image() -> PathBuf {
    static IMAGE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = IMAGE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let path = build_image();
    *built = Some(path.clone());
    path
}

fn build_image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/debian-apps-image"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/debian-apps-image");
    assert!(
        out.status.success(),
        "building the Debian apps image failed"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A Redis server on the host, on every address, on a free port; killed on drop.
struct HostRedis {
    child: Child,
    port: u16,
}

impl HostRedis {
    fn start() -> HostRedis {
        let port = TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "0.0.0.0"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        HostRedis { child, port }
    }
}

impl Drop for HostRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP server on the host (every address) that answers "host ok".
fn host_http() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nhost ok\n",
            );
        }
    });
    port
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn debian_apps_run_reach_their_databases_and_stop_as_their_authors_expect() {
    let image = image();
    let mut outside = Outside::new(
        2,
        "redis-server",
        &[
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
        ],
        6379,
    );
    // And a web server out there, for nginx to proxy to.
    let hello = daemon::hello_binary().to_str().unwrap().to_owned();
    outside.serve(&hello, &[], 8000);
    let host_redis = HostRedis::start();
    let host_web = host_http();
    let d = Daemon::start(&[]);
    let import = |name: &str, tag: &str| {
        let archive = image.to_str().unwrap();
        let out = d.cli(&["image", "import", archive, "--ref", name, "--tag", tag]);
        assert!(out.status.success(), "{}", daemon::stderr(&out));
        out
    };
    let imported = import("debian-apps:1", "apps:1");
    import("debian-nginx:1", "nginx:1");
    // mmdebstrap's /dev/console, /dev/null… are skipped and named, not refused.
    assert!(
        daemon::stderr(&imported).contains("skipped ./dev/null, a character device node"),
        "{}",
        daemon::stderr(&imported)
    );
    let to_host_redis = format!("host.skiff.internal:{}", host_redis.port);
    let by_address = format!("/redis?host={}&port=6379", outside.public);
    let on_host = format!("/redis?host=host.skiff.internal&port={}", host_redis.port);

    // Flask under gunicorn's sync worker, with an HTTP readiness probe: the connection
    // that proved the port listens must not hold the only worker.
    d.ok(&[
        "deploy",
        "flask",
        "--image",
        "apps:1",
        "--working-dir",
        "/srv/flask",
        "--readiness-probe",
        "/healthz",
        "--egress-allow",
        &to_host_redis,
        "--",
        "gunicorn",
        "--bind",
        "0.0.0.0:8080",
        "app:app",
    ]);
    let started = Instant::now();
    let first = d.get("flask", "/");
    let took = started.elapsed();
    assert_eq!((first.status, first.text().as_str()), (200, "flask ok\n"));
    assert!(took < Duration::from_secs(2), "first request took {took:?}");
    let r = d.get("flask", &by_address);
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "+PONG"),
        "flask to redis by address"
    );
    let r = d.get("flask", &on_host);
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "+PONG"),
        "flask to the host's redis"
    );

    // Express on Debian's nodejs: its heap follows --memory; its SIGTERM handler runs.
    d.ok(&[
        "deploy",
        "express",
        "--image",
        "apps:1",
        "--memory",
        "256Mi",
        "--idle-timeout",
        "2s",
        "--egress-allow",
        &to_host_redis,
        "--",
        "node",
        "/srv/express/server.js",
    ]);
    let r = d.get("express", "/");
    assert_eq!((r.status, r.text().as_str()), (200, "express ok\n"));
    // V8 sizes its heap from the cgroup's memory limit (without one, from the machine's
    // memory: gigabytes here), so a bigger limit gives a bigger heap.
    let heap = |service: &str| -> u64 { d.get(service, "/heap").text().trim().parse().unwrap() };
    let small = heap("express");
    assert!(
        small < 512 << 20,
        "V8's heap limit {small} ignores the 256Mi limit"
    );
    d.ok(&[
        "deploy",
        "express-big",
        "--image",
        "apps:1",
        "--memory",
        "1Gi",
        "--",
        "node",
        "/srv/express/server.js",
    ]);
    let big = heap("express-big");
    assert!(
        big > small && big < 2 << 30,
        "heap limits {small} (256Mi) and {big} (1Gi)"
    );
    let r = d.get("express", &by_address);
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "+PONG"),
        "express to redis by address"
    );
    let r = d.get("express", &on_host);
    assert_eq!(
        (r.status, r.text().trim()),
        (200, "+PONG"),
        "express to the host's redis"
    );
    eventually(
        "express's goodbye in its log",
        Duration::from_secs(30),
        || {
            d.ok(&["logs", "express"])
                .contains("express: SIGTERM, closing")
        },
    );

    // nginx entirely as www-data, on port 80, its logs on /dev/stderr, proxying to the
    // host by name and to the outside by address.
    let upstream = format!("UP=host.skiff.internal:{host_web}");
    let beyond = format!("OUT={}:8000", outside.public);
    d.ok(&[
        "deploy", "nginx", "--image", "nginx:1", "--user", "www-data", "--port", "80",
        "-e", &upstream, "-e", &beyond,
        "--egress-allow", &format!("host.skiff.internal:{host_web}"),
        "--", "sh", "-c",
        "sed -e \"s/UPSTREAM/$UP/\" -e \"s/OUTSIDE/$OUT/\" /srv/nginx/nginx.conf > /tmp/nginx.conf \
         && exec nginx -e /dev/stderr -c /tmp/nginx.conf",
    ]);
    let r = d.get("nginx", "/");
    assert_eq!((r.status, r.text().as_str()), (200, "nginx ok\n"));
    let r = d.get("nginx", "/up/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "host ok\n"),
        "nginx to the host"
    );
    let r = d.get("nginx", "/out/");
    assert_eq!(r.status, 200, "nginx to the outside: {}", r.text());
    assert!(r.text().starts_with("hello from"), "{}", r.text());
    eventually("nginx's access log", Duration::from_secs(10), || {
        d.ok(&["logs", "nginx"])
            .contains("\"GET /up/ HTTP/1.1\" 200")
    });
    // The image's StopSignal reaches nginx itself, through the init: a graceful quit.
    d.ok(&["deploy", "nginx", "-e", "NEXT=1"]);
    eventually("nginx's graceful shutdown", Duration::from_secs(10), || {
        d.ok(&["logs", "nginx"])
            .contains("signal 3 (SIGQUIT) received")
    });
}

/// The `parsed …` lines the events app printed, as JSON.
fn parsed_events(d: &Daemon, service: &str) -> Vec<serde_json::Value> {
    d.ok(&["logs", service])
        .lines()
        .filter_map(|l| l.find("parsed {").map(|at| l[at + 7..].to_owned()))
        .map(|json| serde_json::from_str(&json).unwrap())
        .collect()
}

/// Issue 19's acceptance: the CloudEvents SDK for Python (`cloudevents` on PyPI)
/// publishes to a topic in both modes over plain HTTP, and inside a service (Flask, the
/// same SDK) parses what skiff delivers, in both modes.
#[test]
fn the_python_cloudevents_sdk_publishes_in_both_modes_and_parses_what_skiff_delivers() {
    let image = image();
    let d = Daemon::start(&[]);
    let archive = image.to_str().unwrap();
    d.ok(&[
        "image",
        "import",
        archive,
        "--ref",
        "debian-apps:1",
        "--tag",
        "apps:1",
    ]);
    d.ok(&[
        "deploy",
        "sink",
        "--image",
        "apps:1",
        "--working-dir",
        "/srv/events",
        "--readiness-probe",
        "/healthz",
        "--initial-instances",
        "0",
        "--",
        "gunicorn",
        "--bind",
        "0.0.0.0:8080",
        "app:app",
    ]);
    d.ok(&["topic", "create", "orders"]);
    d.ok(&[
        "topic",
        "subscribe",
        "orders",
        "--to",
        "sink",
        "--name",
        "binary",
    ]);
    d.ok(&[
        "topic",
        "subscribe",
        "orders",
        "--to",
        "sink",
        "--name",
        "structured",
        "--path",
        "/structured",
        "--format",
        "structured",
    ]);
    let token = d.token("shop", "invoker", &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/publish_events.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&format!("127.0.0.1:{}", d.port), "orders", &token])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "the SDK's publisher failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let sent: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(sent["status"], 202, "{sent}");
        let answer: serde_json::Value =
            serde_json::from_str(sent["answer"].as_str().unwrap()).unwrap();
        assert_eq!(answer["id"], sent["id"], "{answer}");
        assert_eq!(
            answer["deliveries"].as_array().unwrap().len(),
            2,
            "{answer}"
        );
    }

    // Each event reaches the app twice (one subscription per mode), and the SDK there
    // reads back what the SDK here sent.
    eventually("four deliveries parsed", Duration::from_secs(60), || {
        parsed_events(&d, "sink").len() >= 4
    });
    let mut seen: Vec<(String, String)> = parsed_events(&d, "sink")
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "com.example.order.paid", "{e}");
            assert_eq!(e["source"], "/shop/python", "{e}");
            assert_eq!(e["specversion"], "1.0", "{e}");
            assert_eq!(e["data"]["order"], e["id"], "{e}");
            assert_eq!(e["data"]["amount"], 42, "{e}");
            let expected_mode = if e["path"] == "/structured" {
                "structured"
            } else {
                "binary"
            };
            assert_eq!(e["mode"], expected_mode, "{e}");
            (
                e["id"].as_str().unwrap().to_owned(),
                e["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("py-binary".into(), "binary".into()),
            ("py-binary".into(), "structured".into()),
            ("py-structured".into(), "binary".into()),
            ("py-structured".into(), "structured".into()),
        ]
    );

    // Without a token, from the host: refused, nothing kept.
    let r = daemon::http(
        d.port,
        "orders.topics.skiff.internal",
        "POST",
        "/",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "x"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.text());
}
